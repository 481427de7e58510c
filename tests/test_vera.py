"""VeRA (lora/vera.py): the hand-derived pass three ways, the shared projections, merge, files, counts.

Tolerances: float64; hand vs composed 1e-12 (same arithmetic, other order); gradients vs central
differences with check_grad's defaults (atol 1e-6, rtol 1e-5); merged vs unmerged 1e-12.
"""
import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minilora import check_grad, no_grad
from minilora import io as mio
from minilora.lora import LoRALinear, get_peft_model, load_lora_model
from minilora.lora.vera import (
    Vera,
    VeraConfig,
    VeraFunction,
    lora_parameter_count,
    vera_linear,
    vera_linear_composed,
    vera_parameter_count,
    vera_projections,
)
from minilora.nn import GPT, GPTConfig, Linear
from minilora.tensor import Tensor

CFG = GPTConfig(vocab_size=256, block_size=8, n_layer=2, n_head=2, n_embd=12)


def _file_tensors(path):
    """The adapter file's tensors under the model's names (PEFT's `base_model.model.` prefix removed)."""
    from safetensors.numpy import load_file
    raw = load_file(str(path / "adapter_model.safetensors"))
    return {k.removeprefix("base_model.model."): v for k, v in raw.items()}


def _rewrite(path, edit):
    """Apply edit(tensors under the model's names) to the adapter file, keeping minilora_adapter.json's
    adapter_fingerprint in step (so only the edit itself can be refused)."""
    from safetensors.numpy import save_file
    z = _file_tensors(path)
    edit(z)
    raw = {"base_model.model." + k: v for k, v in z.items()}
    save_file(raw, str(path / "adapter_model.safetensors"))
    meta = json.loads((path / "minilora_adapter.json").read_text())
    meta["adapter_fingerprint"] = mio.fingerprint(raw)
    (path / "minilora_adapter.json").write_text(json.dumps(meta))


def _model(**kw):
    cfg = VeraConfig(**dict(dict(r=4, target_modules=("c_attn", "c_fc", "mlp.c_proj"), init_lora_weights=False), **kw))
    return get_peft_model(GPT(CFG, dtype=np.float64, seed=3), cfg)


# ----------------------------------------------------------------------------- the pass, three ways

@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 5), d_in=st.integers(1, 6), d_out=st.integers(1, 6), r=st.integers(1, 5),
       bias=st.sampled_from(["none", "frozen", "trained"]), dropout=st.booleans(), seed=st.integers(0, 99))
def test_hand_equals_composed_equals_central_differences(n, d_in, d_out, r, bias, dropout, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 2, d_in))
    W0, A, B = rng.standard_normal((d_out, d_in)), rng.standard_normal((r, d_in)), rng.standard_normal((d_out, r))
    d, b = rng.standard_normal(r), rng.standard_normal(d_out)
    bv = None if bias == "none" else rng.standard_normal(d_out)
    mask = (rng.random(x.shape) > 0.3) if dropout else None
    keep = 0.7 if dropout else 1.0

    def run(fn):
        ts = [Tensor(x, requires_grad=True), Tensor(d, requires_grad=True), Tensor(b, requires_grad=True)]
        bt = Tensor(bv, requires_grad=True) if bias == "trained" else bv
        y = fn(ts[0], W0, bt, A, B, ts[1], ts[2], mask, keep)
        c = np.random.default_rng(1).standard_normal(y.shape)
        y.backward(c)
        extra = [bt.grad] if bias == "trained" else []
        return y.data, [t.grad for t in ts] + extra

    y_hand, g_hand = run(vera_linear)
    y_comp, g_comp = run(vera_linear_composed)
    np.testing.assert_allclose(y_hand, y_comp, rtol=1e-12, atol=1e-12)
    for gh, gc in zip(g_hand, g_comp, strict=True):
        np.testing.assert_allclose(gh, gc, rtol=1e-12, atol=1e-12)
    # the dense ΔW = diag(b) B diag(d) A gives the same forward
    dense = (x * mask / keep if dropout else x) @ ((b[:, None] * B) @ (d[:, None] * A)).T + x @ W0.T
    np.testing.assert_allclose(y_hand, dense + (0 if bv is None else bv), rtol=1e-10, atol=1e-10)
    consts = dict(W0=W0, A=A, B=B, mask=mask, keep_prob=keep)
    if bias == "trained":
        check_grad(lambda xt, dt, bt_, bb: VeraFunction.apply(xt, dt, bt_, bb, **consts),
                   Tensor(x, requires_grad=True), Tensor(d, requires_grad=True), Tensor(b, requires_grad=True),
                   Tensor(bv, requires_grad=True))
    else:
        check_grad(lambda xt, dt, bt_: VeraFunction.apply(xt, dt, bt_, frozen_bias=bv, **consts),
                   Tensor(x, requires_grad=True), Tensor(d, requires_grad=True), Tensor(b, requires_grad=True))


