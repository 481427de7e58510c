"""Tests of the variant hook, the init registry and the "one home for each idea" of lora/:
the scaling rule (functional.lora_scaling), the group layout and ΔW (functional.lora_groups /
lora_merge_delta, shared by the layer and rank.py) and option checks (LoraConfig only).

A toy variant is registered for the duration of a test: a learned per-row gain m on the update,
ΔW = s · diag(m) · B A (DoRA-like, without the norm), written as one class, as the recipe in
lora/variant.py says. Its forward is composed from engine ops, so its backward comes for free.
Tolerances: float64, gradients vs central differences with check_grad's defaults (atol 1e-6,
rtol 1e-5); forward vs dense ΔW 1e-12.
"""
import math
import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minilora import check_grad, no_grad, ops
from minilora import rank as R
from minilora.lora import (
    LORA_INITS,
    VARIANTS,
    LoraConfig,
    LoRAFactor,
    LoRALinear,
    LoraVariant,
    get_peft_model,
    load_lora_model,
    lora_groups,
    lora_scaling,
)
from minilora.lora.variant import is_known_init
from minilora.nn import GPT, GPTConfig, Linear, Parameter
from minilora.tensor import Tensor

CFG = GPTConfig(vocab_size=256, block_size=8, n_layer=2, n_head=2, n_embd=12)


class RowGain(LoraVariant):
    """ΔW = s · diag(m) · B A with m (d_out,) trained, initialised to ones (so it starts as LoRA)."""

    name = "row_gain"
    adapter_keys = ("lora_A.weight", "lora_B.weight", "lora_m.weight")

    @classmethod
    def init(cls, layer, init_lora_weights):
        if layer.slices is not None:
            raise ValueError("row_gain: enable_lora is not supported")
        super().init(layer, init_lora_weights)
        layer.lora_m = LoRAFactor(np.ones(layer.out_features, dtype=layer.weight.dtype))

    @classmethod
    def forward(cls, layer, x, mask, keep_prob):
        xt = x if mask is None else x * (mask.astype(x.dtype) / x.dtype.type(keep_prob))
        u = ops.matmul(ops.matmul(xt, ops.transpose(layer.lora_A.weight)), ops.transpose(layer.lora_B.weight))
        return ops.linear(x, layer.weight.data, layer.bias) + u * layer.lora_m.weight * layer.scaling

    @classmethod
    def delta_weight(cls, layer):
        return layer.scaling * layer.lora_m.weight.data[:, None] * (layer.lora_B.weight.data @ layer.lora_A.weight.data)


def init_halves(layer, shape_A, shape_B):
    """A toy start: A = 0.5, B = 0 everywhere (no random draws)."""
    return np.full(shape_A, 0.5), np.zeros(shape_B)


@pytest.fixture
def row_gain(monkeypatch):
    monkeypatch.setitem(VARIANTS, "row_gain", RowGain)
    return RowGain


# ----------------------------------------------------------------------------- the hook

def test_plain_lora_is_the_first_user_of_the_hook():
    lay = LoRALinear(Linear(5, 7, dtype=np.float64, rng=0), 2, 4, init_lora_weights=False, rng=0)
    assert lay.variant is LoraVariant and LoraVariant.adapter_keys == ("lora_A.weight", "lora_B.weight")
    assert np.array_equal(lay.delta_weight(), LoraVariant.delta_weight(lay))


def test_a_registered_variant_is_one_class_and_one_entry(row_gain, tmp_path):
    lin = Linear(6, 5, dtype=np.float64, rng=1)
    W0 = lin.weight.data.copy()
    lay = LoRALinear(lin, 2, 3, init_lora_weights=False, rng=0, variant="row_gain")
    lay.lora_m.weight.data = np.linspace(0.5, 2.0, 5)
    x = np.random.default_rng(2).standard_normal((3, 4, 6))
    lay.eval()
    with no_grad():
        y = lay(Tensor(x)).data
    np.testing.assert_allclose(y, x @ (W0 + lay.delta_weight()).T + lay.bias.data, rtol=1e-12, atol=1e-12)
    lay.train()
    check_grad(lambda xt, A, B, m: lay(xt), Tensor(x, requires_grad=True), lay.lora_A.weight,
               lay.lora_B.weight, lay.lora_m.weight)
    lay.merge()
    np.testing.assert_allclose(lay.weight.data, W0 + lay.delta_weight(), rtol=1e-12, atol=1e-12)
    lay.unmerge()
    np.testing.assert_allclose(lay.weight.data, W0, rtol=1e-12, atol=1e-12)


