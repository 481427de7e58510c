"""Tests of minilora.quant: NF4 levels, block-wise absmax, packing, double quantization, the 4-bit frozen
base under the hand-derived LoRA pass (QLoRA), merging into it, and LoftQ.

Tolerances: the derived NF4 levels vs bitsandbytes' table 4e-7 (float32 rounding of their recipe);
round trips against the exact per-element bound of nearest-level rounding (plus the double-quantized
constant's own bound); gradients in float64, hand == composed 1e-10, central differences with
check_grad's defaults (atol 1e-6, rtol 1e-5).
"""
import re
import warnings
from statistics import NormalDist

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minilora import check_grad, costs
from minilora.lora import LoraConfig, LoRALinear, get_peft_model
from minilora.lora.layer import lora_linear, lora_linear_composed
from minilora.nn import GPT, GPTConfig, Linear
from minilora.quant import (
    NF4_BNB,
    LoftQConfig,
    NF4LinearFunction,
    NF4Weight,
    QuantLinear,
    base_memory,
    dynamic_map_8bit,
    loftq_decompose,
    merge_and_unload_quantized,
    nf4_levels,
    pack_4bit,
    quantization_error,
    quantize_4bit,
    quantize_model,
    unpack_4bit,
)
from minilora.quant.nf4 import NF4_OFFSET
from minilora.tensor import Tensor

CFG = GPTConfig(vocab_size=256, block_size=8, n_layer=2, n_head=2, n_embd=64)


# ----------------------------------------------------------------------------- NF4 levels

def test_nf4_levels_match_bitsandbytes():
    v = nf4_levels()
    assert v.shape == (16,) and v[0] == -1.0 and v[-1] == 1.0 and v[7] == 0.0
    assert (v[:7] < 0).all() and (v[8:] > 0).all() and (np.diff(v) > 0).all()
    assert np.abs(v - NF4_BNB).max() < 4e-7
    # bitsandbytes' own recipe (offset rounded to 0.9677083, linspace and normalisation in float32)
    q = NormalDist().inv_cdf
    pos = [q(float(p)) for p in np.linspace(0.9677083, 0.5, 9, dtype=np.float32)[:-1]]
    neg = [-q(float(p)) for p in np.linspace(0.9677083, 0.5, 8, dtype=np.float32)[:-1]]
    w = np.sort(np.array(pos + [0.0] + neg)).astype(np.float32)
    w = w / w.max()
    assert (w == NF4_BNB.astype(np.float32)).sum() >= 15 and np.abs(w - NF4_BNB).max() <= 2.5e-7


def test_nf4_positive_levels_sit_at_equally_spaced_probabilities():
    """Eq. 4's quantile construction: Φ(level · z_max) is linspace(δ, ½, 9) on the positive side."""
    v = nf4_levels()
    z = NormalDist().inv_cdf(NF4_OFFSET)
    cdf = np.array([NormalDist().cdf(x * z) for x in v[8:][::-1]])
    np.testing.assert_allclose(cdf, np.linspace(NF4_OFFSET, 0.5, 9)[:-1], atol=1e-12)
    with pytest.raises(ValueError, match="offset"):
        nf4_levels(0.3)


def test_dynamic_map_is_bitsandbytes_layout():
    m = dynamic_map_8bit()
    assert m.shape == (256,) and m[-1] == 1.0 and 0.0 in m and len(np.unique(m)) == 256
    assert m.min() > -1.0 and np.isclose(m.min(), -0.99296875)


# ----------------------------------------------------------------------------- packing and round trips

@given(st.lists(st.integers(0, 15), min_size=0, max_size=64).filter(lambda c: len(c) % 2 == 0))
def test_pack_unpack_round_trip(codes):
    c = np.array(codes, dtype=np.uint8)
    p = pack_4bit(c)
    assert p.dtype == np.uint8 and p.size == c.size // 2
    assert np.array_equal(unpack_4bit(p), c)
    if c.size:
        assert p[0] == (c[0] << 4 | c[1])          # first code in the high nibble (bitsandbytes)


def test_pack_rejects_bad_codes():
    with pytest.raises(ValueError, match="even"):
        pack_4bit(np.zeros(3, np.uint8))
    with pytest.raises(ValueError, match="0..15"):
        pack_4bit(np.array([1, 16]))


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 700), scale=st.floats(1e-4, 1e3), quant_type=st.sampled_from(["nf4", "fp4", "int4"]),
       block=st.sampled_from([2, 16, 64]), seed=st.integers(0, 2**16))
