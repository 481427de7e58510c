"""LoRA on a whole model: config, injection, freezing, merging, adapter files (PEFT's vocabulary).

    config = LoraConfig(r=4, lora_alpha=8, target_modules=("c_attn",))
    model = get_peft_model(GPT(GPTConfig(...)), config)     # LoraModel; the GPT is changed in place
    model.print_trainable_parameters()
    ... train with AdamW(model.trainable_parameters()) ...
    model.save_adapter("out/adapter")                        # adapter_config.json + adapter_model.npz
    gpt = model.merge_and_unload()                           # a plain GPT, no LoRA layers left

Names. `LoraModel` is transparent: `named_parameters()` / `state_dict()` give the GPT's own names
(`transformer.h.0.attn.c_attn.weight`, `...c_attn.lora_A.weight`), with no `base_model.model.`
prefix (PEFT puts one in memory and in its files; `load_adapter` accepts and strips it). The GPT is
stored as `LoraModel.base_model`; `LoraModel.config` is the GPT's config and `LoraModel.peft_config`
the LoraConfig.

Matching `target_modules` (PEFT's rule): a list item matches a module whose full name equals it or
ends with "." + item (so "c_attn" and "attn.c_attn" match `transformer.h.0.attn.c_attn`, "tn.c_attn"
does not); a single string is a regular expression that must match the full name. Only `Linear`
modules are eligible. An item that matches nothing is an error naming it, even if others matched.

Adapter files (a directory): `adapter_model.npz` holds only the LoRA tensors under PEFT's key names;
`adapter_config.json` holds the LoraConfig plus `base_model_fingerprint` (io.fingerprint of every
non-LoRA parameter: a different base model gives a UserWarning on load) and `adapter_fingerprint`
(of the tensors in the .npz: a config and a tensor file from two different saves are refused). Both
are written atomically (minilora.io), tensors first.

The base fingerprint is taken when the LoraModel is built (and again after `load_state_dict`), not
from the current weights, because merge/unmerge round trips change W0 by rounding (layer.py).
"""
from __future__ import annotations

import math

import contextlib
import re
import warnings
from collections import OrderedDict
from dataclasses import asdict, dataclass, fields
from numbers import Integral, Real
from pathlib import Path

import numpy as np

from .. import io as mio
from ..nn.layers import Linear
from ..nn.module import Module
from .layer import LoRALinear

__all__ = ["LoraConfig", "inject_lora", "find_target_modules", "mark_only_lora_as_trainable",
           "lora_state_dict", "base_state_dict", "LoraModel", "get_peft_model", "load_lora_model",
           "ADAPTER_CONFIG_NAME", "ADAPTER_WEIGHTS_NAME"]

ADAPTER_CONFIG_NAME = "adapter_config.json"
ADAPTER_WEIGHTS_NAME = "adapter_model.npz"
_PEFT_PREFIX = "base_model.model."
_BIAS_MODES = ("none", "all", "lora_only")


def _is_lora_key(name):
    return ".lora_A." in name or ".lora_B." in name or name.startswith(("lora_A.", "lora_B."))


# --------------------------------------------------------------------------- config