def test_a_variant_trains_saves_and_loads_its_own_parameters(row_gain, tmp_path):
    cfg = LoraConfig(r=2, target_modules=("c_attn",), init_lora_weights=False, variant="row_gain")
    model = get_peft_model(GPT(CFG, dtype=np.float64), cfg)
    m_name = "transformer.h.0.attn.c_attn.lora_m.weight"
    assert m_name in dict(model.named_trainable_parameters())
    model.get_parameter(m_name).data = np.arange(36, dtype=np.float64) / 36
    model.save_adapter(tmp_path)
    from safetensors.numpy import load_file
    assert "base_model.model." + m_name in load_file(str(tmp_path / "adapter_model.safetensors"))
    again = load_lora_model(GPT(CFG, dtype=np.float64), tmp_path)
    assert again.get_submodule("transformer.h.0.attn.c_attn").variant is RowGain
    x = np.random.default_rng(0).integers(0, 256, (2, 8))
    model.eval(), again.eval()
    with no_grad():
        np.testing.assert_array_equal(again(x)[0].data, model(x)[0].data)


def test_unknown_variant_and_init_are_refused_by_the_config():
    with pytest.raises(ValueError, match=rf"LoraConfig.variant must be one of {re.escape(str(sorted(VARIANTS)))}, "
                                         "got 'no_such'"):
        LoraConfig(variant="no_such")
    with pytest.raises(ValueError, match="LoRALinear: LoraConfig.init_lora_weights must be one of True, False"):
        LoRALinear(Linear(4, 4), 2, 4, init_lora_weights="halves")


def test_the_init_registry_takes_a_new_start(monkeypatch):
    monkeypatch.setitem(LORA_INITS, "halves", init_halves)
    lay = LoRALinear(Linear(4, 6), 2, 4, init_lora_weights="halves")
    assert np.all(lay.lora_A.weight.data == 0.5) and lay.lora_A.weight.dtype == np.float32
    monkeypatch.setitem(LORA_INITS, "by_path", "minilora.lora.variant:init_gaussian")   # lazy "module:attr"
    by_path = LoRALinear(Linear(40, 6), 2, 4, init_lora_weights="by_path", rng=3)
    gaussian = LoRALinear(Linear(40, 6), 2, 4, init_lora_weights="gaussian", rng=3)
    assert np.array_equal(by_path.lora_A.weight.data, gaussian.lora_A.weight.data)


@pytest.mark.parametrize("init", [True, False, "gaussian"])
def test_registered_inits_draw_as_before(init):
    """The registry keeps the draws of the code it replaced (A first, then B, from layer.rng)."""
    rng = np.random.default_rng(7)
    d_in, d_out, r = 9, 6, 3
    lay = LoRALinear(Linear(d_in, d_out), r, 4, init_lora_weights=init, rng=7)
    if init == "gaussian":
        A = rng.normal(0.0, 1.0 / r, (r, d_in))
    else:
        A = rng.uniform(-1 / math.sqrt(d_in), 1 / math.sqrt(d_in), (r, d_in))
    B = rng.uniform(-1 / math.sqrt(r), 1 / math.sqrt(r), (d_out, r)) if init is False else np.zeros((d_out, r))
    assert np.array_equal(lay.lora_A.weight.data, A.astype(np.float32))
    assert np.array_equal(lay.lora_B.weight.data, B.astype(np.float32))


# ----------------------------------------------------------------------------- one home per idea

@settings(max_examples=60, deadline=None)
@given(alpha=st.floats(1e-3, 1e3), r=st.integers(1, 64), rs=st.booleans())
def test_one_scaling_rule_everywhere(alpha, r, rs):
    expected = alpha / (math.sqrt(r) if rs else r)
    assert lora_scaling(alpha, r, rs) == expected
    assert LoraConfig(r=r, lora_alpha=alpha, use_rslora=rs).scaling == expected
    lay = LoRALinear(Linear(2, 2), r, alpha, use_rslora=rs)
    assert lay.scaling == expected
    lay.set_scaling(lora_alpha=2 * alpha, use_rslora=not rs)
    assert lay.scaling == lora_scaling(2 * alpha, r, not rs)


