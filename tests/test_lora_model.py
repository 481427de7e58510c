"""Tests for minilora.lora.model: LoraConfig, target matching, injection, trainable counts, merging,
disable_adapters, merge_and_unload, adapter files, and a short LoRA fine-tune on real text.

Tolerances: float64 merged vs unmerged logits 1e-12 relative; float32 1e-5 relative (of max |logit|).
"""
import json
import warnings

import numpy as np
import pytest

from minilora import check_vjp, data, no_grad
from minilora.lora import (
    LoraConfig,
    LoRALinear,
    find_target_modules,
    get_peft_model,
    inject_lora,
    load_lora_model,
    lora_state_dict,
    mark_only_lora_as_trainable,
)
from minilora.nn import GPT, GPTConfig, Linear

CFG = GPTConfig(vocab_size=256, block_size=8, n_layer=2, n_head=2, n_embd=12)


def gpt(dtype=np.float64, seed=0, cfg=CFG):
    return GPT(cfg, dtype=dtype, seed=seed)


def idx(B=2, T=8, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (B, T))


def logits(model, x):
    model.eval()
    with no_grad():
        return model(x)[0].data


# ----------------------------------------------------------------------------- config

def test_config_validation_and_round_trip():
    c = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.1, target_modules=["c_attn", "mlp.c_fc"],
                   use_rslora=True, init_lora_weights="gaussian", bias="lora_only", enable_lora=[True, False, True])
    d = c.to_dict()
    assert json.loads(json.dumps(d)) == d
    assert LoraConfig.from_dict(d) == c
    assert LoraConfig.from_dict(LoraConfig(target_modules=r".*c_attn").to_dict()).target_modules == r".*c_attn"
    for bad in [dict(r=0), dict(r=2.0), dict(r=True), dict(lora_alpha=0), dict(lora_alpha=-1),
                dict(lora_dropout=1.0), dict(lora_dropout=-0.1), dict(bias="some"), dict(target_modules=[]),
                dict(target_modules=[""]), dict(target_modules="("), dict(init_lora_weights="zeros"),
                dict(enable_lora=[False, False])]:
        with pytest.raises(ValueError):
            LoraConfig(**bad)
    with pytest.raises(TypeError):
        LoraConfig(target_modules=3)
    with pytest.raises(ValueError, match="unknown keys"):
        LoraConfig.from_dict({"r": 2, "rank": 2})


# ----------------------------------------------------------------------------- matching

def test_target_matching_rules():
    m = gpt()
    assert find_target_modules(m, ["c_attn"]) == ["transformer.h.0.attn.c_attn", "transformer.h.1.attn.c_attn"]
    assert find_target_modules(m, ["attn.c_attn"]) == find_target_modules(m, ["c_attn"])
    assert find_target_modules(m, ["transformer.h.1.attn.c_attn"]) == ["transformer.h.1.attn.c_attn"]
    with pytest.raises(ValueError, match="'tn.c_attn'"):
        find_target_modules(m, ["tn.c_attn"])
    with pytest.raises(ValueError, match="'c_atn'"):          # named even though c_proj matched
        find_target_modules(m, ["c_proj", "c_atn"])
    assert find_target_modules(m, r"transformer\.h\.0\..*") == [
        "transformer.h.0.attn.c_attn", "transformer.h.0.attn.c_proj", "transformer.h.0.mlp.c_fc",
        "transformer.h.0.mlp.c_proj"]                           # only Linear modules are eligible
    with pytest.raises(ValueError, match="regular expression"):
        find_target_modules(m, r"c_attn")                       # full match, not search
    with pytest.raises(ValueError, match="'ln_1'"):
        find_target_modules(m, ["ln_1"])                        # a LayerNorm is not eligible


def test_injection_errors_name_the_module():
    with pytest.raises(ValueError, match=r"transformer\.h\.0\.attn\.c_proj.*\(12, 12\)"):
        inject_lora(gpt(), LoraConfig(r=13, target_modules=["c_proj"]))
    with pytest.raises(ValueError, match="c_atn"):
        get_peft_model(gpt(), LoraConfig(target_modules=["c_atn"]))
    with pytest.raises(ValueError, match="tied"):
        inject_lora(gpt(), LoraConfig(r=2, target_modules=["lm_head"]))
    m = gpt()
    inject_lora(m, LoraConfig(r=2))
    with pytest.raises(ValueError, match="already have LoRA"):
        inject_lora(m, LoraConfig(r=2))


# ----------------------------------------------------------------------------- parameters

