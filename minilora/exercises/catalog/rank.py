"""Strategies, edge cases and hints of the rank-analysis exercises (lesson 07): choosing a rank,
effective rank, subspace similarity.
"""
from __future__ import annotations

import numpy as np
from hypothesis import assume
from hypothesis import strategies as st

from ..grader import Failure
from ._common import _arr, _first_hint, _rng, make

# ---------------------------------------------------------------- choose_rank, effective_rank


def _spectrum(draw, n_max=10):
    n = draw(st.integers(1, n_max))
    s = np.sort(np.abs(_arr(draw, (n,), 0.0, 10.0)))[::-1].copy()
    if s[0] < 1e-3:  # keep the total energy well away from underflow
        s[0] = 1.0
    return s


@st.composite
def _choose_rank_inputs(draw):
    s = _spectrum(draw)
    threshold = draw(st.floats(0.01, 0.999, allow_nan=False))
    ratios = np.cumsum(s ** 2) / np.sum(s ** 2)
    assume(np.all(np.abs(ratios - threshold) > 1e-9))  # stay off exact ties with the threshold
    return dict(s=s, threshold=threshold)


def _choose_rank_hint(f: Failure):
    if f.kind != "value":
        return None
    s, t = f.inputs["s"], f.inputs["threshold"]
    got, exp = int(f.got_value), int(f.expected_value)
    if got == exp - 1:
        return "off by one: k counts values, so the first partial sum gives k = 1 (index + 1)."
    e1 = np.cumsum(s) / np.sum(s)
    if got == min(int(np.searchsorted(e1, t)) + 1, len(s)):
        return "energy is the squared singular value: use s**2, not s."
    if got == 0:
        return "k >= 1: did the search find nothing (e.g. threshold 1.0 and rounding)?"
    return None


@st.composite
def _effective_rank_inputs(draw):
    return dict(s=_spectrum(draw))


def _effective_rank_hint(f: Failure):
    s = f.inputs["s"]
    if f.kind == "nonfinite":
        return "nan from 0 * log(0): drop the zero singular values (0 * log 0 = 0) before the log."
    if f.kind != "value":
        return None
    p = s / s.sum()
    p = p[p > 0]
    q = s ** 2 / np.sum(s ** 2)
    q = q[q > 0]
    H = -np.sum(p * np.log(p))
    return _first_hint(f, [
        (float(np.exp(-np.sum(q * np.log(q)))), "normalise by the L1 sum of s (p_k = s_k / sum s), "
                                                 "not by the energy s**2."),
        (float(H), "the effective rank is exp of the entropy, not the entropy."),
        (float(2 ** H), "np.log is the natural log: undo it with exp, not 2**."),
        (float(np.exp(-np.sum(p * np.log2(p)))), "you took the entropy in bits (log2) but undid it with "
                                                  "exp: use the natural log with exp (or log2 with 2**)."),
        (float(np.exp(-np.sum(p * np.log10(p)))), "you took the entropy with log10 but undid it with exp: "
                                                   "use the natural log np.log with exp."),
        (float(np.exp(np.sum(p * np.log(p)))), "the entropy has a minus sign: exp(-sum p log p)."),
    ])


# ---------------------------------------------------------------- subspace_similarity


@st.composite
def _subspace_inputs(draw):
    d = draw(st.integers(2, 8))
    r1, r2 = draw(st.integers(1, min(d, 5))), draw(st.integers(1, min(d, 5)))
    rng = _rng(draw(st.integers(0, 2 ** 32 - 1)))
    A1 = rng.standard_normal((r1, d))
    if draw(st.booleans()):          # a related adapter: shares part of A1's row space
        A2 = rng.standard_normal((r2, r1)) @ A1 + 0.3 * rng.standard_normal((r2, d))
    else:
        A2 = rng.standard_normal((r2, d))
    i, j = draw(st.integers(1, r1)), draw(st.integers(1, r2))
    for A, k in ((A1, i), (A2, j)):   # the top-k subspace must be well defined
        s = np.linalg.svd(A, compute_uv=False)
        assume(s[k - 1] > 1e-6 * s[0])
        if k < len(s):
            assume(s[k - 1] - s[k] > 1e-3 * s[0])
    return dict(A1=A1, A2=A2, i=i, j=j)


