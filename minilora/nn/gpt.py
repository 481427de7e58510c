"""The GPT-2 architecture (Radford et al. 2019), as nanoGPT writes it, on minilora's engine.

    idx (B, T) -> wte + wpe -> n_layer x Block -> ln_f -> lm_head (tied to wte) -> logits (B, T, V)
    Block:  x = x + attn(ln_1(x));  x = x + mlp(ln_2(x))          (pre-LayerNorm)
    attn:   c_attn (C -> 3C) -> causal multi-head attention (fused op) -> c_proj (C -> C)
    mlp:    c_fc (C -> 4C) -> GELU (tanh approximation) -> c_proj (4C -> C)

Parameter names are GPT-2's (`transformer.h.0.attn.c_attn.weight`, ...). Initialisation is GPT-2's:
N(0, 0.02) for weights and embeddings, residual projections (`c_proj`) N(0, 0.02/sqrt(2 n_layer)),
zero biases, LayerNorm ones/zeros.

Shape letters: B batch, T time (<= block_size), C = n_embd, nh = n_head, V = vocab_size.
"""
from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from numbers import Integral, Real
from os import PathLike
from typing import Any

import numpy as np
from numpy.typing import DTypeLike

from .. import ops
from ..ops.fused_attention import attention_probs, heads, single_thread_blas
from ..tensor import Tensor, is_grad_enabled, no_grad
from .kv_cache import KVCache, LayerKV
from .layers import Dropout, Embedding, LayerNorm, Linear
from .module import Module