def test_round_trip_error_bound(n, scale, quant_type, block, seed):
    """|x − x̂| <= absmax_block · (largest level gap)/2 elementwise; shape and dtype kept; padding dropped."""
    from minilora.quant import LEVELS
    x = (np.random.default_rng(seed).standard_normal(n) * scale).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        st_ = quantize_4bit(x, quant_type, block)
    xh = st_.dequantize()
    assert xh.shape == x.shape and xh.dtype == x.dtype
    pad = (-n) % block
    xp = np.concatenate([x, np.zeros(pad, np.float32)]).reshape(-1, block)
    c = np.abs(xp).max(axis=1, keepdims=True)
    half_gap = np.diff(LEVELS[quant_type]()).max() / 2
    err = np.abs(np.concatenate([x - xh, np.zeros(pad, np.float32)]).reshape(-1, block))
    assert (err <= c * half_gap * (1 + 1e-6) + 1e-30).all()
    assert np.array_equal(np.abs(xh).reshape(-1)[np.argmax(np.abs(x))], np.abs(x).max())  # absmax exact


@settings(max_examples=15, deadline=None)
@given(n_blocks=st.integers(1, 600), seed=st.integers(0, 2**16))
def test_double_quant_round_trip_bound(n_blocks, seed):
    """With double quantization the block constant c' has its own bound |c − c'| <= absmax2 · gap/2,
    so |x − x̂| <= c · g/2 + |c − c'| (levels are in [-1, 1])."""
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(64 * n_blocks) * rng.uniform(0.01, 1, 64 * n_blocks)).astype(np.float32)
    s1, s2 = quantize_4bit(x), quantize_4bit(x, double_quant=True)
    c, c2 = s1.absmax, s2.absmax_float()
    cm = c - c.mean()
    gap = np.diff(dynamic_map_8bit()).max() / 2
    a2 = np.repeat(s2.absmax2, 256)[:c.size]
    assert (np.abs(c - c2) <= a2 * gap * 1.0001 + np.abs(cm).max() * 1e-6 + 1e-7).all()
    err = np.abs(x - s2.dequantize()).reshape(-1, 64)
    bound = c[:, None] * (np.diff(nf4_levels()).max() / 2) + np.abs(c - c2)[:, None]
    assert (err <= bound * 1.0001 + 1e-7).all()


def test_exact_values_and_zero_blocks_round_trip_exactly():
    x = np.concatenate([np.zeros(64), 3.0 * np.tile(nf4_levels().astype(np.float32), 4)])
    st_ = quantize_4bit(x)
    assert np.array_equal(st_.dequantize(), x)
    assert np.array_equal(unpack_4bit(st_.packed), np.r_[np.full(64, 7), np.tile(np.arange(16), 4)])


# ----------------------------------------------------------------------------- bits per parameter

@pytest.mark.parametrize("double_quant", [False, True])
def test_bits_per_param_measured_equals_closed_form(double_quant):
    n = 64 * 256 * 3                                              # whole blocks at both levels
    st_ = quantize_4bit(np.random.default_rng(0).standard_normal(n).astype(np.float32), double_quant=double_quant)
    measured = st_.bits_per_param()
    assert measured == costs.nf4_bits_per_param(double_quant)
    assert round(measured, 3) == (4.127 if double_quant else 4.5)
    assert st_.bits_per_param(include_per_tensor=True) == measured + (32 / n if double_quant else 0)
    assert st_.packed.nbytes == n // 2 and st_.packed.dtype == np.uint8


def test_bits_per_param_partial_blocks_cost_more():
    with pytest.warns(UserWarning, match="padding the last block with 27 zeros"):
        st_ = quantize_4bit(np.ones(101, np.float32), double_quant=True)
    assert st_.bits_per_param() > costs.nf4_bits_per_param(True)
    assert st_.dequantize().shape == (101,)


# ----------------------------------------------------------------------------- why NF4 wins

@pytest.mark.parametrize("sigma", [0.02, 1.0])
def test_nf4_beats_fp4_and_int4_on_normal_weights(sigma):
    x = np.random.default_rng(1).normal(0, sigma, (256, 512)).astype(np.float32)
    e = {q: quantization_error(x, q) for q in ("nf4", "fp4", "int4")}
    assert e["nf4"]["rel_fro"] < 0.9 * e["fp4"]["rel_fro"] and e["nf4"]["rel_fro"] < 0.9 * e["int4"]["rel_fro"]
    assert 0.085 < e["nf4"]["rel_fro"] < 0.10                     # scale-free: same figure at both sigmas
    assert e["nf4"]["code_entropy"] > e["fp4"]["code_entropy"] > e["int4"]["code_entropy"]
    assert e["nf4"]["code_entropy"] > 3.85                       # near the 4 bits of equal-mass bins


