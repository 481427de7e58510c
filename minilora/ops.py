"""Every differentiable op: a `Function` with its forward and its hand-written backward side by side.

Notation: `g` is dL/d(output) (same shape as the output); each backward returns dL/d(input).
Broadcasting ops call `unbroadcast` visibly. Ops keep their input dtype (float32 or float64).

Fused ops (`linear`, `softmax`, `log_softmax`, `layer_norm`, `cross_entropy`, `attention`) have a
backward derived by hand for speed and stability; each keeps a `*_composed` twin built only from
primitives, which the tests use as the oracle (fused == composed == finite differences).
Each `Function` class is followed by its public function and, for a fused op, its composed twin,
so one screen shows the whole op.

Sums over the row axis (bias gradients, `unbroadcast`, `sum`/`mean` over leading axes) go through
`function.reduce_sum`, whose float32 error does not grow with the number of rows.

Shape letters: B batch, T time, C channels, nh heads, hs head size (C = nh*hs), V vocabulary, N rows.
"""
from __future__ import annotations

import builtins
import math
from collections.abc import Sequence
from typing import Union

import numpy as np

from .function import Function, reduce_sum, unbroadcast
from .tensor import Tensor

TensorLike = Union[Tensor, np.ndarray, float]   # what an op accepts; arrays and numbers become constants
Axis = Union[int, tuple, None]                  # one axis, several, or None for all


def _shape_error(op, a, b, why="cannot be broadcast together"):
    return ValueError(f"{op}: shapes {a} and {b} {why}")


def _broadcast_check(op, a, b):
    try:
        np.broadcast_shapes(np.shape(a), np.shape(b))
    except ValueError:
        raise _shape_error(op, np.shape(a), np.shape(b)) from None


def _norm_axis(axis, ndim):
    if axis is None:
        return tuple(range(ndim))
    axes = (axis,) if isinstance(axis, (int, np.integer)) else tuple(axis)
    out = []
    for a in axes:
        if not -ndim <= a < builtins.max(ndim, 1):  # ops.max shadows the builtin here
            raise ValueError(f"axis {a} is out of range for an array of {ndim} dimensions")
        out.append(a % ndim if ndim else 0)
    return tuple(sorted(set(out)))


def _expand(g, axes, keepdims):
    """Give a reduced gradient back its reduced axes (size 1), so it broadcasts against the input."""
    if not keepdims:
        g = np.expand_dims(g, axes) if axes else g
    return g


def _centre(x, axes):
    """x minus its mean over axes, exact for a constant slice (which gives exactly 0).

    The mean is taken of d = x - x0, x0 the first element along the axes: d is exact for a constant
    slice and has no large common offset. (In float32, mean(x) of 7 copies of 1e6 + 0.1 is one
    float32 step, 0.0625, off, and normalising by the tiny variance blows that up to ~1.) Shifting x
    changes neither the variance nor its gradient, so x0 is a constant."""
    x0 = x[tuple(slice(0, 1) if i in axes else slice(None) for i in range(x.ndim))]
    n = x.dtype.type(math.prod(x.shape[a] for a in axes))
    d = x - x0
    d -= reduce_sum(d, axes, keepdims=True) / n
    return d


def _t(x):
    return x if isinstance(x, Tensor) else Tensor(x)


# ============================================================ elementwise arithmetic
class Add(Function):
    """y = a + b (broadcasting).  da = unbroadcast(g), db = unbroadcast(g)."""

    @staticmethod
    def forward(ctx, a, b):
        _broadcast_check("add", a, b)
        ctx.shapes = a.shape, b.shape
        return a + b

    @staticmethod
    def backward(ctx, g):
        sa, sb = ctx.shapes
        return unbroadcast(g, sa), unbroadcast(g, sb)


def add(a: TensorLike, b: TensorLike) -> Tensor:
    """a + b with broadcasting. Shapes: any broadcast-compatible pair -> the broadcast shape."""
    return Add.apply(a, b)


