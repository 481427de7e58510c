"""The exercises: for each one, the input strategy, the hand-picked edge cases and the mistake-spotting hint.

Shape letters: N rows, V classes, C features, T time, hs head size, r rank, d_in, d_out.
The order of `CATALOG` is the suggested order of work (see README.md).
"""
from __future__ import annotations

import importlib
import math

import numpy as np
from hypothesis import assume
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from .grader import ATOL, RTOL, Exercise, Failure, _fmt

# ---------------------------------------------------------------- helpers


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


# ---------------------------------------------------------------- lora_param_count


@st.composite
def _param_count_inputs(draw):
    return dict(d_in=draw(st.integers(1, 20000)), d_out=draw(st.integers(1, 20000)),
                r=draw(st.integers(1, 256)), n_matrices=draw(st.integers(1, 400)))


def _param_count_hint(f: Failure):
    if f.kind != "value":
        return None
    i = f.inputs
    d_in, d_out, r, n = i["d_in"], i["d_out"], i["r"], i["n_matrices"]
    return _first_hint(f, [
        (r * (d_in + d_out), "you counted one matrix: multiply by n_matrices."),
        (n * r * d_in, "you counted only A (r x d_in): add B (d_out x r)."),
        (n * r * d_out, "you counted only B (d_out x r): add A (r x d_in)."),
        (n * 2 * r * d_in, "2*r*d only holds for square matrices: use r*(d_in + d_out)."),
        (n * 2 * r * d_out, "2*r*d only holds for square matrices: use r*(d_in + d_out)."),
        (n * d_in * d_out, "that is the size of W0, which is frozen; LoRA trains A and B only."),
        (n * (r * (d_in + d_out) + d_in * d_out), "W0 is frozen: do not count it."),
    ])


# ---------------------------------------------------------------- lora_scaling


@st.composite
def _scaling_inputs(draw):
    alpha = draw(st.one_of(st.integers(1, 512), st.floats(0.01, 512.0, allow_nan=False, allow_infinity=False)))
    return dict(lora_alpha=alpha, r=draw(st.integers(1, 512)), use_rslora=draw(st.booleans()))


def _sc(lora_alpha, r, use_rslora):
    return lambda: dict(lora_alpha=lora_alpha, r=r, use_rslora=use_rslora)