def test_known_values_by_hand():
    """d_in = d_out = r = 1: y = w0 x + b·B·d·A·x; dL/db = B d A x, dL/dd = b B A x (L = y)."""
    x, W0, A, B, d, b = 2.0, 3.0, 5.0, 7.0, 0.5, 0.25
    xt = Tensor(np.array([[x]]), requires_grad=True)
    dt, bt = Tensor(np.array([d]), requires_grad=True), Tensor(np.array([b]), requires_grad=True)
    y = vera_linear(xt, np.array([[W0]]), None, np.array([[A]]), np.array([[B]]), dt, bt)
    assert y.data[0, 0] == W0 * x + b * B * d * A * x == 6.0 + 8.75
    y.backward(np.ones((1, 1)))
    assert bt.grad[0] == B * d * A * x == 35.0
    assert dt.grad[0] == b * B * A * x == 17.5
    assert xt.grad[0, 0] == W0 + b * B * d * A == 7.375


def test_fresh_layer_is_the_base_and_has_no_saddle():
    """b = 0 at the start, so ΔW = 0; d = d_initial != 0, so dL/db != 0 (training can start)."""
    lin = Linear(6, 5, dtype=np.float64, rng=0)
    lay = LoRALinear.from_config(lin, VeraConfig(r=3, d_initial=0.1), rng=0)
    assert lay.variant is Vera and np.all(lay.vera_lambda_b.data == 0) and np.all(lay.vera_lambda_d.data == 0.1)
    assert not lay.delta_weight().any()
    x = np.random.default_rng(0).standard_normal((4, 6))
    y = lay(Tensor(x))
    np.testing.assert_array_equal(y.data, x @ lin.weight.data.T + lin.bias.data)
    y.backward(np.ones_like(y.data))
    assert np.abs(lay.vera_lambda_b.grad).max() > 0 and not lay.vera_lambda_d.grad.any()


# ----------------------------------------------------------------------------- sharing and counts

def test_one_shared_pair_sliced_per_layer_as_peft():
    model = _model(projection_prng_key=7)
    layers = dict(model.lora_layers())
    A, B = vera_projections(7, 4, 48, 48)                              # max d_in (c_proj: 48), max d_out (c_fc: 48)
    bases = {id(m.vera_A.base) for m in layers.values()} | {id(m.vera_B.base) for m in layers.values()}
    assert len(bases) == 2                                             # two arrays in memory, for 6 layers
    for m in layers.values():
        np.testing.assert_array_equal(m.vera_A, A[:, :m.in_features])
        np.testing.assert_array_equal(m.vera_B, B[:m.out_features])
    assert not any("vera_A" in n or "vera_B" in n for n, _ in model.named_parameters())  # frozen, not Parameters


def test_parameter_count_vs_lora_printed(capsys):
    model = _model()
    shapes = [m.weight.shape for _, m in model.lora_layers()]
    t, _ = model.get_nb_trainable_parameters()
    assert t == vera_parameter_count(shapes, 4) == sum(4 + s[0] for s in shapes) == 2 * (40 + 52 + 16)
    assert lora_parameter_count(shapes, 4) == sum(4 * (s[0] + s[1]) for s in shapes) == 2 * 4 * (48 + 60 + 60)
    model.print_trainable_parameters()
    assert f"trainable params: {t} " in capsys.readouterr().out


# ----------------------------------------------------------------------------- merge, files, keys

