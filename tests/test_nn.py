"""Tests of minilora.nn: Module/Parameter registration and naming, tied weights, state_dict,
modes and freezing, the layers, GPTConfig validation and GPT-2's initialisation."""
import math

import numpy as np
import pytest

from minilora.nn import GPT, Dropout, Embedding, GPTConfig, LayerNorm, Linear, Module, Parameter

TINY = dict(vocab_size=256, block_size=8, n_layer=2, n_head=2, n_embd=16)


def tiny(seed=0, **kw):
    return GPT(GPTConfig(**{**TINY, **kw}), seed=seed)


class Pair(Module):
    def __init__(self):
        super().__init__()
        self.a = Linear(3, 5, rng=0)
        self.b = Linear(5, 2, bias=False, rng=1)
        self.scale = Parameter(np.ones(2, dtype=np.float32))
        self.not_a_param = np.zeros(4, dtype=np.float32)

    def forward(self, x):
        return self.b(self.a(x)) * self.scale


# ------------------------------------------------------------------ registration and naming
def test_registration_order_and_names():
    m = Pair()
    assert [n for n, _ in m.named_parameters()] == ["scale", "a.weight", "a.bias", "b.weight"]
    assert [n for n, _ in m.named_modules()] == ["", "a", "b"]
    assert m.num_parameters() == 2 + 15 + 5 + 10


def test_reassignment_replaces_registration():
    m = Pair()
    m.a = Linear(3, 5, bias=False, rng=0)
    assert "a.bias" not in dict(m.named_parameters())
    m.scale = None                                   # no longer a parameter
    assert "scale" not in dict(m.named_parameters())
    m.b = np.zeros(3)                                # a module replaced by a plain attribute
    assert "b" not in m._modules and "b.weight" not in dict(m.named_parameters())


def test_setattr_before_super_init_is_a_clear_error():
    class Bad(Module):
        def __init__(self):
            self.w = Parameter(np.zeros(2, dtype=np.float32))

    with pytest.raises(RuntimeError, match="super"):
        Bad()


def test_parameter_dtype_checked():
    with pytest.raises(TypeError, match="float32 or float64"):
        Parameter(np.zeros(3, dtype=np.int64))
    assert Parameter(np.zeros(3, dtype=np.float32)).requires_grad


def test_gpt2_parameter_names_exact():
    m = tiny(n_layer=1)
    names = [n for n, _ in m.named_parameters()]
    expected = ["transformer.wte.weight", "transformer.wpe.weight"]
    for sub in ["ln_1.weight", "ln_1.bias", "attn.c_attn.weight", "attn.c_attn.bias",
                "attn.c_proj.weight", "attn.c_proj.bias", "ln_2.weight", "ln_2.bias",
                "mlp.c_fc.weight", "mlp.c_fc.bias", "mlp.c_proj.weight", "mlp.c_proj.bias"]:
        expected.append(f"transformer.h.0.{sub}")
    expected += ["transformer.ln_f.weight", "transformer.ln_f.bias"]
    assert names == expected
    assert "lm_head.weight" not in names
    assert list(m.state_dict()) == expected


def test_gpt2_parameter_shapes_and_count():
    cfg = GPTConfig(**TINY)
    m = GPT(cfg)
    p = dict(m.named_parameters())
    C, V, T = cfg.n_embd, cfg.vocab_size, cfg.block_size
    assert p["transformer.wte.weight"].shape == (V, C)
    assert p["transformer.wpe.weight"].shape == (T, C)
    assert p["transformer.h.1.attn.c_attn.weight"].shape == (3 * C, C)     # (out, in)
    assert p["transformer.h.1.mlp.c_fc.weight"].shape == (4 * C, C)
    assert p["transformer.h.1.mlp.c_proj.weight"].shape == (C, 4 * C)
    per_layer = 12 * C * C + 13 * C
    assert m.num_parameters() == V * C + T * C + cfg.n_layer * per_layer + 2 * C


