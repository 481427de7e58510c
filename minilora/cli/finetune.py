"""`minilora finetune`: LoRA, its variants, QLoRA or full fine-tuning of a base model on a corpus."""
from __future__ import annotations

import argparse
import os
from pathlib import Path

from ._common import UserError, _diverged, nonneg_float, nonneg_int, positive_float, positive_int

# --------------------------------------------------------------------------------------------------
# finetune
# --------------------------------------------------------------------------------------------------


def add_finetune_arguments(p):
    """Arguments of `minilora finetune` (base checkpoint, corpus, LoRA options or --full, budget)."""
    p.add_argument("--base", default="runs/base", help="pretrained checkpoint directory, or a Hugging Face GPT-2 "
                   "folder (config.json + model.safetensors [+ vocab.json, merges.txt]) (default: runs/base)")
    p.add_argument("--block-size", type=positive_int, default=None,
                   help="context length T of the batches (default: the base's, at most 128)")
    p.add_argument("--corpus", default="stdlib", help="built-in corpus or a UTF-8 text file (default: stdlib)")
    p.add_argument("--out", default=None, help="output folder (default: runs/finetune-lora or runs/finetune-full)")
    p.add_argument("--full", action="store_true", help="full fine-tuning (every parameter) instead of LoRA")
    p.add_argument("--r", type=positive_int, default=8, help="LoRA rank r (default 8)")
    p.add_argument("--lora-alpha", type=positive_float, default=16.0, help="LoRA alpha; scaling = alpha/r (default 16)")
    p.add_argument("--lora-dropout", type=nonneg_float, default=0.0,
                   help="dropout on the LoRA branch input (default 0)")
    p.add_argument("--target-modules", nargs="+", default=["c_attn"],
                   help="module names or dotted suffixes to adapt (default: c_attn)")
    p.add_argument("--target-regex", default=None,
                   help="a full-match regular expression over module names instead of --target-modules "
                        "(e.g. 'transformer\\.h\\.[01]\\..*c_attn')")
    p.add_argument("--use-rslora", action="store_true", help="scaling = alpha / sqrt(r) (rsLoRA)")
    add_lora_family_arguments(p)
    p.add_argument("--init-r", type=positive_int, default=12, help="AdaLoRA: starting rank per matrix (default 12)")
    p.add_argument("--target-r", type=positive_int, default=4, help="AdaLoRA: average final rank (default 4)")
    add_qlora_arguments(p)
    p.add_argument("--steps", type=positive_int, default=300, help="optimizer steps (default 300)")
    p.add_argument("--lr", type=positive_float, default=None, help="peak lr (default 1e-2 for LoRA, 1e-3 for --full)")
    p.add_argument("--batch-size", type=positive_int, default=16, help="batch size (default 16)")
    p.add_argument("--eval-batches", type=positive_int, default=16, help="validation batches (default 16)")
    p.add_argument("--seed", type=nonneg_int, default=0, help="random seed (default 0)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace a checkpoint or adapter already in --out (never allowed: --out inside --base)")
    p.add_argument("--quiet", action="store_true", help="no progress lines")


def _finetune_out_problem(out: str, base: str, overwrite: bool) -> str | None:
    """Why fine-tuning must not write into `out` (None if it may).

    Never into the base's own folder or below it (symlinks and relative paths resolved): a full
    fine-tuning checkpoint there would replace the base. An `out` that already holds a checkpoint or
    an adapter is replaced only with --overwrite."""
    out_r, base_r = Path(out).resolve(), Path(base).resolve()
    if out_r == base_r or base_r in out_r.parents:
        return (f"--out {out!r} is the base checkpoint's folder {base!r} or inside it: fine-tuning never writes "
                "into its base; choose another --out")
    if overwrite:
        return None
    held = []
    if (out_r / "latest.json").exists() or any(out_r.glob("ckpt-*.npz")):
        held.append("a checkpoint")
    if any((d / "adapter_config.json").exists() for d in (out_r / "adapter", out_r)):
        held.append("an adapter")          # a folder left empty by a failed run holds nothing
    if held:
        return (f"--out {out!r} already holds {' and '.join(held)}: pass --overwrite to replace it, "
                "or choose another --out")
    return None


