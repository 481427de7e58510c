r"""AdaLoRA's rank allocator: importance scores with their moving averages, the cubic budget, the mask.

Zhang et al. 2023 (arXiv:2303.10512), §3.2 (eq. 8-11) and §3.3, in the notation of `lora/adalora.py` (P = lora_B,
λ = lora_E, Q = lora_A). For every entry w of P, λ, Q, after the backward of step t:

    I(t)  = |w · ∂L/∂w|                                  sensitivity
    Ī(t)  = β1 Ī(t−1) + (1 − β1) I(t)                    smoothed sensitivity
    Ū(t)  = β2 Ū(t−1) + (1 − β2) |I(t) − Ī(t)|           uncertainty
    s(t)  = Ī(t) · Ū(t)                                  the entry's importance

and the importance of triplet i of a matrix (its i-th singular value with its two vectors):

    S_i = s(λ_i) + (1/d1) Σ_j s(P_ji) + (1/d2) Σ_j s(Q_ij)       d1 = rows of P, d2 = columns of Q

The budget b(t) is the total number of triplets kept over all adapted matrices (§3.3, PEFT's
`budget_schedule`): b(0) = init_r · n during the warm-up t <= tinit, then a cubic decrease

    b(t) = ⌊b(T) + (b(0) − b(T)) (1 − (t − tinit) / (T − tfinal − tinit))³⌋

re-allocated every deltaT steps, and b(T) = target_r · n for the last tfinal steps, where the rank
pattern fixed at t = T − tfinal is re-applied after every step. Allocation keeps the b(t) triplets of
highest S over all matrices together (so ranks move between layers) and sets λ = 0 for the others.
Ties are broken by position (a stable sort), so exactly b(t) triplets stay; PEFT's threshold
`S <= kthvalue` may drop more on ties.

Not saved in training checkpoints: the EMAs (a resumed AdaLoRA run starts them afresh).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from . import functional

if TYPE_CHECKING:
    from .adalora import AdaLoraConfig, AdaLoraModel

__all__ = ["importance_update", "triplet_scores", "budget_schedule", "RankAllocator"]

_KEYS = ("lora_A.weight", "lora_E.weight", "lora_B.weight")


def importance_update(weight: np.ndarray, grad: np.ndarray, ipt_bar: np.ndarray, unc_bar: np.ndarray,
                      beta1: float, beta2: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One step of the importance EMAs (§3.2) for every entry of a parameter: (Ī(t), Ū(t), s(t)), w's shape.

    Args: weight, grad: the parameter and its gradient, same shape. ipt_bar, unc_bar: the previous
    Ī(t−1), Ū(t−1) (zeros at the first step). beta1, beta2: in (0, 1).
    Raises: ValueError when the shapes differ.
    """
    if not (weight.shape == grad.shape == ipt_bar.shape == unc_bar.shape):
        raise ValueError(f"importance_update: shapes differ: weight {weight.shape}, grad {grad.shape}, "
                         f"ipt_bar {ipt_bar.shape}, unc_bar {unc_bar.shape}")
    ipt = np.abs(weight * grad)                                   # I(t): sensitivity
    ipt_bar = beta1 * ipt_bar + (1 - beta1) * ipt                 # Ī(t): smoothed
    unc_bar = beta2 * unc_bar + (1 - beta2) * np.abs(ipt - ipt_bar)   # Ū(t): with the new Ī, as PEFT
    return ipt_bar, unc_bar, ipt_bar * unc_bar                    # s(t) = Ī · Ū


def triplet_scores(s_A: np.ndarray, s_E: np.ndarray, s_B: np.ndarray, r: int, slices=None) -> np.ndarray:
    """The triplet importance (§3.2) for every triplet of one layer: S (g*r,) from the entry scores of Q, λ, P.

    Args: s_A (g*r, d_in), s_E (g*r, 1), s_B (W, r) entry scores s(t); r, slices as the layer's.
    Group i: S[i*r + j] = s_E[i*r+j] + mean over the B rows of slice i of s_B[:, j] + mean of s_A[i*r+j, :].
    """
    S = s_E.reshape(-1) + s_A.mean(axis=1)                         # (g*r,)
    for _, a_rows, b_rows, _ in functional.lora_groups(slices, r, s_B.shape[0]):
        S[a_rows] += s_B[b_rows].mean(axis=0)                       # (r,)
    return S


def budget_schedule(step: int, init_bgt: int, target_bgt: int, tinit: int, tfinal: int, total_step: int,
                    deltaT: int) -> tuple[int, bool]:
    """(b(t), whether to re-allocate at this step): §3.3 as in the module docstring (PEFT's rule)."""
    if step <= tinit:
        return init_bgt, False
    if step > total_step - tfinal:
        return target_bgt, True
    frac = 1.0 - (step - tinit) / (total_step - tfinal - tinit)
    return int((init_bgt - target_bgt) * frac ** 3 + target_bgt), step % deltaT == 0


