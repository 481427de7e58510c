"""Strategies, edge cases and hints of the LoRA-family exercises (lesson 10): DoRA's backward with the
norm held constant, PiSSA's start, LoRA+'s learning rates.
"""
from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

from ..grader import Failure
from ._common import _arr, _dim, _first_hint, _rng, _scaling, make

# ---------------------------------------------------------------- dora_backward


@st.composite
def _dora_inputs(draw):
    N, d_in, d_out, r = draw(_dim), draw(_dim), draw(_dim), draw(st.integers(1, 4))
    m = np.abs(_arr(draw, (d_out,), 0.25, 3.0)) + 0.25
    W0 = _arr(draw, (d_out, d_in))
    W0[:, 0] += 2.0                       # no zero rows: the norm of V stays away from 0
    return dict(x=_arr(draw, (N, d_in)), W0=W0, A=_arr(draw, (r, d_in), -1, 1), B=_arr(draw, (d_out, r), -0.3, 0.3),
                m=m, scaling=draw(_scaling), g=_arr(draw, (N, d_out)))


def _dora_case(seed, N, d_in, d_out, r, scaling):
    def make_inputs():
        rng = _rng(seed)
        return dict(x=rng.standard_normal((N, d_in)), W0=rng.standard_normal((d_out, d_in)),
                    A=rng.standard_normal((r, d_in)), B=rng.standard_normal((d_out, r)),
                    m=rng.uniform(0.5, 2.0, d_out), scaling=scaling, g=rng.standard_normal((N, d_out)))
    return make_inputs


def _dora_hint(f: Failure):
    if f.kind == "exception":
        return ("check the shapes: V = W0 + scaling * B @ A is (d_out, d_in), its row norms n and c = m / n are "
                "(d_out,), and g * c scales the columns of g (N, d_out).")
    if f.kind not in ("value", "shape"):
        return None
    i = f.inputs
    x, W0, A, B, m, s, g = (i[k] for k in ("x", "W0", "A", "B", "m", "scaling", "g"))
    V = W0 + s * B @ A
    n_rows, n_cols = np.sqrt((V * V).sum(1)), np.sqrt((V * V).sum(0))
    c = m / n_rows
    P = x @ V.T
    gP = g * c
    if f.output == "dm":
        return _first_hint(f, [
            ((g * P).sum(0), "dm = sum(g * P, axis=0) / n: y = (m / n) * P, so dy/dm divides by the norm."),
            ((g * P).sum(0) / (n_rows * n_rows), "dm divides by n once: y_j = (m_j / n_j) * P_j."),
            ((g * P).sum(0) * c, "dm = sum(g * P, axis=0) / n, not times c = m / n."),
            ((g * (x @ W0.T)).sum(0) / n_rows, "P = x @ V.T with V = W0 + scaling * B @ A, not x @ W0.T."),
            ((g * P).sum(0) / n_cols if n_cols.shape == m.shape else None,
             "the norm is per OUTPUT row of the (d_out, d_in) weight: sum V * V over axis 1."),
        ])
    if f.output == "dx":
        return _first_hint(f, [
            (g @ V, "dx = (g * c) @ V: the magnitude scale c multiplies each output column."),
            (gP @ W0, "dx = (g * c) @ V with V = W0 + scaling * B @ A: the adapter path is missing."),
        ])
    if f.output in ("dA", "dB"):
        u, gb = x @ A.T, gP @ B
        right = dict(dA=s * gb.T @ x, dB=s * gP.T @ u)[f.output]
        return _first_hint(f, [
            (dict(dA=s * (g @ B).T @ x, dB=s * g.T @ u)[f.output],
             f"{f.output} uses g * c (c = m / n per output row), not g: c scales the LoRA path too."),
            (right / s, f"did you forget scaling in {f.output}?"),
        ])
    return None


# ---------------------------------------------------------------- pissa_init


@st.composite
def _pissa_inputs(draw):
    d_in, d_out = draw(st.integers(1, 7)), draw(st.integers(1, 7))
    r = draw(st.integers(1, min(d_in, d_out)))
    return dict(W0=_arr(draw, (d_out, d_in)), r=r, scaling=draw(_scaling))


def _pissa_case(seed, d_out, d_in, r, scaling):
    return lambda: dict(W0=_rng(seed).standard_normal((d_out, d_in)), r=r, scaling=scaling)


