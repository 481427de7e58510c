"""Tests for minilora.lora.layer: LoRAFunction (hand-derived) vs composed vs finite differences,
LoRALinear (frozen W0, init, scaling, dropout, enable_lora slices, merge/unmerge, saddle refusal).

Tolerances: float64 merge/unmerge and merged-vs-unmerged outputs agree to 1e-12 relative; in float32
a merge/unmerge round trip returns W0 within 4 ulp of |W0| + |ΔW| per element (layer.py docstring).
"""
import math
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minilora import check_grad, no_grad
from minilora.lora.functional import lora_merge_delta
from minilora.lora.layer import LoRAFunction, LoRALinear, lora_linear, lora_linear_composed
from minilora.nn import Linear
from minilora.rank import delta_weight as rank_delta_weight
from minilora.tensor import Tensor

# ----------------------------------------------------------------------------- strategies

@st.composite
def lora_problems(draw):
    """Non-square shapes drawn independently, r in 1..min, alpha != r, (N, d_in) or (B, T, d_in),
    fixed dropout masks or none, with slices (fused q,k,v subset) or without, bias trainable or not."""
    d_in = draw(st.integers(1, 7))
    if draw(st.booleans()):
        w = draw(st.integers(1, 3))
        d_out = 3 * w
        enable = draw(st.lists(st.booleans(), min_size=3, max_size=3).filter(any))
        slices = [(i * w, (i + 1) * w) for i in range(3) if enable[i]]
        width = w * len(slices)
    else:
        d_out = draw(st.integers(1, 7))
        slices, width = None, d_out
    r = draw(st.integers(1, min(d_in, width if slices is None else width // len(slices))))
    alpha = draw(st.sampled_from([0.5, 1.0, 3.0, 8.0, 16.0]).filter(lambda a: a != r))
    scaling = alpha / (math.sqrt(r) if draw(st.booleans()) else r)
    lead = draw(st.one_of(st.tuples(st.integers(1, 4)), st.tuples(st.integers(1, 2), st.integers(1, 3))))
    seed = draw(st.integers(0, 2**16))
    rng = np.random.default_rng(seed)
    g = 1 if slices is None else len(slices)
    x = rng.uniform(-2, 2, (*lead, d_in))
    W0 = rng.uniform(-1, 1, (d_out, d_in))
    b = rng.uniform(-1, 1, d_out) if draw(st.booleans()) else None
    A = rng.uniform(-1, 1, (g * r, d_in))
    B = rng.uniform(-1, 1, (width, r))
    mask, keep = None, 1.0
    if draw(st.booleans()):
        keep = draw(st.sampled_from([0.5, 0.8, 1.0]))
        mask = rng.random(x.shape) < keep
    return dict(x=x, W0=W0, b=b, A=A, B=B, scaling=scaling, mask=mask, keep_prob=keep, slices=slices,
                train_bias=draw(st.booleans()))


def _fns(p):
    """(fused, composed) callables of the Tensors (x, A, B[, b])."""
    consts = (p["scaling"], p["mask"], p["keep_prob"], p["slices"])
    b_const = p["b"]
    if p["b"] is not None and p["train_bias"]:
        def fused(x, A, B, b):
            return lora_linear(x, p["W0"], b, A, B, *consts)
        def comp(x, A, B, b):
            return lora_linear_composed(x, p["W0"], b, A, B, *consts)
    else:
        def fused(x, A, B):
            return lora_linear(x, p["W0"], b_const, A, B, *consts)
        def comp(x, A, B):
            return lora_linear_composed(x, p["W0"], b_const, A, B, *consts)
    return fused, comp


def _inputs(p):
    ins = [p["x"], p["A"], p["B"]]
    if p["b"] is not None and p["train_bias"]:
        ins.append(p["b"])
    return ins


# ----------------------------------------------------------------------------- LoRAFunction

@given(lora_problems())
@settings(max_examples=40)
def test_fused_equals_composed_equals_finite_differences(p):
    fused, comp = _fns(p)
    rng = np.random.default_rng(1)
    ts_f = [Tensor(a.copy(), requires_grad=True) for a in _inputs(p)]
    ts_c = [Tensor(a.copy(), requires_grad=True) for a in _inputs(p)]
    yf, yc = fused(*ts_f), comp(*ts_c)
    np.testing.assert_allclose(yf.data, yc.data, rtol=1e-12, atol=1e-12)
    c = rng.standard_normal(yf.shape)
    yf.backward(c)
    yc.backward(c)
    for tf, tc in zip(ts_f, ts_c, strict=True):
        np.testing.assert_allclose(tf.grad, tc.grad, rtol=1e-10, atol=1e-12)
    check_grad(fused, *[a.copy() for a in _inputs(p)], atol=1e-6, rtol=1e-5)


def test_check_function_on_lorafunction_directly():
    rng = np.random.default_rng(0)
    x, A, B = rng.standard_normal((3, 5)), rng.standard_normal((2, 5)), rng.standard_normal((4, 2))
    W0 = rng.standard_normal((4, 5))
    from minilora import check_function
    check_function(LoRAFunction, x, A, B, W0=W0, scaling=2.5)


def test_lora_function_needs_no_w0_gradient_and_refuses_trainable_w0():
    rng = np.random.default_rng(0)
    W0 = Tensor(rng.standard_normal((4, 5)), requires_grad=True)
    with pytest.raises(ValueError, match="W0 requires grad"):
        lora_linear(rng.standard_normal((2, 5)), W0, None, rng.standard_normal((2, 5)),
                    rng.standard_normal((4, 2)), 1.0)


def test_float32_dtype_kept():
    rng = np.random.default_rng(0)
    def f32(*s):
        return rng.standard_normal(s).astype(np.float32)
    A = Tensor(f32(2, 5), requires_grad=True)
    B = Tensor(f32(4, 2), requires_grad=True)
    y = lora_linear(Tensor(f32(3, 5)), f32(4, 5), f32(4), A, B, 2.0)
    assert y.dtype == np.float32
    y.backward(np.ones(y.shape, np.float32))
    assert A.grad.dtype == np.float32 and B.grad.dtype == np.float32


# ----------------------------------------------------------------------------- LoRALinear

def _layer(d_in=5, d_out=7, r=2, alpha=3.0, dtype=np.float64, seed=0, **kw):
    base = Linear(d_in, d_out, dtype=dtype, rng=seed)
    base.bias.data = np.random.default_rng(seed + 1).standard_normal(d_out).astype(dtype)
    return LoRALinear(base, r, alpha, rng=seed, **kw)


def test_names_shapes_and_frozen_base():
    base = Linear(5, 12, dtype=np.float64, rng=0)
    layer = LoRALinear(base, 2, 4.0, rng=0)
    names = dict(layer.named_parameters())
    assert list(names) == ["weight", "bias", "lora_A.weight", "lora_B.weight"]
    assert names["weight"] is base.weight and names["bias"] is base.bias
    assert names["lora_A.weight"].shape == (2, 5) and names["lora_B.weight"].shape == (12, 2)
    assert not layer.weight.requires_grad and not layer.bias.requires_grad
    assert layer.base.weight is layer.weight  # rank.py's view
    np.testing.assert_array_equal(rank_delta_weight(layer), layer.delta_weight())


def test_w0_gets_no_gradient_and_step0_gradients():
    layer = _layer()
    x = np.random.default_rng(3).standard_normal((2, 3, 5))
    y = layer(x)
    np.testing.assert_array_equal(y.data, x @ layer.weight.data.T + layer.bias.data)  # B = 0
    y.backward(np.random.default_rng(4).standard_normal(y.shape))
    assert layer.weight.grad is None and not layer.weight.requires_grad
    assert layer.bias.grad is None
    assert np.all(layer.lora_A.weight.grad == 0.0)        # dA = s (G B)ᵀ X̃ = 0 exactly when B = 0
    assert np.any(layer.lora_B.weight.grad != 0.0)        # dB = s Gᵀ (X̃ Aᵀ) != 0


def test_trainable_w0_is_refused():
    layer = _layer()
    layer.weight.requires_grad = True
    with pytest.raises(RuntimeError, match="never computes"):
        layer(np.ones((1, 5)))


def test_zero_a_and_b_is_refused_as_a_saddle():
    layer = _layer()
    layer.lora_A.weight.data[:] = 0.0
    with pytest.raises(ValueError, match="saddle"):
        layer(np.ones((1, 5)))
    with no_grad():                      # evaluating is fine
        layer(np.ones((1, 5)))


@pytest.mark.parametrize("use_rslora, expected", [(False, 64.0), (True, 181.01933598375618)])
def test_scaling_rule(use_rslora, expected):
    """x = 1 (1, 4), A = 1 (8, 4), B = 1 (4, 8), alpha 16, W0 = b = 0: x Aᵀ Bᵀ = 32 per output, times
    alpha / r = 2 gives 64 (rsLoRA: 16/sqrt(8) = 5.657 gives 181.02), never 32 * 16 = 512."""
    base = Linear(4, 4, dtype=np.float64)
    base.weight.data[:] = 0.0
    layer = LoRALinear(base, 8, 16, use_rslora=use_rslora)
    layer.lora_A.weight.data[:] = 1.0
    layer.lora_B.weight.data[:] = 1.0
    y = layer(np.ones((1, 4)))
    np.testing.assert_allclose(y.data, np.full((1, 4), expected), rtol=1e-14)
    assert expected == pytest.approx(16 / math.sqrt(8) * 32 if use_rslora else 64.0)
    layer.eval().merge()
    np.testing.assert_allclose(layer(np.ones((1, 4))).data, y.data, rtol=1e-14)


def test_scaling_changes_with_r_at_fixed_alpha():
    s = {r: LoRALinear(Linear(16, 16), r, 16).scaling for r in (1, 2, 4, 8)}
    assert s == {1: 16.0, 2: 8.0, 4: 4.0, 8: 2.0}
    s_rs = {r: LoRALinear(Linear(16, 16), r, 16, use_rslora=True).scaling for r in (1, 4, 16)}
    assert s_rs == {1: 16.0, 4: 8.0, 16: 4.0}


def test_init_variants():
    d_in = 400
    lay = LoRALinear(Linear(d_in, 300), 50, 8, rng=0)
    A = lay.lora_A.weight.data
    assert np.abs(A).max() <= 1 / math.sqrt(d_in) and np.abs(A).max() > 0.9 / math.sqrt(d_in)
    assert not lay.lora_B.weight.data.any()
    g = LoRALinear(Linear(d_in, 300), 50, 8, init_lora_weights="gaussian", rng=0)
    assert g.lora_A.weight.data.std() == pytest.approx(1 / 50, rel=0.05)
    assert not g.lora_B.weight.data.any()
    f = LoRALinear(Linear(d_in, 300), 50, 8, init_lora_weights=False, rng=0)
    assert np.abs(f.delta_weight()).max() > 0
    assert f.lora_A.weight.dtype == np.float32
    with pytest.raises(ValueError, match="init_lora_weights"):
        LoRALinear(Linear(4, 4), 2, 8, init_lora_weights="kaiming")


@pytest.mark.parametrize("kw, msg", [(dict(r=0), "r must"), (dict(r=2.5), "r must"), (dict(alpha=0), "lora_alpha"),
                                     (dict(lora_dropout=1.0), "lora_dropout"),
                                     (dict(enable_lora=[True, False]), "divisible"),
                                     (dict(enable_lora=[False, False, False]), "at least one")])
def test_layer_validation(kw, msg):
    r, alpha = kw.pop("r", 2), kw.pop("alpha", 4)
    with pytest.raises(ValueError, match=msg):
        LoRALinear(Linear(5, 9), r, alpha, **kw)
    with pytest.raises(TypeError):
        LoRALinear("not a linear", 2, 4)


def test_enable_lora_slices_qv():
    C, r = 6, 2
    lay = LoRALinear(Linear(C, 3 * C, dtype=np.float64, rng=0), r, 5, enable_lora=[True, False, True],
                     init_lora_weights=False, rng=0)
    assert lay.slices == [(0, C), (2 * C, 3 * C)]
    assert lay.lora_A.weight.shape == (2 * r, C) and lay.lora_B.weight.shape == (2 * C, r)
    assert lay.lora_A.weight.size + lay.lora_B.weight.size == 2 * r * (C + C)
    dW = lay.delta_weight()
    assert not dW[C:2 * C].any() and dW[:C].any() and dW[2 * C:].any()   # k untouched
    x = np.random.default_rng(0).standard_normal((3, C))
    with no_grad():
        y = lay(x).data
    np.testing.assert_allclose(y, x @ (lay.weight.data + dW).T + lay.bias.data, rtol=1e-12, atol=1e-12)


def test_lora_dropout_only_on_the_branch_and_only_in_training():
    lay = _layer(lora_dropout=0.5, init_lora_weights=False)
    x = np.random.default_rng(0).standard_normal((64, 5))
    state = lay.rng.bit_generator.state
    y = lay(x).data
    lay.rng.bit_generator.state = state
    mask = lay.rng.random(x.shape) >= 0.5                     # the mask the layer drew
    expect = x @ lay.weight.data.T + lay.bias.data + lay.scaling * ((x * mask / 0.5) @ lay.lora_A.weight.data.T) \
        @ lay.lora_B.weight.data.T
    np.testing.assert_allclose(y, expect, rtol=1e-12, atol=1e-12)
    lay.eval()
    np.testing.assert_allclose(lay(x).data, x @ (lay.weight.data + lay.delta_weight()).T + lay.bias.data,
                               rtol=1e-12, atol=1e-12)


def test_merged_equals_unmerged_float64_and_merge_bakes_no_mask():
    lay = _layer(d_in=6, d_out=9, r=3, alpha=7.0, lora_dropout=0.3, init_lora_weights=False).eval()
    x = np.random.default_rng(0).standard_normal((2, 4, 6))
    W0 = lay.weight.data.copy()
    y0 = lay(x).data
    lay.merge()
    np.testing.assert_array_equal(lay.weight.data, W0 + lay.scaling * (lay.lora_B.weight.data @ lay.lora_A.weight.data))
    y1 = lay(x).data
    np.testing.assert_allclose(y1, y0, rtol=1e-12, atol=1e-12 * np.abs(y0).max())
    lay.unmerge()
    np.testing.assert_allclose(lay.weight.data, W0, rtol=0, atol=1e-12 * np.abs(W0).max())


def test_float32_merge_tolerance_and_training_a_merged_layer_is_refused():
    lay = _layer(d_in=32, d_out=48, r=4, alpha=16.0, dtype=np.float32, init_lora_weights=False)
    W0 = lay.weight.data.copy()
    dW = lay.delta_weight()
    for _ in range(10):
        lay.merge()
        lay.unmerge()
    ulp = np.finfo(np.float32).eps
    assert np.all(np.abs(lay.weight.data - W0) <= 4 * 10 * ulp * (np.abs(W0) + np.abs(dW)))
    lay.merge()
    with pytest.raises(RuntimeError, match="unmerge"):
        lay(np.ones((1, 32), np.float32))
    x = np.random.default_rng(0).standard_normal((5, 32)).astype(np.float32)
    lay.eval()
    y_m = lay(x).data
    lay.unmerge()
    y_u = lay(x).data
    assert np.abs(y_m - y_u).max() <= 1e-5 * np.abs(y_u).max()


@given(st.lists(st.sampled_from(["merge", "unmerge"]), max_size=8), st.sampled_from([np.float32, np.float64]))
@settings(max_examples=25)
def test_any_sequence_of_merge_unmerge(seq, dtype):
    lay = _layer(d_in=6, d_out=4, r=2, alpha=5.0, dtype=dtype, init_lora_weights=False, seed=7)
    W0 = lay.weight.data.astype(np.float64)
    dW = lay.delta_weight().astype(np.float64)
    merged, steps = False, 0
    for op in seq:
        redundant = (op == "merge") == merged
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            getattr(lay, op)()
        assert len(w) == int(redundant) and all(issubclass(i.category, UserWarning) for i in w)
        if not redundant:
            merged, steps = not merged, steps + 1
        assert lay.merged == merged
        expect = W0 + dW if merged else W0
        ulp = np.finfo(dtype).eps
        tol = 4 * max(steps, 1) * ulp * (np.abs(W0) + np.abs(dW))
        assert np.all(np.abs(lay.weight.data - expect) <= tol)


def test_grouped_lora_layer_matches_dense_reference_in_training():
    C, r = 4, 2
    lay = LoRALinear(Linear(C, 3 * C, dtype=np.float64, rng=1), r, 3.0, enable_lora=[False, True, True],
                     init_lora_weights=False, rng=2)
    lay.bias.requires_grad = True          # trainable bias goes through LoRAFunction as an input
    x = Tensor(np.random.default_rng(0).standard_normal((2, 3, C)), requires_grad=True)
    y = lay(x)
    g = np.random.default_rng(1).standard_normal(y.shape)
    y.backward(g)
    dW = lora_merge_delta(lay.lora_A.weight.data, lay.lora_B.weight.data, lay.scaling, lay.slices, 3 * C)
    np.testing.assert_allclose(y.data, x.data @ (lay.weight.data + dW).T + lay.bias.data, rtol=1e-12)
    np.testing.assert_allclose(lay.bias.grad, g.reshape(-1, 3 * C).sum(0), rtol=1e-12)
    np.testing.assert_allclose(x.grad, g @ (lay.weight.data + dW), rtol=1e-10, atol=1e-12)
    assert lay.weight.grad is None
