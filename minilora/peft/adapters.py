"""Bottleneck adapters (Houlsby et al. 2019, arXiv:1902.00751, §2.1 and Fig. 2; Lin et al. 2020).

An adapter follows a sublayer's output projection, before the residual add:

    h  = x W^T + b                           (the frozen projection, e.g. attn.c_proj)    (N, C)
    z  = h W_d^T + b_d                       down-projection, W_d (m, C), b_d (m,)        (N, m)
    a  = act(z)                              relu or GPT-2's GELU
    y  = h + a W_u^T + b_u                   up-projection, W_u (C, m), b_u (C,)          (N, C)

Backward (derived; g = dL/dy (N, C)):
    dW_u = g^T a  (C, m);   db_u = sum_rows g;   da = g W_u  (N, m);   dz = da * act'(z)
    dW_d = dz^T h  (m, C);  db_d = sum_rows dz;  dh = g + dz W_d  (N, C)     (the skip path gives g)

W_u = 0 and b_u = 0 at the start make every adapter the identity (Houlsby's near-identity init,
exact here), so the adapted model starts as the base; dW_u = g^T a != 0 lets training begin (the
same trick as LoRA's B = 0). Unlike LoRA, the nonlinearity means the adapter can NOT be merged
into W: it stays as two extra small GEMMs in sequence after every adapted projection, which is the
inference latency of Table 1 of the LoRA paper.

Houlsby ("houlsby", the LoRA paper's Adapter^H): two adapters per block, after attn.c_proj and
mlp.c_proj. Lin ("lin", Adapter^L): one per block, after mlp.c_proj (Lin et al. also put a
LayerNorm inside the adapter; we leave it out, so H and L differ only in placement).
Parameter names follow adapter-transformers: `...mlp.c_proj.adapter_down.weight` etc.
"""
from __future__ import annotations

import math

import numpy as np

from .. import ops
from ..function import Function
from ..nn.layers import Linear
from ..nn.module import Module
from ..tensor import Tensor

__all__ = ["AdapterFunction", "adapter", "adapter_composed", "AdapterLinear"]

_GELU_C = math.sqrt(2.0 / math.pi)


def _act(z, kind):
    """(act(z), act'(z)) for relu or the tanh GELU (the same formula as ops.GELU)."""
    if kind == "relu":
        return np.maximum(z, 0), (z > 0).astype(z.dtype)
    s = 1.0 / (1.0 + np.exp(np.clip(-2 * _GELU_C * (z + 0.044715 * z ** 3), -700, 700)))   # sigmoid(2u)
    d = s + 2 * _GELU_C * z * s * (1 - s) * (1 + 3 * 0.044715 * z * z)
    return (z * s).astype(z.dtype), d.astype(z.dtype)


class AdapterFunction(Function):
    """y = h + act(h W_d^T + b_d) W_u^T + b_u, h (..., C) -> (..., C); see the module docstring.

    Inputs: h (..., C), W_d (m, C), b_d (m,), W_u (C, m), b_u (C,); constant `activation`.
    Raises: ValueError naming the shapes when they do not fit.
    """

    @staticmethod
    def forward(ctx, h, Wd, bd, Wu, bu, activation="relu"):
        C = h.shape[-1]
        m = Wd.shape[0]
        if Wd.shape != (m, C) or bd.shape != (m,) or Wu.shape != (C, m) or bu.shape != (C,):
            raise ValueError(f"adapter: shapes do not fit: h {h.shape}, W_down {Wd.shape} (expected (m, {C})), "
                             f"b_down {bd.shape}, W_up {Wu.shape} (expected ({C}, m)), b_up {bu.shape}")
        h2 = h.reshape(-1, C)                                       # (N, C)
        z = h2 @ Wd.T + bd                                          # (N, m)
        a, da_dz = _act(z, activation)                              # (N, m) each
        y = h2 + a @ Wu.T + bu                                      # (N, C)
        ctx.save_for_backward(h2, a, da_dz, Wd, Wu)
        ctx.shape = h.shape
        return y.reshape(h.shape)

    @staticmethod
    def backward(ctx, g):
        h2, a, da_dz, Wd, Wu = ctx.saved
        need = ctx.needs_input_grad
        G = g.reshape(h2.shape)                                     # (N, C)
        dz = (G @ Wu) * da_dz                                       # (N, m)
        dh = (G + dz @ Wd).reshape(ctx.shape) if need[0] else None  # skip path + bottleneck path
        dWd = dz.T @ h2 if need[1] else None                        # (m, C)
        dbd = dz.sum(axis=0) if need[2] else None                   # (m,)
        dWu = G.T @ a if need[3] else None                          # (C, m)
        dbu = G.sum(axis=0) if need[4] else None                    # (C,)
        return dh, dWd, dbd, dWu, dbu


def adapter(h, Wd, bd, Wu, bu, activation: str = "relu") -> Tensor:
    """The fused adapter op (hand-derived backward): h (..., C) -> (..., C)."""
    return AdapterFunction.apply(h, Wd, bd, Wu, bu, activation=activation)


def adapter_composed(h, Wd, bd, Wu, bu, activation: str = "relu") -> Tensor:
    """Twin of `adapter` from engine ops (linear_composed, relu/gelu, add): the test oracle."""
    z = ops.linear_composed(h, Wd, bd)
    a = ops.relu(z) if activation == "relu" else ops.gelu(z)
    return h + ops.linear_composed(a, Wu, bu)


class AdapterLinear(Module):
    """A frozen Linear followed by an adapter: x (..., d_in) -> (..., d_out).

    Holds the Linear's own `weight` and `bias` Parameters (same objects, names unchanged) and two
    child Linears `adapter_down` (m, d_out) and `adapter_up` (d_out, m) whose parameters the fused
    `adapter` op consumes.
    Args: linear: the nn Linear to follow; bottleneck_size m; non_linearity; init_std; rng.
    """

    def __init__(self, linear: Linear, bottleneck_size: int, non_linearity: str = "relu", init_std: float = 0.02,
                 rng: np.random.Generator | None = None):
        super().__init__()
        rng = rng if rng is not None else np.random.default_rng(0)
        d_out = linear.out_features
        dt = linear.weight.dtype
        self.in_features, self.out_features = linear.in_features, d_out
        self.weight = linear.weight
        self.bias = linear.bias
        self.non_linearity = non_linearity
        self.adapter_down = Linear(d_out, bottleneck_size, dtype=dt)
        self.adapter_down.weight.data = rng.normal(0.0, init_std, (bottleneck_size, d_out)).astype(dt)
        self.adapter_up = Linear(bottleneck_size, d_out, dtype=dt)
        self.adapter_up.weight.data = np.zeros((d_out, bottleneck_size), dtype=dt)

    def forward(self, x: Tensor) -> Tensor:
        """x (..., d_in) -> (..., d_out)."""
        h = ops.linear(x, self.weight, self.bias)
        d, u = self.adapter_down, self.adapter_up
        return adapter(h, d.weight, d.bias, u.weight, u.bias, self.non_linearity)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bottleneck={self.adapter_down.out_features}, {self.non_linearity}")