def test_names_and_trainable_counts(capsys):
    C, r = CFG.n_embd, 3
    base = gpt()
    n_all = base.num_parameters()
    names_before = [n for n, _ in base.named_parameters()]
    model = get_peft_model(base, LoraConfig(r=r, lora_alpha=5, target_modules=["c_attn", "c_fc"]))
    names = [n for n, _ in model.named_parameters()]
    assert [n for n in names if "lora_" not in n] == names_before     # frozen names unchanged, same order
    assert "transformer.h.0.attn.c_attn.lora_A.weight" in names
    assert "transformer.h.1.mlp.c_fc.lora_B.weight" in names
    assert model.state_dict().keys() == dict(model.named_parameters()).keys()
    expect = CFG.n_layer * (r * (C + 3 * C) + r * (C + 4 * C))        # r (d_in + d_out) per matrix
    assert model.get_nb_trainable_parameters() == (expect, n_all + expect)
    assert sum(p.size for p in model.trainable_parameters()) == expect
    model.print_trainable_parameters()
    out = capsys.readouterr().out
    assert out == (f"trainable params: {expect} || all params: {n_all + expect} || "
                   f"trainable%: {100 * expect / (n_all + expect):.4f}\n")


def test_enable_lora_qv_count_and_bias_modes():
    C, r = CFG.n_embd, 2
    model = get_peft_model(gpt(), LoraConfig(r=r, enable_lora=[True, False, True]))
    assert model.get_nb_trainable_parameters()[0] == CFG.n_layer * 2 * r * (C + C)
    mark_only_lora_as_trainable(model, bias="lora_only")
    tr = [n for n, _ in model.named_trainable_parameters()]
    assert "transformer.h.0.attn.c_attn.bias" in tr and "transformer.h.0.mlp.c_fc.bias" not in tr
    mark_only_lora_as_trainable(model, bias="all")
    tr = [n for n, _ in model.named_trainable_parameters()]
    assert "transformer.h.0.mlp.c_fc.bias" in tr and "transformer.h.0.ln_1.bias" in tr
    assert not any(n.endswith(".weight") and "lora_" not in n for n in tr)


def test_lora_model_delegates():
    base = gpt()
    model = get_peft_model(base, LoraConfig(r=2))
    assert model.rng is base.rng and model.config is base.config and model.base_model is base
    assert model.dtype == np.float64
    x = idx()
    lg, loss = model(x, x)
    assert lg.shape == (2, 8, 256) and loss is not None
    assert model.generate(x[:, :2], 3, seed=0).shape == (2, 5)
    model.eval()
    assert not base.training and not base.transformer.h[0].attn.c_attn.training


# ----------------------------------------------------------------------------- exactness at step 0

def test_b_zero_gives_base_logits_bit_for_bit_and_zero_dA():
    x = idx()
    ref = logits(gpt(), x)
    model = get_peft_model(gpt(), LoraConfig(r=2, lora_alpha=7, target_modules=["c_attn", "c_proj", "c_fc"]))
    np.testing.assert_array_equal(logits(model, x), ref)
    model.train()
    _, loss = model(x, x)
    loss.backward()
    for name, p in model.named_parameters():
        if "lora_A" in name:
            assert np.all(p.grad == 0.0), name
        elif "lora_B" in name:
            assert np.any(p.grad != 0.0), name
        else:
            assert p.grad is None and not p.requires_grad, name


def test_whole_model_gradients_match_finite_differences():
    model = get_peft_model(gpt(), LoraConfig(r=2, lora_alpha=3, init_lora_weights=False,
                                              target_modules=["c_attn", "c_fc"]))
    x = idx(seed=1)
    params = model.trainable_parameters()
    check_vjp(lambda *ps: model(x)[0], *params, n_directions=2)


# ----------------------------------------------------------------------------- merging

@pytest.mark.parametrize("dtype, rtol", [(np.float64, 1e-12), (np.float32, 1e-5)])
def test_merged_equals_unmerged_and_merge_and_unload(dtype, rtol):
    model = get_peft_model(gpt(dtype), LoraConfig(r=3, lora_alpha=5, init_lora_weights=False,
                                                  target_modules=["c_attn", "mlp.c_proj"]))
    x = idx()
    y = logits(model, x)
    scale = np.abs(y).max()
    model.merge_adapter()
    assert model.is_merged
    np.testing.assert_allclose(logits(model, x), y, rtol=0, atol=rtol * scale)
    with pytest.warns(UserWarning, match="already merged"):
        model.merge_adapter()
    model.unmerge_adapter()
    np.testing.assert_allclose(logits(model, x), y, rtol=0, atol=rtol * scale)
    with pytest.warns(UserWarning, match="not merged"):
        model.unmerge_adapter()
    plain = model.merge_and_unload()
    assert isinstance(plain, GPT)
    assert not any(isinstance(m, LoRALinear) for m in plain.modules())
    assert all(type(plain.get_submodule(n)) is Linear for n in model.lora_module_names)
    assert not any("lora_" in n for n, _ in plain.named_parameters())
    assert all(p.requires_grad for p in plain.parameters())
    np.testing.assert_allclose(logits(plain, x), y, rtol=0, atol=rtol * scale)


