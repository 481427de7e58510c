"""Matrix products: matmul (1-D, 2-D, batched, broadcast) and the fused `linear` with its composed twin.

Notation and conventions: see the package docstring (`minilora.ops`)."""
from __future__ import annotations

import numpy as np

from ..function import Function, reduce_sum, unbroadcast
from ..tensor import Tensor
from ._common import TensorLike, _shape_error
from .shape import transpose


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


