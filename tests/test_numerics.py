"""Numerics that match the field's references: float32 sums over many rows, layer norm of constant
rows at any magnitude, and the gradient of x ** p at x = 0.

Each fault is tested as a kind (every reduction path, every magnitude, every exponent class), with the
reported example's right value asserted.
"""
from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from minilora import Tensor, ops, unbroadcast
from minilora.function import reduce_sum

ROWS = 65536            # the row count of the Linear bias-gradient example
REL = 5e-7              # a few float32 ulps; row-by-row float32 accumulation gave 1.3e-6 to 1.5e-5 here


def _rel_err(got, exact):
    return float(np.max(np.abs(np.asarray(got, np.float64) - exact)) / np.max(np.abs(exact)))


# ================================================================ float32 reductions over many rows
def test_mean_of_2_20_rows_of_a_tenth_is_a_tenth():
    x = np.full((2 ** 20, 2), 0.1, dtype=np.float32)
    y = ops.mean(Tensor(x), axis=0)                      # was 0.10099 (row-by-row float32 sum)
    assert y.dtype == np.float32
    np.testing.assert_allclose(y.data, [0.1, 0.1], rtol=1e-6)


@given(st.data())
def test_reduce_sum_error_does_not_grow_with_the_rows_on_any_axes(data):
    """Every axis set (leading, trailing, middle, all), keepdims or not, contiguous or transposed."""
    lead = data.draw(st.sampled_from([ROWS, ROWS - 1, 4097]), label="rows")
    width = data.draw(st.integers(1, 3), label="width")
    layout = data.draw(st.sampled_from(["rows-first", "rows-last", "rows-middle"]), label="layout")
    shape = {"rows-first": (lead, width), "rows-last": (width, lead), "rows-middle": (2, lead, width)}[layout]
    rng = np.random.default_rng(data.draw(st.integers(0, 2 ** 16), label="seed"))
    x = (data.draw(st.floats(0.01, 100.0), label="offset") + rng.random(shape)).astype(np.float32)
    if data.draw(st.booleans(), label="transposed"):
        x = x.T                                           # not C-contiguous
    nd = x.ndim
    axes = data.draw(st.sampled_from([c for k in range(1, nd + 1) for c in itertools.combinations(range(nd), k)]),
                     label="axes")
    keepdims = data.draw(st.booleans(), label="keepdims")
    got = reduce_sum(x, axes, keepdims)
    exact = x.astype(np.float64).sum(axis=axes, keepdims=keepdims)
    assert got.dtype == np.float32 and got.shape == exact.shape
    assert _rel_err(got, exact) < REL
    for op in (ops.sum, ops.mean):                        # the ops' forward passes use it
        y = op(Tensor(x), axis=axes, keepdims=keepdims)
        n = x.size // exact.size if op is ops.mean else 1
        assert y.dtype == np.float32 and _rel_err(y.data, exact / n) < REL