def _pissa_hint(f: Failure):
    if f.kind == "exception":
        return "numpy.linalg.svd(W0, full_matrices=False) returns U (d_out, k), S (k,), Vh (k, d_in)."
    if f.kind not in ("value", "shape"):
        return None
    W0, r, s = f.inputs["W0"], f.inputs["r"], f.inputs["scaling"]
    U, S, Vh = np.linalg.svd(W0, full_matrices=False)
    root, full = np.sqrt(S[:r] / s), np.sqrt(S[:r])
    if f.output == "A":
        return _first_hint(f, [
            (full[:, None] * Vh[:r], "divide S by the scaling before the square root: A = sqrt(S_r / scaling) Vh_r."),
            (S[:r, None] / s * Vh[:r], "only the SQUARE ROOT of S_r / scaling goes into A (the other half into B)."),
            (root[:, None] * U[:r, :] if U.shape[0] >= r and U.shape[1] == Vh.shape[1] else None,
             "A is built from the right singular vectors (rows of Vh), not from U."),
        ]) or ("A has shape (r, d_in): the first r ROWS of Vh, each scaled." if f.kind == "shape" else None)
    if f.output == "B":
        return _first_hint(f, [
            (U[:, :r] * full, "divide S by the scaling before the square root: B = U_r sqrt(S_r / scaling)."),
            (U[:, :r] * (S[:r] / s), "only the SQUARE ROOT of S_r / scaling goes into B."),
        ])
    if f.output == "W_res":
        principal = (U[:, :r] * S[:r]) @ Vh[:r]
        return _first_hint(f, [
            (W0 - principal / s, "W_res = W0 - scaling * B @ A, and scaling * B @ A is the principal part itself."),
            (W0 - principal * s, "scaling * B @ A already equals U_r S_r Vh_r: do not scale it again."),
            (principal, "that is the principal part; W_res is what is LEFT: W0 minus it."),
        ])
    return None


# ---------------------------------------------------------------- loraplus_lrs

_PARTS = ("lora_A.weight", "lora_B.weight", "lora_magnitude_vector", "bias", "weight")


@st.composite
def _loraplus_inputs(draw):
    k = draw(st.integers(1, 8))
    names, ndims = [], []
    for i in range(k):
        part = draw(st.sampled_from(_PARTS))
        names.append(f"transformer.h.{i}.attn.c_attn.{part}")
        ndims.append(1 if part in ("lora_magnitude_vector", "bias") else 2)
    return dict(names=tuple(names), ndims=tuple(ndims), lr=draw(st.floats(1e-5, 1e-1)),
                loraplus_lr_ratio=draw(st.sampled_from([16.0, 2.0, 4.0, 0.5])))


def _lp(parts, lr=1e-3, ratio=16.0):
    names = tuple(f"transformer.h.0.attn.c_attn.{p}" for p in parts)
    ndims = tuple(1 if p in ("lora_magnitude_vector", "bias") else 2 for p in parts)
    return lambda: dict(names=names, ndims=ndims, lr=lr, loraplus_lr_ratio=ratio)


def _loraplus_hint(f: Failure):
    if f.kind not in ("value", "shape"):
        return None
    names, ndims, lr, lam = (f.inputs[k] for k in ("names", "ndims", "lr", "loraplus_lr_ratio"))
    is_b = np.array(["lora_B" in n for n in names])
    one_d = np.array([d < 2 for d in ndims])
    return _first_hint(f, [
        (np.where(is_b, lr * lam, lr), "1-D parameters (DoRA's magnitude, biases) take lambda * lr too, as in PEFT."),
        (np.where(is_b | one_d, lr, lr * lam), "inverted: B gets the LARGER rate lambda * lr, A keeps lr."),
        (np.where(is_b | one_d, lr / lam, lr), "B's rate is lambda * lr, not lr / lambda."),
    ])


EXERCISES = (
    make("dora_backward", "DoRA's dx, dA, dB, dm with the weight norm held constant (DoRA §4.3)",
         ["dx", "dA", "dB", "dm"], _dora_inputs(),
         [("non-square W0 (4, 6), r = 2, scaling 2.5", _dora_case(30, 5, 6, 4, 2, 2.5)),
          ("tall W0 (7, 3), r = 1, scaling 8", _dora_case(31, 3, 3, 7, 1, 8.0)),
          ("one row N = 1, r = 3, scaling 0.5", _dora_case(32, 1, 5, 4, 3, 0.5))],
         _dora_hint),
    make("pissa_init", "PiSSA's A, B (top-r singular triplets, divided by the scaling) and W_res",
         ["A", "B", "W_res"], _pissa_inputs(),
         [("scaling 2 (lora_alpha 16, r 8): non-square W0 (5, 3), r 2", _pissa_case(33, 5, 3, 2, 2.0)),
          ("wide W0 (3, 6), r = 3 = min: W_res is ~0", _pissa_case(34, 3, 6, 3, 0.5)),
          ("r = 1, scaling 1", _pissa_case(35, 4, 4, 1, 1.0))],
         _pissa_hint),
    make("loraplus_lrs", "LoRA+: lambda * lr for lora_B and 1-D parameters, lr for the rest", ["lrs"],
         _loraplus_inputs(),
         [("A, B and DoRA's magnitude, lambda 16", _lp(("lora_A.weight", "lora_B.weight", "lora_magnitude_vector"))),
          ("a trained bias goes with B", _lp(("lora_A.weight", "bias"), 2e-4, 4.0)),
          ("only A", _lp(("lora_A.weight",), 1e-2, 16.0))],
         _loraplus_hint),
)
