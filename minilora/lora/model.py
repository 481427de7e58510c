"""LoRA on a whole model: config, injection, freezing, merging, adapter files (PEFT's vocabulary).

    config = LoraConfig(r=4, lora_alpha=8, target_modules=("c_attn",))
    model = get_peft_model(GPT(GPTConfig(...)), config)     # LoraModel; the GPT is changed in place
    model.print_trainable_parameters()
    ... train with AdamW(model.trainable_parameters()) ...
    model.save_adapter("out/adapter")     # adapter_model.safetensors + adapter_config.json (PEFT loads both)
    gpt = model.merge_and_unload()                           # a plain GPT, no LoRA layers left

Names. `LoraModel` is transparent: `named_parameters()` / `state_dict()` give the GPT's own names
(`transformer.h.0.attn.c_attn.weight`, `...c_attn.lora_A.weight`), with no `base_model.model.`
prefix (PEFT puts one in memory and in its files: `save_adapter` writes it, `load_adapter` strips it). The GPT is
stored as `LoraModel.base_model`; `LoraModel.config` is the GPT's config and `LoraModel.peft_config`
the LoraConfig.

Matching `target_modules` (PEFT's rule): a list item matches a module whose full name equals it or
ends with "." + item (so "c_attn" and "attn.c_attn" match `transformer.h.0.attn.c_attn`, "tn.c_attn"
does not); a single string is a regular expression that must match the full name. Only `Linear`
modules are eligible. An item that matches nothing is an error naming it, even if others matched.

Adapter files (a directory PEFT loads as it is) are read and written by `lora/adapter_io.py`: the
LoRA tensors of this LoraModel's own layers, plus the biases it trains (bias="lora_only" or "all"),
under PEFT's key names in adapter_model.safetensors, PEFT's adapter_config.json, and minilora's own
fields (LoraConfig, fingerprints of the base and of the tensors) in minilora_adapter.json.

Several LoraModels on one GPT (two `get_peft_model` calls with different targets) each own the layers
they injected (`lora_module_names`): `lora_layers`, merging, saving and loading act on those only.

The base fingerprint is taken when the LoraModel is built (and again after `load_state_dict`), not
from the current weights, because merge/unmerge round trips change W0 by rounding (layer.py).
"""
from __future__ import annotations

import contextlib
import re
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from os import PathLike
from typing import Any

import numpy as np

from .. import io as mio
from ..nn.layers import Linear
from ..nn.module import ModelWrapper, Module, Parameter
from . import adapter_io
from .adapter_io import ADAPTER_CONFIG_NAME, ADAPTER_WEIGHTS_NAME
from .adapters import DEFAULT_ADAPTER, NamedAdaptersMixin
from .config import BIAS_MODES, LoraConfig
from .layer import LoRALinear

__all__ = ["LoraConfig", "inject_lora", "find_target_modules", "mark_only_lora_as_trainable",
           "adapter_parameters", "lora_state_dict", "base_state_dict", "LoraModel", "get_peft_model",
           "load_lora_model", "ADAPTER_CONFIG_NAME", "ADAPTER_WEIGHTS_NAME"]


def adapter_parameters(model: Module, layer_names: Sequence[str] | None = None) -> OrderedDict[str, Parameter]:
    """Full name -> Parameter of the adapter parameters (each layer's `variant.adapter_keys`) of the
    LoRA layers of `model`, in model order; only the layers named in `layer_names` when given."""
    out = OrderedDict()
    keep = None if layer_names is None else set(layer_names)
    for name, m in model.named_modules():
        if isinstance(m, LoRALinear) and (keep is None or name in keep):
            for key in m.variant.adapter_keys:
                out[f"{name}.{key}" if name else key] = m.get_parameter(key)
    return out


# --------------------------------------------------------------------------- injection

def _matches(name, item):
    return name == item or name.endswith("." + item)


