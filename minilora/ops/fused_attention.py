"""Causal self-attention as one fused op on the fused c_attn output (B, T, 3C) -> (B, T, C), with its
hand-derived backward and the composed twin (nanoGPT's formulation from primitives).

Notation and conventions: see the package docstring (`minilora.ops`)."""
from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from ..function import Function
from ..tensor import Tensor
from ._blas import blas_threads, single_thread_blas
from ._common import TensorLike
from .elementwise import Dropout
from .linalg import matmul
from .shape import masked_fill, reshape, split, transpose
from .softmax_family import softmax

_CAUSAL = {}
BLOCK = 128   # query-block length of the block-causal path (T > BLOCK): key blocks above the diagonal are skipped


def _causal_bias(T, dtype):
    """(T, T) additive mask: 0 on and below the diagonal, -inf above (cached; adding it is faster
    than boolean-mask assignment)."""
    key = (T, np.dtype(dtype))
    if key not in _CAUSAL:
        if len(_CAUSAL) >= 16:                                  # bounded: prompts of many lengths
            _CAUSAL.clear()
        bias = np.zeros((T, T), dtype=dtype)
        bias[np.triu_indices(T, 1)] = -np.inf
        bias.setflags(write=False)
        _CAUSAL[key] = bias
    return _CAUSAL[key]


PARALLEL_MIN = 1 << 18   # B*nh*T*T scores from which two batch halves run on two threads
# Only when OpenBLAS was told not to spin (OPENBLAS_THREAD_TIMEOUT, read by OpenBLAS at load time):
# with its default ~0.1 s of spinning after each GEMM, its idle thread holds the second core and the
# halves measured no gain (docs/performance.md).
PARALLEL = "OPENBLAS_THREAD_TIMEOUT" in os.environ
_POOL = []


