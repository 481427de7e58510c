"""Shape ops, selection and masking: reshape, transpose, getitem, split, concatenate, stack, where,
masked_fill, embedding (a gather whose backward scatters).

Notation and conventions: see the package docstring (`minilora.ops`)."""
from __future__ import annotations

import builtins
from collections.abc import Sequence

import numpy as np

from ..function import Function, unbroadcast
from ..tensor import Tensor
from ._common import TensorLike, _t


# ============================================================ shape ops
class Reshape(Function):
    """y = x.reshape(shape).  dx = g.reshape(x.shape)."""

    @staticmethod
    def forward(ctx, x, shape):
        ctx.shape = x.shape
        try:
            return x.reshape(shape)
        except ValueError:
            raise ValueError(f"reshape: cannot reshape an array of shape {x.shape} into {shape}") from None

    @staticmethod
    def backward(ctx, g):
        return (g.reshape(ctx.shape),)


def reshape(x: TensorLike, shape: int | Sequence[int]) -> Tensor:
    """x reshaped to shape (one -1 allowed)."""
    return Reshape.apply(x, shape=tuple(shape) if not isinstance(shape, int) else (shape,))


class Transpose(Function):
    """y = x.transpose(axes) (axes None reverses them).  dx = g.transpose(inverse permutation)."""

    @staticmethod
    def forward(ctx, x, axes=None):
        axes = tuple(range(x.ndim))[::-1] if axes is None else tuple(a % builtins.max(x.ndim, 1) for a in axes)
        if sorted(axes) != list(range(x.ndim)):
            raise ValueError(f"transpose: axes {axes} are not a permutation of {x.ndim} dimensions")
        ctx.inv = tuple(np.argsort(axes))
        return x.transpose(axes)

    @staticmethod
    def backward(ctx, g):
        return (g.transpose(ctx.inv),)


def transpose(x: TensorLike, axes: Sequence[int] | None = None) -> Tensor:
    """Permute axes (None reverses them)."""
    return Transpose.apply(x, axes=axes)


def _is_advanced(idx):
    items = idx if isinstance(idx, tuple) else (idx,)
    return any(isinstance(i, (list, np.ndarray, Tensor)) for i in items)


class GetItem(Function):
    """y = x[idx] (slices, ints, None, Ellipsis, integer or boolean arrays).

    dx = zeros of x's shape with g added at idx. With integer arrays an index may repeat, so the
    gradients are accumulated with np.add.at (a plain dx[idx] = g would keep only the last one).
    """

    @staticmethod
    def forward(ctx, x, idx):
        if isinstance(idx, tuple):
            idx = tuple(i.data if isinstance(i, Tensor) else i for i in idx)
        elif isinstance(idx, Tensor):
            idx = idx.data
        ctx.idx, ctx.shape = idx, x.shape
        return np.asarray(x[idx])

    @staticmethod
    def backward(ctx, g):
        dx = np.zeros(ctx.shape, dtype=g.dtype)
        if _is_advanced(ctx.idx):
            np.add.at(dx, ctx.idx, g)
        else:
            dx[ctx.idx] = g
        return (dx,)


def getitem(x: TensorLike, idx) -> Tensor:
    """x[idx]: basic and advanced (integer/boolean array) indexing; repeated indices accumulate."""
    return GetItem.apply(x, idx=idx)


def split(x: TensorLike, indices_or_sections: int | Sequence[int], axis: int = -1) -> list[Tensor]:
    """Split x along axis like np.split; returns a list of tensors (each a differentiable slice).

    Raises:
        ValueError: an integer number of sections that does not divide the axis.
    """
    x = _t(x)
    n = x.shape[axis]
    if isinstance(indices_or_sections, int):
        if indices_or_sections <= 0 or n % indices_or_sections:
            raise ValueError(f"split: axis of length {n} cannot be split into {indices_or_sections} equal parts")
        step = n // indices_or_sections
        bounds = list(range(0, n + 1, step))
    else:
        bounds = [0, *indices_or_sections, n]
    ax = axis % x.ndim
    pre = (slice(None),) * ax
    return [getitem(x, pre + (slice(lo, hi),)) for lo, hi in zip(bounds[:-1], bounds[1:], strict=True)]


class Concatenate(Function):
    """y = concatenate(xs, axis).  dx_i = the slice of g that x_i occupies."""

    @staticmethod
    def forward(ctx, *xs, axis=0):
        if not xs:
            raise ValueError("concatenate: need at least one tensor")
        nd = xs[0].ndim
        if nd == 0:
            raise ValueError("concatenate: zero-dimensional arrays cannot be concatenated")
        ax = axis % nd
        for x in xs:
            if x.ndim != nd or any(x.shape[i] != xs[0].shape[i] for i in range(nd) if i != ax):
                raise ValueError(f"concatenate: shapes {xs[0].shape} and {x.shape} differ off axis {axis}")
        ctx.axis, ctx.splits = ax, np.cumsum([x.shape[ax] for x in xs])[:-1]
        return np.concatenate(xs, axis=ax)

    @staticmethod
    def backward(ctx, g):
        return tuple(np.split(g, ctx.splits, axis=ctx.axis))


