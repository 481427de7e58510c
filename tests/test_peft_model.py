"""The baselines on a whole GPT: injection, trainable counts (by formula), start-as-the-base, the
prefix seen by every position, soft prompts using up positions, adapter files, merging, errors."""
import numpy as np
import pytest

from minilora import peft
from minilora.lora import LoraConfig, LoraModel
from minilora.nn import GPT, GPTConfig
from minilora.peft.methods import PrefixTuningModel
from minilora.tensor import no_grad

CFG = GPTConfig(block_size=16, n_layer=2, n_head=2, n_embd=16)
C, L = CFG.n_embd, CFG.n_layer
IDX = np.random.default_rng(0).integers(0, 256, (2, 8))


def _logits(model, idx=IDX):
    model.eval()
    with no_grad():
        return model(idx)[0].data.copy()


def _perturb(model, seed=1):
    rng = np.random.default_rng(seed)
    for p in model.trainable_parameters():
        p.data = (p.data + 0.1 * rng.standard_normal(p.shape)).astype(p.dtype)


# (method, fields, trainable scalars by formula)
CASES = [
    ("adapter_h", {"bottleneck_size": 3}, L * 2 * (2 * 3 * C + 3 + C)),
    ("adapter_l", {"bottleneck_size": 3}, L * (2 * 3 * C + 3 + C)),
    ("prefix_layer", {"num_virtual_tokens": 4}, 4 * L * 2 * C),
    ("prefix_layer", {"num_virtual_tokens": 4, "prefix_projection": True, "encoder_hidden_size": 5},
     4 * C + (C * 5 + 5) + (5 * 2 * L * C + 2 * L * C)),
    ("prefix_embedding", {"num_virtual_tokens": 4}, 4 * C),
    ("prefix_embedding", {"num_virtual_tokens": 4, "prefix_projection": True}, 4 * C + 2 * (C * C + C)),
    ("prompt_tuning", {"num_virtual_tokens": 4}, 4 * C),
    ("bitfit", {}, L * (3 * C + C + 4 * C + C + 4 * C) + 2 * C),          # linears + 2 LN per block... see below
    ("bitfit", {"target_modules": ["c_attn"]}, L * 3 * C),
    ("ia3", {}, L * (3 * C + 4 * C)),
]
CASES[7] = ("bitfit", {}, L * (3 * C + C + 4 * C + C + 2 * C) + C)    # c_attn, c_proj, c_fc, c_proj, ln_1, ln_2; ln_f


@pytest.mark.parametrize("method,fields,count", CASES)
def test_trainable_count_gradients_and_file_round_trip(method, fields, count, tmp_path):
    model = peft.get_peft_model(GPT(CFG, seed=0), peft.make_config(method, **fields))
    assert model.get_nb_trainable_parameters()[0] == count
    model.train()
    _, loss = model(IDX, IDX)
    loss.backward()
    assert all(p.grad is not None for p in model.trainable_parameters())
    frozen = [n for n, p in model.named_parameters() if not p.requires_grad]
    assert all(model.get_parameter(n).grad is None for n in frozen if not n.startswith("prompt_encoder"))
    _perturb(model)
    want = _logits(model)
    model.save_adapter(tmp_path)
    again = peft.load_peft_model(GPT(CFG, seed=0), tmp_path)
    np.testing.assert_allclose(_logits(again), want, atol=1e-6, rtol=1e-5)   # the MLP's output is stored
    if not fields.get("prefix_projection"):
        np.testing.assert_array_equal(_logits(again), want)


@pytest.mark.parametrize("method", ["adapter_h", "adapter_l", "bitfit", "ia3"])
def test_these_methods_start_as_the_base_model_bit_for_bit(method):
    ref = _logits(GPT(CFG, seed=0))
    np.testing.assert_array_equal(_logits(peft.get_peft_model(GPT(CFG, seed=0), peft.make_config(method))), ref)


def test_prefix_attention_with_no_prefix_is_the_base_model_bit_for_bit():
    ref = _logits(GPT(CFG, seed=0))
    model = peft.get_peft_model(GPT(CFG, seed=0), peft.make_config("prefix_layer"))
    np.testing.assert_array_equal(_logits(model.base_model), ref)     # prefix unset outside forward


def test_prefix_is_seen_by_the_first_position_and_the_model_stays_causal():
    model = peft.get_peft_model(GPT(CFG, seed=0), peft.make_config("prefix_layer", num_virtual_tokens=3))
    before = _logits(model)
    model.prompt_encoder.embedding.weight.data += 0.5
    after = _logits(model)
    assert np.all(np.abs(after[:, 0] - before[:, 0]).max(axis=-1) > 1e-4)
    later = IDX.copy()
    later[:, -1] = (later[:, -1] + 1) % 256
    np.testing.assert_array_equal(_logits(model, later)[:, :-1], after[:, :-1])


@pytest.mark.parametrize("method", ["prompt_tuning", "prefix_embedding"])
def test_soft_prompts_use_up_positions(method):
    model = peft.get_peft_model(GPT(CFG, seed=0), peft.make_config(method, num_virtual_tokens=5))
    assert model.sequence_tokens_used == 5 and model.config.block_size == CFG.block_size - 5
    model(np.zeros((1, CFG.block_size - 5), dtype=np.int64))
    with pytest.raises(ValueError, match="uses up 5 positions"):
        model(np.zeros((1, CFG.block_size - 4), dtype=np.int64))
    out = model.generate(IDX[:, :2], CFG.block_size, seed=0)            # crops to block_size - 5
    assert out.shape == (2, 2 + CFG.block_size)
    with pytest.raises(ValueError, match="leaves no position"):
        peft.get_peft_model(GPT(CFG, seed=0), peft.make_config(method, num_virtual_tokens=CFG.block_size))


