"""minilora.costs: each closed form against an instantiated minilora model (small configs), against
published sizes (GPT-2, LLaMA), and against a hand computation written here."""
from __future__ import annotations

import math

import numpy as np
import pytest

from minilora import costs
from minilora.lora import (
    LoraConfig,
    LoRALinear,
    get_peft_model,
    inject_lora,
    lora_state_dict,
    mark_only_lora_as_trainable,
)
from minilora.nn import GPT, GPTConfig, Linear
from minilora.optim import SGD, AdamW
from minilora.tensor import Tensor

SMALL = [dict(vocab_size=50, block_size=8, n_layer=2, n_head=2, n_embd=16),
         dict(vocab_size=37, block_size=5, n_layer=3, n_head=4, n_embd=24),
         dict(vocab_size=64, block_size=16, n_layer=1, n_head=2, n_embd=32, bias=False)]

TARGET_SETS = [("q", "v"), ("q",), ("k", "v"), ("q", "k", "v"), ("c_attn",), ("attn.c_proj",), ("c_fc",),
               ("mlp.c_proj",), ("c_fc", "attn.c_proj"), ("q", "v", "c_fc", "mlp.c_proj")]


def _lora_gpt(cfg_kw, r, targets, dtype=np.float32):
    model = GPT(GPTConfig(**cfg_kw), dtype=dtype, seed=0)
    for kw in costs.peft_configs(targets):
        inject_lora(model, LoraConfig(r=r, lora_alpha=2 * r, **kw))
    mark_only_lora_as_trainable(model)
    return model


# ------------------------------------------------------------------------------------------ parameters

@pytest.mark.parametrize("kw", SMALL)
def test_full_param_count_equals_instantiated_gpt(kw):
    model = GPT(GPTConfig(**kw))
    assert costs.full_param_count(costs.from_gpt_config(GPTConfig(**kw))) == model.num_parameters()


def test_full_param_count_matches_published_sizes():
    # GPT-2 sizes as HuggingFace reports them (tied head); LLaMA-7B/65B from arXiv:2302.13971's shapes.
    expected = {"gpt2-small": 124_439_808, "gpt2-medium": 354_823_168, "gpt2-large": 774_030_080,
                "gpt2-xl": 1_557_611_200, "llama-7b": 6_738_415_616, "llama-65b": 65_285_660_672}
    assert {k: costs.full_param_count(a) for k, a in costs.ARCHS.items()} == expected


@pytest.mark.parametrize("targets", TARGET_SETS)
@pytest.mark.parametrize("r", [1, 3])
def test_lora_param_count_equals_injected_model(targets, r):
    kw = SMALL[0]
    model = _lora_gpt(kw, r, targets)
    expected = costs.lora_param_count(costs.from_gpt_config(GPTConfig(**kw)), r, targets)
    assert model.num_parameters(trainable_only=True) == expected


def test_lora_param_count_equals_peft_report_and_paper():
    kw = SMALL[1]
    m = get_peft_model(GPT(GPTConfig(**kw)), LoraConfig(r=4, lora_alpha=8, target_modules=("c_attn",),
                                                        enable_lora=[True, False, True]))
    arch = costs.from_gpt_config(GPTConfig(**kw))
    t = costs.lora_param_count(arch, 4, ("q", "v"))
    assert m.get_nb_trainable_parameters() == (t, costs.full_param_count(arch) + t)
    # LoRA §4.2: |Θ| = 2 · L · d_model · r per adapted d x d matrix type; q and v: 4·L·d·r.
    assert costs.lora_param_count(costs.ARCHS["gpt2-small"], 8, ("q", "v")) == 4 * 12 * 768 * 8 == 294_912
    assert costs.lora_param_count(costs.ARCHS["llama-7b"], 8, ("q_proj", "v_proj")) == 4 * 32 * 4096 * 8


@pytest.mark.parametrize("bad", [dict(r=0, targets=("q",)), dict(r=2, targets=("c_attn", "q")),
                                 dict(r=2, targets=("gate_proj",)), dict(r=2, targets=()),
                                 dict(r=2, targets=("q", "q")), dict(r=2.0, targets=("q",))])
