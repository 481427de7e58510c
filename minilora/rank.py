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
"""
from __future__ import annotations

import numbers

import numpy as np

from .lora.functional import lora_groups, lora_merge_delta

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


# ----------------------------------------------------------------------------------------------
# validation helpers
# ----------------------------------------------------------------------------------------------

def _as_array(x, name: str, fn: str, ndims: tuple[int, ...]) -> np.ndarray:
    """Convert ``x`` to a finite real float ndarray with ndim in ``ndims``, or raise."""
    try:
        arr = np.asarray(x)
    except (ValueError, TypeError) as e:  # ragged nested lists and the like
        raise ValueError(f"{fn}: {name} could not be converted to an array: {e}") from None
    kind = arr.dtype.kind
    if kind not in "iuf":
        raise TypeError(
            f"{fn}: {name} must be a real numeric array (int or float), got dtype {arr.dtype}"
        )
    if kind in "iu":
        arr = arr.astype(np.float64)
    elif arr.dtype not in (np.float32, np.float64):  # float16, longdouble: not in numpy.linalg
        arr = arr.astype(np.float32 if arr.dtype.itemsize < 4 else np.float64)
    if arr.ndim not in ndims:
        want = " or ".join(f"{n}-D" for n in ndims)
        raise ValueError(f"{fn}: {name} must be {want}, got shape {arr.shape} (ndim {arr.ndim})")
    if arr.size == 0:
        raise ValueError(f"{fn}: {name} is empty (shape {arr.shape})")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{fn}: {name} contains NaN or inf values (shape {arr.shape})")
    return arr


def _as_matrix(x, name: str, fn: str) -> np.ndarray:
    return _as_array(x, name, fn, (2,))


def _spectrum(s, fn: str, name: str = "s") -> np.ndarray:
    """A 1-D spectrum (validated, sorted descending) or the singular values of a 2-D matrix."""
    arr = _as_array(s, name, fn, (1, 2))
    if arr.ndim == 2:
        return np.linalg.svd(arr, compute_uv=False)
    if np.any(arr < 0):
        raise ValueError(
            f"{fn}: singular values must be non-negative, got min {arr.min()} (shape {arr.shape})"
        )
    return np.sort(arr)[::-1]


def _check_int(k, name: str, fn: str, lo: int, hi: int, what: str = "") -> int:
    if isinstance(k, bool) or not isinstance(k, numbers.Integral):
        raise TypeError(f"{fn}: {name} must be an integer, got {type(k).__name__} {k!r}")
    k = int(k)
    if not lo <= k <= hi:
        raise ValueError(f"{fn}: {name}={k} is out of range [{lo}, {hi}]{what}")
    return k


def _check_real(x, name: str, fn: str) -> float:
    if isinstance(x, bool) or not isinstance(x, numbers.Real):
        raise TypeError(f"{fn}: {name} must be a real number, got {type(x).__name__} {x!r}")
    x = float(x)
    if not np.isfinite(x):
        raise ValueError(f"{fn}: {name} must be finite, got {x}")
    return x


def _same_dtype(a: np.ndarray, b: np.ndarray, fn: str, na: str, nb: str) -> None:
    if a.dtype != b.dtype:
        raise TypeError(
            f"{fn}: {na} and {nb} must have the same dtype (no silent upcast), got "
            f"{na} {a.dtype} {a.shape} and {nb} {b.dtype} {b.shape}"
        )


def _scaled_squares(s: np.ndarray) -> np.ndarray:
    """(s / s_max)**2: squares without overflow for huge s. Needs s_max > 0."""
    return (s / s[0]) ** 2


# ----------------------------------------------------------------------------------------------
# LoRA layers -> factors and ΔW
# ----------------------------------------------------------------------------------------------

def _data(obj, path: str, fn: str):
    cur = obj
    for attr in path.split("."):
        if not hasattr(cur, attr):
            raise TypeError(
                f"{fn}: expected a LoRA layer with .lora_A.weight.data, .lora_B.weight.data, "
                f".scaling, .r, .slices and .base.weight.data; {type(obj).__name__} has no "
                f"'{path}'"
            )
        cur = getattr(cur, attr)
    return cur


def lora_factors(layer) -> list[tuple[slice, np.ndarray, np.ndarray, float]]:
    """Split a LoRA layer into its groups: ``[(rows, A_i, B_i, scaling), ...]``.

    Duck-typed: ``layer`` needs ``.lora_A.weight.data`` (g*r, d_in), ``.lora_B.weight.data``
    (sum of the slice widths, r), ``.scaling`` (float), ``.r`` (int), ``.slices`` (a list of g
    ``(start, stop)`` output-row ranges; ``None`` is read as ``[(0, d_out)]``) and
    ``.base.weight.data`` (d_out, d_in). Group i uses A rows ``[i*r:(i+1)*r]`` and B rows
    ``[offset_i : offset_i + (stop_i - start_i)]`` where offset_i is the sum of the earlier widths
    (the grouped LoRA of a fused q,k,v projection, as loralib's ``MergedLinear``).

    Returns: a list of g tuples ``(slice(start, stop), A_i (r, d_in), B_i (stop-start, r),
    scaling)``; A_i and B_i are views of the layer's arrays (do not write to them), in their dtype;
    for an AdaLoRA layer (a ``.lora_E.weight`` (g*r, 1) of singular values λ) A_i is diag(λ_i) Q_i, a copy.
    The update of group i is ``scaling * B_i @ A_i`` placed in rows ``start:stop`` of ΔW
    (LoRA §4.1, Eq. 3).

    Raises: TypeError if an attribute is missing or an array is not numeric; ValueError if the
    shapes do not fit together (the message names them) or a slice is outside 0..d_out.
    """
    A, B, scaling, r, slices, _ = _layer_arrays(layer, "lora_factors")
    return [(rows, A[a_rows], B[b_rows], scaling)               # A_i (r, d_in), B_i (w, r)
            for _, a_rows, b_rows, rows in lora_groups(slices, r)]


def _layer_arrays(layer, fn: str):
    """(A (g*r, d_in), B (W, r) in one float dtype, scaling, r, slices, d_out), checked as documented
    in :func:`lora_factors`."""
    variant = getattr(layer, "variant", None)
    if not getattr(variant, "delta_is_BA", True):       # DoRA, PiSSA/OLoRA: ΔW is not s·B·A of the factors
        raise ValueError(f"{fn}: the layer's LoRA variant is {variant.name!r}, whose ΔW is not s·B·A of its "
                         "factors; take layer.delta_weight() (its ΔW relative to W0) and rank.singular_values of it")
    A = _as_matrix(_data(layer, "lora_A.weight.data", fn), "lora_A.weight", fn)  # (g*r, d_in)
    B = _as_matrix(_data(layer, "lora_B.weight.data", fn), "lora_B.weight", fn)  # (sum w, r)
    W0 = np.asarray(_data(layer, "base.weight.data", fn))  # (d_out, d_in)
    scaling = _check_real(_data(layer, "scaling", fn), "layer.scaling", fn)
    r = _data(layer, "r", fn)
    if isinstance(r, bool) or not isinstance(r, numbers.Integral) or r < 1:
        raise ValueError(f"{fn}: layer.r must be a positive integer, got {r!r}")
    r = int(r)
    if W0.ndim != 2:
        raise ValueError(f"{fn}: base.weight must be 2-D (d_out, d_in), got shape {W0.shape}")
    d_out, d_in = W0.shape
    slices = getattr(layer, "slices", None)
    slices = [(0, d_out)] if slices is None else [(int(a), int(b)) for a, b in slices]
    g = len(slices)
    if A.shape != (g * r, d_in):
        raise ValueError(
            f"{fn}: lora_A.weight has shape {A.shape}, expected (g*r, d_in) = ({g}*{r}, {d_in}) "
            f"for {g} group(s), r={r} and base.weight {W0.shape}"
        )
    for a, b in slices:
        if not 0 <= a < b <= d_out:
            raise ValueError(f"{fn}: slice ({a}, {b}) is not inside the {d_out} output rows")
    width = sum(b - a for a, b in slices)
    if B.shape != (width, r):
        raise ValueError(
            f"{fn}: lora_B.weight has shape {B.shape}, expected (sum of slice widths, r) = "
            f"({width}, {r}) for slices {slices}"
        )
    E = getattr(getattr(layer, "lora_E", None), "weight", None)
    if E is not None:  # AdaLoRA (lora/adalora.py): ΔW = s · P diag(λ) Q, so Λ folds into Q's rows
        A = A * _as_matrix(E.data, "lora_E.weight", fn).reshape(-1, 1)
    dtype = np.result_type(A, B)
    return A.astype(dtype, copy=False), B.astype(dtype, copy=False), scaling, r, slices, d_out


def delta_weight(layer) -> np.ndarray:
    """The effective update ΔW = scaling · B_i @ A_i of a LoRA layer, each group in its rows.

    Args: ``layer``, duck-typed as in :func:`lora_factors`.
    Returns: ndarray (d_out, d_in) in the dtype of the LoRA weights; rows not covered by any slice
    are zero. Adding it to W0 is the merge of LoRA §4.1 (W = W0 + ΔW).
    Raises: as :func:`lora_factors`.
    """
    A, B, scaling, _, slices, d_out = _layer_arrays(layer, "delta_weight")
    return lora_merge_delta(A, B, scaling, slices, d_out)       # (d_out, d_in)


def lora_svd(layer) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Thin SVD of a LoRA layer's ΔW from its factors, without forming ΔW.

    A grouped layer is one low-rank product: ΔW = scaling · B_big @ A with A (g*r, d_in) as stored
    and B_big (d_out, g*r) holding B_i in rows ``start_i:stop_i`` and columns ``i*r:(i+1)*r``.

    Returns: ``(U (d_out, k), S (k,), Vh (k, d_in))`` with k = min(g*r, d_out, d_in), as
    :func:`lowrank_singular_values`. Raises: as :func:`lora_factors`.
    """
    A, B, scaling, r, slices, d_out = _layer_arrays(layer, "lora_svd")
    B_big = np.zeros((d_out, A.shape[0]), dtype=A.dtype)                     # (d_out, g*r)
    for _, a_rows, b_rows, rows in lora_groups(slices, r):
        B_big[rows, a_rows] = B[b_rows]                                       # (w, r)
    return lowrank_singular_values(B_big, A, scaling=scaling)


# ----------------------------------------------------------------------------------------------
# spectra
# ----------------------------------------------------------------------------------------------

def lowrank_singular_values(B, A, scaling=1.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Thin SVD of ``scaling * B @ A`` from the factors, never forming the (d_out, d_in) product.

    Method: B = Q_B R_B (QR of B, d_out x r) and A.T = Q_A R_A (QR of A.T, d_in x r), so
    B @ A = Q_B (R_B R_A^T) Q_A^T. The SVD of the small core R_B R_A^T = U_c S V_c^T gives
    U = Q_B U_c and Vh = V_c^T Q_A^T. Cost O((d_in + d_out) r^2 + r^3) instead of the dense
    O(d_out d_in min(d_out, d_in)). A negative ``scaling`` flips the sign of U.

    Args: ``B`` (d_out, r), ``A`` (r, d_in), same float dtype (ints are computed in float64);
    ``scaling`` a finite real (LoRA's α/r, §4.1).
    Returns: ``(U (d_out, k), S (k,), Vh (k, d_in))`` with k = min(r, d_out, d_in) (k = r in the
    usual case r <= min(d_out, d_in)); S descending, non-negative; U, Vh with orthonormal
    columns/rows. Directions with S = 0 are arbitrary orthonormal completions.
    Raises: TypeError (non-numeric, dtypes differ, non-real scaling); ValueError (not 2-D, NaN/inf,
    inner dimensions differ: the message names both shapes).
    """
    fn = "lowrank_singular_values"
    B = _as_matrix(B, "B", fn)
    A = _as_matrix(A, "A", fn)
    _same_dtype(B, A, fn, "B", "A")
    s = _check_real(scaling, "scaling", fn)
    if B.shape[1] != A.shape[0]:
        raise ValueError(
            f"{fn}: B (d_out, r) and A (r, d_in) must share r, got B {B.shape} and A {A.shape}"
        )
    Q_B, R_B = np.linalg.qr(B)            # (d_out, k1), (k1, r)
    Q_A, R_A = np.linalg.qr(A.T)          # (d_in, k2), (k2, r)
    core = R_B @ R_A.T                    # (k1, k2)
    U_c, S, Vh_c = np.linalg.svd(core, full_matrices=False)  # (k1, k), (k,), (k, k2)
    U = Q_B @ U_c                          # (d_out, k)
    Vh = Vh_c @ Q_A.T                      # (k, d_in)
    S = S * abs(s)
    if s < 0:
        U = -U
    return U, S.astype(B.dtype, copy=False), Vh


def singular_values(M) -> np.ndarray:
    """Singular values of a matrix, descending.

    Args: ``M`` (m, n), real numeric. Returns: ndarray (min(m, n),), float32 for float32 input,
    else float64. Raises: TypeError (non-numeric); ValueError (not 2-D, empty, NaN/inf).
    Source: the SVD M = U Σ V^T (used throughout LoRA §7).
    """
    M = _as_matrix(M, "M", "singular_values")
    return np.linalg.svd(M, compute_uv=False)


def normalized_spectrum(s) -> np.ndarray:
    """p = s / Σ s, the L1-normalised spectrum (the distribution behind the effective rank).

    Args: ``s`` (n,) non-negative singular values, or a 2-D matrix (its singular values are used).
    Returns: ndarray (n,), descending, summing to 1; all zeros for an all-zero spectrum.
    Raises: TypeError / ValueError as the module conventions (negative values are a ValueError).
    Source: Roy & Vetterli 2007, Eq. (1).
    """
    s = _spectrum(s, "normalized_spectrum")
    total = s.sum()
    if total == 0:
        return np.zeros_like(s)
    return s / total


def energy(s, k) -> float:
    """Fraction of the energy Σ σ_i² held by the top k singular values: Σ_{i<=k} σ_i² / Σ_i σ_i².

    Equals ||M_k||_F² / ||M||_F² for the best rank-k approximation M_k (Eckart-Young).
    Args: ``s`` (n,) spectrum or 2-D matrix; ``k`` int in 1..n.
    Returns: float in [0, 1]; 1.0 for an all-zero spectrum (nothing is missing).
    Raises: TypeError (k not an integer, non-numeric s); ValueError (k out of range, bad s).
    """
    fn = "energy"
    s = _spectrum(s, fn)
    k = _check_int(k, "k", fn, 1, s.size, f" (the spectrum has {s.size} values)")
    if s[0] == 0:
        return 1.0
    sq = _scaled_squares(s)
    return float(min(1.0, sq[:k].sum() / sq.sum()))


def energy_rank(s, threshold=0.9) -> int:
    """Smallest k whose top-k singular values hold at least ``threshold`` of the energy Σ σ_i².

    Args: ``s`` (n,) spectrum or 2-D matrix; ``threshold`` real in (0, 1].
    Returns: int in 1..n (0 for an all-zero spectrum). Non-decreasing in ``threshold``; with
    threshold 1 it is the number of non-zero singular values.
    Raises: TypeError (non-numeric); ValueError (threshold outside (0, 1], bad s).
    Source: a convenience measure, the "explained variance" cut-off of PCA (Jolliffe 2002, §6.1.1)
    applied to singular values; not from the LoRA paper.
    """
    fn = "energy_rank"
    s = _spectrum(s, fn)
    t = _check_real(threshold, "threshold", fn)
    if not 0 < t <= 1:
        raise ValueError(f"{fn}: threshold must be in (0, 1], got {t}")
    if s[0] == 0:
        return 0
    cum = np.cumsum(_scaled_squares(s))
    frac = cum / cum[-1]
    frac[-1] = 1.0  # exact, so threshold=1 is always reachable despite rounding
    return int(np.argmax(frac >= t)) + 1


def effective_rank(s) -> float:
    """Effective rank erank = exp(H(p)), H(p) = -Σ p_k ln p_k, p = s / Σ s, with 0·ln 0 = 0.

    Properties: 1 <= erank <= rank; k equal non-zero singular values give exactly k (up to
    rounding); a rank-1 matrix gives 1.
    Args: ``s`` (n,) spectrum or 2-D matrix.
    Returns: float; 0.0 for an all-zero spectrum (chosen so that erank = rank = 0 for the zero
    matrix, e.g. ΔW at LoRA's B = 0 initialisation, rather than raising).
    Raises: TypeError / ValueError as the module conventions.
    Source: Roy & Vetterli 2007, EUSIPCO, pp. 606-610, Definition 1.
    """
    s = _spectrum(s, "effective_rank")
    total = s.sum()
    if total == 0:
        return 0.0
    p = s[s > 0] / total
    return float(np.exp(-np.sum(p * np.log(p))))


def stable_rank(s) -> float:
    """Stable rank srank = ||M||_F² / ||M||_2² = Σ σ_k² / σ_1².

    Args: ``s`` (n,) spectrum or 2-D matrix.
    Returns: float in [1, rank] (exactly n for n equal values); 0.0 for an all-zero spectrum.
    Raises: TypeError / ValueError as the module conventions.
    Source: Rudelson & Vershynin 2007 (numerical / stable rank).
    """
    s = _spectrum(s, "stable_rank")
    if s[0] == 0:
        return 0.0
    return float(_scaled_squares(s).sum())


def truncate(M, k) -> np.ndarray:
    """Best rank-k approximation M_k = U_k Σ_k V_k^T (Eckart-Young-Mirsky).

    M_k minimises ||M - X|| over rank(X) <= k in both the Frobenius and the spectral norm, with
    ||M - M_k||_F = sqrt(Σ_{i>k} σ_i²) (:func:`truncation_error`) and ||M - M_k||_2 = σ_{k+1}.
    Args: ``M`` (m, n); ``k`` int in 1..min(m, n) (k = min(m, n) returns M up to rounding).
    Returns: ndarray (m, n), dtype of M (float64 for ints).
    Raises: TypeError (k not an integer, non-numeric M); ValueError (not 2-D, NaN/inf, k out of
    range). Source: Eckart & Young 1936; Mirsky 1960.
    """
    fn = "truncate"
    M = _as_matrix(M, "M", fn)
    k = _check_int(k, "k", fn, 1, min(M.shape), f" for M of shape {M.shape}")
    U, S, Vh = np.linalg.svd(M, full_matrices=False)   # (m, q), (q,), (q, n)
    return (U[:, :k] * S[:k]) @ Vh[:k]                  # (m, k) @ (k, n)


def truncation_error(s, k) -> float:
    """Frobenius error of the best rank-k approximation: sqrt(Σ_{i>k} σ_i²) (Eckart-Young).

    Args: ``s`` (n,) spectrum or 2-D matrix; ``k`` int in 1..n (k = n gives 0.0).
    Returns: float >= 0. Raises: TypeError (k not an integer); ValueError (k out of range, bad s).
    Source: Eckart & Young 1936; Mirsky 1960.
    """
    fn = "truncation_error"
    s = _spectrum(s, fn)
    k = _check_int(k, "k", fn, 1, s.size, f" (the spectrum has {s.size} values)")
    tail = s[k:]
    if tail.size == 0 or tail[0] == 0:
        return 0.0
    return float(tail[0] * np.sqrt(np.sum((tail / tail[0]) ** 2)))


# ----------------------------------------------------------------------------------------------
# subspace similarity (LoRA §7.2)
# ----------------------------------------------------------------------------------------------

def _subspace_bases(A1, A2, side: str, fn: str) -> tuple[np.ndarray, np.ndarray]:
    """Orthonormal singular-vector bases (as columns, best first) of A1 and A2 on ``side``."""
    if side not in ("right", "left"):
        raise ValueError(f"{fn}: side must be 'right' or 'left', got {side!r}")
    A1 = _as_matrix(A1, "A1", fn)
    A2 = _as_matrix(A2, "A2", fn)
    axis = 1 if side == "right" else 0
    if A1.shape[axis] != A2.shape[axis]:
        what = "columns (d_in)" if side == "right" else "rows (d_out)"
        raise ValueError(
            f"{fn}: with side={side!r}, A1 and A2 must have the same number of {what}, got "
            f"A1 {A1.shape} and A2 {A2.shape}"
        )
    bases = []
    for name, M in (("A1", A1), ("A2", A2)):
        if not np.any(M):
            raise ValueError(
                f"{fn}: {name} {M.shape} is all zeros, its singular vectors are undefined (a LoRA "
                f"B is zero at initialisation: analyse A, or B after training)"
            )
        U, _, Vh = np.linalg.svd(M.astype(np.float64, copy=False), full_matrices=False)
        bases.append(Vh.T if side == "right" else U)    # (d, min(M.shape))
    return bases[0], bases[1]


def subspace_similarity(A1, A2, i, j, side="right") -> float:
    """Normalised subspace similarity φ(A1, A2, i, j) = ||U1^T U2||_F² / min(i, j) (LoRA Eq. 4).

    U1 holds the top-i singular vectors of A1 and U2 the top-j of A2, as columns. With
    ``side="right"`` (the default, LoRA §7.2: A is (r, d_in), the "right-singular unitary matrices")
    they are the rows of Vh, i.e. directions in the d_in input space; ``side="left"`` uses the
    columns of U, directions in the d_out space, for analysing B (d_out, r) (LoRA footnote 7).
    φ = 1 when one span contains the other, 0 when they are orthogonal; two independent uniformly
    random subspaces give max(i, j)/d on average (:func:`random_subspace_baseline`).
    Equivalently φ = 1 - d_proj²/min(i, j) with the projection metric of Ham & Lee 2008 (App. G).

    Args: ``A1`` (r1, d) and ``A2`` (r2, d) for side="right" ((d, r1) and (d, r2) for "left"),
    real numeric; ``i`` int in 1..min(A1.shape), ``j`` int in 1..min(A2.shape).
    Returns: float in [0, 1] (up to ~1e-15 rounding); computed in float64.
    Singular directions whose singular value is zero are arbitrary: for a rank-deficient matrix
    keep i, j <= its rank.
    Raises: TypeError (non-numeric input, non-integer i/j); ValueError (not 2-D, NaN/inf, all-zero
    matrix, different d: the message names both shapes; i or j out of range; bad side).
    """
    fn = "subspace_similarity"
    U1, U2 = _subspace_bases(A1, A2, side, fn)
    i = _check_int(i, "i", fn, 1, U1.shape[1], f" (A1 has {U1.shape[1]} singular directions)")
    j = _check_int(j, "j", fn, 1, U2.shape[1], f" (A2 has {U2.shape[1]} singular directions)")
    C = U1[:, :i].T @ U2[:, :j]            # (i, j)
    return float(np.sum(C * C) / min(i, j))


def subspace_similarity_grid(A1, A2, max_i=None, max_j=None, side="right") -> np.ndarray:
    """All φ(A1, A2, i, j) for i = 1..max_i, j = 1..max_j from one SVD each (LoRA Fig. 3).

    With C = U1^T U2 (max_i, max_j), ||U1[:, :i]^T U2[:, :j]||_F² is a 2-D prefix sum of C², so the
    whole grid costs one SVD per matrix and one cumulative sum.
    Args: as :func:`subspace_similarity`; ``max_i`` in 1..min(A1.shape) (default: all),
    ``max_j`` in 1..min(A2.shape) (default: all).
    Returns: ndarray float64 (max_i, max_j); entry [i-1, j-1] is φ(A1, A2, i, j).
    Raises: as :func:`subspace_similarity`.
    """
    fn = "subspace_similarity_grid"
    U1, U2 = _subspace_bases(A1, A2, side, fn)
    n1, n2 = U1.shape[1], U2.shape[1]
    max_i = n1 if max_i is None else _check_int(max_i, "max_i", fn, 1, n1,
                                                 f" (A1 has {n1} singular directions)")
    max_j = n2 if max_j is None else _check_int(max_j, "max_j", fn, 1, n2,
                                                 f" (A2 has {n2} singular directions)")
    C = U1[:, :max_i].T @ U2[:, :max_j]                     # (max_i, max_j)
    sq = np.cumsum(np.cumsum(C * C, axis=0), axis=1)        # (max_i, max_j) prefix sums
    ii = np.arange(1, max_i + 1)[:, None]                   # (max_i, 1)
    jj = np.arange(1, max_j + 1)[None, :]                   # (1, max_j)
    return sq / np.minimum(ii, jj)


def random_subspace_baseline(i, j, d) -> float:
    """Expected φ between independent uniformly random i- and j-dim subspaces of R^d: max(i, j)/d.

    Derivation: E||U1^T U2||_F² = i·j/d for Haar-random orthonormal U1 (d, i), U2 (d, j); dividing
    by min(i, j) gives max(i, j)/d. Why i·j/d: fix U1; by rotation invariance each column u of U2
    is a uniformly random unit vector, and E[(u1ᵀu)²] = 1/d for any fixed unit u1 (the d squared
    coordinates of u have equal means summing to 1); ||U1ᵀU2||_F² sums i·j such terms. Checked by
    Monte Carlo in `random_subspace_similarity` and the tests (also in docs/formulas.md). Compare
    φ from LoRA §7.2 (eq. 4) against it: with d = r, φ(·, r) = 1 trivially.
    Args: ``d`` int >= 1; ``i``, ``j`` ints in 1..d. Returns: float in (0, 1].
    Raises: TypeError (non-integers); ValueError (out of range).
    """
    fn = "random_subspace_baseline"
    d = _check_int(d, "d", fn, 1, np.iinfo(np.int64).max)
    i = _check_int(i, "i", fn, 1, d, f" (d={d})")
    j = _check_int(j, "j", fn, 1, d, f" (d={d})")
    return max(i, j) / d


def random_subspace_baseline_grid(max_i, max_j, d) -> np.ndarray:
    """The grid of :func:`random_subspace_baseline` matching :func:`subspace_similarity_grid`.

    Returns: ndarray float64 (max_i, max_j), entry [i-1, j-1] = max(i, j)/d.
    Raises: as :func:`random_subspace_baseline` (max_i, max_j in 1..d).
    """
    fn = "random_subspace_baseline_grid"
    d = _check_int(d, "d", fn, 1, np.iinfo(np.int64).max)
    max_i = _check_int(max_i, "max_i", fn, 1, d, f" (d={d})")
    max_j = _check_int(max_j, "max_j", fn, 1, d, f" (d={d})")
    ii = np.arange(1, max_i + 1)[:, None]
    jj = np.arange(1, max_j + 1)[None, :]
    return np.maximum(ii, jj) / d


def _random_orthonormal(rng: np.random.Generator, d: int, k: int) -> np.ndarray:
    """Haar-random orthonormal (d, k): QR of a Gaussian matrix (the span is uniformly random)."""
    Q, _ = np.linalg.qr(rng.standard_normal((d, k)))
    return Q


def random_subspace_similarity(i, j, d, n_trials=200, seed=0) -> float:
    """Monte Carlo mean of φ between independent random i- and j-dim subspaces of R^d.

    Checks :func:`random_subspace_baseline` (the estimate converges to max(i, j)/d).
    Args: ``i``, ``j`` ints in 1..d; ``d`` int >= 1; ``n_trials`` int >= 1; ``seed`` for
    ``numpy.random.default_rng``. Returns: float, the mean over the trials.
    Raises: TypeError (non-integers); ValueError (out of range).
    """
    fn = "random_subspace_similarity"
    d = _check_int(d, "d", fn, 1, np.iinfo(np.int64).max)
    i = _check_int(i, "i", fn, 1, d, f" (d={d})")
    j = _check_int(j, "j", fn, 1, d, f" (d={d})")
    n_trials = _check_int(n_trials, "n_trials", fn, 1, np.iinfo(np.int64).max)
    rng = np.random.default_rng(seed)
    total = 0.0
    for _ in range(n_trials):
        C = _random_orthonormal(rng, d, i).T @ _random_orthonormal(rng, d, j)   # (i, j)
        total += np.sum(C * C) / min(i, j)
    return float(total / n_trials)


# ----------------------------------------------------------------------------------------------
# amplification factor (LoRA §7.3)
# ----------------------------------------------------------------------------------------------

def amplification_factor(delta_w, w, r, seed=0) -> dict[str, float]:
    """How much ΔW amplifies directions of W: ||ΔW||_F / ||U^T W V||_F (LoRA §7.3, Table 7).

    U (d_out, r) and Vh (r, d_in) are the top-r singular vectors of ΔW; proj = U^T W Vh^T (r, r)
    is W projected onto ΔW's subspaces. A large factor means ΔW points along directions that W
    barely uses (the paper: about 21.5 for r = 4, about 2 for r = 64, GPT-3 layer 48).
    Baselines (Table 7's other columns): the same projection onto W's own top-r singular
    subspaces (= sqrt of the sum of W's top r σ²) and onto a random orthonormal pair (seeded).

    Args: ``delta_w`` (d_out, d_in), use the effective update scaling·B·A (:func:`delta_weight`);
    ``w`` (d_out, d_in), the frozen weight; ``r`` int in 1..min(d_out, d_in), usually the LoRA
    rank; ``seed`` for the random baseline.
    Returns: dict of Python floats: ``amplification`` (inf if proj_norm is 0), ``delta_norm``
    ||ΔW||_F, ``proj_norm`` ||U^T W Vh^T||_F, ``proj_norm_top_w``, ``proj_norm_random``,
    ``w_norm`` ||W||_F. Computed in float64.
    Raises: TypeError (non-numeric, non-integer r); ValueError (not 2-D, NaN/inf, shapes differ:
    both named; r out of range; delta_w all zeros, whose singular vectors are undefined).
    """
    fn = "amplification_factor"
    dW = _as_matrix(delta_w, "delta_w", fn).astype(np.float64, copy=False)
    W = _as_matrix(w, "w", fn).astype(np.float64, copy=False)
    if dW.shape != W.shape:
        raise ValueError(
            f"{fn}: delta_w and w must have the same shape (d_out, d_in), got delta_w {dW.shape} "
            f"and w {W.shape}"
        )
    r = _check_int(r, "r", fn, 1, min(W.shape), f" for matrices of shape {W.shape}")
    if not np.any(dW):
        raise ValueError(f"{fn}: delta_w {dW.shape} is all zeros (LoRA at init, B = 0?)")
    U, _, Vh = np.linalg.svd(dW, full_matrices=False)
    proj = U[:, :r].T @ W @ Vh[:r].T                          # (r, d_out)(d_out, d_in)(d_in, r)
    Uw, Sw, Vhw = np.linalg.svd(W, full_matrices=False)
    proj_top = Uw[:, :r].T @ W @ Vhw[:r].T                    # (r, r), = diag(Sw[:r])
    rng = np.random.default_rng(seed)
    Q1 = _random_orthonormal(rng, W.shape[0], r)              # (d_out, r)
    Q2 = _random_orthonormal(rng, W.shape[1], r)              # (d_in, r)
    proj_rand = Q1.T @ W @ Q2                                 # (r, r)
    delta_norm = float(np.linalg.norm(dW))
    proj_norm = float(np.linalg.norm(proj))
    return {
        "amplification": delta_norm / proj_norm if proj_norm > 0 else float("inf"),
        "delta_norm": delta_norm,
        "proj_norm": proj_norm,
        "proj_norm_top_w": float(np.linalg.norm(proj_top)),
        "proj_norm_random": float(np.linalg.norm(proj_rand)),
        "w_norm": float(np.linalg.norm(W)),
    }