@dataclass
class LoraConfig:
    """LoRA hyper-parameters, named as PEFT's LoraConfig (plus loralib's enable_lora).

    Args:
        r: rank, int >= 1. lora_alpha: > 0 (scaling = lora_alpha / r, or / sqrt(r) with use_rslora).
        lora_dropout: in [0, 1). target_modules: non-empty list/tuple of names (suffix match) or a
            str (full-match regex). init_lora_weights: True, False or "gaussian" (see LoRALinear).
        bias: "none", "all" (every bias trains) or "lora_only" (biases of adapted layers train).
        enable_lora: None or list of bools (adapt only those equal output slices, e.g. q and v).
    Raises:
        ValueError / TypeError on construction, naming the field and the value.
    """

    r: int = 8
    lora_alpha: float = 16
    lora_dropout: float = 0.0
    target_modules: tuple | str = ("c_attn",)
    use_rslora: bool = False
    init_lora_weights: bool | str = True
    bias: str = "none"
    enable_lora: list | None = None

    def __post_init__(self):
        if not isinstance(self.r, Integral) or isinstance(self.r, bool) or self.r < 1:
            raise ValueError(f"LoraConfig.r must be an int >= 1, got {self.r!r}")
        self.r = int(self.r)
        if (not isinstance(self.lora_alpha, Real) or isinstance(self.lora_alpha, bool) or not self.lora_alpha > 0
                or not math.isfinite(self.lora_alpha)):
            raise ValueError(f"LoraConfig.lora_alpha must be a finite number > 0, got {self.lora_alpha!r}")
        if (not isinstance(self.lora_dropout, Real) or isinstance(self.lora_dropout, bool)
                or not 0.0 <= self.lora_dropout < 1.0):
            raise ValueError(f"LoraConfig.lora_dropout must be in [0, 1), got {self.lora_dropout!r}")
        tm = self.target_modules
        if isinstance(tm, str):
            if not tm:
                raise ValueError("LoraConfig.target_modules: an empty regular expression")
            try:
                re.compile(tm)
            except re.error as e:
                raise ValueError(f"LoraConfig.target_modules: {tm!r} is not a valid regular expression: {e}") from e
        elif isinstance(tm, (list, tuple)):
            if not tm or not all(isinstance(t, str) and t for t in tm):
                raise ValueError(f"LoraConfig.target_modules must be a non-empty list of non-empty "
                                 f"module names, got {tm!r}")
            self.target_modules = tuple(tm)
        else:
            raise TypeError(f"LoraConfig.target_modules must be a list/tuple of str or a str regex, "
                            f"got {type(tm).__name__}")
        if not isinstance(self.use_rslora, bool):
            raise ValueError(f"LoraConfig.use_rslora must be a bool, got {self.use_rslora!r}")
        if not (self.init_lora_weights is True or self.init_lora_weights is False
                or self.init_lora_weights == "gaussian"):
            raise ValueError(f"LoraConfig.init_lora_weights must be True, False or 'gaussian', "
                             f"got {self.init_lora_weights!r}")
        if self.bias not in _BIAS_MODES:
            raise ValueError(f"LoraConfig.bias must be one of {_BIAS_MODES}, got {self.bias!r}")
        if self.enable_lora is not None:
            if (not isinstance(self.enable_lora, (list, tuple)) or not self.enable_lora
                    or not all(isinstance(e, bool) for e in self.enable_lora) or not any(self.enable_lora)):
                raise ValueError(f"LoraConfig.enable_lora must be None or a list of bools with at least "
                                 f"one True, got {self.enable_lora!r}")
            self.enable_lora = list(self.enable_lora)

    @property
    def scaling(self):
        """lora_alpha / r (or / sqrt(r) with use_rslora)."""
        return self.lora_alpha / (self.r ** 0.5 if self.use_rslora else self.r)

    def to_dict(self):
        """A JSON-ready dict of the fields (target_modules as a list, or the regex str)."""
        d = asdict(self)
        if not isinstance(d["target_modules"], str):
            d["target_modules"] = list(d["target_modules"])
        return d

    @classmethod
    def from_dict(cls, d):
        """Build from `to_dict` output. Raises ValueError naming unknown keys."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"LoraConfig.from_dict: unknown keys {unknown} (known: {sorted(names)})")
        return cls(**d)


# --------------------------------------------------------------------------- injection

def _matches(name, item):
    return name == item or name.endswith("." + item)


def find_target_modules(model, target_modules):
    """Names of the Linear modules of `model` selected by `target_modules` (see module docstring).

    Raises:
        ValueError: an item (or the regex) matches no Linear module (the message names it and lists
            the Linear modules that exist); the model already holds LoRA layers at those names.
    """
    mods = list(model.named_modules())
    lora_inside = [n for n, m in mods if isinstance(m, LoRALinear)]
    inside = lambda n: any(n.startswith(p + ".") for p in lora_inside)
    linears = [n for n, m in mods if isinstance(m, Linear) and not inside(n)]
    if isinstance(target_modules, str):
        pat = re.compile(target_modules)
        chosen = [n for n in linears if pat.fullmatch(n)]
        if not chosen:
            again = [n for n in lora_inside if pat.fullmatch(n)]
            raise ValueError(_no_match_msg(f"regular expression {target_modules!r}", linears, again))
        return chosen
    items = list(target_modules)
    missing = []
    for item in items:
        if not any(_matches(n, item) for n in linears):
            missing.append((item, [n for n in lora_inside if _matches(n, item)]))
    if missing:
        item, again = missing[0]
        more = f" (also unmatched: {[m[0] for m in missing[1:]]})" if len(missing) > 1 else ""
        raise ValueError(_no_match_msg(f"target module {item!r}", linears, again) + more)
    return [n for n in linears if any(_matches(n, item) for item in items)]


def _no_match_msg(what, linears, already):
    if already:
        return f"{what} matches only modules that already have LoRA: {already}; inject once"
    sample = linears[:6] + (["..."] if len(linears) > 6 else [])
    return f"{what} matches no Linear module of the model; Linear modules are e.g. {sample}"


def inject_lora(model, config, rng=None):
    """Replace each target Linear of `model` (in place) by a LoRALinear; return the names, in order.

    The LoRA factors are initialised from `rng` (default: `model.rng` when the model has one, so
    the adapter is reproducible from the model's seed), which also drives LoRA dropout.
    Raises:
        ValueError: an unmatched target (named); r > min(d_in, d_out) of a target (names the module
            and its shape); a target whose weight is shared with another parameter (tied, e.g.
            lm_head); enable_lora that does not divide a target's width.
    """
    if not isinstance(config, LoraConfig):
        raise TypeError(f"inject_lora: config must be a LoraConfig, got {type(config).__name__}")
    names = find_target_modules(model, config.target_modules)
    rng = rng if rng is not None else getattr(model, "rng", None)
    counts = {}
    for _, p in model.named_parameters(remove_duplicate=False):
        counts[id(p)] = counts.get(id(p), 0) + 1
    layers = []
    for name in names:
        lin = model.get_submodule(name)
        if counts[id(lin.weight)] > 1:
            raise ValueError(f"inject_lora: {name}.weight is shared with another parameter (tied "
                             "weights); merging LoRA into it would change both; leave it out of target_modules")
        d_out, d_in = lin.weight.shape
        if config.r > min(d_in, d_out):
            raise ValueError(f"inject_lora: r = {config.r} exceeds min(d_in, d_out) = {min(d_in, d_out)} "
                             f"of {name} (weight shape {(d_out, d_in)})")
        try:
            layer = LoRALinear(lin, config.r, config.lora_alpha, config.lora_dropout, config.use_rslora,
                               config.init_lora_weights, config.enable_lora, rng=rng)
        except ValueError as e:
            raise ValueError(f"inject_lora: cannot adapt {name}: {e}") from e
        layers.append((name, layer))
    for name, layer in layers:  # all checked before the model is touched
        _replace(model, name, layer)
    return names


def _replace(model, name, new):
    """model.set_submodule(name, new), keeping the child's place (so parameter order is unchanged)."""
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name)
    order = list(parent._modules)
    model.set_submodule(name, new)
    for k in order:
        parent._modules.move_to_end(k)


