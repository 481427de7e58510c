"""Adapter files: `save_adapter`, `read_adapter`, `load_adapter`, in the folder layout PEFT loads as it is.

An adapter is a directory of three files, each written atomically (minilora.io), tensors first:

    adapter_model.safetensors  the tensors, written with the `safetensors` package's NumPy API, under
                               PEFT's keys: `base_model.model.` + the model's parameter name
                               (`base_model.model.transformer.h.0.attn.c_attn.lora_A.weight`
                               (r, d_in), `...lora_B.weight` (d_out, r), and each variant's own
                               `adapter_keys`, e.g. DoRA's), plus the biases that trained
                               (bias="lora_only": those of the adapted layers; "all": every `*bias`);
                               an adapted layer's bias is PEFT's `<module>.base_layer.bias`.
    adapter_config.json        PEFT's LoraConfig fields only (`peft_config.to_peft_dict`: peft_type
                               "LORA", task_type "CAUSAL_LM", fan_in_fan_out true for GPT-2's
                               Conv1D, base_model_name_or_path), so PEFT reads it without a warning.
    minilora_adapter.json      minilora's own fields (PEFT warns about unknown keys in its config):
                               format_version 2, the LoraConfig (`lora_config`, enable_lora included),
                               target_names, dtype, bias_keys, base_model_fingerprint (another base
                               gives a UserWarning on load), adapter_fingerprint (of the file's
                               tensors: files from two saves are refused), peft_export (below).

q/v slices of the fused c_attn (enable_lora) have no PEFT equivalent, so they are exported as the
exact equivalent PEFT can load: one plain LoRA of rank g·r on the whole c_attn, g the number of
adapted slices. With A = [A_1; ...; A_g] (g·r, d_in) stacked as minilora already stores it, and B'
(d_out, g·r) block-diagonal, B'[S_i, i·r:(i+1)·r] = B_i and zero rows for the slices left out (k):

    s' B' A' = s' Σ_i (rows S_i) B_i A_i = ΔW   when s' = s, i.e. lora_alpha' = g·lora_alpha
    (use_rslora: lora_alpha' = √g·lora_alpha, since s = α/√r),

written as rank_pattern / alpha_pattern entries for those modules. `save_adapter` returns a note
saying so; minilora_adapter.json's `peft_export` lets minilora read the grouped form back (the
zero blocks are checked). A folder without minilora_adapter.json is a PEFT adapter: its
adapter_config.json is read by `peft_config.from_peft_dict` (every option honoured or refused by
name) and its factors are cast to the model's dtype with a UserWarning.

Older minilora adapters (format_version 1: adapter_model.npz, minilora's fields in
adapter_config.json) still load; if their bias mode trained biases but they predate bias storage,
a UserWarning says the model keeps its own biases.
"""
from __future__ import annotations

import importlib
import math
import warnings
from collections import OrderedDict
from dataclasses import fields
from os import PathLike
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import io as mio
from .config import LoraConfig
from .functional import lora_groups
from .peft_config import from_peft_dict, to_peft_dict

if TYPE_CHECKING:
    from .model import LoraModel

__all__ = ["ADAPTER_CONFIG_NAME", "ADAPTER_WEIGHTS_NAME", "LEGACY_WEIGHTS_NAME", "MINILORA_META_NAME",
           "PEFT_PREFIX", "adapter_tensors", "save_adapter", "read_adapter", "load_adapter", "expand_grouped_B",
           "contract_grouped_B"]

# peft_type -> config class ("module:attr" strings are imported on first use, as in variant.py)
CONFIG_TYPES: dict[str, Any] = {"LORA": LoraConfig, "VERA": "minilora.lora.vera:VeraConfig",
                                "ADALORA": "minilora.lora.adalora:AdaLoraConfig"}

