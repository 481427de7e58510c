"""The QLoRA options of `minilora finetune` (kept here so the CLI module only calls them)."""
from __future__ import annotations

import argparse

__all__ = ["add_qlora_arguments", "qlora_usage_error"]


def add_qlora_arguments(p: argparse.ArgumentParser) -> None:
    """--quantize nf4, --double-quant / --no-double-quant (on by default, as QLoRA), --loftq."""
    p.add_argument("--quantize", choices=["nf4"], default=None,
                   help="QLoRA: store the frozen base's Linear weights in 4-bit NormalFloat (minilora.quant)")
    p.add_argument("--double-quant", action=argparse.BooleanOptionalAction, default=True,
                   help="with --quantize: also quantize the block constants to 8 bits (QLoRA's default: on)")
    p.add_argument("--loftq", action="store_true",
                   help="with --quantize: LoftQ start (init_lora_weights='loftq'): A, B from the SVD of W - nf4(W)")


def qlora_usage_error(args: argparse.Namespace) -> str | None:
    """The message for an impossible combination of options, or None."""
    if args.full and args.quantize:
        return "--quantize is QLoRA: a 4-bit base is frozen, so it cannot be combined with --full"
    if args.loftq and not args.quantize:
        return "--loftq initialises LoRA for a quantized base: add --quantize nf4"
    return None
