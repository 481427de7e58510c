"""Strategies, edge cases and hints of the exercises of lesson 11 (VeRA and many adapters):
VeRA's parameter count and the mixed-adapter batch.
"""
from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

from ..grader import Failure
from ._common import _arr, _dim, _first_hint, _rng, make

# ---------------------------------------------------------------- vera_param_count


@st.composite
def _vera_count_inputs(draw):
    return dict(d_in=draw(st.integers(1, 20000)), d_out=draw(st.integers(1, 20000)),
                r=draw(st.integers(1, 1024)), n_matrices=draw(st.integers(1, 400)))


def _vc(d_in, d_out, r, n):
    return lambda: dict(d_in=d_in, d_out=d_out, r=r, n_matrices=n)


def _vera_count_hint(f: Failure):
    if f.kind != "value":
        return None
    i = f.inputs
    d_in, d_out, r, n = i["d_in"], i["d_out"], i["r"], i["n_matrices"]
    return _first_hint(f, [
        (n * r * (d_in + d_out), "that is LoRA's count (A and B train there); in VeRA A and B are frozen "
                                 "random matrices: only d (r) and b (d_out) train."),
        (n * (r + d_out) + r * (d_in + d_out), "the shared A and B are frozen: they do not count, even once."),
        (n * (r + d_out) + n * r * (d_in + d_out), "A and B are frozen: count only d (r) and b (d_out)."),
        (n * (r + d_in), "b scales the OUTPUT rows of B (d_out, r): it has d_out entries, not d_in."),
        (n * (d_in + d_out), "d has r entries (one per random direction), not d_in."),
        (r + d_out, "you counted one matrix: multiply by n_matrices (every layer has its own d and b)."),
        (n * r, "you counted only d (r): add b (d_out)."),
        (n * d_out, "you counted only b (d_out): add d (r)."),
    ])


# ---------------------------------------------------------------- mixed_batch_forward


@st.composite
def _mixed_inputs(draw):
    N, d_in, d_out, r, K = draw(st.integers(1, 6)), draw(_dim), draw(_dim), draw(st.integers(1, 3)), \
        draw(st.integers(1, 3))
    ids = np.array(draw(st.lists(st.integers(-1, K - 1), min_size=N, max_size=N)), dtype=np.int64)
    return dict(x=_arr(draw, (N, d_in)), W0=_arr(draw, (d_out, d_in)), A=_arr(draw, (K, r, d_in)),
                B=_arr(draw, (K, d_out, r)), scaling=_arr(draw, (K,), 0.125, 4.0), adapter_ids=ids)


def _mixed_case(seed, N, d_in, d_out, r, K, ids):
    def make_inputs():
        rng = _rng(seed)
        return dict(x=rng.standard_normal((N, d_in)), W0=rng.standard_normal((d_out, d_in)),
                    A=rng.standard_normal((K, r, d_in)), B=rng.standard_normal((K, d_out, r)),
                    scaling=rng.uniform(0.5, 3.0, K), adapter_ids=np.array(ids, dtype=np.int64))
    return make_inputs


def _mixed_hint(f: Failure):
    i = f.inputs
    x, W0, A, B, s, ids = (i[k] for k in ("x", "W0", "A", "B", "scaling", "adapter_ids"))
    if f.kind == "exception":
        return ("shapes: x[rows] is (n, d_in), A[k] is (r, d_in) and B[k] is (d_out, r), so "
                "(x[rows] @ A[k].T) @ B[k].T is (n, d_out); gather rows with np.flatnonzero(adapter_ids == k).")
    if f.kind not in ("value", "shape"):
        return None
    base = x @ W0.T

    def per_row(scale=True, minus_one_is_last=False, only=None):
        y = base.copy()
        for n, k in enumerate(ids):
            if k < 0 and not minus_one_is_last:
                continue
            k = only if only is not None else k
            y[n] += (s[k] if scale else 1.0) * (B[k] @ (A[k] @ x[n]))
        return y

    every = base + sum(s[k] * (x @ A[k].T) @ B[k].T for k in range(A.shape[0]))
    return _first_hint(f, [
        (lambda: per_row(minus_one_is_last=True), "rows with adapter_ids == -1 got the LAST adapter: A[-1] "
                                                 "indexes from the end in NumPy. -1 means the base model only."),
        (lambda: per_row(scale=False), "did you forget each adapter's scaling[k]?"),
        (lambda: per_row(only=0), "every row used adapter 0: gather each adapter's own rows."),
        (every, "you added every adapter to every row; each row takes only its own adapter."),
        (lambda: per_row() - base, "you left out the shared base term x @ W0.T."),
        (base, "you left out the adapters' terms."),
    ])


EXERCISES = (
    make("vera_param_count", "trainable parameters of VeRA at rank r on n matrices (d_out, d_in)",
         ["count"], _vera_count_inputs(),
         [("12 matrices 768 -> 2304, r = 256 (VeRA wants a large r)", _vc(768, 2304, 256, 12)),
          ("non-square the other way: d_in 3072, d_out 768, r = 1024, 4 matrices", _vc(3072, 768, 1024, 4)),
          ("one matrix, r = 1", _vc(10, 3, 1, 1))],
         _vera_count_hint),
    make("mixed_batch_forward", "one batch, one LoRA adapter per row (-1: the base); base GEMM once",
         ["y"], _mixed_inputs(),
         [("rows 0,1 adapter 1, row 2 base (-1), row 3 adapter 0", _mixed_case(30, 4, 5, 3, 2, 2, [1, 1, -1, 0])),
          ("every row the base (-1)", _mixed_case(31, 3, 4, 4, 2, 2, [-1, -1, -1])),
          ("three adapters, scaling != 1, non-square W0 (6, 3)", _mixed_case(32, 5, 3, 6, 1, 3, [2, 0, 1, -1, 2]))],
         _mixed_hint),
)