def test_merged_equals_unmerged_and_round_trip():
    model = _model().eval()
    x = np.random.default_rng(0).integers(0, 256, (2, 8))
    W0 = {n: m.weight.data.copy() for n, m in model.lora_layers()}
    with no_grad():
        y = model(x)[0].data
        model.merge_adapter()
        y_merged = model(x)[0].data
    np.testing.assert_allclose(y_merged, y, rtol=1e-12, atol=1e-12)
    model.unmerge_adapter()
    for n, m in model.lora_layers():
        np.testing.assert_allclose(m.weight.data, W0[n], rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("save_projection", [True, False])
def test_save_load_bit_exact(tmp_path, save_projection):
    model = _model(save_projection=save_projection, projection_prng_key=11).eval()
    model.save_adapter(tmp_path)
    meta = json.loads((tmp_path / "adapter_config.json").read_text())
    assert meta["peft_type"] == "VERA" and meta["projection_prng_key"] == 11 and meta["d_initial"] == 0.1
    z = _file_tensors(tmp_path)
    assert ("vera_A" in z) == save_projection
    assert "transformer.h.0.attn.c_attn.vera_lambda_b" in z
    again = load_lora_model(GPT(CFG, dtype=np.float64, seed=3), tmp_path).eval()
    assert isinstance(again.peft_config, VeraConfig)
    x = np.random.default_rng(1).integers(0, 256, (2, 8))
    with no_grad():
        np.testing.assert_array_equal(again(x)[0].data, model(x)[0].data)


def test_the_file_projection_wins_over_the_generator(tmp_path):
    """With save_projection the stored pair is used, whatever the generator would draw now."""
    model = _model()
    model.save_adapter(tmp_path)
    _rewrite(tmp_path, lambda z: z.update(vera_A=z["vera_A"] * 2))
    again = load_lora_model(GPT(CFG, dtype=np.float64, seed=3), tmp_path)
    m0, m1 = model.get_submodule("transformer.h.0.attn.c_attn"), again.get_submodule("transformer.h.0.attn.c_attn")
    np.testing.assert_array_equal(m1.vera_A, 2 * m0.vera_A)
    np.testing.assert_allclose(m1.delta_weight(), 2 * m0.delta_weight(), rtol=1e-12)


@pytest.mark.parametrize("drop", ["vera_A", "transformer.h.1.mlp.c_fc.vera_lambda_d"])
def test_missing_keys_refused_by_name(tmp_path, drop):
    _model().save_adapter(tmp_path)
    _rewrite(tmp_path, lambda z: (z.pop(drop), z.update({"transformer.h.0.attn.c_attn.vera_lambda_x": np.zeros(36)})))
    with pytest.raises(ValueError, match=rf"missing keys \['{drop}'\], unexpected keys "
                                         r"\['transformer.h.0.attn.c_attn.vera_lambda_x'\]"):
        load_lora_model(GPT(CFG, dtype=np.float64, seed=3), tmp_path)


def test_wrong_projection_shape_refused_by_name(tmp_path):
    _model().save_adapter(tmp_path)
    _rewrite(tmp_path, lambda z: z.update(vera_B=z["vera_B"][:-1].copy()))
    with pytest.raises(ValueError, match=r"vera_B is \(47, 4\) float64 in the file but \(48, 4\) float64"):
        load_lora_model(GPT(CFG, dtype=np.float64, seed=3), tmp_path)


@pytest.mark.parametrize("bad, msg", [
    (dict(d_initial=float("nan")), "VeraConfig.d_initial must be a finite number"),
    (dict(projection_prng_key=-1), "VeraConfig.projection_prng_key must be an int >= 0"),
    (dict(save_projection="yes"), "VeraConfig.save_projection must be a bool"),
    (dict(vera_dropout=1.0), r"VeraConfig.vera_dropout must be in \[0, 1\)"),
    (dict(use_rslora=True), "do not apply to VeRA"),
    (dict(enable_lora=[True, False, True]), "do not apply to VeRA"),
    (dict(r=0), "LoraConfig.r must be an int >= 1"),
])
def test_bad_options_refused_by_name(bad, msg):
    with pytest.raises(ValueError, match=msg):
        VeraConfig(**bad)


def test_vera_trains_one_step():
    """A real optimizer step moves only b and d (b first: d's gradient is 0 while b = 0)."""
    from minilora.optim import AdamW

    model = get_peft_model(GPT(CFG, dtype=np.float64, seed=3), VeraConfig(r=4, target_modules=("c_attn",)))
    idx = np.random.default_rng(0).integers(0, 256, (2, 8))
    frozen = {n: p.data.copy() for n, p in model.named_parameters() if not p.requires_grad}
    opt = AdamW(model.trainable_parameters(), lr=1e-2)
    _, loss = model(idx, targets=idx)
    loss.backward()
    opt.step()
    b = model.get_parameter("transformer.h.0.attn.c_attn.vera_lambda_b").data
    assert np.abs(b).min() > 0
    assert all(np.array_equal(p.data, frozen[n]) for n, p in model.named_parameters() if n in frozen)
