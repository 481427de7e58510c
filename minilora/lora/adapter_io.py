"""Adapter files: `save_adapter`, `read_adapter`, `load_adapter` (PEFT's layout, in NumPy).

An adapter is a directory of two files, each written atomically (minilora.io), tensors first:

    adapter_model.npz     the adapter tensors of the LoraModel's own LoRA layers under PEFT's key
                          names (`transformer.h.0.attn.c_attn.lora_A.weight` (g*r, d_in),
                          `...lora_B.weight` (W, r)), plus the biases that trained: with
                          bias="lora_only" those of the adapted layers, with bias="all" every
                          `*bias` (PEFT stores them in the adapter too). Keys may carry PEFT's
                          `base_model.model.` prefix on load.
    adapter_config.json   the LoraConfig fields, peft_type "LORA", format_version 1, target_names,
                          dtype, bias_keys (the bias tensors stored), base_model_fingerprint
                          (io.fingerprint of the non-adapter parameters when the LoraModel was built:
                          another base gives a UserWarning on load) and adapter_fingerprint (of the
                          tensors: a .json and a .npz from two different saves are refused).

Older files (format_version 1 without `bias_keys`, written before biases were stored) still load;
if their bias mode trained biases, a UserWarning says the model keeps its own biases.
"""
from __future__ import annotations

import importlib
import warnings
from collections import OrderedDict
from dataclasses import fields
from os import PathLike
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import io as mio
from .config import LoraConfig

if TYPE_CHECKING:
    from .model import LoraModel

__all__ = ["ADAPTER_CONFIG_NAME", "ADAPTER_WEIGHTS_NAME", "adapter_tensors", "save_adapter", "read_adapter",
           "load_adapter"]

# peft_type -> config class ("module:attr" strings are imported on first use, as in variant.py)
CONFIG_TYPES: dict[str, Any] = {"LORA": LoraConfig, "VERA": "minilora.lora.vera:VeraConfig",
                                "ADALORA": "minilora.lora.adalora:AdaLoraConfig"}

ADAPTER_CONFIG_NAME = "adapter_config.json"
ADAPTER_WEIGHTS_NAME = "adapter_model.npz"
PEFT_PREFIX = "base_model.model."


def _own_parameters(model: LoraModel, bias: str) -> tuple[OrderedDict, list[str]]:
    """(name -> Parameter of what an adapter of `model` holds under `bias`, the bias names among them)."""
    from .model import adapter_parameters, trained_bias_names  # model.py imports this module

    params = adapter_parameters(model, model.lora_module_names)
    biases = trained_bias_names(model, bias, model.lora_module_names)
    named = dict(model.named_parameters())
    params.update((n, named[n]) for n in biases)
    return params, biases


def _model_tensors(model: LoraModel) -> OrderedDict[str, np.ndarray]:
    """The model-level tensors of the variants in use (`LoraVariant.model_tensors`: VeRA's vera_A/vera_B)."""
    out = OrderedDict()
    for variant in dict.fromkeys(m.variant for _, m in model.lora_layers()):
        out.update(variant.model_tensors(model))
    return out


def adapter_tensors(model: LoraModel) -> OrderedDict[str, np.ndarray]:
    """Copies of what `save_adapter` writes: the model's own adapter tensors and its trained biases
    (and the model-level tensors of its variant, e.g. VeRA's shared projections)."""
    params, _ = _own_parameters(model, model.peft_config.bias)
    out = OrderedDict((n, p.data.copy()) for n, p in params.items())
    out.update((n, np.array(v, copy=True)) for n, v in _model_tensors(model).items())
    return out