def test_disable_adapters_gives_exactly_the_base_outputs():
    x = idx()
    ref = logits(gpt(), x)
    model = get_peft_model(gpt(), LoraConfig(r=2, init_lora_weights=False))
    y = logits(model, x)
    assert np.abs(y - ref).max() > 1e-3
    with model.disable_adapters():
        np.testing.assert_array_equal(logits(model, x), ref)
    np.testing.assert_array_equal(logits(model, x), y)
    model.merge_adapter()
    with model.disable_adapters():
        assert not model.is_merged
        np.testing.assert_allclose(logits(model, x), ref, rtol=0, atol=1e-12 * np.abs(ref).max())
    assert model.is_merged
    np.testing.assert_allclose(logits(model, x), y, rtol=0, atol=1e-12 * np.abs(y).max())


# ----------------------------------------------------------------------------- adapter files

def _trained(dtype=np.float64, r=2, seed=0, **kw):
    model = get_peft_model(gpt(dtype, seed=seed), LoraConfig(r=r, lora_alpha=5, init_lora_weights=False, **kw))
    return model


def test_save_load_round_trip_bit_exact(tmp_path):
    model = _trained(np.float32, target_modules=["c_attn", "c_fc"])
    model.save_adapter(tmp_path / "ad")
    files = sorted(p.name for p in (tmp_path / "ad").iterdir())
    assert files == ["adapter_config.json", "adapter_model.safetensors", "minilora_adapter.json"]
    peft = json.loads((tmp_path / "ad" / "adapter_config.json").read_text())
    meta = json.loads((tmp_path / "ad" / "minilora_adapter.json").read_text())
    assert peft["r"] == 2 and peft["peft_type"] == "LORA" and len(meta["base_model_fingerprint"]) == 64
    from safetensors.numpy import load_file
    keys = list(load_file(str(tmp_path / "ad" / "adapter_model.safetensors")))
    assert sorted(keys) == sorted("base_model.model." + k for k in lora_state_dict(model))
    assert "base_model.model.transformer.h.0.attn.c_attn.lora_A.weight" in keys
    other = get_peft_model(gpt(np.float32), LoraConfig(r=2, target_modules=["c_attn", "c_fc"]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")                     # same base: no fingerprint warning
        other.load_adapter(tmp_path / "ad")
    for k, v in lora_state_dict(model).items():
        assert np.array_equal(other.state_dict()[k], v) and other.state_dict()[k].dtype == v.dtype
    x = idx()
    np.testing.assert_array_equal(logits(other, x), logits(model, x))
    again = load_lora_model(gpt(np.float32), tmp_path / "ad")
    np.testing.assert_array_equal(logits(again, x), logits(model, x))


def test_load_adapter_scaling_follows_the_file(tmp_path):
    model = _trained()
    model.save_adapter(tmp_path)
    other = get_peft_model(gpt(), LoraConfig(r=2, lora_alpha=99))
    other.load_adapter(tmp_path)
    assert other.peft_config.lora_alpha == 5
    np.testing.assert_array_equal(logits(other, idx()), logits(model, idx()))


def test_rank_mismatch_names_key_and_both_shapes(tmp_path):
    _trained(r=8).save_adapter(tmp_path)
    small = get_peft_model(gpt(), LoraConfig(r=4))
    with pytest.raises(ValueError, match=r"transformer\.h\.0\.attn\.c_attn\.lora_A\.weight.*\(8, 12\).*\(4, 12\)"):
        small.load_adapter(tmp_path)


def test_missing_and_unexpected_keys_refused(tmp_path):
    _trained(target_modules=["c_attn", "c_fc"]).save_adapter(tmp_path / "two")
    _trained(target_modules=["c_attn"]).save_adapter(tmp_path / "one")
    one = get_peft_model(gpt(), LoraConfig(r=2, target_modules=["c_attn"]))
    with pytest.raises(ValueError, match=r"unexpected keys \['transformer\.h\.0\.mlp\.c_fc\.lora_A\.weight'"):
        one.load_adapter(tmp_path / "two")
    two = get_peft_model(gpt(), LoraConfig(r=2, target_modules=["c_attn", "c_fc"]))
    with pytest.raises(ValueError, match=r"missing keys \['transformer\.h\.0\.mlp\.c_fc\.lora_A\.weight'"):
        two.load_adapter(tmp_path / "one")


def test_fingerprint_mismatch_warns_and_mismatched_files_refused(tmp_path):
    _trained(seed=0).save_adapter(tmp_path / "a")
    other_base = get_peft_model(gpt(seed=1), LoraConfig(r=2))
    with pytest.warns(UserWarning, match="different base model"):
        other_base.load_adapter(tmp_path / "a")
    _trained(seed=5).save_adapter(tmp_path / "b")
    (tmp_path / "b" / "adapter_model.safetensors").write_bytes((tmp_path / "a" / "adapter_model.safetensors")
                                                               .read_bytes())
    with pytest.raises(ValueError, match="does not match"):
        other_base.load_adapter(tmp_path / "b")


def test_peft_prefixed_keys_accepted_and_merged_load_refused(tmp_path):
    from minilora import io as mio
    model = _trained()
    model.save_adapter(tmp_path)                           # an older (npz) folder whose keys carry PEFT's prefix
    from minilora.lora import read_adapter
    _, _, t = read_adapter(tmp_path)
    meta = dict(model.peft_config.to_dict(), peft_type="LORA", format_version=1, dtype=str(model.dtype),
                base_model_fingerprint=model.base_fingerprint)
    for k in ("rank_pattern", "alpha_pattern", "layers_to_transform", "layers_pattern", "exclude_modules"):
        meta.pop(k)
    for f in ("adapter_model.safetensors", "minilora_adapter.json"):
        (tmp_path / f).unlink()
    mio.save_npz_atomic(tmp_path / "adapter_model.npz", {"base_model.model." + k: v for k, v in t.items()})
    (tmp_path / "adapter_config.json").write_text(json.dumps(meta))
    other = get_peft_model(gpt(), LoraConfig(r=2))
    other.load_adapter(tmp_path)
    np.testing.assert_array_equal(logits(other, idx()), logits(model, idx()))
    other.merge_adapter()
    with pytest.raises(RuntimeError, match="unmerge"):
        other.load_adapter(tmp_path)


def test_fingerprint_survives_merge_unmerge_drift(tmp_path):
    model = _trained(np.float32)
    fp = model.base_fingerprint
    for _ in range(3):
        model.merge_adapter()
        model.unmerge_adapter()
    model.save_adapter(tmp_path)
    assert json.loads((tmp_path / "minilora_adapter.json").read_text())["base_model_fingerprint"] == fp


# ----------------------------------------------------------------------------- fine-tuning

def _adam(params, lr):
    """A ten-line Adam (minilora.optim is another issue's work)."""
    state = [(np.zeros_like(p.data), np.zeros_like(p.data)) for p in params]
    t = [0]

    def step():
        t[0] += 1
        for p, (m, v) in zip(params, state, strict=True):
            if p.grad is None:
                continue
            m *= 0.9
            m += 0.1 * p.grad
            v *= 0.999
            v += 0.001 * p.grad ** 2
            mh, vh = m / (1 - 0.9 ** t[0]), v / (1 - 0.999 ** t[0])
            p.data = (p.data - lr * mh / (np.sqrt(vh) + 1e-8)).astype(p.dtype)
            p.grad = None
    return step


def _val_loss(model, ds, batches):
    model.eval()
    with no_grad():
        out = float(np.mean([model(x, y)[1].item() for x, y in batches]))
    model.train()
    return out


def test_short_lora_finetune_lowers_validation_loss_on_code():
    cfg = GPTConfig(n_layer=2, n_head=4, n_embd=64, block_size=32)
    base = GPT(cfg, seed=0)
    prose = data.TokenDataset(data.load_corpus("pydoc"))
    code = data.TokenDataset(data.load_corpus("stdlib"))
    rng = np.random.default_rng(0)
    step = _adam(base.parameters(), 3e-3)
    for _ in range(40):                                          # pretrain on prose
        x, y = prose.get_batch("train", 8, 32, rng)
        base(x, y)[1].backward()
        step()
    vrng = np.random.default_rng(123)
    val = [code.get_batch("val", 16, 32, vrng) for _ in range(4)]
    before = _val_loss(base, code, val)
    frozen = {n: p.data.copy() for n, p in base.named_parameters()}
    model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["c_attn"]))
    step = _adam(model.trainable_parameters(), 1e-2)
    for _ in range(40):                                          # LoRA on code
        x, y = code.get_batch("train", 8, 32, rng)
        model(x, y)[1].backward()
        step()
    after = _val_loss(model, code, val)
    print(f"code val loss before {before:.3f}, after LoRA {after:.3f}")
    assert after < before - 0.05, (before, after)
    for n, p in model.named_parameters():
        if "lora_" not in n:
            assert np.array_equal(p.data, frozen[n]), n          # the base never moved
