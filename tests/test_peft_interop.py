"""Adapter folders that PEFT loads as they are, and PEFT adapter folders that load here (issue 12, items 1-2).

Faults covered:
* a minilora adapter folder had no adapter_model.safetensors and no `base_model.model.` prefix (PEFT
  loaded nothing): the folder now holds PEFT's files and keys, PEFT's config fields only.
* q/v slices of the fused c_attn have no PEFT form: they are exported as the exact rank-g·r LoRA on
  the whole c_attn (A stacked, B block-diagonal, lora_alpha scaled): logits unchanged (hypothesis).
* a PEFT adapter with alpha_pattern loaded with the wrong scaling (logits off by 0.20): every PEFT
  LoraConfig option is honoured (checked against a dense hand computation) or refused by name.
The check against real PEFT is tools/check_against_hf.py (outside the suite: it needs torch).
"""
import json
import math
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.numpy import load_file, save_file

from minilora import no_grad
from minilora.finetune import copy_model
from minilora.lora import LoraConfig, get_peft_model, load_lora_model
from minilora.lora.adapter_io import contract_grouped_B, expand_grouped_B
from minilora.lora.peft_config import PEFT_DEFAULT_ONLY, PEFT_FIELDS, from_peft_dict
from minilora.lora.variant import VARIANTS
from minilora.nn import GPT, GPTConfig

CFG = GPTConfig(vocab_size=64, block_size=8, n_layer=2, n_head=2, n_embd=12)
X = np.random.default_rng(0).integers(0, 64, (2, 8))
# Every field of PEFT 0.21's LoraConfig, at PEFT's default (runtime_config as PEFT serialises it).
PEFT_0_21_DEFAULTS = {
    "task_type": None, "peft_type": "LORA", "auto_mapping": None, "peft_version": "0.21.2",
    "base_model_name_or_path": None, "revision": None, "inference_mode": False, "r": 8, "target_modules": None,
    "exclude_modules": None, "lora_alpha": 8, "lora_dropout": 0.0, "fan_in_fan_out": False, "bias": "none",
    "use_rslora": False, "modules_to_save": None, "init_lora_weights": True, "layers_to_transform": None,
    "layers_pattern": None, "rank_pattern": {}, "alpha_pattern": {}, "megatron_config": None,
    "megatron_core": "megatron.core", "trainable_token_indices": None, "loftq_config": {}, "eva_config": None,
    "corda_config": None, "lora_ga_config": None, "use_dora": False, "velora_config": None,
    "alora_invocation_tokens": None, "use_qalora": False, "qalora_group_size": 16, "monteclora_config": None,
    "layer_replication": None, "runtime_config": {"ephemeral_gpu_offload": False}, "lora_bias": False,
    "target_parameters": None, "use_bdlora": None, "arrow_config": None, "kasa_config": None,
    "ensure_weight_tying": False,
}


def gpt(dtype=np.float64, seed=0):
    return GPT(CFG, dtype=dtype, seed=seed)


def logits(model):
    model.eval()
    with no_grad():
        return model(X)[0].data


def randomize(model, seed=1):
    """Every trainable tensor random (B != 0, trained-looking biases), so nothing can hide."""
    rng = np.random.default_rng(seed)
    for _, p in model.named_trainable_parameters():
        p.data = (p.data + rng.normal(0, 0.3, p.shape)).astype(p.dtype)
    return model


def test_the_folder_is_peft_s_layout_and_config(tmp_path):
    model = randomize(get_peft_model(gpt(np.float32), LoraConfig(r=2, lora_alpha=4, target_modules=["c_attn", "c_fc"],
                                                                 bias="lora_only")))
    model.save_adapter(tmp_path, base_model_name_or_path="gpt2")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter_config.json", "adapter_model.safetensors",
                                                          "minilora_adapter.json"]
    keys = set(load_file(str(tmp_path / "adapter_model.safetensors")))
    assert "base_model.model.transformer.h.0.attn.c_attn.lora_A.weight" in keys
    assert "base_model.model.transformer.h.1.mlp.c_fc.base_layer.bias" in keys      # PEFT's name of a LoRA bias
    assert all(k.startswith("base_model.model.") for k in keys) and len(keys) == 2 * 2 * 3
    cfg = json.loads((tmp_path / "adapter_config.json").read_text())
    assert set(cfg) <= set(PEFT_FIELDS)                        # nothing PEFT would warn about
    assert cfg["peft_type"] == "LORA" and cfg["task_type"] == "CAUSAL_LM" and cfg["fan_in_fan_out"] is True
    assert cfg["base_model_name_or_path"] == "gpt2" and cfg["r"] == 2 and cfg["lora_alpha"] == 4
    assert from_peft_dict(cfg).target_modules == ("c_attn", "c_fc")
    side = json.loads((tmp_path / "minilora_adapter.json").read_text())
    assert side["format_version"] == 2 and len(side["base_model_fingerprint"]) == 64


