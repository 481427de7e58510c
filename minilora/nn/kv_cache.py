"""The key/value cache of autoregressive generation (`GPT.generate(..., use_cache=True)`).

Why it works: in a causal decoder the keys and values of position j depend only on tokens 0..j
(every layer's input at j is computed from tokens <= j), so they do not change when later tokens are
appended. Generating token t+1 therefore needs, per layer, only the new position's query, key and
value (one row through c_attn, c_proj and the MLP) plus the cached keys and values of positions
0..t: O(T) work per token for attention and O(1) for everything else, instead of re-running the
whole context, O(T^2) and O(T) (Pope et al. 2022, "Efficiently Scaling Transformer Inference", 2.1).

Size: 2 (K and V) x n_layer x B x T x C numbers (n_head x head_size = C), e.g. GPT-2 124M at
T = 1024, B = 1, float32: 2 x 12 x 1024 x 768 x 4 B = 75.5 MB.

LoRA: the cache stores K = x W_k^T (+ the LoRA term) computed by whatever c_attn is (merged or
not), so it works with both. Merged, c_attn is a plain Linear and each cached token costs exactly the
base model's FLOPs; unmerged, each new token pays the extra r (d_in + d_out) multiply-adds per
adapted layer, and the cached K, V already contain the adapter's contribution (so a cache filled
under one adapter is wrong for another: reset it when switching adapters).
"""
from __future__ import annotations

import numpy as np
from numpy.typing import DTypeLike


class LayerKV:
    """One layer's cache: keys and values (B, nh, capacity, hs), of which the first `length` are filled."""

    def __init__(self, batch: int, n_head: int, capacity: int, head_size: int, dtype: DTypeLike):
        self.k = np.empty((batch, n_head, capacity, head_size), dtype=dtype)
        self.v = np.empty_like(self.k)
        self.length = 0

    def append(self, k: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Store the keys and values of the next positions; return all cached so far.

        Args:
            k, v: (B, nh, Tq, hs) of the cache's dtype, for positions length .. length+Tq-1.
        Returns:
            (K, V), views (B, nh, length + Tq, hs) of the cache (valid until the next append).
        Raises:
            ValueError: shapes that do not fit, or more positions than the capacity (block_size).
        """
        B, nh, cap, hs = self.k.shape
        if k.shape != v.shape or k.shape[:2] != (B, nh) or k.shape[3] != hs:
            raise ValueError(f"KV cache: keys {k.shape} and values {v.shape} do not fit a cache of "
                             f"(B, nh, T, hs) = ({B}, {nh}, T, {hs})")
        t0, t1 = self.length, self.length + k.shape[2]
        if t1 > cap:
            raise ValueError(f"KV cache: {t1} positions exceed its capacity {cap} (block_size); "
                             f"start a new cache for a cropped context")
        self.k[:, :, t0:t1] = k
        self.v[:, :, t0:t1] = v
        self.length = t1
        return self.k[:, :, :t1], self.v[:, :, :t1]


class KVCache:
    """Keys and values of every layer of a GPT, for positions 0 .. length-1 of B sequences.

    Args:
        n_layer, n_head, head_size: the model's (head_size = n_embd // n_head).
        batch: B, the number of sequences. capacity: positions it can hold (the model's block_size).
        dtype: the model's dtype.
    Attributes:
        layers: list of LayerKV, one per block. length: positions cached (the next one's index).
    Raises:
        ValueError: a size < 1.
    """

    def __init__(self, n_layer: int, n_head: int, head_size: int, batch: int, capacity: int,
                 dtype: DTypeLike = np.float32):
        if min(n_layer, n_head, head_size, batch, capacity) < 1:
            raise ValueError(f"KVCache: sizes must be >= 1, got n_layer={n_layer}, n_head={n_head}, "
                             f"head_size={head_size}, batch={batch}, capacity={capacity}")
        self.layers = [LayerKV(batch, n_head, capacity, head_size, dtype) for _ in range(n_layer)]

    @classmethod
    def for_model(cls, model, batch: int) -> KVCache:
        """An empty cache sized for `model` (a GPT, or a LoRA-wrapped GPT): capacity block_size."""
        c = model.config
        return cls(c.n_layer, c.n_head, c.n_embd // c.n_head, batch, c.block_size, model.dtype)

    @property
    def length(self) -> int:
        """Positions cached so far."""
        return self.layers[0].length

    @property
    def capacity(self) -> int:
        """Positions the cache can hold."""
        return self.layers[0].k.shape[2]

    def nbytes(self) -> int:
        """Bytes held (filled or not): 2 n_layer B nh capacity hs itemsize."""
        return sum(lay.k.nbytes + lay.v.nbytes for lay in self.layers)