BAD_OPTIONS = st.one_of(
    st.builds(dict, r=st.one_of(st.integers(max_value=0), st.floats(0.5, 9.5).filter(lambda v: v != int(v)),
                                st.just(True), st.just("4"))),
    st.builds(dict, lora_alpha=st.one_of(st.floats(max_value=0), st.just(math.inf), st.just(math.nan),
                                         st.just(False), st.just("8"))),
    st.builds(dict, lora_dropout=st.one_of(st.floats(min_value=1.0, allow_infinity=False),
                                           st.floats(max_value=-1e-9, allow_infinity=False), st.just(math.nan))),
    st.builds(dict, init_lora_weights=st.one_of(st.text(max_size=8).filter(lambda s: not is_known_init(s)),
                                                st.just(0), st.just(1), st.just(None))),
    st.builds(dict, enable_lora=st.one_of(st.just([]), st.just([False, False]), st.just([1, 0]), st.just("TFT"))),
    st.builds(dict, use_rslora=st.one_of(st.just(1), st.just("yes"), st.just(None))),
)


@settings(max_examples=80, deadline=None)
@given(bad=BAD_OPTIONS)
def test_options_are_checked_once_with_the_same_message(bad):
    """LoRALinear refuses exactly what LoraConfig refuses, with LoraConfig's message (prefixed)."""
    with pytest.raises((ValueError, TypeError)) as by_config:
        LoraConfig(**bad)
    kw = dict(dict(r=2, lora_alpha=4), **bad)
    with pytest.raises(by_config.type) as by_layer:
        LoRALinear(Linear(4, 6), kw.pop("r"), kw.pop("lora_alpha"), **kw)
    assert str(by_layer.value) == f"LoRALinear: {by_config.value}"


def test_set_scaling_is_checked_by_the_config():
    lay = LoRALinear(Linear(3, 3), 2, 4)
    for bad in (0, -1.0, math.inf, math.nan, True):
        with pytest.raises(ValueError, match=r"LoRALinear.set_scaling: LoraConfig.lora_alpha must be a finite"):
            lay.set_scaling(lora_alpha=bad)
    assert lay.lora_alpha == 4 and lay.scaling == 2


@settings(max_examples=40, deadline=None)
@given(k=st.integers(1, 4), data=st.data())
def test_rank_tools_use_the_layer_layout(k, data):
    """rank.lora_factors / delta_weight / lora_svd agree with the layer's own ΔW for any enable_lora."""
    enable = data.draw(st.lists(st.booleans(), min_size=k, max_size=k).filter(any))
    r = data.draw(st.integers(1, 3))
    lay = LoRALinear(Linear(5, 3 * k, dtype=np.float64, rng=0), r, 3, enable_lora=enable,
                     init_lora_weights=False, rng=data.draw(st.integers(0, 99)))
    dW = lay.delta_weight()
    np.testing.assert_allclose(R.delta_weight(lay), dW, rtol=1e-13, atol=1e-15)
    groups = R.lora_factors(lay)
    assert [g[0] for g in groups] == [oc for _, _, _, oc in lora_groups(lay.slices, r)]
    U, S, Vh = R.lora_svd(lay)
    np.testing.assert_allclose((U * S) @ Vh, dW, atol=1e-12)


def test_linear_from_parameters_shares_the_objects():
    w, b = Parameter(np.ones((3, 2))), Parameter(np.zeros(3))
    lin = Linear.from_parameters(w, b)
    assert lin.weight is w and lin.bias is b and (lin.out_features, lin.in_features) == (3, 2)
    assert [n for n, _ in lin.named_parameters()] == ["weight", "bias"]
    assert Linear.from_parameters(w).bias is None
    with pytest.raises(TypeError, match="Parameters"):
        Linear.from_parameters(np.ones((3, 2)))
    with pytest.raises(ValueError, match=r"bias \(2,\) float64 does not fit weight \(3, 2\)"):
        Linear.from_parameters(w, Parameter(np.zeros(2)))
    with pytest.raises(ValueError, match=r"\(d_out, d_in\)"):
        Linear.from_parameters(Parameter(np.ones(3)))
