"""PEFT's `adapter_config.json` <-> minilora's `LoraConfig`: every PEFT LoraConfig field has a fate.

PEFT (huggingface/peft, `peft/tuners/lora/config.py`, version 0.21) writes each field of its
LoraConfig. Reading one here, each field is in exactly one of four groups, so none is ever dropped
silently:

  HONOURED       mapped onto minilora's LoraConfig: r, lora_alpha, lora_dropout, target_modules,
                 exclude_modules, bias, use_rslora, rank_pattern, alpha_pattern,
                 layers_to_transform, layers_pattern, init_lora_weights (starts that leave W0 as
                 it is), use_dora (-> variant "dora", only when `variant.VARIANTS` has one).
  METADATA       change nothing minilora computes: peft_type (must be "LORA"), task_type (None or
                 "CAUSAL_LM"), base_model_name_or_path, revision, inference_mode, auto_mapping,
                 peft_version, runtime_config, fan_in_fan_out (how the BASE stores its weights:
                 True for GPT-2's Conv1D; the LoRA factors are (r, d_in) and (d_out, r) either
                 way), megatron_core and qalora_group_size (read only with megatron_config /
                 use_qalora), eva_config (an init-time option of init_lora_weights="eva").
  DEFAULT ONLY   features minilora does not have: accepted at PEFT's default (None, False, {}, []),
                 refused with a ValueError naming the field otherwise.
  anything else  unknown: refused with a ValueError naming it.

init_lora_weights values that change W0 when PEFT builds the adapter (PiSSA, OLoRA, CorDA, LoftQ,
LoRA-GA) are refused: their factors only make sense on PEFT's modified base.

Writing (`to_peft_dict`), minilora writes only fields PEFT knows, with PEFT's types; its own
fields go to a side file (`adapter_io.MINILORA_META_NAME`), because PEFT warns about unknown keys.
"""
from __future__ import annotations

from typing import Any

from .config import LoraConfig

__all__ = ["PEFT_HONOURED", "PEFT_METADATA", "PEFT_DEFAULT_ONLY", "PEFT_FIELDS", "from_peft_dict", "to_peft_dict"]

PEFT_HONOURED = ("r", "lora_alpha", "lora_dropout", "target_modules", "exclude_modules", "bias", "use_rslora",
                 "rank_pattern", "alpha_pattern", "layers_to_transform", "layers_pattern", "init_lora_weights",
                 "use_dora")
PEFT_METADATA = ("peft_type", "task_type", "base_model_name_or_path", "revision", "inference_mode", "auto_mapping",
                 "peft_version", "runtime_config", "fan_in_fan_out", "megatron_core", "qalora_group_size",
                 "eva_config")
# field -> the values that mean "not used" (PEFT's default, and its empty equivalents)
PEFT_DEFAULT_ONLY: dict[str, tuple] = {
    "modules_to_save": (None, []), "megatron_config": (None,), "trainable_token_indices": (None, [], {}),
    "loftq_config": ({}, None), "corda_config": (None,), "lora_ga_config": (None,), "velora_config": (None,),
    "alora_invocation_tokens": (None, []), "use_qalora": (False,), "monteclora_config": (None,),
    "layer_replication": (None, []), "lora_bias": (False,), "target_parameters": (None, []),
    "use_bdlora": (None, False), "arrow_config": (None,), "kasa_config": (None,), "ensure_weight_tying": (False,),
}
PEFT_FIELDS = PEFT_HONOURED + PEFT_METADATA + tuple(PEFT_DEFAULT_ONLY)
_BASE_CHANGING_INITS = ("pissa", "olora", "corda", "loftq", "lora_ga")
# PEFT's target_modules default for GPT-2 (peft.utils.constants, TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING)
_GPT2_DEFAULT_TARGETS = ("c_attn",)