class Sub(Function):
    """y = a - b (broadcasting).  da = unbroadcast(g), db = -unbroadcast(g)."""

    @staticmethod
    def forward(ctx, a, b):
        _broadcast_check("sub", a, b)
        ctx.shapes = a.shape, b.shape
        return a - b

    @staticmethod
    def backward(ctx, g):
        sa, sb = ctx.shapes
        return unbroadcast(g, sa), -unbroadcast(g, sb)


def sub(a: TensorLike, b: TensorLike) -> Tensor:
    """a - b with broadcasting."""
    return Sub.apply(a, b)


class Mul(Function):
    """y = a * b (broadcasting).  da = unbroadcast(g * b), db = unbroadcast(g * a)."""

    @staticmethod
    def forward(ctx, a, b):
        _broadcast_check("mul", a, b)
        ctx.save_for_backward(a, b)
        return a * b

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.saved
        na, nb = ctx.needs_input_grad
        return (unbroadcast(g * b, a.shape) if na else None,
                unbroadcast(g * a, b.shape) if nb else None)


def mul(a: TensorLike, b: TensorLike) -> Tensor:
    """a * b (elementwise) with broadcasting."""
    return Mul.apply(a, b)


class Div(Function):
    """y = a / b (broadcasting).  da = unbroadcast(g / b), db = unbroadcast(-g * a / b**2)."""

    @staticmethod
    def forward(ctx, a, b):
        _broadcast_check("div", a, b)
        ctx.save_for_backward(a, b)
        return a / b

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.saved
        na, nb = ctx.needs_input_grad
        return (unbroadcast(g / b, a.shape) if na else None,
                unbroadcast(-g * a / (b * b), b.shape) if nb else None)


def div(a: TensorLike, b: TensorLike) -> Tensor:
    """a / b (elementwise) with broadcasting."""
    return Div.apply(a, b)


class Neg(Function):
    """y = -x.  dx = -g."""

    @staticmethod
    def forward(ctx, x):
        return -x

    @staticmethod
    def backward(ctx, g):
        return (-g,)


def neg(x: TensorLike) -> Tensor:
    """-x."""
    return Neg.apply(x)


class Pow(Function):
    """y = x ** p for a constant exponent p.  dx = g * p * x**(p-1).

    p = 2 and p = 3 use products (NumPy's float power of negative bases is ~300x slower).
    p = 0: y = 1 everywhere, so dx = 0, also at x = 0 where p * x**(p-1) would be 0 * inf = nan
    (PyTorch gives 0 too). For p >= 1 the formula is finite at 0 (1 for p = 1, 0 for p > 1).
    """

    @staticmethod
    def forward(ctx, x, p):
        ctx.save_for_backward(x)
        ctx.p = p
        if p == 2:
            return x * x
        if p == 3:
            return x * x * x
        return np.power(x, x.dtype.type(p))

    @staticmethod
    def backward(ctx, g):
        (x,), p = ctx.saved, ctx.p
        if p == 0:
            return (np.zeros_like(g),)
        if p == 2:
            d = 2 * x
        elif p == 3:
            d = 3 * (x * x)
        else:
            d = p * np.power(x, x.dtype.type(p - 1))
        return (g * d.astype(x.dtype, copy=False),)


def pow(x: TensorLike, p: float) -> Tensor:
    """x ** p for a constant (non-tensor) exponent p.

    Raises:
        TypeError: p is a Tensor (only constant exponents are supported).
    """
    if isinstance(p, Tensor):
        raise TypeError("pow: the exponent must be a Python number, not a Tensor")
    return Pow.apply(x, p=float(p))


# ============================================================ elementwise functions
class Exp(Function):
    """y = exp(x).  dx = g * y."""

    @staticmethod
    def forward(ctx, x):
        y = np.exp(x)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, g):
        return (g * ctx.saved[0],)


def exp(x: TensorLike) -> Tensor:
    """exp(x), elementwise."""
    return Exp.apply(x)


