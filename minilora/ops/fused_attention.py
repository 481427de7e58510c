"""Causal self-attention as one fused op on the fused c_attn output (B, T, 3C) -> (B, T, C), with its
hand-derived backward and the composed twin (nanoGPT's formulation from primitives).

Notation and conventions: see the package docstring (`minilora.ops`)."""
from __future__ import annotations

import math

import numpy as np

from ..function import Function
from ..tensor import Tensor
from ._common import TensorLike
from .elementwise import Dropout
from .linalg import matmul
from .shape import masked_fill, reshape, split, transpose
from .softmax_family import softmax

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