ADAPTER_CONFIG_NAME = "adapter_config.json"
ADAPTER_WEIGHTS_NAME = "adapter_model.safetensors"
LEGACY_WEIGHTS_NAME = "adapter_model.npz"
MINILORA_META_NAME = "minilora_adapter.json"
PEFT_PREFIX = "base_model.model."
FORMAT_VERSION = 2
_PEFT_VARIANTS = ("lora", "dora", "dora_exact")   # the variants PEFT's LoRA can express (dora_exact: the same
                                                 # model as dora; only the training gradient differs)


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


def _config_class(peft_type: Any, where: str) -> type[LoraConfig]:
    """The config class of a peft_type of CONFIG_TYPES. Raises ValueError naming the known ones."""
    if peft_type not in CONFIG_TYPES:
        raise ValueError(f"load_adapter: {where} holds a {peft_type!r} adapter; only LORA adapters (and "
                         f"{sorted(set(CONFIG_TYPES) - {'LORA'})}) can be loaded")
    cls = CONFIG_TYPES[peft_type]
    if isinstance(cls, str):
        module, _, attr = cls.partition(":")
        cls = getattr(importlib.import_module(module), attr)
    return cls


def _peft_config_dict(config: LoraConfig, base_model_name_or_path: str | None) -> dict[str, Any]:
    """adapter_config.json: PEFT's LoraConfig fields for a LORA config; for another peft_type (VeRA),
    minilora's own fields with that peft_type (PEFT's VeraConfig is not mapped)."""
    peft_type = getattr(config, "peft_type", "LORA")
    if peft_type == "LORA":
        return to_peft_dict(config, base_model_name_or_path)
    return dict(config.to_dict(), peft_type=peft_type)


def adapter_tensors(model: LoraModel) -> OrderedDict[str, np.ndarray]:
    """Copies of the model's own adapter tensors and trained biases, in minilora's (grouped) form (and the
    model-level tensors of its variant, e.g. VeRA's shared projections)."""
    params, _ = _own_parameters(model, model.peft_config.bias)
    out = OrderedDict((n, p.data.copy()) for n, p in params.items())
    out.update((n, np.array(v, copy=True)) for n, v in _model_tensors(model).items())
    return out


def expand_grouped_B(B: np.ndarray, slices: list[tuple[int, int]], r: int, d_out: int) -> np.ndarray:
    """B (Σ w_i, r) of a grouped LoRA -> the block-diagonal B' (d_out, g·r) of the rank-g·r plain LoRA.

    B'[start_i:stop_i, i·r:(i+1)·r] = B_i, zeros elsewhere; with A' = A (g·r, d_in) unchanged,
    B' A' = Σ_i (rows S_i) B_i A_i (see the module docstring). Same dtype as B.
    """
    out = np.zeros((d_out, len(slices) * r), dtype=B.dtype)
    for _, ar, br, oc in lora_groups(slices, r):
        out[oc, ar] = B[br]
    return out


def contract_grouped_B(Bx: np.ndarray, slices: list[tuple[int, int]], r: int, where: str) -> np.ndarray:
    """The inverse of `expand_grouped_B`. Raises ValueError if Bx is not that block-diagonal form."""
    width = sum(s1 - s0 for s0, s1 in slices)
    B = np.zeros((width, r), dtype=Bx.dtype)
    for _, ar, br, oc in lora_groups(slices, r):
        B[br] = Bx[oc, ar]
    if Bx.shape != (Bx.shape[0], len(slices) * r) or not np.array_equal(
            expand_grouped_B(B, slices, r, Bx.shape[0]), Bx):
        raise ValueError(f"load_adapter: {where} is not the block-diagonal B that minilora exported for its "
                         f"slices {slices} (changed outside minilora? remove {MINILORA_META_NAME} to read the "
                         "folder as a plain PEFT adapter)")
    return B