def _row_grads():
    """Every gradient that sums over the row axis, as (name, computed float32, float64 reference)."""
    rng = np.random.default_rng(0)
    C = 3
    g = (0.1 + 0.01 * rng.random((ROWS, C))).astype(np.float32)     # dL/dy ~ 0.1: errors of one sign add up
    x = rng.standard_normal((ROWS, C)).astype(np.float32)
    g64 = g.astype(np.float64)
    out = []
    for fn in (ops.linear, ops.linear_composed):
        W = Tensor(np.eye(C, dtype=np.float32), requires_grad=True)
        b = Tensor(np.zeros(C, np.float32), requires_grad=True)
        fn(Tensor(x), W, b).backward(g)
        out.append((f"{fn.__name__} db", b.grad, g64.sum(0)))
    for fn in (ops.layer_norm, ops.layer_norm_composed):
        w = Tensor(np.ones(C, np.float32), requires_grad=True)
        b = Tensor(np.zeros(C, np.float32), requires_grad=True)
        fn(Tensor(x), w, b).backward(g)
        xt = Tensor(x.astype(np.float64))
        xhat = ops.layer_norm(xt, Tensor(np.ones(C)), Tensor(np.zeros(C))).data
        out.append((f"{fn.__name__} dweight", w.grad, (g64 * xhat).sum(0)))
        out.append((f"{fn.__name__} dbias", b.grad, g64.sum(0)))
    g3 = g.reshape(ROWS // 64, 64, C)
    out.append(("unbroadcast (B, T, C) -> (C,)", unbroadcast(g3, (C,)), g64.sum(0)))
    out.append(("unbroadcast (B, T, C) -> (1, T, 1)", unbroadcast(g3, (1, 64, 1)),
                g64.reshape(g3.shape).sum(axis=(0, 2), keepdims=True)))
    for fn in (ops.sum, ops.mean):
        y = fn(Tensor(g, requires_grad=True), axis=0)
        n = ROWS if fn is ops.mean else 1
        out.append((f"{fn.__name__}(axis=0) forward", y.data, g64.sum(0) / n))
    v = Tensor(x + np.float32(1000.0), requires_grad=True)
    out.append(("var(axis=0) forward", ops.var(v, axis=0).data, (x.astype(np.float64) + 1000.0).var(axis=0)))
    wte = Tensor(np.zeros((5, C), np.float32), requires_grad=True)
    ops.embedding(wte, np.full(ROWS, 2)).backward(g)                 # one token seen 65536 times
    out.append(("embedding dweight", wte.grad[2], g64.sum(0)))
    return out


@pytest.mark.parametrize("name, got, exact", _row_grads(), ids=lambda v: v if isinstance(v, str) else "")
def test_row_sums_in_backward_do_not_drift_at_65536_rows(name, got, exact):
    assert got.dtype == np.float32
    assert _rel_err(got, exact) < REL, name              # was 6.1e-6 for Linear's db


def test_reduce_sum_keeps_float64_exactly_numpys():
    x = np.random.default_rng(1).standard_normal((33, 5, 7))
    for axes in [(0,), (1,), (2,), (0, 1), (0, 2), None]:
        np.testing.assert_array_equal(reduce_sum(x, axes), x.sum(axis=axes))


# ================================================================ layer norm of constant rows
magnitudes = st.builds(lambda m, e, s: s * m * 10.0 ** e, st.floats(1.0, 9.99), st.integers(-6, 9),
                       st.sampled_from([1.0, -1.0]))


def test_layer_norm_of_seven_values_of_1e6_plus_a_tenth_is_the_bias():
    for fn in (ops.layer_norm, ops.layer_norm_composed):
        x = Tensor(np.full((1, 7), 1e6 + 0.1, np.float32), requires_grad=True)
        w = Tensor(np.full(7, 2.0, np.float32), requires_grad=True)
        b = Tensor(np.full(7, 3.0, np.float32), requires_grad=True)
        y = fn(x, w, b)
        y.backward(np.ones((1, 7), np.float32))
        np.testing.assert_array_equal(y.data, 3.0)        # was 5.0
        np.testing.assert_array_equal(w.grad, 0.0)        # was 0.999
        np.testing.assert_array_equal(b.grad, 1.0)
        np.testing.assert_array_equal(x.grad, 0.0)


@given(value=magnitudes, C=st.integers(1, 9), rows=st.integers(1, 3),
       dtype=st.sampled_from([np.float32, np.float64]), fused=st.booleans(), seed=st.integers(0, 99))
def test_constant_rows_give_exactly_the_bias_at_any_magnitude(value, C, rows, dtype, fused, seed):
    rng = np.random.default_rng(seed)
    fn = ops.layer_norm if fused else ops.layer_norm_composed
    x = Tensor(np.full((rows, C), value, dtype), requires_grad=True)
    w = Tensor(rng.uniform(0.5, 2.0, C).astype(dtype), requires_grad=True)
    b = Tensor(rng.standard_normal(C).astype(dtype), requires_grad=True)
    g = rng.standard_normal((rows, C)).astype(dtype)
    y = fn(x, w, b)
    y.backward(g)
    np.testing.assert_array_equal(y.data, np.broadcast_to(b.data, (rows, C)))
    np.testing.assert_array_equal(w.grad, 0.0)
    np.testing.assert_allclose(b.grad, g.sum(0), rtol=1e-6)
    assert np.all(np.isfinite(x.grad))
    v = ops.var(Tensor(np.full((rows, C), value, dtype)), axis=-1)
    np.testing.assert_array_equal(v.data, 0.0)            # the variance of a constant slice is exactly 0


@given(offset=magnitudes, seed=st.integers(0, 99))
def test_layer_norm_with_a_large_offset_matches_float64(offset, seed):
    """Not only constant rows: a large common offset must not swamp a small spread (float32)."""
    x = 0.01 * abs(offset) * np.random.default_rng(seed).standard_normal((2, 8)) + offset
    x32 = x.astype(np.float32)
    ref = ops.layer_norm(Tensor(x32.astype(np.float64)), Tensor(np.ones(8)), Tensor(np.zeros(8))).data
    for fn in (ops.layer_norm, ops.layer_norm_composed):
        y = fn(Tensor(x32), Tensor(np.ones(8, np.float32)), Tensor(np.zeros(8, np.float32)))
        np.testing.assert_allclose(y.data, ref, atol=2e-4)


# ================================================================ pow at x = 0
def _pow_limit_at_zero(p):
    """d(x**p)/dx at x = 0 (the one-sided limit from x > 0 for fractional p), as PyTorch returns it."""
    if p == 0:
        return 0.0                                        # x**0 = 1 everywhere
    if p == 1:
        return 1.0
    if p > 1:
        return 0.0
    return np.inf                                         # 0 < p < 1: p * 0**(p - 1) = +inf


@given(p=st.one_of(st.sampled_from([0, 0.0, 1, 2, 3, 4, 1.5, 2.5, 0.5]), st.floats(1.01, 6.0)),
       dtype=st.sampled_from([np.float32, np.float64]), seed=st.integers(0, 99))
def test_pow_gradient_at_zero(p, dtype, seed):
    rng = np.random.default_rng(seed)
    x = np.concatenate([[0.0], rng.uniform(0.5, 3.0, 4)]).astype(dtype)
    t = Tensor(x, requires_grad=True)
    y = t ** p
    assert y.data[0] == (1.0 if p == 0 else 0.0)
    with np.errstate(divide="ignore"):                    # 0 < p < 1: the slope at 0 is +inf
        y.backward(np.ones_like(x))
    assert t.grad[0] == _pow_limit_at_zero(p)             # x ** 0 at 0 was nan
    np.testing.assert_allclose(t.grad[1:], p * x[1:].astype(np.float64) ** (p - 1), rtol=1e-5)


def test_x_to_the_zero_has_gradient_zero_everywhere_as_pytorch():
    x = Tensor(np.array([0.0, -2.0, 3.0, -0.0]), requires_grad=True)
    (x ** 0).sum().backward()
    np.testing.assert_array_equal(x.grad, [0.0, 0.0, 0.0, 0.0])
