"""Layer norm, fused (backward derived by hand), with its composed twin; constant rows give exactly
the bias (`_common._centre`).

Notation and conventions: see the package docstring (`minilora.ops`)."""
from __future__ import annotations

import numpy as np

from ..function import Function, reduce_sum
from ..tensor import Tensor
from ._common import TensorLike, _centre, _t
from .elementwise import sqrt
from .reduce import mean, var


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
        xhat = xc
        xhat *= rstd                                              # in place: xc is this op's own array
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
            gh = g * w                                            # the same arithmetic as
            t = gh * xhat                                         # rstd * (gh - mean(gh) - xhat * mean(gh xhat)),
            m2 = t.mean(axis=-1, keepdims=True)                   # in two scratch arrays instead of six
            gh -= gh.mean(axis=-1, keepdims=True)
            np.multiply(xhat, m2, out=t)
            gh -= t
            gh *= rstd
            dx = gh
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


