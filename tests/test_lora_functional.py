"""Tests for minilora.lora.functional: the hand-derived LoRA forward/backward pass.

Oracles: the dense reference (ΔW formed explicitly) for the forward pass, central finite
differences in float64 against a random cotangent for the backward pass, plus exact facts
(B = 0 gives dA = 0; the scaling rule; the dropout mask in dx; dtype handling; error messages).
"""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minilora.gradcheck import numerical_grad
from minilora.lora.functional import (
    LoraCache,
    lora_backward,
    lora_forward,
    lora_forward_reference,
    lora_merge_delta,
)

# ----------------------------------------------------------------------------- strategies


@st.composite
def lora_cases(draw, allow_bias=True):
    """A random LoRA problem: shapes, scaling (alpha != r), mask/keep_prob, slices, float64 values."""
    d_in = draw(st.integers(1, 12))
    grouped = draw(st.booleans())
    if grouped:
        # fused c_attn-like projection of width 3*w; LoRA adapts a non-empty subset of q, k, v
        w = draw(st.integers(1, 4))
        d_out = 3 * w
        enable = draw(st.lists(st.booleans(), min_size=3, max_size=3).filter(any))
        slices = [(i * w, (i + 1) * w) for i in range(3) if enable[i]]
    else:
        d_out = draw(st.integers(1, 12))
        slices = None
    r = draw(st.integers(1, min(d_in, d_out)))
    lora_alpha = draw(st.sampled_from([0.5, 1, 2, 3, 4, 8, 16]).filter(lambda a: a != r))
    scaling = lora_alpha / r
    lead = draw(st.one_of(st.tuples(st.integers(1, 5)),
                          st.tuples(st.integers(1, 3), st.integers(1, 3))))
    keep_prob = draw(st.sampled_from([1.0, 0.5, 0.8]))
    use_mask = draw(st.booleans())
    bias = draw(st.booleans()) if allow_bias else False
    seed = draw(st.integers(0, 2**32 - 1))

    rng = np.random.default_rng(seed)
    g = 1 if slices is None else len(slices)
    width = d_out if slices is None else sum(b - a for a, b in slices)
    case = dict(
        x=rng.uniform(-1, 1, (*lead, d_in)),
        W0=rng.uniform(-1, 1, (d_out, d_in)),
        b=rng.uniform(-1, 1, d_out) if bias else None,
        A=rng.uniform(-1, 1, (g * r, d_in)),
        B=rng.uniform(-1, 1, (width, r)),
        scaling=scaling,
        dropout_mask=(rng.random((*lead, d_in)) < 0.7).astype(np.float64) if use_mask else None,
        keep_prob=keep_prob,
        slices=slices,
    )
    return case, rng


# ----------------------------------------------------------------------------- forward


@settings(max_examples=100)
@given(lora_cases())
def test_forward_matches_dense_reference(case_rng):
    case, _ = case_rng
    y, cache = lora_forward(**case)
    y_ref = lora_forward_reference(**case)
    assert y.shape == case["x"].shape[:-1] + (case["W0"].shape[0],)
    assert y.dtype == np.float64
    np.testing.assert_allclose(y, y_ref, rtol=1e-12, atol=1e-13)
    assert isinstance(cache, LoraCache)


def test_scaling_rule_alpha_16_rank_8_gives_64():
    x = np.ones((1, 4))
    A = np.ones((8, 4))                    # r = 8
    B = np.ones((4, 8))
    lora_alpha = 16
    scaling = lora_alpha / 8               # 2.0
    y, _ = lora_forward(x, np.zeros((4, 4)), np.zeros(4), A, B, scaling)
    # u = x A^T = 4 per rank; u B^T = 8 * 4 = 32; times scaling 2 = 64
    np.testing.assert_array_equal(y, np.full((1, 4), 64.0))
    np.testing.assert_array_equal(lora_forward_reference(x, np.zeros((4, 4)), np.zeros(4), A, B,
                                                         scaling), y)


def test_slices_leave_unadapted_rows_untouched():
    rng = np.random.default_rng(1)
    C = 4
    x = rng.standard_normal((2, 3, 5))
    W0 = rng.standard_normal((3 * C, 5))
    A, B = rng.standard_normal((2 * 2, 5)), rng.standard_normal((2 * C, 2))
    y, _ = lora_forward(x, W0, None, A, B, 0.75, slices=[(0, C), (2 * C, 3 * C)])
    base = x @ W0.T
    np.testing.assert_array_equal(y[..., C:2 * C], base[..., C:2 * C])      # k slice: frozen only
    assert not np.allclose(y[..., :C], base[..., :C])
    # the group order follows the slices order, not the row order
    y2, _ = lora_forward(x, W0, None, A[[2, 3, 0, 1]], np.concatenate([B[C:], B[:C]]), 0.75,
                         slices=[(2 * C, 3 * C), (0, C)])
    np.testing.assert_allclose(y2, y, rtol=1e-12)


