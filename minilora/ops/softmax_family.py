"""The softmax family, fused for stability: softmax, log_softmax, cross_entropy, each with its
composed twin.

Notation and conventions: see the package docstring (`minilora.ops`)."""
from __future__ import annotations

import numpy as np

from ..function import Function
from ..tensor import Tensor
from ._common import TensorLike, _t
from .elementwise import exp, log
from .reduce import max, mean, sum
from .shape import getitem, reshape


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