def test_expand_and_contract_grouped_B_by_hand():
    B = np.arange(1, 9, dtype=np.float64).reshape(4, 2)          # q rows [1 2; 3 4], v rows [5 6; 7 8]
    Bx = expand_grouped_B(B, [(0, 2), (4, 6)], r=2, d_out=6)
    expect = np.array([[1, 2, 0, 0], [3, 4, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 5, 6], [0, 0, 7, 8]])
    np.testing.assert_array_equal(Bx, expect)
    np.testing.assert_array_equal(contract_grouped_B(Bx, [(0, 2), (4, 6)], 2, "B"), B)
    Bx[2, 0] = 1e-9                                              # a k row that is not zero: not our export
    with pytest.raises(ValueError, match="block-diagonal"):
        contract_grouped_B(Bx, [(0, 2), (4, 6)], 2, "B")


@settings(max_examples=12, deadline=None)
@given(enable=st.lists(st.booleans(), min_size=3, max_size=3).filter(any), r=st.integers(1, 3),
       alpha=st.floats(0.5, 20), rslora=st.booleans(), bias=st.sampled_from(["none", "lora_only"]))
def test_fused_slices_export_as_the_exact_rank_g_r_lora(tmp_path_factory, enable, r, alpha, rslora, bias):
    tmp = tmp_path_factory.mktemp("fused")
    model = randomize(get_peft_model(gpt(), LoraConfig(r=r, lora_alpha=alpha, use_rslora=rslora, enable_lora=enable,
                                                       bias=bias)))
    notes = model.save_adapter(tmp)
    assert any("exact PEFT equivalent" in n for n in notes)
    g, name = sum(enable), "transformer.h.0.attn.c_attn"
    cfg = json.loads((tmp / "adapter_config.json").read_text())
    assert cfg["rank_pattern"][name] == g * r
    assert cfg["alpha_pattern"][name] == pytest.approx(alpha * (math.sqrt(g) if rslora else g), rel=1e-12)
    t = load_file(str(tmp / "adapter_model.safetensors"))
    A, B = t[f"base_model.model.{name}.lora_A.weight"], t[f"base_model.model.{name}.lora_B.weight"]
    layer = model.get_submodule(name)
    assert B.shape == (36, g * r) and np.array_equal(A, layer.lora_A.weight.data)
    off = [i for i, e in enumerate(enable) if not e]
    assert all(not B[12 * i:12 * (i + 1)].any() for i in off)          # zero rows for the slices left out
    # minilora reads its grouped form back, bit for bit ...
    again = load_lora_model(gpt(), tmp)
    assert again.get_submodule(name).slices == layer.slices
    np.testing.assert_array_equal(logits(again), logits(model))
    # ... and, read as PEFT reads it (no side file), the plain rank-g·r LoRA gives the same logits
    (tmp / "minilora_adapter.json").unlink()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        as_peft = load_lora_model(gpt(), tmp)
    plain = as_peft.get_submodule(name)
    assert plain.slices is None and plain.r == g * r and plain.scaling == pytest.approx(layer.scaling, rel=1e-12)
    ref = logits(model)
    np.testing.assert_allclose(logits(as_peft), ref, rtol=0, atol=1e-12 * np.abs(ref).max())


def _peft_folder(tmp_path, cfg, tensors):
    save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(tmp_path / "adapter_model.safetensors"))
    (tmp_path / "adapter_config.json").write_text(json.dumps(cfg))
    return tmp_path


