"""Gradient checking as public API: central differences, random-cotangent checks, and a table.

Why float64: central differences have truncation error O(eps^2) and rounding error O(u/eps) with
u the unit roundoff. In float64 (u ~ 1e-16) eps = 1e-6 gives errors near 1e-10; in float32
(u ~ 6e-8) the same eps gives errors near 1e-1, useless. So numeric gradients are float64 only.

Why a random cotangent: checking the gradient of y.sum() (an all-ones cotangent) cannot catch a
backward that ignores its incoming gradient `g`, or that mixes up which output goes where. We
check L = sum(y * c) with c drawn at random.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .tensor import Tensor, no_grad


class GradcheckError(AssertionError):
    """Raised by `check_grad` / `check_vjp` when analytic and numeric gradients disagree."""


def _as_float64(name, a):
    a = a.data if isinstance(a, Tensor) else np.asarray(a)
    if a.dtype != np.float64:
        raise TypeError(f"{name}: numeric gradients need float64 arrays (float32 central differences "
                        f"are off by ~1e-1); got dtype {a.dtype}")
    return a


def numerical_grad(f, *arrays, eps=1e-6):
    """Central-difference gradient of a scalar function of float64 arrays.

    Args:
        f: callable taking the arrays (positionally) and returning a number or 1-element array.
        arrays: float64 ndarrays (perturbed in place one element at a time, then restored).
        eps: step; error is O(eps^2) truncation + O(1e-16/eps) rounding.
    Returns:
        list of ndarrays, one per input, of its shape: (f(x + eps e_i) - f(x - eps e_i)) / (2 eps).
    Raises:
        TypeError: an array is not float64.
    """
    arrays = [_as_float64("numerical_grad", a) for a in arrays]
    grads = []
    for a in arrays:
        g = np.zeros_like(a)
        flat, gflat = a.reshape(-1), g.reshape(-1)
        if not np.shares_memory(flat, a) and a.size:
            raise ValueError("numerical_grad: arrays must be contiguous so they can be perturbed in place")
        for i in range(a.size):
            old = flat[i]
            flat[i] = old + eps
            fp = float(np.asarray(f(*arrays)).reshape(()))
            flat[i] = old - eps
            fm = float(np.asarray(f(*arrays)).reshape(()))
            flat[i] = old
            gflat[i] = (fp - fm) / (2 * eps)
        grads.append(g)
    return grads


@dataclass
class GradReport:
    """Result of a check: per input, the largest absolute and relative error and where it is."""

    rows: list = field(default_factory=list)
    passed: bool = True

    def __str__(self):
        lines = [f"{'input':>10} {'shape':>14} {'max abs err':>12} {'max rel err':>12} {'worst index':>14}"]
        for r in self.rows:
            lines.append(f"{r['name']:>10} {str(r['shape']):>14} {r['abs']:12.3e} {r['rel']:12.3e} "
                         f"{str(r['index']):>14}")
        return "\n".join(lines)


def _inputs(inputs):
    tensors = []
    for i, x in enumerate(inputs):
        if isinstance(x, Tensor):
            tensors.append(x)
        else:
            a = np.asarray(x)
            tensors.append(Tensor(a, requires_grad=a.dtype.kind == "f", name=f"x{i}"))
    return tensors


def _compare(name, analytic, numeric, atol, rtol):
    err = np.abs(analytic - numeric)
    tol = atol + rtol * np.abs(numeric)
    idx = np.unravel_index(np.argmax(err - tol), err.shape) if err.size else ()
    rel = err / np.maximum(np.abs(numeric), 1e-12) if err.size else err
    row = dict(name=name, shape=analytic.shape, abs=float(err.max()) if err.size else 0.0,
               rel=float(rel[idx]) if err.size else 0.0, index=tuple(int(i) for i in idx),
               analytic=float(analytic[idx]) if err.size else 0.0,
               numeric=float(numeric[idx]) if err.size else 0.0,
               ok=bool(np.all(err <= tol)))
    return row


def _autograd_and_numeric(fn, inputs, cotangent, seed, eps, who):
    """The shared core of check_grad and compare: L = sum(fn(x) * c); returns the checked tensors,
    c, autograd's gradients and central-difference gradients (zeros for an input fn ignores)."""
    tensors = _inputs(inputs)
    checked = [t for t in tensors if t.requires_grad]
    for t in checked:
        _as_float64(who, t)
        t.grad = None
    out = fn(*tensors)
    if isinstance(cotangent, str):
        rng = np.random.default_rng(seed)
        c = rng.standard_normal(out.shape) if cotangent == "random" else np.ones(out.shape)
    else:
        c = np.asarray(cotangent, dtype=np.float64)
    c = c.astype(out.dtype)
    out.backward(c)
    analytic = [t.grad if t.grad is not None else np.zeros_like(t.data) for t in checked]

    def loss(*_):
        with no_grad():
            return float(np.sum(fn(*tensors).data * c))

    numeric = numerical_grad(loss, *[t.data for t in checked], eps=eps)
    return tensors, checked, c, analytic, numeric


