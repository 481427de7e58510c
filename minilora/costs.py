"""Closed-form costs of LoRA and full fine-tuning: parameters, bytes, FLOPs, bits (what the drill asks).

The counts are formulas on integers (no arrays are allocated), so they work for a 65B model as well
as for a toy GPT. Where minilora already computes a quantity (the scaling rule, ΔW, dA and dB, the
rank tools), this module calls it on small arrays instead of repeating it; the tests check each
closed form against the instantiated model (`minilora.nn.GPT` + `minilora.lora.get_peft_model`,
`minilora.optim.AdamW(...).state_bytes()`) on small configurations.

Reference architectures (:class:`Arch`, presets in :data:`ARCHS`)
-----------------------------------------------------------------
family "gpt2" (GPT-2, Radford et al. 2019; what `minilora.nn.GPT` builds):
    learned token (V·d) and position (context·d) embeddings, LM head tied to the token embedding,
    per block LayerNorm, c_attn (d -> 3d, the fused q|k|v projection), attn.c_proj (d -> d),
    LayerNorm, c_fc (d -> 4d), mlp.c_proj (4d -> d); biases on every Linear and LayerNorm (unless
    bias=False); a final LayerNorm.
        params = V·d + context·d + L·(12d² + 13d) + 2d                        (with biases)
    small 124M: L 12, heads 12, d 768; medium 355M: 24, 16, 1024; large 774M: 36, 20, 1280;
    XL 1.56B: 48, 25, 1600; all with V = 50257, context 1024.
family "llama" (LLaMA, Touvron et al. 2023, arXiv:2302.13971: d, heads and layers from its Table 2,
d_ff = the released configs' intermediate_size):
    token embedding V·d and an untied LM head V·d, no position parameters (RoPE), no biases,
    RMSNorm (d weights) before attention and before the MLP and at the end, separate q_proj, k_proj,
    v_proj, o_proj (d -> d each), and a SwiGLU MLP with gate_proj, up_proj (d -> d_ff) and down_proj
    (d_ff -> d).
        params = 2·V·d + L·(4d² + 3·d·d_ff + 2d) + d
    7B: d 4096, L 32, heads 32, d_ff 11008; 65B: d 8192, L 80, heads 64, d_ff 22016; V = 32000,
    context 2048.

LoRA targets (:func:`lora_targets`): for "gpt2" the slices "q", "k", "v" of c_attn (loralib's
MergedLinear / minilora's `enable_lora`), the whole "c_attn", "attn.c_proj", "c_fc", "mlp.c_proj"; for
"llama" the seven projections by name. A target of shape d_in -> d_out adds r·(d_in + d_out) trainable
parameters per block (A is (r, d_in), B is (d_out, r)); a slice of c_attn is d -> d.

Bad input (an unknown family, dtype, optimizer or target, a size or rank that is not an int >= 1)
raises ValueError naming the argument and what was expected.

Units: parameter counts are ints; bytes are ints (1 GiB = 2**30 bytes, 1 GB = 10**9 bytes: the drill
says which); FLOPs count one multiply-add as 2 FLOPs (a GEMM (m, k) @ (k, n) is 2·m·n·k).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import numpy as np

__all__ = [
    "Arch", "ARCHS", "DTYPE_BYTES", "from_gpt_config", "block_linears", "lora_targets",
    "full_param_count", "lora_param_count", "lora_param_count_per_target", "peft_configs",
    "dtype_bytes", "optimizer_state_bytes", "training_state_bytes", "checkpoint_bytes",
    "activation_bytes", "linear_flops", "lora_linear_flops", "training_flops", "kv_cache_bytes",
    "nf4_bits_per_param", "quantized_model_bytes", "scaling", "merged_weight", "lora_init_grads",
    "effective_rank", "subspace_similarity", "random_subspace_baseline",
]

DTYPE_BYTES = {"float64": 8, "float32": 4, "bfloat16": 2, "float16": 2, "int8": 1}


def dtype_bytes(dtype: str) -> int:
    """Bytes per element of a dtype name ("float64", "float32", "bfloat16", "float16", "int8").

    Raises: ValueError naming the dtype and the known ones.
    """
    if dtype not in DTYPE_BYTES:
        raise ValueError(f"unknown dtype {dtype!r}; expected one of {sorted(DTYPE_BYTES)}")
    return DTYPE_BYTES[dtype]


@dataclass(frozen=True)
class Arch:
    """A transformer's shape, enough to count its parameters, FLOPs and caches (see the module docstring).

    Fields: name; family "gpt2" or "llama"; n_layer L; n_head; d_model d; d_ff (4d for GPT-2);
    vocab_size V; context (max sequence length); bias (GPT-2's Linear/LayerNorm biases; LLaMA has none).
    Raises: ValueError for an unknown family, sizes < 1, or d_model not divisible by n_head.
    """

    name: str
    family: str
    n_layer: int
    n_head: int
    d_model: int
    d_ff: int
    vocab_size: int
    context: int
    bias: bool = True

    def __post_init__(self):
        if self.family not in ("gpt2", "llama"):
            raise ValueError(f"Arch.family must be 'gpt2' or 'llama', got {self.family!r}")
        for k in ("n_layer", "n_head", "d_model", "d_ff", "vocab_size", "context"):
            v = getattr(self, k)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"Arch.{k} must be an int >= 1, got {v!r}")
        if self.d_model % self.n_head:
            raise ValueError(f"Arch: d_model={self.d_model} is not divisible by n_head={self.n_head}")

    @property
    def head_dim(self) -> int:
        """d_model / n_head."""
        return self.d_model // self.n_head


def _gpt2(name, n_layer, n_head, d):
    return Arch(name, "gpt2", n_layer, n_head, d, 4 * d, 50257, 1024)


ARCHS: dict[str, Arch] = {
    "gpt2-small": _gpt2("GPT-2 small (124M)", 12, 12, 768),
    "gpt2-medium": _gpt2("GPT-2 medium (355M)", 24, 16, 1024),
    "gpt2-large": _gpt2("GPT-2 large (774M)", 36, 20, 1280),
    "gpt2-xl": _gpt2("GPT-2 XL (1.5B)", 48, 25, 1600),
    "llama-7b": Arch("LLaMA-7B", "llama", 32, 32, 4096, 11008, 32000, 2048, bias=False),
    "llama-65b": Arch("LLaMA-65B", "llama", 80, 64, 8192, 22016, 32000, 2048, bias=False),
}


def from_gpt_config(config) -> Arch:
    """The :class:`Arch` of a `minilora.nn.GPTConfig` (family "gpt2", d_ff = 4·n_embd, its bias flag)."""
    return Arch("GPT(" + ", ".join(f"{k}={getattr(config, k)}" for k in ("n_layer", "n_head", "n_embd")) + ")",
                "gpt2", int(config.n_layer), int(config.n_head), int(config.n_embd), 4 * int(config.n_embd),
                int(config.vocab_size), int(config.block_size), bool(config.bias))


def _as_arch(arch) -> Arch:
    """An Arch as is; a `minilora.nn.GPTConfig` (anything with n_embd and block_size) via from_gpt_config."""
    if isinstance(arch, Arch):
        return arch
    if hasattr(arch, "n_embd") and hasattr(arch, "block_size"):
        return from_gpt_config(arch)
    raise TypeError(f"expected a minilora.costs.Arch or a minilora.nn.GPTConfig, got {type(arch).__name__}")


def block_linears(arch: Arch) -> dict[str, tuple[int, int]]:
    """The Linear layers of one block: name -> (d_in, d_out), in forward order."""
    arch = _as_arch(arch)
    d, f = arch.d_model, arch.d_ff
    if arch.family == "gpt2":
        return {"c_attn": (d, 3 * d), "attn.c_proj": (d, d), "c_fc": (d, f), "mlp.c_proj": (f, d)}
    return {"q_proj": (d, d), "k_proj": (d, d), "v_proj": (d, d), "o_proj": (d, d),
            "gate_proj": (d, f), "up_proj": (d, f), "down_proj": (f, d)}


def lora_targets(arch: Arch) -> dict[str, tuple[int, int]]:
    """The LoRA targets this module counts for an architecture: name -> (d_in, d_out) per block.

    GPT-2 adds the slices "q", "k", "v" of the fused c_attn (each d -> d) to its Linear layers.
    """
    arch = _as_arch(arch)
    t = dict(block_linears(arch))
    if arch.family == "gpt2":
        d = arch.d_model
        t = {"q": (d, d), "k": (d, d), "v": (d, d), **t}
    return t


def _check_targets(arch: Arch, targets: Iterable[str]) -> tuple[str, ...]:
    targets = tuple(targets)
    known = lora_targets(arch)
    if not targets:
        raise ValueError("targets must name at least one module")
    bad = [t for t in targets if t not in known]
    if bad:
        raise ValueError(f"unknown LoRA target(s) {bad} for family {arch.family!r}; expected some of {list(known)}")
    if len(set(targets)) != len(targets):
        raise ValueError(f"targets {targets} name a module twice")
    if "c_attn" in targets and set(targets) & {"q", "k", "v"}:
        raise ValueError("targets: 'c_attn' already contains its slices 'q', 'k', 'v'; give one or the other")
    return targets


def _check_int(v, name, low=1):
    if not isinstance(v, int) or isinstance(v, bool) or v < low:
        raise ValueError(f"{name} must be an int >= {low}, got {v!r}")
    return v


def full_param_count(arch: Arch) -> int:
    """All parameters of the model, a tied matrix counted once (what `num_parameters()` gives).

    gpt2: V·d + context·d + L·(Σ linears d_in·d_out [+ d_out] + 2 LayerNorms·d [·2]) + final LayerNorm.
    llama: 2·V·d + L·(4d² + 3·d·d_ff + 2d) + d.
    """
    arch = _as_arch(arch)
    d, L = arch.d_model, arch.n_layer
    lin = sum(i * o + (o if arch.bias else 0) for i, o in block_linears(arch).values())
    norm = d * (2 if (arch.bias and arch.family == "gpt2") else 1)
    if arch.family == "gpt2":
        return arch.vocab_size * d + arch.context * d + L * (lin + 2 * norm) + norm
    return 2 * arch.vocab_size * d + L * (lin + 2 * norm) + norm


def lora_param_count_per_target(arch: Arch, r: int, target: str) -> int:
    """Trainable LoRA parameters one target adds in ONE block: r·(d_in + d_out)."""
    _check_int(r, "r")
    arch = _as_arch(arch)
    d_in, d_out = lora_targets(arch)[_check_targets(arch, [target])[0]]
    return r * (d_in + d_out)


def lora_param_count(arch: Arch, r: int, targets: Iterable[str]) -> int:
    """Trainable LoRA parameters on every block: L · Σ_targets r·(d_in + d_out) (biases frozen).

    Source: LoRA (arXiv:2106.09685) §4.2: |Θ| = 2 · L̂ · d_model · r for q and v of width d_model.
    `arch` may also be a `minilora.nn.GPTConfig`.
    """
    _check_int(r, "r")
    arch = _as_arch(arch)
    return arch.n_layer * sum(lora_param_count_per_target(arch, r, t) for t in _check_targets(arch, targets))


def peft_configs(targets: Iterable[str]) -> list[dict]:
    """GPT-2 targets as `minilora.lora.LoraConfig` keyword sets (target_modules, enable_lora).

    Slices q/k/v of c_attn become one config with enable_lora; every other target its own config.
    Returns: list of dicts, to inject one after the other.
    """
    targets = tuple(targets)
    out = []
    sl = [s for s in ("q", "k", "v") if s in targets]
    if sl:
        out.append({"target_modules": ("c_attn",), "enable_lora": [s in sl for s in ("q", "k", "v")]})
    out += [{"target_modules": (t,), "enable_lora": None} for t in targets if t not in ("q", "k", "v")]
    return out


def optimizer_state_bytes(n_params: int, optimizer: str = "adamw", dtype: str = "float32",
                          momentum: bool = True) -> int:
    """Bytes of optimizer state for n_params trainable parameters (states kept in `dtype`).

    adamw: 2 moments (m, v) per parameter -> 2·n·bytes; sgd: one momentum buffer if momentum else 0.
    Matches `minilora.optim.AdamW(...).state_bytes()` (moments in the parameters' dtype).
    Raises: ValueError for an unknown optimizer or dtype.
    """
    _check_int(n_params, "n_params", 0)
    per = {"adamw": 2, "adam": 2, "sgd": 1 if momentum else 0}
    if optimizer not in per:
        raise ValueError(f"unknown optimizer {optimizer!r}; expected 'adamw' or 'sgd'")
    return per[optimizer] * n_params * dtype_bytes(dtype)


def training_state_bytes(n_total: int, n_trainable: int, dtype: str = "float32") -> int:
    """Weights + gradients + AdamW moments, all in one dtype: n_total·b + n_trainable·b + 2·n_trainable·b.

    (Full fine-tuning in float32: 16 bytes per parameter. Activations are not included.)
    """
    b = dtype_bytes(dtype)
    return n_total * b + 3 * n_trainable * b


def checkpoint_bytes(n_params: int, dtype: str = "float32") -> int:
    """Raw tensor bytes of a checkpoint holding n_params values (file headers and names not counted)."""
    _check_int(n_params, "n_params", 0)
    return n_params * dtype_bytes(dtype)


def activation_bytes(arch: Arch, batch: int, seq: int) -> int:
    """Activation memory kept for the backward pass, all L blocks, in bytes.

    The model counted: Korthikanti et al. 2022 (arXiv:2205.05198, §4.1), per block
    s·b·h·(34 + 5·a·s/h) bytes for a GPT block with 16-bit activations, 1-byte dropout masks, no
    recomputation and no parallelism (s seq, b batch, h d_model, a heads). Embeddings, the final norm
    and the logits are not counted. The formula is derived for a GPT block (4h MLP, GeLU); for the
    "llama" family it is applied as is (SwiGLU's wider intermediate activations are not modelled).
    Returns: int bytes (s·b·h·5·a·s/h = 5·a·s²·b exactly).
    """
    arch = _as_arch(arch)
    s, b, h, a = _check_int(seq, "seq"), _check_int(batch, "batch"), arch.d_model, arch.n_head
    return arch.n_layer * (34 * s * b * h + 5 * a * s * s * b)


def linear_flops(n_rows: int, d_in: int, d_out: int) -> dict[str, int]:
    """FLOPs of a full-trained Linear over N rows: forward X W0ᵀ, backward dX = G W0 and dW = Gᵀ X.

    Returns: {"forward": 2·N·d_in·d_out, "backward": 4·N·d_in·d_out, "total": 6·N·d_in·d_out}.
    """
    f = 2 * n_rows * d_in * d_out
    return {"forward": f, "backward": 2 * f, "total": 3 * f}


def lora_linear_flops(n_rows: int, d_in: int, d_out: int, r: int, groups: int = 1, width: int | None = None) -> dict:
    """FLOPs of a LoRA layer over N rows, as minilora.lora.functional computes it (its docstring).

    forward  X W0ᵀ 2·N·d_in·d_out, U = X Aᵀ 2·N·d_in·g·r, U Bᵀ 2·N·W·r
    backward G W0 2·N·d_in·d_out, GU = G B 2·N·W·r, dB 2·N·W·r, dA 2·N·g·r·d_in, GU·A 2·N·g·r·d_in
    skipped  dW0 = Gᵀ X 2·N·d_in·d_out (W0 is frozen)
    with g groups (1, or the number of adapted c_attn slices) and W adapted output rows (d_out for g = 1).
    Returns: dict with "forward", "backward", "total" and "saved" (the skipped dW0 GEMM).
    """
    N, W = n_rows, d_out if width is None else width
    base = 2 * N * d_in * d_out
    fwd = base + 2 * N * d_in * groups * r + 2 * N * W * r
    bwd = base + 4 * N * W * r + 4 * N * groups * r * d_in
    return {"forward": fwd, "backward": bwd, "total": fwd + bwd, "saved": base}


def training_flops(arch: Arch, tokens: int, r: int | None = None, targets: Iterable[str] = ()) -> int:
    """GEMM FLOPs of one training step over `tokens` = batch·seq rows, Linear layers of the blocks only.

    Full fine-tuning (r None): 6·N·P_lin, with P_lin = L·Σ d_in·d_out (the "6·N·P" rule).
    LoRA: 4·N·P_lin (forward and dX for every layer; no dW0 anywhere) + for each target per block
    6·N·r·(d_in + d_out) (its A and B GEMMs, `lora_linear_flops`). The attention score and value
    products, embeddings, norms and the LM head are left out.
    """
    N = _check_int(tokens, "tokens")
    arch = _as_arch(arch)
    p_lin = arch.n_layer * sum(i * o for i, o in block_linears(arch).values())
    if r is None:
        if tuple(targets):
            raise ValueError("training_flops: targets given without r (full fine-tuning has no LoRA targets)")
        return 6 * N * p_lin
    _check_int(r, "r")
    tg = lora_targets(arch)
    extra = sum(6 * N * r * (tg[t][0] + tg[t][1]) for t in _check_targets(arch, targets))
    return 4 * N * p_lin + arch.n_layer * extra


def kv_cache_bytes(arch: Arch, batch: int, seq: int, dtype: str = "float16") -> int:
    """KV cache of autoregressive decoding: 2 (K and V) · L · batch · seq · d_model · bytes.

    (Multi-head attention, as in GPT-2 and LLaMA-7B/65B: n_kv_heads · head_dim = d_model.)
    """
    arch = _as_arch(arch)
    return 2 * arch.n_layer * _check_int(batch, "batch") * _check_int(seq, "seq") * arch.d_model * dtype_bytes(dtype)


def nf4_bits_per_param(double_quant: bool, block_size: int = 64, dq_block_size: int = 256) -> float:
    """Bits per weight of QLoRA's NF4 storage (Dettmers et al. 2023, arXiv:2305.14314, §3).

    Without double quantization: 4 + 32/block_size (one fp32 absmax per block: 4.5 bits at 64).
    With it: 4 + 8/block_size + 32/(block_size·dq_block_size) (absmaxes as 8-bit floats, one fp32
    constant per 256 of them: 4.127 bits).
    """
    b, b2 = _check_int(block_size, "block_size"), _check_int(dq_block_size, "dq_block_size")
    return 4 + (8 / b + 32 / (b * b2) if double_quant else 32 / b)


def quantized_model_bytes(n_params: int, double_quant: bool, block_size: int = 64, dq_block_size: int = 256) -> float:
    """Bytes of n_params weights stored in NF4: n · bits_per_param / 8."""
    return n_params * nf4_bits_per_param(double_quant, block_size, dq_block_size) / 8


def scaling(lora_alpha: float, r: int, use_rslora: bool = False) -> float:
    """The LoRA scaling s, from minilora's LoraConfig: lora_alpha/r, or lora_alpha/sqrt(r) (rsLoRA)."""
    from .lora import LoraConfig

    return float(LoraConfig(r=r, lora_alpha=lora_alpha, use_rslora=use_rslora).scaling)


def merged_weight(W0, A, B, lora_alpha: float, r: int, use_rslora: bool = False) -> np.ndarray:
    """W = W0 + s·B·A: W0 (d_out, d_in), A (r, d_in), B (d_out, r) -> float64 (d_out, d_in).

    ΔW comes from `minilora.lora.lora_merge_delta`; s from :func:`scaling`. Raises ValueError on
    mismatched shapes (from lora_merge_delta).
    """
    from .lora import lora_merge_delta

    A, B, W0 = (np.asarray(a, dtype=np.float64) for a in (A, B, W0))
    return W0 + lora_merge_delta(A, B, scaling(lora_alpha, r, use_rslora))


def lora_init_grads(x, W0, A, B, grad_out, scaling_: float) -> tuple[np.ndarray, np.ndarray]:
    """(dA, dB) of one LoRA layer, from `minilora.lora.lora_forward` / `lora_backward` (float64).

    x (N, d_in), W0 (d_out, d_in), A (r, d_in), B (d_out, r), grad_out (N, d_out).
    Returns: dA (r, d_in), dB (d_out, r), float64. Raises ValueError on mismatched shapes.
    """
    from .lora import lora_backward, lora_forward

    x, W0, A, B, G = (np.asarray(a, dtype=np.float64) for a in (x, W0, A, B, grad_out))
    _, cache = lora_forward(x, W0, None, A, B, scaling_)
    grads = lora_backward(G, cache, need_dx=False)
    return grads["dA"], grads["dB"]


def effective_rank(s) -> float:
    """exp of the entropy of s/Σs (Roy & Vetterli 2007): `minilora.rank.effective_rank`."""
    from .rank import effective_rank as _er

    return _er(s)


def subspace_similarity(A1, A2, i: int, j: int) -> float:
    """φ(A1, A2, i, j) of LoRA Eq. 4: `minilora.rank.subspace_similarity`."""
    from .rank import subspace_similarity as _ss

    return _ss(A1, A2, i, j)


def random_subspace_baseline(i: int, j: int, d: int) -> float:
    """E φ of random subspaces, max(i, j)/d: `minilora.rank.random_subspace_baseline`."""
    from .rank import random_subspace_baseline as _rb

    return _rb(i, j, d)

