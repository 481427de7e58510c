r"""AdaLoRA (Zhang et al. 2023, arXiv:2303.10512): an SVD-shaped update whose rank budget moves to where
it matters. The config, the layer variant, the hand-derived op and the orthogonality regulariser live
here; the importance scores and the budget schedule are in `lora/rank_allocator.py`.

The update (AdaLoRA §3.1, eq. 3), in minilora's row layout and PEFT's names:

    ΔW = s · P Λ Q      P = lora_B (d_out, r)   "left singular vectors"
                        Λ = diag(lora_E) with lora_E (r, 1)   "singular values"
                        Q = lora_A (r, d_in)    "right singular vectors"
    h  = x W0ᵀ + b + s · ((x̃ Qᵀ) ⊙ λᵀ) Pᵀ    s = lora_alpha / init_r

P and Q are not constrained to be orthogonal; the regulariser (eq. 4) pulls them there:

    R(P, Q) = ‖PᵀP − I‖²_F + ‖QQᵀ − I‖²_F,    loss = C + orth_reg_weight · mean over the (P, Q) pairs of R

(the paper sums R over the adapted matrices; PEFT divides by the number of matrices and uses the
unsquared norm. We keep the paper's squared norm, whose gradient is a polynomial, and PEFT's mean,
so orth_reg_weight does not grow with the number of layers.) A grouped layer (enable_lora: q and v of
GPT-2's fused c_attn) holds one triplet set per group, as plain LoRA does: Q = A (g·r, d_in),
λ = E (g·r, 1), P = B (W, r); group i uses A/E rows i·r:(i+1)·r and the B rows of its slice.

Masking (§3.1, eq. 6-7) sets λ_i = 0 for the least important triplets; P and Q are kept, so a masked
triplet can come back at a later allocation, as the paper intends. Which triplets stay is decided by
`rank_allocator.RankAllocator` (importance §3.2, eq. 8-11; the cubic budget §3.3).

Scaling: PEFT's SVDLinear multiplies by lora_alpha / (ranknum + 1e-5) with ranknum = init_r fixed;
here s = lora_alpha / init_r (`functional.lora_scaling`, r = init_r), the same without the 1e-5.

Backward (derived by hand; the op folds Λ into Q, then reuses the LoRA pass of `functional.py`):

    Ã = diag(λ) Q   (g·r, d_in),   y = LoRA(x; Ã, P)        so, with dÃ from `lora_backward`,
    ∂L/∂Q_km = Σ ∂L/∂Ã_km · ∂Ã_km/∂Q_km = dÃ_km · λ_k      →  dQ = dÃ ⊙ λ             (g·r, d_in)
    ∂L/∂λ_k  = Σ_m dÃ_km · Q_km                            →  dλ = rowsum(dÃ ⊙ Q)    (g·r, 1)
    dP, dx, db: those of LoRA with Ã in place of A (`functional.lora_backward`).

Regulariser, one group (M = PᵀP − I is symmetric, d tr(M²) = 2 tr(M dM)):
    dR = 2 tr(M (dPᵀP + PᵀdP)) = 4 tr(M Pᵀ dP)   →  ∂R/∂P = 4 P (PᵀP − I)              (w, r)
    N = QQᵀ − I:  dR = 4 tr(N dQ Qᵀ) = 4 tr(Qᵀ N dQ)  →  ∂R/∂Q = 4 (QQᵀ − I) Q        (r, d_in)
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from numbers import Integral, Real
from os import PathLike
from typing import Any, ClassVar

import numpy as np

from .. import ops
from ..function import Function
from ..tensor import Tensor, is_grad_enabled
from . import adapter_io, functional
from .adapters import DEFAULT_ADAPTER
from .config import LoraConfig
from .layer import LoRAFactor, LoRALinear, lora_linear_composed
from .model import LoraModel
from .variant import LoraVariant

__all__ = ["AdaLoraConfig", "AdaLoraVariant", "AdaLoraFunction", "adalora_linear", "adalora_linear_composed",
           "OrthRegFunction", "orth_regularizer", "orth_regularizer_composed", "AdaLoraModel", "group_labels"]


# --------------------------------------------------------------------------- the options

@dataclass
class AdaLoraConfig(LoraConfig):
    """AdaLoRA's options, named as PEFT's AdaLoraConfig (a LoraConfig whose variant is "adalora").

    Args (besides LoraConfig's; `r` is set to init_r, as PEFT builds the layers with init_r):
        init_r: int >= 1, the starting rank of every adapted matrix (each group of a fused layer).
        target_r: int in [1, init_r], the average final rank: the final budget is target_r times the
            number of adapted matrices (PEFT: target_r * len(name_set)).
        tinit: int >= 0, warm-up steps at the full budget (no masking).
        tfinal: int >= 0, final steps at the fixed final rank pattern.
        deltaT: int >= 1, re-allocate every deltaT steps during the cubic decrease.
        beta1, beta2: in (0, 1), the EMA factors of the sensitivity and of its uncertainty (§3.2).
        orth_reg_weight: float >= 0, the γ of eq. 4 (0 turns the regulariser off; PEFT requires > 0).
        total_step: None or int > tinit + tfinal, the number of training steps T (required by the
            allocator; `finetune` fills it from TrainConfig.max_steps).
        rank_pattern: None or {layer name: list of g·init_r bools}, the triplets kept (written by the
            allocator, saved in adapter_config.json, applied again on load).
    Raises:
        ValueError / TypeError naming the field, the value and what is expected.
    """

    init_r: int = 12
    target_r: int = 8
    tinit: int = 0
    tfinal: int = 0
    deltaT: int = 1
    beta1: float = 0.85
    beta2: float = 0.85
    orth_reg_weight: float = 0.5
    total_step: int | None = None
    rank_pattern: dict | None = None
    variant: str = "adalora"
    peft_type: ClassVar[str] = "ADALORA"          # adapter_config.json's peft_type, as PEFT writes it

    def __post_init__(self) -> None:
        def int_field(name, lo, allow_none=False):
            v = getattr(self, name)
            if v is None and allow_none:
                return
            if isinstance(v, bool) or not isinstance(v, Integral) or v < lo:
                raise ValueError(f"AdaLoraConfig.{name} must be an int >= {lo}, got {v!r}")
            setattr(self, name, int(v))

        for name, lo in (("init_r", 1), ("target_r", 1), ("tinit", 0), ("tfinal", 0), ("deltaT", 1)):
            int_field(name, lo)
        int_field("total_step", 1, allow_none=True)
        if self.target_r > self.init_r:
            raise ValueError(f"AdaLoraConfig.target_r = {self.target_r} exceeds init_r = {self.init_r} "
                             "(the budget only decreases)")
        for name in ("beta1", "beta2"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, Real) or not 0.0 < v < 1.0:
                raise ValueError(f"AdaLoraConfig.{name} must be in (0, 1), got {v!r}")
            setattr(self, name, float(v))
        w = self.orth_reg_weight
        if isinstance(w, bool) or not isinstance(w, Real) or not np.isfinite(w) or w < 0:
            raise ValueError(f"AdaLoraConfig.orth_reg_weight must be a finite number >= 0, got {w!r}")
        self.orth_reg_weight = float(w)
        if self.total_step is not None and self.tinit + self.tfinal >= self.total_step:
            raise ValueError(f"AdaLoraConfig: tinit + tfinal = {self.tinit} + {self.tfinal} must be smaller than "
                             f"total_step = {self.total_step} (no steps left for the budget to decrease)")
        if self.variant != "adalora":
            raise ValueError(f"AdaLoraConfig.variant must be 'adalora', got {self.variant!r}")
        if self.rank_pattern is not None:
            rp = self.rank_pattern
            if not isinstance(rp, dict) or not all(
                    isinstance(k, str) and isinstance(v, (list, tuple)) and len(v) % self.init_r == 0 and len(v)
                    and all(isinstance(b, (bool, np.bool_)) for b in v) for k, v in rp.items()):
                raise ValueError("AdaLoraConfig.rank_pattern must be None or {layer name: list of bools, a "
                                 f"multiple of init_r = {self.init_r} long}}, got {rp!r}")
            self.rank_pattern = {k: [bool(b) for b in v] for k, v in rp.items()}
        self.r = self.init_r
        super().__post_init__()


# --------------------------------------------------------------------------- the op

class AdaLoraFunction(Function):
    """y = x W0ᵀ + b + s · ((x̃ Qᵀ) ⊙ λᵀ) Pᵀ per group, with the hand-derived backward of the module docstring.

    Inputs (Tensors): x (..., d_in), A = Q (g*r, d_in), E = λ (g*r, 1), B = P (W, r), and b (d_out,) when
    the bias trains. Constants: W0 (d_out, d_in), frozen_bias, scaling, mask, keep_prob, slices (as
    `LoRAFunction`). No gradient for W0.
    """

    @staticmethod
    def forward(ctx, x, A, E, B, b=None, W0=None, frozen_bias=None, scaling=1.0, mask=None, keep_prob=1.0,
                slices=None):
        if E.shape != (A.shape[0], 1):
            raise ValueError(f"AdaLoraFunction: lora_E has shape {E.shape}, expected ({A.shape[0]}, 1) "
                             f"(one singular value per row of lora_A {A.shape})")
        y, cache = functional.lora_forward(x, W0, b if b is not None else frozen_bias, A * E, B, scaling,
                                           dropout_mask=mask, keep_prob=keep_prob, slices=slices)
        ctx.save_for_backward(cache, A, E)
        ctx.trainable_bias = b is not None
        return y

    @staticmethod
    def backward(ctx, g):
        cache, A, E = ctx.saved
        need = ctx.needs_input_grad
        grads = functional.lora_backward(g, cache, need_dx=need[0], need_db=ctx.trainable_bias and need[4])
        dAe = grads["dA"]                                            # ∂L/∂(diag(λ) Q)   (g*r, d_in)
        dA = dAe * E if need[1] else None                           # dQ = dÃ ⊙ λ
        dE = np.sum(dAe * A, axis=1, keepdims=True) if need[2] else None  # dλ = rowsum(dÃ ⊙ Q)
        out = (grads["dx"], dA, dE, grads["dB"] if need[3] else None)
        return out + (grads["db"],) if ctx.trainable_bias else out


def _arr(t):  # W0 may be a frozen-weight operator (a 4-bit base): `functional.as_frozen_weight`
    return t.data if isinstance(t, Tensor) else (None if t is None else functional.as_frozen_weight(t))


def adalora_linear(x: Tensor, W0: np.ndarray, b: Tensor | np.ndarray | None, A: Tensor, E: Tensor, B: Tensor,
                   scaling: float, mask: np.ndarray | None = None, keep_prob: float = 1.0,
                   slices: Sequence[tuple[int, int]] | None = None) -> Tensor:
    """The AdaLoRA layer output through `AdaLoraFunction` (hand-derived backward).

    Shapes: x (..., d_in), W0 (d_out, d_in) constant, A (g*r, d_in), E (g*r, 1), B (W, r) -> (..., d_out).
    b is trainable when it is a Tensor with requires_grad, else a constant. Raises: the errors of
    `functional.lora_forward`; ValueError for an E of the wrong shape.
    """
    consts = dict(W0=_arr(W0), scaling=float(scaling), mask=_arr(mask), keep_prob=float(keep_prob), slices=slices)
    if isinstance(b, Tensor) and b.requires_grad:
        return AdaLoraFunction.apply(x, A, E, B, b, **consts)
    return AdaLoraFunction.apply(x, A, E, B, frozen_bias=_arr(b), **consts)


def adalora_linear_composed(x, W0, b, A: Tensor, E: Tensor, B: Tensor, scaling: float, mask=None,
                            keep_prob: float = 1.0, slices=None) -> Tensor:
    """The same output from engine ops (Ã = A * E by broadcasting, then `lora_linear_composed`): the oracle."""
    return lora_linear_composed(x, W0, b, ops.mul(A, E), B, scaling, mask, keep_prob, slices)


# --------------------------------------------------------------------------- the regulariser

class OrthRegFunction(Function):
    """R = Σ_groups ‖P_iᵀP_i − I‖²_F + ‖Q_iQ_iᵀ − I‖²_F of one layer (eq. 4): a scalar, shape ().

    Inputs: A = Q (g*r, d_in), B = P (W, r). Constants: r, slices (None: one group). Backward:
    dQ_i = 4 (Q_iQ_iᵀ − I) Q_i, dP_i = 4 P_i (P_iᵀP_i − I) (module docstring), times the upstream g.
    """

    @staticmethod
    def forward(ctx, A, B, r=1, slices=None):
        total, MA, MB = 0.0, [], []
        for _, a_rows, b_rows, _ in functional.lora_groups(slices, r, B.shape[0]):
            Q, P = A[a_rows], B[b_rows]                              # (r, d_in), (w, r)
            N = Q @ Q.T - np.eye(r, dtype=A.dtype)                   # (r, r)
            M = P.T @ P - np.eye(r, dtype=B.dtype)                   # (r, r)
            total += float(np.sum(N * N) + np.sum(M * M))
            MA.append((a_rows, N))
            MB.append((b_rows, M))
        ctx.save_for_backward(A, B, MA, MB)
        return np.asarray(total, dtype=A.dtype)

    @staticmethod
    def backward(ctx, g):
        A, B, MA, MB = ctx.saved
        need = ctx.needs_input_grad
        dA = dB = None
        if need[0]:
            dA = np.zeros_like(A)
            for rows, N in MA:
                dA[rows] = (4.0 * g) * (N @ A[rows])                  # 4 (QQᵀ − I) Q
        if need[1]:
            dB = np.zeros_like(B)
            for rows, M in MB:
                dB[rows] = (4.0 * g) * (B[rows] @ M)                  # 4 P (PᵀP − I)
        return dA, dB


def orth_regularizer(layers: Sequence[LoRALinear]) -> Tensor:
    """The mean over the adapted matrices (groups) of R(P, Q), a scalar Tensor (hand-derived backward).

    Raises: ValueError when `layers` is empty.
    """
    layers = list(layers)
    if not layers:
        raise ValueError("orth_regularizer: no AdaLoRA layers given")
    n = sum(1 if m.slices is None else len(m.slices) for m in layers)
    total = None
    for m in layers:
        R = OrthRegFunction.apply(m.lora_A.weight, m.lora_B.weight, r=m.r, slices=m.slices)
        total = R if total is None else total + R
    return total * (1.0 / n)


def orth_regularizer_composed(layers: Sequence[LoRALinear]) -> Tensor:
    """The same value from engine ops (matmul, transpose, getitem, sub, mul, sum): the oracle."""
    total, n = None, 0
    for m in layers:
        A, B = m.lora_A.weight, m.lora_B.weight
        for _, a_rows, b_rows, _ in functional.lora_groups(m.slices, m.r, m.out_features):
            Q, P = ops.getitem(A, a_rows), ops.getitem(B, b_rows)
            eye = np.eye(m.r, dtype=A.dtype)
            N = ops.matmul(Q, ops.transpose(Q)) - eye
            M = ops.matmul(ops.transpose(P), P) - eye
            R = ops.sum(N * N) + ops.sum(M * M)
            total = R if total is None else total + R
            n += 1
    return total * (1.0 / n)


# --------------------------------------------------------------------------- the variant

class AdaLoraVariant(LoraVariant):
    """AdaLoRA on the variant hook: ΔW = s · P diag(λ) Q per group (see the module docstring).

    Parameters of a layer: lora_A.weight = Q (g*r, d_in), lora_E.weight = λ (g*r, 1),
    lora_B.weight = P (W, r), r = init_r. Start (PEFT's reset_lora_parameters): λ = 0, P and Q ~
    N(0, 0.02²), so ΔW = 0 at step 0 while every factor is non-zero; init_lora_weights=False also
    draws λ ~ N(0, 1) (ΔW != 0, for tests). `rank_mask` (g*r,) bool, all True at the start, records
    the kept triplets; `apply_rank_mask` zeroes the others' λ.
    """

    name = "adalora"
    adapter_keys = ("lora_A.weight", "lora_B.weight", "lora_E.weight")
    model_class = "minilora.lora.adalora:AdaLoraModel"

    @classmethod
    def init(cls, layer: LoRALinear, init_lora_weights: bool | str) -> None:
        """Create lora_A (g*r, d_in), lora_E (g*r, 1), lora_B (W, r) in the layer's dtype, from layer.rng."""
        if init_lora_weights not in (True, False):
            raise ValueError(f"adalora: init_lora_weights must be True or False (AdaLoRA has its own start), "
                             f"got {init_lora_weights!r}")
        g = 1 if layer.slices is None else len(layer.slices)
        W = layer.out_features if layer.slices is None else sum(s1 - s0 for s0, s1 in layer.slices)
        dtype = layer.weight.dtype
        A = layer.rng.normal(0.0, 0.02, (g * layer.r, layer.in_features))
        B = layer.rng.normal(0.0, 0.02, (W, layer.r))
        E = np.zeros((g * layer.r, 1)) if init_lora_weights else layer.rng.normal(0.0, 1.0, (g * layer.r, 1))
        layer.lora_A = LoRAFactor(A.astype(dtype))
        layer.lora_B = LoRAFactor(B.astype(dtype))
        layer.lora_E = LoRAFactor(E.astype(dtype))
        layer.rank_mask = np.ones(g * layer.r, dtype=bool)

    @classmethod
    def forward(cls, layer: LoRALinear, x: Tensor, mask: np.ndarray | None, keep_prob: float) -> Tensor:
        """The fused op `adalora_linear` (hand-derived backward)."""
        return adalora_linear(x, layer.weight.data, layer.bias, layer.lora_A.weight, layer.lora_E.weight,
                              layer.lora_B.weight, layer.scaling, mask, keep_prob, layer.slices)

    @classmethod
    def delta_weight(cls, layer: LoRALinear) -> np.ndarray:
        """ΔW = s · P_i diag(λ_i) Q_i on each group's rows: (d_out, d_in), the layer's dtype."""
        return functional.lora_merge_delta(layer.lora_A.weight.data * layer.lora_E.weight.data,
                                           layer.lora_B.weight.data, layer.scaling, layer.slices,
                                           layer.out_features)

    @staticmethod
    def apply_rank_mask(layer: LoRALinear, keep: np.ndarray) -> None:
        """Keep the triplets where `keep` (g*r,) is True, set λ = 0 for the others (§3.1, eq. 7; P, Q kept).

        Raises: ValueError for a wrong length; RuntimeError while merged (ΔW would change under W).
        """
        keep = np.asarray(keep, dtype=bool).reshape(-1)
        if keep.shape != (layer.lora_E.weight.shape[0],):
            raise ValueError(f"adalora: a rank mask of {keep.shape[0]} entries for a layer with "
                             f"{layer.lora_E.weight.shape[0]} triplets")
        if layer.merged:
            raise RuntimeError("adalora: cannot mask singular values of a merged layer; unmerge() first")
        layer.rank_mask = keep.copy()
        E = layer.lora_E.weight
        E.data = np.where(keep[:, None], E.data, E.data.dtype.type(0))


def group_labels(layer: LoRALinear) -> list[str]:
    """One label per group: "q"/"k"/"v" for a 3-way enable_lora (GPT-2's c_attn), "" for one group,
    else the slice index."""
    enable = layer.lora_config.enable_lora
    if enable is None:
        return [""]
    names = "qkv" if len(enable) == 3 else [str(i) for i in range(len(enable))]
    return [names[i] for i, e in enumerate(enable) if e]


# --------------------------------------------------------------------------- the model

class AdaLoraModel(LoraModel):
    """A LoraModel whose layers are AdaLoRA's, with the regulariser in the loss and a rank allocator.

    `model(idx, targets)` returns (logits, loss + orth_reg_weight · orth_regularizer) while training
    with gradients on (PEFT's AdaLoraModel.forward does the same); in eval mode or under no_grad the
    loss is the task loss alone, so validation losses compare with plain LoRA's.
    Call `update_and_allocate(step)` after each optimizer step, before zero_grad (PEFT's order), or
    pass `training_callbacks()` to `minilora.train.train`, which does it.
    Args:
        model: the GPT (changed in place). config: an AdaLoraConfig. adapter_name: as LoraModel's (one
            AdaLoRA adapter trains at a time, as in PEFT: the allocator follows the active layers).
    Raises:
        TypeError: config is not an AdaLoraConfig.
    """

    def __init__(self, model, config: AdaLoraConfig, adapter_name: str = DEFAULT_ADAPTER):
        if not isinstance(config, AdaLoraConfig):
            raise TypeError(f"AdaLoraModel: config must be an AdaLoraConfig (init_r, target_r, ...), got "
                            f"{type(config).__name__}")
        super().__init__(model, config, adapter_name)
        from .rank_allocator import RankAllocator

        self.rankallocator = RankAllocator(self, config)
        if config.rank_pattern:
            self.apply_rank_pattern(config.rank_pattern)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """(logits, loss) of the wrapped model, plus the orthogonality term while training."""
        logits, loss = super().forward(*args, **kwargs)
        gamma = self.peft_config.orth_reg_weight
        if loss is not None and gamma > 0 and self.training and is_grad_enabled():
            loss = loss + orth_regularizer([m for _, m in self.lora_layers()]) * gamma
        return logits, loss

    def update_and_allocate(self, global_step: int) -> dict | None:
        """Update the importance EMAs and re-mask per the budget schedule; see `RankAllocator.step`.

        Returns the rank pattern when one was set at this step, else None; the current pattern is
        kept in `peft_config.rank_pattern`.
        """
        return self.rankallocator.step(global_step)

    def training_callbacks(self) -> list:
        """[a callback whose on_step_end(step, model) calls update_and_allocate(step)] for `train`."""
        return [_AllocateCallback(self)]

    def rank_pattern(self) -> dict[str, list[bool]]:
        """{layer name: list of g*init_r bools}: the kept triplets of each layer now."""
        return {n: m.rank_mask.tolist() for n, m in self.lora_layers()}

    def apply_rank_pattern(self, pattern: dict) -> None:
        """Mask every layer per `pattern` ({layer name: bools}) and record it in peft_config.

        Raises: ValueError naming a layer the model lacks, or a layer the pattern misses.
        """
        layers = dict(self.lora_layers())
        unknown, missing = sorted(set(pattern) - set(layers)), sorted(set(layers) - set(pattern))
        if unknown or missing:
            raise ValueError(f"AdaLoraModel: rank_pattern names unknown layers {unknown} and misses {missing}")
        for name, keep in pattern.items():
            AdaLoraVariant.apply_rank_mask(layers[name], np.asarray(keep, dtype=bool))
        self.peft_config.rank_pattern = self.rank_pattern()

    def rank_allocation(self) -> dict[str, dict[str, int]]:
        """{layer name: {group label ("q", "v", ...): kept rank}} from the current masks."""
        out = {}
        for name, m in self.lora_layers():
            kept = m.rank_mask.reshape(-1, m.r).sum(axis=1)
            out[name] = {lab: int(k) for lab, k in zip(group_labels(m), kept, strict=True)}
        return out

    def save_adapter(self, path: str | PathLike) -> None:
        """`LoraModel.save_adapter` with the current rank pattern in adapter_config.json."""
        self.peft_config.rank_pattern = self.rank_pattern()
        super().save_adapter(path)

    def load_adapter(self, path: str | PathLike, adapter_name: str | None = None) -> None:
        """`LoraModel.load_adapter`, then the file's rank pattern is applied (masked λ stay 0) when the
        file went into the active adapter."""
        super().load_adapter(path, adapter_name)
        config, _, _ = adapter_io.read_adapter(path)
        pattern = getattr(config, "rank_pattern", None)
        if pattern and adapter_name in (None, self.active_adapter):
            self.apply_rank_pattern(pattern)


class _AllocateCallback:
    """Calls `AdaLoraModel.update_and_allocate(step)` after each optimizer step (train's on_step_end)."""

    def __init__(self, model: AdaLoraModel):
        self.model = model

    def on_step_end(self, step: int, model: Any) -> None:
        self.model.update_and_allocate(step)