def _scaling_hint(f: Failure):
    if f.kind != "value":
        return None
    a, r, rs = f.inputs["lora_alpha"], f.inputs["r"], f.inputs["use_rslora"]
    want = "lora_alpha / sqrt(r)" if rs else "lora_alpha / r"
    return _first_hint(f, [
        (float(a), f"that is lora_alpha itself: the scaling is {want} = {_fmt(f.expected_value)} here. "
                   "lora_alpha is a constant; the division by the rank is what keeps the update's size "
                   "steady when r changes."),
        (lambda: float(a // r) if not rs else None, "use true division: lora_alpha // r truncates "
                                                    f"({a!r} // {r} = {a // r!r})."),
        (a / math.sqrt(r) if not rs else None, "use_rslora is False here: divide by r, not by sqrt(r)."),
        (a / r if rs else None, "use_rslora is True here: rsLoRA divides by sqrt(r), not by r."),
        (math.sqrt(a / r) if rs else None, "only r goes under the square root: lora_alpha / sqrt(r)."),
        (r / a, f"inverted: the scaling is {want}, not the other way round."),
        (float(a * r), f"divide by the rank, do not multiply: {want}."),
    ])


# ---------------------------------------------------------------- lora_forward, merge, unmerge


@st.composite
def _lora_shapes(draw):
    return draw(st.integers(1, 5)), draw(_dim), draw(_dim), draw(st.integers(1, 4))  # N, d_in, d_out, r


@st.composite
def _lora_forward_inputs(draw):
    N, d_in, d_out, r = draw(_lora_shapes())
    return dict(x=_arr(draw, (N, d_in)), W0=_arr(draw, (d_out, d_in)), A=_arr(draw, (r, d_in)),
                B=_arr(draw, (d_out, r)), scaling=draw(_scaling))


def _lora_case(seed, N, d_in, d_out, r, scaling, with_x=True):
    def make():
        rng = _rng(seed)
        d = {}
        if with_x:
            d["x"] = rng.standard_normal((N, d_in))
        d["W0"] = rng.standard_normal((d_out, d_in))
        d["A"] = rng.standard_normal((r, d_in))
        d["B"] = rng.standard_normal((d_out, r))
        d["scaling"] = scaling
        return d
    return make


_ALPHA_HINT = ("you multiplied by scaling * r = lora_alpha: the LoRA branch is scaled by lora_alpha / r "
               "(= scaling = {s!r} here, with r = {r}), not by lora_alpha. The division by r is part of "
               "the scaling (exercise lora_scaling).")


def _lora_forward_hint(f: Failure):
    i = f.inputs
    x, W0, A, B, s = i["x"], i["W0"], i["A"], i["B"], i["scaling"]
    if f.kind == "exception":
        return ("check your transposes: x is (N, d_in), A is (r, d_in) and B is (d_out, r), "
                "so x @ A.T is (N, r) and (x @ A.T) @ B.T is (N, d_out).")
    if f.kind not in ("value", "shape"):
        return None
    base = x @ W0.T
    lora = x @ A.T @ B.T
    r = A.shape[0]
    return _first_hint(f, [
        (base + lora, f"did you forget scaling? The LoRA branch is multiplied by scaling "
                      f"(= lora_alpha / r = {s!r} here, not 1)."),
        (base + s * r * lora, _ALPHA_HINT.format(s=s, r=r)),
        (s * lora, "you left out the frozen path x @ W0.T."),
        (base, "you left out the LoRA branch scaling * (x @ A.T) @ B.T."),
        (lambda: base + lora / s, "the scaling multiplies the LoRA branch; you divided by it."),
        (lambda: x @ W0 + s * lora, "W0 is stored (d_out, d_in): use x @ W0.T."),
        (lambda: s * (base + lora), "the scaling multiplies only the LoRA branch, not x @ W0.T."),
    ])


@st.composite
def _merge_inputs(draw, first="W0"):
    _, d_in, d_out, r = draw(_lora_shapes())
    return {first: _arr(draw, (d_out, d_in)), "A": _arr(draw, (r, d_in)),
            "B": _arr(draw, (d_out, r)), "scaling": draw(_scaling)}


def _merge_case(seed, d_in, d_out, r, scaling, first):
    base = _lora_case(seed, 1, d_in, d_out, r, scaling, with_x=False)

    def make():
        d = base()
        return {first: d["W0"], "A": d["A"], "B": d["B"], "scaling": d["scaling"]}
    return make


def _merge_hint_factory(sign, first):
    def hint(f: Failure):
        i = f.inputs
        W, A, B, s = i[first], i["A"], i["B"], i["scaling"]
        if f.kind == "exception":
            return ("B @ A is (d_out, d_in), the shape of the weight; A is (r, d_in) and "
                    "B is (d_out, r).")
        if f.kind == "shape":
            return "ΔW = scaling * B @ A has shape (d_out, d_in), like the weight (not A @ B or A.T @ B.T)."
        if f.kind != "value":
            return None
        dW = B @ A
        return _first_hint(f, [
            (W + sign * dW, "did you forget scaling? ΔW = scaling * B @ A, and scaling != 1 here."),
            (W + sign * s * A.shape[0] * dW, _ALPHA_HINT.format(s=s, r=A.shape[0])),
            (W - sign * s * dW, "wrong sign: merge adds scaling * B @ A, unmerge subtracts it."),
            (W - sign * dW, "wrong sign, and the scaling is missing."),
            (sign * s * dW, f"you returned only ΔW: add it to {first}."),
            (W + sign * dW / s, "multiply by the scaling, do not divide."),
        ])
    return hint


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


# ---------------------------------------------------------------- lora_backward


@st.composite
def _lora_backward_inputs(draw):
    N, d_in, d_out, r = draw(_lora_shapes())
    keep_prob = draw(st.sampled_from([1.0, 0.9, 0.5]))
    if keep_prob == 1.0:
        mask = np.ones((N, d_in))
    else:
        mask = draw(hnp.arrays(np.bool_, (N, d_in))).astype(np.float64)
    return dict(x=_arr(draw, (N, d_in)), W0=_arr(draw, (d_out, d_in)), A=_arr(draw, (r, d_in)),
                B=_arr(draw, (d_out, r)), scaling=draw(_scaling), g=_arr(draw, (N, d_out)),
                mask=mask, keep_prob=keep_prob)


def _lora_backward_case(seed, N, d_in, d_out, r, scaling, keep_prob):
    def make():
        rng = _rng(seed)
        d = dict(x=rng.standard_normal((N, d_in)), W0=rng.standard_normal((d_out, d_in)),
                 A=rng.standard_normal((r, d_in)), B=rng.standard_normal((d_out, r)), scaling=scaling,
                 g=rng.standard_normal((N, d_out)))
        d["mask"] = (rng.random((N, d_in)) < keep_prob).astype(np.float64) if keep_prob < 1 \
            else np.ones((N, d_in))
        d["keep_prob"] = keep_prob
        return d
    return make


def _lora_backward_hint(f: Failure):
    i = f.inputs
    x, W0, A, B, s, g, m, kp = (i[k] for k in ("x", "W0", "A", "B", "scaling", "g", "mask", "keep_prob"))
    if f.kind == "exception":
        return ("check your transposes: g is (N, d_out), B is (d_out, r), A is (r, d_in), W0 is "
                "(d_out, d_in); so g @ B is (N, r), (g @ B) @ A is (N, d_in) and g @ W0 is (N, d_in).")
    if f.kind not in ("value", "shape"):
        return None
    xt = x * m / kp
    gB = g @ B
    r = A.shape[0]
    alpha_hint = _ALPHA_HINT.format(s=s, r=r)
    if f.output == "dx":
        lora = s * (gB @ A)
        return _first_hint(f, [
            (g @ W0 + lora, "dx is missing the dropout mask: the LoRA term of dx is "
                            "scaling * ((g @ B) @ A) * mask / keep_prob."),
            (g @ W0 + r * lora * m / kp, alpha_hint),
            (g @ W0 + lora * m, "the LoRA term of dx must be divided by keep_prob too (inverted dropout)."),
            (g @ W0 + lora / kp, "the LoRA term of dx must be multiplied by the mask too."),
            ((g @ W0 + lora) * m / kp, "only the LoRA branch is dropped out: g @ W0 is not masked."),
            (g @ W0, "dx is missing the LoRA branch: add scaling * ((g @ B) @ A) * mask / keep_prob."),
            (g @ W0 + (gB @ A) * m / kp, "did you forget scaling in dx?"),
            (lora * m / kp, "dx is missing the frozen path g @ W0 (W0 is frozen, but x still gets its "
                            "gradient through it)."),
        ])
    if f.output == "dA":
        return _first_hint(f, [
            (s * gB.T @ x, "dA must use the dropped-out input xt = x * mask / keep_prob, not x."),
            (s * gB.T @ (x * m), "dA is missing the 1/keep_prob: the forward pass used xt = x * mask / "
                                 "keep_prob (inverted dropout), so dA = scaling * (g @ B).T @ xt."),
            (gB.T @ xt, "did you forget scaling in dA?"),
            (s * r * gB.T @ xt, alpha_hint),
            (s * xt.T @ gB, "dA has A's shape (r, d_in): use (g @ B).T @ xt, not its transpose."),
        ]) or ("dA = scaling * (g @ B).T @ xt: it matches A's shape (r, d_in)."
               if f.kind == "shape" else None)
    if f.output == "dB":
        u = xt @ A.T
        return _first_hint(f, [
            (s * g.T @ (x @ A.T), "dB must use u = xt @ A.T with the dropped-out input xt."),
            (s * g.T @ ((x * m) @ A.T), "dB is missing the 1/keep_prob: u = xt @ A.T with xt = x * mask / "
                                        "keep_prob (inverted dropout)."),
            (g.T @ u, "did you forget scaling in dB?"),
            (s * r * g.T @ u, alpha_hint),
            (s * u.T @ g, "dB has B's shape (d_out, r): use g.T @ u, not u.T @ g."),
        ])
    return None


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


# ---------------------------------------------------------------- the catalog


def _make(name, summary, outputs, strategy, edge_cases, hint) -> Exercise:
    return Exercise(name=name, summary=summary, reference=_ref(name), outputs=tuple(outputs),
                    strategy=strategy, edge_cases=tuple(edge_cases), hint_for_failure=hint)


def _pc(d_in, d_out, r, n):
    return lambda: dict(d_in=d_in, d_out=d_out, r=r, n_matrices=n)


CATALOG = (
    _make("lora_param_count", "trainable parameters of rank-r LoRA on n matrices (d_out, d_in)",
          ["count"], _param_count_inputs(),
          [("GPT-3 q,v: d=12288, r=4, 192 matrices", _pc(12288, 12288, 4, 192)),
           ("non-square: d_in=768, d_out=2304, r=8, 12 matrices", _pc(768, 2304, 8, 12)),
           ("one matrix, r=1", _pc(10, 3, 1, 1))],
          _param_count_hint),
    _make("lora_scaling", "scaling = lora_alpha / r, or lora_alpha / sqrt(r) with rsLoRA", ["scaling"],
          _scaling_inputs(),
          [("lora_alpha 16, r 8 -> 2 (not 16)", _sc(16, 8, False)),
           ("true division: lora_alpha 16, r 3 -> 5.333", _sc(16, 3, False)),
           ("rsLoRA: lora_alpha 16, r 4 -> 16 / sqrt(4) = 8", _sc(16, 4, True)),
           ("lora_alpha = r = 8 -> 1", _sc(8, 8, False)),
           ("rsLoRA, r = 1 -> lora_alpha", _sc(32.0, 1, True))],
          _scaling_hint),
    _make("lora_forward", "y = x W0^T + scaling (x A^T) B^T", ["y"], _lora_forward_inputs(),
          [("alpha != r: scaling = 2.5, non-square W0 (4, 5), r = 2", _lora_case(0, 3, 5, 4, 2, 2.5)),
           ("tall W0 (7, 3), r = 2, scaling = 8", _lora_case(1, 4, 3, 7, 2, 8.0)),
           ("r = 1, rsLoRA scaling 16/sqrt(1) = 16", _lora_case(2, 2, 6, 3, 1, 16.0))],
          _lora_forward_hint),
    _make("merge", "W = W0 + scaling B A", ["W"], _merge_inputs("W0"),
          [("non-square W0 (4, 6), r = 2, scaling = 2.5", _merge_case(3, 6, 4, 2, 2.5, "W0")),
           ("r = 1, scaling = 0.5", _merge_case(4, 3, 5, 1, 0.5, "W0"))],
          _merge_hint_factory(+1, "W0")),
    _make("unmerge", "W0 = W - scaling B A", ["W0"], _merge_inputs("W"),
          [("non-square W (4, 6), r = 2, scaling = 2.5", _merge_case(5, 6, 4, 2, 2.5, "W")),
           ("r = 3, scaling = 16/3", _merge_case(6, 3, 5, 3, 16 / 3, "W"))],
          _merge_hint_factory(-1, "W")),
    _make("softmax_forward", "stable softmax along the last axis (survives logits of 1e4)", ["y"],
          _softmax_inputs(),
          [("logits of 1e4", lambda: dict(x=np.array([[1e4, 0.0, -1e4], [1e4, 1e4, 1e4 - 1.0]]))),
           ("logits of -1e4", lambda: dict(x=np.array([[-1e4, -1e4 + 1.0, -1e4]]))),
           ("rows on different scales (B, T, V) = (2, 3, 5)",
            lambda: dict(x=_rng(8).standard_normal((2, 3, 5)) * np.array([1.0, 50.0, 900.0])[:, None])),
           ("one class (4, 1)", lambda: dict(x=np.array([[3.0], [-2.0], [1e4], [0.0]])))],
          _softmax_forward_hint),
    _make("broadcast_add_backward", "da, db of c = a + b under broadcasting (unbroadcast)",
          ["da", "db"], _broadcast_inputs(),
          [("size-1 dims on both sides (3, 1) + (1, 4)", _broadcast_case((3, 1), (1, 4), 9)),
           ("missing leading dims (5,) + (2, 3, 5)", _broadcast_case((5,), (2, 3, 5), 10)),
           ("scalar (0-d) + (2, 3)", _broadcast_case((), (2, 3), 11)),
           ("both (2, 1, 3) + (4, 1)", _broadcast_case((2, 1, 3), (4, 1), 12)),
           ("no broadcasting (2, 3) + (2, 3)", _broadcast_case((2, 3), (2, 3), 13))],
          _broadcast_hint),
    _make("softmax_backward", "dx from y = softmax(x) and g = dL/dy", ["dx"],
          _softmax_backward_inputs(),
          [("random (4, 5)", lambda: dict(y=_softmax(_rng(14).standard_normal((4, 5))),
                                          g=_rng(15).standard_normal((4, 5)))),
           ("saturated rows from logits 1e4", lambda: dict(
               y=_softmax(np.array([[1e4, 0.0, -1e4], [1.0, 2.0, 1.5]])),
               g=np.array([[0.3, -1.2, 2.0], [1.0, -0.5, 0.25]]))),
           ("3-D (2, 3, 4)", lambda: dict(y=_softmax(_rng(16).standard_normal((2, 3, 4))),
                                          g=_rng(17).standard_normal((2, 3, 4))))],
          _softmax_backward_hint),
    _make("cross_entropy_backward", "dlogits of the mean cross-entropy", ["dlogits"], _ce_inputs(),
          [("random (4, 6)", lambda: dict(logits=_rng(18).standard_normal((4, 6)),
                                          targets=np.array([0, 5, 2, 2]))),
           ("logits of 1e4", lambda: dict(logits=np.array([[1e4, 0.0, -1e4], [0.0, 1e4, 1e4]]),
                                          targets=np.array([1, 2]))),
           ("one row", lambda: dict(logits=np.array([[0.5, -1.0, 2.0, 0.0]]), targets=np.array([3])))],
          _ce_hint),
    _make("lora_backward", "dx, dA, dB of the LoRA layer with dropout on the LoRA branch",
          ["dx", "dA", "dB"], _lora_backward_inputs(),
          [("dropout on: keep_prob 0.8, scaling 2.5, non-square W0 (4, 6), r = 2",
            _lora_backward_case(19, 5, 6, 4, 2, 2.5, 0.8)),
           ("dropout off: mask of ones, keep_prob 1, scaling 8, W0 (7, 3)",
            _lora_backward_case(20, 3, 3, 7, 2, 8.0, 1.0)),
           ("keep_prob 0.5, r = 3, scaling 0.5", _lora_backward_case(21, 4, 5, 6, 3, 0.5, 0.5))],
          _lora_backward_hint),
    _make("layer_norm_backward", "dx, dgamma, dbeta of LayerNorm over the last axis",
          ["dx", "dgamma", "dbeta"], _layer_norm_inputs(),
          [("random (4, 6), eps 1e-5", _ln_case(22, 4, 6, 1e-5)),
           ("a constant row (var = 0), eps 1e-5", _ln_case(23, 3, 5, 1e-5, constant_row=True)),
           ("one row (1, 8), eps 0.1", _ln_case(24, 1, 8, 0.1))],
          _layer_norm_hint),
    _make("attention_backward", "dq, dk, dv of single-head (causal) attention, scale 1/sqrt(hs)",
          ["dq", "dk", "dv"], _attention_inputs(),
          [("causal, T = 5, hs = 4", _attention_case(25, 5, 4, True)),
           ("not causal, T = 4, hs = 3", _attention_case(26, 4, 3, False)),
           ("causal, T = 1", _attention_case(27, 1, 2, True))],
          _attention_hint),
    _make("choose_rank", "smallest k whose top-k energy reaches a threshold", ["k"],
          _choose_rank_inputs(),
          [("s = [4, 3, 2, 1], threshold 0.9", lambda: dict(s=np.array([4.0, 3.0, 2.0, 1.0]),
                                                            threshold=0.9)),
           ("energy, not s: s = [3, 1, 1], threshold 0.85",
            lambda: dict(s=np.array([3.0, 1.0, 1.0]), threshold=0.85)),
           ("threshold 1.0 with zeros: s = [2, 1, 0, 0]",
            lambda: dict(s=np.array([2.0, 1.0, 0.0, 0.0]), threshold=1.0)),
           ("one value", lambda: dict(s=np.array([5.0]), threshold=0.5))],
          _choose_rank_hint),
    _make("effective_rank", "Roy & Vetterli effective rank exp(entropy of s / sum s)", ["erank"],
          _effective_rank_inputs(),
          [("s = [1, 1, 1] -> 3", lambda: dict(s=np.array([1.0, 1.0, 1.0]))),
           ("rank one: s = [5, 0, 0] -> 1", lambda: dict(s=np.array([5.0, 0.0, 0.0]))),
           ("decaying with a zero: s = [3, 2, 1, 0]", lambda: dict(s=np.array([3.0, 2.0, 1.0, 0.0])))],
          _effective_rank_hint),
    _make("subspace_similarity", "LoRA Sec. 7.2 phi(A1, A2, i, j) from right singular vectors",
          ["phi"], _subspace_inputs(),
          [("the same row space -> 1", _subspace_case("same")),
           ("orthogonal row spaces -> 0", _subspace_case("orthogonal")),
           ("r1 = 2, r2 = 4, d_in = 7, i = 2, j = 3", _subspace_case("random"))],
          _subspace_hint),
)