def from_peft_dict(d: dict[str, Any], where: str = "adapter_config.json") -> LoraConfig:
    """A minilora LoraConfig from a PEFT adapter_config.json dict (the groups of the module docstring).

    Args: d: the parsed JSON. where: the file, for messages.
    Returns: LoraConfig (fields as PEFT's; target_modules None becomes GPT-2's PEFT default ["c_attn"]).
    Raises: ValueError naming every field that is unknown, or set to a feature minilora lacks
        (use_dora without a registered "dora" variant, modules_to_save, lora_bias, a base-changing
        init, another task_type or peft_type), and the LoraConfig checks of the values.
    """
    from .variant import LORA_INITS, VARIANTS  # variant.py imports config.py

    if not isinstance(d, dict):
        raise ValueError(f"load_adapter: {where} does not hold a JSON object")
    problems = []
    unknown = sorted(set(d) - set(PEFT_FIELDS))
    if unknown:
        problems.append(f"unknown fields {unknown} (not PEFT LoraConfig fields minilora knows; if PEFT wrote them "
                        "at their defaults, delete them)")
    if d.get("peft_type", "LORA") != "LORA":
        problems.append(f"peft_type = {d['peft_type']!r} (only LORA adapters load here)")
    if d.get("task_type") not in (None, "CAUSAL_LM"):
        problems.append(f"task_type = {d['task_type']!r} (minilora's GPT is a causal LM: CAUSAL_LM or null)")
    for name, allowed in PEFT_DEFAULT_ONLY.items():
        if name in d and d[name] not in allowed:
            problems.append(f"{name} = {d[name]!r} (minilora has no such feature; only {allowed[0]!r} is accepted)")
    init = d.get("init_lora_weights", True)
    if isinstance(init, str) and init.lower().startswith(_BASE_CHANGING_INITS):
        problems.append(f"init_lora_weights = {init!r} (PEFT changed the base weights W0 for it; convert the "
                        "adapter to a plain LoRA with PEFT's path_initial_model_for_weight_conversion first)")
    variant = "lora"
    if d.get("use_dora", False):
        if "dora" in VARIANTS:
            variant = "dora"
        else:
            problems.append("use_dora = True (no 'dora' variant is registered in minilora.lora.variant.VARIANTS)")
    if problems:
        raise ValueError(f"load_adapter: {where}: cannot load this PEFT adapter faithfully: " + "; ".join(problems))
    targets = d.get("target_modules")
    if targets is None:
        targets = list(_GPT2_DEFAULT_TARGETS)
    kwargs = dict(r=d.get("r", 8), lora_alpha=d.get("lora_alpha", 8), lora_dropout=d.get("lora_dropout", 0.0),
                  target_modules=targets, use_rslora=d.get("use_rslora", False), bias=d.get("bias", "none"),
                  rank_pattern=d.get("rank_pattern") or {}, alpha_pattern=d.get("alpha_pattern") or {},
                  layers_to_transform=d.get("layers_to_transform"), layers_pattern=d.get("layers_pattern"),
                  exclude_modules=d.get("exclude_modules"), variant=variant,
                  # the factors are loaded: the start only matters if someone re-initialises
                  init_lora_weights=init if (isinstance(init, bool) or init in LORA_INITS) else True)
    try:
        return LoraConfig(**kwargs)
    except (TypeError, ValueError) as e:
        raise ValueError(f"load_adapter: {where}: {e}") from e


def to_peft_dict(config: LoraConfig, base_model_name_or_path: str | None = None) -> dict[str, Any]:
    """PEFT's adapter_config.json for `config` (fields PEFT's LoraConfig reads without a warning).

    fan_in_fan_out is True: GPT-2's targets are Conv1D in transformers (PEFT would set it itself,
    with a warning). init_lora_weights that PEFT does not know is written as True (the factors are
    in the file); PiSSA / OLoRA (variant "residual") keep their name, because their factors apply to
    PEFT's residual W0 − s·B₀A₀, not to W0 (`lora/pissa.py`). use_dora is the config's. The caller
    puts the rank_pattern / alpha_pattern of exported fused layers in `config` first (`adapter_io`).
    """
    tm = config.target_modules if isinstance(config.target_modules, str) else list(config.target_modules)
    init = config.init_lora_weights
    if not (init in (True, False, "gaussian") or config.variant == "residual"):
        init = True       # a start PEFT does not know; PiSSA/OLoRA stay named: their factors need PEFT's W_res
    return {"peft_type": "LORA", "task_type": "CAUSAL_LM", "base_model_name_or_path": base_model_name_or_path,
            "revision": None, "inference_mode": True, "r": config.r, "lora_alpha": config.lora_alpha,
            "lora_dropout": config.lora_dropout, "target_modules": tm, "exclude_modules": config.exclude_modules,
            "fan_in_fan_out": True, "bias": config.bias, "use_rslora": config.use_rslora, "modules_to_save": None,
            "init_lora_weights": init, "layers_to_transform": config.layers_to_transform,
            "layers_pattern": config.layers_pattern, "rank_pattern": dict(config.rank_pattern),
            "alpha_pattern": dict(config.alpha_pattern), "use_dora": bool(getattr(config, "use_dora", False))}