class Log(Function):
    """y = log(x) (natural).  dx = g / x."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return np.log(x)

    @staticmethod
    def backward(ctx, g):
        return (g / ctx.saved[0],)


def log(x: TensorLike) -> Tensor:
    """Natural log, elementwise."""
    return Log.apply(x)


class Sqrt(Function):
    """y = sqrt(x).  dx = g / (2 y)."""

    @staticmethod
    def forward(ctx, x):
        y = np.sqrt(x)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, g):
        return (g / (2 * ctx.saved[0]),)


def sqrt(x: TensorLike) -> Tensor:
    """Square root, elementwise."""
    return Sqrt.apply(x)


class Tanh(Function):
    """y = tanh(x).  dx = g * (1 - y^2)."""

    @staticmethod
    def forward(ctx, x):
        y = np.tanh(x)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, g):
        y = ctx.saved[0]
        return (g * (1 - y * y),)


def tanh(x: TensorLike) -> Tensor:
    """tanh, elementwise."""
    return Tanh.apply(x)


class Sigmoid(Function):
    """y = 1 / (1 + exp(-x)), computed stably as (1 + tanh(x/2)) / 2.  dx = g * y * (1 - y)."""

    @staticmethod
    def forward(ctx, x):
        y = 0.5 * (1 + np.tanh(0.5 * x))
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, g):
        y = ctx.saved[0]
        return (g * y * (1 - y),)


def sigmoid(x: TensorLike) -> Tensor:
    """Logistic sigmoid, elementwise."""
    return Sigmoid.apply(x)


class ReLU(Function):
    """y = max(x, 0).  dx = g * [x > 0] (convention: the derivative at 0 is 0)."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x > 0)
        return np.maximum(x, 0)

    @staticmethod
    def backward(ctx, g):
        return (g * ctx.saved[0],)


def relu(x: TensorLike) -> Tensor:
    """max(x, 0), elementwise (derivative 0 at 0)."""
    return ReLU.apply(x)


_GELU_C = math.sqrt(2.0 / math.pi)


class GELU(Function):
    """GPT-2's GELU (tanh approximation; Hendrycks & Gimpel 2016, eq. in section 2):

        y  = 0.5 x (1 + tanh(u)),   u = c (x + k x^3),   c = sqrt(2/pi),   k = 0.044715
    Computed as y = x * s with s = sigmoid(2u) = 1 / (1 + exp(-2u)), the same function
    (0.5 (1 + tanh(u)) = sigmoid(2u)), because NumPy's exp is about 1.6x faster than its tanh here.
    Backward, with 1 - tanh(u)^2 = 4 s (1 - s):
        dy/dx = s + 2 c x s (1 - s) (1 + 3 k x^2),   dx = g * dy/dx
    """

    @staticmethod
    def forward(ctx, x):
        shape, x = x.shape, x.reshape(-1)                         # 1-D, so 0-d inputs stay arrays
        x2 = x * x                                                # saved for backward
        s = x2 * 0.044715
        s += 1
        s *= x
        s *= -2 * _GELU_C                                         # -2u
        with np.errstate(over="ignore"):                          # exp(+large) = inf gives s = 0: right
            np.exp(s, out=s)
        s += 1
        np.reciprocal(s, out=s)                                   # s = sigmoid(2u)
        ctx.save_for_backward(x, x2, s)
        ctx.shape = shape
        return (x * s).reshape(shape)

    @staticmethod
    def backward(ctx, g):
        x, x2, s = ctx.saved
        d = 1 - s
        d *= s                                                    # s (1 - s)
        d *= x
        a = x2 * (3 * 0.044715)
        a += 1
        d *= a
        d *= 2 * _GELU_C
        d += s                                                    # dy/dx
        d *= g.reshape(-1)
        return (d.reshape(ctx.shape),)


def gelu(x: TensorLike) -> Tensor:
    """GPT-2's tanh-approximate GELU, elementwise."""
    return GELU.apply(x)


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