def find_target_modules(model: Module, target_modules: Sequence[str] | str) -> list[str]:
    """Names of the Linear modules of `model` selected by `target_modules` (see module docstring).

    Raises:
        ValueError: an item (or the regex) matches no Linear module (the message names it and lists
            the Linear modules that exist); the model already holds LoRA layers at those names.
    """
    mods = list(model.named_modules())
    lora_inside = [n for n, m in mods if isinstance(m, LoRALinear)]
    linears = [n for n, m in mods if isinstance(m, Linear) and not any(n.startswith(p + ".") for p in lora_inside)]
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


def inject_lora(model: Module, config: LoraConfig, rng: np.random.Generator | int | None = None) -> list[str]:
    """Replace each target Linear of `model` (in place) by a LoRALinear; return the names, in order.

    The LoRA factors are initialised from `rng` (default: `model.rng` when the model has one, so
    the adapter is reproducible from the model's seed), which also drives LoRA dropout.
    Each layer gets `config.for_module(name)` (PEFT's rank_pattern / alpha_pattern); targets that
    `config.selects` leaves out (exclude_modules, layers_to_transform) are skipped.
    Raises:
        ValueError: an unmatched target (named); no target left; r > min(d_in, d_out) of a target (names the module
            and its shape); a target whose weight is shared with another parameter (tied, e.g.
            lm_head); enable_lora that does not divide a target's width.
    """
    if not isinstance(config, LoraConfig):
        raise TypeError(f"inject_lora: config must be a LoraConfig, got {type(config).__name__}")
    found = find_target_modules(model, config.target_modules)
    names = [n for n in found if config.selects(n)]         # exclude_modules, layers_to_transform
    if not names:
        raise ValueError(f"inject_lora: exclude_modules / layers_to_transform leave none of the targets {found[:6]}")
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
        own = config.for_module(name)                          # rank_pattern / alpha_pattern
        if own.r > min(d_in, d_out):
            raise ValueError(f"inject_lora: r = {own.r} exceeds min(d_in, d_out) = {min(d_in, d_out)} "
                             f"of {name} (weight shape {(d_out, d_in)})")
        try:
            layer = LoRALinear.from_config(lin, own, rng=rng)
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


def trained_bias_names(model: Module, bias: str, layer_names: Sequence[str] | None = None) -> list[str]:
    """Names of the biases that train under `bias` (as `mark_only_lora_as_trainable` sets them).

    "none": []; "all": every parameter named *bias (LayerNorm's too); "lora_only": the biases of
    the LoRA layers (only those in `layer_names` when given).
    """
    if bias not in BIAS_MODES:
        raise ValueError(f"bias must be one of {BIAS_MODES}, got {bias!r}")
    if bias == "all":
        return [n for n, _ in model.named_parameters() if n.split(".")[-1] == "bias"]
    if bias == "none":
        return []
    keep = None if layer_names is None else set(layer_names)
    return [f"{n}.bias" if n else "bias" for n, m in model.named_modules()
            if isinstance(m, LoRALinear) and m.bias is not None and (keep is None or n in keep)]


def mark_only_lora_as_trainable(model: Module, bias: str = "none") -> Module:
    """Freeze every parameter except the adapters (lora_A/lora_B; loralib's helper; returns the model).

    bias: "none" (all biases frozen), "all" (every parameter named *bias trains, LayerNorm's too, as
    loralib does), "lora_only" (only the biases of LoRA layers train).
    """
    if bias not in BIAS_MODES:
        raise ValueError(f"mark_only_lora_as_trainable: bias must be one of {BIAS_MODES}, got {bias!r}")
    train = set(adapter_parameters(model)) | set(trained_bias_names(model, bias))
    for name, p in model.named_parameters():
        p.requires_grad = name in train
    return model


def lora_state_dict(model: Module) -> OrderedDict[str, np.ndarray]:
    """OrderedDict of copies of the adapter tensors only (`...lora_A.weight`, `...lora_B.weight`)."""
    return OrderedDict((n, p.data.copy()) for n, p in adapter_parameters(model).items())


