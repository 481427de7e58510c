"""Reference solution: the LoRA scaling, lora_alpha / r (or lora_alpha / sqrt(r) with rsLoRA)."""
import math


def lora_scaling(lora_alpha, r, use_rslora):
    """Reference solution of the `lora_scaling` exercise (see stubs/lora_scaling.py)."""
    return float(lora_alpha) / (math.sqrt(r) if use_rslora else r)
