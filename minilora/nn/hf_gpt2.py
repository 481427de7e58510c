"""Hugging Face GPT-2 folders in and out: `config.json` + `model.safetensors` <-> a minilora `GPT`.

A Hugging Face GPT-2 checkpoint (`transformers`' `GPT2LMHeadModel.save_pretrained`, or the `gpt2`
repository on the Hub) is a folder with

    config.json         GPT2Config: n_embd, n_head, n_layer, n_positions, vocab_size, n_inner,
                        activation_function, layer_norm_epsilon, *_pdrop, tie_word_embeddings, ...
    model.safetensors   the tensors, read here with the `safetensors` package's NumPy API

The mapping (GPT-2's own names are minilora's, so only four things differ):

  * Conv1D. Hugging Face's GPT-2 stores `c_attn`, `attn.c_proj`, `c_fc`, `mlp.c_proj` as Conv1D, whose
    weight is (in, out) and computes y = x W + b; minilora's `Linear` holds (out, in) and computes
    y = x Wᵀ + b. So W_minilora = W_hfᵀ for those four weights per block (biases are the same).
  * The tied head. `lm_head.weight` is `transformer.wte.weight` (Press & Wolf 2017); transformers
    leaves it out of the file. It is refused if present and different (untied embeddings).
  * Keys. The Hub's `gpt2` file was saved from GPT2Model (keys `h.0...`, `wte.weight`);
    transformers' GPT2LMHeadModel writes `transformer.h.0...`. Both are read; old files' causal-mask
    buffers (`h.N.attn.bias`, `h.N.attn.masked_bias`) are skipped.
  * The config. n_positions <-> block_size, n_embd, n_head, n_layer, vocab_size as they are.
    Refused by name, because minilora's GPT computes something else for them: activation_function
    other than "gelu_new" / "gelu_pytorch_tanh" (the tanh GELU of `ops.gelu`), layer_norm_epsilon
    != 1e-5, n_inner not None and not 4·n_embd, tie_word_embeddings false,
    scale_attn_by_inverse_layer_idx true, scale_attn_weights false, add_cross_attention true,
    model_type other than "gpt2". `reorder_and_upcast_attn` only changes float16 precision: accepted.
    Dropout: the three *_pdrop must be equal (minilora has one `dropout`) unless `dropout=` is given.

`pytorch_model.bin` is a pickle that needs torch: it is refused with a message naming safetensors.
"""
from __future__ import annotations

import json
import math
import re
import warnings
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import DTypeLike

from .. import io as mio

__all__ = ["CONFIG_NAME", "WEIGHTS_NAME", "CONV1D_WEIGHTS", "gpt_config_from_hf", "hf_config_from_gpt",
           "hf_to_minilora_state", "minilora_to_hf_state", "load_pretrained", "save_pretrained"]

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
# Conv1D weights, stored (in, out) by Hugging Face: transposed on the way in and out.
CONV1D_WEIGHTS = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
_MASK_BUFFER = re.compile(r"(^|\.)h\.\d+\.attn\.(bias|masked_bias)$")
_GELU_TANH = ("gelu_new", "gelu_pytorch_tanh")
# Keys that change nothing minilora computes (metadata, generation defaults, other heads' options).
_METADATA_KEYS = frozenset({
    "architectures", "model_type", "transformers_version", "torch_dtype", "dtype", "_name_or_path",
    "bos_token_id", "eos_token_id", "pad_token_id", "initializer_range", "use_cache", "task_specific_params",
    "summary_type", "summary_use_proj", "summary_activation", "summary_proj_to_labels", "summary_first_dropout",
    "n_ctx", "reorder_and_upcast_attn", "id2label", "label2id", "output_past", "return_dict",
    "output_hidden_states", "output_attentions", "torchscript", "use_return_dict", "prefix", "tokenizer_class",
})


def _config_error(path, key, value, why):
    return ValueError(f"from_pretrained: {path}: {key} = {value!r} is not supported: {why}")


