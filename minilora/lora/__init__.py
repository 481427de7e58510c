"""LoRA: the hand-derived pass (functional), the layer (layer), and whole-model tooling (model)."""
from .functional import lora_backward, lora_forward, lora_forward_reference, lora_merge_delta
from .layer import LoRAFactor, LoRAFunction, LoRALinear, lora_linear, lora_linear_composed
from .model import (
    LoraConfig,
    LoraModel,
    base_state_dict,
    find_target_modules,
    get_peft_model,
    inject_lora,
    load_lora_model,
    lora_state_dict,
    mark_only_lora_as_trainable,
)

__all__ = ["lora_forward", "lora_backward", "lora_forward_reference", "lora_merge_delta",
           "LoRAFunction", "LoRAFactor", "LoRALinear", "lora_linear", "lora_linear_composed",
           "LoraConfig", "LoraModel", "get_peft_model", "inject_lora", "find_target_modules",
           "mark_only_lora_as_trainable", "lora_state_dict", "base_state_dict", "load_lora_model"]
