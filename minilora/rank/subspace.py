"""Subspace similarity φ between two adapters' top singular directions (LoRA §7.2) and its random baseline."""
from __future__ import annotations

import numpy as np

from ._checks import _as_matrix, _check_int

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


