"""What every exercise module of the catalog shares: input strategies, the hint matcher, `make`.

Shape letters: N rows, V classes, C features, T time, hs head size, r rank, d_in, d_out.
"""
from __future__ import annotations

import importlib

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from ..grader import ATOL, RTOL, Exercise, Failure


def _floats(lo=-3.0, hi=3.0):
    return st.floats(lo, hi, allow_nan=False, allow_infinity=False, allow_subnormal=False)


def _arr(draw, shape, lo=-3.0, hi=3.0):
    return draw(hnp.arrays(np.float64, shape, elements=_floats(lo, hi)))


_dim = st.integers(1, 6)
_scaling = st.floats(0.125, 8.0, allow_nan=False, allow_infinity=False, allow_subnormal=False)


def _rng(seed):
    return np.random.default_rng(seed)


def _softmax(x):
    z = np.exp(x - np.max(x, axis=-1, keepdims=True))
    return z / np.sum(z, axis=-1, keepdims=True)


def _close(got, candidate) -> bool:
    """True if `got` equals `candidate` within the grader's tolerance (any error -> False)."""
    try:
        g = np.asarray(got, dtype=np.float64)
        c = np.asarray(candidate, dtype=np.float64)
        return g.shape == c.shape and bool(np.allclose(g, c, rtol=RTOL, atol=ATOL))
    except Exception:
        return False


def _differs(a, b) -> bool:
    return not _close(a, b)


def _first_hint(f: Failure, variants) -> str | None:
    """variants: iterable of (candidate_output, hint); the first candidate that the wrong output
    matches (and that differs from the right answer) gives the hint."""
    got, exp = f.got_value, f.expected_value
    if got is None:
        return None
    for candidate, hint in variants:
        try:
            c = candidate() if callable(candidate) else candidate
        except Exception:
            continue
        if c is None:
            continue
        if _close(got, c) and _differs(c, exp):
            return hint
    return None


def _ref(name):
    module = importlib.import_module(f"minilora.exercises.solutions.{name}")
    return getattr(module, name)



def make(name, summary, outputs, strategy, edge_cases, hint) -> Exercise:
    """One catalog entry: the Exercise whose reference is `solutions/<name>.py`'s function `<name>`.

    Args: name (str), summary (one line), outputs (names of the returned arrays, in order), strategy
    (a hypothesis strategy drawing the inputs as a dict), edge_cases ((label, () -> inputs dict)
    pairs), hint (Failure -> str | None). Raises ModuleNotFoundError/AttributeError for a missing
    reference solution (at import, so a catalog slip fails loudly).
    """
    return Exercise(name=name, summary=summary, reference=_ref(name), outputs=tuple(outputs),
                    strategy=strategy, edge_cases=tuple(edge_cases), hint_for_failure=hint)