def test_tied_weight_listed_once_under_wte_name():
    m = tiny()
    assert m.lm_head.weight is m.transformer.wte.weight
    all_names = [n for n, _ in m.named_parameters(remove_duplicate=False)]
    assert "lm_head.weight" in all_names
    ids = [id(p) for p in m.parameters()]
    assert len(ids) == len(set(ids))
    assert sum(p is m.transformer.wte.weight for p in m.parameters()) == 1
    assert m.num_parameters() == sum(p.size for p in m.parameters())


def test_get_and_set_submodule():
    m = tiny()
    lin = m.get_submodule("transformer.h.0.attn.c_attn")
    assert isinstance(lin, Linear)
    with pytest.raises(KeyError, match="nope"):
        m.get_submodule("transformer.h.0.nope")
    new = Linear(16, 48, rng=3)
    m.set_submodule("transformer.h.0.attn.c_attn", new)
    assert dict(m.named_parameters())["transformer.h.0.attn.c_attn.weight"] is new.weight
    with pytest.raises(KeyError):
        m.set_submodule("transformer.h.0.attn.missing", new)


# ------------------------------------------------------------------ layers
def test_linear_weight_is_out_in_and_computes_x_wT_plus_b():
    lin = Linear(3, 5, rng=0)
    assert lin.weight.shape == (5, 3) and lin.bias.shape == (5,)
    lin.bias.data = np.arange(5, dtype=np.float32)
    x = np.random.default_rng(1).standard_normal((2, 4, 3)).astype(np.float32)
    y = lin(x)
    assert y.shape == (2, 4, 5) and y.dtype == np.float32
    np.testing.assert_allclose(y.data, x @ lin.weight.data.T + lin.bias.data, rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match=r"\(2, 4, 5\)"):
        lin(np.zeros((2, 4, 5), dtype=np.float32))
    with pytest.raises(ValueError):
        Linear(0, 3)


def test_linear_default_init_bound():
    lin = Linear(64, 32, rng=0)
    assert np.abs(lin.weight.data).max() <= 1 / 8
    assert np.all(lin.bias.data == 0)


def test_embedding_and_layernorm():
    emb = Embedding(10, 4, rng=0)
    idx = np.array([[1, 2], [9, 1]])
    out = emb(idx)
    assert out.shape == (2, 2, 4)
    np.testing.assert_array_equal(out.data[0, 0], emb.weight.data[1])
    with pytest.raises(ValueError, match="0, 10"):
        emb(np.array([10]))
    with pytest.raises(TypeError):
        emb(np.array([1.0]))
    ln = LayerNorm(6)
    x = np.random.default_rng(0).standard_normal((3, 6)) * 5 + 2
    y = ln(x.astype(np.float32)).data
    np.testing.assert_allclose(y.mean(-1), 0, atol=1e-5)
    np.testing.assert_allclose(y.std(-1), 1, atol=1e-3)
    assert LayerNorm(6, bias=False).bias is None


def test_dropout_identity_in_eval_and_scaled_in_train():
    d = Dropout(0.5, rng=0)
    x = np.ones((200, 200), dtype=np.float32)
    d.eval()
    y = d(x)
    np.testing.assert_array_equal(y.data, x)
    d.train()
    y = d(x).data
    assert set(np.unique(y)) <= {0.0, 2.0}
    assert 0.45 < (y == 0).mean() < 0.55
    assert y.dtype == np.float32
    np.testing.assert_array_equal(Dropout(0.0)(x).data, x)
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        Dropout(1.0)


# ------------------------------------------------------------------ modes, freezing, grads
def test_train_eval_propagate_to_every_module():
    m = tiny(dropout=0.1)
    assert all(mod.training for mod in m.modules())
    assert m.eval() is m
    assert not any(mod.training for mod in m.modules())
    m.train()
    assert all(mod.training for mod in m.modules())
    m.train(False)
    assert not m.transformer.h[1].mlp.dropout.training


