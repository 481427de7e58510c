"""The LoRA family: DoRA (lora/dora.py), PiSSA / OLoRA (lora/pissa.py), LoRA+ (lora/loraplus.py).

Tolerances. Gradients: float64, hand (the fused op) == composed (engine ops) to 1e-10 relative, and
either == central differences with check_grad's defaults (atol 1e-6, rtol 1e-5). Forward vs a dense
ΔW: 1e-12 (float64). Merged vs unmerged: 1e-12 (float64). Save/load: bit for bit.
"""
import json
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.numpy import load_file, save_file

from minilora import check_grad, no_grad
from minilora import io as mio
from minilora.gradcheck import GradcheckError
from minilora.lora import (
    LoraConfig,
    LoRALinear,
    get_peft_model,
    load_lora_model,
    lora_linear,
    lora_linear_composed,
    lora_merge_delta,
)
from minilora.lora.dora import DoRA, DoRAExact, dora_backward, dora_forward, dora_linear, dora_linear_composed
from minilora.lora.loraplus import create_loraplus_optimizer, loraplus_param_groups
from minilora.lora.pissa import (
    ResidualLoRA,
    _stacked,
    converted_factors,
    olora_factors,
    pissa_factors,
    residual_weight,
    save_converted_adapter,
    svd_lowrank,
)
from minilora.nn import GPT, GPTConfig, Linear
from minilora.tensor import Tensor

CFG = GPTConfig(vocab_size=256, block_size=8, n_layer=2, n_head=2, n_embd=12)
IDX = np.random.default_rng(0).integers(0, 256, (2, 8))


def _logits(model, idx=IDX):
    model.eval()
    with no_grad():
        return model(idx)[0].data


def _perturb(model, seed=1, scale=0.05):
    """Move every trainable adapter parameter, as training would."""
    rng = np.random.default_rng(seed)
    for _, p in model.named_trainable_parameters():
        p.data = p.data + scale * rng.standard_normal(p.shape).astype(p.dtype)


# ----------------------------------------------------------------------------- DoRA: the pass

DORA_CASES = st.fixed_dictionaries(dict(
    lead=st.lists(st.integers(1, 3), min_size=1, max_size=2).map(tuple), d_in=st.integers(1, 6),
    d_out=st.integers(1, 6), r=st.integers(1, 4), alpha=st.floats(0.25, 20.0), dropout=st.booleans(),
    bias=st.sampled_from(["none", "frozen", "trained"]), seed=st.integers(0, 2**16)))


def _dora_inputs(case):
    rng = np.random.default_rng(case["seed"])
    d_in, d_out, r = case["d_in"], case["d_out"], case["r"]
    x = rng.standard_normal((*case["lead"], d_in))
    W0 = rng.standard_normal((d_out, d_in))
    A, B = rng.standard_normal((r, d_in)), rng.standard_normal((d_out, r))
    m = rng.uniform(0.5, 2.0, d_out)
    b = None if case["bias"] == "none" else rng.standard_normal(d_out)
    mask = (rng.random(x.shape) > 0.3) if case["dropout"] else None
    return x, W0, A, B, m, b, mask, case["alpha"] / r


@settings(max_examples=30, deadline=None)
@given(case=DORA_CASES, norm_grad=st.sampled_from(["exact", "constant"]))
def test_dora_hand_equals_composed_equals_central_differences(case, norm_grad):
    x, W0, A, B, m, b, mask, s = _dora_inputs(case)
    keep = 0.7

    def tensors():
        bt = None if b is None else Tensor(b.copy(), requires_grad=case["bias"] == "trained")
        return [Tensor(a.copy(), requires_grad=True) for a in (x, A, B, m)] + [bt]

    grads = []
    for fn in (dora_linear, dora_linear_composed):
        xt, At, Bt, mt, bt = tensors()
        y = fn(xt, W0, bt, At, Bt, mt, s, mask, keep, norm_grad)
        c = np.random.default_rng(1).standard_normal(y.shape)
        (y * Tensor(c)).sum().backward()
        grads.append((y.data, [t.grad for t in (xt, At, Bt, mt, bt) if t is not None and t.requires_grad]))
    (y1, g1), (y2, g2) = grads
    np.testing.assert_allclose(y1, y2, rtol=1e-10, atol=1e-12)
    for a, b_ in zip(g1, g2, strict=True):
        np.testing.assert_allclose(a, b_, rtol=1e-10, atol=1e-11)
    if norm_grad == "exact":
        xt, At, Bt, mt, bt = tensors()
        ins = [xt, At, Bt, mt] + ([bt] if bt is not None and bt.requires_grad else [])
        check_grad(lambda x_, A_, B_, m_, *b_: dora_linear(x_, W0, b_[0] if b_ else bt, A_, B_, m_, s, mask, keep),
                   *ins)


