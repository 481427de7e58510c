"""Rank analysis of LoRA updates: singular spectra, rank measures, truncation, subspace similarity.

Everything here works on plain ndarrays with ``numpy.linalg`` only (no Tensors, no autograd), so a
lesson can point it at any matrix: a LoRA update ΔW = scaling·B·A, a frozen weight W0, a random
matrix.

Sources, cited again in each function's docstring:

* LoRA: Hu et al. 2021, arXiv:2106.09685 (v2, ICLR 2022). §4.1 Eq. 3 (ΔW = B·A, scaled by α/r);
  §7.2 Eq. 4 and Appendix G (subspace similarity φ); §7.3, Table 7 and Appendix H.4 (amplification
  factor); footnote 7 (the same analysis on B with left singular vectors).
* Effective rank: Roy & Vetterli 2007, "The effective rank: a measure of effective dimensionality",
  EUSIPCO, pp. 606-610.
* Stable rank: Rudelson & Vershynin 2007.
* Best rank-k approximation: Eckart & Young 1936, Mirsky 1960.
* The random-subspace baseline E[φ(i, j)] = max(i, j)/d: derived in `random_subspace_baseline`.

The layout of a grouped LoRA layer and ΔW = scaling·B·A come from `minilora.lora.functional`
(`lora_groups`, `lora_merge_delta`), the functions the layer's forward pass and merge use.

Shape letters: d_out, d_in (a weight is stored (d_out, d_in), as torch.nn.Linear), r (LoRA rank),
g (number of LoRA groups in a fused layer such as c_attn), k (a truncation rank), i, j (numbers of
singular directions compared by φ), d (dimension of the space the subspaces live in).

Conventions (written down once, used everywhere below):

* Singular values are returned in descending order, as numpy does.
* A "spectrum" ``s`` is a 1-D array of non-negative finite singular values. Every function that takes
  ``s`` also accepts a 2-D matrix, whose singular values it computes first.
* A spectrum that is all zeros (for example ΔW at LoRA's initialisation, where B = 0) has rank 0:
  ``effective_rank`` and ``stable_rank`` return 0.0, ``energy_rank`` returns 0, ``energy`` returns
  1.0 (no energy is missing), ``normalized_spectrum`` returns zeros.
* Ranks, k, i and j are Python or NumPy integers in 1..(the number of singular values available).
* Float32 inputs give float32 arrays back; integer inputs are computed in float64. Scalar results are
  Python floats (or ints for ranks).
* Errors: ``TypeError`` for non-numeric input (strings, objects, booleans, complex) or a non-integer
  rank; ``ValueError`` for a wrong ndim, an empty array, NaN/inf, a rank out of range or mismatched
  shapes (the message names the function and the shapes involved).

One module per idea: `layers` (a LoRA layer -> factors, ΔW), `spectrum` (singular values and rank
measures), `subspace` (φ and its baselines), `amplification`; `_checks` holds the argument checks.
"""
from __future__ import annotations

from ._checks import _as_array, _as_matrix, _spectrum  # noqa: F401  (the tests check the argument checks)
from .amplification import amplification_factor
from .layers import delta_weight, lora_factors, lora_svd
from .spectrum import (
    effective_rank,
    energy,
    energy_rank,
    lowrank_singular_values,
    normalized_spectrum,
    singular_values,
    stable_rank,
    truncate,
    truncation_error,
)
from .subspace import (
    random_subspace_baseline,
    random_subspace_baseline_grid,
    random_subspace_similarity,
    subspace_similarity,
    subspace_similarity_grid,
)

__all__ = [
    "lora_factors",
    "delta_weight",
    "lora_svd",
    "lowrank_singular_values",
    "singular_values",
    "normalized_spectrum",
    "energy",
    "energy_rank",
    "effective_rank",
    "stable_rank",
    "truncate",
    "truncation_error",
    "subspace_similarity",
    "subspace_similarity_grid",
    "random_subspace_baseline",
    "random_subspace_baseline_grid",
    "random_subspace_similarity",
    "amplification_factor",
]
