"""Named adapters (lora/adapters.py), mixed-adapter batches and add_weighted_adapter (lora/combine.py).

Every adapter kind goes through the variant hook: plain LoRA, the toy RowGain of test_lora_variants
and VeRA. Tolerances: float64; mixed batch vs each row alone 1e-12 (the same products, other GEMM
blocking); ΔW identities 1e-12; hand-computed combinations exact (small integers).
"""
import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_lora_variants import RowGain

from minilora import no_grad
from minilora.lora import VARIANTS, LoraConfig, LoRALinear, get_peft_model, load_lora_model
from minilora.lora.combine import combine_factors, svd_factors
from minilora.lora.vera import VeraConfig
from minilora.nn import GPT, GPTConfig, Linear
from minilora.optim import AdamW

CFG = GPTConfig(vocab_size=256, block_size=8, n_layer=2, n_head=2, n_embd=12)
IDX = np.random.default_rng(0).integers(0, 256, (4, 8))


@pytest.fixture
def row_gain(monkeypatch):
    monkeypatch.setitem(VARIANTS, "row_gain", RowGain)


def _three(gpt_seed=3):
    """default (LoRA on c_attn, q and v), "gain" (RowGain on c_fc), "vera" (VeRA on c_attn and c_proj)."""
    model = get_peft_model(GPT(CFG, dtype=np.float64, seed=gpt_seed),
                           LoraConfig(r=2, enable_lora=[True, False, True], init_lora_weights=False))
    model.add_adapter("gain", LoraConfig(r=3, target_modules=("c_fc",), init_lora_weights=False, variant="row_gain"))
    model.add_adapter("vera", VeraConfig(r=4, target_modules=("c_attn", "attn.c_proj"), init_lora_weights=False))
    for n, p in model.get_submodule("transformer.h.0.mlp.c_fc").named_parameters():
        if n == "lora_m.weight":
            p.data = np.linspace(0.5, 2.0, p.size)
    return model.eval()


def _logits(model, **kw):
    with no_grad():
        return model(IDX, **kw)[0].data


# ----------------------------------------------------------------------------- add / set / delete

def test_one_adapter_is_unchanged_and_named_default():
    model = get_peft_model(GPT(CFG, seed=0), LoraConfig(r=2))
    assert model.active_adapter == "default" and model.list_adapters() == ["default"]
    assert [n for n, _ in model.named_trainable_parameters()][:2] == [
        "transformer.h.0.attn.c_attn.lora_A.weight", "transformer.h.0.attn.c_attn.lora_B.weight"]


def test_set_adapter_swaps_layers_on_the_same_base(row_gain):
    model = _three()
    base_w = model.get_submodule("transformer.h.0.attn.c_attn").weight
    per = {}
    for name in ("default", "gain", "vera"):
        model.set_adapter(name)
        assert model.active_adapter == name
        assert model.peft_config.variant == {"default": "lora", "gain": "row_gain", "vera": "vera"}[name]
        per[name] = _logits(model)
        c_attn = model.get_submodule("transformer.h.0.attn.c_attn")
        assert c_attn.weight is base_w                                   # one frozen W0 for every adapter
        assert isinstance(model.get_submodule("transformer.h.0.mlp.c_fc"), LoRALinear) == (name == "gain")
    with model.disable_adapters():
        base = _logits(model)
    assert all(not np.allclose(per[a], base) for a in per) and not np.allclose(per["gain"], per["vera"])
    model.set_adapter("default")
    np.testing.assert_array_equal(_logits(model), per["default"])   # swapping back changes nothing


def test_training_the_active_adapter_moves_only_it(row_gain):
    model = _three().train()
    model.set_adapter("gain")
    before = {a: {n: p.data.copy() for n, p in model._slots()[a].layers[model._slots()[a].names[0]].named_parameters()}
              for a in model.list_adapters()}
    opt = AdamW(model.trainable_parameters(), lr=1e-2)
    assert all(n.endswith(("lora_A.weight", "lora_B.weight", "lora_m.weight")) and "c_fc" in n
               for n, _ in model.named_trainable_parameters())
    _, loss = model(IDX, targets=IDX)
    loss.backward()
    opt.step()
    for a, params in before.items():
        layer = model._slots()[a].layers[model._slots()[a].names[0]]
        moved = [not np.array_equal(p.data, params[n]) for n, p in layer.named_parameters() if n in params
                 and p.requires_grad]
        assert any(moved) == (a == "gain")


