r"""Combining adapters: `add_weighted_adapter` with combination_type "svd", "cat" and (naive) "linear".

What a weighted combination of adapters should be is a statement about ΔW (task arithmetic):

    ΔW_new = Σ_i w_i ΔW_i = Σ_i w_i s_i B_i A_i                                         (d_out, d_in)

The trap: LoRA stores factors, and adding FACTORS is not adding products. PEFT's "linear" takes
c_i = √(w_i s_i) and sets A = Σ c_i A_i, B = Σ c_i B_i (equal ranks required), so

    B A = Σ_i c_i² B_i A_i  +  Σ_{i≠j} c_i c_j B_i A_j  =  ΔW_new  +  cross terms

and the cross terms B_i A_j (adapter i's output directions fed by adapter j's input directions)
were never trained by anyone. With two rank-1 adapters, A_i = u_iᵀ, B_i = v_i, s_i = 1:
"linear" gives ΔW_new + √(w_1 w_2) (v_1 u_2ᵀ + v_2 u_1ᵀ); the error vanishes only when the
cross products do (e.g. orthogonal u's AND v's do not suffice: v_1 u_2ᵀ is a nonzero matrix).

Two combinations are exact in ΔW space (PEFT's "cat" and "svd"; the new adapter has lora_alpha = r,
so scaling 1, as PEFT sets it):

* "cat" (rank Σ r_i): stack the factors, A = [w_1 s_1 A_1; w_2 s_2 A_2; ...] (Σr_i, d_in),
  B = [B_1 | B_2 | ...] (d_out, Σr_i). The block product has no cross terms:
  B A = Σ_i B_i (w_i s_i A_i) = ΔW_new exactly (plain LoRA factors only).
* "svd" (rank k = svd_rank, default max r_i): form ΔW_new densely, from each layer's own
  `delta_weight()` (so ANY variant can be combined: VeRA, DoRA, ...), and keep its top k singular
  triplets: B = U_k S_k, A = V_kᵀ. Exact when k >= rank(ΔW_new) (<= Σ r_i); otherwise the best
  rank-k approximation in Frobenius and spectral norm (Eckart–Young), error = the dropped σ's.
  For a fused layer (enable_lora) it is done per group of output rows.

`combine_factors` is the arithmetic on plain arrays (what the tests check by hand);
`add_weighted_adapter(model, ...)` applies it to every target of a LoraModel's named adapters.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from numbers import Real
from typing import TYPE_CHECKING

import numpy as np

from .config import LoraConfig
from .functional import lora_groups

if TYPE_CHECKING:
    from .model import LoraModel

__all__ = ["COMBINATION_TYPES", "combine_factors", "svd_factors", "add_weighted_adapter"]

COMBINATION_TYPES = ("svd", "cat", "linear")


def svd_factors(delta: np.ndarray, new_rank: int, slices: Sequence[tuple[int, int]] | None = None
                ) -> tuple[np.ndarray, np.ndarray]:
    """(A (g*k, d_in), B (W, k)) with B_i A_i = the top-k SVD part of delta's rows of group i.

    delta (d_out, d_in), float64 computation; k = new_rank; slices as LoRALinear.slices (None: one
    group). Singular triplets beyond the matrix's rank are zero rows / columns.
    """
    d_out, d_in = delta.shape
    groups = list(lora_groups(slices, new_rank, d_out))
    A = np.zeros((len(groups) * new_rank, d_in))
    B = np.zeros((sum(o.stop - o.start for *_, o in groups), new_rank))
    for _, a_rows, b_rows, out in groups:
        U, S, Vh = np.linalg.svd(np.asarray(delta[out], dtype=np.float64), full_matrices=False)
        k = min(new_rank, S.size)
        B[b_rows, :k] = U[:, :k] * S[:k]                   # (w_i, k)
        A[a_rows.start:a_rows.start + k] = Vh[:k]          # (k, d_in)
    return A, B


def combine_factors(factors: Sequence[tuple[np.ndarray, np.ndarray, float]], weights: Sequence[float],
                    combination_type: str, slices: Sequence[tuple[int, int]] | None = None
                    ) -> tuple[np.ndarray, np.ndarray]:
    """(A_new, B_new), to be used with scaling 1, from plain LoRA factors (A_i, B_i, s_i) of one layer.

    "cat": A_new (g*Σr, d_in), B_new (W, Σr), exactly Σ w_i s_i B_i A_i (module docstring).
    "linear": PEFT's naive sum of factors (equal r; w_i s_i >= 0): includes the cross terms.
    Shapes: A_i (g*r_i, d_in), B_i (W, r_i), the same group layout `slices` for every i.
    Raises: ValueError for another combination_type, unequal ranks for "linear", a negative w_i s_i.
    """
    ranks = [B.shape[1] for _, B, _ in factors]
    if combination_type == "cat":
        R = sum(ranks)
        d_in = factors[0][0].shape[1]
        A_new = np.zeros((factors[0][0].shape[0] // ranks[0] * R, d_in))
        B_new = np.zeros((factors[0][1].shape[0], R))
        off = 0
        for (A, B, s), w, r in zip(factors, weights, ranks, strict=True):
            old_groups, new_groups = lora_groups(slices, r, B.shape[0]), lora_groups(slices, R, B.shape[0])
            for (_, a_rows, b_rows, _), (_, na_rows, _, _) in zip(old_groups, new_groups, strict=True):
                A_new[na_rows.start + off:na_rows.start + off + r] = w * s * A[a_rows]   # (r, d_in)
                B_new[b_rows, off:off + r] = B[b_rows]                                   # (w_g, r)
            off += r
        return A_new, B_new
    if combination_type == "linear":
        if len(set(ranks)) > 1:
            raise ValueError(f"combination_type 'linear' needs adapters of equal rank, got ranks {ranks}")
        cs = []
        for (_, _, s), w in zip(factors, weights, strict=True):
            if w * s < 0:
                raise ValueError(f"combination_type 'linear' takes √(w·s); got w·s = {w * s} < 0")
            cs.append(math.sqrt(w * s))
        return (sum(c * A for c, (A, _, _) in zip(cs, factors, strict=True)),
                sum(c * B for c, (_, B, _) in zip(cs, factors, strict=True)))
    raise ValueError(f"combine_factors: combination_type must be 'cat' or 'linear' (use svd_factors for 'svd'), "
                     f"got {combination_type!r}")


def add_weighted_adapter(model: LoraModel, adapters: Sequence[str], weights: Sequence[float], adapter_name: str,
                         combination_type: str = "svd", svd_rank: int | None = None) -> None:
    """Add adapter `adapter_name` = the weighted combination of `adapters` (PEFT's method; module docstring).

    Args:
        model: a LoraModel holding the named adapters. adapters: names (>= 1). weights: one finite
            real per adapter. combination_type: "svd" (any variant, rank svd_rank or max r_i),
            "cat" (plain LoRA, rank Σ r_i), "linear" (plain LoRA, equal r: the naive sum of factors,
            kept to show its cross-term error). svd_rank: int >= 1 or None.
    The new adapter is plain LoRA (variant "lora") with r = the new rank, lora_alpha = r, targets
    the union of the adapters' targets, the group layout (enable_lora) they share; it is not made
    active (set_adapter it). Raises ValueError naming what is wrong (unknown adapter, lengths,
    combination_type, a variant "cat"/"linear" cannot combine, different enable_lora).
    """
    slots = model._slots()
    if isinstance(adapters, str) or not adapters or any(a not in slots for a in adapters):
        raise ValueError(f"add_weighted_adapter: adapters must be a non-empty list of adapter names from "
                         f"{list(slots)}, got {adapters!r}")
    if isinstance(weights, str) or len(weights) != len(adapters) or not all(
            isinstance(w, Real) and not isinstance(w, bool) and math.isfinite(w) for w in weights):
        raise ValueError(f"add_weighted_adapter: weights must be {len(adapters)} finite numbers, got {weights!r}")
    if combination_type not in COMBINATION_TYPES:
        raise ValueError(f"add_weighted_adapter: combination_type must be one of {COMBINATION_TYPES}, "
                         f"got {combination_type!r}")
    model._sync_out()
    configs = [slots[a].config for a in adapters]
    if len({None if c.enable_lora is None else tuple(c.enable_lora) for c in configs}) > 1:
        raise ValueError("add_weighted_adapter: the adapters use different enable_lora layouts")
    if combination_type != "svd":
        odd = [a for a, c in zip(adapters, configs, strict=True) if c.variant != "lora"]
        if odd:
            raise ValueError(f"add_weighted_adapter: combination_type {combination_type!r} combines plain LoRA "
                             f"factors; {odd} are other variants: use 'svd', which works on ΔW")
    ranks = [c.r for c in configs]
    if combination_type == "svd":
        if svd_rank is not None and (not isinstance(svd_rank, int) or isinstance(svd_rank, bool) or svd_rank < 1):
            raise ValueError(f"add_weighted_adapter: svd_rank must be None or an int >= 1, got {svd_rank!r}")
        new_rank = svd_rank or max(ranks)
    elif combination_type == "cat":
        new_rank = sum(ranks)
    else:
        if len(set(ranks)) > 1:
            raise ValueError(f"add_weighted_adapter: 'linear' needs equal ranks, got ranks {ranks} for {adapters}")
        new_rank = ranks[0]
    names = [n for n, _ in model.base_model.named_modules() if any(n in slots[a].names for a in adapters)]
    config = LoraConfig(r=new_rank, lora_alpha=new_rank, lora_dropout=configs[0].lora_dropout,
                        target_modules=tuple(names), enable_lora=configs[0].enable_lora)
    model.add_adapter(adapter_name, config)
    new_layers = slots[adapter_name].layers
    for pos in names:
        layer = new_layers[pos]
        present = [(a, w) for a, w in zip(adapters, weights, strict=True) if pos in slots[a].layers]
        if combination_type == "svd":
            delta = sum(w * slots[a].layers[pos].delta_weight().astype(np.float64) for a, w in present)
            A, B = svd_factors(delta, new_rank, layer.slices)
        elif combination_type == "cat":
            A, B = _cat_with_gaps(adapters, weights, slots, pos, layer)
        else:
            factors = [(m.lora_A.weight.data.astype(np.float64), m.lora_B.weight.data.astype(np.float64), m.scaling)
                       for m in (slots[a].layers[pos] for a, _ in present)]
            A, B = combine_factors(factors, [w for _, w in present], "linear", layer.slices)
        layer.lora_A.weight.data = A.astype(layer.weight.dtype)
        layer.lora_B.weight.data = B.astype(layer.weight.dtype)


def _cat_with_gaps(adapters, weights, slots, pos, layer):
    """"cat" at one target; an adapter without a layer there keeps a zero block (rank Σ r_i everywhere)."""
    factors = []
    for a in adapters:
        m = slots[a].layers.get(pos)
        if m is None:
            g = 1 if layer.slices is None else len(layer.slices)
            r = slots[a].config.r
            factors.append((np.zeros((g * r, layer.in_features)), np.zeros((layer.lora_B.weight.shape[0], r)), 1.0))
        else:
            factors.append((m.lora_A.weight.data.astype(np.float64), m.lora_B.weight.data.astype(np.float64),
                            m.scaling))
    return combine_factors(factors, weights, "cat", layer.slices)