# ============================================================ matmul and linear
class MatMul(Function):
    """y = a @ b with NumPy's rules (1-D operands promoted, batch dims broadcast).

    With 1-D operands promoted to matrices (a: (k,) -> (1, k), b: (k,) -> (k, 1)):
        da = unbroadcast(g @ b^T, a.shape),   db = unbroadcast(a^T @ g, b.shape)
    where ^T swaps the last two axes; the promoted axes are dropped again at the end.
    """

    @staticmethod
    def forward(ctx, a, b):
        if a.ndim == 0 or b.ndim == 0:
            raise ValueError(f"matmul: operands must be at least 1-D, got shapes {a.shape} and {b.shape}")
        ka, kb = a.shape[-1], (b.shape[0] if b.ndim == 1 else b.shape[-2])
        if ka != kb:
            raise _shape_error("matmul", a.shape, b.shape, f"do not align ({ka} != {kb})")
        try:
            np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
        except ValueError:
            raise _shape_error("matmul", a.shape, b.shape, "have batch dimensions that cannot be broadcast") from None
        ctx.save_for_backward(a, b)
        return np.asarray(a @ b)

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.saved
        a2 = a[None, :] if a.ndim == 1 else a                     # (..., m, k)
        b2 = b[:, None] if b.ndim == 1 else b                     # (..., k, n)
        g2 = g
        if a.ndim == 1:
            g2 = np.expand_dims(g2, -2 if b.ndim > 1 else 0)
        if b.ndim == 1:
            g2 = np.expand_dims(g2, -1)                           # (..., m, n)
        da = db = None
        if ctx.needs_input_grad[0]:
            da = unbroadcast(g2 @ np.swapaxes(b2, -1, -2), a2.shape).reshape(a.shape)
        if ctx.needs_input_grad[1]:
            db = unbroadcast(np.swapaxes(a2, -1, -2) @ g2, b2.shape).reshape(b.shape)
        return da, db


def matmul(a: TensorLike, b: TensorLike) -> Tensor:
    """a @ b with NumPy's matmul semantics (1-D, 2-D, batched, broadcast batch dims).

    Raises:
        ValueError: inner dimensions differ or batch dims cannot broadcast (names both shapes).
    """
    return MatMul.apply(a, b)


class Linear(Function):
    """Fused affine map y = x @ W^T + b for x (..., d_in), W (d_out, d_in), b (d_out,) or absent.

    With X = x reshaped to (N, d_in) and G = g reshaped to (N, d_out):
        dx = G @ W  (N, d_in),   dW = G^T @ X  (d_out, d_in),   db = sum_rows G  (d_out,)
    One 2-D GEMM per gradient (a broadcast batched matmul would compute dW per batch and then sum),
    and no GEMM at all for a gradient nobody needs (a frozen W costs no dW). db sums N rows pairwise
    (`reduce_sum`): plain float32 accumulation drifts by ~6e-4 relative at N = 65536.
    """

    @staticmethod
    def forward(ctx, x, W, b=None):
        if W.ndim != 2 or x.ndim < 1 or x.shape[-1] != W.shape[1]:
            raise ValueError(f"linear: input of shape {x.shape} does not fit a weight of shape {W.shape} "
                             f"(expected (..., {W.shape[-1] if W.ndim else '?'}) for W (d_out, d_in))")
        if b is not None and b.shape != (W.shape[0],):
            raise ValueError(f"linear: bias of shape {b.shape} does not fit weight of shape {W.shape}")
        x2 = x.reshape(-1, x.shape[-1])                           # (N, d_in)
        y = x2 @ W.T                                              # (N, d_out)
        if b is not None:
            y += b
        ctx.save_for_backward(x2, W)
        ctx.xshape = x.shape
        return y.reshape(*x.shape[:-1], W.shape[0])

    @staticmethod
    def backward(ctx, g):
        x2, W = ctx.saved
        G = g.reshape(-1, W.shape[0])                             # (N, d_out)
        need = ctx.needs_input_grad
        dx = (G @ W).reshape(ctx.xshape) if need[0] else None     # (..., d_in)
        dW = G.T @ x2 if need[1] else None                        # (d_out, d_in)
        db = reduce_sum(G, 0) if len(need) > 2 and need[2] else None  # (d_out,), pairwise over rows
        return (dx, dW) if len(need) == 2 else (dx, dW, db)


def linear(x: TensorLike, weight: TensorLike, bias: TensorLike | None = None) -> Tensor:
    """Fused x @ weight.T + bias: x (..., d_in), weight (d_out, d_in), bias (d_out,) -> (..., d_out)."""
    return Linear.apply(x, weight) if bias is None else Linear.apply(x, weight, bias)


