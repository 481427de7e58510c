"""The baselines' fused ops, checked three ways in float64 over hypothesis-drawn shapes and sizes:
the hand-derived backward == the composed twin's autograd == central differences.

Ops: adapters.adapter (relu, gelu), ia3.ia3_linear (output and input scaling, with and without
bias), prefix_attention.prefix_attention (with and without dropout mask), prompt.prepend_prompt,
the prefix encoder's reparameterisation MLP, and BitFit's bias gradients (ops.Linear / ops.LayerNorm).
Tolerances: hand vs composed 1e-10 (same maths, other order of sums); vs central differences
atol 1e-6, rtol 1e-5 (check_grad's defaults, eps 1e-6).
"""
import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from minilora import ops
from minilora.gradcheck import check_grad
from minilora.peft.adapters import adapter, adapter_composed
from minilora.peft.ia3 import ia3_linear, ia3_linear_composed
from minilora.peft.prefix_attention import prefix_attention, prefix_attention_composed, prefix_mask
from minilora.peft.prompt import PromptEncoder, prepend_prompt, prepend_prompt_composed
from minilora.tensor import Tensor

SETTINGS = settings(max_examples=25, deadline=None)


def _grads(fn, arrays, c):
    ts = [Tensor(a, requires_grad=True) for a in arrays]
    out = fn(*ts)
    out.backward(c)
    return out.data, [t.grad for t in ts]


def three_way(fused, composed, arrays, seed=0):
    """Assert fused == composed (values and gradients, 1e-10) and fused == central differences."""
    rng = np.random.default_rng(seed)
    y1 = fused(*[Tensor(a) for a in arrays]).data
    c = rng.standard_normal(y1.shape)
    y_f, g_f = _grads(fused, arrays, c)
    y_c, g_c = _grads(composed, arrays, c)
    np.testing.assert_allclose(y_f, y_c, atol=1e-10, rtol=1e-10)
    for i, (a, b) in enumerate(zip(g_f, g_c, strict=True)):
        np.testing.assert_allclose(a, b, atol=1e-10, rtol=1e-10, err_msg=f"input {i}: hand vs composed")
    check_grad(fused, *[Tensor(a, requires_grad=True) for a in arrays], seed=seed)


@st.composite
def adapter_cases(draw):
    lead = draw(st.sampled_from([(1,), (3,), (2, 3), (1, 1, 2)]))
    C, m = draw(st.integers(1, 6)), draw(st.integers(1, 4))
    seed = draw(st.integers(0, 2**31))
    rng = np.random.default_rng(seed)
    arrays = [rng.uniform(-1, 1, (*lead, C)), rng.uniform(-1, 1, (m, C)), rng.uniform(-1, 1, m),
              rng.uniform(-1, 1, (C, m)), rng.uniform(-1, 1, C)]
    return arrays, draw(st.sampled_from(["relu", "gelu"])), seed


@SETTINGS
@given(adapter_cases())
def test_adapter_backward_three_ways(case):
    arrays, act, seed = case
    h, Wd, bd = arrays[:3]
    z = h.reshape(-1, h.shape[-1]) @ Wd.T + bd
    assume(act == "gelu" or np.min(np.abs(z)) > 1e-3)              # relu's kink breaks differences
    three_way(lambda *t: adapter(*t, activation=act), lambda *t: adapter_composed(*t, activation=act), arrays, seed)


def test_adapter_starts_as_the_identity_and_gets_a_gradient():
    rng = np.random.default_rng(0)
    h = rng.standard_normal((2, 3, 4))
    Wd, bd, Wu, bu = rng.standard_normal((2, 4)), np.zeros(2), np.zeros((4, 2)), np.zeros(4)
    ts = [Tensor(a, requires_grad=True) for a in (h, Wd, bd, Wu, bu)]
    y = adapter(*ts, activation="relu")
    np.testing.assert_array_equal(y.data, h)
    y.backward(np.ones_like(h))
    assert np.abs(ts[3].grad).sum() > 0 and np.abs(ts[1].grad).sum() == 0   # like LoRA's B = 0


@st.composite
def ia3_cases(draw):
    lead = draw(st.sampled_from([(1,), (4,), (2, 3)]))
    d_in, d_out = draw(st.integers(1, 6)), draw(st.integers(1, 6))
    ff, bias = draw(st.booleans()), draw(st.booleans())
    seed = draw(st.integers(0, 2**31))
    rng = np.random.default_rng(seed)
    arrays = [rng.uniform(-1, 1, (*lead, d_in)), rng.uniform(-1, 1, (d_out, d_in)),
              rng.uniform(0.2, 2, d_in if ff else d_out)] + ([rng.uniform(-1, 1, d_out)] if bias else [])
    return arrays, ff, seed


@SETTINGS
@given(ia3_cases())
def test_ia3_backward_three_ways(case):
    arrays, ff, seed = case
    three_way(lambda *t: ia3_linear(*t, feedforward=ff), lambda *t: ia3_linear_composed(*t, feedforward=ff),
              arrays, seed)