def mark_only_lora_as_trainable(model, bias="none"):
    """Freeze every parameter except lora_A/lora_B (loralib's helper; returns the model).

    bias: "none" (all biases frozen), "all" (every parameter named *bias trains, LayerNorm's too, as
    loralib does), "lora_only" (only the biases of LoRA layers train).
    """
    if bias not in _BIAS_MODES:
        raise ValueError(f"mark_only_lora_as_trainable: bias must be one of {_BIAS_MODES}, got {bias!r}")
    for name, p in model.named_parameters():
        p.requires_grad = _is_lora_key(name) or (bias == "all" and name.split(".")[-1] == "bias")
    if bias == "lora_only":
        for _, m in model.named_modules():
            if isinstance(m, LoRALinear) and m.bias is not None:
                m.bias.requires_grad = True
    return model


def lora_state_dict(model):
    """OrderedDict of copies of the LoRA tensors only (`...lora_A.weight`, `...lora_B.weight`)."""
    return OrderedDict((n, p.data.copy()) for n, p in model.named_parameters() if _is_lora_key(n))


def base_state_dict(model):
    """OrderedDict of the non-LoRA parameters (views, not copies): what the base fingerprint covers."""
    return OrderedDict((n, p.data) for n, p in model.named_parameters() if not _is_lora_key(n))