def _subspace_case(kind):
    def make():
        rng = _rng(7)
        if kind == "same":
            A1 = rng.standard_normal((3, 6))
            return dict(A1=A1, A2=np.array([[2.0, 0.5, 0.0], [0.0, 1.0, 3.0], [1.0, -1.0, 1.0]]) @ A1,
                        i=3, j=3)
        if kind == "orthogonal":
            e = np.eye(6)
            return dict(A1=np.diag([3.0, 1.0]) @ e[:2], A2=np.diag([2.0, 0.5]) @ e[2:4], i=2, j=2)
        return dict(A1=rng.standard_normal((2, 7)), A2=rng.standard_normal((4, 7)), i=2, j=3)
    return make


def _subspace_hint(f: Failure):
    i = f.inputs
    A1, A2, a, b = i["A1"], i["A2"], i["i"], i["j"]
    if f.kind == "exception":
        return ("the right singular vectors are the rows of Vh (np.linalg.svd returns U, s, Vh): "
                "U1 = Vh1[:i].T has shape (d_in, i). The left ones (U) live in the r-dim space.")
    if f.kind != "value":
        return None
    U1, _, Vh1 = np.linalg.svd(A1, full_matrices=False)
    U2, _, Vh2 = np.linalg.svd(A2, full_matrices=False)
    M = Vh1[:a] @ Vh2[:b].T
    return _first_hint(f, [
        (lambda: float(np.sum((U1[:, :a].T @ U2[:, :b]) ** 2) / min(a, b)),
         "use the RIGHT singular vectors (rows of Vh), which live in the d_in space, not U."),
        (lambda: float(np.sum(M ** 2)), "divide by min(i, j)."),
        (lambda: float(np.sqrt(np.sum(M ** 2)) / min(a, b)), "the Frobenius norm is squared: "
                                                           "||M||_F**2 = sum(M**2)."),
        (lambda: float(np.sum(M ** 2) / max(a, b)), "divide by min(i, j), not max(i, j)."),
        (lambda: float(np.sum(M ** 2) / (a * b)), "divide by min(i, j), not i * j: ||M||_F**2 is at most "
                                                  "min(i, j) (M has orthonormal rows or columns), so phi "
                                                  "reaches 1 when one subspace contains the other."),
        (lambda: float(np.sum((Vh1.T[:a] @ Vh2.T[:b].T) ** 2) / min(a, b)),
         "the top-i right singular vectors are the first i ROWS of Vh (Vh[:i]), not its first columns."),
    ])



EXERCISES = (
    make("choose_rank", "smallest k whose top-k energy reaches a threshold", ["k"],
          _choose_rank_inputs(),
          [("s = [4, 3, 2, 1], threshold 0.9", lambda: dict(s=np.array([4.0, 3.0, 2.0, 1.0]),
                                                            threshold=0.9)),
           ("energy, not s: s = [3, 1, 1], threshold 0.85",
            lambda: dict(s=np.array([3.0, 1.0, 1.0]), threshold=0.85)),
           ("threshold 1.0 with zeros: s = [2, 1, 0, 0]",
            lambda: dict(s=np.array([2.0, 1.0, 0.0, 0.0]), threshold=1.0)),
           ("one value", lambda: dict(s=np.array([5.0]), threshold=0.5))],
          _choose_rank_hint),
    make("effective_rank", "Roy & Vetterli effective rank exp(entropy of s / sum s)", ["erank"],
          _effective_rank_inputs(),
          [("s = [1, 1, 1] -> 3", lambda: dict(s=np.array([1.0, 1.0, 1.0]))),
           ("rank one: s = [5, 0, 0] -> 1", lambda: dict(s=np.array([5.0, 0.0, 0.0]))),
           ("decaying with a zero: s = [3, 2, 1, 0]", lambda: dict(s=np.array([3.0, 2.0, 1.0, 0.0])))],
          _effective_rank_hint),
    make("subspace_similarity", "LoRA Sec. 7.2 phi(A1, A2, i, j) from right singular vectors",
          ["phi"], _subspace_inputs(),
          [("the same row space -> 1", _subspace_case("same")),
           ("orthogonal row spaces -> 0", _subspace_case("orthogonal")),
           ("r1 = 2, r2 = 4, d_in = 7, i = 2, j = 3", _subspace_case("random"))],
          _subspace_hint),
)