def linear_composed(x: TensorLike, weight: TensorLike, bias: TensorLike | None = None) -> Tensor:
    """Twin of `linear` built from matmul, transpose and add (the test oracle)."""
    y = matmul(x, transpose(weight))
    return y if bias is None else y + bias


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


# ============================================================ softmax family (fused)
def _check_axis(op, x, axis):
    if x.ndim == 0:
        raise ValueError(f"{op}: needs at least one dimension, got a 0-d array")
    if not -x.ndim <= axis < x.ndim:
        raise ValueError(f"{op}: axis {axis} out of range for shape {x.shape}")


class Softmax(Function):
    """y = exp(x - max x) / sum exp(x - max x) along axis (the shift makes it stable at any scale).

    dx = y * (g - sum(g * y, axis))    (the Jacobian diag(y) - y y^T applied to g)
    """

    @staticmethod
    def forward(ctx, x, axis=-1):
        _check_axis("softmax", x, axis)
        e = np.exp(x - x.max(axis=axis, keepdims=True))
        y = e / e.sum(axis=axis, keepdims=True)
        ctx.save_for_backward(y)
        ctx.axis = axis
        return y

    @staticmethod
    def backward(ctx, g):
        (y,) = ctx.saved
        gy = g * y
        return (gy - y * gy.sum(axis=ctx.axis, keepdims=True),)


def softmax(x: TensorLike, axis: int = -1) -> Tensor:
    """Stable softmax along axis (fused)."""
    return Softmax.apply(x, axis=axis)


def softmax_composed(x: TensorLike, axis: int = -1) -> Tensor:
    """Twin of `softmax` from primitives: e = exp(x - max x); e / sum e."""
    e = exp(x - max(x, axis=axis, keepdims=True))
    return e / sum(e, axis=axis, keepdims=True)


class LogSoftmax(Function):
    """y = x - max x - log sum exp(x - max x) along axis (never exp of a large number, never log 0).

    dx = g - softmax(x) * sum(g, axis)
    """

    @staticmethod
    def forward(ctx, x, axis=-1):
        _check_axis("log_softmax", x, axis)
        z = x - x.max(axis=axis, keepdims=True)
        y = z - np.log(np.exp(z).sum(axis=axis, keepdims=True))
        ctx.save_for_backward(y)
        ctx.axis = axis
        return y

    @staticmethod
    def backward(ctx, g):
        (y,) = ctx.saved
        return (g - np.exp(y) * g.sum(axis=ctx.axis, keepdims=True),)


def log_softmax(x: TensorLike, axis: int = -1) -> Tensor:
    """Stable log-softmax along axis (fused)."""
    return LogSoftmax.apply(x, axis=axis)


def log_softmax_composed(x: TensorLike, axis: int = -1) -> Tensor:
    """Twin of `log_softmax` from primitives: z - log(sum(exp(z))), z = x - max x."""
    z = x - max(x, axis=axis, keepdims=True)
    return z - log(sum(exp(z), axis=axis, keepdims=True))


