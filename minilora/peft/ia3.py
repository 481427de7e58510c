"""(IA)^3 (Liu et al. 2022, arXiv:2205.05638, §3.3): learned vectors that rescale activations.

For a Linear y = x W^T + b (x (N, d_in), W (d_out, d_in)) and a vector l, PEFT's IA3 layer does

    output scaling (keys, values; non-feed-forward targets):  y = (x W^T + b) * l,   l (d_out,)
    input scaling  (feed-forward targets, e.g. mlp.c_proj):   y = (x * l) W^T + b,   l (d_in,)

(the paper's l_k, l_v, and l_ff on the MLP's hidden activations, which are the input of c_proj).
Backward (derived; g = dL/dy (N, d_out), u = x W^T + b):
    output:  dl = sum_rows(g * u);   gl = g * l;   dx = gl W;   dW = gl^T x;   db = sum_rows gl
    input:   dl = sum_rows((g W) * x);   dx = (g W) * l;   dW = g^T (x * l);   db = sum_rows g

Mergeable like LoRA (a diagonal matrix folds into W):
    output:  W <- diag(l) W,  b <- l * b;        input:  W <- W diag(l)  (column scaling; b unchanged)
Unmerging divides by l, refused while some |l| < 1e-6.
"""
from __future__ import annotations

import numpy as np

from .. import ops
from ..function import Function
from ..nn.layers import Linear
from ..nn.module import Module, Parameter
from ..tensor import Tensor, is_grad_enabled

__all__ = ["IA3Function", "ia3_linear", "ia3_linear_composed", "IA3Linear"]


class IA3Function(Function):
    """The fused IA3 layer: inputs (x, W, l) or (x, W, l, b), l = ia3_l; constant `feedforward` (input scaling).

    Shapes: x (..., d_in), W (d_out, d_in), l (d_in,) if feedforward else (d_out,), b (d_out,).
    Raises: ValueError naming the shapes when they do not fit.
    """

    @staticmethod
    def forward(ctx, x, W, lv, b=None, feedforward=False):
        d_out, d_in = W.shape
        want = d_in if feedforward else d_out
        if x.shape[-1] != d_in or lv.shape != (want,) or (b is not None and b.shape != (d_out,)):
            raise ValueError(f"ia3_linear: shapes do not fit: x {x.shape}, W {W.shape}, ia3_l {lv.shape} "
                             f"(expected ({want},) for {'input' if feedforward else 'output'} scaling), "
                             f"b {None if b is None else b.shape}")
        x2 = x.reshape(-1, d_in)                                   # (N, d_in)
        if feedforward:
            xs = x2 * lv                                            # (N, d_in)
            y = xs @ W.T
            if b is not None:
                y += b
            ctx.save_for_backward(x2, xs, W, lv)
        else:
            u = x2 @ W.T                                           # (N, d_out)
            if b is not None:
                u += b
            y = u * lv
            ctx.save_for_backward(x2, u, W, lv)
        ctx.feedforward, ctx.xshape = feedforward, x.shape
        return y.reshape(*x.shape[:-1], d_out)

    @staticmethod
    def backward(ctx, g):
        x2, s, W, lv = ctx.saved
        need = ctx.needs_input_grad
        G = g.reshape(-1, W.shape[0])                              # (N, d_out)
        if ctx.feedforward:
            gW = G @ W                                             # (N, d_in)
            dx = (gW * lv).reshape(ctx.xshape) if need[0] else None
            dW = G.T @ s if need[1] else None                      # s = x * l
            dl = (gW * x2).sum(axis=0) if need[2] else None
            db = G.sum(axis=0) if len(need) > 3 and need[3] else None
        else:
            gl = G * lv                                             # (N, d_out)
            dx = (gl @ W).reshape(ctx.xshape) if need[0] else None
            dW = gl.T @ x2 if need[1] else None
            dl = (G * s).sum(axis=0) if need[2] else None          # s = x W^T + b
            db = gl.sum(axis=0) if len(need) > 3 and need[3] else None
        return (dx, dW, dl) if len(need) == 3 else (dx, dW, dl, db)


def ia3_linear(x, W, lv, b=None, feedforward: bool = False) -> Tensor:
    """The fused IA3 op (hand-derived backward); see the module docstring."""
    if b is None:
        return IA3Function.apply(x, W, lv, feedforward=feedforward)
    return IA3Function.apply(x, W, lv, b, feedforward=feedforward)


def ia3_linear_composed(x, W, lv, b=None, feedforward: bool = False) -> Tensor:
    """Twin of `ia3_linear` from engine ops (mul, linear_composed): the test oracle."""
    if feedforward:
        return ops.linear_composed(ops.mul(x, lv), W, b)
    return ops.mul(ops.linear_composed(x, W, b), lv)


class IA3Linear(Module):
    """A frozen Linear with an IA3 vector `ia3_l` (PEFT's name): x (..., d_in) -> (..., d_out).

    Holds the Linear's own `weight` / `bias` Parameters. `merge()` folds l into them (then the
    forward is the plain linear: no latency), `unmerge()` takes it out again.
    Args: linear; feedforward (input scaling); init_ia3_weights (True: ones); rng (for False).
    """

    def __init__(self, linear: Linear, feedforward: bool, init_ia3_weights: bool = True,
                 rng: np.random.Generator | None = None):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight, self.bias = linear.weight, linear.bias
        self.feedforward = bool(feedforward)
        n = self.in_features if self.feedforward else self.out_features
        dt = linear.weight.dtype
        if init_ia3_weights:
            vec = np.ones(n, dtype=dt)
        else:
            vec = (1.0 + (rng or np.random.default_rng(0)).normal(0.0, 0.5, n)).astype(dt)
        self.ia3_l = Parameter(vec)
        self.merged = False

    def forward(self, x: Tensor) -> Tensor:
        """x (..., d_in) -> (..., d_out). Merged: the plain fused linear."""
        if self.merged:
            if self.training and is_grad_enabled() and self.ia3_l.requires_grad:
                raise RuntimeError("IA3Linear: training a merged layer would give ia3_l no gradient; "
                                   "unmerge first, or evaluate under eval() / no_grad()")
            return ops.linear(x, self.weight, self.bias)
        return ia3_linear(x, self.weight, self.ia3_l, self.bias, self.feedforward)

    def merge(self) -> None:
        """Fold ia3_l into weight (and bias, for output scaling). Raises RuntimeError if merged."""
        if self.merged:
            raise RuntimeError("IA3Linear.merge: already merged")
        lv = self.ia3_l.data
        if self.feedforward:
            self.weight.data = self.weight.data * lv[None, :]
        else:
            self.weight.data = self.weight.data * lv[:, None]
            if self.bias is not None:
                self.bias.data = self.bias.data * lv
        self.merged = True

    def unmerge(self) -> None:
        """Divide ia3_l back out. Raises RuntimeError if not merged, ValueError if some |l| < 1e-6."""
        if not self.merged:
            raise RuntimeError("IA3Linear.unmerge: not merged")
        lv = self.ia3_l.data
        if np.any(np.abs(lv) < 1e-6):
            raise ValueError("IA3Linear.unmerge: some ia3_l entries are ~0; the merged weight cannot be divided back")
        if self.feedforward:
            self.weight.data = self.weight.data / lv[None, :]
        else:
            self.weight.data = self.weight.data / lv[:, None]
            if self.bias is not None:
                self.bias.data = self.bias.data / lv
        self.merged = False

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"{'input' if self.feedforward else 'output'} scaling, merged={self.merged}")