def test_delete_adapter_and_errors_by_name(row_gain):
    model = _three()
    model.set_adapter("gain")
    model.delete_adapter("gain")
    assert model.list_adapters() == ["default", "vera"] and model.active_adapter == "default"
    assert isinstance(model.get_submodule("transformer.h.0.mlp.c_fc"), Linear)
    with pytest.raises(ValueError, match=r"no adapter named 'gain'; adapters: \['default', 'vera'\]"):
        model.set_adapter("gain")
    with pytest.raises(ValueError, match="an adapter named 'vera' exists"):
        model.add_adapter("vera", LoraConfig(r=2))
    with pytest.raises(ValueError, match="adapter_name must be a non-empty str"):
        model.add_adapter("a/b", LoraConfig(r=2))
    with pytest.raises(ValueError, match="must have bias='none'"):
        model.add_adapter("b", LoraConfig(r=2, bias="lora_only"))
    model.merge_adapter()
    with pytest.raises(RuntimeError, match="'default' is merged into the shared base weights; unmerge_adapter"):
        model.set_adapter("vera")
    model.unmerge_adapter()
    model.delete_adapter("default")
    with pytest.raises(ValueError, match="'vera' is the only adapter"):
        model.delete_adapter("vera")


# ----------------------------------------------------------------------------- the mixed batch

@settings(max_examples=15, deadline=None)
@given(names=st.lists(st.sampled_from(["default", "gain", "vera", "__base__"]), min_size=4, max_size=4))
def test_mixed_batch_equals_each_row_with_its_adapter_alone(names):
    VARIANTS["row_gain"] = RowGain
    try:
        model = _three()
        alone = {}
        for a in ("default", "gain", "vera"):
            model.set_adapter(a)
            alone[a] = _logits(model)
        with model.disable_adapters():
            alone["__base__"] = _logits(model)
        model.set_adapter("vera")
        mixed = _logits(model, adapter_names=names)
        for i, a in enumerate(names):
            np.testing.assert_allclose(mixed[i], alone[a][i], rtol=1e-12, atol=1e-12)
        assert model.active_adapter == "vera" and isinstance(model.get_submodule("transformer.h.0.attn.c_proj"),
                                                             LoRALinear)
        np.testing.assert_array_equal(_logits(model), alone["vera"])     # the tree is restored
    finally:
        VARIANTS.pop("row_gain")


def test_mixed_batch_errors(row_gain):
    model = _three()
    with pytest.raises(ValueError, match=r"unknown adapters \['nope'\]"):
        _logits(model, adapter_names=["default", "nope", "vera", "gain"])
    with pytest.raises(ValueError, match="adapter_names names 3 rows but the batch has 4"):
        _logits(model, adapter_names=["default", "vera", "gain"])
    model.train()
    with pytest.raises(ValueError, match="inference only; call model.eval"):
        model(IDX, adapter_names=["default"] * 4)
    model.eval()
    np.testing.assert_array_equal(_logits(model, adapter_names=["default"] * 4), _logits(model))


def test_generate_in_a_mixed_batch_is_each_adapter_alone_greedy(row_gain):
    model = _three()
    prompt = IDX[:1, :3].repeat(3, axis=0)
    with model.mixed_batch(["gain", "__base__", "vera"]):
        out = model.generate(prompt, 5, temperature=0)
    model.set_adapter("gain")
    assert np.array_equal(model.generate(prompt[:1], 5, temperature=0)[0], out[0])
    model.set_adapter("vera")
    assert np.array_equal(model.generate(prompt[:1], 5, temperature=0)[0], out[2])


# ----------------------------------------------------------------------------- files

def test_named_adapters_save_in_peft_layout_and_load_bit_exact(row_gain, tmp_path):
    model = _three()
    model.save_adapter(tmp_path)
    assert (tmp_path / "adapter_model.safetensors").exists() and (tmp_path / "gain" / "adapter_config.json").exists()
    assert json.loads((tmp_path / "vera" / "adapter_config.json").read_text())["peft_type"] == "VERA"
    again = load_lora_model(GPT(CFG, dtype=np.float64, seed=3), tmp_path).eval()
    again.load_adapter(tmp_path / "gain", adapter_name="gain")
    again.load_adapter(tmp_path / "vera", adapter_name="vera")
    for a in ("default", "gain", "vera"):
        model.set_adapter(a)
        again.set_adapter(a)
        np.testing.assert_array_equal(_logits(again), _logits(model))


# ----------------------------------------------------------------------------- combinations

U1, V1, U2, V2 = np.array([1.0, 0.0]), np.array([1.0, 0.0]), np.array([0.0, 1.0]), np.array([0.0, 1.0])