class RankAllocator:
    """The importance EMAs of one AdaLoraModel and the budget they are spent on.

    Args: model (AdaLoraModel), config (its AdaLoraConfig; total_step must be set before `step`).
    Attributes: init_bgt = Σ g·init_r, target_bgt = target_r · (number of adapted matrices),
    ipt_bar / unc_bar: {parameter name: array} (Ī, Ū), budget: the last b(t) applied.
    """

    def __init__(self, model: AdaLoraModel, config: AdaLoraConfig):
        self.model = model
        self.config = config
        layers = model.lora_layers()
        self.n_matrices = sum(1 if m.slices is None else len(m.slices) for _, m in layers)
        self.init_bgt = sum(m.lora_E.weight.shape[0] for _, m in layers)
        self.target_bgt = config.target_r * self.n_matrices
        self.budget = self.init_bgt
        self.reset_ipt()

    def reset_ipt(self) -> None:
        """Forget Ī and Ū (PEFT does it once the final pattern is fixed)."""
        self.ipt_bar: dict[str, np.ndarray] = {}
        self.unc_bar: dict[str, np.ndarray] = {}
        self.score: dict[str, np.ndarray] = {}

    def budget_schedule(self, step: int) -> tuple[int, bool]:
        """`budget_schedule` with this model's budgets and the config's tinit, tfinal, total_step, deltaT."""
        c = self.config
        if c.total_step is None:
            raise ValueError("RankAllocator: AdaLoraConfig.total_step is None; set it to the number of "
                             "training steps (minilora's finetune does)")
        return budget_schedule(step, self.init_bgt, self.target_bgt, c.tinit, c.tfinal, c.total_step, c.deltaT)

    def update_ipt(self) -> None:
        """The importance EMAs for every entry of every P, λ, Q, from their current `.grad` (None counts as 0)."""
        c = self.config
        for name, m in self.model.lora_layers():
            for key in _KEYS:
                p = m.get_parameter(key)
                full = f"{name}.{key}"
                g = p.grad if p.grad is not None else np.zeros_like(p.data)
                if full not in self.ipt_bar:
                    self.ipt_bar[full] = self.unc_bar[full] = np.zeros(p.shape, dtype=np.float64)
                ib, ub, s = importance_update(p.data.astype(np.float64), g.astype(np.float64),
                                              self.ipt_bar[full], self.unc_bar[full], c.beta1, c.beta2)
                self.ipt_bar[full], self.unc_bar[full], self.score[full] = ib, ub, s

    def triplet_scores(self) -> dict[str, np.ndarray]:
        """{layer name: S (g*r,)} from the latest entry scores (zeros before any update)."""
        out = {}
        for name, m in self.model.lora_layers():
            s = [self.score.get(f"{name}.{k}", np.zeros(m.get_parameter(k).shape)) for k in _KEYS]
            out[name] = triplet_scores(s[0], s[1], s[2], m.r, m.slices)
        return out

    def mask_to_budget(self, budget: int) -> dict[str, list[bool]]:
        """Keep the `budget` triplets of highest S over all layers, mask the rest; returns the pattern."""
        scores = self.triplet_scores()
        names = list(scores)
        flat = np.concatenate([scores[n] for n in names])
        order = np.argsort(-flat, kind="stable")
        keep = np.zeros(flat.size, dtype=bool)
        keep[order[:max(0, min(int(budget), flat.size))]] = True
        pattern, pos = {}, 0
        for n in names:
            k = scores[n].size
            pattern[n] = keep[pos:pos + k].tolist()
            pos += k
        self.model.apply_rank_pattern(pattern)
        self.budget = int(keep.sum())
        return pattern

    def step(self, global_step: int) -> dict[str, list[bool]] | None:
        """What `AdaLoraModel.update_and_allocate` does after optimizer step `global_step` (1, 2, ...).

        t < T − tfinal: update the EMAs, then mask to b(t) if the schedule says so; t = T − tfinal: mask
        to b(T) for good and reset the EMAs; t > T − tfinal: re-apply that final pattern (λ of masked
        triplets drifted during the optimizer step). Returns the pattern set at this step, or None.
        """
        c = self.config
        budget, mask_now = self.budget_schedule(global_step)
        final = c.total_step - c.tfinal
        if global_step < final:
            self.update_ipt()
            return self.mask_to_budget(budget) if mask_now else None
        if global_step == final:
            pattern = self.mask_to_budget(budget)
            self.reset_ipt()
            return pattern
        self.model.apply_rank_pattern(self.model.peft_config.rank_pattern or self.model.rank_pattern())
        return None
