"""The LoRA-family options of `minilora finetune` (kept here so the CLI module only calls them):
PEFT's switches for DoRA (`--use-dora`, `--variant dora_exact`), PiSSA / OLoRA (`--init-lora-weights`)
and LoRA+ (`--loraplus-lr-ratio`)."""
from __future__ import annotations

import argparse
import math

__all__ = ["add_lora_family_arguments", "lora_family_options", "lora_family_usage_error"]


def _positive_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}") from None
    if not (v > 0 and math.isfinite(v)):
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {text!r}")
    return v


def add_lora_family_arguments(p: argparse.ArgumentParser) -> None:
    """--variant (any registered variant), --use-dora, --init-lora-weights, --loraplus-lr-ratio."""
    from .variant import VARIANTS

    p.add_argument("--variant", default="lora", choices=sorted(VARIANTS),
                   help="LoRA variant (default lora; dora = DoRA with the norm held constant in the backward, "
                        "as PEFT; dora_exact = its exact gradient; vera: VeRA's frozen shared random A, B and "
                        "trained vectors d (r), b (d_out): give it a large --r (e.g. 128) and a larger --lr "
                        "(e.g. 5e-2); adalora: --init-r, --target-r on q and v of c_attn, compared with a "
                        "plain LoRA of rank init-r; residual is chosen by --init-lora-weights pissa/olora)")
    p.add_argument("--use-dora", action="store_true", help="DoRA (PEFT's use_dora): same as --variant dora")
    p.add_argument("--init-lora-weights", default="true",
                   help="true (default), false, gaussian, pissa, pissa_niter_K (randomised SVD) or olora")
    p.add_argument("--loraplus-lr-ratio", type=_positive_float, default=None,
                   help="LoRA+: lora_B trains with this multiple of --lr (the paper's default is 16)")


# variants configured by a LoraConfig; the others (vera, adalora) bring their own config class
LORA_CONFIG_VARIANTS = ("lora", "dora", "dora_exact", "residual")


def lora_family_options(args: argparse.Namespace) -> dict:
    """LoraConfig keywords from the family switches (init_lora_weights "true"/"false" -> bool). A variant
    with its own config class (vera, adalora) is left to the caller: the LoraConfig stays "lora"."""
    init = {"true": True, "false": False}.get(str(args.init_lora_weights).lower(), args.init_lora_weights)
    variant = args.variant if args.variant in LORA_CONFIG_VARIANTS else "lora"
    return dict(variant=variant, use_dora=args.use_dora, init_lora_weights=init)


def lora_family_usage_error(args: argparse.Namespace) -> str | None:
    """The message for an impossible combination of options, or None."""
    if args.full and (args.use_dora or args.init_lora_weights != "true" or args.loraplus_lr_ratio is not None):
        return ("--full trains every parameter: the LoRA family options (--use-dora, --init-lora-weights, "
                "--loraplus-lr-ratio) do not apply")
    if args.variant not in LORA_CONFIG_VARIANTS and (args.use_dora or args.init_lora_weights != "true"):
        return f"--variant {args.variant} has its own parameters: --use-dora and --init-lora-weights do not apply"
    return None