def test_dora_norm_held_constant_differs_and_only_the_exact_gradient_matches_differences():
    """DoRA §4.3: treating ‖W0 + sBA‖ as a constant drops a real part of dA and dB (not of dm, dx)."""
    rng = np.random.default_rng(3)
    x, W0 = rng.standard_normal((6, 5)), rng.standard_normal((4, 5))
    A, B, m = rng.standard_normal((2, 5)), rng.standard_normal((4, 2)), rng.uniform(0.5, 2, 4)
    G = rng.standard_normal((6, 4))
    _, cache = dora_forward(x, W0, None, A, B, m, 1.5)
    exact, const = dora_backward(G, cache, "exact"), dora_backward(G, cache, "constant")
    assert np.abs(exact["dA"] - const["dA"]).max() > 0.1 and np.abs(exact["dB"] - const["dB"]).max() > 0.1
    for k in ("dm", "dx"):
        np.testing.assert_array_equal(exact[k], const[k])
    ts = [Tensor(a.copy(), requires_grad=True) for a in (x, A, B, m)]
    check_grad(lambda *t: dora_linear(t[0], W0, None, *t[1:], 1.5, norm_grad="exact"), *ts)
    with pytest.raises(GradcheckError, match="input1"):
        check_grad(lambda *t: dora_linear(t[0], W0, None, *t[1:], 1.5, norm_grad="constant"), *ts)
    # the term dropped is w ⊙_row (V Aᵀ) in dB with w = -dc ⊙ c / n²: recompute it by hand
    V = W0 + 1.5 * B @ A
    n = np.linalg.norm(V, axis=1)
    P = x @ V.T
    dc = (G * P).sum(0)
    w = -dc * (m / n) / n**2
    np.testing.assert_allclose(exact["dB"] - const["dB"], 1.5 * w[:, None] * (V @ A.T), rtol=1e-10)


def test_dora_refuses_bad_inputs_by_name():
    x, W0, A, B = np.ones((2, 3)), np.ones((4, 3)), np.ones((2, 3)), np.ones((4, 2))
    with pytest.raises(ValueError, match=r"m \(lora_magnitude_vector\) has shape \(3,\), expected \(4,\)"):
        dora_forward(x, W0, None, A, B, np.ones(3), 1.0)
    _, cache = dora_forward(x, W0, None, A, B, np.ones(4), 1.0)
    with pytest.raises(ValueError, match="norm_grad must be one of"):
        dora_backward(np.ones((2, 4)), cache, "detach")
    with pytest.raises(TypeError, match="m float32"):
        dora_forward(x, W0, None, A, B, np.ones(4, np.float32), 1.0)


# ----------------------------------------------------------------------------- DoRA: the layer

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("variant", ["dora", "dora_exact"])
def test_fresh_dora_is_the_base_layer_and_m_is_the_row_norm(dtype, variant):
    lin = Linear(7, 5, dtype=dtype, rng=0)
    W0, b = lin.weight.data.copy(), lin.bias.data.copy()
    lay = LoRALinear(lin, 3, 6, rng=1, variant=variant)
    assert lay.variant is (DoRA if variant == "dora" else DoRAExact)
    np.testing.assert_allclose(lay.lora_magnitude_vector.data, np.linalg.norm(W0, axis=1), rtol=1e-6)
    x = np.random.default_rng(2).standard_normal((3, 7)).astype(dtype)
    lay.train()
    y = lay(Tensor(x)).data
    np.testing.assert_array_equal(y, (Tensor(x) @ Tensor(W0.T)).data + b)      # bit for bit
    assert lay.lora_magnitude_vector.dtype == dtype


