"""LoRA: the hand-derived pass (functional), the layer (layer), the options (config), the variant hook
and init registry (variant), whole-model tooling (model) and adapter files (adapter_io); VeRA (vera),
named adapters and mixed batches (adapters), adapter combinations (combine); AdaLoRA (adalora,
rank_allocator)."""
from .adalora import AdaLoraConfig, AdaLoraModel
from .adapter_io import load_adapter, read_adapter, save_adapter
from .config import LoraConfig
from .functional import (
    lora_backward,
    lora_forward,
    lora_forward_reference,
    lora_groups,
    lora_merge_delta,
    lora_scaling,
)
from .layer import LoRAFactor, LoRAFunction, LoRALinear, lora_linear, lora_linear_composed
from .model import (
    LoraModel,
    adapter_parameters,
    base_state_dict,
    find_target_modules,
    get_peft_model,
    inject_lora,
    load_lora_model,
    lora_state_dict,
    mark_only_lora_as_trainable,
)
from .rank_allocator import RankAllocator
from .variant import LORA_INITS, VARIANTS, LoraVariant, get_init, get_variant, peft_model_class
from .vera import VeraConfig  # noqa: E402  (after variant: vera.py subclasses LoraVariant)

__all__ = ["lora_forward", "lora_backward", "lora_forward_reference", "lora_merge_delta", "lora_scaling",
           "lora_groups", "LoRAFunction", "LoRAFactor", "LoRALinear", "lora_linear", "lora_linear_composed",
           "LoraConfig", "LoraModel", "get_peft_model", "inject_lora", "find_target_modules",
           "mark_only_lora_as_trainable", "adapter_parameters", "lora_state_dict", "base_state_dict",
           "load_lora_model", "save_adapter", "read_adapter", "load_adapter",
           "LoraVariant", "VARIANTS", "LORA_INITS", "get_variant", "get_init", "VeraConfig", "peft_model_class",
           "AdaLoraConfig", "AdaLoraModel", "RankAllocator"]
