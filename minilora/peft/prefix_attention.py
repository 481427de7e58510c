"""Causal self-attention over [prefix K/V ; sequence K/V] (prefix-layer tuning, Li & Liang 2021, §4.2).

Per head (hs = C / n_head, s = 1/sqrt(hs)), with a prefix of P trainable keys K_p and values V_p
(P, hs) shared by the batch, and the sequence's Q, K, V (T, hs) sliced from the fused c_attn output:

    K~ = [K_p ; K]  (P+T, hs),   V~ = [V_p ; V]  (P+T, hs)
    S  = s Q K~^T   (T, P+T);    S_ij = -inf  iff  j >= P and j - P > i      (the mask below)
    A  = softmax_rows(S);        A~ = A * M / keep  (optional dropout);     Y = A~ V~   (T, hs)

The mask: column j < P is a prefix slot, visible to EVERY position i (the prefix comes "before" the
whole sequence); column j >= P is sequence position j - P, visible to i only if j - P <= i. So the
mask is [ones (T, P) | lower-triangular (T, T)]; masking the prefix with the plain causal mask of
the (P+T)-long sequence shifted by P would hide nothing it should, but a (T, P+T) triangle not
shifted by P would hide prefix slots from the first positions: the usual bug (exercise
`prefix_attention_mask`).

Backward (derived, as ops.Attention's with the wider key/value axis):
    dV~ = A~^T dY;   dA~ = dY V~^T;   dA = dA~ * M / keep;   dS = A * (dA - sum_j(dA * A))
    dQ  = s dS K~;   dK~ = s dS^T Q;  dK_p, dV_p = the first P rows of dK~, dV~ summed over the batch
Masked entries have A = 0, hence dS = 0 there.

Sequence length used up: none of the block_size positions (the prefix has keys and values but no
queries and no position embedding here; PEFT on Hugging Face's GPT-2 starts the positions at P, so
there P of n_positions are used up). The cost is in every layer's attention: (T, P+T) scores
instead of (T, T), and 2 P C more key/value entries per layer to keep.
"""
from __future__ import annotations

import math

import numpy as np

from .. import ops
from ..function import Function
from ..nn.module import Module
from ..tensor import Tensor

__all__ = ["PrefixAttention", "prefix_attention", "prefix_attention_composed", "prefix_mask",
           "PrefixSelfAttention"]


def prefix_mask(T: int, P: int) -> np.ndarray:
    """bool (T, P+T): True where query i may attend to column j (prefix columns always, then causal)."""
    return np.concatenate([np.ones((T, P), dtype=bool), np.tril(np.ones((T, T), dtype=bool))], axis=1)


class PrefixAttention(Function):
    """Fused causal multi-head attention with a key/value prefix; see the module docstring.

    Inputs: qkv (B, T, 3C), prefix_k (P, C), prefix_v (P, C); constants n_head, dropout_mask
    (0/1 array (B, nh, T, P+T) or None), p. Result (B, T, C).
    Raises: ValueError naming the shapes when they do not fit.
    """

    @staticmethod
    def forward(ctx, qkv, pk, pv, n_head=1, dropout_mask=None, p=0.0):
        if qkv.ndim != 3 or qkv.shape[-1] % (3 * n_head):
            raise ValueError(f"prefix_attention: expected qkv (B, T, 3C) with C divisible by n_head={n_head}, "
                             f"got {qkv.shape}")
        Bsz, T, C3 = qkv.shape
        C = C3 // 3
        if pk.ndim != 2 or pk.shape[1] != C or pv.shape != pk.shape or pk.shape[0] < 1:
            raise ValueError(f"prefix_attention: prefix keys/values must be (P, {C}) with P >= 1, "
                             f"got {pk.shape} and {pv.shape}")
        P, hs = pk.shape[0], C // n_head
        h = qkv.reshape(Bsz, T, 3, n_head, hs).transpose(2, 0, 3, 1, 4)   # (3, B, nh, T, hs)
        q = h[0]
        kf = np.empty((Bsz, n_head, P + T, hs), dtype=qkv.dtype)
        vf = np.empty_like(kf)
        kf[:, :, :P] = pk.reshape(P, n_head, hs).transpose(1, 0, 2)   # broadcast over the batch
        vf[:, :, :P] = pv.reshape(P, n_head, hs).transpose(1, 0, 2)
        kf[:, :, P:], vf[:, :, P:] = h[1], h[2]
        scale = qkv.dtype.type(1.0 / math.sqrt(hs))
        att = (q @ kf.transpose(0, 1, 3, 2)) * scale               # (B, nh, T, P+T)
        att[..., ~prefix_mask(T, P)] = -np.inf
        att -= att.max(axis=-1, keepdims=True)
        np.exp(att, out=att)
        att /= att.sum(axis=-1, keepdims=True)                     # A
        ad = att
        if dropout_mask is not None:
            ad = att * (dropout_mask / qkv.dtype.type(1 - p)).astype(qkv.dtype, copy=False)
        y = ad @ vf                                                 # (B, nh, T, hs)
        ctx.save_for_backward(q, kf, vf, att, ad, dropout_mask)
        ctx.scale, ctx.p, ctx.P = scale, p, P
        return y.transpose(0, 2, 1, 3).reshape(Bsz, T, C)

    @staticmethod
    def backward(ctx, g):
        q, kf, vf, att, ad, mask = ctx.saved
        Bsz, nh, T, hs = q.shape
        P = ctx.P
        gy = g.reshape(Bsz, T, nh, hs).transpose(0, 2, 1, 3)       # (B, nh, T, hs)
        dvf = ad.transpose(0, 1, 3, 2) @ gy                        # (B, nh, P+T, hs)
        da = gy @ vf.transpose(0, 1, 3, 2)                         # (B, nh, T, P+T)
        if mask is not None:
            da *= (mask / g.dtype.type(1 - ctx.p)).astype(g.dtype, copy=False)
        da -= (da * att).sum(axis=-1, keepdims=True)
        da *= att                                                  # dS
        da *= ctx.scale
        dq = da @ kf                                               # (B, nh, T, hs)
        dkf = da.transpose(0, 1, 3, 2) @ q                         # (B, nh, P+T, hs)
        dqkv = np.empty((Bsz, T, 3, nh, hs), dtype=g.dtype)
        dqkv[:, :, 0] = dq.transpose(0, 2, 1, 3)
        dqkv[:, :, 1] = dkf[:, :, P:].transpose(0, 2, 1, 3)
        dqkv[:, :, 2] = dvf[:, :, P:].transpose(0, 2, 1, 3)
        dpk = dkf[:, :, :P].sum(axis=0).transpose(1, 0, 2).reshape(P, nh * hs)   # (P, C)
        dpv = dvf[:, :, :P].sum(axis=0).transpose(1, 0, 2).reshape(P, nh * hs)
        return dqkv.reshape(Bsz, T, 3 * nh * hs), dpk, dpv