def gpt_config_from_hf(hf: dict[str, Any], dropout: float | None = None, where: str = "config.json"):
    """A minilora `GPTConfig` from a Hugging Face GPT2Config dict (see the module docstring).

    Args:
        hf: the parsed config.json. dropout: None (the file's *_pdrop, which must agree) or a value
            in [0, 1) that replaces them. where: the file name used in messages.
    Returns: GPTConfig (bias=True: Hugging Face's GPT-2 always has biases).
    Raises: ValueError naming the key of each unsupported value; a missing size key.
    Warns: UserWarning naming keys this reader does not know (they are ignored).
    """
    from .gpt import GPTConfig  # gpt.py imports this module

    if not isinstance(hf, dict):
        raise ValueError(f"from_pretrained: {where} does not hold a JSON object")
    if hf.get("model_type", "gpt2") != "gpt2":
        raise _config_error(where, "model_type", hf["model_type"], "only GPT-2 checkpoints are read")
    act = hf.get("activation_function", "gelu_new")
    if act not in _GELU_TANH:
        raise _config_error(where, "activation_function", act, f"minilora's GPT uses the tanh GELU {_GELU_TANH}")
    eps = hf.get("layer_norm_epsilon", 1e-5)
    if not isinstance(eps, (int, float)) or not math.isclose(eps, 1e-5, rel_tol=1e-9):
        raise _config_error(where, "layer_norm_epsilon", eps, "minilora's LayerNorm uses GPT-2's 1e-5")
    for key, default, need in (("tie_word_embeddings", True, True), ("scale_attn_weights", True, True),
                               ("scale_attn_by_inverse_layer_idx", False, False),
                               ("add_cross_attention", False, False)):
        if bool(hf.get(key, default)) != need:
            raise _config_error(where, key, hf[key], f"minilora's GPT computes {key} = {need}")
    missing = [k for k in ("n_embd", "n_head", "n_layer", "n_positions", "vocab_size") if k not in hf]
    if missing:
        raise ValueError(f"from_pretrained: {where} lacks {missing} (a GPT-2 config names its sizes)")
    n_inner = hf.get("n_inner")
    if n_inner is not None and n_inner != 4 * hf["n_embd"]:
        raise _config_error(where, "n_inner", n_inner, f"minilora's MLP is 4·n_embd = {4 * hf['n_embd']} wide")
    if dropout is None:
        drops = {k: hf.get(k, 0.1) for k in ("resid_pdrop", "embd_pdrop", "attn_pdrop")}
        if len(set(drops.values())) != 1:
            raise ValueError(f"from_pretrained: {where} has different dropouts {drops}; minilora's GPT has one "
                             "dropout: pass dropout=... to choose it")
        dropout = next(iter(drops.values()))
    known = _METADATA_KEYS | {"activation_function", "layer_norm_epsilon", "tie_word_embeddings",
                              "scale_attn_weights", "scale_attn_by_inverse_layer_idx", "add_cross_attention",
                              "n_embd", "n_head", "n_layer", "n_positions", "vocab_size", "n_inner",
                              "resid_pdrop", "embd_pdrop", "attn_pdrop"}
    unknown = sorted(set(hf) - known)
    if unknown:
        warnings.warn(f"from_pretrained: {where}: keys {unknown} are not known to minilora and are ignored",
                      UserWarning, stacklevel=3)
    return GPTConfig(vocab_size=hf["vocab_size"], block_size=hf["n_positions"], n_layer=hf["n_layer"],
                     n_head=hf["n_head"], n_embd=hf["n_embd"], dropout=float(dropout), bias=True)


def hf_config_from_gpt(config) -> dict[str, Any]:
    """The config.json dict `transformers` reads as a GPT2Config for a minilora `GPTConfig`.

    Raises: ValueError if config.bias is False (Hugging Face's GPT-2 always has biases).
    """
    if not config.bias:
        raise ValueError("save_pretrained: GPTConfig.bias = False has no Hugging Face GPT-2 equivalent "
                         "(its Conv1D and LayerNorm layers always have biases)")
    return {"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "activation_function": "gelu_new",
            "vocab_size": config.vocab_size, "n_positions": config.block_size, "n_ctx": config.block_size,
            "n_embd": config.n_embd, "n_head": config.n_head, "n_layer": config.n_layer, "n_inner": None,
            "layer_norm_epsilon": 1e-5, "resid_pdrop": config.dropout, "embd_pdrop": config.dropout,
            "attn_pdrop": config.dropout, "initializer_range": 0.02, "scale_attn_weights": True,
            "scale_attn_by_inverse_layer_idx": False, "reorder_and_upcast_attn": False,
            "tie_word_embeddings": True, "bos_token_id": config.vocab_size - 1,
            "eos_token_id": config.vocab_size - 1}


def _is_conv1d(name: str) -> bool:
    return name.endswith(CONV1D_WEIGHTS)


def hf_to_minilora_state(tensors: dict[str, np.ndarray], dtype: DTypeLike = np.float32) -> dict[str, np.ndarray]:
    """Hugging Face GPT-2 tensors -> minilora state dict (keys `transformer.*`, Conv1D transposed).

    Accepts keys with or without the `transformer.` prefix; drops the mask buffers; checks a present
    `lm_head.weight` equals `wte` (the tie) and leaves it out (minilora's lm_head is wte).
    Returns contiguous arrays of `dtype`. Raises ValueError: an untied lm_head; a non-float tensor.
    """
    out = {}
    head = None
    for k, v in tensors.items():
        if _MASK_BUFFER.search(k):
            continue
        if k == "lm_head.weight":
            head = v
            continue
        if not np.issubdtype(v.dtype, np.floating):
            raise ValueError(f"from_pretrained: tensor {k} has dtype {v.dtype}; expected floats")
        name = k if k.startswith("transformer.") else "transformer." + k
        v = v.T if _is_conv1d(name) else v                  # Conv1D (in, out) -> Linear (out, in)
        out[name] = np.ascontiguousarray(v, dtype=dtype)
    wte = out.get("transformer.wte.weight")
    if head is not None and wte is not None and not np.array_equal(head.astype(dtype), wte):
        raise ValueError("from_pretrained: lm_head.weight differs from transformer.wte.weight (untied "
                         "embeddings); minilora's GPT ties them")
    return out


