"""Strategies, edge cases and hints of the engine exercises (lessons 01-03): softmax, broadcasting,
cross-entropy, layer norm, attention.
"""
from __future__ import annotations

import math

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from ..grader import Failure
from ._common import _arr, _first_hint, _rng, _softmax, make

# ---------------------------------------------------------------- softmax_forward


@st.composite
def _softmax_inputs(draw):
    shape = draw(hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=6))
    return dict(x=_arr(draw, shape, -100.0, 100.0))


def _softmax_forward_hint(f: Failure):
    x = f.inputs["x"]
    got = f.got_value
    if f.kind == "nonfinite" or (got is not None and np.isnan(np.asarray(got, dtype=float)).any()):
        if np.abs(x).max() > 700:
            return ("nan at large logits: exp(1e4) overflows to inf and inf/inf is nan. Shift by the "
                    "max: softmax(x) = softmax(x - max(x, axis=-1, keepdims=True)).")
    if f.kind in ("value", "nonfinite"):
        return _first_hint(f, [
            (lambda: np.exp(x) / np.sum(np.exp(x), axis=0, keepdims=True),
             "normalise along the last axis (axis=-1), not axis 0."),
            (lambda: np.exp(x - x.max()) / np.sum(np.exp(x - x.max()), axis=-1, keepdims=True)
             if np.isfinite(_softmax(x)).all() else None,
             "subtract the max of each row (axis=-1, keepdims=True), not the global max: rows far below "
             "the global max underflow to 0/0."),
            (lambda: np.exp(x - x.max(axis=-1, keepdims=True)),
             "you forgot to divide by the row sum."),
        ])
    return None


# ---------------------------------------------------------------- softmax_backward


@st.composite
def _softmax_backward_inputs(draw):
    shape = draw(hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=6))
    return dict(y=_softmax(_arr(draw, shape, -10.0, 10.0)), g=_arr(draw, shape))


def _softmax_backward_hint(f: Failure):
    if f.kind != "value":
        return None
    y, g = f.inputs["y"], f.inputs["g"]
    return _first_hint(f, [
        (y * (1 - y) * g, "the softmax Jacobian is not diagonal: dx = y * (g - sum(g * y, axis=-1, "
                          "keepdims=True)), not y * (1 - y) * g."),
        (y * g, "you forgot the - sum(g * y) term: every x_j affects every y_i through the normaliser."),
        (lambda: y * (g - np.sum(g * y)), "sum along the last axis only (per row), not over the whole "
                                          "array."),
        (lambda: y * (g - np.sum(g, axis=-1, keepdims=True)), "the row term is sum(g * y), not sum(g)."),
        (g - np.sum(g * y, axis=-1, keepdims=True), "multiply by y: dx = y * (g - <g, y>)."),
    ])


# ---------------------------------------------------------------- cross_entropy_backward


@st.composite
def _ce_inputs(draw):
    N, V = draw(st.integers(1, 6)), draw(st.integers(1, 8))
    return dict(logits=_arr(draw, (N, V), -30.0, 30.0),
                targets=draw(hnp.arrays(np.int64, (N,), elements=st.integers(0, V - 1))))


def _ce_hint(f: Failure):
    logits, t = f.inputs["logits"], f.inputs["targets"]
    if f.kind == "nonfinite":
        return "nan at large logits: use a stable softmax (subtract the row max before exp)."
    if f.kind != "value":
        return None
    N, V = logits.shape
    p = _softmax(logits)
    onehot = np.eye(V)[t]
    return _first_hint(f, [
        (p - onehot, "the loss is a mean over rows: divide by N."),
        (p / N, "subtract the one-hot targets: dlogits = (softmax - onehot) / N."),
        ((onehot - p) / N, "wrong sign: dlogits = (softmax - onehot) / N."),
        ((p - onehot) / V, "divide by the number of rows N, not the number of classes V."),
    ])


# ---------------------------------------------------------------- broadcast_add_backward


@st.composite
def _broadcast_inputs(draw):
    shapes = draw(hnp.mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=4,
                                                    min_side=1, max_side=4))
    a, b = shapes.input_shapes
    return dict(g=_arr(draw, shapes.result_shape), shape_a=tuple(a), shape_b=tuple(b))


def _broadcast_case(shape_a, shape_b, seed):
    def make():
        out = np.broadcast_shapes(shape_a, shape_b)
        return dict(g=_rng(seed).standard_normal(out), shape_a=shape_a, shape_b=shape_b)
    return make


def _broadcast_hint(f: Failure):
    if f.kind not in ("shape", "value"):
        return None
    g = f.inputs["g"]
    got_shape = np.shape(f.got_value)
    want = np.shape(f.expected_value)
    if f.kind == "shape":
        if got_shape == g.shape:
            return (f"sum over broadcast dims: '{f.output}' must have the input's shape {want}, not "
                    f"the output's {g.shape}. Sum g over the leading dims the input lacks and, with "
                    f"keepdims=True, over the dims where the input has size 1.")
        if len(got_shape) == len(want) - sum(1 for n in want if n == 1) or len(got_shape) < len(want):
            return (f"keep the size-1 dims: sum with keepdims=True (or reshape to {want}).")
        return f"sum over broadcast dims until the shape is {want}."
    return "sum g over exactly the dims that were broadcast (size 1 in the input, or missing in front)."