def test_int4_wins_on_uniform_weights():
    """The optimality assumes normal weights: on uniform weights the uniform grid is better."""
    x = np.random.default_rng(2).uniform(-1, 1, (128, 512)).astype(np.float32)
    assert quantization_error(x, "int4")["rel_fro"] < quantization_error(x, "nf4")["rel_fro"]


# ----------------------------------------------------------------------------- bad inputs

@pytest.mark.parametrize("bad, match", [
    (np.array([1.0, np.nan, 2.0]), "non-finite.*index \\(1,\\)"),
    (np.array([[1.0, np.inf]]), "non-finite"),
    (np.zeros((0, 4)), "empty"),
])
def test_bad_inputs_raise_clear_errors(bad, match):
    with pytest.raises(ValueError, match=match):
        quantize_4bit(bad)


@settings(max_examples=25, deadline=None)
@given(shape=st.lists(st.integers(1, 9), min_size=1, max_size=3), bad=st.sampled_from([np.nan, np.inf, -np.inf]),
       where=st.integers(0, 10**6), dtype=st.sampled_from([np.float32, np.float64]))
def test_any_non_finite_value_is_refused_and_located(shape, bad, where, dtype):
    x = np.ones(shape, dtype)
    flat = where % x.size
    x.reshape(-1)[flat] = bad
    idx = tuple(int(i) for i in np.unravel_index(flat, x.shape))
    with pytest.raises(ValueError, match=f"first at index {re.escape(str(idx))}"):
        quantize_4bit(x)
    with pytest.raises(ValueError, match="non-finite"):
        NF4Weight.from_float(np.ones((2, 64)) * bad)


def test_bad_options_raise():
    with pytest.raises(TypeError, match="float"):
        quantize_4bit(np.arange(64))
    with pytest.raises(ValueError, match="quant_type"):
        quantize_4bit(np.ones(64), "nf3")
    with pytest.raises(ValueError, match="even"):
        quantize_4bit(np.ones(64), block_size=3)


# ----------------------------------------------------------------------------- the 4-bit frozen weight

def _nf4(shape, dtype=np.float64, seed=0, tile_elems=1 << 20, dq=True):
    W = np.random.default_rng(seed).normal(0, 0.5, shape).astype(dtype)
    return W, NF4Weight.from_float(W, double_quant=dq, tile_elems=tile_elems)


@settings(max_examples=20, deadline=None)
@given(d_out=st.integers(1, 9), d_in=st.integers(1, 9), n=st.integers(1, 5), tile=st.integers(1, 40),
       seed=st.integers(0, 1000))