def test_requires_grad_freezes_and_frozen_params_get_no_grad():
    m = tiny()
    m.requires_grad_(False)
    assert not any(p.requires_grad for p in m.parameters())
    assert m.num_parameters(trainable_only=True) == 0
    m.transformer.h[0].attn.c_attn.requires_grad_(True)
    idx = np.random.default_rng(0).integers(0, 256, (2, 8))
    _, loss = m(idx, idx)
    loss.backward()
    for name, p in m.named_parameters():
        if name.startswith("transformer.h.0.attn.c_attn."):
            assert p.grad is not None and np.any(p.grad != 0), name
        else:
            assert p.grad is None, name


def test_zero_grad():
    m = tiny()
    idx = np.random.default_rng(0).integers(0, 256, (2, 8))
    m(idx, idx)[1].backward()
    assert all(p.grad is not None for p in m.parameters())
    m.zero_grad()
    assert all(p.grad is None for p in m.parameters())


def test_gradients_accumulate_until_zero_grad():
    m = tiny()
    idx = np.random.default_rng(0).integers(0, 256, (2, 8))
    m(idx, idx)[1].backward()
    g1 = {n: p.grad.copy() for n, p in m.named_parameters()}
    m(idx, idx)[1].backward()
    for n, p in m.named_parameters():
        np.testing.assert_allclose(p.grad, 2 * g1[n], rtol=1e-5, atol=1e-9)


# ------------------------------------------------------------------ state_dict
def test_state_dict_round_trip_bit_exact():
    a, b = tiny(seed=0), GPT(GPTConfig(**TINY), seed=1)
    sd = a.state_dict()
    assert any(not np.array_equal(sd[k], v) for k, v in b.state_dict().items())
    missing, unexpected = b.load_state_dict(sd)
    assert missing == [] and unexpected == []
    for k, v in b.state_dict().items():
        assert v.dtype == sd[k].dtype
        assert v.tobytes() == sd[k].tobytes(), k
    assert b.lm_head.weight is b.transformer.wte.weight              # tie survives loading
    idx = np.random.default_rng(0).integers(0, 256, (2, 8))
    assert a(idx)[0].data.tobytes() == b(idx)[0].data.tobytes()


def test_state_dict_is_a_copy_and_load_copies():
    m = tiny()
    sd = m.state_dict()
    sd["transformer.wpe.weight"][:] = 7
    assert not np.any(m.transformer.wpe.weight.data == 7)
    m.load_state_dict(sd)
    sd["transformer.wpe.weight"][:] = 3
    assert np.all(m.transformer.wpe.weight.data == 7)


def test_load_state_dict_strict_lists_all_missing_and_unexpected():
    m = tiny()
    sd = m.state_dict()
    del sd["transformer.wpe.weight"], sd["transformer.ln_f.bias"]
    sd["lm_head.bias"] = np.zeros(3, np.float32)
    sd["extra.thing"] = np.zeros(1, np.float32)
    with pytest.raises(KeyError) as ei:
        m.load_state_dict(sd)
    msg = str(ei.value)
    for k in ["transformer.wpe.weight", "transformer.ln_f.bias", "lm_head.bias", "extra.thing"]:
        assert k in msg
    assert "missing" in msg and "unexpected" in msg
    missing, unexpected = m.load_state_dict(sd, strict=False)
    assert sorted(missing) == ["transformer.ln_f.bias", "transformer.wpe.weight"]
    assert sorted(unexpected) == ["extra.thing", "lm_head.bias"]


def test_load_state_dict_mismatch_lists_all_keys_with_both_shapes():
    m = tiny()
    before = m.state_dict()
    sd = m.state_dict()
    sd["transformer.wpe.weight"] = np.zeros((4, 16), np.float32)
    sd["transformer.h.1.mlp.c_fc.bias"] = np.zeros(63, np.float32)
    sd["transformer.ln_f.weight"] = sd["transformer.ln_f.weight"].astype(np.float64)
    for strict in (True, False):
        with pytest.raises(ValueError) as ei:
            m.load_state_dict(sd, strict=strict)
        msg = str(ei.value)
        assert "transformer.wpe.weight" in msg and "(8, 16)" in msg and "(4, 16)" in msg
        assert "transformer.h.1.mlp.c_fc.bias" in msg and "(64,)" in msg and "(63,)" in msg
        assert "transformer.ln_f.weight" in msg and "float64" in msg
    for k, v in m.state_dict().items():                     # nothing was half-loaded
        assert v.tobytes() == before[k].tobytes()