def base_state_dict(model: Module) -> OrderedDict[str, np.ndarray]:
    """OrderedDict of the non-adapter parameters (views, not copies): what the base fingerprint covers."""
    adapters = adapter_parameters(model)
    return OrderedDict((n, p.data) for n, p in model.named_parameters() if n not in adapters)


# --------------------------------------------------------------------------- the wrapper

class LoraModel(NamedAdaptersMixin, ModelWrapper):
    """A GPT with LoRA layers injected (in place), frozen except for the adapters.

    Args:
        model: the GPT (any Module with Linear layers and a `forward`). It is modified in place.
        config: LoraConfig.
        adapter_name: the name of this first adapter ("default", as in PEFT); more adapters with
            `add_adapter`, `set_adapter`, `delete_adapter`, `add_weighted_adapter` (lora/adapters.py).
    Attributes:
        base_model: the wrapped model. peft_config: the LoraConfig. base_fingerprint: io.fingerprint
        of the non-LoRA parameters taken at construction. lora_module_names: the adapted modules.
        config, dtype, rng: the wrapped model's (rng drives dropout and LoRA dropout).
    Names are the wrapped model's own (no prefix): see the module docstring.
    """

    def __init__(self, model: Module, config: LoraConfig, adapter_name: str = DEFAULT_ADAPTER):
        super().__init__()
        if adapter_name != DEFAULT_ADAPTER:
            from .adapters import _check_name

            object.__setattr__(self, "_active_adapter", _check_name(adapter_name))
        if not isinstance(model, Module):
            raise TypeError(f"LoraModel: model must be a minilora Module, got {type(model).__name__}")
        self.base_model = model
        self.peft_config = config
        self.lora_module_names = inject_lora(model, config)
        for variant in dict.fromkeys(m.variant for _, m in self.lora_layers()):
            variant.prepare_model(self)                  # e.g. VeRA's shared projections
        mark_only_lora_as_trainable(model, config.bias)
        self.base_fingerprint = mio.fingerprint(base_state_dict(model))
        self.train(model.training)

    # ---- the wrapped model's names, attributes and calls: nn.ModelWrapper ---------------------
    def forward(self, *args: Any, adapter_names: Sequence[str] | None = None, **kwargs: Any) -> Any:
        """Delegates to the wrapped model: `logits, loss = model(idx, targets=None)`.

        adapter_names: one adapter name per batch row (a mixed-adapter batch, inference only:
        `NamedAdaptersMixin.mixed_batch`), or None for the active adapter.
        """
        if adapter_names is None:
            return self.base_model(*args, **kwargs)
        with self.mixed_batch(adapter_names):
            return self.base_model(*args, **kwargs)

    def generate(self, *args: Any, **kwargs: Any) -> np.ndarray:
        """Delegates to the wrapped model's generate."""
        return self.base_model.generate(*args, **kwargs)

    def load_state_dict(self, state: Mapping[str, np.ndarray],
                        strict: bool = True) -> tuple[list[str], list[str]]:
        """Module.load_state_dict, then re-take the base fingerprint (refused while merged)."""
        if self.is_merged:
            raise RuntimeError("LoraModel.load_state_dict: unmerge_adapter() first")
        out = super().load_state_dict(state, strict)
        self.base_fingerprint = mio.fingerprint(base_state_dict(self))
        return out

    # ---- LoRA layers ------------------------------------------------------------------------
    def lora_layers(self) -> list[tuple[str, LoRALinear]]:
        """List of (name, LoRALinear): the layers this LoraModel injected (not another's on the same GPT)."""
        own = set(self.lora_module_names)
        return [(n, m) for n, m in self.base_model.named_modules() if isinstance(m, LoRALinear) and n in own]

    def _layers_or_raise(self, what):
        layers = self.lora_layers()
        if not layers:
            raise RuntimeError(f"LoraModel.{what}: the model holds no LoRA layers (merge_and_unload "
                               "already ran?)")
        return layers

    @property
    def is_merged(self) -> bool:
        """True if any LoRA layer is merged."""
        return any(m.merged for _, m in self.lora_layers())

    def training_callbacks(self) -> list:
        """Objects for `train(..., callbacks=)` that this model needs each step (none for plain LoRA)."""
        return []

    def merge_adapter(self) -> None:
        """Merge every LoRA layer (W <- W0 + ΔW); a merged layer warns and stays as it is."""
        for _, m in self._layers_or_raise("merge_adapter"):
            m.merge()

    def unmerge_adapter(self) -> None:
        """Unmerge every LoRA layer; a layer that is not merged warns and stays as it is."""
        for _, m in self._layers_or_raise("unmerge_adapter"):
            m.unmerge()

    @contextlib.contextmanager
    def disable_adapters(self) -> Iterator[LoraModel]:
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

    def merge_and_unload(self) -> Module:
        """Merge every adapter and put a plain Linear (weight W0 + ΔW, same bias) in place of each
        LoRA layer; return the wrapped model, now a plain GPT with every parameter trainable.

        The GPT is changed in place (as PEFT does): this LoraModel holds no LoRA layers afterwards.
        """
        for name, m in self._layers_or_raise("merge_and_unload"):
            if not m.merged:
                m.merge()
            _replace(self.base_model, name, Linear.from_parameters(m.weight, m.bias))
        self.base_model.requires_grad_(True)
        self.base_model.train(self.training)
        self.__dict__.pop("_adapter_slots", None)       # other named adapters go too (their W0 is gone)
        return self.base_model

    # ---- adapter files (lora/adapter_io.py) -------------------------------------------------
    def save_adapter(self, path: str | PathLike, base_model_name_or_path: str | None = None) -> list[str]:
        """Write this model's adapter to the directory `path` (a folder PEFT loads as it is): see
        `adapter_io.save_adapter`; returns its notes on exports PEFT needs in another form.

        With several named adapters (or one not named "default"): "default" at `path`, each other
        adapter in `path/<name>` (PEFT's layout; lora/adapters.py); then no notes are returned."""
        if len(self._slots()) > 1 or self.active_adapter != DEFAULT_ADAPTER:
            self._save_all(path)
            return []
        return adapter_io.save_adapter(self, path, base_model_name_or_path)

    def load_adapter(self, path: str | PathLike, adapter_name: str | None = None) -> None:
        """Load an adapter folder (minilora's, bit for bit, or PEFT's) into this model: see
        `adapter_io.load_adapter` (its errors and warnings). adapter_name: load it as that named
        adapter instead of the active one (created from the file's config if absent)."""
        if adapter_name is not None and adapter_name != self.active_adapter:
            self._load_named(path, adapter_name)
        else:
            adapter_io.load_adapter(self, path)

    def extra_repr(self) -> str:
        cfg = self.peft_config
        return f"r={cfg.r}, lora_alpha={cfg.lora_alpha:g}, targets={len(self.lora_module_names)}"


def get_peft_model(model: Module, config: LoraConfig, adapter_name: str = DEFAULT_ADAPTER) -> LoraModel:
    """Inject LoRA into `model` (in place) per `config` and wrap it: returns a LoraModel (or the
    subclass the config's variant names, e.g. AdaLoraModel: `variant.peft_model_class`) whose adapter
    is named `adapter_name`."""
    from .variant import peft_model_class  # variant.py imports the layer, which imports config

    return peft_model_class(config.variant)(model, config, adapter_name)


def load_lora_model(base_model: Module, path: str | PathLike, adapter_name: str = DEFAULT_ADAPTER) -> LoraModel:
    """`get_peft_model(base_model, config from path)` then `load_adapter(path)`: a ready LoraModel
    (its adapter named `adapter_name`; more with `model.load_adapter(path2, adapter_name=...)`)."""
    config, _, _ = adapter_io.read_adapter(path)
    model = get_peft_model(base_model, config, adapter_name)
    model.load_adapter(path)
    return model