def check_grad(fn, *inputs, cotangent="random", eps=1e-6, atol=1e-6, rtol=1e-5, seed=0,
               raise_on_failure=True):
    """Compare autograd's gradient of fn with central differences, for every float input.

    L = sum(fn(*inputs) * c) with a random normal cotangent c (never all ones unless
    cotangent="ones" is asked for explicitly, or given as an array).

    Args:
        fn: callable taking Tensors and returning a Tensor.
        inputs: float64 ndarrays or Tensors (Tensors with requires_grad are checked, e.g. model
            parameters; arrays of integer dtype are passed through as constants).
        atol, rtol: pass when |analytic - numeric| <= atol + rtol*|numeric| everywhere.
    Returns:
        GradReport (rows per input: max abs/rel error, worst index).
    Raises:
        GradcheckError: on disagreement (names the input, the worst element's index, analytic and
            numeric values, absolute and relative error) when raise_on_failure.
        TypeError: a checked input is not float64.
    """
    _, checked, _, analytic, numeric = _autograd_and_numeric(fn, inputs, cotangent, seed, eps, "check_grad")
    report = GradReport()
    for k, (t, a, n) in enumerate(zip(checked, analytic, numeric, strict=True)):
        row = _compare(t.name or f"input{k}", a, n, atol, rtol)
        report.rows.append(row)
        report.passed &= row["ok"]
    if not report.passed and raise_on_failure:
        bad = next(r for r in report.rows if not r["ok"])
        raise GradcheckError(
            f"gradient mismatch for {bad['name']} (shape {bad['shape']}) at index {bad['index']}: "
            f"analytic {bad['analytic']:.8g}, numeric {bad['numeric']:.8g}, abs err {bad['abs']:.3e}, "
            f"rel err {bad['rel']:.3e}\n{report}")
    return report


def check_vjp(fn, *inputs, n_directions=3, eps=1e-6, rtol=1e-5, atol=1e-8, seed=0, raise_on_failure=True):
    """Random-direction check for large functions (a whole model): O(1) forward passes per direction.

    For a random cotangent c and random direction v over all checked inputs jointly, compare
    <grad L, v> (autograd) with (L(x + eps v) - L(x - eps v)) / (2 eps), L = sum(fn(x) * c).

    Returns:
        list of (analytic, numeric) pairs, one per direction.
    Raises:
        GradcheckError: |analytic - numeric| > atol + rtol*|numeric| for some direction.
    """
    tensors = _inputs(inputs)
    checked = [t for t in tensors if t.requires_grad]
    for t in checked:
        _as_float64("check_vjp", t)
        t.grad = None
    rng = np.random.default_rng(seed)
    out = fn(*tensors)
    c = rng.standard_normal(out.shape).astype(out.dtype)
    out.backward(c)
    grads = [t.grad if t.grad is not None else np.zeros_like(t.data) for t in checked]
    results = []
    for _ in range(n_directions):
        vs = [rng.standard_normal(t.shape) for t in checked]
        analytic = float(sum(np.sum(g * v) for g, v in zip(grads, vs, strict=True)))
        vals = []
        for sign in (1, -1):
            for t, v in zip(checked, vs, strict=True):
                t.data += sign * eps * v
            with no_grad():
                vals.append(float(np.sum(fn(*tensors).data * c)))
            for t, v in zip(checked, vs, strict=True):
                t.data -= sign * eps * v
        numeric = (vals[0] - vals[1]) / (2 * eps)
        results.append((analytic, numeric))
        if raise_on_failure and abs(analytic - numeric) > atol + rtol * abs(numeric):
            raise GradcheckError(f"directional derivative mismatch: analytic {analytic:.10g}, numeric "
                                 f"{numeric:.10g}, abs err {abs(analytic - numeric):.3e}")
    return results


def check_function(fn_cls, *arrays, **consts):
    """check_grad for one Function class on plain float64 arrays (constants by keyword)."""
    return check_grad(lambda *ts: fn_cls.apply(*ts, **consts), *arrays)


def compare(fn, *inputs, hand=None, eps=1e-6, seed=0, show=True):
    """Print, for a learner, hand-written vs autograd vs numeric gradients side by side.

    Args:
        fn: callable taking Tensors, returning a Tensor; L = sum(fn(x) * c), c random (seed).
        inputs: float64 arrays (named x0, x1, ... unless Tensors with names are given).
        hand: optional callable (c, *arrays) -> list of gradients (your own derivation), one per
            float input, given the same cotangent c.
    Returns:
        list of dict rows: name, max |hand - autograd|, max |autograd - numeric|, max |hand - numeric|.
    """
    tensors, checked, c, auto, num = _autograd_and_numeric(fn, inputs, "random", seed, eps, "compare")
    hands = hand(c, *[t.data for t in tensors]) if hand is not None else [None] * len(checked)
    rows = []
    for k, (t, h, a, n) in enumerate(zip(checked, hands, auto, num, strict=True)):
        first = (None if h is None else float(h.flat[0]), float(a.flat[0]), float(n.flat[0]))
        rows.append(dict(name=t.name or f"input{k}", first=first,
                         hand_auto=None if h is None else float(np.max(np.abs(h - a))),
                         auto_num=float(np.max(np.abs(a - n))),
                         hand_num=None if h is None else float(np.max(np.abs(h - n)))))
    if show:
        def fmt(v):
            return "      -     " if v is None else f"{v:12.3e}"
        print(f"{'input':>8} | {'first elem: hand':>16} {'autograd':>12} {'numeric':>12} | "
              f"{'|hand-auto|':>12} {'|auto-num|':>12} {'|hand-num|':>12}")
        for r in rows:
            h, a, n = r["first"]
            hs = "-" if h is None else f"{h:.6g}"
            print(f"{r['name']:>8} | {hs:>16} {a:12.6g} {n:12.6g} | {fmt(r['hand_auto'])} "
                  f"{fmt(r['auto_num'])} {fmt(r['hand_num'])}")
    return rows