# --------------------------------------------------------------------------- the wrapper

class LoraModel(Module):
    """A GPT with LoRA layers injected (in place), frozen except for the adapters.

    Args:
        model: the GPT (any Module with Linear layers and a `forward`). It is modified in place.
        config: LoraConfig.
    Attributes:
        base_model: the wrapped model. peft_config: the LoraConfig. base_fingerprint: io.fingerprint
        of the non-LoRA parameters taken at construction. lora_module_names: the adapted modules.
        config, dtype, rng: the wrapped model's (rng drives dropout and LoRA dropout).
    Names are the wrapped model's own (no prefix): see the module docstring.
    """

    def __init__(self, model, config):
        super().__init__()
        if not isinstance(model, Module):
            raise TypeError(f"LoraModel: model must be a minilora Module, got {type(model).__name__}")
        self.base_model = model
        self.peft_config = config
        self.lora_module_names = inject_lora(model, config)
        mark_only_lora_as_trainable(model, config.bias)
        self.base_fingerprint = mio.fingerprint(base_state_dict(model))
        self.train(model.training)

    # ---- transparency: the wrapped model's names, attributes and calls --------------------------
    def named_modules(self, prefix=""):
        yield prefix, self
        yield from self.base_model.named_modules(prefix)

    def get_submodule(self, name):
        return self.base_model.get_submodule(name)

    def set_submodule(self, name, module):
        self.base_model.set_submodule(name, module)

    def __getattr__(self, name):  # only called when normal lookup fails
        base = self.__dict__.get("base_model")
        if base is None:
            raise AttributeError(name)
        return getattr(base, name)

    config = property(lambda self: self.base_model.config, doc="The wrapped model's config (GPTConfig).")
    dtype = property(lambda self: self.base_model.dtype, doc="The wrapped model's dtype.")

    @property
    def rng(self):
        """The wrapped model's generator (dropout, LoRA dropout)."""
        return self.base_model.rng

    def forward(self, *args, **kwargs):
        """Delegates to the wrapped model: `logits, loss = model(idx, targets=None)`."""
        return self.base_model(*args, **kwargs)

    def generate(self, *args, **kwargs):
        """Delegates to the wrapped model's generate."""
        return self.base_model.generate(*args, **kwargs)

    def load_state_dict(self, state, strict=True):
        """Module.load_state_dict, then re-take the base fingerprint (refused while merged)."""
        if self.is_merged:
            raise RuntimeError("LoraModel.load_state_dict: unmerge_adapter() first")
        out = super().load_state_dict(state, strict)
        self.base_fingerprint = mio.fingerprint(base_state_dict(self))
        return out

    # ---- LoRA layers ------------------------------------------------------------------------
    def lora_layers(self):
        """List of (name, LoRALinear)."""
        return [(n, m) for n, m in self.base_model.named_modules() if isinstance(m, LoRALinear)]

    def _layers_or_raise(self, what):
        layers = self.lora_layers()
        if not layers:
            raise RuntimeError(f"LoraModel.{what}: the model holds no LoRA layers (merge_and_unload "
                               "already ran?)")
        return layers

    @property
    def is_merged(self):
        """True if any LoRA layer is merged."""
        return any(m.merged for _, m in self.lora_layers())

    def trainable_parameters(self):
        """The Parameters with requires_grad (what the optimizer should update)."""
        return [p for p in self.parameters() if p.requires_grad]

    def named_trainable_parameters(self):
        """List of (name, Parameter) with requires_grad."""
        return [(n, p) for n, p in self.named_parameters() if p.requires_grad]

    def get_nb_trainable_parameters(self):
        """(trainable, all) scalar counts; a tied parameter counts once."""
        return self.num_parameters(trainable_only=True), self.num_parameters()

    def print_trainable_parameters(self):
        """Print `trainable params: N || all params: M || trainable%: P` (P with 4 decimals)."""
        t, a = self.get_nb_trainable_parameters()
        print(f"trainable params: {t} || all params: {a} || trainable%: {100.0 * t / a:.4f}")

    def merge_adapter(self):
        """Merge every LoRA layer (W <- W0 + ΔW); a merged layer warns and stays as it is."""
        for _, m in self._layers_or_raise("merge_adapter"):
            m.merge()

    def unmerge_adapter(self):
        """Unmerge every LoRA layer; a layer that is not merged warns and stays as it is."""
        for _, m in self._layers_or_raise("unmerge_adapter"):
            m.unmerge()

    @contextlib.contextmanager
    def disable_adapters(self):
        """Context manager: inside, the model computes exactly the base model (x W0ᵀ + b).

        Merged layers are unmerged on entry and merged again on exit (so, in float32, W0 inside is
        the unmerge result: equal to the base weights up to the rounding stated in layer.py).
        """
        layers = self._layers_or_raise("disable_adapters")
        remerge = [m for _, m in layers if m.merged]
        for m in remerge:
            m.unmerge()
        for _, m in layers:
            m.adapter_enabled = False
        try:
            yield self
        finally:
            for _, m in layers:
                m.adapter_enabled = True
            for m in remerge:
                m.merge()

    def merge_and_unload(self):
        """Merge every adapter and put a plain Linear (weight W0 + ΔW, same bias) in place of each
        LoRA layer; return the wrapped model, now a plain GPT with every parameter trainable.

        The GPT is changed in place (as PEFT does): this LoraModel holds no LoRA layers afterwards.
        """
        for name, m in self._layers_or_raise("merge_and_unload"):
            if not m.merged:
                m.merge()
            lin = Linear.__new__(Linear)
            Module.__init__(lin)
            lin.in_features, lin.out_features = m.in_features, m.out_features
            lin.weight = m.weight
            lin.bias = m.bias
            _replace(self.base_model, name, lin)
        self.base_model.requires_grad_(True)
        self.base_model.train(self.training)
        return self.base_model

    # ---- adapter files ----------------------------------------------------------------------
    def save_adapter(self, path):
        """Write `path/adapter_model.npz` (LoRA tensors, PEFT names) and `path/adapter_config.json`.

        The directory is created if needed; each file is written atomically. Works merged or not
        (the factors are stored, never ΔW).
        """
        self._layers_or_raise("save_adapter")
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        tensors = lora_state_dict(self)
        meta = dict(self.peft_config.to_dict(), peft_type="LORA", format_version=1,
                    base_model_fingerprint=self.base_fingerprint,
                    adapter_fingerprint=mio.fingerprint(tensors),
                    target_names=list(self.lora_module_names), dtype=str(self.dtype))
        mio.save_npz_atomic(path / ADAPTER_WEIGHTS_NAME, tensors)
        mio.save_json_atomic(path / ADAPTER_CONFIG_NAME, meta)

    def load_adapter(self, path):
        """Load an adapter written by `save_adapter` into this model's LoRA layers, bit for bit.

        The file's lora_alpha and use_rslora replace the layers' (scaling recomputed) and its
        lora_dropout theirs. Keys may carry PEFT's `base_model.model.` prefix.
        Raises:
            ValueError: missing or unexpected keys (named); a shape or dtype mismatch (names the key
                and both shapes); a .npz that does not belong to the .json (interrupted save).
            RuntimeError: a layer is merged (unmerge_adapter first).
        Warns:
            UserWarning: the adapter was trained on a base model with another fingerprint.
        """
        layers = self._layers_or_raise("load_adapter")
        if self.is_merged:
            raise RuntimeError("LoraModel.load_adapter: unmerge_adapter() first (the merged ΔW is "
                               "that of the current factors)")
        config, meta, tensors = _read_adapter(path)
        params = OrderedDict((n, p) for n, p in self.named_parameters() if _is_lora_key(n))
        missing = [k for k in params if k not in tensors]
        unexpected = [k for k in tensors if k not in params]
        if missing or unexpected:
            raise ValueError(f"load_adapter: {path}: missing keys {missing}, unexpected keys {unexpected}")
        for k, p in params.items():
            v = tensors[k]
            if v.shape != p.shape:
                raise ValueError(f"load_adapter: {k} has shape {v.shape} in the file but {p.shape} in the "
                                 f"model (file r = {config.r}, model r = {self.peft_config.r})")
            if v.dtype != p.dtype:
                raise ValueError(f"load_adapter: {k} has dtype {v.dtype} in the file but {p.dtype} in the model")
        fp = meta.get("base_model_fingerprint")
        if fp != self.base_fingerprint:
            warnings.warn(f"load_adapter: the adapter in {str(path)!r} was trained on a different base model "
                          f"(fingerprint {str(fp)[:12]}... vs this model's {self.base_fingerprint[:12]}...); "
                          "its outputs may be meaningless", UserWarning, stacklevel=2)
        for k, p in params.items():
            p.data = np.array(tensors[k], copy=True)
        for _, m in layers:
            m.set_scaling(config.lora_alpha, config.use_rslora)
            m.lora_dropout = config.lora_dropout
        cfg = self.peft_config.to_dict()
        cfg.update(lora_alpha=config.lora_alpha, use_rslora=config.use_rslora, lora_dropout=config.lora_dropout)
        self.peft_config = LoraConfig.from_dict(cfg)

    def extra_repr(self):
        return f"r={self.peft_config.r}, lora_alpha={self.peft_config.lora_alpha:g}, targets={len(self.lora_module_names)}"