@dataclass
class GPTConfig:
    """Model hyper-parameters (GPT-2 small is 50257/1024/12/12/768; ours are laptop-sized).

    Raises:
        ValueError: a size < 1, n_embd not divisible by n_head, or dropout outside [0, 1).
    """

    vocab_size: int = 256
    block_size: int = 64
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    dropout: float = 0.0
    bias: bool = True

    def __post_init__(self):
        for k in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd"):
            v = getattr(self, k)
            if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
                raise ValueError(f"GPTConfig.{k} must be a positive int, got {v!r}")
        if self.n_embd % self.n_head:
            raise ValueError(f"GPTConfig: n_embd={self.n_embd} must be divisible by n_head={self.n_head}")
        if not isinstance(self.bias, (bool, np.bool_)):
            raise ValueError(f"GPTConfig.bias must be True or False, got {self.bias!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"GPTConfig.dropout must be in [0, 1), got {self.dropout}")

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (for JSON)."""
        return asdict(self)


class CausalSelfAttention(Module):
    """Multi-head causal self-attention: x (B, T, C) -> (B, T, C)."""

    def __init__(self, config: GPTConfig, dtype: DTypeLike, rng: np.random.Generator):
        super().__init__()
        C = config.n_embd
        self.n_head, self.p = config.n_head, config.dropout
        self.c_attn = Linear(C, 3 * C, bias=config.bias, dtype=dtype, rng=rng)
        self.c_proj = Linear(C, C, bias=config.bias, dtype=dtype, rng=rng)
        self.resid_dropout = Dropout(config.dropout, rng)
        self.rng = rng

    def forward(self, x: Tensor, kv_cache: LayerKV | None = None) -> Tensor:
        """x (B, T, C) -> (B, T, C). With kv_cache (inference, no_grad only): x holds the positions
        after those cached; their keys and values are appended and they attend to all cached ones."""
        qkv = self.c_attn(x)                                       # (B, T, 3C)
        if kv_cache is not None:
            return self.c_proj(Tensor(self._attend_cached(qkv.data, kv_cache)))
        mask = None
        if self.training and self.p > 0:
            B, T, _ = x.shape
            mask = self.rng.random((B, self.n_head, T, T)) >= self.p  # attention-probability dropout
        y = ops.attention(qkv, self.n_head, mask, self.p)          # (B, T, C)
        return self.resid_dropout(self.c_proj(y))                  # (B, T, C)

    def _attend_cached(self, qkv: np.ndarray, kv_cache: LayerKV) -> np.ndarray:
        """qkv (B, Tq, 3C) of positions t0 .. t0+Tq-1 (t0 = kv_cache.length) -> y (B, Tq, C).

        The same arithmetic as `ops.attention`'s forward (`attention_probs`), on the cached keys."""
        if is_grad_enabled():
            raise RuntimeError("the KV cache is for inference: call the model under minilora.no_grad()")
        Bsz, Tq, C3 = qkv.shape
        t0 = kv_cache.length
        q, k, v = heads(qkv, Bsz, Tq, 3, self.n_head)              # 3 x (B, nh, Tq, hs)
        K, V = kv_cache.append(k, v)                               # (B, nh, t0 + Tq, hs)
        att = attention_probs(q, K, qkv.dtype.type(1.0 / math.sqrt(q.shape[-1])), offset=t0)
        with single_thread_blas():
            y = att @ V                                            # (B, nh, Tq, hs)
        return y.transpose(0, 2, 1, 3).reshape(Bsz, Tq, C3 // 3)


class MLP(Module):
    """Position-wise feed-forward: x (B, T, C) -> c_fc (B, T, 4C) -> GELU -> c_proj (B, T, C)."""

    def __init__(self, config: GPTConfig, dtype: DTypeLike, rng: np.random.Generator):
        super().__init__()
        C = config.n_embd
        self.c_fc = Linear(C, 4 * C, bias=config.bias, dtype=dtype, rng=rng)
        self.c_proj = Linear(4 * C, C, bias=config.bias, dtype=dtype, rng=rng)
        self.dropout = Dropout(config.dropout, rng)

    def forward(self, x: Tensor) -> Tensor:
        """x (B, T, C) -> (B, T, C)."""
        return self.dropout(self.c_proj(ops.gelu(self.c_fc(x))))


class Block(Module):
    """One pre-LayerNorm transformer block: x + attn(ln_1(x)), then + mlp(ln_2(x))."""

    def __init__(self, config: GPTConfig, dtype: DTypeLike, rng: np.random.Generator):
        super().__init__()
        self.ln_1 = LayerNorm(config.n_embd, bias=config.bias, dtype=dtype)
        self.attn = CausalSelfAttention(config, dtype, rng)
        self.ln_2 = LayerNorm(config.n_embd, bias=config.bias, dtype=dtype)
        self.mlp = MLP(config, dtype, rng)

    def forward(self, x: Tensor, kv_cache: LayerKV | None = None) -> Tensor:
        """x (B, T, C) -> (B, T, C); kv_cache: this layer's cache (see CausalSelfAttention.forward)."""
        a = self.ln_1(x)
        x = x + (self.attn(a) if kv_cache is None else self.attn(a, kv_cache=kv_cache))
        return x + self.mlp(self.ln_2(x))


class ModuleList(Module):
    """Submodules named 0, 1, 2, ... (so parameter names read `h.0.attn...`)."""

    def __init__(self, modules: Iterable[Module]):
        super().__init__()
        for i, m in enumerate(modules):
            setattr(self, str(i), m)

    def __iter__(self):
        return iter(self._modules.values())

    def __len__(self):
        return len(self._modules)

    def __getitem__(self, i):
        return self._modules[str(i)]


class Transformer(Module):
    """The `transformer.` part of GPT-2: wte, wpe, drop, h (blocks), ln_f."""

    def __init__(self, config: GPTConfig, dtype: DTypeLike, rng: np.random.Generator):
        super().__init__()
        self.wte = Embedding(config.vocab_size, config.n_embd, dtype=dtype, rng=rng)
        self.wpe = Embedding(config.block_size, config.n_embd, dtype=dtype, rng=rng)
        self.drop = Dropout(config.dropout, rng)
        self.h = ModuleList([Block(config, dtype, rng) for _ in range(config.n_layer)])
        self.ln_f = LayerNorm(config.n_embd, bias=config.bias, dtype=dtype)


class GPT(Module):
    """GPT-2 language model.

    Args:
        config: GPTConfig.
        dtype: np.float32 (training) or np.float64 (gradient checks).
        seed: seeds the initialisation and the dropout generator (`model.rng`).
    Call: `logits, loss = model(idx, targets=None)` with idx int (B, T), T <= block_size;
        logits Tensor (B, T, V) in the model's dtype; loss a 0-d Tensor (mean cross-entropy, nats)
        or None.
    Raises:
        ValueError: idx not 2-D, T > block_size, token ids outside [0, vocab_size).
        TypeError: idx not integer.
    """

    def __init__(self, config: GPTConfig, dtype: DTypeLike = np.float32, seed: int | None = 0):
        super().__init__()
        if not isinstance(config, GPTConfig):
            raise TypeError(f"GPT: config must be a GPTConfig, got {type(config).__name__} "
                            f"(for a dict d, use GPTConfig(**d))")
        self.config = config
        self.rng = np.random.default_rng(seed)
        init_rng = np.random.default_rng(seed)
        self.transformer = Transformer(config, dtype, self.rng)
        self.lm_head = Linear(config.n_embd, config.vocab_size, bias=False, dtype=dtype)
        self.lm_head.weight = self.transformer.wte.weight          # weight tying (Press & Wolf 2017)
        for name, p in self.named_parameters():
            if name.endswith("bias") or ".ln_" in name:
                continue
            std = 0.02 / math.sqrt(2 * config.n_layer) if name.endswith("c_proj.weight") else 0.02
            p.data = init_rng.normal(0.0, std, p.shape).astype(dtype)

    @classmethod
    def from_pretrained(cls, path: str | PathLike, dtype: DTypeLike = np.float32, dropout: float | None = None,
                        seed: int | None = 0) -> GPT:
        """A GPT from a Hugging Face GPT-2 folder (config.json + model.safetensors), in eval mode.

        Conv1D weights are transposed, the tied lm_head checked; unsupported config values are
        refused by name; pytorch_model.bin is refused (it needs torch). See `nn.hf_gpt2`.
        """
        from .hf_gpt2 import load_pretrained

        return load_pretrained(path, dtype, dropout, seed)

    def save_pretrained(self, path: str | PathLike) -> None:
        """Write a Hugging Face GPT-2 folder that transformers loads as it is (see `nn.hf_gpt2`).

        Raises: ValueError with LoRA layers present (merge_and_unload first) or bias=False.
        """
        from .hf_gpt2 import save_pretrained

        save_pretrained(self, path)

    @property
    def dtype(self) -> np.dtype:
        """The dtype of the parameters."""
        return self.transformer.wte.weight.dtype

    def _check_idx(self, idx):
        idx = np.asarray(idx.data if isinstance(idx, Tensor) else idx)
        if not np.issubdtype(idx.dtype, np.integer):
            raise TypeError(f"GPT: token ids must be integers, got dtype {idx.dtype}")
        if idx.ndim != 2:
            raise ValueError(f"GPT: token ids must have shape (B, T), got {idx.shape}")
        if idx.shape[1] > self.config.block_size or idx.shape[1] == 0:
            raise ValueError(f"GPT: sequence length {idx.shape[1]} must be in [1, block_size={self.config.block_size}]")
        return idx

    def forward(self, idx: np.ndarray | Tensor, targets: np.ndarray | None = None,
                kv_cache: KVCache | None = None) -> tuple[Tensor, Tensor | None]:
        """idx (B, T) ints -> (logits (B, T, V), loss or None); see the class docstring.

        kv_cache: optional KVCache (inference under no_grad): idx holds the positions after the
        kv_cache.length cached ones (position embeddings start there); their keys and values are
        added to the cache. Raises ValueError if the cache's batch or capacity does not fit.
        """
        idx = self._check_idx(idx)
        T = idx.shape[1]
        t0 = 0
        if kv_cache is not None:
            t0 = kv_cache.length
            if len(kv_cache.layers) != self.config.n_layer or kv_cache.layers[0].k.shape[0] != idx.shape[0] \
                    or t0 + T > self.config.block_size:
                raise ValueError(f"GPT: a KV cache of {len(kv_cache.layers)} layers, batch "
                                 f"{kv_cache.layers[0].k.shape[0]} and {t0} cached positions does not fit "
                                 f"{T} new positions of batch {idx.shape[0]} (n_layer {self.config.n_layer}, "
                                 f"block_size {self.config.block_size})")
        tr = self.transformer
        x = tr.drop(tr.wte(idx) + tr.wpe(np.arange(t0, t0 + T)))   # (B, T, C)
        for i, block in enumerate(tr.h):
            x = block(x) if kv_cache is None else block(x, kv_cache=kv_cache.layers[i])   # (B, T, C)
        logits = self.lm_head(tr.ln_f(x))                          # (B, T, V)
        loss = None if targets is None else ops.cross_entropy(logits, np.asarray(targets))
        return logits, loss

    def generate(self, idx: np.ndarray, max_new_tokens: int, temperature: float = 1.0, top_k: int | None = None,
                 seed: int | np.random.Generator | None = None, use_cache: bool = True) -> np.ndarray:
        """Sample max_new_tokens tokens after idx (B, T0), cropping the context to block_size.

        With use_cache (the default) a `KVCache` keeps every layer's keys and values, so each new
        token runs one position through the model instead of the whole context (same tokens as
        use_cache=False; logits equal to float32 rounding). Once the context exceeds block_size the
        window slides, every position embedding changes, and the cache is refilled from the cropped
        context at each token (as costly as use_cache=False). Models that call GPT.generate with
        their own forward (prompt and prefix tuning, `minilora.peft`) run without the cache.

        Args:
            idx: int token ids (B, T0), any T0 >= 1 (only the last block_size are read).
            max_new_tokens: int >= 0.
            temperature: finite real >= 0; > 0 divides the logits, 0 means greedy (argmax).
            top_k: None (all tokens) or int >= 1: keep only the k most likely tokens.
            seed: None, an int >= 0 or a np.random.Generator, for the sampling (same seed, same text).
            use_cache: bool, keep keys and values between tokens (see above).
        Returns:
            int64 array (B, T0 + max_new_tokens).
        Raises:
            TypeError: an argument of the wrong type (a float max_new_tokens or top_k, a bool, a
                str...), checked before any token is generated.
            ValueError: negative max_new_tokens or temperature, non-finite temperature, top_k < 1,
                negative seed; the token-id errors of forward.
        """
        _check_generate_args(max_new_tokens, temperature, top_k, seed)
        idx = np.asarray(idx.data if isinstance(idx, Tensor) else idx)
        self._check_idx(idx[:, -self.config.block_size:] if idx.ndim == 2 else idx)  # a longer prompt is cropped below
        idx = np.array(idx, dtype=np.int64)
        if not isinstance(use_cache, (bool, np.bool_)):
            raise TypeError(f"generate: use_cache must be True or False, got {use_cache!r}")
        if not isinstance(self, GPT):        # a wrapper whose own forward adds positions (prompt or prefix
            use_cache = False                # tuning calls GPT.generate on itself): no cache, as before
        rng = np.random.default_rng(seed)
        bs = self.config.block_size
        was_training = self.training
        self.eval()
        try:
            with no_grad():
                cache = None
                for _ in range(max_new_tokens):
                    if not use_cache:
                        logits, _ = self(idx[:, -bs:])
                    elif cache is None or cache.length >= bs:           # start, or the window slid
                        cache = KVCache.for_model(self, idx.shape[0])
                        logits, _ = self(idx[:, -bs:], kv_cache=cache)
                    else:
                        logits, _ = self(idx[:, -1:], kv_cache=cache)   # one new position
                    z = logits.data[:, -1, :].astype(np.float64)      # (B, V)
                    if temperature == 0:
                        nxt = z.argmax(axis=-1)
                    else:
                        z = z / temperature
                        if top_k is not None and top_k < z.shape[-1]:
                            kth = np.sort(z, axis=-1)[:, -top_k][:, None]
                            z = np.where(z < kth, -np.inf, z)
                        p = np.exp(z - z.max(axis=-1, keepdims=True))
                        p /= p.sum(axis=-1, keepdims=True)
                        nxt = np.array([rng.choice(p.shape[-1], p=row) for row in p])
                    idx = np.concatenate([idx, nxt[:, None].astype(np.int64)], axis=1)
        finally:
            self.train(was_training)
        return idx


def _is_int(v) -> bool:
    return isinstance(v, Integral) and not isinstance(v, (bool, np.bool_))


def _check_generate_args(max_new_tokens, temperature, top_k, seed) -> None:
    """The argument checks of `GPT.generate`, one message per fault (see its docstring)."""
    if not _is_int(max_new_tokens):
        raise TypeError(f"generate: max_new_tokens must be an int >= 0, got {type(max_new_tokens).__name__} "
                        f"{max_new_tokens!r}")
    if max_new_tokens < 0:
        raise ValueError(f"generate: max_new_tokens must be an int >= 0, got {max_new_tokens}")
    if not isinstance(temperature, Real) or isinstance(temperature, (bool, np.bool_)):
        raise TypeError(f"generate: temperature must be a real number >= 0 (0 = greedy), got "
                        f"{type(temperature).__name__} {temperature!r}")
    if not math.isfinite(temperature) or temperature < 0:
        raise ValueError(f"generate: temperature must be a finite number >= 0 (0 = greedy), got {temperature!r}")
    if top_k is not None:
        if not _is_int(top_k):
            raise TypeError(f"generate: top_k must be None or an int >= 1, got {type(top_k).__name__} {top_k!r}")
        if top_k < 1:
            raise ValueError(f"generate: top_k must be None or an int >= 1, got {top_k}")
    if seed is not None and not isinstance(seed, np.random.Generator):
        if not _is_int(seed):
            raise TypeError(f"generate: seed must be None, an int >= 0 or a np.random.Generator, got "
                            f"{type(seed).__name__} {seed!r}")
        if seed < 0:
            raise ValueError(f"generate: seed must be an int >= 0, got {seed}")