def test_combinations_of_two_rank_one_adapters_by_hand():
    """ΔW_1 = v1 u1ᵀ = [[1,0],[0,0]], ΔW_2 = v2 u2ᵀ = [[0,0],[0,1]], weights 1 and 4, scaling 1.

    The right answer: 1·ΔW_1 + 4·ΔW_2 = [[1,0],[0,4]]. "linear" gives (v1 + 2 v2)(u1 + 2 u2)ᵀ =
    [[1,2],[2,4]]: the off-diagonal 2 = √(1·4) is the cross term v1 u2ᵀ + v2 u1ᵀ.
    """
    f = [(U1[None, :], V1[:, None], 1.0), (U2[None, :], V2[:, None], 1.0)]
    A, B = combine_factors(f, [1.0, 4.0], "cat")
    assert A.tolist() == [[1, 0], [0, 4]] and B.tolist() == [[1, 0], [0, 1]]
    assert (B @ A).tolist() == [[1, 0], [0, 4]]
    A, B = combine_factors(f, [1.0, 4.0], "linear")
    assert (B @ A).tolist() == [[1, 2], [2, 4]]
    A, B = svd_factors(np.array([[1.0, 0], [0, 4]]), 2)
    np.testing.assert_allclose(B @ A, [[1, 0], [0, 4]], atol=1e-15)
    A, B = svd_factors(np.array([[1.0, 0], [0, 4]]), 1)                # rank 1: keeps σ = 4 only
    np.testing.assert_allclose(B @ A, [[0, 0], [0, 4]], atol=1e-15)


@pytest.mark.parametrize("kind", ["svd", "cat", "linear"])
def test_add_weighted_adapter_in_delta_w_space(kind):
    model = get_peft_model(GPT(CFG, dtype=np.float64, seed=3), LoraConfig(r=2, lora_alpha=3, init_lora_weights=False))
    model.add_adapter("b", LoraConfig(r=2, lora_alpha=8, init_lora_weights=False, target_modules=("c_attn", "c_fc")))
    w = [0.7, 1.9]
    model.add_weighted_adapter(["default", "b"], w, "mix", combination_type=kind, svd_rank=4 if kind == "svd" else None)
    slots = model._slots()
    assert slots["mix"].config.r == {"svd": 4, "cat": 4, "linear": 2}[kind] and slots["mix"].config.scaling == 1.0
    for pos in slots["mix"].names:
        mix = slots["mix"].layers[pos].delta_weight()
        parts = [(slots[a].layers[pos], wi) for a, wi in zip(["default", "b"], w, strict=True)
                 if pos in slots[a].layers]
        want = sum(wi * m.delta_weight() for m, wi in parts)
        if kind == "linear" and len(parts) == 2:
            (m1, w1), (m2, w2) = parts
            c1, c2 = np.sqrt(w1 * m1.scaling), np.sqrt(w2 * m2.scaling)
            cross = c1 * c2 * (m1.lora_B.weight.data @ m2.lora_A.weight.data
                               + m2.lora_B.weight.data @ m1.lora_A.weight.data)
            np.testing.assert_allclose(mix, want + cross, atol=1e-12)
            assert np.abs(mix - want).max() > 1e-3                      # the naive sum is wrong
        else:
            np.testing.assert_allclose(mix, want, atol=1e-12)


def test_svd_combines_any_variant(row_gain):
    model = _three()
    model.add_weighted_adapter(["vera", "gain"], [1.0, -0.5], "mix", svd_rank=12)
    slots = model._slots()
    for pos in ("transformer.h.1.attn.c_attn", "transformer.h.1.mlp.c_fc"):
        want = sum(w * slots[a].layers[pos].delta_weight() for a, w in (("vera", 1.0), ("gain", -0.5))
                   if pos in slots[a].layers)
        np.testing.assert_allclose(slots["mix"].layers[pos].delta_weight(), want, atol=1e-12)
    with pytest.raises(ValueError, match=r"combines plain LoRA factors; \['vera', 'gain'\] are other variants: use"):
        model.add_weighted_adapter(["vera", "gain"], [1.0, 1.0], "mix2", combination_type="cat")
    with pytest.raises(ValueError, match="the adapters use different enable_lora layouts"):
        model.add_weighted_adapter(["vera", "default"], [1.0, 1.0], "mix2")
    with pytest.raises(ValueError, match="weights must be 2 finite numbers"):
        model.add_weighted_adapter(["vera", "gain"], [1.0], "mix3")


def test_each_named_adapter_merges_exactly(row_gain):
    model = _three()
    for name in ("gain", "vera", "default"):
        model.set_adapter(name)
        unmerged = _logits(model)
        model.merge_adapter()
        np.testing.assert_allclose(_logits(model), unmerged, rtol=1e-12, atol=1e-12)
        model.unmerge_adapter()


def test_one_default_adapter_saves_as_before(tmp_path):
    """No subfolders, the files of a single adapter: a single-adapter model's file format is unchanged."""
    model = get_peft_model(GPT(CFG, seed=0), LoraConfig(r=2))
    model.save_adapter(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter_config.json", "adapter_model.safetensors",
                                                          "minilora_adapter.json"]
    renamed = get_peft_model(GPT(CFG, seed=0), LoraConfig(r=2), adapter_name="code")
    renamed.save_adapter(tmp_path / "r")
    assert sorted(p.name for p in (tmp_path / "r").iterdir()) == ["code"]      # PEFT: only "default" at the root
