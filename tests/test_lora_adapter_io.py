"""Tests for minilora.lora.adapter_io: what an adapter file holds and that it loads back exactly.

Faults covered (issue 10, item 1):
* trained biases (bias="lora_only" / "all") were not written, so a reloaded model differed
  (max logit difference 0.02-0.07 after a few AdamW steps): every bias mode now round-trips with
  bit-equal logits; older files without biases still load, with a warning when biases trained.
* two `get_peft_model` calls on one GPT: the first model's adapter held the second's layers and
  could not be loaded. Each LoraModel saves, loads and merges only the layers it injected.
"""
import json
import warnings

import numpy as np
import pytest

from minilora import io as mio
from minilora import no_grad
from minilora.lora import LoraConfig, get_peft_model, load_lora_model, read_adapter
from minilora.nn import GPT, GPTConfig
from minilora.optim import AdamW

CFG = GPTConfig(vocab_size=256, block_size=8, n_layer=2, n_head=2, n_embd=12)
BIAS_MODES = ("none", "lora_only", "all")


def gpt(dtype=np.float32, seed=0):
    return GPT(CFG, dtype=dtype, seed=seed)


def batch(seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (4, 8)), rng.integers(0, 256, (4, 8))


def logits(model, x):
    model.eval()
    with no_grad():
        return model(x)[0].data


def file_tensors(path):
    """The tensors of an adapter folder's safetensors file under the model's names (PEFT's prefix and
    `base_layer.` removed)."""
    from safetensors.numpy import load_file
    return {k.removeprefix("base_model.model.").replace(".base_layer.", "."): v
            for k, v in load_file(str(path / "adapter_model.safetensors")).items()}


def side(path):
    return json.loads((path / "minilora_adapter.json").read_text())


def write_v1(path, model, tensors, **fields):
    """An adapter folder as minilora wrote it before format_version 2 (npz, minilora's fields in
    adapter_config.json), with `fields` added to its config."""
    for f in ("adapter_model.safetensors", "minilora_adapter.json"):
        (path / f).unlink(missing_ok=True)
    meta = dict(model.peft_config.to_dict(), peft_type="LORA", format_version=1,
                base_model_fingerprint=model.base_fingerprint, adapter_fingerprint=mio.fingerprint(tensors),
                target_names=list(model.lora_module_names), dtype=str(model.dtype), **fields)
    for k in ("rank_pattern", "alpha_pattern", "layers_to_transform", "layers_pattern", "exclude_modules"):
        meta.pop(k)                                        # fields that came with format_version 2
    mio.save_npz_atomic(path / "adapter_model.npz", tensors)
    mio.save_json_atomic(path / "adapter_config.json", meta)
    return meta


def train(model, steps=4, lr=0.05):
    model.train()
    opt = AdamW(model.trainable_parameters(), lr=lr)
    for s in range(steps):
        x, y = batch(s)
        model.zero_grad()
        _, loss = model(x, y)
        loss.backward()
        opt.step()
    return model


@pytest.mark.parametrize("bias", BIAS_MODES)
@pytest.mark.parametrize("targets", [("c_attn",), ("c_attn", "c_fc"), ("c_proj",)])
def test_every_bias_mode_round_trips_with_equal_logits(tmp_path, bias, targets):
    base_biases = {n: p.data.copy() for n, p in gpt().named_parameters() if n.endswith("bias")}
    model = train(get_peft_model(gpt(), LoraConfig(r=2, lora_alpha=4, target_modules=targets, bias=bias)))
    moved = [n for n, p in model.named_parameters()
             if n.endswith("bias") and not np.array_equal(p.data, base_biases[n])]
    if bias == "none":
        assert moved == []
    else:                                                    # the fault needs trained biases to show
        assert moved and all(model.get_parameter(n).requires_grad for n in moved)
    model.save_adapter(tmp_path)
    assert sorted(side(tmp_path)["bias_keys"]) == sorted(moved)
    assert set(moved) <= set(file_tensors(tmp_path))
    x, _ = batch(99)
    with warnings.catch_warnings():
        warnings.simplefilter("error")                       # same base: no warning of any kind
        again = load_lora_model(gpt(), tmp_path)
    np.testing.assert_array_equal(logits(again, x), logits(model, x))
    for n in moved:
        assert np.array_equal(again.get_parameter(n).data, model.get_parameter(n).data)