@settings(max_examples=15, deadline=None)
@given(d_in=st.integers(2, 7), d_out=st.integers(2, 7), r=st.integers(1, 3), alpha=st.floats(0.5, 16),
       variant=st.sampled_from(["dora", "dora_exact"]), seed=st.integers(0, 999))
def test_dora_merge_equals_unmerged_and_unmerge_returns_W0(d_in, d_out, r, alpha, variant, seed):
    lin = Linear(d_in, d_out, dtype=np.float64, rng=seed)
    W0 = lin.weight.data.copy()
    lay = LoRALinear(lin, r, alpha, init_lora_weights=False, rng=seed, variant=variant)
    lay.lora_magnitude_vector.data = lay.lora_magnitude_vector.data * np.linspace(0.5, 1.5, d_out)
    V = W0 + lay.scaling * lay.lora_B.weight.data @ lay.lora_A.weight.data
    W_dora = lay.lora_magnitude_vector.data[:, None] * V / np.linalg.norm(V, axis=1, keepdims=True)
    np.testing.assert_allclose(lay.delta_weight(), W_dora - W0, rtol=1e-12, atol=1e-12)
    x = np.random.default_rng(seed).standard_normal((4, d_in))
    lay.eval()
    with no_grad():
        y = lay(Tensor(x)).data
        lay.merge()
        np.testing.assert_allclose(lay.weight.data, W_dora, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(lay(Tensor(x)).data, y, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(lay.delta_weight(), W_dora - W0, rtol=1e-10, atol=1e-12)
        lay.unmerge()
    np.testing.assert_allclose(lay.weight.data, W0, rtol=1e-12, atol=1e-12)


def test_dora_refuses_slices_by_name():
    with pytest.raises(ValueError, match="DoRA adapts the whole weight.*enable_lora"):
        LoRALinear(Linear(4, 6), 2, 4, enable_lora=[True, False, True], variant="dora")
    with pytest.raises(ValueError, match=r"cannot adapt transformer.h.0.attn.c_attn: DoRA"):
        get_peft_model(GPT(CFG), LoraConfig(r=2, use_dora=True, enable_lora=[True, False, True]))


# ----------------------------------------------------------------------------- PiSSA / OLoRA

@settings(max_examples=20, deadline=None)
@given(d_in=st.integers(2, 8), d_out=st.integers(2, 8), data=st.data(), alpha=st.floats(0.5, 32),
       rs=st.booleans())
def test_pissa_start_is_the_principal_part_for_any_scaling(d_in, d_out, data, alpha, rs):
    r = data.draw(st.integers(1, min(d_in, d_out)))
    lin = Linear(d_in, d_out, dtype=np.float64, rng=data.draw(st.integers(0, 99)))
    W0 = lin.weight.data.copy()
    lay = LoRALinear(lin, r, alpha, use_rslora=rs, init_lora_weights="pissa")
    U, S, Vh = np.linalg.svd(W0, full_matrices=False)
    principal = (U[:, :r] * S[:r]) @ Vh[:r]
    s = lay.scaling
    A0, B0 = lay.lora_A0, lay.lora_B0
    np.testing.assert_allclose(s * B0 @ A0, principal, atol=1e-12)
    np.testing.assert_allclose(np.linalg.norm(A0, axis=1), np.sqrt(S[:r] / s), rtol=1e-10)  # √(S/s) in each
    np.testing.assert_allclose(np.linalg.norm(B0, axis=0), np.sqrt(S[:r] / s), rtol=1e-10)
    np.testing.assert_allclose(residual_weight(lay), W0 - principal, atol=1e-12)
    assert np.array_equal(lay.weight.data, W0)                                 # W0 itself is kept
    np.testing.assert_array_equal(lay.delta_weight(), np.zeros_like(W0))       # ΔW vs W0 starts at 0


def test_pissa_niter_is_exact_on_a_rank_r_weight_and_close_on_a_decaying_spectrum():
    rng = np.random.default_rng(0)
    low = rng.standard_normal((20, 3)) @ rng.standard_normal((3, 15))           # rank 3
    U, S, Vh = svd_lowrank(low, 3, 0)
    np.testing.assert_allclose((U * S) @ Vh, low, atol=1e-10)
    W = (rng.standard_normal((40, 30)) * 0.5 ** np.arange(30)) @ np.linalg.qr(rng.standard_normal((30, 30)))[0]
    S_true = np.linalg.svd(W, compute_uv=False)[:4]
    S2 = svd_lowrank(W, 4, 2)[1]
    np.testing.assert_allclose(S2, S_true, rtol=1e-3)
    A0, B0 = pissa_factors(W, 4, 2.0, niter=2)
    assert np.array_equal(A0, pissa_factors(W, 4, 2.0, niter=2)[0])               # fixed seed: reproducible
    lay = LoRALinear(Linear(30, 40, dtype=np.float64), 4, 8, init_lora_weights="pissa_niter_2")
    lay.weight.data = W
    lay.variant.init(lay, "pissa_niter_2")
    np.testing.assert_array_equal(lay.lora_A0, A0 / 1.0)


def test_olora_start_is_the_thin_qr():
    rng = np.random.default_rng(1)
    W0 = rng.standard_normal((9, 6))
    A0, B0 = olora_factors(W0, 3)
    Q, R = np.linalg.qr(W0)
    np.testing.assert_allclose(B0.T @ B0, np.eye(3), atol=1e-12)               # orthonormal columns
    np.testing.assert_array_equal(A0, R[:3])
    np.testing.assert_allclose(B0 @ A0 + Q[:, 3:] @ R[3:], W0, atol=1e-12)
    lin = Linear(6, 9, dtype=np.float64)
    lin.weight.data = W0
    lay = LoRALinear(lin, 3, 6, init_lora_weights="olora")                       # s = 2, no division (PEFT)
    np.testing.assert_allclose(residual_weight(lay), W0 - 2.0 * B0 @ A0, atol=1e-12)


@settings(max_examples=20, deadline=None)
@given(init=st.sampled_from(["pissa", "pissa_niter_1", "olora"]), k=st.integers(1, 3), data=st.data(),
       alpha=st.floats(0.5, 16), dropout=st.booleans())
def test_residual_layer_hand_equals_composed_equals_central_differences(init, k, data, alpha, dropout):
    enable = data.draw(st.lists(st.booleans(), min_size=k, max_size=k).filter(any)) if k > 1 else None
    d_in, r = data.draw(st.integers(2, 6)), data.draw(st.integers(1, 2))
    lin = Linear(d_in, 3 * k, dtype=np.float64, rng=data.draw(st.integers(0, 99)))
    W0 = lin.weight.data.copy()
    lay = LoRALinear(lin, r, alpha, lora_dropout=0.3 if dropout else 0.0, init_lora_weights=init,
                     enable_lora=enable, rng=0)
    lay.lora_A.weight.data = lay.lora_A.weight.data + 0.3
    x = np.random.default_rng(5).standard_normal((2, 3, d_in))
    lay.eval()
    with no_grad():
        y = lay(Tensor(x)).data
    np.testing.assert_allclose(y, x @ (W0 + lay.delta_weight()).T + lin.bias.data, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(y, x @ (residual_weight(lay) + _lora_dw(lay)).T + lin.bias.data, atol=1e-12)
    mask = (np.random.default_rng(6).random(x.shape) > 0.3) if dropout else None
    c = np.random.default_rng(7).standard_normal(y.shape)
    grads = []
    for fn in (lora_linear, lora_linear_composed):              # hand (fused op) vs composed (engine ops)
        xt = Tensor(x, requires_grad=True)
        At, Bt = (Tensor(p.data.copy(), requires_grad=True) for p in (lay.lora_A.weight, lay.lora_B.weight))
        out = fn(xt, W0, lin.bias.data, *_stacked(lay, At, Bt), lay.scaling, mask, 0.7, lay.slices)
        (out * Tensor(c)).sum().backward()
        grads.append([out.data, xt.grad, At.grad, Bt.grad])
    for a, b in zip(*grads, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
    check_grad(lambda x_, A_, B_: lora_linear(x_, W0, lin.bias.data, *_stacked(lay, A_, B_), lay.scaling, mask, 0.7,
                                              lay.slices),
               Tensor(x, requires_grad=True), lay.lora_A.weight, lay.lora_B.weight)


def _lora_dw(lay):
    """s·B A per slice, the trainable factors only (the papers' W_res + s·B A)."""
    return lora_merge_delta(lay.lora_A.weight.data, lay.lora_B.weight.data, lay.scaling, lay.slices,
                            lay.out_features)


@pytest.mark.parametrize("init", ["pissa", "pissa_niter_2", "olora"])
def test_residual_model_merge_disable_fingerprint_and_files(init, tmp_path):
    base = GPT(CFG, dtype=np.float64)
    before = _logits(base)
    plain_fp = get_peft_model(GPT(CFG, dtype=np.float64), LoraConfig(r=2)).base_fingerprint
    model = get_peft_model(base, LoraConfig(r=2, lora_alpha=5, init_lora_weights=init))
    assert model.peft_config.variant == "residual"
    assert model.base_fingerprint == plain_fp                    # the fingerprint is the ORIGINAL base's
    np.testing.assert_allclose(_logits(model), before, atol=1e-12)   # fresh: the base, up to rounding
    _perturb(model)
    tuned = _logits(model)
    assert np.abs(tuned - before).max() > 1e-3
    with model.disable_adapters():
        np.testing.assert_array_equal(_logits(model), before)   # the ORIGINAL base, bit for bit
    model.merge_adapter()
    np.testing.assert_allclose(_logits(model), tuned, rtol=1e-12, atol=1e-12)
    with model.disable_adapters():
        np.testing.assert_allclose(_logits(model), before, rtol=1e-12, atol=1e-12)
    model.unmerge_adapter()
    notes = model.save_adapter(tmp_path / "a")
    assert any("save_converted_adapter" in n for n in notes)                 # PEFT needs the converted form
    assert sorted(k.rsplit(".", 2)[-2] for k in load_file(str(tmp_path / "a" / "adapter_model.safetensors"))) \
        == ["lora_A", "lora_A", "lora_B", "lora_B"]
    peft_cfg = json.loads((tmp_path / "a" / "adapter_config.json").read_text())
    assert peft_cfg["init_lora_weights"] == init              # PEFT is told the factors need its residual base
    with warnings.catch_warnings():
        warnings.simplefilter("error")                             # same base: no fingerprint warning
        again = load_lora_model(GPT(CFG, dtype=np.float64), tmp_path / "a")
    np.testing.assert_array_equal(_logits(again), tuned)          # bit for bit
    # PEFT's conversion: a plain rank-2r LoRA relative to the original W0
    save_converted_adapter(model, tmp_path / "c")
    meta = json.loads((tmp_path / "c" / "adapter_config.json").read_text())              # PEFT's own config
    assert (meta["r"], meta["lora_alpha"], meta["use_dora"], meta["init_lora_weights"]) == (4, 10, False, True)
    assert not (tmp_path / "c" / "minilora_adapter.json").exists()                      # a plain PEFT folder
    plain = load_lora_model(GPT(CFG, dtype=np.float64), tmp_path / "c")
    assert plain.get_submodule("transformer.h.0.attn.c_attn").variant.name == "lora"
    np.testing.assert_array_equal(_logits(plain), tuned)          # the same numbers, by a plain LoRA


def test_converted_rslora_adapter_keeps_the_scaling():
    model = get_peft_model(GPT(CFG, dtype=np.float64), LoraConfig(r=3, lora_alpha=4, use_rslora=True,
                                                                   init_lora_weights="pissa"))
    _perturb(model)
    lay = model.get_submodule("transformer.h.1.attn.c_attn")
    A, B = converted_factors(lay)
    s2 = LoraConfig(r=6, lora_alpha=4 * 2 ** 0.5, use_rslora=True).scaling
    np.testing.assert_allclose(s2 * B @ A, lay.delta_weight(), atol=1e-12)


# ----------------------------------------------------------------------------- files and config

@pytest.mark.parametrize("kw", [dict(use_dora=True), dict(variant="dora_exact"), dict(init_lora_weights="olora")])
def test_family_save_load_is_bit_exact_and_keys_are_checked_by_name(kw, tmp_path):
    model = get_peft_model(GPT(CFG, dtype=np.float64), LoraConfig(r=2, lora_alpha=3, **kw))
    _perturb(model, seed=4)
    model.save_adapter(tmp_path)
    again = load_lora_model(GPT(CFG, dtype=np.float64), tmp_path)
    for (n1, p1), (n2, p2) in zip(model.named_trainable_parameters(), again.named_trainable_parameters(), strict=True):
        assert n1 == n2 and np.array_equal(p1.data, p2.data)
    np.testing.assert_array_equal(_logits(again), _logits(model))
    unmerged = _logits(model)
    model.merge_adapter()
    np.testing.assert_allclose(_logits(model), unmerged, rtol=1e-12, atol=1e-12)      # merged == unmerged
    model.unmerge_adapter()
    with pytest.warns(UserWarning, match="different base model"):
        load_lora_model(GPT(CFG, dtype=np.float64, seed=7), tmp_path)
    cfg = json.loads((tmp_path / "adapter_config.json").read_text())
    tensors = load_file(str(tmp_path / "adapter_model.safetensors"))
    if model.peft_config.use_dora:
        key = "base_model.model.transformer.h.1.attn.c_attn.lora_magnitude_vector"        # PEFT's key name
        assert key in tensors and cfg["use_dora"] is True
        # a DoRA file into a plain LoRA model: the magnitude is named as unexpected
        plain = get_peft_model(GPT(CFG, dtype=np.float64), LoraConfig(r=2, lora_alpha=3))
        with pytest.raises(ValueError, match=r"unexpected keys \[.*h.0.attn.c_attn.lora_magnitude_vector"):
            plain.load_adapter(tmp_path)
        del tensors[key]
        save_file(tensors, str(tmp_path / "adapter_model.safetensors"))
        side = json.loads((tmp_path / "minilora_adapter.json").read_text())
        side["adapter_fingerprint"] = mio.fingerprint(tensors)
        (tmp_path / "minilora_adapter.json").write_text(json.dumps(side))
        with pytest.raises(ValueError, match=r"missing keys \['transformer.h.1.attn.c_attn.lora_magnitude_vector'\]"):
            load_lora_model(GPT(CFG, dtype=np.float64), tmp_path)


def test_config_selects_the_variant_with_peft_names_and_refuses_combinations():
    assert LoraConfig(use_dora=True).variant == "dora"
    assert LoraConfig(variant="dora").use_dora is True
    assert LoraConfig(init_lora_weights="pissa_niter_4").variant == "residual"
    c = LoraConfig(use_dora=True)
    assert LoraConfig.from_dict(json.loads(json.dumps(c.to_dict()))) == c
    for bad, msg in [(dict(use_dora=True, init_lora_weights="pissa"), "init_lora_weights='pissa'.*use_dora"),
                     (dict(use_dora="yes"), "use_dora must be a bool"),
                     (dict(variant="residual"), "variant='residual' needs init_lora_weights"),
                     (dict(init_lora_weights="pissa_niter_x"), "init_lora_weights must be one of"),
                     (dict(init_lora_weights="olora", variant="dora_exact"), "olora.*dora_exact")]:
        with pytest.raises(ValueError, match=msg):
            LoraConfig(**bad)
    with pytest.raises(ValueError, match=r"needs r <= min\(d_in, rows of each slice\)"):
        LoRALinear(Linear(4, 6), 5, 4, init_lora_weights="pissa")
    assert ResidualLoRA.name == "residual"


# ----------------------------------------------------------------------------- LoRA+

def test_loraplus_groups_follow_peft_and_keep_the_ratio_under_the_schedule():
    model = get_peft_model(GPT(CFG, dtype=np.float64), LoraConfig(r=2, use_dora=True))
    groups = loraplus_param_groups(model, 1e-3, 16, weight_decay=0.1)
    named = {id(p): n for n, p in model.named_parameters()}
    kinds = [sorted({named[id(p)].rsplit(".", 2)[-2 if "weight" in named[id(p)] else -1] for p in g["params"]})
             for g in groups]
    assert kinds == [["lora_A"], ["lora_B"], ["lora_magnitude_vector"]]
    assert [(g["lr"], g["weight_decay"]) for g in groups] == [(1e-3, 0.1), (16e-3, 0.1), (16e-3, 0.0)]
    opt = create_loraplus_optimizer(model, 1e-3, 16)
    opt.set_lr(2.5e-4)                                                     # e.g. in warm-up
    assert [g["lr"] for g in opt.param_groups] == [2.5e-4, 4e-3, 4e-3]
    with pytest.raises(ValueError, match="loraplus_lr_ratio must be a finite number > 0"):
        loraplus_param_groups(model, 1e-3, 0)
    with pytest.raises(ValueError, match="no trainable lora_B"):
        loraplus_param_groups(GPT(CFG), 1e-3)


def test_loraplus_first_adam_step_moves_B_lambda_times_further():
    """AdamW's first step is lr·g/(|g| + eps) ≈ ±lr: B's entries move by λ·lr, A's by lr."""
    model = get_peft_model(GPT(CFG, dtype=np.float64), LoraConfig(r=2, init_lora_weights=False))
    opt = create_loraplus_optimizer(model, 1e-3, 16, betas=(0.9, 0.999), eps=1e-30)
    before = {n: p.data.copy() for n, p in model.named_trainable_parameters()}
    model.train()
    _, loss = model(IDX, targets=IDX)
    loss.backward()
    opt.step()
    for n, p in model.named_trainable_parameters():
        step = np.abs(p.data - before[n])
        want = 16e-3 if "lora_B" in n else 1e-3
        np.testing.assert_allclose(step[step > 0], want, rtol=1e-9)


# ----------------------------------------------------------------------------- the command line

def test_finetune_cli_trains_each_variant(tmp_path, capsys):
    from minilora import checkpoints
    from minilora.cli import main

    common = ["finetune", "--base", str(checkpoints.path()), "--corpus", "stdlib", "--steps", "3",
              "--batch-size", "2", "--eval-batches", "1", "--quiet", "--r", "2"]
    for flags in (["--use-dora"], ["--variant", "dora_exact"], ["--init-lora-weights", "pissa_niter_2"],
                  ["--init-lora-weights", "olora"], ["--loraplus-lr-ratio", "16"]):
        out = tmp_path / flags[-1]
        assert main(common + flags + ["--out", str(out)]) == 0
        text = capsys.readouterr().out
        assert "stdlib validation loss" in text
        meta = json.loads((out / "adapter" / "adapter_config.json").read_text())
        assert meta["use_dora"] == ("--use-dora" in flags or "dora_exact" in flags)
    assert main(common[:-2] + ["--full", "--use-dora"]) == 2
    assert "--use-dora" in capsys.readouterr().err
    assert main(common + ["--use-dora", "--init-lora-weights", "pissa"]) == 2
    assert "use_dora" in capsys.readouterr().err
    assert main(common + ["--variant", "vera", "--use-dora"]) == 2
    assert "--variant vera has its own parameters" in capsys.readouterr().err


# ----------------------------------------------------------------------------- the exercises (catalog/family.py)

def test_family_exercises_recognise_the_classic_mistakes():
    from minilora.exercises import check
    from minilora.exercises.solutions.dora_backward import dora_backward as ref_dora
    from minilora.exercises.solutions.pissa_init import pissa_init as ref_pissa

    def dm_without_norm(x, W0, A, B, m, s, g):
        dx, dA, dB, _ = ref_dora(x, W0, A, B, m, s, g)
        V = W0 + s * B @ A
        return dx, dA, dB, (g * (x @ V.T)).sum(0)

    def lora_grads_without_c(x, W0, A, B, m, s, g):
        dx, _, dB, dm = ref_dora(x, W0, A, B, m, s, g)
        return dx, s * (g @ B).T @ x, dB, dm

    def no_division_by_scaling(W0, r, s):
        U, S, Vh = np.linalg.svd(W0, full_matrices=False)
        A, B = np.sqrt(S[:r])[:, None] * Vh[:r], U[:, :r] * np.sqrt(S[:r])
        return A, B, W0 - s * B @ A

    def only_lora_B(names, ndims, lr, lam):
        return np.array([lr * lam if "lora_B" in n else lr for n in names])

    for name, fn, needle in [("dora_backward", dm_without_norm, "divides by the norm"),
                             ("dora_backward", lora_grads_without_c, "not g: c scales the LoRA path"),
                             ("pissa_init", no_division_by_scaling, "divide S by the scaling"),
                             ("pissa_init", lambda W0, r, s: ref_pissa(W0, r, s)[:2] + (W0,), "output 'W_res'"),
                             ("loraplus_lrs", only_lora_B, "1-D parameters")]:
        res = check(name, fn)
        assert not res.passed and needle in res.message, (name, res.message[-400:])


@pytest.mark.filterwarnings("ignore:quantize_4bit")
def test_a_quantized_base_is_refused_by_name():
    """DoRA and PiSSA/OLoRA read the float W0; with QLoRA's 4-bit base they refuse, naming it."""
    from minilora.finetune import finetune
    from minilora.quant import quantize_model

    for kw, what in ((dict(use_dora=True), "DoRA"), (dict(init_lora_weights="olora"), "PiSSA/OLoRA")):
        model = get_peft_model(GPT(CFG), LoraConfig(r=2, **kw))
        quantize_model(model)
        with pytest.raises(ValueError, match=f"{what} needs the float base weight W0.*NF4Weight"):
            model(IDX)
        with pytest.raises(ValueError, match="needs the float base weight; a 4-bit"):
            finetune(GPT(CFG), None, "lora", LoraConfig(r=2, **kw), quantize="nf4")
    with pytest.raises(ValueError, match="DoRA with init_lora_weights='loftq' is not supported"):
        LoRALinear(Linear(64, 64), 2, 4, variant="dora", init_lora_weights="loftq")


def test_family_variants_as_named_adapters_and_in_a_mixed_batch():
    """Each adapter is its own layer on the same W0 (lora/adapters.py): PiSSA's start is computed from the
    untouched W0, so it coexists with other adapters; a mixed batch equals each row run alone."""
    base = GPT(CFG, dtype=np.float64)
    before = _logits(base)
    model = get_peft_model(base, LoraConfig(r=2, init_lora_weights=False))
    model.add_adapter("pissa", LoraConfig(r=2, lora_alpha=4, init_lora_weights="pissa"))
    model.add_adapter("dora", LoraConfig(r=2, use_dora=True, init_lora_weights=False))
    alone = {}
    for name in ("default", "pissa", "dora"):
        model.set_adapter(name)
        _perturb(model, seed=len(name))
        alone[name] = _logits(model)
    model.eval()
    with no_grad():
        mixed = model(IDX, adapter_names=["pissa", "dora"])[0].data
        base_rows = model(IDX, adapter_names=["__base__", "default"])[0].data
    np.testing.assert_allclose(mixed[0], alone["pissa"][0], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(mixed[1], alone["dora"][1], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(base_rows[0], before[0], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kw", [dict(variant="dora"), dict(init_lora_weights="pissa")])
def test_rank_tools_refuse_a_variant_whose_delta_is_not_BA(kw):
    from minilora import rank as R

    lay = LoRALinear(Linear(6, 5, dtype=np.float64, rng=0), 2, 4, rng=0, **kw)
    for fn in (R.lora_factors, R.delta_weight, R.lora_svd):
        with pytest.raises(ValueError, match=r"variant is '(dora|residual)'.*layer.delta_weight\(\)"):
            fn(lay)
    assert R.singular_values(lay.delta_weight()).shape == (5,)


@pytest.mark.parametrize("rs", [False, True])
def test_converted_adapter_on_q_and_v_slices_is_a_plain_peft_lora_of_the_same_model(rs, tmp_path):
    model = get_peft_model(GPT(CFG, dtype=np.float64), LoraConfig(r=2, lora_alpha=3, use_rslora=rs,
                                                                   init_lora_weights="olora",
                                                                   enable_lora=[True, False, True]))
    _perturb(model, seed=9)
    save_converted_adapter(model, tmp_path)
    peft_cfg = json.loads((tmp_path / "adapter_config.json").read_text())
    assert peft_cfg["rank_pattern"] == {"transformer.h.0.attn.c_attn": 8, "transformer.h.1.attn.c_attn": 8}
    plain = load_lora_model(GPT(CFG, dtype=np.float64), tmp_path)                    # read as a PEFT adapter
    assert plain.get_submodule("transformer.h.0.attn.c_attn").slices is None
    np.testing.assert_allclose(_logits(plain), _logits(model), rtol=1e-12, atol=1e-12)