def test_astype_casts_every_parameter_once():
    m = tiny().astype(np.float64)
    assert all(p.dtype == np.float64 for p in m.parameters())
    assert m.lm_head.weight is m.transformer.wte.weight and m.dtype == np.float64


# ------------------------------------------------------------------ GPTConfig
@pytest.mark.parametrize("kw, match", [
    (dict(vocab_size=0), "vocab_size"),
    (dict(block_size=-1), "block_size"),
    (dict(n_layer=0), "n_layer"),
    (dict(n_head=2.0), "n_head"),
    (dict(n_embd=True), "n_embd"),
    (dict(n_embd=10, n_head=3), "divisible"),
    (dict(dropout=1.0), "dropout"),
    (dict(dropout=-0.1), "dropout"),
    (dict(dropout=float("nan")), "dropout"),
])
def test_gptconfig_validation(kw, match):
    with pytest.raises(ValueError, match=match):
        GPTConfig(**kw)


def test_gptconfig_to_dict_round_trip():
    cfg = GPTConfig(**TINY, dropout=0.1)
    assert GPTConfig(**cfg.to_dict()) == cfg


# ------------------------------------------------------------------ GPT-2 initialisation
def test_gpt2_init_statistics():
    n_layer = 4
    m = GPT(GPTConfig(vocab_size=256, block_size=64, n_layer=n_layer, n_head=4, n_embd=128), seed=0)
    proj_std = 0.02 / math.sqrt(2 * n_layer)
    for name, p in m.named_parameters():
        d = p.data
        assert d.dtype == np.float32, name
        if name.endswith(".bias"):
            assert np.all(d == 0), name
        elif ".ln_" in name:
            assert np.all(d == 1), name
        elif name.endswith("c_proj.weight"):
            assert abs(d.std() - proj_std) < 0.05 * proj_std, name
            assert abs(d.mean()) < 0.1 * proj_std, name
        else:
            assert abs(d.std() - 0.02) < 0.05 * 0.02, name
            assert abs(d.mean()) < 0.002, name


def test_init_is_seeded():
    a, b, c = tiny(seed=0), tiny(seed=0), GPT(GPTConfig(**TINY), seed=5)
    for (n, p), q, _r in zip(a.named_parameters(), b.parameters(), c.parameters(), strict=True):
        assert p.data.tobytes() == q.data.tobytes(), n
    assert not np.array_equal(a.transformer.wte.weight.data, c.transformer.wte.weight.data)


def test_float64_model():
    m = GPT(GPTConfig(**TINY), dtype=np.float64)
    assert m.dtype == np.float64 and all(p.dtype == np.float64 for p in m.parameters())


def test_repr_mentions_structure():
    r = repr(tiny())
    assert "Linear(in_features=16, out_features=48, bias=True)" in r and "(ln_f)" in r


def test_get_parameter_by_dotted_name():
    m = tiny()
    assert m.get_parameter("transformer.h.0.attn.c_attn.weight") is m.transformer.h[0].attn.c_attn.weight
    with pytest.raises(KeyError, match="no parameter 'transformer.h.0.attn.c_attn.gain'"):
        m.get_parameter("transformer.h.0.attn.c_attn.gain")
    with pytest.raises(KeyError, match="no child 'nope'"):
        m.get_parameter("nope.weight")


def test_one_generator_helper_shares_a_given_generator():
    from minilora.nn.layers import as_generator
    g = np.random.default_rng(0)
    assert as_generator(g) is g and Dropout(0.1, rng=g).rng is g
    assert as_generator(3).random() == np.random.default_rng(3).random()