def test_no_mask_means_no_copy_of_x():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((3, 4, 5))
    _, cache = lora_forward(x, rng.standard_normal((6, 5)), None, rng.standard_normal((2, 5)),
                            rng.standard_normal((6, 2)), 2.0, keep_prob=0.5)
    assert np.shares_memory(cache.x_tilde, x)
    assert cache.mask is None


def test_bool_and_int_masks_equal_float_mask():
    rng = np.random.default_rng(3)
    x, W0 = rng.standard_normal((4, 5)), rng.standard_normal((3, 5))
    A, B = rng.standard_normal((2, 5)), rng.standard_normal((3, 2))
    m = rng.random((4, 5)) < 0.5
    G = rng.standard_normal((4, 3))
    outs = []
    for mask in (m, m.astype(np.int64), m.astype(np.float64)):
        y, c = lora_forward(x, W0, None, A, B, 1.5, dropout_mask=mask, keep_prob=0.5)
        assert y.dtype == np.float64
        outs.append((y, lora_backward(G, c)))
    for y, grads in outs[1:]:
        np.testing.assert_array_equal(y, outs[0][0])
        for k in ("dx", "dA", "dB"):
            np.testing.assert_array_equal(grads[k], outs[0][1][k])


def test_merge_delta():
    rng = np.random.default_rng(4)
    A, B = rng.standard_normal((3, 5)), rng.standard_normal((7, 3))
    np.testing.assert_allclose(lora_merge_delta(A, B, 0.5), 0.5 * B @ A, rtol=1e-14)
    A2, B2 = rng.standard_normal((6, 5)), rng.standard_normal((4, 3))
    dW = lora_merge_delta(A2, B2, 2.0, [(0, 2), (4, 6)], 6)
    assert dW.shape == (6, 5)
    np.testing.assert_array_equal(dW[2:4], 0.0)
    np.testing.assert_allclose(dW[0:2], 2.0 * B2[0:2] @ A2[0:3], rtol=1e-14)
    np.testing.assert_allclose(dW[4:6], 2.0 * B2[2:4] @ A2[3:6], rtol=1e-14)
    with pytest.raises(ValueError, match="d_out"):
        lora_merge_delta(A2, B2, 2.0, [(0, 2), (4, 6)])


# ----------------------------------------------------------------------------- backward


@settings(max_examples=100)
@given(lora_cases())
def test_backward_matches_finite_differences(case_rng):
    case, rng = case_rng
    y, cache = lora_forward(**case)
    G = rng.standard_normal(y.shape)                       # random cotangent, never all ones
    need_db = case["b"] is not None
    grads = lora_backward(G, cache, need_dx=True, need_db=need_db)

    def loss():
        return float(np.sum(G * lora_forward(**case)[0]))

    wrt = {"x": "dx", "A": "dA", "B": "dB"}
    if need_db:
        wrt["b"] = "db"
    else:
        assert grads["db"] is None
    for arg, key in wrt.items():
        (num,) = numerical_grad(lambda _perturbed: loss(), case[arg])   # perturbs case[arg] in place
        assert grads[key].shape == case[arg].shape, key
        assert grads[key].dtype == np.float64, key
        np.testing.assert_allclose(grads[key], num, rtol=1e-6, atol=1e-7, err_msg=key)


@given(lora_cases())
def test_zero_B_gives_exactly_zero_dA_and_nonzero_dB(case_rng):
    case, rng = case_rng
    case["B"] = np.zeros_like(case["B"])
    case["x"] = case["x"] + np.where(case["x"] >= 0, 0.1, -0.1)   # no zero entries in x
    case["dropout_mask"] = None                                    # x̃ = x, nonzero
    y, cache = lora_forward(**case)
    G = rng.standard_normal(y.shape)
    grads = lora_backward(G, cache)
    assert np.all(grads["dA"] == 0.0)
    assert np.any(grads["dB"] != 0.0)
    np.testing.assert_allclose(grads["dx"], G @ case["W0"], rtol=1e-12, atol=1e-14)