def test_lora_param_count_rejects_bad_input(bad):
    with pytest.raises(ValueError):
        costs.lora_param_count(costs.ARCHS["gpt2-small"], bad["r"], bad["targets"])


def test_other_counts_reject_bad_input():
    a = costs.ARCHS["gpt2-small"]
    for call in (lambda: costs.training_flops(a, 10, None, ("q",)), lambda: costs.training_flops(a, 10, 0, ("q",)),
                 lambda: costs.training_flops(a, 0), lambda: costs.kv_cache_bytes(a, 0, 8),
                 lambda: costs.activation_bytes(a, 1, 0), lambda: costs.optimizer_state_bytes(10, "lion"),
                 lambda: costs.nf4_bits_per_param(True, 0), lambda: costs.checkpoint_bytes(-1)):
        with pytest.raises(ValueError):
            call()
    with pytest.raises(TypeError, match="GPTConfig"):
        costs.full_param_count("gpt2")
    assert costs.full_param_count(GPTConfig(**SMALL[0])) == costs.full_param_count(
        costs.from_gpt_config(GPTConfig(**SMALL[0])))


def test_arch_rejects_bad_shapes():
    with pytest.raises(ValueError, match="family"):
        costs.Arch("x", "bert", 1, 1, 8, 32, 10, 10)
    with pytest.raises(ValueError, match="divisible"):
        costs.Arch("x", "gpt2", 1, 3, 8, 32, 10, 10)
    with pytest.raises(ValueError, match="dtype"):
        costs.dtype_bytes("float8")


# ---------------------------------------------------------------------------------------- memory

def _one_step(model, opt):
    idx = np.array([[1, 2, 3, 4]])
    _, loss = model(idx, idx)
    loss.backward()
    opt.step()


@pytest.mark.parametrize("dtype,name", [(np.float32, "float32"), (np.float64, "float64")])
def test_optimizer_state_bytes_equals_adamw_and_sgd_state(dtype, name):
    model = _lora_gpt(SMALL[0], 2, ("q", "v"), dtype)
    t = model.num_parameters(trainable_only=True)
    opt = AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    _one_step(model, opt)
    moments = sum(a.nbytes for st in opt.state for k, a in st.items() if k in ("exp_avg", "exp_avg_sq"))
    assert opt.state_bytes() == moments == costs.optimizer_state_bytes(t, "adamw", name) == 2 * t * dtype().itemsize
    sgd = SGD([p for p in model.parameters() if p.requires_grad], lr=1e-3, momentum=0.9)
    _one_step(model, sgd)
    assert sgd.state_bytes() == costs.optimizer_state_bytes(t, "sgd", name)
    assert costs.optimizer_state_bytes(t, "sgd", name, momentum=False) == 0


def test_checkpoint_and_training_bytes():
    model = _lora_gpt(SMALL[0], 2, ("q", "v"))
    t = model.num_parameters(trainable_only=True)
    assert sum(a.nbytes for a in lora_state_dict(model).values()) == costs.checkpoint_bytes(t, "float32")
    assert costs.training_state_bytes(100, 100, "float32") == 16 * 100      # the "16 bytes/param" rule
    assert costs.training_state_bytes(100, 10, "bfloat16") == 2 * (100 + 3 * 10)


def test_activation_and_kv_cache_by_hand():
    a = costs.ARCHS["gpt2-small"]
    assert costs.activation_bytes(a, 2, 1024) == 12 * 1024 * 2 * 768 * (34 + 5 * 12 * 1024 / 768)
    # LLaMA-7B, one sequence of 2048 tokens in fp16: exactly 1 GiB of K and V.
    assert costs.kv_cache_bytes(costs.ARCHS["llama-7b"], 1, 2048, "float16") == 2**30


def test_nf4_bits_are_qlora_figures():
    assert costs.nf4_bits_per_param(False) == 4.5
    assert costs.nf4_bits_per_param(True) == 4 + 8 / 64 + 32 / (64 * 256) == 4.126953125
    assert costs.quantized_model_bytes(8, False) == 4.5


# ----------------------------------------------------------------------------------------- FLOPs

