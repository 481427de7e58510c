"""Strategies, edge cases and hints of the LoRA exercises (lessons 05 and 08): parameter count,
scaling, forward, merge/unmerge, backward.
"""
from __future__ import annotations

import math

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from ..grader import Failure, _fmt
from ._common import _arr, _dim, _first_hint, _rng, _scaling, make

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



def _pc(d_in, d_out, r, n):
    return lambda: dict(d_in=d_in, d_out=d_out, r=r, n_matrices=n)

EXERCISES = (
    make("lora_param_count", "trainable parameters of rank-r LoRA on n matrices (d_out, d_in)",
          ["count"], _param_count_inputs(),
          [("GPT-3 q,v: d=12288, r=4, 192 matrices", _pc(12288, 12288, 4, 192)),
           ("non-square: d_in=768, d_out=2304, r=8, 12 matrices", _pc(768, 2304, 8, 12)),
           ("one matrix, r=1", _pc(10, 3, 1, 1))],
          _param_count_hint),
    make("lora_scaling", "scaling = lora_alpha / r, or lora_alpha / sqrt(r) with rsLoRA", ["scaling"],
          _scaling_inputs(),
          [("lora_alpha 16, r 8 -> 2 (not 16)", _sc(16, 8, False)),
           ("true division: lora_alpha 16, r 3 -> 5.333", _sc(16, 3, False)),
           ("rsLoRA: lora_alpha 16, r 4 -> 16 / sqrt(4) = 8", _sc(16, 4, True)),
           ("lora_alpha = r = 8 -> 1", _sc(8, 8, False)),
           ("rsLoRA, r = 1 -> lora_alpha", _sc(32.0, 1, True))],
          _scaling_hint),
    make("lora_forward", "y = x W0^T + scaling (x A^T) B^T", ["y"], _lora_forward_inputs(),
          [("alpha != r: scaling = 2.5, non-square W0 (4, 5), r = 2", _lora_case(0, 3, 5, 4, 2, 2.5)),
           ("tall W0 (7, 3), r = 2, scaling = 8", _lora_case(1, 4, 3, 7, 2, 8.0)),
           ("r = 1, rsLoRA scaling 16/sqrt(1) = 16", _lora_case(2, 2, 6, 3, 1, 16.0))],
          _lora_forward_hint),
    make("merge", "W = W0 + scaling B A", ["W"], _merge_inputs("W0"),
          [("non-square W0 (4, 6), r = 2, scaling = 2.5", _merge_case(3, 6, 4, 2, 2.5, "W0")),
           ("r = 1, scaling = 0.5", _merge_case(4, 3, 5, 1, 0.5, "W0"))],
          _merge_hint_factory(+1, "W0")),
    make("unmerge", "W0 = W - scaling B A", ["W0"], _merge_inputs("W"),
          [("non-square W (4, 6), r = 2, scaling = 2.5", _merge_case(5, 6, 4, 2, 2.5, "W")),
           ("r = 3, scaling = 16/3", _merge_case(6, 3, 5, 3, 16 / 3, "W"))],
          _merge_hint_factory(-1, "W")),
    make("lora_backward", "dx, dA, dB of the LoRA layer with dropout on the LoRA branch",
          ["dx", "dA", "dB"], _lora_backward_inputs(),
          [("dropout on: keep_prob 0.8, scaling 2.5, non-square W0 (4, 6), r = 2",
            _lora_backward_case(19, 5, 6, 4, 2, 2.5, 0.8)),
           ("dropout off: mask of ones, keep_prob 1, scaling 8, W0 (7, 3)",
            _lora_backward_case(20, 3, 3, 7, 2, 8.0, 1.0)),
           ("keep_prob 0.5, r = 3, scaling 0.5", _lora_backward_case(21, 4, 5, 6, 3, 0.5, 0.5))],
          _lora_backward_hint),
)