def minilora_to_hf_state(state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """minilora GPT state dict -> the tensors of a transformers GPT2LMHeadModel file (Conv1D transposed,
    no lm_head.weight: it is tied). Raises ValueError for LoRA tensors (merge_and_unload first)."""
    lora = [k for k in state if ".lora_" in k]
    if lora:
        raise ValueError(f"save_pretrained: the model holds LoRA tensors ({lora[0]}, ...); call "
                         "merge_and_unload() first, or save the adapter with save_adapter")
    return {k: np.ascontiguousarray(v.T if _is_conv1d(k) else v) for k, v in state.items() if k != "lm_head.weight"}


def load_pretrained(path: str | PathLike, dtype: DTypeLike = np.float32, dropout: float | None = None,
                    seed: int | None = 0):
    """Read a Hugging Face GPT-2 folder into a new minilora `GPT` (see the module docstring).

    Args:
        path: the folder (config.json + model.safetensors). dtype: np.float32 or np.float64 of the
            model (the file's float16/float32 are cast). dropout: None (the file's) or a value.
        seed: the model's dropout generator seed.
    Returns: GPT, eval-ready; `model.name_or_path` is the folder.
    Raises:
        FileNotFoundError: no folder / no config.json / no model.safetensors (a pytorch_model.bin
            alone is named: it needs torch; convert it to safetensors).
        ValueError: an unsupported config value (named); missing, unexpected or misshapen tensors.
    """
    from safetensors.numpy import load_file

    from .gpt import GPT  # gpt.py imports this module

    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"from_pretrained: {str(path)!r} is not a folder (a Hugging Face GPT-2 folder "
                                f"holds {CONFIG_NAME} and {WEIGHTS_NAME})")
    weights = path / WEIGHTS_NAME
    if not weights.exists():
        if (path / "pytorch_model.bin").exists():
            raise FileNotFoundError(f"from_pretrained: {str(path)!r} holds pytorch_model.bin, a torch pickle "
                                    f"minilora cannot read; download or convert to {WEIGHTS_NAME} (safetensors)")
        raise FileNotFoundError(f"from_pretrained: {str(weights)!r} not found")
    if not (path / CONFIG_NAME).exists():
        raise FileNotFoundError(f"from_pretrained: {str(path / CONFIG_NAME)!r} not found")
    config = gpt_config_from_hf(mio.load_json(path / CONFIG_NAME), dropout, str(path / CONFIG_NAME))
    try:
        raw = load_file(str(weights))
    except Exception as e:  # safetensors raises its own error types (e.g. for bfloat16, which NumPy lacks)
        raise ValueError(f"from_pretrained: cannot read {str(weights)!r} with safetensors.numpy: {e}") from e
    state = hf_to_minilora_state(raw, dtype)
    model = GPT(config, dtype=dtype, seed=seed)
    params = dict(model.named_parameters())
    missing = sorted(set(params) - set(state) - {"lm_head.weight"})
    unexpected = sorted(set(state) - set(params))
    if missing or unexpected:
        raise ValueError(f"from_pretrained: {str(weights)!r} does not fit its {CONFIG_NAME}: missing tensors "
                         f"{missing[:6]}, unexpected tensors {unexpected[:6]}")
    bad = [f"{k} {state[k].shape} (expected {p.shape})" for k, p in params.items() if state[k].shape != p.shape]
    if bad:
        raise ValueError(f"from_pretrained: {str(weights)!r}: tensors of the wrong shape: {bad[:4]}")
    model.load_state_dict(state)
    model.name_or_path = str(path)
    return model.eval()


def save_pretrained(model, path: str | PathLike) -> None:
    """Write `model` (a plain minilora GPT) as a Hugging Face GPT-2 folder that transformers loads as is.

    Files (each atomic, tensors first): model.safetensors (float tensors of the model's dtype,
    metadata {"format": "pt"}), config.json (`hf_config_from_gpt`). The folder is created if needed.
    Raises: ValueError: LoRA layers present (merge_and_unload first); bias=False.
    """
    from safetensors.numpy import save

    config_dict = hf_config_from_gpt(model.config)
    tensors = minilora_to_hf_state(dict(model.state_dict()))
    config_dict["torch_dtype"] = str(model.dtype)
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    mio.atomic_write_bytes(path / WEIGHTS_NAME, save(tensors, metadata={"format": "pt"}))
    mio.atomic_write_bytes(path / CONFIG_NAME, (json.dumps(config_dict, indent=2, sort_keys=True) + "\n").encode())