def prefix_attention(qkv, prefix_k, prefix_v, n_head: int, dropout_mask=None, p: float = 0.0) -> Tensor:
    """The fused op: qkv (B, T, 3C), prefix_k/prefix_v (P, C) -> (B, T, C); hand-derived backward."""
    return PrefixAttention.apply(qkv, prefix_k, prefix_v, n_head=n_head, dropout_mask=dropout_mask, p=p)


def prefix_attention_composed(qkv, prefix_k, prefix_v, n_head: int, dropout_mask=None, p: float = 0.0) -> Tensor:
    """Twin of `prefix_attention` from engine ops (split, concatenate, matmul, masked_fill, softmax)."""
    Bsz, T, C3 = qkv.shape
    C = C3 // 3
    P, hs = prefix_k.shape[0], C // n_head
    q, k, v = ops.split(qkv, 3, axis=-1)                                        # 3 x (B, T, C)
    zeros = np.zeros((Bsz, P, C), dtype=qkv.dtype if not isinstance(qkv, Tensor) else qkv.data.dtype)
    kf = ops.concatenate([ops.add(ops.reshape(prefix_k, (1, P, C)), zeros), k], axis=1)   # (B, P+T, C)
    vf = ops.concatenate([ops.add(ops.reshape(prefix_v, (1, P, C)), zeros), v], axis=1)

    def heads(t, n):
        return ops.transpose(ops.reshape(t, (Bsz, n, n_head, hs)), (0, 2, 1, 3))

    q, kf, vf = heads(q, T), heads(kf, P + T), heads(vf, P + T)
    att = ops.matmul(q, ops.transpose(kf, (0, 1, 3, 2))) * (1.0 / math.sqrt(hs))  # (B, nh, T, P+T)
    att = ops.masked_fill(att, ~prefix_mask(T, P), -np.inf)
    att = ops.softmax(att, axis=-1)
    if dropout_mask is not None:
        att = ops.Dropout.apply(att, mask=dropout_mask, p=p)
    y = ops.matmul(att, vf)                                                     # (B, nh, T, hs)
    return ops.reshape(ops.transpose(y, (0, 2, 1, 3)), (Bsz, T, C))


class PrefixSelfAttention(Module):
    """GPT-2's CausalSelfAttention with a prefix: takes the place of `block.attn`, keeping its
    c_attn / c_proj / resid_dropout children (names unchanged).

    The prefix (prefix_k, prefix_v), Tensors (P, C), is set by the PrefixTuning model before each
    forward (`self.prefix = (k, v)`); with `prefix = None` the module computes the plain attention
    through `ops.attention`, bit for bit the base model.
    """

    def __init__(self, attn: Module):
        super().__init__()
        self.n_head, self.p, self.rng = attn.n_head, attn.p, attn.rng
        self.c_attn, self.c_proj, self.resid_dropout = attn.c_attn, attn.c_proj, attn.resid_dropout
        self.prefix = None

    def forward(self, x: Tensor) -> Tensor:
        """x (B, T, C) -> (B, T, C)."""
        qkv = self.c_attn(x)                                        # (B, T, 3C)
        B, T, _ = x.shape
        P = 0 if self.prefix is None else self.prefix[0].shape[0]
        mask = None
        if self.training and self.p > 0:
            mask = self.rng.random((B, self.n_head, T, P + T)) >= self.p
        if self.prefix is None:
            y = ops.attention(qkv, self.n_head, mask, self.p)
        else:
            y = prefix_attention(qkv, self.prefix[0], self.prefix[1], self.n_head, mask, self.p)
        return self.resid_dropout(self.c_proj(y))