class CrossEntropy(Function):
    """Mean cross-entropy of logits (..., V) against integer targets (...), skipping ignore_index.

    loss = -(1/n) sum_{valid i} log_softmax(logits_i)[t_i],   n = number of valid targets
    dlogits_i = g * (softmax(logits_i) - onehot(t_i)) / n for valid rows, 0 for ignored rows.
    """

    @staticmethod
    def forward(ctx, logits, targets=None, ignore_index=-100):
        t = np.asarray(targets)
        if not np.issubdtype(t.dtype, np.integer):
            raise TypeError(f"cross_entropy: targets must be integers, got dtype {t.dtype}")
        if logits.ndim < 1 or t.shape != logits.shape[:-1]:
            raise ValueError(f"cross_entropy: logits of shape {logits.shape} need targets of shape "
                             f"{logits.shape[:-1]}, got {t.shape}")
        V = logits.shape[-1]
        z = logits.reshape(-1, V)                                 # (N, V)
        t = t.reshape(-1)                                         # (N,)
        valid = t != ignore_index
        n = int(valid.sum())
        if n == 0:
            raise ValueError("cross_entropy: every target equals ignore_index; the mean is undefined")
        if np.any((t[valid] < 0) | (t[valid] >= V)):
            raise ValueError(f"cross_entropy: targets must lie in [0, {V}) or equal ignore_index={ignore_index}")
        tv = np.where(valid, t, 0)
        zs = z - z.max(axis=1, keepdims=True)
        lse = np.log(np.exp(zs).sum(axis=1))                      # (N,)
        nll = lse - zs[np.arange(len(tv)), tv]                    # (N,)
        ctx.save_for_backward(zs, lse, tv, valid)
        ctx.n, ctx.shape = n, logits.shape
        return np.asarray((nll * valid).sum() / n, dtype=logits.dtype)

    @staticmethod
    def backward(ctx, g):
        zs, lse, tv, valid = ctx.saved
        p = np.exp(zs - lse[:, None])                             # (N, V) softmax
        p[np.arange(len(tv)), tv] -= 1
        p *= (g / ctx.n) * valid[:, None].astype(p.dtype)
        return (p.reshape(ctx.shape),)


def cross_entropy(logits: TensorLike, targets: np.ndarray | Tensor, ignore_index: int = -100) -> Tensor:
    """Mean cross-entropy (nats) of logits (..., V) against integer targets (...); fused and stable.

    Raises:
        TypeError: non-integer targets. ValueError: shape mismatch, out-of-range targets, or all
        targets ignored.
    """
    targets = targets.data if isinstance(targets, Tensor) else targets
    return CrossEntropy.apply(logits, targets=targets, ignore_index=ignore_index)


def cross_entropy_composed(logits: TensorLike, targets: np.ndarray | Tensor,
                           ignore_index: int = -100) -> Tensor:
    """Twin of `cross_entropy` from log_softmax_composed, getitem and mean."""
    logits = _t(logits)
    V = logits.shape[-1]
    t = np.asarray(targets).reshape(-1)
    keep = np.nonzero(t != ignore_index)[0]
    lp = log_softmax_composed(reshape(logits, (-1, V)))
    return -mean(getitem(lp, (keep, t[keep])))


class LayerNorm(Function):
    """Layer normalisation over the last axis (Ba, Kiros, Hinton 2016), fused.

    Forward, per row of C features:  mu = mean x, rstd = 1/sqrt(var x + eps), xhat = (x - mu) rstd,
    y = xhat * w + b.
    Backward (derived): with gh = g * w,
        dx = rstd * (gh - mean(gh) - xhat * mean(gh * xhat))
        dw = sum over rows of g * xhat,   db = sum over rows of g
    A constant row has var = 0, so rstd = 1/sqrt(eps) stays finite; x - mu is computed exactly 0 for
    it at any magnitude (see `_centre`), so y = b and dw = 0 exactly. The sums over rows (dw, db)
    are pairwise, so their float32 error does not grow with the number of rows.
    """

    @staticmethod
    def forward(ctx, x, w, b=None, eps=1e-5):
        C = x.shape[-1] if x.ndim else None
        if x.ndim == 0 or w.shape != (C,) or (b is not None and b.shape != (C,)):
            raise ValueError(f"layer_norm: input {x.shape} needs weight and bias of shape ({C},), got "
                             f"{w.shape} and {None if b is None else b.shape}")
        xc = _centre(x, (x.ndim - 1,))                            # a constant row gives exactly 0
        var = (xc * xc).mean(axis=-1, keepdims=True)
        rstd = 1.0 / np.sqrt(var + x.dtype.type(eps))
        xhat = xc * rstd
        ctx.save_for_backward(xhat, rstd, w)
        y = xhat * w
        if b is not None:
            y += b
        return y

    @staticmethod
    def backward(ctx, g):
        xhat, rstd, w = ctx.saved
        need = ctx.needs_input_grad
        C = xhat.shape[-1]
        dx = None
        if need[0]:
            gh = g * w
            dx = rstd * (gh - gh.mean(axis=-1, keepdims=True) - xhat * (gh * xhat).mean(axis=-1, keepdims=True))
        g2 = g.reshape(-1, C)                                     # sums over rows: pairwise in float32
        dw = reduce_sum(g2 * xhat.reshape(-1, C), 0) if need[1] else None
        if len(need) == 2:
            return dx, dw
        return dx, dw, (reduce_sum(g2, 0) if need[2] else None)