def test_lora_only_saves_the_adapted_layers_biases_and_all_saves_every_bias(tmp_path):
    for bias, expect in [("lora_only", ["transformer.h.0.attn.c_attn.bias", "transformer.h.1.attn.c_attn.bias"]),
                         ("all", [n for n, _ in gpt().named_parameters() if n.endswith("bias")])]:
        get_peft_model(gpt(), LoraConfig(r=2, bias=bias)).save_adapter(tmp_path / bias)
        assert side(tmp_path / bias)["bias_keys"] == expect
    assert "transformer.ln_f.bias" in expect                 # loralib's "all": LayerNorm biases too


@pytest.mark.parametrize("bias", ["lora_only", "all"])
def test_an_older_file_without_biases_still_loads_and_says_so(tmp_path, bias):
    model = train(get_peft_model(gpt(), LoraConfig(r=2, bias=bias)))
    model.save_adapter(tmp_path)
    cfg, meta, tensors = read_adapter(tmp_path)
    old = {k: v for k, v in tensors.items() if ".lora_" in k}            # what the old writer stored
    write_v1(tmp_path, model, old)
    with pytest.warns(UserWarning, match="before adapters stored their trained biases"):
        again = load_lora_model(gpt(), tmp_path)
    for k, v in old.items():
        assert np.array_equal(again.get_parameter(k).data, v)


def test_an_older_file_of_bias_none_loads_silently(tmp_path):
    model = train(get_peft_model(gpt(), LoraConfig(r=2)))
    model.save_adapter(tmp_path)
    meta = write_v1(tmp_path, model, read_adapter(tmp_path)[2])
    del meta["variant"]                                                   # written before it existed
    mio.save_json_atomic(tmp_path / "adapter_config.json", meta)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        again = load_lora_model(gpt(), tmp_path)
    x, _ = batch(5)
    np.testing.assert_array_equal(logits(again, x), logits(model, x))


def test_bias_keys_naming_absent_tensors_are_refused(tmp_path):
    from safetensors.numpy import load_file, save_file
    get_peft_model(gpt(), LoraConfig(r=2, bias="lora_only")).save_adapter(tmp_path)
    t = load_file(str(tmp_path / "adapter_model.safetensors"))
    t.pop("base_model.model.transformer.h.0.attn.c_attn.base_layer.bias")
    meta = side(tmp_path)
    meta["adapter_fingerprint"] = mio.fingerprint(t)
    save_file(t, str(tmp_path / "adapter_model.safetensors"))
    mio.save_json_atomic(tmp_path / "minilora_adapter.json", meta)
    with pytest.raises(ValueError, match=r"lists bias tensors \['transformer\.h\.0\.attn\.c_attn\.bias'\]"):
        load_lora_model(gpt(), tmp_path)


# ----------------------------------------------------------------------------- two LoraModels on one GPT

@pytest.mark.parametrize("first, second", [(("c_attn",), ("c_proj",)), (("c_fc",), ("c_attn", "attn.c_proj")),
                                           ("transformer\\.h\\.0\\..*", "transformer\\.h\\.1\\.mlp\\..*")])
def test_two_peft_models_on_one_gpt_each_save_and_load_their_own(tmp_path, first, second):
    shared = gpt()
    m1 = get_peft_model(shared, LoraConfig(r=2, lora_alpha=4, target_modules=first, init_lora_weights=False))
    m2 = get_peft_model(shared, LoraConfig(r=3, lora_alpha=6, target_modules=second, init_lora_weights=False))
    assert {n for n, _ in m1.lora_layers()} == set(m1.lora_module_names)
    assert set(m1.lora_module_names).isdisjoint(m2.lora_module_names)
    m1.save_adapter(tmp_path / "one")
    m2.save_adapter(tmp_path / "two")
    for m, d in ((m1, "one"), (m2, "two")):
        assert {k.rsplit(".", 2)[0] for k in file_tensors(tmp_path / d)} == set(m.lora_module_names)
    # each file loads on a fresh base; both together rebuild the shared model exactly
    fresh = gpt()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        f1 = load_lora_model(fresh, tmp_path / "one")
        f2 = load_lora_model(fresh, tmp_path / "two")
    x, _ = batch(3)
    np.testing.assert_array_equal(logits(f2, x), logits(m2, x))
    for (n, a), (_, b) in zip(f1.lora_layers(), m1.lora_layers(), strict=True):
        assert np.array_equal(a.lora_A.weight.data, b.lora_A.weight.data)
        assert np.array_equal(a.lora_B.weight.data, b.lora_B.weight.data), n
    # and back into the models that wrote them (only their own layers are touched)
    m1.load_adapter(tmp_path / "one")
    m2.load_adapter(tmp_path / "two")
    m1.merge_adapter()
    assert not any(m.merged for _, m in m2.lora_layers())
    m1.unmerge_adapter()
