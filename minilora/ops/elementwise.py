"""Elementwise arithmetic and functions (add ... gelu) and inverted dropout: each backward is the
local derivative times g, with `unbroadcast` for broadcasting inputs.

Notation and conventions: see the package docstring (`minilora.ops`)."""
from __future__ import annotations

import math

import numpy as np

from ..function import Function, unbroadcast
from ..tensor import Tensor
from ._common import TensorLike, _broadcast_check, _t


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
        s = x * x
        s *= 0.044715
        s += 1
        s *= x
        s *= -2 * _GELU_C                                         # -2u
        with np.errstate(over="ignore"):                          # exp(+large) = inf gives s = 0: right
            np.exp(s, out=s)
        s += 1
        np.reciprocal(s, out=s)                                   # s = sigmoid(2u)
        ctx.save_for_backward(x, s)                               # x^2 is recomputed: one (N,) array less kept
        ctx.shape = shape
        return (x * s).reshape(shape)

    @staticmethod
    def backward(ctx, g):
        x, s = ctx.saved
        d = 1 - s
        d *= s                                                    # s (1 - s)
        d *= x
        a = x * x
        a *= 3 * 0.044715
        a += 1
        d *= a
        d *= 2 * _GELU_C
        d += s                                                    # dy/dx
        d *= g.reshape(-1)
        return (d.reshape(ctx.shape),)


def gelu(x: TensorLike) -> Tensor:
    """GPT-2's tanh-approximate GELU, elementwise."""
    return GELU.apply(x)



# ============================================================ dropout
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


