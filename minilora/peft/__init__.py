"""The methods the LoRA paper compares against (its §5.1 baselines), on the same footing as LoRA.

    method name         config                  paper
    "adapter_h"         AdapterConfig("houlsby") Houlsby et al. 2019        (Adapter^H)
    "adapter_l"         AdapterConfig("lin")     Lin et al. 2020            (Adapter^L)
    "prefix_layer"      PrefixTuningConfig       Li & Liang 2021            (PreLayer)
    "prefix_embedding"  PrefixEmbeddingConfig    Li & Liang 2021, §7.2      (PreEmbed)
    "prompt_tuning"     PromptTuningConfig       Lester et al. 2021
    "bitfit"            BitFitConfig             Ben Zaken et al. 2021      (BitFit)
    "ia3"               IA3Config                Liu et al. 2022            ((IA)^3)

`get_peft_model(gpt, config)` accepts any of these configs (and a `lora.LoraConfig`, handed to
`lora.get_peft_model`); `load_peft_model(gpt, path)` rebuilds a model from an adapter directory.
`METHODS` is the one registry: name -> (config class, fixed config fields, model class).
Each method's op has a hand-derived backward and a composed twin: `adapters.adapter`,
`prefix_attention.prefix_attention`, `prompt.prepend_prompt`, `ia3.ia3_linear` (BitFit's bias
gradient is `ops.Linear`'s / `ops.LayerNorm`'s own db).
"""
from __future__ import annotations

from dataclasses import fields
from os import PathLike
from typing import Any

from ..lora import LoraConfig
from ..lora import get_peft_model as _lora_get_peft_model
from .config import (
    AdapterConfig,
    BitFitConfig,
    IA3Config,
    PrefixEmbeddingConfig,
    PrefixTuningConfig,
    PromptTuningConfig,
)
from .methods import AdapterModel, BitFitModel, IA3Model, PrefixTuningModel, PromptModel
from .model import PeftModel, read_peft_adapter

__all__ = ["METHODS", "make_config", "get_peft_model", "load_peft_model", "PeftModel", "AdapterConfig",
           "PrefixTuningConfig", "PrefixEmbeddingConfig", "PromptTuningConfig", "BitFitConfig", "IA3Config"]

METHODS: dict[str, tuple[type, dict[str, Any], type]] = {
    "adapter_h": (AdapterConfig, {"adapter_type": "houlsby"}, AdapterModel),
    "adapter_l": (AdapterConfig, {"adapter_type": "lin"}, AdapterModel),
    "prefix_layer": (PrefixTuningConfig, {}, PrefixTuningModel),
    "prefix_embedding": (PrefixEmbeddingConfig, {}, PromptModel),
    "prompt_tuning": (PromptTuningConfig, {}, PromptModel),
    "bitfit": (BitFitConfig, {}, BitFitModel),
    "ia3": (IA3Config, {}, IA3Model),
}

_BY_CONFIG = {AdapterConfig: AdapterModel, PrefixTuningConfig: PrefixTuningModel, PrefixEmbeddingConfig: PromptModel,
              PromptTuningConfig: PromptModel, BitFitConfig: BitFitModel, IA3Config: IA3Model}
_BY_TYPE = {cls.peft_type: cls for cls in _BY_CONFIG}


def make_config(method: str, **fields: Any):
    """The config of a method of METHODS with some fields set, e.g. make_config("adapter_l", bottleneck_size=4).

    Raises: ValueError naming the known methods; the config's own errors.
    """
    if method not in METHODS:
        raise ValueError(f"unknown PEFT method {method!r}; known: {sorted(METHODS)}")
    cls, fixed, _ = METHODS[method]
    return cls(**{**fields, **fixed})


def get_peft_model(model, config, rng=None):
    """Adapt `model` (a GPT, changed in place) per `config`: a PeftModel (a LoraModel for a LoraConfig).

    Raises: TypeError for an unknown config type; the method's ValueErrors.
    """
    if isinstance(config, LoraConfig):
        return _lora_get_peft_model(model, config)
    cls = _BY_CONFIG.get(type(config))
    if cls is None:
        raise TypeError(f"get_peft_model: config must be one of {[c.__name__ for c in _BY_CONFIG]} or a "
                        f"LoraConfig, got {type(config).__name__}")
    return cls(model, config, rng)


def load_peft_model(model, path: str | PathLike) -> PeftModel:
    """`get_peft_model(model, config from path)` then `load_adapter(path)`.

    A prefix or prompt trained with the reparameterisation MLP is rebuilt without it (the file holds
    the MLP's output, as PEFT's). Raises: ValueError for an unknown or a LoRA peft_type (use
    lora.load_lora_model), and the file errors of `read_peft_adapter`.
    """
    meta, _ = read_peft_adapter(path)
    cls = _BY_TYPE.get(meta["peft_type"])
    if cls is None:
        raise ValueError(f"load_peft_model: {str(path)!r} holds a {meta['peft_type']!r} adapter; known: "
                         f"{sorted(_BY_TYPE)} (LORA: minilora.lora.load_lora_model)")
    names = {f.name for f in fields(cls)}
    config = cls.from_dict({k: v for k, v in meta.items() if k in names})
    if getattr(config, "prefix_projection", False):
        config = config.replace(prefix_projection=False)
    peft_model = get_peft_model(model, config)
    peft_model.load_adapter(path)
    return peft_model