def _peft_form(model: LoraModel) -> tuple[OrderedDict, LoraConfig, dict, list[str]]:
    """(file tensors with PEFT's prefix, the config PEFT reads, peft_export, notes) for `model`."""
    tensors = adapter_tensors(model)
    config = model.peft_config
    rank_pattern, alpha_pattern = {}, {}    # first, so that no pattern of config shadows them (PEFT: first match)
    export, notes = {}, []
    for name, layer in model.lora_layers():
        if layer.slices is None:
            continue
        if layer.variant.name != "lora":
            notes.append(f"{name}: variant {layer.variant.name!r} on slices has no PEFT equivalent; "
                         f"only minilora reads it (through {MINILORA_META_NAME})")
            continue
        g, r = len(layer.slices), layer.r
        key = f"{name}.lora_B.weight"
        tensors[key] = expand_grouped_B(tensors[key], layer.slices, r, layer.out_features)
        alpha = layer.lora_alpha * (math.sqrt(g) if layer.use_rslora else g)
        rank_pattern[name], alpha_pattern[name] = g * r, alpha
        export[name] = {"slices": [list(s) for s in layer.slices], "r": r, "lora_alpha": layer.lora_alpha}
    if export:
        notes.append(f"exported {len(export)} layer(s) with LoRA on slices of a fused projection ({next(iter(export))}"
                     f", ...) as the exact PEFT equivalent: rank g·r on the whole layer, A stacked, B block-"
                     "diagonal with zero rows for the slices left out, lora_alpha scaled so the scaling is "
                     "unchanged (rank_pattern / alpha_pattern in adapter_config.json)")
    if config.variant == "residual":
        notes.append(f"init_lora_weights={config.init_lora_weights!r}: these factors apply to PEFT's residual base "
                     "W0 - s·B0A0, not to W0; adapter_config.json says so. For an adapter any LoRA loader applies "
                     "to the original W0, write PEFT's converted form: minilora.lora.pissa.save_converted_adapter")
    elif config.variant not in _PEFT_VARIANTS:
        notes.append(f"variant {config.variant!r} has no PEFT equivalent: PEFT cannot load this adapter; "
                     "minilora can")
    peft_cfg = config if not export else config.replace(rank_pattern={**rank_pattern, **config.rank_pattern},
                                                        alpha_pattern={**alpha_pattern, **config.alpha_pattern})
    own = set(model.lora_module_names)
    return OrderedDict((PEFT_PREFIX + _peft_name(k, own), v) for k, v in tensors.items()), peft_cfg, export, notes


def _peft_name(name: str, lora_modules: set[str]) -> str:
    """PEFT's key for a parameter: the base parameters of a LoRA layer live in its `base_layer`."""
    module, _, leaf = name.rpartition(".")
    return f"{module}.base_layer.{leaf}" if module in lora_modules and leaf in ("weight", "bias") else name


def save_adapter(model: LoraModel, path: str | PathLike, base_model_name_or_path: str | None = None) -> list[str]:
    """Write `path/adapter_model.safetensors`, `adapter_config.json`, `minilora_adapter.json`.

    See the module docstring for the layout. The directory is created if needed. Works merged or
    not (the factors are stored, never ΔW). Only the LoRA layers this LoraModel injected are
    written. base_model_name_or_path: for PEFT's config (default: the GPT's `name_or_path`, set by
    `GPT.from_pretrained`, else None).
    Returns: notes (str) on exports PEFT needs in another form (fused slices); the CLI prints them.
    Raises: RuntimeError if the model holds no LoRA layers (after merge_and_unload).
    """
    from safetensors.numpy import save

    model._layers_or_raise("save_adapter")
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    _, biases = _own_parameters(model, model.peft_config.bias)
    file_tensors, peft_cfg, export, notes = _peft_form(model)
    if base_model_name_or_path is None:
        base_model_name_or_path = getattr(model.base_model, "name_or_path", None)
    meta = dict(format_version=FORMAT_VERSION, lora_config=model.peft_config.to_dict(),
                peft_type=getattr(model.peft_config, "peft_type", "LORA"),
                base_model_fingerprint=model.base_fingerprint, adapter_fingerprint=mio.fingerprint(file_tensors),
                target_names=list(model.lora_module_names), dtype=str(model.dtype), bias_keys=biases,
                peft_export=export)
    mio.atomic_write_bytes(path / ADAPTER_WEIGHTS_NAME,
                           save({k: np.ascontiguousarray(v) for k, v in file_tensors.items()},
                                metadata={"format": "pt"}))
    mio.save_json_atomic(path / ADAPTER_CONFIG_NAME, _peft_config_dict(peft_cfg, base_model_name_or_path))
    mio.save_json_atomic(path / MINILORA_META_NAME, meta)
    return notes


