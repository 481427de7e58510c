"""The gradient-checking API: it passes correct ops, catches broken ones (including a bug an all-ones
cotangent cannot see), reports where and by how much, refuses float32, and prints a readable table."""
from __future__ import annotations

import re

import numpy as np
import pytest

from minilora import (
    Function,
    GradcheckError,
    Tensor,
    check_function,
    check_grad,
    check_vjp,
    compare,
    numerical_grad,
    ops,
)


class SumIgnoringG(Function):
    """Row sums whose backward returns ones instead of broadcasting g: right only when g is all ones."""

    @staticmethod
    def forward(ctx, x):
        ctx.shape = x.shape
        return x.sum(axis=-1)

    @staticmethod
    def backward(ctx, g):
        return (np.ones(ctx.shape, dtype=g.dtype),)


class ScaleWrongAtOne(Function):
    """y = x * [1, 2, 3, 4] whose backward uses 40 instead of 4 for the last entry."""

    W = np.array([1.0, 2.0, 3.0, 4.0])

    @staticmethod
    def forward(ctx, x):
        return x * ScaleWrongAtOne.W

    @staticmethod
    def backward(ctx, g):
        return (g * np.array([1.0, 2.0, 3.0, 40.0]),)


X = np.random.default_rng(0).standard_normal((3, 4))


def test_check_grad_passes_correct_ops():
    rep = check_grad(lambda a, b: ops.tanh(a * b).sum(axis=0), X.copy(), X[0].copy())
    assert rep.passed and len(rep.rows) == 2
    assert max(r["abs"] for r in rep.rows) < 1e-8
    assert check_function(ops.Softmax, X.copy(), axis=0).passed


def test_all_ones_cotangent_misses_a_backward_that_ignores_g():
    assert check_grad(SumIgnoringG.apply, X.copy(), cotangent="ones").passed      # invisible to ones
    with pytest.raises(GradcheckError):
        check_grad(SumIgnoringG.apply, X.copy())                                   # random cotangent
    with pytest.raises(GradcheckError):
        check_grad(SumIgnoringG.apply, X.copy(), cotangent=np.arange(3.0))


def test_failure_message_names_worst_index_analytic_and_numeric():
    x = np.array([0.5, -1.0, 2.0, 1.5])
    with pytest.raises(GradcheckError) as e:
        check_grad(ScaleWrongAtOne.apply, x, cotangent="ones")
    msg = str(e.value)
    assert "x0" in msg and "index (3,)" in msg
    m = re.search(r"analytic ([-\d.e+]+), numeric ([-\d.e+]+)", msg)
    assert m and float(m.group(1)) == 40.0 and abs(float(m.group(2)) - 4.0) < 1e-6
    rep = check_grad(ScaleWrongAtOne.apply, x, cotangent="ones", raise_on_failure=False)
    assert not rep.passed and rep.rows[0]["index"] == (3,) and "worst index" in str(rep)


def test_float32_is_rejected():
    with pytest.raises(TypeError, match="float64"):
        numerical_grad(lambda a: a.sum(), np.ones(3, np.float32))
    with pytest.raises(TypeError, match="float64"):
        check_grad(ops.exp, np.ones(3, np.float32))
    with pytest.raises(TypeError, match="float64"):
        check_vjp(ops.exp, np.ones(3, np.float32))


def test_numerical_grad_is_accurate_and_restores_inputs():
    x = np.array([[0.3, -1.2], [2.0, 0.7]])
    y = np.array(1.5)
    x0, y0 = x.copy(), y.copy()
    gx, gy = numerical_grad(lambda a, b: np.sum(a ** 3) * b, x, y)
    np.testing.assert_allclose(gx, 3 * x0 ** 2 * 1.5, atol=1e-8)
    np.testing.assert_allclose(gy, np.sum(x0 ** 3), atol=1e-8)
    np.testing.assert_array_equal(x, x0)
    np.testing.assert_array_equal(y, y0)


def test_check_vjp_on_a_small_composition_and_a_broken_op():
    rng = np.random.default_rng(1)
    x, W = rng.standard_normal((2, 3, 4)), rng.standard_normal((5, 4))
    w, b = rng.standard_normal(5), rng.standard_normal(5)
    def fn(x, W, w, b):
        return ops.gelu(ops.layer_norm(ops.linear(x, W), w, b))
    res = check_vjp(fn, x, W, w, b)
    assert len(res) == 3 and all(abs(a - n) < 1e-6 * (1 + abs(n)) for a, n in res)
    with pytest.raises(GradcheckError, match="directional"):
        check_vjp(lambda x: ops.tanh(SumIgnoringG.apply(x)), rng.standard_normal((3, 4)))


def test_reports_work_with_unnamed_tensors_and_unused_inputs(capsys):
    # Tensors without a name and an input the output does not depend on must not break reporting
    a = Tensor(X.copy(), requires_grad=True)
    unused = Tensor(X[0].copy(), requires_grad=True)
    rep = check_grad(lambda a, u: ops.exp(a), a, unused)
    assert rep.passed and "input0" in str(rep) and "input1" in str(rep)
    rows = compare(lambda a, u: ops.exp(a), Tensor(X.copy(), requires_grad=True),
                   Tensor(X[0].copy(), requires_grad=True))
    assert [r["name"] for r in rows] == ["input0", "input1"] and rows[1]["auto_num"] == 0.0
    assert "input0" in capsys.readouterr().out
    check_vjp(lambda a, u: ops.exp(a), Tensor(X.copy(), requires_grad=True), Tensor(X[0].copy(), requires_grad=True))


def test_compare_prints_hand_autograd_numeric(capsys):
    x = X.copy()
    def hand(c, a):
        return [c * (1 - np.tanh(a) ** 2)]
    rows = compare(ops.tanh, x, hand=hand)
    out = capsys.readouterr().out
    header = out.splitlines()[0]
    for col in ("hand", "autograd", "numeric", "|hand-auto|", "|auto-num|", "|hand-num|"):
        assert col in header
    assert "x0" in out.splitlines()[1]
    r = rows[0]
    assert r["hand_auto"] < 1e-15 and r["auto_num"] < 1e-8 and r["hand_num"] < 1e-8
    compare(ops.tanh, x)                                   # without a hand derivation: dashes
    out = capsys.readouterr().out
    assert "-" in out.splitlines()[1]
    assert compare(ops.tanh, x, show=False) and capsys.readouterr().out == ""