def _batch_parts(Bsz, n_head, T):
    """Batch slices that run concurrently: two halves when OpenBLAS was given 2+ threads, does not
    spin (PARALLEL), and the attention is big enough to pay for one hand-off (NumPy's matmul and ufuncs release the GIL;
    each half is bit for bit what the whole batch computes for those rows), else the whole batch.
    One hand-off per op call, not one per per-head GEMM as OpenBLAS's own threading does."""
    if not PARALLEL or Bsz < 2 or Bsz * n_head * T * T < PARALLEL_MIN or blas_threads() < 2:
        return [slice(0, Bsz)]
    return [slice(0, Bsz // 2), slice(Bsz // 2, Bsz)]


def _run_parts(fn, parts):
    """[fn(part) for part in parts], the second part on a worker thread while this one runs the first."""
    parts = list(parts)
    if len(parts) == 1:
        return [fn(parts[0])]
    if not _POOL:
        _POOL.append(ThreadPoolExecutor(1, thread_name_prefix="minilora-attention"))
    fut = _POOL[0].submit(fn, parts[1])
    first = fn(parts[0])
    return [first, fut.result()]


def _spans(T):
    """Query blocks [(a, b), ...] of the block-causal path: one span (0, T) up to BLOCK positions."""
    if T <= BLOCK:
        return [(0, T)]
    return [(a, min(a + BLOCK, T)) for a in range(0, T, BLOCK)]


def heads(a: np.ndarray, Bsz: int, T: int, parts: int, n_head: int) -> np.ndarray:
    """(B, T, parts*C) -> contiguous (parts, B, nh, T, hs): one copy, so each head's GEMM reads
    contiguous rows (about 2x faster than strided views of the fused projection)."""
    hs = a.shape[-1] // (parts * n_head)
    return np.ascontiguousarray(a.reshape(Bsz, T, parts, n_head, hs).transpose(2, 0, 3, 1, 4))


def attention_probs(q: np.ndarray, k: np.ndarray, scale, offset: int = 0) -> np.ndarray:
    """Causal attention probabilities P = softmax(scale q k^T + causal mask), plain NumPy, no graph.

    Args:
        q: (B, nh, Tq, hs) queries of positions offset .. offset+Tq-1; k: (B, nh, Tk, hs) keys of
            positions 0 .. Tk-1, Tk = offset + Tq (offset > 0: the KV-cache step of `GPT.generate`).
        scale: the dtype's 1/sqrt(hs).
    Returns:
        P (B, nh, Tq, Tk), rows summing to 1, zero where key > query. The same arithmetic, in the same
        order, as the training forward pass, so a cached step reproduces its rows.
    """
    Tq, Tk = q.shape[-2], k.shape[-2]
    with single_thread_blas():                                  # B*nh small GEMMs: see ops._blas
        att = q @ k.transpose(0, 1, 3, 2)                       # (B, nh, Tq, Tk)
    att *= scale
    if offset == 0 or Tk % BLOCK == 0 and offset % BLOCK == 0:
        att += _causal_bias(Tk, att.dtype)[offset:]             # -inf above the diagonal (rows offset..)
    elif Tq > 1:                                                # rows offset.. of the causal mask (not cached:
        att[..., np.triu(np.ones((Tq, Tk), dtype=bool), offset + 1)] = -np.inf   # Tk grows every token)
    att -= att.max(axis=-1, keepdims=True)
    np.exp(att, out=att)
    att /= att.sum(axis=-1, keepdims=True)
    return att


class Attention(Function):
    """Fused causal multi-head self-attention on the fused projection qkv (B, T, 3C) -> (B, T, C).

    Forward (Vaswani et al. 2017, eq. 1, with GPT-2's causal mask), per head, s = 1/sqrt(hs):
        S = s Q K^T  (T, T);  S_ij = -inf for j > i;  P = softmax(S);  P~ = P * M / keep;  Y = P~ V
    Backward (derived):
        dV = P~^T dY;   dP~ = dY V^T;   dP = dP~ * M / keep;   dS = P * (dP - D);
        dQ = s dS K;    dK = s dS^T Q
    where D_i = sum_j dP_ij P_ij. (It also equals dY_i . Y_i, FlashAttention's identity, Dao et al.
    2022, appendix B.2, a (T, hs) pass instead of a (T, T) one; it was measured and not used: its
    float32 rounding differs enough to change a sampled character of the seeded demo.)
    Masked entries have P = 0, hence dS = 0 there. One op instead of ~15 primitives: no copies
    for q/k/v slices, no separate mask, softmax and transpose nodes.
    Memory: the (B, nh, T, T) arrays are P (kept for backward), P~ only with dropout, and in backward
    one gradient buffer and the product dP * P. For T > BLOCK all of them exist only per block of
    BLOCK query rows and for keys up to the block's end (block-causal: the blocks above the
    diagonal, 37.5% of the scores at T = 512, are never formed). The per-head products run on one
    BLAS thread (`ops._blas`).
    """

    @staticmethod
    def forward(ctx, qkv, n_head=1, dropout_mask=None, p=0.0):
        if qkv.ndim != 3 or qkv.shape[-1] % (3 * n_head):
            raise ValueError(f"attention: expected qkv of shape (B, T, 3C) with C divisible by "
                             f"n_head={n_head}, got {qkv.shape}")
        Bsz, T, C3 = qkv.shape
        C = C3 // 3
        q, k, v = heads(qkv, Bsz, T, 3, n_head)                   # 3 x (B, nh, T, hs), contiguous
        scale = qkv.dtype.type(1.0 / math.sqrt(C // n_head))
        spans, parts = _spans(T), _batch_parts(Bsz, n_head, T)
        y = np.empty_like(q)                                        # (B, nh, T, hs)

        def run(bs):
            return _forward_part(q[bs], k[bs], v[bs], None if dropout_mask is None else dropout_mask[bs], p,
                                 scale, spans, y[bs])
        with single_thread_blas():
            saved = _run_parts(run, parts)
        ctx.save_for_backward(q, k, v, saved, dropout_mask)
        ctx.scale, ctx.p, ctx.spans, ctx.parts = scale, p, spans, parts
        return y.transpose(0, 2, 1, 3).reshape(Bsz, T, C)          # (B, T, C)

    @staticmethod
    def backward(ctx, g):
        q, k, v, saved, mask = ctx.saved
        Bsz, nh, T, hs = q.shape
        gy = heads(g, Bsz, T, 1, nh)[0]                            # (B, nh, T, hs), contiguous
        dqkv = np.empty((3, Bsz, nh, T, hs), dtype=g.dtype)

        def run(i):
            bs = ctx.parts[i]
            atts, pds = saved[i]
            _backward_part(gy[bs], q[bs], k[bs], v[bs], atts, pds, None if mask is None else mask[bs], ctx.p,
                           ctx.scale, ctx.spans, dqkv[0][bs], dqkv[1][bs], dqkv[2][bs])
        with single_thread_blas():
            _run_parts(run, range(len(ctx.parts)))
        return (dqkv.transpose(1, 3, 0, 2, 4).reshape(Bsz, T, 3 * nh * hs),)


def _forward_part(q, k, v, mask, p, scale, spans, y):
    """Forward on a slice of the batch (arrays (b, nh, T, hs)); writes y, returns (P blocks, P~ blocks)."""
    atts, pds = [], []
    for a, b in spans:                                              # queries a..b-1 see keys 0..b-1
        att = attention_probs(q[:, :, a:b], k[:, :, :b], scale, offset=a)   # P rows a..b-1
        pd = att
        if mask is not None:
            pd = att * (mask[:, :, a:b, :b] / q.dtype.type(1 - p)).astype(q.dtype, copy=False)
        np.matmul(pd, v[:, :, :b], out=y[:, :, a:b])
        atts.append(att)
        pds.append(pd)
    return atts, pds


def _backward_part(gy, q, k, v, atts, pds, mask, p, scale, spans, dq, dk, dv):
    """Backward on a slice of the batch: writes dq, dk, dv (b, nh, T, hs) (see Attention's docstring)."""
    if len(spans) > 1:
        dk[...] = 0
        dv[...] = 0
    for (a, b), att, pd in zip(spans, atts, pds, strict=True):
        gya = gy[:, :, a:b]
        if len(spans) == 1:
            np.matmul(pd.transpose(0, 1, 3, 2), gya, out=dv)                # dV
        else:
            dv[:, :, :b] += pd.transpose(0, 1, 3, 2) @ gya
        dp = gya @ v[:, :, :b].transpose(0, 1, 3, 2)                        # dP~ (b, nh, b-a, b)
        if mask is not None:
            dp *= (mask[:, :, a:b, :b] / gy.dtype.type(1 - p)).astype(gy.dtype, copy=False)
        dp -= (dp * att).sum(axis=-1, keepdims=True)                       # D_i, this block's rows
        dp *= att                                                           # dS / s
        dp *= scale                                                         # dS
        np.matmul(dp, k[:, :, :b], out=dq[:, :, a:b])                       # dQ
        if len(spans) == 1:
            np.matmul(dp.transpose(0, 1, 3, 2), q, out=dk)                  # dK
        else:
            dk[:, :, :b] += dp.transpose(0, 1, 3, 2) @ q[:, :, a:b]


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