def save_adapter(model: LoraModel, path: str | PathLike) -> None:
    """Write `path/adapter_model.npz` and `path/adapter_config.json` (see the module docstring).

    The directory is created if needed. Works merged or not (the factors are stored, never ΔW).
    Only the LoRA layers this LoraModel injected are written (another LoraModel on the same GPT
    saves its own), so the file loads back with `load_lora_model` on a fresh base.
    Raises: RuntimeError if the model holds no LoRA layers (after merge_and_unload).
    """
    model._layers_or_raise("save_adapter")
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    _, biases = _own_parameters(model, model.peft_config.bias)
    tensors = adapter_tensors(model)
    meta = dict(model.peft_config.to_dict(), peft_type=getattr(model.peft_config, "peft_type", "LORA"),
                format_version=1,
                base_model_fingerprint=model.base_fingerprint,
                adapter_fingerprint=mio.fingerprint(tensors),
                target_names=list(model.lora_module_names), dtype=str(model.dtype), bias_keys=biases)
    mio.save_npz_atomic(path / ADAPTER_WEIGHTS_NAME, tensors)
    mio.save_json_atomic(path / ADAPTER_CONFIG_NAME, meta)


def read_adapter(path: str | PathLike) -> tuple[LoraConfig, dict[str, Any], OrderedDict[str, np.ndarray]]:
    """(LoraConfig, metadata dict, tensors with PEFT's prefix stripped) from an adapter directory.

    The files must agree with themselves before they meet a model.
    Raises:
        FileNotFoundError: a file is missing. ValueError: not a JSON object, not a LORA adapter,
        another format_version, a tensor whose shape does not fit r or whose dtype is not the
        config's dtype, bias_keys naming absent tensors, or a .npz from another save.
    """
    path = Path(path)
    cfg_file, npz_file = path / ADAPTER_CONFIG_NAME, path / ADAPTER_WEIGHTS_NAME
    for f in (cfg_file, npz_file):
        if not f.exists():
            raise FileNotFoundError(f"load_adapter: {str(f)!r} not found (an adapter directory holds "
                                    f"{ADAPTER_CONFIG_NAME} and {ADAPTER_WEIGHTS_NAME})")
    meta = mio.load_json(cfg_file)
    if not isinstance(meta, dict):
        raise ValueError(f"load_adapter: {str(cfg_file)!r} does not hold a JSON object")
    if meta.get("peft_type", "LORA") not in CONFIG_TYPES:
        raise ValueError(f"load_adapter: {str(cfg_file)!r} holds a {meta['peft_type']!r} adapter; only LORA "
                         f"adapters (and {sorted(set(CONFIG_TYPES) - {'LORA'})}) can be loaded")
    if meta.get("format_version", 1) != 1:
        raise ValueError(f"load_adapter: {str(cfg_file)!r} has format_version {meta['format_version']!r}; this "
                         "minilora reads format_version 1")
    config_cls = CONFIG_TYPES[meta.get("peft_type", "LORA")]
    if isinstance(config_cls, str):
        module, _, attr = config_cls.partition(":")
        config_cls = getattr(importlib.import_module(module), attr)
    names = {f.name for f in fields(config_cls)}
    config = config_cls.from_dict({k: v for k, v in meta.items() if k in names})
    raw = mio.load_npz(npz_file)
    for k, v in raw.items():
        bad = v.ndim != 2 if k.endswith(("lora_A.weight", "lora_B.weight")) else False
        if not bad and k.endswith("lora_B.weight"):
            bad = v.shape[1] != config.r                               # B (W, r)
        if not bad and k.endswith("lora_A.weight"):
            bad = v.shape[0] % config.r != 0                           # A (g*r, d_in)
        if bad:
            raise ValueError(f"load_adapter: {str(path)!r} is inconsistent: {k} has shape {v.shape}, which "
                             f"does not fit the r = {config.r} of its {ADAPTER_CONFIG_NAME}")
        if "dtype" in meta and str(v.dtype) != meta["dtype"]:
            raise ValueError(f"load_adapter: {str(path)!r} is inconsistent: {k} is {v.dtype} but its "
                             f"{ADAPTER_CONFIG_NAME} says dtype {meta['dtype']}")
    if meta.get("adapter_fingerprint") not in (None, mio.fingerprint(raw)):
        raise ValueError(f"load_adapter: {str(npz_file)!r} does not match {str(cfg_file)!r} (its "
                         "adapter_fingerprint differs: files from two different saves?)")
    tensors = OrderedDict((k[len(PEFT_PREFIX):] if k.startswith(PEFT_PREFIX) else k, v) for k, v in raw.items())
    absent = [k for k in meta.get("bias_keys", []) if k not in tensors]
    if absent:
        raise ValueError(f"load_adapter: {str(path)!r} is inconsistent: its {ADAPTER_CONFIG_NAME} lists bias "
                         f"tensors {absent} that {ADAPTER_WEIGHTS_NAME} does not hold")
    return config, meta, tensors