def test_dropout_mask_appears_in_dx():
    rng = np.random.default_rng(5)
    N, d_in, d_out, r, j = 6, 5, 4, 2, 3
    x = rng.standard_normal((N, d_in))
    A, B = rng.standard_normal((r, d_in)), rng.standard_normal((d_out, r))
    G = rng.standard_normal((N, d_out))
    mask = np.ones((N, d_in))
    mask[:, j] = 0.0
    zeros_W0 = np.zeros((d_out, d_in))                     # dx is then the LoRA part alone
    _, c = lora_forward(x, zeros_W0, None, A, B, 1.25, dropout_mask=mask, keep_prob=0.8)
    dx_lora = lora_backward(G, c)["dx"]
    np.testing.assert_array_equal(dx_lora[:, j], 0.0)
    # kept columns get the LoRA gradient scaled by 1/keep_prob
    _, c1 = lora_forward(x, zeros_W0, None, A, B, 1.25)
    dx_nomask = lora_backward(G, c1)["dx"]
    assert np.all(dx_nomask[:, j] != 0.0)                  # the test has teeth
    keep = [k for k in range(d_in) if k != j]
    np.testing.assert_allclose(dx_lora[:, keep], dx_nomask[:, keep] / 0.8, rtol=1e-12)
    # with a real W0, column j still gets the frozen-path gradient G @ W0
    W0 = rng.standard_normal((d_out, d_in))
    _, c2 = lora_forward(x, W0, None, A, B, 1.25, dropout_mask=mask, keep_prob=0.8)
    dx = lora_backward(G, c2)["dx"]
    np.testing.assert_allclose(dx[:, j], (G @ W0)[:, j], rtol=1e-12)


def test_need_flags():
    rng = np.random.default_rng(6)
    x, W0, b = rng.standard_normal((2, 3, 4)), rng.standard_normal((5, 4)), rng.standard_normal(5)
    A, B = rng.standard_normal((2, 4)), rng.standard_normal((5, 2))
    y, c = lora_forward(x, W0, b, A, B, 3.0)
    G = rng.standard_normal(y.shape)
    out = lora_backward(G, c, need_dx=False)
    assert set(out) == {"dx", "dA", "dB", "db"}
    assert out["dx"] is None and out["db"] is None
    out = lora_backward(G, c, need_db=True)
    assert out["dx"].shape == x.shape
    np.testing.assert_allclose(out["db"], G.sum(axis=(0, 1)), rtol=1e-12)
    _, c_nobias = lora_forward(x, W0, None, A, B, 3.0)
    with pytest.raises(ValueError, match="need_db"):
        lora_backward(G, c_nobias, need_db=True)


# ----------------------------------------------------------------------------- dtypes


def _f32_problem(seed=7, slices=None):
    rng = np.random.default_rng(seed)
    d_out = 6
    width = d_out if slices is None else sum(b - a for a, b in slices)
    g = 1 if slices is None else len(slices)
    return dict(
        x=rng.standard_normal((2, 3, 4)).astype(np.float32),
        W0=rng.standard_normal((d_out, 4)).astype(np.float32),
        b=rng.standard_normal(d_out).astype(np.float32),
        A=rng.standard_normal((g * 2, 4)).astype(np.float32),
        B=rng.standard_normal((width, 2)).astype(np.float32),
        scaling=np.float64(1.5),                           # a float64 scalar must not upcast
        dropout_mask=(rng.random((2, 3, 4)) < 0.7).astype(np.float32),
        keep_prob=np.float64(0.8),
        slices=slices,
    ), rng


@pytest.mark.parametrize("slices", [None, [(0, 2), (4, 6)]])
def test_float32_kept_and_close_to_float64(slices):
    case, rng = _f32_problem(slices=slices)
    y, c = lora_forward(**case)
    assert y.dtype == np.float32
    G = rng.standard_normal(y.shape).astype(np.float32)
    grads = lora_backward(G, c, need_db=True)
    for k, v in grads.items():
        assert v.dtype == np.float32, k
    case64 = {k: (v.astype(np.float64) if isinstance(v, np.ndarray) else v) for k, v in case.items()}
    y64, c64 = lora_forward(**case64)
    grads64 = lora_backward(G.astype(np.float64), c64, need_db=True)
    np.testing.assert_allclose(y, y64, rtol=1e-4, atol=1e-5)
    for k in grads:
        np.testing.assert_allclose(grads[k], grads64[k], rtol=1e-4, atol=1e-5, err_msg=k)