def _check_shapes(path, tensors, config, meta):
    """A tensor whose shape does not fit its module's r, or whose dtype is not meta's dtype: ValueError."""
    for k, v in tensors.items():
        is_factor = k.endswith(("lora_A.weight", "lora_B.weight"))
        bad = is_factor and v.ndim != 2
        r = config.for_module(k.rsplit(".", 2)[0]).r if is_factor else None
        if not bad and k.endswith("lora_B.weight"):
            bad = v.shape[1] != r                                      # B (W, r)
        if not bad and k.endswith("lora_A.weight"):
            bad = v.shape[0] % r != 0                                  # A (g*r, d_in)
        if bad:
            raise ValueError(f"load_adapter: {str(path)!r} is inconsistent: {k} has shape {v.shape}, which "
                             f"does not fit the r = {r} of its config")
        if meta.get("dtype") is not None and str(v.dtype) != meta["dtype"]:
            raise ValueError(f"load_adapter: {str(path)!r} is inconsistent: {k} is {v.dtype} but its "
                             f"config says dtype {meta['dtype']}")


def _strip(raw):
    """File keys -> the model's names: PEFT's prefix and its `base_layer.` (biases of LoRA layers) removed."""
    return OrderedDict(((k[len(PEFT_PREFIX):] if k.startswith(PEFT_PREFIX) else k).replace(".base_layer.", "."), v)
                       for k, v in raw.items())


def _read_legacy(path: Path, cfg_file: Path, npz_file: Path):
    """format_version 1: adapter_model.npz and minilora's fields in adapter_config.json."""
    meta = mio.load_json(cfg_file)
    if not isinstance(meta, dict):
        raise ValueError(f"load_adapter: {str(cfg_file)!r} does not hold a JSON object")
    config_cls = _config_class(meta.get("peft_type", "LORA"), repr(str(cfg_file)))
    if meta.get("format_version", 1) != 1:
        raise ValueError(f"load_adapter: {str(cfg_file)!r} has format_version {meta['format_version']!r}; an "
                         f"{LEGACY_WEIGHTS_NAME} folder is format_version 1")
    names = {f.name for f in fields(config_cls)}
    config = config_cls.from_dict({k: v for k, v in meta.items() if k in names})
    raw = mio.load_npz(npz_file)
    _check_shapes(path, raw, config, meta)
    if meta.get("adapter_fingerprint") not in (None, mio.fingerprint(raw)):
        raise ValueError(f"load_adapter: {str(npz_file)!r} does not match {str(cfg_file)!r} (its "
                         "adapter_fingerprint differs: files from two different saves?)")
    return config, dict(meta, source="minilora"), _strip(raw)


