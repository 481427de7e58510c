"""Reductions: sum, mean, var, max. Sums over rows go through `function.reduce_sum`.

Notation and conventions: see the package docstring (`minilora.ops`)."""
from __future__ import annotations

import numpy as np

from ..function import Function, reduce_sum
from ..tensor import Tensor
from ._common import Axis, TensorLike, _centre, _expand, _norm_axis


# ============================================================ reductions
class Sum(Function):
    """y = sum(x, axis).  dx = g broadcast back over the summed axes."""

    @staticmethod
    def forward(ctx, x, axis=None, keepdims=False):
        ctx.axes, ctx.keepdims, ctx.shape = _norm_axis(axis, x.ndim), keepdims, x.shape
        return reduce_sum(x, ctx.axes, keepdims)                  # float32: pairwise over rows

    @staticmethod
    def backward(ctx, g):
        return (np.broadcast_to(_expand(g, ctx.axes, ctx.keepdims), ctx.shape),)


def sum(x: TensorLike, axis: Axis = None, keepdims: bool = False) -> Tensor:
    """Sum over axis (int, tuple or None for all); keepdims keeps reduced axes as size 1."""
    return Sum.apply(x, axis=axis, keepdims=keepdims)


class Mean(Function):
    """y = mean(x, axis) over n elements.  dx = g / n broadcast back over the averaged axes."""

    @staticmethod
    def forward(ctx, x, axis=None, keepdims=False):
        ctx.axes, ctx.keepdims, ctx.shape = _norm_axis(axis, x.ndim), keepdims, x.shape
        ctx.n = int(np.prod([x.shape[a] for a in ctx.axes])) if ctx.axes else 1
        with np.errstate(invalid="ignore"):                       # the mean of nothing is nan, as np.mean
            return np.asarray(reduce_sum(x, ctx.axes, keepdims) / x.dtype.type(ctx.n))

    @staticmethod
    def backward(ctx, g):
        g = _expand(g, ctx.axes, ctx.keepdims) / g.dtype.type(ctx.n)
        return (np.broadcast_to(g, ctx.shape),)


def mean(x: TensorLike, axis: Axis = None, keepdims: bool = False) -> Tensor:
    """Mean over axis (int, tuple or None for all)."""
    return Mean.apply(x, axis=axis, keepdims=keepdims)


class Var(Function):
    """Population variance y = mean((x - mean(x))^2, axis) (ddof = 0, as LayerNorm uses).

    dx = g * 2 (x - mean(x)) / n. Centred first (two passes) and from a shifted copy, so a constant
    slice gives exactly 0 at any magnitude.
    """

    @staticmethod
    def forward(ctx, x, axis=None, keepdims=False):
        ctx.axes, ctx.keepdims, ctx.shape = _norm_axis(axis, x.ndim), keepdims, x.shape
        ctx.n = int(np.prod([x.shape[a] for a in ctx.axes])) if ctx.axes else 1
        xc = _centre(x, ctx.axes)                                 # a constant slice has var exactly 0
        ctx.save_for_backward(xc)
        return np.asarray(reduce_sum(xc * xc, ctx.axes, keepdims) / x.dtype.type(ctx.n))

    @staticmethod
    def backward(ctx, g):
        (xc,) = ctx.saved
        g = _expand(g, ctx.axes, ctx.keepdims)
        return (g * xc * xc.dtype.type(2.0 / ctx.n),)


def var(x: TensorLike, axis: Axis = None, keepdims: bool = False) -> Tensor:
    """Population variance (ddof=0) over axis."""
    return Var.apply(x, axis=axis, keepdims=keepdims)


class Max(Function):
    """y = max(x, axis).  dx = g * [x == y] / (number of ties): tied maxima share the gradient evenly."""

    @staticmethod
    def forward(ctx, x, axis=None, keepdims=False):
        ctx.axes, ctx.keepdims, ctx.shape = _norm_axis(axis, x.ndim), keepdims, x.shape
        if x.size == 0:
            raise ValueError(f"max: cannot take the maximum of an empty array of shape {x.shape}")
        y = x.max(axis=ctx.axes, keepdims=True)
        mask = x == y
        ctx.save_for_backward(mask / mask.sum(axis=ctx.axes, keepdims=True).astype(x.dtype))
        return np.asarray(y if keepdims else y.reshape([s for i, s in enumerate(x.shape) if i not in ctx.axes]))

    @staticmethod
    def backward(ctx, g):
        (share,) = ctx.saved
        return ((_expand(g, ctx.axes, ctx.keepdims) * share).astype(share.dtype, copy=False),)


def max(x: TensorLike, axis: Axis = None, keepdims: bool = False) -> Tensor:
    """Maximum over axis; tied maxima split the gradient evenly."""
    return Max.apply(x, axis=axis, keepdims=keepdims)