def test_nf4weight_products_equal_dequantized_products(d_out, d_in, n, tile, seed):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _, Wq = _nf4((d_out, d_in), seed=seed, tile_elems=tile)
    Wd = Wq.dequantize()
    rng = np.random.default_rng(seed + 1)
    X, G = rng.standard_normal((n, d_in)), rng.standard_normal((n, d_out))
    np.testing.assert_allclose(X @ Wq.T, X @ Wd.T, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(G @ Wq, G @ Wd, rtol=1e-12, atol=1e-12)


@pytest.mark.filterwarnings("ignore:quantize_4bit")
@settings(max_examples=12, deadline=None)
@given(d_in=st.sampled_from([4, 8, 32]), d_out=st.sampled_from([4, 8, 16]), r=st.integers(1, 3),
       scaling=st.floats(0.1, 4.0), lead=st.sampled_from([(3,), (2, 3)]), grouped=st.booleans(),
       tile=st.sampled_from([16, 1 << 20]), seed=st.integers(0, 1000))
def test_qlora_backward_hand_equals_composed_equals_numeric(d_in, d_out, r, scaling, lead, grouped, tile, seed):
    """The LoRA pass with W0 = NF4Weight: hand-derived == composed (on dequant(Q)) == central differences."""
    rng = np.random.default_rng(seed)
    _, Wq = _nf4((d_out, d_in), seed=seed, tile_elems=tile)
    Wd = Wq.dequantize()
    slices = [(0, d_out // 2), (d_out // 2, d_out)] if grouped else None
    g = 2 if grouped else 1
    x = rng.standard_normal((*lead, d_in))
    A = rng.standard_normal((g * r, d_in))
    B = rng.standard_normal((d_out if not grouped else d_out, r))
    b = rng.standard_normal(d_out)

    def hand(x, A, B, b):
        return lora_linear(x, Wq, b, A, B, scaling, slices=slices)

    def composed(x, A, B, b):
        return lora_linear_composed(x, Wd, b, A, B, scaling, slices=slices)

    ts = [Tensor(a.copy(), requires_grad=True) for a in (x, A, B, b)]
    tc = [Tensor(a.copy(), requires_grad=True) for a in (x, A, B, b)]
    cot = rng.standard_normal((*lead, d_out))
    yh, yc = hand(*ts), composed(*tc)
    np.testing.assert_allclose(yh.data, yc.data, rtol=1e-10, atol=1e-10)
    (yh * Tensor(cot)).sum().backward()
    (yc * Tensor(cot)).sum().backward()
    for a, c in zip(ts, tc, strict=True):
        np.testing.assert_allclose(a.grad, c.grad, rtol=1e-10, atol=1e-10)
    check_grad(hand, x, A, B, b)


def test_quantlinear_backward_matches_numeric_and_has_no_weight_gradient():
    W, _ = _nf4((6, 64))
    lin = Linear(64, 6, dtype=np.float64, rng=0)
    lin.weight.data = W
    q = QuantLinear.from_linear(lin)
    assert [n for n, _ in q.named_parameters()] == ["bias"]
    x = np.random.default_rng(3).standard_normal((2, 3, 64))
    check_grad(lambda t: q(t), x)
    np.testing.assert_allclose(q(x).data, x @ q.weight.dequantize().T + q.bias.data, rtol=1e-12, atol=1e-12)

    def with_bias(t, b):
        q.bias.data = b.data
        q.bias.requires_grad = True
        return NF4LinearFunction.apply(t, b, W0=q.weight)
    check_grad(with_bias, x, np.random.default_rng(4).standard_normal(6))


def test_the_float_weight_is_never_kept():
    model = get_peft_model(GPT(CFG, seed=0), LoraConfig(r=2, lora_alpha=4))
    names = quantize_model(model)
    assert len(names) == 4 * CFG.n_layer
    big = [n for n, p in model.named_parameters() if p.data.ndim == 2 and p.data.shape[0] * p.data.shape[1] >= 64 * 64
           and "wte" not in n and "wpe" not in n]
    assert big == []                                             # no float base weight in the model
    layer = model.get_submodule("transformer.h.0.attn.c_attn")
    assert isinstance(layer, LoRALinear) and isinstance(layer.weight, NF4Weight)
    assert not any(isinstance(v, np.ndarray) and v.size >= layer.weight.size for v in vars(layer.weight).values())
    with pytest.raises(TypeError, match="never turned into a float array"):
        np.asarray(layer.weight)
    with pytest.raises(TypeError, match="merge_and_unload_quantized"):
        layer.merge()
    with pytest.raises(ValueError, match="cannot train"):
        layer.weight.requires_grad = True


def test_qlora_model_trains_and_stays_close_to_the_float_model():
    from minilora.optim import AdamW
    rng = np.random.default_rng(0)
    idx, tgt = rng.integers(0, 256, (4, 8)), rng.integers(0, 256, (4, 8))
    ref = GPT(CFG, seed=0)(idx, tgt)[1].item()
    model = get_peft_model(GPT(CFG, seed=0), LoraConfig(r=2, lora_alpha=4))
    quantize_model(model)
    loss0 = model(idx, tgt)[1].item()
    assert loss0 != ref and abs(loss0 - ref) < 0.02                # B = 0: the 4-bit model itself
    opt = AdamW(model.trainable_parameters(), lr=1e-2)
    for _ in range(5):
        opt.zero_grad()
        _, loss = model(idx, tgt)
        loss.backward()
        opt.step()
    assert model(idx, tgt)[1].item() < loss0 - 0.05


def test_base_memory_ratios():
    model = get_peft_model(GPT(CFG, seed=0), LoraConfig(r=2, lora_alpha=4))
    quantize_model(model)
    mem = base_memory(model)
    n = mem["n_params"]
    assert n == CFG.n_layer * 12 * CFG.n_embd ** 2
    assert mem["nf4"] == n * 4.5 / 8
    assert mem["nf4_dq"] == mem["held"] <= n * costs.nf4_bits_per_param(True) / 8 + 4 * 4 * CFG.n_layer + 8 * 16
    assert mem["nf4_dq"] / mem["float32"] <= 0.16
    plain = get_peft_model(GPT(CFG, seed=0), LoraConfig(r=2, lora_alpha=4))
    quantize_model(plain, double_quant=False)                    # --no-double-quant
    mem2 = base_memory(plain)
    assert mem2["held"] == mem2["nf4"] == mem["nf4"] and mem2["nf4_dq"] == mem["nf4_dq"]


def test_merge_into_quantized_base():
    """Keeping the merge in float is exact (W = Q + ΔW); re-quantizing it adds an NF4 error larger than ΔW."""
    idx = np.random.default_rng(0).integers(0, 256, (2, 8))
    outs, errs = {}, {}
    for requantize in (False, True):
        model = get_peft_model(GPT(CFG, seed=0), LoraConfig(r=2, lora_alpha=4, init_lora_weights=False))
        quantize_model(model)
        for name in ("transformer.h.0.attn.c_attn", "transformer.h.1.attn.c_attn"):
            model.get_submodule(name).lora_B.weight.data *= 0.01   # a small update, as after fine-tuning
        layer = model.get_submodule("transformer.h.0.attn.c_attn")
        Q, dW = layer.weight.dequantize(), layer.delta_weight()
        qlora_logits = model(idx)[0].data
        gpt = merge_and_unload_quantized(model, requantize=requantize)
        merged = gpt.get_submodule("transformer.h.0.attn.c_attn")
        W = merged.weight.dequantize() if requantize else merged.weight.data
        assert isinstance(merged, QuantLinear if requantize else Linear)
        errs[requantize] = np.linalg.norm(W - (Q + dW))
        outs[requantize] = np.abs(gpt(idx)[0].data - qlora_logits).max()
    assert errs[False] == 0.0 and outs[False] < 1e-4
    assert errs[True] > np.linalg.norm(dW) and outs[True] > 100 * max(outs[False], 1e-7)


# ----------------------------------------------------------------------------- LoftQ

@settings(max_examples=8, deadline=None)
@given(r=st.integers(1, 8), seed=st.integers(0, 1000))
def test_loftq_starts_closer_than_qlora(r, seed):
    W = np.random.default_rng(seed).normal(0, 0.02, (64, 64)).astype(np.float32)
    state, A, B, errors = loftq_decompose(W, r, 2.0)
    Q = state.dequantize(np.float64)
    qlora_start = np.linalg.norm(W - quantize_4bit(W, double_quant=True).dequantize(np.float64))
    assert errors[-1] == pytest.approx(np.linalg.norm(W - (Q + 2.0 * B @ A)))
    assert errors[-1] < qlora_start
    s = np.linalg.svd(W - Q, compute_uv=False)                   # Eckart–Young: the tail of the spectrum
    assert errors[-1] == pytest.approx(np.sqrt((s[r:] ** 2).sum()), rel=1e-6)


def test_loftq_more_iterations_and_config_checks():
    W = np.random.default_rng(0).normal(0, 0.02, (128, 64)).astype(np.float32)
    _, _, _, e = loftq_decompose(W, 4, 1.0, LoftQConfig(loftq_iter=5))
    assert len(e) == 5 and e[-1] <= e[0] * 1.001
    with pytest.raises(ValueError, match="loftq_bits"):
        LoftQConfig(loftq_bits=8)
    with pytest.raises(ValueError, match="loftq_iter"):
        LoftQConfig(loftq_iter=0)


def test_loftq_init_through_lora_config():
    float_model = GPT(CFG, seed=0)
    model = get_peft_model(GPT(CFG, seed=0), LoraConfig(r=4, lora_alpha=8, init_lora_weights="loftq"))
    layer = model.get_submodule("transformer.h.1.attn.c_attn")
    assert isinstance(layer.weight, NF4Weight) and layer.lora_B.weight.data.any()
    W = float_model.get_submodule("transformer.h.1.attn.c_attn").weight.data
    Q = layer.weight.dequantize()
    assert np.linalg.norm(W - (Q + layer.delta_weight())) < np.linalg.norm(W - Q)
    with pytest.raises(ValueError, match="already quantized"):
        from minilora.quant import init_loftq
        init_loftq(layer, layer.lora_A.weight.shape, layer.lora_B.weight.shape)


# ----------------------------------------------------------------------------- the CLI

def test_cli_finetune_quantize_nf4(tmp_path, capsys):
    from minilora.checkpoints import path as ckpt_path
    from minilora.cli import main
    common = ["finetune", "--base", str(ckpt_path("pydoc-s")), "--corpus", "stdlib", "--steps", "2",
              "--batch-size", "2", "--eval-batches", "1", "--quiet"]
    assert main(common + ["--out", str(tmp_path / "q"), "--quantize", "nf4", "--loftq"]) == 0
    out = capsys.readouterr().out
    assert "NF4 + double quant" in out and "4.500 bits/param" in out and "0.129 x float32" in out
    assert (tmp_path / "q" / "adapter").is_dir()
    assert main(common + ["--out", str(tmp_path / "f"), "--full", "--quantize", "nf4"]) == 2
    assert "cannot be combined with --full" in capsys.readouterr().err
    assert main(common + ["--out", str(tmp_path / "l"), "--loftq"]) == 2
    assert "add --quantize nf4" in capsys.readouterr().err


# ----------------------------------------------------------------------------- the exercises (lesson 12)

def _fails(name, func, *needles):
    from minilora.exercises import check
    res = check(name, func)
    assert not res.passed, f"{name}: a wrong solution passed"
    for needle in needles:
        assert needle.lower() in res.message.lower(), f"{needle!r} not in:\n{res.message}"


def test_quant_exercises_references_pass_and_match_the_library():
    from minilora.exercises import EXERCISES, check
    for name in ("nf4_levels", "blockwise_absmax_quantize", "double_quant_bits_per_param"):
        assert check(name, EXERCISES[name].reference).passed
    ref = EXERCISES["nf4_levels"].reference
    np.testing.assert_array_equal(ref(NF4_OFFSET), nf4_levels())
    bits = EXERCISES["double_quant_bits_per_param"].reference
    assert bits(64, 256, True) == costs.nf4_bits_per_param(True) and bits(64, 256, False) == 4.5
    x = np.random.default_rng(0).standard_normal(256)
    codes, absmax = EXERCISES["blockwise_absmax_quantize"].reference(x, nf4_levels(), 64)
    st_ = quantize_4bit(x.astype(np.float32))
    assert np.array_equal(codes, unpack_4bit(st_.packed)) and np.allclose(absmax, st_.absmax, rtol=1e-7)


def test_quant_exercises_typical_mistakes_get_hints():
    def symmetric(offset):
        q = NormalDist().inv_cdf
        pos = np.array([q(float(p)) for p in np.linspace(offset, 0.5, 9)[:-1]])
        v = np.sort(np.r_[pos, -pos])
        return v / v.max()
    _fails("nf4_levels", symmetric, "no exact zero")

    def tensorwise(x, levels, block_size):
        c = np.abs(x).max()
        return (np.argmin(np.abs((x / c)[:, None] - levels[None, :]), axis=1),
                np.full(x.size // block_size, c))
    _fails("blockwise_absmax_quantize", tensorwise, "divide each block by its own absmax")

    def no_second_level(block_size, dq_block_size, double_quant):
        return 4 + (8 / block_size if double_quant else 32 / block_size)
    _fails("double_quant_bits_per_param", no_second_level, "their own float32 scale")


def test_loftq_init_on_grouped_layers():
    """enable_lora (q and v of c_attn): one SVD per group on its rows; the k rows keep the plain Q."""
    float_model = GPT(CFG, seed=0)
    cfg = LoraConfig(r=4, lora_alpha=8, enable_lora=[True, False, True], init_lora_weights="loftq")
    layer = get_peft_model(GPT(CFG, seed=0), cfg).get_submodule("transformer.h.0.attn.c_attn")
    W = float_model.get_submodule("transformer.h.0.attn.c_attn").weight.data.astype(np.float64)
    Q = layer.weight.dequantize(np.float64)
    dW = layer.delta_weight().astype(np.float64)
    C = CFG.n_embd
    assert not dW[C:2 * C].any()
    for rows in (slice(0, C), slice(2 * C, 3 * C)):
        assert np.linalg.norm((W - Q - dW)[rows]) < np.linalg.norm((W - Q)[rows])
        s = np.linalg.svd((W - Q)[rows], compute_uv=False)
        assert np.linalg.norm((W - Q - dW)[rows]) == pytest.approx(np.sqrt((s[4:] ** 2).sum()), rel=1e-5)