def layer_norm(x: TensorLike, weight: TensorLike, bias: TensorLike | None = None, eps: float = 1e-5) -> Tensor:
    """Fused layer norm over the last axis: x (..., C), weight (C,), bias (C,) or None."""
    if bias is None:
        return LayerNorm.apply(x, weight, eps=eps)
    return LayerNorm.apply(x, weight, bias, eps=eps)


def layer_norm_composed(x: TensorLike, weight: TensorLike, bias: TensorLike | None = None,
                        eps: float = 1e-5) -> Tensor:
    """Twin of `layer_norm` from mean, var, sqrt and arithmetic.

    Centred on a shifted copy d = x - x[..., :1] (a constant: layer norm is shift-invariant), so a
    constant row gives exactly the bias, as the fused op does."""
    x = _t(x)
    d = x - x.data[..., :1]
    xhat = (d - mean(d, axis=-1, keepdims=True)) / sqrt(var(d, axis=-1, keepdims=True) + eps)
    y = xhat * weight
    return y if bias is None else y + bias


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


class Dropout(Function):
    """Inverted dropout with a given keep-mask: y = x * mask / (1 - p).  dx = g * mask / (1 - p)."""

    @staticmethod
    def forward(ctx, x, mask=None, p=0.0):
        scale = (mask / x.dtype.type(1 - p)).astype(x.dtype, copy=False)
        ctx.save_for_backward(scale)
        return x * scale

    @staticmethod
    def backward(ctx, g):
        return (g * ctx.saved[0],)


def dropout(x: TensorLike, p: float, training: bool = True, rng: np.random.Generator | None = None) -> Tensor:
    """Inverted dropout: zero each entry with probability p, scale the rest by 1/(1-p).

    Identity (the same tensor) when not training or p == 0.
    Args:
        rng: np.random.Generator for the mask (default: a fresh unseeded one).
    Raises:
        ValueError: p outside [0, 1).
    """
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout: p must be in [0, 1), got {p}")
    x = _t(x)
    if not training or p == 0.0:
        return x
    rng = rng if rng is not None else np.random.default_rng()
    mask = rng.random(x.shape) >= p
    return Dropout.apply(x, mask=mask, p=p)


_CAUSAL = {}


def _causal_bias(T, dtype):
    """(T, T) additive mask: 0 on and below the diagonal, -inf above (cached; adding it is faster
    than boolean-mask assignment)."""
    key = (T, np.dtype(dtype))
    if key not in _CAUSAL:
        bias = np.zeros((T, T), dtype=dtype)
        bias[np.triu_indices(T, 1)] = -np.inf
        bias.setflags(write=False)
        _CAUSAL[key] = bias
    return _CAUSAL[key]