def test_every_peft_option_is_honoured_against_a_dense_hand_computation(tmp_path):
    """alpha_pattern, rank_pattern, layers_to_transform + layers_pattern, use_rslora, bias="lora_only",
    exclude_modules: the loaded model equals W0 + (alpha_l / sqrt(r_l)) B A written into a plain GPT."""
    rng = np.random.default_rng(3)
    cfg = dict(PEFT_0_21_DEFAULTS, task_type="CAUSAL_LM", r=4, lora_alpha=8, fan_in_fan_out=True, use_rslora=True,
               target_modules=["c_attn", "c_proj", "c_fc"], exclude_modules=["mlp.c_proj"], bias="lora_only",
               rank_pattern={"c_fc": 2, "h.1.attn.c_attn": 3}, alpha_pattern={"attn.c_proj": 3},
               layers_to_transform=[1], layers_pattern="h")
    # what PEFT adapts: block 1 only; c_attn r=3 alpha 8, attn.c_proj r=4 alpha 3, c_fc r=2 alpha 8
    expect = {"transformer.h.1.attn.c_attn": (3, 8), "transformer.h.1.attn.c_proj": (4, 3),
              "transformer.h.1.mlp.c_fc": (2, 8)}
    base = gpt()
    dense = copy_model(base)
    tensors = {}
    for name, (r, alpha) in expect.items():
        W = dense.get_submodule(name).weight
        A, B, b = rng.normal(size=(r, W.shape[1])), rng.normal(size=(W.shape[0], r)), rng.normal(size=W.shape[0])
        tensors[f"base_model.model.{name}.lora_A.weight"] = A
        tensors[f"base_model.model.{name}.lora_B.weight"] = B
        tensors[f"base_model.model.{name}.base_layer.bias"] = b
        W.data = W.data + alpha / math.sqrt(r) * (B @ A)
        dense.get_submodule(name).bias.data = b
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model = load_lora_model(base, _peft_folder(tmp_path, cfg, tensors))
    assert {n: (m.r, m.lora_alpha) for n, m in model.lora_layers()} == expect
    ref = logits(dense)
    np.testing.assert_allclose(logits(model), ref, rtol=0, atol=1e-12 * np.abs(ref).max())
    # the fault of the issue: the same file with alpha_pattern dropped gives other logits
    flat = copy_model(gpt())
    cfg.pop("alpha_pattern")
    dropped = load_lora_model(flat, _peft_folder(tmp_path, cfg, tensors))
    assert np.abs(logits(dropped) - ref).max() > 1e-3


def test_a_peft_config_with_every_field_loads_and_an_unknown_field_is_named():
    cfg = dict(PEFT_0_21_DEFAULTS, target_modules=["c_attn"])
    assert set(cfg) == set(PEFT_FIELDS)                        # the table knows every PEFT 0.21 field
    assert from_peft_dict(cfg) == LoraConfig(r=8, lora_alpha=8, target_modules=["c_attn"])
    with pytest.raises(ValueError, match=r"unknown fields \['lora_secret_option'\]") as e:
        from_peft_dict(dict(cfg, lora_secret_option=1))
    assert "use_dora" not in str(e.value)                      # only the offending field is named


@pytest.mark.parametrize("field, value", [(f, v) for f, v in {
    "modules_to_save": ["lm_head"], "lora_bias": True, "layer_replication": [[0, 1]], "use_qalora": True,
    "trainable_token_indices": [1, 2], "target_parameters": ["mlp.experts"], "loftq_config": {"loftq_bits": 4},
    "alora_invocation_tokens": [5], "megatron_config": {"tp": 2}, "ensure_weight_tying": True,
    "arrow_config": {"top_k": 2}}.items()] + [("init_lora_weights", "pissa"), ("init_lora_weights", "olora"),
                                              ("task_type", "SEQ_CLS"), ("peft_type", "IA3")])
def test_a_peft_option_minilora_lacks_is_refused_by_name(field, value):
    assert field in PEFT_DEFAULT_ONLY or field in ("init_lora_weights", "task_type", "peft_type")
    with pytest.raises(ValueError, match=field):
        from_peft_dict(dict(PEFT_0_21_DEFAULTS, **{field: value}))