def run_finetune(args):
    """LoRA (or --full) fine-tune a checkpoint on a corpus; save the adapter (or checkpoint); exit code.

    Every refusal happens before training: a missing base, an --out that is (or is inside) the base's
    folder, an --out that already holds a checkpoint or adapter (without --overwrite), an --out that
    cannot be written, LoRA options with --full.

    Raises:
        UserError: the refusals above, or a diverged run (exit 2 via main)."""
    from .. import perf
    from ..bases import dataset_for, is_hf_folder, load_base
    from ..checkpoint import has_checkpoint, save_checkpoint
    from ..data import load_corpus
    from ..finetune import finetune
    from ..io import ensure_writable_dir
    from ..lora import LoraConfig, VeraConfig
    from ..quant import memory_lines
    from ..train import TrainConfig, evaluate

    perf.configure_malloc()
    if not has_checkpoint(args.base) and not is_hf_folder(args.base):
        raise UserError(f"no checkpoint in {args.base!r} (make one with `minilora pretrain --out {args.base}`, or "
                        "give a Hugging Face GPT-2 folder: config.json + model.safetensors)")
    method = "full" if args.full else "lora"
    out = args.out or f"runs/finetune-{'adalora' if args.variant == 'adalora' and not args.full else method}"
    if os.path.exists(out) and not os.path.isdir(out):
        raise UserError(f"--out {out!r} is a file, not a directory")
    problem = _finetune_out_problem(out, args.base, args.overwrite)
    if problem:
        raise UserError(problem)
    if args.full and (args.r != 8 or args.lora_alpha != 16.0 or args.lora_dropout or args.use_rslora
                      or args.target_modules != ["c_attn"] or args.target_regex or args.variant != "lora"):
        raise UserError("--full trains every parameter: the LoRA options (--r, --lora-alpha, --lora-dropout, "
                        "--use-rslora, --target-modules, --target-regex, --variant) do not apply")
    if msg := lora_family_usage_error(args):
        raise UserError(msg)
    if msg := qlora_usage_error(args) or (args.variant == "adalora" and args.quantize
                                          and "--variant adalora trains a float base: drop --quantize"):
        raise UserError(msg)
    base, tok = load_base(args.base)
    ds = dataset_for(load_corpus(args.corpus), tok, base.config.vocab_size)
    lr = args.lr or (1e-3 if args.full else 1e-2)
    try:
        lcfg = None if args.full else LoraConfig(r=args.r, lora_alpha=args.lora_alpha, lora_dropout=args.lora_dropout,
                                                 target_modules=args.target_regex or list(args.target_modules),
                                                 use_rslora=args.use_rslora, **lora_family_options(args))
        if args.variant == "vera":
            lcfg = VeraConfig(r=args.r, target_modules=lcfg.target_modules, vera_dropout=args.lora_dropout,
                              use_rslora=args.use_rslora)
        lcfg = lcfg.replace(init_lora_weights="loftq") if args.loftq else lcfg
        tcfg = TrainConfig(max_steps=args.steps, batch_size=args.batch_size, lr=lr, weight_decay=0.0,
                           warmup_steps=min(30, args.steps // 10), eval_interval=max(1, args.steps // 5),
                           eval_batches=args.eval_batches, seed=args.seed, log_interval=max(1, args.steps // 10),
                           block_size=args.block_size or (128 if base.config.block_size > 128 else None))
    except (TypeError, ValueError) as e:
        raise UserError(str(e)) from None
    where = os.path.join(out, "adapter") if method == "lora" else out
    ensure_writable_dir(where, "--out")
    if args.variant == "adalora":  # AdaLoRA and a plain LoRA of rank init_r, compared (experiments/adalora_ranks)
        from ..experiments.adalora_ranks import finetune_cli
        try:
            return finetune_cli(args, base, ds, out, lr)
        except FloatingPointError as e:
            raise _diverged(e, lr) from None
    T = tcfg.block_size or base.config.block_size
    val = ds.fixed_batches("val", args.eval_batches, args.batch_size, T, seed=args.seed)
    before = evaluate(base, val)
    log = (lambda s: None) if args.quiet else (lambda s: print(s, flush=True))
    if args.overwrite and (has_checkpoint(out) or os.path.exists(os.path.join(out, "adapter", "adapter_config.json"))):
        log(f"note: replacing the {method} result in {out} (--overwrite)")
    try:
        res = finetune(base, ds, method, lcfg, tcfg, log=log, quantize=args.quantize, double_quant=args.double_quant,
                       loraplus_lr_ratio=args.loraplus_lr_ratio)
    except FloatingPointError as e:
        raise _diverged(e, lr) from None
    if args.quantize:
        print("\n".join(memory_lines(res.extra["base_memory"])), flush=True)
    after = evaluate(res.model, val)
    if method == "lora":
        res.model.print_trainable_parameters()
        for note in res.model.save_adapter(where):     # exports PEFT needs in another form (fused slices)
            print("note:", note)
    else:
        save_checkpoint(out, res.model, None, tcfg.max_steps)
    print(f"{args.corpus} validation loss: {before:.3f} -> {after:.3f} nats/{'byte' if tok is None else 'token'} "
          f"({res.trainable_params:,} trainable parameters, "
          f"optimizer state {res.optimizer_state_bytes / 2**10:.0f} KiB, "
          f"{res.ms_per_step:.0f} ms/step); saved to {where}")
    return 0


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


# --------------------------------------------------------------------------------------------------
# the LoRA family's switches (PEFT's names): DoRA, PiSSA / OLoRA, LoRA+
# --------------------------------------------------------------------------------------------------


def add_lora_family_arguments(p: argparse.ArgumentParser) -> None:
    """--variant (any registered variant), --use-dora, --init-lora-weights, --loraplus-lr-ratio."""
    from ..lora.variant import VARIANTS

    p.add_argument("--variant", default="lora", choices=sorted(VARIANTS),
                   help="LoRA variant (default lora; dora = DoRA with the norm held constant in the backward, "
                        "as PEFT; dora_exact = its exact gradient; vera: VeRA's frozen shared random A, B and "
                        "trained vectors d (r), b (d_out): give it a large --r (e.g. 128) and a larger --lr "
                        "(e.g. 5e-2); adalora: --init-r, --target-r on q and v of c_attn, compared with a "
                        "plain LoRA of rank init-r; residual is chosen by --init-lora-weights pissa/olora)")
    p.add_argument("--use-dora", action="store_true", help="DoRA (PEFT's use_dora): same as --variant dora")
    p.add_argument("--init-lora-weights", default="true",
                   help="true (default), false, gaussian, pissa, pissa_niter_K (randomised SVD) or olora")
    p.add_argument("--loraplus-lr-ratio", type=positive_float, default=None,
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