def concatenate(xs: Sequence[TensorLike], axis: int = 0) -> Tensor:
    """Join tensors along an existing axis; all other dims must agree (ValueError otherwise)."""
    return Concatenate.apply(*xs, axis=axis)


class Stack(Function):
    """y = stack(xs, axis) (a new axis).  dx_i = g taken at position i along that axis."""

    @staticmethod
    def forward(ctx, *xs, axis=0):
        if not xs:
            raise ValueError("stack: need at least one tensor")
        for x in xs:
            if x.shape != xs[0].shape:
                raise ValueError(f"stack: shapes {xs[0].shape} and {x.shape} differ")
        ctx.axis = axis % (xs[0].ndim + 1)
        return np.stack(xs, axis=ctx.axis)

    @staticmethod
    def backward(ctx, g):
        return tuple(np.take(g, i, axis=ctx.axis) for i in range(g.shape[ctx.axis]))


def stack(xs: Sequence[TensorLike], axis: int = 0) -> Tensor:
    """Stack same-shaped tensors along a new axis."""
    return Stack.apply(*xs, axis=axis)


# ============================================================ selection and masking
class Where(Function):
    """y = where(cond, a, b) with a constant boolean cond.

    da = unbroadcast(where(cond, g, 0)), db = unbroadcast(where(cond, 0, g)).
    """

    @staticmethod
    def forward(ctx, a, b, cond):
        cond = np.asarray(cond, dtype=bool)
        try:
            np.broadcast_shapes(cond.shape, a.shape, b.shape)
        except ValueError:
            raise ValueError(f"where: condition {cond.shape} and values {a.shape}, {b.shape} "
                             f"cannot be broadcast together") from None
        ctx.cond, ctx.shapes = cond, (a.shape, b.shape)
        return np.where(cond, a, b)

    @staticmethod
    def backward(ctx, g):
        zero = g.dtype.type(0)
        sa, sb = ctx.shapes
        return (unbroadcast(np.where(ctx.cond, g, zero), sa) if ctx.needs_input_grad[0] else None,
                unbroadcast(np.where(ctx.cond, zero, g), sb) if ctx.needs_input_grad[1] else None)


def where(cond: np.ndarray | Tensor, a: TensorLike, b: TensorLike) -> Tensor:
    """Elementwise a where cond else b; cond is a constant boolean array (broadcasting)."""
    return Where.apply(a, b, cond=cond.data if isinstance(cond, Tensor) else cond)


def masked_fill(x: TensorLike, mask: np.ndarray, value: float) -> Tensor:
    """x with the entries where mask is True replaced by the constant value (no gradient there)."""
    x = _t(x)
    return where(mask, np.asarray(value, dtype=x.dtype), x)



# ============================================================ embedding
class Embedding(Function):
    """y = weight[idx] for a table weight (V, C) and integer indices idx (any shape) -> (*idx.shape, C).

    dweight = zeros (V, C) with each row of g added at its index; repeated indices accumulate, in
    float64 (rows sorted by index, then summed per index), so a token seen 65536 times does not drift.
    """

    @staticmethod
    def forward(ctx, weight, idx=None):
        idx = np.asarray(idx)
        if not np.issubdtype(idx.dtype, np.integer):
            raise TypeError(f"embedding: indices must be integers, got dtype {idx.dtype}")
        V = weight.shape[0]
        if idx.size and (idx.min() < 0 or idx.max() >= V):
            raise ValueError(f"embedding: indices must lie in [0, {V}), got range [{idx.min()}, {idx.max()}]")
        ctx.idx, ctx.shape = idx, weight.shape
        return weight[idx]

    @staticmethod
    def backward(ctx, g):
        idx, g2 = ctx.idx.reshape(-1), g.reshape(-1, ctx.shape[-1])
        dw = np.zeros(ctx.shape, dtype=g.dtype)
        if idx.size:
            order = np.argsort(idx, kind="stable")
            sidx = idx[order]
            starts = np.flatnonzero(np.concatenate(([True], sidx[1:] != sidx[:-1])))
            dw[sidx[starts]] = np.add.reduceat(g2[order], starts, axis=0, dtype=np.float64)
        return (dw,)


def embedding(weight: TensorLike, idx: np.ndarray | Tensor) -> Tensor:
    """Rows of weight (V, C) at integer idx (any shape) -> (*idx.shape, C)."""
    return Embedding.apply(weight, idx=idx.data if isinstance(idx, Tensor) else idx)