@pytest.mark.parametrize("name", ["x", "W0", "b", "A", "B", "dropout_mask"])
def test_mixed_dtypes_raise_type_error_naming_arrays(name):
    case, _ = _f32_problem()
    case[name] = case[name].astype(np.float64)
    with pytest.raises(TypeError, match=name):
        lora_forward(**case)
    with pytest.raises(TypeError, match=name):
        lora_forward_reference(**case)


def test_integer_input_and_mixed_grad_out_raise_type_error():
    case, rng = _f32_problem()
    case["x"] = np.ones((2, 3, 4), dtype=np.int64)
    with pytest.raises(TypeError, match="x"):
        lora_forward(**case)
    case, rng = _f32_problem()
    y, c = lora_forward(**case)
    with pytest.raises(TypeError, match="grad_out"):
        lora_backward(np.ones(y.shape), c)                 # float64 grad for a float32 pass


# ----------------------------------------------------------------------------- shape errors


def _good(rng=None):
    rng = rng or np.random.default_rng(8)
    return dict(x=rng.standard_normal((2, 3, 4)), W0=rng.standard_normal((6, 4)),
                b=rng.standard_normal(6), A=rng.standard_normal((2, 4)),
                B=rng.standard_normal((6, 2)), scaling=2.0,
                dropout_mask=np.ones((2, 3, 4)), keep_prob=0.5, slices=None)


BAD = [
    # (argument named in the message, overrides)
    ("x", dict(x=np.zeros((2, 3, 5)))),                                    # last dim != d_in
    ("x", dict(x=np.float64(1.0) * np.ones(()))),                          # 0-d
    ("W0", dict(W0=np.zeros(6))),                                          # not 2-D
    ("b", dict(b=np.zeros(5))),
    ("A", dict(A=np.zeros((2, 5)))),                                       # cols != d_in
    ("A", dict(A=np.zeros((3, 4)))),                                       # rows != g*r
    ("B", dict(B=np.zeros((5, 2)))),                                       # rows != d_out
    ("B", dict(slices=[(0, 2), (4, 6)], A=np.zeros((4, 4)))),              # rows != slice width 4
    ("A", dict(slices=[(0, 3), (3, 6)])),                                  # A rows != 2*r
    ("slices", dict(slices=[(4, 7)], B=np.zeros((3, 2)))),                 # stop > d_out
    ("slices", dict(slices=[(-1, 2)], B=np.zeros((3, 2)))),                # start < 0
    ("slices", dict(slices=[(2, 2)], B=np.zeros((0, 2)))),                 # empty
    ("overlap", dict(slices=[(0, 3), (2, 5)], B=np.zeros((6, 2)), A=np.zeros((4, 4)))),
    ("dropout_mask", dict(dropout_mask=np.ones((2, 3, 5)))),
    ("dropout_mask", dict(dropout_mask=np.ones((6, 4)))),                  # same size, other shape
    ("keep_prob", dict(keep_prob=0.0)),
    ("keep_prob", dict(keep_prob=1.5)),
]


@pytest.mark.parametrize("name,overrides", BAD, ids=[f"{n}-{i}" for i, (n, _) in enumerate(BAD)])
def test_shape_errors_name_the_argument(name, overrides):
    case = _good()
    lora_forward(**case)                                   # the unmodified case is valid
    case.update(overrides)
    with pytest.raises(ValueError, match=name):
        lora_forward(**case)
    with pytest.raises(ValueError, match=name):
        lora_forward_reference(**case)


def test_shape_error_messages_give_both_shapes():
    case = _good()
    case["A"] = np.zeros((2, 5))
    with pytest.raises(ValueError, match=r"\(2, 5\).*\(6, 4\)"):
        lora_forward(**case)
    case = _good()
    case["dropout_mask"] = np.ones((2, 3, 5))
    with pytest.raises(ValueError, match=r"\(2, 3, 5\).*\(2, 3, 4\)"):
        lora_forward(**case)


def test_backward_rejects_wrong_grad_out_shape_and_bad_cache():
    y, c = lora_forward(**_good())
    with pytest.raises(ValueError, match=r"grad_out.*\(2, 3, 5\).*\(2, 3, 6\)"):
        lora_backward(np.zeros((2, 3, 5)), c)
    with pytest.raises(ValueError, match="grad_out"):
        lora_backward(np.zeros((6, 6)), c)                 # same size, other shape
    with pytest.raises(TypeError, match="cache"):
        lora_backward(np.zeros(y.shape), {"u": None})