def _read_adapter(path):
    """(LoraConfig, metadata dict, tensors dict with PEFT's prefix stripped) from an adapter directory."""
    path = Path(path)
    cfg_file, npz_file = path / ADAPTER_CONFIG_NAME, path / ADAPTER_WEIGHTS_NAME
    for f in (cfg_file, npz_file):
        if not f.exists():
            raise FileNotFoundError(f"load_adapter: {str(f)!r} not found (an adapter directory holds "
                                    f"{ADAPTER_CONFIG_NAME} and {ADAPTER_WEIGHTS_NAME})")
    meta = mio.load_json(cfg_file)
    if not isinstance(meta, dict):
        raise ValueError(f"load_adapter: {str(cfg_file)!r} does not hold a JSON object")
    if meta.get("peft_type", "LORA") != "LORA":
        raise ValueError(f"load_adapter: {str(cfg_file)!r} holds a {meta['peft_type']!r} adapter; only LORA "
                         "adapters can be loaded")
    if meta.get("format_version", 1) != 1:
        raise ValueError(f"load_adapter: {str(cfg_file)!r} has format_version {meta['format_version']!r}; this "
                         "minilora reads format_version 1")
    names = {f.name for f in fields(LoraConfig)}
    config = LoraConfig.from_dict({k: v for k, v in meta.items() if k in names})
    raw = mio.load_npz(npz_file)
    for k, v in raw.items():  # the file must agree with itself before it is compared with a model
        bad = v.ndim != 2 if k.endswith(("lora_A.weight", "lora_B.weight")) else False
        if not bad and k.endswith("lora_B.weight"):
            bad = v.shape[1] != config.r                               # B (W, r)
        if not bad and k.endswith("lora_A.weight"):
            bad = v.shape[0] % config.r != 0                           # A (g*r, d_in)
        if bad:
            raise ValueError(f"load_adapter: {str(path)!r} is inconsistent: {k} has shape {v.shape}, which "
                             f"does not fit the r = {config.r} of its {ADAPTER_CONFIG_NAME}")
        if "dtype" in meta and k.endswith(".weight") and str(v.dtype) != meta["dtype"]:
            raise ValueError(f"load_adapter: {str(path)!r} is inconsistent: {k} is {v.dtype} but its "
                             f"{ADAPTER_CONFIG_NAME} says dtype {meta['dtype']}")
    if meta.get("adapter_fingerprint") not in (None, mio.fingerprint(raw)):
        raise ValueError(f"load_adapter: {str(npz_file)!r} does not match {str(cfg_file)!r} (its "
                         "adapter_fingerprint differs: files from two different saves?)")
    tensors = OrderedDict((k[len(_PEFT_PREFIX):] if k.startswith(_PEFT_PREFIX) else k, v) for k, v in raw.items())
    return config, meta, tensors


def get_peft_model(model, config):
    """Inject LoRA into `model` (in place) per `config` and wrap it: returns a LoraModel."""
    return LoraModel(model, config)


def load_lora_model(base_model, path):
    """`get_peft_model(base_model, config from path)` then `load_adapter(path)`: a ready LoraModel."""
    config, _, _ = _read_adapter(path)
    model = LoraModel(base_model, config)
    model.load_adapter(path)
    return model