def load_adapter(model: LoraModel, path: str | PathLike) -> None:
    """Load an adapter written by `save_adapter` into `model`'s own LoRA layers (and biases), bit for bit.

    The file's lora_alpha and use_rslora replace the layers' (scaling recomputed) and its
    lora_dropout theirs. The file's trained biases replace the model's biases of the same names.
    Raises:
        ValueError: missing or unexpected keys (named); a shape or dtype mismatch (names the key
            and both shapes); the file errors of `read_adapter`.
        RuntimeError: a layer is merged (unmerge_adapter first); no LoRA layers.
    Warns:
        UserWarning: the adapter was trained on a base model with another fingerprint; an older
            file of a bias mode that trains biases but without its biases.
    """
    layers = model._layers_or_raise("load_adapter")
    if model.is_merged:
        raise RuntimeError("LoraModel.load_adapter: unmerge_adapter() first (the merged ΔW is "
                           "that of the current factors)")
    config, meta, tensors = read_adapter(path)
    params, biases = _own_parameters(model, config.bias)
    if "bias_keys" not in meta:              # an older file: it never stored biases
        for n in biases:
            params.pop(n)
        if biases:
            warnings.warn(f"load_adapter: {str(path)!r} was written before adapters stored their trained biases "
                          f"(bias={config.bias!r}); the model keeps its own biases", UserWarning, stacklevel=3)
    shared = _model_tensors(model)                   # e.g. VeRA's vera_A / vera_B
    missing = [k for k in [*params, *shared] if k not in tensors]
    unexpected = [k for k in tensors if k not in params and k not in shared]
    if missing or unexpected:
        raise ValueError(f"load_adapter: {path}: missing keys {missing}, unexpected keys {unexpected}")
    for k, p in params.items():
        v = tensors[k]
        if v.shape != p.shape:
            raise ValueError(f"load_adapter: {k} has shape {v.shape} in the file but {p.shape} in the "
                             f"model (file r = {config.r}, model r = {model.peft_config.r})")
        if v.dtype != p.dtype:
            raise ValueError(f"load_adapter: {k} has dtype {v.dtype} in the file but {p.dtype} in the model")
    for k, v in shared.items():
        if tensors[k].shape != v.shape or tensors[k].dtype != v.dtype:
            raise ValueError(f"load_adapter: {k} is {tensors[k].shape} {tensors[k].dtype} in the file but "
                             f"{v.shape} {v.dtype} in the model")
    fp = meta.get("base_model_fingerprint")
    if fp != model.base_fingerprint:
        warnings.warn(f"load_adapter: the adapter in {str(path)!r} was trained on a different base model "
                      f"(fingerprint {str(fp)[:12]}... vs this model's {model.base_fingerprint[:12]}...); "
                      "its outputs may be meaningless", UserWarning, stacklevel=3)
    for k, p in params.items():
        p.data = np.array(tensors[k], copy=True)
    for variant in dict.fromkeys(m.variant for _, m in layers):
        variant.load_model_tensors(model, {k: tensors[k] for k in shared})
    for _, m in layers:
        m.set_scaling(config.lora_alpha, config.use_rslora)
        m.lora_dropout = config.lora_dropout
    model.peft_config = model.peft_config.replace(lora_alpha=config.lora_alpha, use_rslora=config.use_rslora,
                                                  lora_dropout=config.lora_dropout)
