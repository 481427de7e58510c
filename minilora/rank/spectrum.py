"""Singular spectra and what they say: effective, stable and energy rank; Eckart–Young truncation."""
from __future__ import annotations

import numpy as np

from ._checks import _as_matrix, _check_int, _check_real, _same_dtype, _scaled_squares, _spectrum

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