class Attention(Function):
    """Fused causal multi-head self-attention on the fused projection qkv (B, T, 3C) -> (B, T, C).

    Forward (Vaswani et al. 2017, eq. 1, with GPT-2's causal mask), per head, s = 1/sqrt(hs):
        S = s Q K^T  (T, T);  S_ij = -inf for j > i;  P = softmax(S);  P~ = P * M / keep;  Y = P~ V
    Backward (derived):
        dV = P~^T dY;   dP~ = dY V^T;   dP = dP~ * M / keep;   dS = P * (dP - sum_j(dP * P));
        dQ = s dS K;    dK = s dS^T Q
    Masked entries have P = 0, hence dS = 0 there. One op instead of ~15 primitives: no copies
    for q/k/v slices, no separate mask, softmax and transpose nodes.
    """

    @staticmethod
    def forward(ctx, qkv, n_head=1, dropout_mask=None, p=0.0):
        if qkv.ndim != 3 or qkv.shape[-1] % (3 * n_head):
            raise ValueError(f"attention: expected qkv of shape (B, T, 3C) with C divisible by "
                             f"n_head={n_head}, got {qkv.shape}")
        Bsz, T, C3 = qkv.shape
        C = C3 // 3
        hs = C // n_head
        h = qkv.reshape(Bsz, T, 3, n_head, hs).transpose(2, 0, 3, 1, 4)   # (3, B, nh, T, hs)
        q, k, v = h[0], h[1], h[2]
        scale = qkv.dtype.type(1.0 / math.sqrt(hs))
        att = (q @ k.transpose(0, 1, 3, 2)) * scale                # (B, nh, T, T)
        att += _causal_bias(T, att.dtype)                          # -inf above the diagonal
        att -= att.max(axis=-1, keepdims=True)
        np.exp(att, out=att)
        att /= att.sum(axis=-1, keepdims=True)                     # P
        pd = att
        if dropout_mask is not None:
            pd = att * (dropout_mask / qkv.dtype.type(1 - p)).astype(qkv.dtype, copy=False)
        y = pd @ v                                                  # (B, nh, T, hs)
        ctx.save_for_backward(q, k, v, att, pd, dropout_mask)
        ctx.scale, ctx.p = scale, p
        return y.transpose(0, 2, 1, 3).reshape(Bsz, T, C)          # (B, T, C)

    @staticmethod
    def backward(ctx, g):
        q, k, v, att, pd, mask = ctx.saved
        Bsz, nh, T, hs = q.shape
        gy = g.reshape(Bsz, T, nh, hs).transpose(0, 2, 1, 3)        # (B, nh, T, hs)
        dqkv = np.empty((Bsz, T, 3, nh, hs), dtype=g.dtype)
        dqkv[:, :, 2] = (pd.transpose(0, 1, 3, 2) @ gy).transpose(0, 2, 1, 3)   # dV
        dp = gy @ v.transpose(0, 1, 3, 2)                           # (B, nh, T, T)
        if mask is not None:
            dp *= (mask / g.dtype.type(1 - ctx.p)).astype(g.dtype, copy=False)
        dp -= (dp * att).sum(axis=-1, keepdims=True)
        dp *= att                                                   # dS
        dp *= ctx.scale
        dqkv[:, :, 0] = (dp @ k).transpose(0, 2, 1, 3)              # dQ
        dqkv[:, :, 1] = (dp.transpose(0, 1, 3, 2) @ q).transpose(0, 2, 1, 3)   # dK
        return (dqkv.reshape(Bsz, T, 3 * nh * hs),)


def attention(qkv: TensorLike, n_head: int, dropout_mask: np.ndarray | None = None, p: float = 0.0) -> Tensor:
    """Fused causal self-attention: qkv (B, T, 3C) -> (B, T, C) with n_head heads.

    dropout_mask: optional 0/1 array (B, nh, T, T) for attention-probability dropout with rate p.
    """
    return Attention.apply(qkv, n_head=n_head, dropout_mask=dropout_mask, p=p)


def attention_composed(qkv: TensorLike, n_head: int, dropout_mask: np.ndarray | None = None,
                       p: float = 0.0) -> Tensor:
    """Twin of `attention` built from split/reshape/transpose/matmul/masked_fill/softmax (nanoGPT's)."""
    Bsz, T, C3 = qkv.shape
    C = C3 // 3
    hs = C // n_head
    q, k, v = split(qkv, 3, axis=-1)                                            # 3 x (B, T, C)
    q, k, v = (transpose(reshape(t, (Bsz, T, n_head, hs)), (0, 2, 1, 3)) for t in (q, k, v))  # (B, nh, T, hs)
    att = matmul(q, transpose(k, (0, 1, 3, 2))) * (1.0 / math.sqrt(hs))        # (B, nh, T, T)
    att = masked_fill(att, np.triu(np.ones((T, T), dtype=bool), 1), -np.inf)
    att = softmax(att, axis=-1)
    if dropout_mask is not None:
        att = Dropout.apply(att, mask=dropout_mask, p=p)
    y = matmul(att, v)                                                          # (B, nh, T, hs)
    return reshape(transpose(y, (0, 2, 1, 3)), (Bsz, T, C))