def test_flops_by_hand():
    N, d_in, d_out, r = 6, 10, 7, 3
    assert costs.linear_flops(N, d_in, d_out) == {"forward": 2 * N * d_in * d_out, "backward": 4 * N * d_in * d_out,
                                                   "total": 6 * N * d_in * d_out}
    f = costs.lora_linear_flops(N, d_in, d_out, r)
    assert f["saved"] == 2 * N * d_in * d_out
    assert f["total"] == 4 * N * d_in * d_out + 6 * N * r * (d_in + d_out)
    # fused c_attn with q and v adapted: g = 2 groups, W = 2·d adapted rows.
    d = 8
    g = costs.lora_linear_flops(N, d, 3 * d, r, groups=2, width=2 * d)
    assert g["forward"] - 2 * N * d * 3 * d == 2 * (4 * N * d * r)
    a = costs.ARCHS["gpt2-small"]
    assert costs.training_flops(a, 100) == 6 * 100 * 12 * 12 * 768**2
    assert costs.training_flops(a, 100, 4, ("q", "v")) == 4 * 100 * 12 * 12 * 768**2 + 12 * 2 * 6 * 100 * 4 * 1536


# ------------------------------------------------------------------------------ scaling, merge, init

@pytest.mark.parametrize("alpha,r,rs", [(16, 4, False), (16, 4, True), (8, 64, True), (1, 3, False)])
def test_scaling_equals_lora_layer(alpha, r, rs):
    lin = Linear(8, 8, rng=0)
    expected = alpha / math.sqrt(r) if rs else alpha / r
    assert costs.scaling(alpha, r, rs) == pytest.approx(expected, rel=1e-15)
    assert costs.scaling(alpha, r, rs) == LoRALinear(lin, r, alpha, use_rslora=rs).scaling


def test_merged_weight_equals_lora_layer_merge():
    lin = Linear(5, 4, dtype=np.float64, rng=0)
    layer = LoRALinear(lin, 2, 6, init_lora_weights=False, rng=1)
    W0 = lin.weight.data.copy()
    expected = costs.merged_weight(W0, layer.lora_A.weight.data, layer.lora_B.weight.data, 6, 2)
    layer.merge()
    np.testing.assert_allclose(layer.weight.data, expected, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(expected, W0 + 3.0 * layer.lora_B.weight.data @ layer.lora_A.weight.data, rtol=1e-12)


def test_lora_init_grads_by_hand():
    rng = np.random.default_rng(1)
    x, W0, A, G = rng.normal(size=(4, 3)), rng.normal(size=(2, 3)), rng.normal(size=(2, 3)), rng.normal(size=(4, 2))
    dA, dB = costs.lora_init_grads(x, W0, A, np.zeros((2, 2)), G, 2.5)
    assert np.all(dA == 0.0)
    np.testing.assert_allclose(dB, 2.5 * G.T @ (x @ A.T), rtol=1e-12)
    # and what autograd gives through LoRALinear at B = 0
    lin = Linear(3, 2, dtype=np.float64, rng=0)
    layer = LoRALinear(lin, 2, 5.0, rng=0)
    xt = Tensor(x)
    (layer(xt) * Tensor(G)).sum().backward()
    np.testing.assert_array_equal(layer.lora_A.weight.grad, np.zeros_like(layer.lora_A.weight.data))
    dA2, dB2 = costs.lora_init_grads(x, lin.weight.data, layer.lora_A.weight.data, np.zeros((2, 2)), G, 2.5)
    np.testing.assert_allclose(layer.lora_B.weight.grad, dB2, rtol=1e-12)


def test_rank_wrappers_are_minilora_rank():
    assert costs.effective_rank([1.0, 1.0, 1.0, 0.0]) == pytest.approx(3.0, rel=1e-12)
    assert costs.random_subspace_baseline(4, 8, 64) == 8 / 64
    A1, A2 = np.eye(4)[:2] * [[2.0], [1.0]], np.eye(4)[1:4] * [[3.0], [2.0], [1.0]]
    assert costs.subspace_similarity(A1, A2, 2, 3) == pytest.approx(0.5, abs=1e-12)