# ---------------------------------------------------------------- layer_norm_backward


@st.composite
def _layer_norm_inputs(draw):
    N, C = draw(st.integers(1, 5)), draw(st.integers(1, 8))
    return dict(x=_arr(draw, (N, C)), gamma=_arr(draw, (C,)), g=_arr(draw, (N, C)),
                eps=draw(st.sampled_from([1e-5, 1e-3, 0.1])))


def _ln_case(seed, N, C, eps, constant_row=False):
    def make():
        rng = _rng(seed)
        x = rng.standard_normal((N, C)) * 2 + 1
        if constant_row:
            x[0] = 0.7
        return dict(x=x, gamma=rng.standard_normal(C) + 1, g=rng.standard_normal((N, C)), eps=eps)
    return make


def _layer_norm_hint(f: Failure):
    i = f.inputs
    x, gamma, g, eps = i["x"], i["gamma"], i["g"], i["eps"]
    if f.kind == "shape" and f.output in ("dgamma", "dbeta"):
        return f"'{f.output}' has gamma's shape (C,): sum over the rows (axis=0)."
    if f.kind != "value":
        return None
    mu = x.mean(-1, keepdims=True)
    var = x.var(-1, keepdims=True)
    rstd = 1 / np.sqrt(var + eps)
    xhat = (x - mu) * rstd
    dxhat = g * gamma
    if f.output == "dx":
        m1 = dxhat.mean(-1, keepdims=True)
        m2 = (dxhat * xhat).mean(-1, keepdims=True)
        rstd1 = 1 / np.sqrt(x.var(-1, ddof=1, keepdims=True) + eps) if x.shape[-1] > 1 else rstd
        xhat1 = (x - mu) * rstd1
        return _first_hint(f, [
            (rstd * dxhat, "dx is missing the mean terms: the mean and the variance depend on every x "
                           "in the row, so dx = rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat))."),
            (rstd * (dxhat - m1), "dx is missing the variance term - xhat * mean(dxhat * xhat)."),
            (rstd * (dxhat - xhat * m2), "dx is missing the mean term - mean(dxhat)."),
            (rstd * (g - g.mean(-1, keepdims=True) - xhat * (g * xhat).mean(-1, keepdims=True)),
             "multiply g by gamma first: dxhat = g * gamma."),
            (rstd1 * (dxhat - dxhat.mean(-1, keepdims=True)
                      - xhat1 * (dxhat * xhat1).mean(-1, keepdims=True)),
             "use the biased variance (ddof=0, np.var's default), as the forward pass does."),
        ])
    if f.output == "dgamma":
        return _first_hint(f, [
            ((g * (x - mu)).sum(0), "dgamma uses the normalised xhat, not x - mean."),
            ((g * x).sum(0), "dgamma = sum over rows of g * xhat (the normalised x)."),
            ((g * xhat).mean(0), "sum over rows, do not average."),
        ])
    if f.output == "dbeta":
        return _first_hint(f, [((g * gamma).sum(0), "dbeta = sum of g over rows; gamma plays no part."),
                               (g.mean(0), "sum over rows, do not average.")])
    return None


# ---------------------------------------------------------------- attention_backward


@st.composite
def _attention_inputs(draw):
    T, hs = draw(st.integers(1, 6)), draw(st.integers(1, 6))
    return dict(q=_arr(draw, (T, hs)), k=_arr(draw, (T, hs)), v=_arr(draw, (T, hs)),
                g=_arr(draw, (T, hs)), causal=draw(st.booleans()))


def _attention_case(seed, T, hs, causal):
    def make():
        rng = _rng(seed)
        return dict(q=rng.standard_normal((T, hs)), k=rng.standard_normal((T, hs)),
                    v=rng.standard_normal((T, hs)), g=rng.standard_normal((T, hs)), causal=causal)
    return make


def _attention_variant(q, k, v, g, causal, scale, scale_grads=True, full_softmax_grad=True):
    T = q.shape[0]
    S = q @ k.T * scale
    if causal:
        S = np.where(np.tril(np.ones((T, T), dtype=bool)), S, -np.inf)
    P = _softmax(S)
    dv = P.T @ g
    dP = g @ v.T
    dS = P * (dP - np.sum(dP * P, -1, keepdims=True)) if full_softmax_grad else P * dP
    sg = scale if scale_grads else 1.0
    return dS @ k * sg, dS.T @ q * sg, dv