def test_prefix_layer_uses_no_position():
    model = peft.get_peft_model(GPT(CFG, seed=0), peft.make_config("prefix_layer", num_virtual_tokens=5))
    assert model.sequence_tokens_used == 0
    model(np.zeros((1, CFG.block_size), dtype=np.int64))


def test_prompt_tuning_text_init_reads_the_vocabulary_rows():
    gpt = GPT(CFG, seed=0)
    model = peft.get_peft_model(gpt, peft.make_config("prompt_tuning", num_virtual_tokens=5,
                                                      prompt_tuning_init_text="ab"))
    want = gpt.transformer.wte.weight.data[[97, 98, 97, 98, 97]]
    np.testing.assert_array_equal(model.prompt_encoder.embedding.weight.data, want)


def test_ia3_merge_unmerge_and_unload():
    model = peft.get_peft_model(GPT(CFG, seed=0), peft.IA3Config(init_ia3_weights=False))
    want = _logits(model)
    w0 = model.get_parameter("transformer.h.0.mlp.c_proj.weight").data.copy()
    model.merge_adapter()
    np.testing.assert_allclose(_logits(model), want, atol=1e-5, rtol=1e-5)
    model.train()
    with pytest.raises(RuntimeError, match="merged"):
        model(IDX, IDX)
    model.unmerge_adapter()
    np.testing.assert_allclose(model.get_parameter("transformer.h.0.mlp.c_proj.weight").data, w0, rtol=1e-6, atol=1e-7)
    plain = model.merge_and_unload()
    assert isinstance(plain, GPT) and not any(n.endswith("ia3_l") for n, _ in plain.named_parameters())
    np.testing.assert_allclose(_logits(plain), want, atol=1e-5, rtol=1e-5)


def test_ia3_scales_outputs_of_attention_and_inputs_of_the_mlp_projection():
    model = peft.get_peft_model(GPT(CFG, seed=0), peft.IA3Config())
    assert model.get_parameter("transformer.h.0.attn.c_attn.ia3_l").shape == (3 * C,)
    assert model.get_parameter("transformer.h.0.mlp.c_proj.ia3_l").shape == (4 * C,)


@pytest.mark.parametrize("method", ["adapter_h", "prefix_layer", "prompt_tuning"])
def test_non_mergeable_methods_say_so(method):
    model = peft.get_peft_model(GPT(CFG, seed=0), peft.make_config(method))
    with pytest.raises(RuntimeError, match="cannot be merged"):
        model.merge_adapter()


def test_adapter_parameter_names_follow_adapter_transformers():
    model = peft.get_peft_model(GPT(CFG, seed=0), peft.make_config("adapter_l", bottleneck_size=2))
    assert list(model.adapter_parameters()) == [f"transformer.h.{i}.mlp.c_proj.adapter_{d}.{w}" for i in range(L)
                                                for d in ("down", "up") for w in ("weight", "bias")]


def test_files_are_checked(tmp_path):
    a = peft.get_peft_model(GPT(CFG, seed=0), peft.make_config("ia3"))
    a.save_adapter(tmp_path / "ia3")
    b = peft.get_peft_model(GPT(CFG, seed=0), peft.make_config("bitfit"))
    with pytest.raises(ValueError, match="holds a IA3 adapter"):
        b.load_adapter(tmp_path / "ia3")
    with pytest.warns(UserWarning, match="different base model"):
        peft.load_peft_model(GPT(CFG, seed=1), tmp_path / "ia3")
    with pytest.raises(FileNotFoundError):
        peft.load_peft_model(GPT(CFG, seed=0), tmp_path / "nothing")


def test_get_peft_model_dispatches_lora_and_refuses_other_configs():
    assert isinstance(peft.get_peft_model(GPT(CFG, seed=0), LoraConfig(r=2)), LoraModel)
    with pytest.raises(TypeError, match="config must be one of"):
        peft.get_peft_model(GPT(CFG, seed=0), {"r": 2})
    assert isinstance(peft.get_peft_model(GPT(CFG, seed=0), peft.PrefixTuningConfig()), PrefixTuningModel)


@pytest.mark.parametrize("bad,match", [
    (lambda: peft.make_config("adapter_h", bottleneck_size=0), "bottleneck_size must be an int >= 1"),
    (lambda: peft.make_config("adapter_h", non_linearity="tanh"), "non_linearity must be one of"),
    (lambda: peft.make_config("prefix_layer", num_virtual_tokens=1.5), "num_virtual_tokens must be an int"),
    (lambda: peft.make_config("prompt_tuning", prompt_tuning_init="ZEROS"), "prompt_tuning_init must be one of"),
    (lambda: peft.make_config("prompt_tuning", prompt_tuning_init_text=""), "prompt_tuning_init_text must be"),
    (lambda: peft.make_config("ia3", feedforward_modules=["c_fc"]), "must be a subset of target_modules"),
    (lambda: peft.make_config("lora_x"), "unknown PEFT method"),
    (lambda: peft.get_peft_model(GPT(CFG, seed=0), peft.BitFitConfig(target_modules=["nothing"])),
     "selects no module with a bias"),
])
def test_bad_configs_are_refused_with_a_message(bad, match):
    with pytest.raises((ValueError, TypeError), match=match):
        bad()