def _read_minilora(path: Path, cfg_file: Path, raw: dict, side_file: Path):
    """format_version 2 with minilora's side file: the grouped form back, after every agreement check."""
    meta = mio.load_json(side_file)
    if not isinstance(meta, dict):
        raise ValueError(f"load_adapter: {str(side_file)!r} does not hold a JSON object")
    if meta.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"load_adapter: {str(side_file)!r} has format_version {meta.get('format_version')!r}; "
                         f"this minilora reads format_version {FORMAT_VERSION} (and 1: {LEGACY_WEIGHTS_NAME})")
    if meta.get("adapter_fingerprint") != mio.fingerprint(raw):
        raise ValueError(f"load_adapter: {str(path / ADAPTER_WEIGHTS_NAME)!r} does not match {str(side_file)!r} "
                         f"(its adapter_fingerprint differs: files from two different saves? A folder PEFT "
                         f"saved again reads as a PEFT adapter once {MINILORA_META_NAME} is removed)")
    peft = mio.load_json(cfg_file)
    if not isinstance(peft, dict):
        raise ValueError(f"load_adapter: {str(cfg_file)!r} does not hold a JSON object")
    config_cls = _config_class(peft.get("peft_type", "LORA"), repr(str(cfg_file)))
    try:
        config = config_cls.from_dict(meta["lora_config"])
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"load_adapter: {str(side_file)!r}: bad lora_config: {e}") from e
    tensors = _strip(raw)
    export = meta.get("peft_export") or {}
    rank_pattern, alpha_pattern = {}, {}
    for name, e in export.items():
        g = len(e["slices"])
        rank_pattern[name] = g * e["r"]
        alpha_pattern[name] = e["lora_alpha"] * (math.sqrt(g) if config.use_rslora else g)
    if export:
        config_out = config.replace(rank_pattern={**rank_pattern, **config.rank_pattern},
                                    alpha_pattern={**alpha_pattern, **config.alpha_pattern})
    else:
        config_out = config
    expected = _peft_config_dict(config_out, peft.get("base_model_name_or_path"))
    differ = sorted(k for k in set(expected) | set(peft) if expected.get(k) != peft.get(k))
    if differ:
        k = differ[0]
        raise ValueError(f"load_adapter: {str(path)!r} is inconsistent: {ADAPTER_CONFIG_NAME} says {k} = "
                         f"{peft.get(k)!r} but {MINILORA_META_NAME} implies {expected.get(k)!r} (edited by hand? "
                         f"fields {differ})")
    for name, e in export.items():
        key = f"{name}.lora_B.weight"
        if key not in tensors:
            raise ValueError(f"load_adapter: {str(path)!r} is inconsistent: {MINILORA_META_NAME} exports {name} "
                             f"but the tensors lack {key}")
        tensors[key] = contract_grouped_B(tensors[key], [tuple(s) for s in e["slices"]], e["r"], key)
    _check_shapes(path, tensors, config, meta)
    return config, dict(meta, source="minilora"), tensors


def read_adapter(path: str | PathLike) -> tuple[LoraConfig, dict[str, Any], OrderedDict[str, np.ndarray]]:
    """(LoraConfig, metadata dict, tensors without PEFT's prefix, in minilora's form) from an adapter folder.

    Reads, in this order: a minilora folder (adapter_model.safetensors + minilora_adapter.json), a
    PEFT folder (adapter_model.safetensors alone: metadata {"source": "peft", "bias_keys": the
    non-LoRA tensors}), an older minilora folder (adapter_model.npz). The files must agree with
    themselves before they meet a model.
    Raises:
        FileNotFoundError: adapter_config.json or both weight files missing.
        ValueError: not a LORA adapter, a PEFT option minilora cannot honour (named), another
            format_version, a tensor whose shape does not fit its r or whose dtype is not the
            recorded dtype, bias_keys naming absent tensors, files from two saves, an
            adapter_config.json edited against minilora_adapter.json.
    """
    path = Path(path)
    cfg_file = path / ADAPTER_CONFIG_NAME
    st_file, npz_file, side_file = path / ADAPTER_WEIGHTS_NAME, path / LEGACY_WEIGHTS_NAME, path / MINILORA_META_NAME
    if not cfg_file.exists() or not (st_file.exists() or npz_file.exists()):
        raise FileNotFoundError(f"load_adapter: {str(path)!r} is not an adapter folder (it holds "
                                f"{ADAPTER_CONFIG_NAME} and {ADAPTER_WEIGHTS_NAME}, or {LEGACY_WEIGHTS_NAME} "
                                "for older minilora adapters)")
    if not st_file.exists():
        config, meta, tensors = _read_legacy(path, cfg_file, npz_file)
    else:
        from safetensors.numpy import load_file

        try:
            raw = load_file(str(st_file))
        except Exception as e:  # safetensors' own error types, e.g. bfloat16 that NumPy lacks
            raise ValueError(f"load_adapter: cannot read {str(st_file)!r} with safetensors.numpy: {e}") from e
        if side_file.exists():
            config, meta, tensors = _read_minilora(path, cfg_file, raw, side_file)
        else:
            config = from_peft_dict(mio.load_json(cfg_file), str(cfg_file))
            tensors = _strip(raw)
            meta = {"source": "peft", "bias_keys": [k for k in tensors if ".lora_" not in k]}
            _check_shapes(path, tensors, config, meta)
    absent = [k for k in meta.get("bias_keys", []) if k not in tensors]
    if absent:
        raise ValueError(f"load_adapter: {str(path)!r} is inconsistent: its config lists bias tensors {absent} "
                         "that the weights file does not hold")
    return config, meta, tensors


