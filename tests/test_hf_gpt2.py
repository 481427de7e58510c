"""Hugging Face GPT-2 folders in and out (issue 12, items 3 and 6), with no network and no torch.

The folders are built here with `safetensors.numpy` in Hugging Face's layout (Conv1D weights (in, out),
keys as the Hub's `gpt2` file or as transformers' GPT2LMHeadModel writes them), and the model is
checked against GPT-2's forward written out by hand in NumPy on those tensors (float64).
Faults covered: a GPT-2 checkpoint had to be converted by hand (four Conv1D transposes per block, the
tied lm_head, gelu_new, eps 1e-5); an unsupported config value is refused by name, never ignored.
"""
import json
import math
import warnings

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from minilora import no_grad
from minilora.lora import LoraConfig, get_peft_model
from minilora.nn import GPT, GPTConfig

L, H, C, V, P = 2, 2, 12, 40, 16                       # layers, heads, n_embd, vocab, positions
HF_CONFIG = {"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"], "activation_function": "gelu_new",
             "n_layer": L, "n_head": H, "n_embd": C, "vocab_size": V, "n_positions": P, "n_ctx": P, "n_inner": None,
             "layer_norm_epsilon": 1e-5, "resid_pdrop": 0.1, "embd_pdrop": 0.1, "attn_pdrop": 0.1,
             "scale_attn_weights": True, "scale_attn_by_inverse_layer_idx": False, "reorder_and_upcast_attn": False,
             "tie_word_embeddings": True, "initializer_range": 0.02, "bos_token_id": V - 1, "eos_token_id": V - 1,
             "transformers_version": "5.24.0", "use_cache": True}


def hf_tensors(seed=0):
    """GPT-2 tensors in Hugging Face's layout (Conv1D weights (in, out)), keys as the Hub's gpt2 file."""
    rng = np.random.default_rng(seed)
    f = lambda *s: rng.normal(0, 0.3, s).astype(np.float32)   # noqa: E731
    t = {"wte.weight": f(V, C), "wpe.weight": f(P, C), "ln_f.weight": 1 + f(C), "ln_f.bias": f(C)}
    for i in range(L):
        p = f"h.{i}."
        t.update({p + "ln_1.weight": 1 + f(C), p + "ln_1.bias": f(C),
                  p + "ln_2.weight": 1 + f(C), p + "ln_2.bias": f(C),
                  p + "attn.c_attn.weight": f(C, 3 * C), p + "attn.c_attn.bias": f(3 * C),
                  p + "attn.c_proj.weight": f(C, C), p + "attn.c_proj.bias": f(C),
                  p + "mlp.c_fc.weight": f(C, 4 * C), p + "mlp.c_fc.bias": f(4 * C),
                  p + "mlp.c_proj.weight": f(4 * C, C), p + "mlp.c_proj.bias": f(C)})
    return t


def hf_folder(path, tensors=None, config=None, prefix=""):
    path.mkdir(parents=True, exist_ok=True)
    tensors = hf_tensors() if tensors is None else tensors
    save_file({prefix + k: v for k, v in tensors.items()}, str(path / "model.safetensors"), metadata={"format": "pt"})
    (path / "config.json").write_text(json.dumps(HF_CONFIG if config is None else config))
    return path


