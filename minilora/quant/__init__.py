"""minilora.quant: QLoRA's 4-bit NormalFloat base and LoftQ, from first principles in NumPy.

nf4.py     the NF4 levels (QLoRA §3 eq. 4), block-wise absmax, packing, double quantization
linear.py  NF4Weight (a frozen 4-bit weight), QuantLinear, quantize_model, merging into a 4-bit base
loftq.py   LoftQ initialisation (arXiv:2310.08659)
"""
from .linear import (
                     NF4LinearFunction,
                     NF4Weight,
                     QuantLinear,
                     base_memory,
                     memory_lines,
                     merge_and_unload_quantized,
                     quantize_model,
                     quantized_layers,
)
from .loftq import LoftQConfig, init_loftq, loftq_decompose, replace_lora_weights_loftq
from .nf4 import (
                     LEVELS,
                     NF4_BNB,
                     QuantState,
                     dynamic_map_8bit,
                     fp4_levels,
                     int4_levels,
                     nf4_levels,
                     pack_4bit,
                     quantization_error,
                     quantize_4bit,
                     quantize_blockwise,
                     unpack_4bit,
)

__all__ = ["LEVELS", "NF4_BNB", "QuantState", "dynamic_map_8bit", "fp4_levels", "int4_levels", "nf4_levels",
           "pack_4bit", "quantization_error", "quantize_4bit", "quantize_blockwise", "unpack_4bit",
           "NF4LinearFunction", "NF4Weight", "QuantLinear", "base_memory", "memory_lines", "merge_and_unload_quantized",
           "quantize_model", "quantized_layers", "LoftQConfig", "init_loftq", "loftq_decompose",
           "replace_lora_weights_loftq"]