def load_adapter(model: LoraModel, path: str | PathLike) -> None:
    """Load an adapter folder (minilora's, PEFT's or an older minilora one) into `model`'s own LoRA layers.

    minilora's files load bit for bit. The file's lora_alpha (per module: alpha_pattern), use_rslora
    and lora_dropout replace the layers'. The file's trained biases replace the model's biases of
    the same names.
    Raises:
        ValueError: missing or unexpected keys (named); a shape mismatch (names the key and both
            shapes); a dtype mismatch in a minilora file; the file errors of `read_adapter`.
        RuntimeError: a layer is merged (unmerge_adapter first); no LoRA layers.
    Warns:
        UserWarning: the adapter was trained on a base model with another fingerprint; an older
            file of a bias mode that trains biases but without its biases; a PEFT adapter's
            tensors cast to the model's dtype.
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
    cast = []
    for k, p in params.items():
        v = tensors[k]
        if v.shape != p.shape:
            raise ValueError(f"load_adapter: {k} has shape {v.shape} in the file but {p.shape} in the "
                             f"model (file r = {config.for_module(k.rsplit('.', 2)[0]).r}, model r = "
                             f"{model.peft_config.for_module(k.rsplit('.', 2)[0]).r})")
        if v.dtype != p.dtype:
            if meta.get("source") != "peft":
                raise ValueError(f"load_adapter: {k} has dtype {v.dtype} in the file but {p.dtype} in the model")
            cast.append(f"{v.dtype}->{p.dtype}")
    for k, v in shared.items():
        if tensors[k].shape != v.shape or tensors[k].dtype != v.dtype:
            raise ValueError(f"load_adapter: {k} is {tensors[k].shape} {tensors[k].dtype} in the file but "
                             f"{v.shape} {v.dtype} in the model")
    if cast:
        warnings.warn(f"load_adapter: the PEFT adapter's tensors were cast to the model's dtype ({sorted(set(cast))})",
                      UserWarning, stacklevel=3)
    fp = meta.get("base_model_fingerprint")
    if meta.get("source") != "peft" and fp != model.base_fingerprint:
        warnings.warn(f"load_adapter: the adapter in {str(path)!r} was trained on a different base model "
                      f"(fingerprint {str(fp)[:12]}... vs this model's {model.base_fingerprint[:12]}...); "
                      "its outputs may be meaningless", UserWarning, stacklevel=3)
    for k, p in params.items():
        p.data = np.array(tensors[k], dtype=p.dtype, copy=True)
    for variant in dict.fromkeys(m.variant for _, m in layers):
        variant.load_model_tensors(model, {k: tensors[k] for k in shared})
    for name, m in layers:
        m.set_scaling(config.for_module(name).lora_alpha, config.use_rslora)
        m.lora_dropout = config.lora_dropout
    model.peft_config = model.peft_config.replace(lora_alpha=config.lora_alpha, use_rslora=config.use_rslora,
                                                  lora_dropout=config.lora_dropout,
                                                  alpha_pattern=config.alpha_pattern)
