"""The exercises: for each one, the input strategy, the hand-picked edge cases and the mistake-spotting hint.

One module per lesson group (`engine`, `lora`, `rank`, `many_adapters`, `quant`, `adalora`, `interop`,
`peft_methods`, `family`); `ORDER` is the suggested order of work (see README.md). A new exercise goes into
the module of its topic (or a new one listed here) and into ORDER.
"""
from __future__ import annotations

from . import adalora, engine, family, interop, lora, many_adapters, peft_methods, quant, rank

ORDER = (
    "lora_param_count",
    "lora_scaling",
    "lora_forward",
    "merge",
    "unmerge",
    "softmax_forward",
    "broadcast_add_backward",
    "softmax_backward",
    "cross_entropy_backward",
    "lora_backward",
    "layer_norm_backward",
    "attention_backward",
    "choose_rank",
    "effective_rank",
    "subspace_similarity",
    "vera_param_count",
    "mixed_batch_forward",
    "nf4_levels",
    "blockwise_absmax_quantize",
    "double_quant_bits_per_param",
    "adalora_importance",
    "fused_qv_to_peft",
    "adapter_backward",
    "prefix_attention_mask",
    "dora_backward",
    "pissa_init",
    "loraplus_lrs",
)

_MODULES = (engine, lora, rank, many_adapters, quant, adalora, interop, peft_methods, family)
_BY_NAME = {ex.name: ex for module in _MODULES for ex in module.EXERCISES}
if sorted(_BY_NAME) != sorted(ORDER):  # pragma: no cover - a contributor's slip, caught on import
    raise RuntimeError(f"exercise catalog and ORDER disagree: {sorted(set(_BY_NAME) ^ set(ORDER))}")
CATALOG = tuple(_BY_NAME[name] for name in ORDER)