def gpt2_forward_by_hand(t, ids):
    """GPT-2 (Radford et al. 2019) on Hugging Face's tensors: Conv1D is x W + b; lm_head is wteᵀ."""
    t = {k: v.astype(np.float64) for k, v in t.items()}

    def ln(x, w, b):
        return (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + 1e-5) * w + b

    def gelu_new(x):
        return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))

    B, T = ids.shape
    x = t["wte.weight"][ids] + t["wpe.weight"][:T]                                   # (B, T, C)
    mask = np.triu(np.ones((T, T), bool), 1)
    for i in range(L):
        p = f"h.{i}."
        qkv = ln(x, t[p + "ln_1.weight"], t[p + "ln_1.bias"]) @ t[p + "attn.c_attn.weight"] + t[p + "attn.c_attn.bias"]
        q, k, v = (a.reshape(B, T, H, C // H).transpose(0, 2, 1, 3) for a in np.split(qkv, 3, axis=-1))
        att = np.where(mask, -np.inf, q @ k.transpose(0, 1, 3, 2) / math.sqrt(C // H))
        att = np.exp(att - att.max(-1, keepdims=True))
        y = (att / att.sum(-1, keepdims=True) @ v).transpose(0, 2, 1, 3).reshape(B, T, C)
        x = x + y @ t[p + "attn.c_proj.weight"] + t[p + "attn.c_proj.bias"]
        h = ln(x, t[p + "ln_2.weight"], t[p + "ln_2.bias"])
        h = gelu_new(h @ t[p + "mlp.c_fc.weight"] + t[p + "mlp.c_fc.bias"])
        x = x + h @ t[p + "mlp.c_proj.weight"] + t[p + "mlp.c_proj.bias"]
    return ln(x, t["ln_f.weight"], t["ln_f.bias"]) @ t["wte.weight"].T               # (B, T, V)


IDS = np.random.default_rng(1).integers(0, V, (2, 10))


def logits(model):
    model.eval()
    with no_grad():
        return model(IDS)[0].data


@pytest.mark.parametrize("prefix, extra", [("", {"h.0.attn.bias": np.ones((1, 1, P, P), np.float32),
                                                 "h.0.attn.masked_bias": np.array(-1e4, np.float32)}),
                                           ("transformer.", {})])
def test_from_pretrained_equals_gpt2_by_hand(tmp_path, prefix, extra):
    t = hf_tensors()
    folder = hf_folder(tmp_path / "gpt2", {**t, **extra}, prefix=prefix)
    if prefix:                                           # transformers may also write the tied head
        save_file({**load_file(str(folder / "model.safetensors")), "lm_head.weight": t["wte.weight"]},
                  str(folder / "model.safetensors"))
    model = GPT.from_pretrained(folder, dtype=np.float64)
    assert model.config == GPTConfig(vocab_size=V, block_size=P, n_layer=L, n_head=H, n_embd=C, dropout=0.1)
    assert not model.training and model.name_or_path == str(folder)
    sd = model.state_dict()
    np.testing.assert_array_equal(sd["transformer.h.1.attn.c_attn.weight"], t["h.1.attn.c_attn.weight"].T)
    np.testing.assert_array_equal(sd["transformer.h.0.mlp.c_proj.weight"], t["h.0.mlp.c_proj.weight"].T)
    np.testing.assert_array_equal(sd["transformer.h.0.attn.c_attn.bias"], t["h.0.attn.c_attn.bias"])
    assert model.lm_head.weight is model.transformer.wte.weight                       # tied
    ref = gpt2_forward_by_hand(t, IDS)
    np.testing.assert_allclose(logits(model), ref, rtol=0, atol=1e-10 * np.abs(ref).max())


def test_save_pretrained_writes_transformers_layout_and_round_trips(tmp_path):
    model = GPT.from_pretrained(hf_folder(tmp_path / "a"))
    model.save_pretrained(tmp_path / "b")
    out = load_file(str(tmp_path / "b" / "model.safetensors"))
    t = hf_tensors()
    assert set(out) == {"transformer." + k for k in t}                  # no lm_head: tied
    for k, v in t.items():
        np.testing.assert_array_equal(out["transformer." + k], v)      # Conv1D (in, out) again
    cfg = json.loads((tmp_path / "b" / "config.json").read_text())
    assert {k: cfg[k] for k in ("n_positions", "n_embd", "n_layer", "n_head", "vocab_size", "activation_function",
                                "layer_norm_epsilon", "tie_word_embeddings", "model_type")} == \
        {"n_positions": P, "n_embd": C, "n_layer": L, "n_head": H, "vocab_size": V, "activation_function": "gelu_new",
         "layer_norm_epsilon": 1e-5, "tie_word_embeddings": True, "model_type": "gpt2"}
    np.testing.assert_array_equal(logits(GPT.from_pretrained(tmp_path / "b")), logits(model))


@pytest.mark.parametrize("key, value", [("activation_function", "gelu"), ("activation_function", "relu"),
                                        ("layer_norm_epsilon", 1e-6), ("n_inner", 5 * C),
                                        ("tie_word_embeddings", False), ("scale_attn_by_inverse_layer_idx", True),
                                        ("scale_attn_weights", False), ("add_cross_attention", True),
                                        ("model_type", "llama")])
def test_an_unsupported_config_value_is_refused_by_name(tmp_path, key, value):
    folder = hf_folder(tmp_path, config=dict(HF_CONFIG, **{key: value}))
    with pytest.raises(ValueError, match=f"{key} = {value!r} is not supported"):
        GPT.from_pretrained(folder)


def test_accepted_config_variants(tmp_path):
    ok = dict(HF_CONFIG, activation_function="gelu_pytorch_tanh", n_inner=4 * C, reorder_and_upcast_attn=True)
    GPT.from_pretrained(hf_folder(tmp_path / "a", config=ok))
    with pytest.warns(UserWarning, match=r"keys \['rope_theta'\] are not known"):
        GPT.from_pretrained(hf_folder(tmp_path / "b", config=dict(HF_CONFIG, rope_theta=1e4)))
    folder = hf_folder(tmp_path / "c", config=dict(HF_CONFIG, attn_pdrop=0.0))
    with pytest.raises(ValueError, match="different dropouts.*pass dropout="):
        GPT.from_pretrained(folder)
    assert GPT.from_pretrained(folder, dropout=0.0).config.dropout == 0.0


def test_file_faults_are_named(tmp_path):
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "config.json").write_text(json.dumps(HF_CONFIG))
    (tmp_path / "bin" / "pytorch_model.bin").write_bytes(b"torch pickle")
    with pytest.raises(FileNotFoundError, match="pytorch_model.bin.*model.safetensors \\(safetensors\\)"):
        GPT.from_pretrained(tmp_path / "bin")
    t = hf_tensors()
    untied = {**t, "lm_head.weight": t["wte.weight"] + 1}
    with pytest.raises(ValueError, match="untied"):
        GPT.from_pretrained(hf_folder(tmp_path / "untied", untied))
    missing = {k: v for k, v in t.items() if k != "h.1.mlp.c_fc.bias"}
    with pytest.raises(ValueError, match=r"missing tensors \['transformer\.h\.1\.mlp\.c_fc\.bias'\]"):
        GPT.from_pretrained(hf_folder(tmp_path / "missing", missing))
    wrong = {**t, "h.0.attn.c_attn.weight": t["h.0.attn.c_attn.weight"].T.copy()}   # stored (out, in) by mistake
    with pytest.raises(ValueError, match=r"wrong shape.*c_attn\.weight \(12, 36\) \(expected \(36, 12\)\)"):
        GPT.from_pretrained(hf_folder(tmp_path / "wrong", wrong))
    with pytest.raises(FileNotFoundError, match="not a folder"):
        GPT.from_pretrained(tmp_path / "nowhere")


def test_save_pretrained_refuses_what_transformers_cannot_read(tmp_path):
    lora = get_peft_model(GPT(GPTConfig(vocab_size=V, block_size=8, n_layer=1, n_head=2, n_embd=12)),
                          LoraConfig(r=2))
    with pytest.raises(ValueError, match="merge_and_unload"):
        lora.base_model.save_pretrained(tmp_path / "x")
    lora.merge_and_unload().save_pretrained(tmp_path / "merged")           # a merged model is plain GPT-2
    with pytest.raises(ValueError, match="bias = False"):
        GPT(GPTConfig(bias=False, n_layer=1, n_head=2, n_embd=8)).save_pretrained(tmp_path / "nobias")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        GPT.from_pretrained(tmp_path / "merged")