@st.composite
def prefix_cases(draw):
    B, T, P = draw(st.integers(1, 2)), draw(st.integers(1, 5)), draw(st.integers(1, 3))
    n_head, hs = draw(st.integers(1, 2)), draw(st.integers(1, 3))
    C = n_head * hs
    seed = draw(st.integers(0, 2**31))
    rng = np.random.default_rng(seed)
    arrays = [rng.uniform(-1, 1, (B, T, 3 * C)), rng.uniform(-1, 1, (P, C)), rng.uniform(-1, 1, (P, C))]
    mask = (rng.random((B, n_head, T, P + T)) >= 0.3) if draw(st.booleans()) else None
    return arrays, n_head, mask, seed


@SETTINGS
@given(prefix_cases())
def test_prefix_attention_backward_three_ways(case):
    arrays, n_head, mask, seed = case
    p = 0.3 if mask is not None else 0.0
    three_way(lambda *t: prefix_attention(*t, n_head, mask, p),
              lambda *t: prefix_attention_composed(*t, n_head, mask, p), arrays, seed)


def test_prefix_mask_shows_the_prefix_to_every_position_and_stays_causal():
    m = prefix_mask(3, 2)
    expected = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 0], [1, 1, 1, 1, 1]], dtype=bool)
    np.testing.assert_array_equal(m, expected)


def test_prefix_attention_first_position_sees_the_prefix_and_never_the_future():
    rng = np.random.default_rng(1)
    qkv, pk, pv = rng.standard_normal((1, 4, 6)), rng.standard_normal((2, 2)), rng.standard_normal((2, 2))
    y = prefix_attention(qkv, pk, pv, 1).data
    y2 = prefix_attention(qkv, pk, pv + 1.0, 1).data
    assert np.all(np.abs(y2[0, 0] - y[0, 0]) > 1e-6)              # position 0 reads the prefix values
    later = qkv.copy()
    later[0, 3] += 5.0                                             # change the last token
    np.testing.assert_array_equal(prefix_attention(later, pk, pv, 1).data[0, :3], y[0, :3])


def test_prefix_attention_refuses_bad_shapes():
    with pytest.raises(ValueError, match="prefix keys/values must be"):
        prefix_attention(np.zeros((1, 2, 6)), np.zeros((2, 3)), np.zeros((2, 3)), 1)


@st.composite
def prompt_cases(draw):
    B, T, P, C = (draw(st.integers(1, 3)) for _ in range(4))
    seed = draw(st.integers(0, 2**31))
    rng = np.random.default_rng(seed)
    return [rng.uniform(-1, 1, (B, T, C)), rng.uniform(-1, 1, (P, C))], seed


@SETTINGS
@given(prompt_cases())
def test_prepend_prompt_backward_three_ways(case):
    arrays, seed = case
    three_way(prepend_prompt, prepend_prompt_composed, arrays, seed)


@SETTINGS
@given(st.integers(1, 3), st.integers(1, 3), st.integers(1, 3), st.integers(1, 5), st.integers(0, 2**31))
def test_prefix_encoder_mlp_gradient_matches_central_differences(P, C, H, out, seed):
    enc = PromptEncoder(P, C, out, prefix_projection=True, encoder_hidden_size=H, init_std=0.5,
                        rng=np.random.default_rng(seed), dtype=np.float64)
    params = [p for _, p in enc.named_parameters()]
    assert len(params) == 5                                         # table, 2 weights, 2 biases
    check_grad(lambda *_: enc(), *params, seed=seed)


@SETTINGS
@given(st.integers(1, 4), st.integers(1, 5), st.integers(1, 5), st.integers(0, 2**31))
def test_bitfit_bias_gradients_three_ways(N, d_in, d_out, seed):
    rng = np.random.default_rng(seed)
    x, W, b = rng.uniform(-1, 1, (N, d_in)), rng.uniform(-1, 1, (d_out, d_in)), rng.uniform(-1, 1, d_out)
    three_way(lambda b_: ops.linear(Tensor(x), Tensor(W), b_), lambda b_: ops.linear_composed(Tensor(x), Tensor(W), b_),
              [b], seed)
    w_ln = rng.uniform(0.5, 1.5, d_out)
    xs = rng.uniform(-1, 1, (N, d_out))
    three_way(lambda b_: ops.layer_norm(Tensor(xs), Tensor(w_ln), b_),
              lambda b_: ops.layer_norm_composed(Tensor(xs), Tensor(w_ln), b_), [b], seed)


@SETTINGS
@given(st.integers(1, 8), st.integers(0, 6))
def test_the_exercise_mask_is_the_package_mask(T, P):
    from minilora.exercises.solutions.prefix_attention_mask import prefix_attention_mask
    np.testing.assert_array_equal(prefix_attention_mask(T, P), prefix_mask(T, P))


@SETTINGS
@given(adapter_cases())
def test_the_exercise_adapter_backward_is_the_package_backward(case):
    from minilora.exercises.solutions.adapter_backward import adapter_backward
    arrays, _, seed = case
    h = arrays[0].reshape(-1, arrays[0].shape[-1])
    g = np.random.default_rng(seed).standard_normal(h.shape)
    _, grads = _grads(lambda *t: adapter(*t, activation="relu"), [h, *arrays[1:]], g)
    for mine, ref in zip(grads, adapter_backward(h, *arrays[1:], g), strict=True):
        np.testing.assert_allclose(mine, ref, atol=1e-12, rtol=1e-12)