def _attention_hint(f: Failure):
    if f.kind != "value":
        return None
    i = f.inputs
    q, k, v, g, causal = i["q"], i["k"], i["v"], i["g"], i["causal"]
    scale = 1 / math.sqrt(q.shape[1])
    pos = f.position
    return _first_hint(f, [
        (lambda: _attention_variant(q, k, v, g, not causal, scale)[pos],
         "the causal flag is not applied as asked: with causal=True, scores above the diagonal are -inf "
         "before the softmax." if causal else "causal=False here: do not mask."),
        (lambda: _attention_variant(q, k, v, g, causal, scale, scale_grads=False)[pos],
         "dq and dk need the factor scale = 1/sqrt(hs): it is in the forward pass."),
        (lambda: _attention_variant(q, k, v, g, causal, 1.0)[pos],
         "you forgot the scale 1/sqrt(hs), in the forward recomputation and in dq, dk."),
        (lambda: _attention_variant(q, k, v, g, causal, scale, full_softmax_grad=False)[pos],
         "the softmax backward needs the row term: dS = P * (dP - sum(dP * P, axis=-1, keepdims=True))."),
        (lambda: _attention_variant(q, k, v, g, causal, scale)[1 - pos] if pos < 2 else None,
         "you swapped dq and dk."),
    ])



EXERCISES = (
    make("softmax_forward", "stable softmax along the last axis (survives logits of 1e4)", ["y"],
          _softmax_inputs(),
          [("logits of 1e4", lambda: dict(x=np.array([[1e4, 0.0, -1e4], [1e4, 1e4, 1e4 - 1.0]]))),
           ("logits of -1e4", lambda: dict(x=np.array([[-1e4, -1e4 + 1.0, -1e4]]))),
           ("rows on different scales (B, T, V) = (2, 3, 5)",
            lambda: dict(x=_rng(8).standard_normal((2, 3, 5)) * np.array([1.0, 50.0, 900.0])[:, None])),
           ("one class (4, 1)", lambda: dict(x=np.array([[3.0], [-2.0], [1e4], [0.0]])))],
          _softmax_forward_hint),
    make("broadcast_add_backward", "da, db of c = a + b under broadcasting (unbroadcast)",
          ["da", "db"], _broadcast_inputs(),
          [("size-1 dims on both sides (3, 1) + (1, 4)", _broadcast_case((3, 1), (1, 4), 9)),
           ("missing leading dims (5,) + (2, 3, 5)", _broadcast_case((5,), (2, 3, 5), 10)),
           ("scalar (0-d) + (2, 3)", _broadcast_case((), (2, 3), 11)),
           ("both (2, 1, 3) + (4, 1)", _broadcast_case((2, 1, 3), (4, 1), 12)),
           ("no broadcasting (2, 3) + (2, 3)", _broadcast_case((2, 3), (2, 3), 13))],
          _broadcast_hint),
    make("softmax_backward", "dx from y = softmax(x) and g = dL/dy", ["dx"],
          _softmax_backward_inputs(),
          [("random (4, 5)", lambda: dict(y=_softmax(_rng(14).standard_normal((4, 5))),
                                          g=_rng(15).standard_normal((4, 5)))),
           ("saturated rows from logits 1e4", lambda: dict(
               y=_softmax(np.array([[1e4, 0.0, -1e4], [1.0, 2.0, 1.5]])),
               g=np.array([[0.3, -1.2, 2.0], [1.0, -0.5, 0.25]]))),
           ("3-D (2, 3, 4)", lambda: dict(y=_softmax(_rng(16).standard_normal((2, 3, 4))),
                                          g=_rng(17).standard_normal((2, 3, 4))))],
          _softmax_backward_hint),
    make("cross_entropy_backward", "dlogits of the mean cross-entropy", ["dlogits"], _ce_inputs(),
          [("random (4, 6)", lambda: dict(logits=_rng(18).standard_normal((4, 6)),
                                          targets=np.array([0, 5, 2, 2]))),
           ("logits of 1e4", lambda: dict(logits=np.array([[1e4, 0.0, -1e4], [0.0, 1e4, 1e4]]),
                                          targets=np.array([1, 2]))),
           ("one row", lambda: dict(logits=np.array([[0.5, -1.0, 2.0, 0.0]]), targets=np.array([3])))],
          _ce_hint),
    make("layer_norm_backward", "dx, dgamma, dbeta of LayerNorm over the last axis",
          ["dx", "dgamma", "dbeta"], _layer_norm_inputs(),
          [("random (4, 6), eps 1e-5", _ln_case(22, 4, 6, 1e-5)),
           ("a constant row (var = 0), eps 1e-5", _ln_case(23, 3, 5, 1e-5, constant_row=True)),
           ("one row (1, 8), eps 0.1", _ln_case(24, 1, 8, 0.1))],
          _layer_norm_hint),
    make("attention_backward", "dq, dk, dv of single-head (causal) attention, scale 1/sqrt(hs)",
          ["dq", "dk", "dv"], _attention_inputs(),
          [("causal, T = 5, hs = 4", _attention_case(25, 5, 4, True)),
           ("not causal, T = 4, hs = 3", _attention_case(26, 4, 3, False)),
           ("causal, T = 1", _attention_case(27, 1, 2, True))],
          _attention_hint),
)