def test_use_dora_loads_as_the_dora_variant_or_is_refused_by_name():
    cfg = dict(PEFT_0_21_DEFAULTS, use_dora=True)
    if "dora" in VARIANTS:
        assert from_peft_dict(cfg).variant == "dora"
    else:
        with pytest.raises(ValueError, match="use_dora = True .*'dora' variant"):
            from_peft_dict(cfg)


def test_a_peft_adapter_of_another_dtype_is_cast_with_a_note(tmp_path):
    base = gpt(np.float64)
    A, B = np.ones((2, 12), np.float32), np.full((36, 2), 0.5, np.float32)
    path = _peft_folder(tmp_path, dict(PEFT_0_21_DEFAULTS, r=2, target_modules=["c_attn"]),
                        {f"base_model.model.transformer.h.{i}.attn.c_attn.lora_{n}.weight": v
                         for i in (0, 1) for n, v in (("A", A), ("B", B))})
    with pytest.warns(UserWarning, match=r"cast to the model's dtype \(\['float32->float64'\]\)"):
        model = load_lora_model(base, path)
    assert model.get_submodule("transformer.h.0.attn.c_attn").lora_A.weight.dtype == np.float64


def test_a_folder_saved_again_by_peft_is_named_and_reads_as_peft_without_the_side_file(tmp_path):
    model = randomize(get_peft_model(gpt(), LoraConfig(r=2)))
    model.save_adapter(tmp_path)
    t = load_file(str(tmp_path / "adapter_model.safetensors"))
    save_file({k: v * 2 for k, v in t.items()}, str(tmp_path / "adapter_model.safetensors"))   # "trained on"
    with pytest.raises(ValueError, match="two different saves.*minilora_adapter.json is removed"):
        load_lora_model(gpt(), tmp_path)
    (tmp_path / "minilora_adapter.json").unlink()
    again = load_lora_model(gpt(), tmp_path)
    np.testing.assert_array_equal(again.get_submodule("transformer.h.0.attn.c_attn").lora_B.weight.data,
                                  2 * model.get_submodule("transformer.h.0.attn.c_attn").lora_B.weight.data)


# ----------------------------------------------------------------------------- the exercise (lesson 15)

def _exercise_fails(func, *needles):
    from minilora.exercises import check
    res = check("fused_qv_to_peft", func)
    assert not res.passed, "a wrong solution passed"
    for needle in needles:
        assert needle.lower() in res.message.lower(), f"{needle!r} not in:\n{res.message}"


def test_the_exercise_reference_equals_the_library_and_typical_mistakes_get_hints():
    from minilora.exercises import EXERCISES, check
    ref = EXERCISES["fused_qv_to_peft"].reference
    rng = np.random.default_rng(0)
    A, B = rng.standard_normal((4, 3)), rng.standard_normal((6, 2))
    A2, B2, a2 = ref(A, B, 16.0)
    np.testing.assert_array_equal(B2, expand_grouped_B(B, [(0, 3), (6, 9)], 2, 9))
    assert a2 == 32.0 and np.array_equal(A2, A)
    assert check("fused_qv_to_peft", ref).passed

    def same_alpha(A, B, lora_alpha):
        A2, B2, _ = ref(A, B, lora_alpha)
        return A2, B2, lora_alpha
    _exercise_fails(same_alpha, "alpha must double")

    def no_k_rows(A, B, lora_alpha):
        r, C = A.shape[0] // 2, A.shape[1]
        Bp = np.zeros((2 * C, 2 * r))
        Bp[:C, :r], Bp[C:, r:] = B[:C], B[C:]
        return A.copy(), Bp, 2.0 * lora_alpha
    _exercise_fails(no_k_rows, "zero rows for k")

    def swapped_columns(A, B, lora_alpha):
        r, C = A.shape[0] // 2, A.shape[1]
        Bp = np.zeros((3 * C, 2 * r))
        Bp[:C, r:], Bp[2 * C:, :r] = B[:C], B[C:]
        return A.copy(), Bp, 2.0 * lora_alpha
    _exercise_fails(swapped_columns, "columns [0, r)")
