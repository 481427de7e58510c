"""The `minilora` command line: `python -m minilora <command> ...` (or the `minilora` script).

Each subcommand is one entry of COMMANDS: (name, help, add_arguments(parser), run(args) -> exit code).
To add one, write its two functions below and append a `Command(...)` at the registration point at
the end of this file (or call `register(...)` from another module before `main` runs).

Exit codes: 0 success; 2 a user error (missing checkpoint, unknown corpus, bad numbers), reported as one
line on stderr without a traceback (set MINILORA_DEBUG=1 to see the traceback); 130 on Ctrl-C.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np

__all__ = ["main", "Command", "COMMANDS", "register", "UserError", "build_parser"]


class UserError(Exception):
    """A mistake in the command's input: printed as one line, exit code 2."""


class Command(NamedTuple):
    """One subcommand: its name, a one-line help, a function adding its arguments, and its runner."""

    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr (exit code 2)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


# --------------------------------------------------------------------------------------------------
# argument types (bad numbers are caught by argparse, with the option's name in the message)
# --------------------------------------------------------------------------------------------------


def _number(cast, low, strict, what):
    """An argparse type: text -> cast(text), finite and > low (strict) or >= low; else a clear error."""
    def parse(text):
        try:
            v = cast(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if not ((v > low) if strict else (v >= low)) or v == float("inf"):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return v
    parse.__name__ = what  # argparse names the type in its messages
    return parse


positive_int = _number(int, 1, False, "a positive integer")
nonneg_int = _number(int, 0, False, "an integer >= 0")
positive_float = _number(float, 0.0, True, "a positive finite number")
nonneg_float = _number(float, 0.0, False, "a finite number >= 0")


def _dtype(name):
    return {"float32": np.float32, "float64": np.float64}[name]


# --------------------------------------------------------------------------------------------------
# pretrain
# --------------------------------------------------------------------------------------------------

# Config S (4 layers, 4 heads, n_embd 128, block 64, batch 16). 1200 steps take about 3 minutes on 2
# quiet cores (~130 ms per step with perf.configure_malloc, plus evaluation and checkpoints).
PRETRAIN_DEFAULTS = dict(corpus="pydoc", steps=1200, n_layer=4, n_head=4, n_embd=128, block_size=64,
                         batch_size=16, lr=1e-3, min_lr=None, warmup_steps=None, weight_decay=0.1, dropout=0.0,
                         eval_interval=None, eval_batches=8, log_interval=None, seed=0, dtype="float32")

# The settings a resumed run takes from its checkpoint: option -> where the checkpoint keeps it.
_RESUMED_FROM_MODEL = ("n_layer", "n_head", "n_embd", "block_size", "dropout")
_RESUMED_FROM_TRAIN = ("batch_size", "lr", "min_lr", "warmup_steps", "weight_decay", "eval_interval",
                       "eval_batches", "log_interval", "seed")


def add_pretrain_arguments(p):
    """Arguments of `minilora pretrain` (corpus, output folder, model size, schedule, --resume/--overwrite).

    Every setting defaults to None (the real default is in PRETRAIN_DEFAULTS), so that run_pretrain can
    tell a setting the user gave from one they left out: with --resume, a given setting that differs
    from the checkpoint's is an error instead of being silently ignored."""
    d = PRETRAIN_DEFAULTS
    p.add_argument("--corpus", default=None,
                   help="built-in corpus ('pydoc': English prose, 'stdlib': Python code) or a UTF-8 text file "
                        "(default: pydoc; with --resume: the checkpoint's corpus)")
    p.add_argument("--out", default="runs/base", help="checkpoint directory (default: runs/base)")
    p.add_argument("--steps", type=positive_int, default=None,
                   help=f"optimizer steps (default {d['steps']}; with --resume: the checkpoint's, or more to extend)")
    p.add_argument("--n-layer", type=positive_int, default=None, help=f"transformer blocks (default {d['n_layer']})")
    p.add_argument("--n-head", type=positive_int, default=None, help=f"attention heads (default {d['n_head']})")
    p.add_argument("--n-embd", type=positive_int, default=None, help=f"embedding width (default {d['n_embd']})")
    p.add_argument("--block-size", type=positive_int, default=None,
                   help=f"context length T (default {d['block_size']})")
    p.add_argument("--batch-size", type=positive_int, default=None, help=f"batch size B (default {d['batch_size']})")
    p.add_argument("--lr", type=positive_float, default=None, help=f"peak learning rate (default {d['lr']})")
    p.add_argument("--min-lr", type=nonneg_float, default=None, help="final learning rate (default lr/10)")
    p.add_argument("--warmup-steps", type=nonneg_int, default=None, help="warm-up steps (default min(100, steps/10))")
    p.add_argument("--weight-decay", type=nonneg_float, default=None,
                   help=f"AdamW weight decay (default {d['weight_decay']})")
    p.add_argument("--dropout", type=nonneg_float, default=None, help=f"dropout probability (default {d['dropout']})")
    p.add_argument("--eval-interval", type=positive_int, default=None,
                   help="evaluate and checkpoint every N steps (default steps/10)")
    p.add_argument("--eval-batches", type=positive_int, default=None,
                   help=f"validation batches (default {d['eval_batches']})")
    p.add_argument("--log-interval", type=positive_int, default=None,
                   help="progress line every N steps (default steps/24)")
    p.add_argument("--seed", type=nonneg_int, default=None, help=f"random seed (default {d['seed']})")
    p.add_argument("--dtype", choices=["float32", "float64"], default=None, help="parameter dtype (default float32)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--base", default=None, help="start from a Hugging Face GPT-2 folder (config.json + model."
                   "safetensors [+ vocab.json, merges.txt]): its config sets the sizes, its BPE the tokens")
    g.add_argument("--resume", action="store_true",
                   help="continue the run in --out: model, schedule and corpus come from its checkpoint")
    p.add_argument("--overwrite", action="store_true",
                   help="replace a checkpoint already in --out (without it, an existing checkpoint is refused)")
    p.add_argument("--sample-tokens", type=nonneg_int, default=200, help="length of the final sample (default 200)")
    p.add_argument("--quiet", action="store_true", help="no progress lines")


def _diverged(e: FloatingPointError, lr: float) -> UserError:
    """The one-line message of a diverged run: what happened, and the fix (a smaller --lr)."""
    msg = str(e).removeprefix("train: ").replace("lower the lr", f"lower the lr (--lr; this run used {lr:g})")
    return UserError(f"{msg}; no checkpoint of the diverged model was written")


def _resumed_settings(args, ck):
    """GPTConfig, TrainConfig, dtype and corpus of a resumed run, from checkpoint `ck` (load_checkpoint's dict).

    Raises UserError when a setting given on the command line differs from the checkpoint's, or when
    the checkpoint records no corpus and --corpus is not given."""
    from .checkpoint import corpus_record
    from .data import load_corpus
    from .nn.gpt import GPTConfig
    from .train import TrainConfig

    saved = dict(ck["train_state"]["train_config"])
    model_cfg = ck["model_config"]
    differ = []
    for name in _RESUMED_FROM_MODEL + _RESUMED_FROM_TRAIN:
        given = getattr(args, name)
        have = model_cfg[name] if name in _RESUMED_FROM_MODEL else saved.get(name)
        if given is not None and given != have:
            differ.append(f"--{name.replace('_', '-')} {given} (checkpoint: {have})")
    if args.dtype is not None and args.dtype != ck["dtype"]:
        differ.append(f"--dtype {args.dtype} (checkpoint: {ck['dtype']})")
    recorded = ck["corpus"]
    corpus_name = args.corpus or (recorded or {}).get("name")
    if corpus_name is None:
        raise UserError(f"the checkpoint in {args.out!r} records no corpus (it predates the corpus record): "
                        "pass --corpus with the corpus it was trained on")
    text = load_corpus(corpus_name)
    record = corpus_record(corpus_name, text)
    if recorded is not None and record["sha256"] != recorded.get("sha256"):
        what = (f"--corpus {args.corpus}" if args.corpus else
                f"the corpus file {corpus_name!r}, which has changed since the checkpoint was written")
        differ.append(f"{what} (checkpoint: {recorded.get('name')!r}, {recorded.get('bytes')} bytes, "
                      f"sha256 {str(recorded.get('sha256'))[:12]}...)")
    if differ:
        raise UserError("--resume continues the run with its checkpoint's settings, but these differ: "
                        + "; ".join(differ) + ". Leave them out, or start a new run in another --out")
    if args.steps is not None and args.steps < ck["step"]:
        raise UserError(f"--steps {args.steps} is below the checkpoint's step {ck['step']}: nothing to train")
    saved["lr_decay_steps"] = saved.get("lr_decay_steps") or saved["max_steps"]
    saved["max_steps"] = args.steps if args.steps is not None else max(saved["max_steps"], ck["step"])
    return GPTConfig(**model_cfg), TrainConfig(**saved), np.dtype(ck["dtype"]).type, text, record


def run_pretrain(args):
    """Pretrain a GPT on a corpus, print val loss vs the unigram baseline and a sample; exit code.

    With --resume, the model, schedule, dtype and corpus come from the checkpoint in --out; a setting
    given on the command line that contradicts it is refused. The corpus (name or path, sha256, size)
    is recorded in every checkpoint.

    Raises:
        UserError: an existing checkpoint without --resume/--overwrite, a contradicting setting with
            --resume, an --out that cannot be written, a diverged run (exit 2 via main)."""
    from . import perf
    from .bases import dataset_for, load_base
    from .checkpoint import corpus_record, has_checkpoint, load_checkpoint
    from .data import load_corpus, unigram_loss
    from .io import ensure_writable_dir
    from .nn.gpt import GPT, GPTConfig
    from .sampling import generate_text
    from .train import TrainConfig, train

    perf.configure_malloc()
    has_ckpt = has_checkpoint(args.out)
    if args.resume and not has_ckpt:
        raise UserError(f"--resume: no checkpoint in {args.out!r}")
    if has_ckpt and not (args.resume or args.overwrite):
        raise UserError(f"{args.out!r} already holds a checkpoint: pass --resume to continue it or "
                        f"--overwrite to replace it")
    if args.resume and args.overwrite:
        raise UserError("--resume continues the checkpoint in --out and --overwrite replaces it: choose one")
    ensure_writable_dir(args.out, "--out")
    start, tok = None, None
    try:
        if args.resume:
            gcfg, cfg, dtype, text, record = _resumed_settings(args, load_checkpoint(args.out))
        else:
            a = {k: (getattr(args, k) if getattr(args, k) is not None else v) for k, v in PRETRAIN_DEFAULTS.items()}
            text = load_corpus(a["corpus"])
            record = corpus_record(a["corpus"], text)
            dtype = _dtype(a["dtype"])
            if args.base:  # a Hugging Face GPT-2 folder: its weights, config and tokenizer
                start, tok = load_base(args.base, dtype, args.dropout)
            gcfg = start.config if start else GPTConfig(block_size=a["block_size"], n_layer=a["n_layer"],
                                                        n_head=a["n_head"], n_embd=a["n_embd"], dropout=a["dropout"])
            cfg = TrainConfig(max_steps=a["steps"], batch_size=a["batch_size"], lr=a["lr"], min_lr=a["min_lr"],
                              warmup_steps=a["warmup_steps"], weight_decay=a["weight_decay"],
                              eval_interval=a["eval_interval"] or max(1, a["steps"] // 10),
                              eval_batches=a["eval_batches"], seed=a["seed"],
                              log_interval=a["log_interval"] or max(1, a["steps"] // 24),
                              block_size=a["block_size"])
    except (TypeError, ValueError, KeyError) as e:
        raise UserError(str(e)) from None
    ds = dataset_for(text, tok, gcfg.vocab_size)
    model = start or GPT(gcfg, dtype=dtype, seed=cfg.seed)
    log = (lambda s: None) if args.quiet else (lambda s: print(s, flush=True))
    if has_ckpt and not args.resume:
        log(f"note: replacing the checkpoint in {args.out} (--overwrite)")
    try:
        hist = train(model, ds, cfg, out_dir=args.out, resume=args.resume, log=log, corpus=record)
    except FloatingPointError as e:
        raise _diverged(e, cfg.lr) from None

    V = gcfg.vocab_size
    base = unigram_loss(ds.val, reference_tokens=ds.train, vocab_size=V)
    final = hist["final"] or {}
    val = final.get("val_loss")
    print(f"validation loss {val:.3f} nats/token vs unigram baseline {base:.3f} (uniform ln {V} = {np.log(V):.3f})"
          if val is not None else f"no validation split; unigram baseline {base:.3f}")
    if hist.get("ms_per_step"):
        print(f"{hist['ms_per_step']:.0f} ms/step (median), {hist['tokens_per_s'] / 1e3:.1f}k tokens/s; "
              f"checkpoint in {args.out}")
    if args.sample_tokens:
        print("--- sample ---")
        print(generate_text(model, "\n", args.sample_tokens, 0.8, None, cfg.seed, tokenizer=tok))
    return 0


# --------------------------------------------------------------------------------------------------
# sample
# --------------------------------------------------------------------------------------------------


def add_sample_arguments(p):
    """Arguments of `minilora sample` (checkpoint, optional LoRA adapter, prompt, sampling settings)."""
    p.add_argument("--ckpt", default="runs/base", help="checkpoint directory (default: runs/base)")
    p.add_argument("--base", default=None, help="instead of --ckpt: a Hugging Face GPT-2 folder (config.json + "
                   "model.safetensors, with vocab.json + merges.txt for GPT-2's BPE) or a checkpoint")
    p.add_argument("--prompt", default="\n", help="text to continue (default: a newline)")
    p.add_argument("--max-new-tokens", type=nonneg_int, default=300, help="tokens (bytes) to generate (default 300)")
    p.add_argument("--temperature", type=nonneg_float, default=0.8,
                   help="sampling temperature; 0 = greedy (default 0.8)")
    p.add_argument("--top-k", type=positive_int, default=None, help="sample among the k most likely bytes")
    p.add_argument("--seed", type=nonneg_int, default=0, help="sampling seed (default 0)")
    p.add_argument("--adapter", action="append", default=None, metavar="[NAME=]PATH",
                   help="a LoRA adapter folder (from `minilora finetune`) to apply to the checkpoint; several as "
                        "NAME=PATH: one sample per adapter in one mixed-adapter batch (__base__= for the base)")


def run_sample(args):
    """Print a sample from a checkpoint (optionally with a LoRA adapter applied); exit code."""
    from .bases import load_base
    from .checkpoint import load_model
    from .sampling import generate_text

    tok = None
    if args.base:
        model, tok = load_base(args.base)     # OSError / ValueError: one line via main
    elif not os.path.exists(args.ckpt):
        raise UserError(f"no checkpoint at {args.ckpt!r} (train one with `minilora pretrain --out {args.ckpt}`)")
    else:
        model = load_model(args.ckpt)
    if args.adapter:
        from .sampling import generate_with_adapters

        try:
            texts = generate_with_adapters(model, args.adapter, args.prompt, args.max_new_tokens, args.temperature,
                                           args.top_k, args.seed, tokenizer=tok)
        except FileNotFoundError as e:
            raise UserError(f"{e} (make one with `minilora finetune`)") from None
        print(texts[0][1] if len(texts) == 1 else "\n".join(f"--- {n}\n{t}" for n, t in texts))
        return 0
    print(generate_text(model, args.prompt, args.max_new_tokens, args.temperature, args.top_k, args.seed,
                        tokenizer=tok))
    return 0


# --------------------------------------------------------------------------------------------------
# demo: the main job
# --------------------------------------------------------------------------------------------------


def add_demo_arguments(p):
    """Arguments of `minilora demo` (run folder, step budgets, LoRA rank/alpha/targets, learning rates)."""
    from .demo import DemoConfig

    d = DemoConfig()
    p.add_argument("--out", default="runs/demo", help="run folder (default: runs/demo); the base model is kept "
                                                      "in <out>/base and reused by the next run")
    p.add_argument("--pretrain", action="store_true",
                   help="pretrain the base here (about 1.5 minutes) instead of using the base shipped with the "
                        "package (minilora/checkpoints/pydoc-s, made by this same recipe)")
    p.add_argument("--pretrain-steps", type=positive_int, default=d.pretrain_steps,
                   help=f"pretraining steps on pydoc (default {d.pretrain_steps})")
    p.add_argument("--finetune-steps", type=positive_int, default=d.finetune_steps,
                   help=f"steps of each fine-tuning run on stdlib (default {d.finetune_steps})")
    p.add_argument("--r", type=positive_int, default=d.r, help=f"LoRA rank (default {d.r})")
    p.add_argument("--lora-alpha", type=positive_float, default=d.lora_alpha,
                   help=f"LoRA alpha; scaling = alpha / r (default {d.lora_alpha:g})")
    p.add_argument("--target-modules", nargs="+", default=list(d.target_modules),
                   help="module names (or dotted suffixes) to adapt (default: c_attn)")
    p.add_argument("--lora-lr", type=positive_float, default=d.lora_lr, help=f"LoRA peak lr (default {d.lora_lr:g})")
    p.add_argument("--full-lr", type=positive_float, default=d.full_lr,
                   help=f"full fine-tuning peak lr (default {d.full_lr:g})")
    p.add_argument("--seed", type=nonneg_int, default=d.seed, help=f"random seed (default {d.seed})")


def run_demo(args):
    """Run the main job (minilora.demo.run_demo) with the process-level malloc setting; exit code.

    Without --pretrain the demo starts from the base shipped with the package when its recipe matches."""
    from . import perf
    from .demo import DemoConfig
    from .demo import run_demo as _run

    perf.configure_malloc()
    try:
        cfg = DemoConfig(pretrain_steps=args.pretrain_steps, finetune_steps=args.finetune_steps, r=args.r,
                         lora_alpha=args.lora_alpha, target_modules=tuple(args.target_modules),
                         lora_lr=args.lora_lr, full_lr=args.full_lr, seed=args.seed)
    except (TypeError, ValueError) as e:
        raise UserError(str(e)) from None
    _run(args.out, cfg, log=lambda s: print(s, flush=True), pretrain=args.pretrain)
    return 0


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
    from .lora.options import add_lora_family_arguments
    from .quant.options import add_qlora_arguments
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
    if (out_r / "adapter").exists() or (out_r / "adapter_config.json").exists():
        held.append("an adapter")
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
    from . import perf
    from .bases import dataset_for, is_hf_folder, load_base
    from .checkpoint import has_checkpoint, save_checkpoint
    from .data import load_corpus
    from .finetune import finetune
    from .io import ensure_writable_dir
    from .lora import LoraConfig, VeraConfig
    from .lora.options import lora_family_options, lora_family_usage_error
    from .quant import memory_lines, qlora_usage_error
    from .train import TrainConfig, evaluate

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
        from .experiments.adalora_ranks import finetune_cli
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


# --------------------------------------------------------------------------------------------------
# gradcheck: the three-way comparison a learner can run
# --------------------------------------------------------------------------------------------------


def add_gradcheck_arguments(p):
    """Arguments of `minilora gradcheck` (the seed of the random inputs)."""
    p.add_argument("--seed", type=nonneg_int, default=0, help="seed of the random inputs (default 0)")


def run_gradcheck(args):
    """Print hand-derived vs autograd vs numeric gradients of a LoRA layer and checks of the fused ops.

    Returns 0 when every autograd/numeric difference is below 1e-6 (float64), else 1."""
    from . import gradcheck, ops
    from .lora import functional as LF
    from .lora.layer import lora_linear_composed
    from .tensor import Tensor

    rng = np.random.default_rng(args.seed)

    def r64(*s):
        return rng.standard_normal(s)

    x, W0, b = r64(2, 3, 5), r64(4, 5), r64(4)
    A, B, s = r64(2, 5), r64(4, 2), 16 / 2
    mask = (rng.random(x.shape) > 0.3).astype(np.float64)

    print("LoRA layer y = x W0^T + b + s (x~ A^T) B^T, shapes x (2,3,5), W0 (4,5), A (2,5), B (4,2), s = 8, "
          "dropout mask kept with p = 0.7")

    def hand(c, x_, A_, B_):
        _, cache = LF.lora_forward(x_, W0, b, A_, B_, s, mask, 0.7)
        g = LF.lora_backward(c, cache)
        return [g["dx"], g["dA"], g["dB"]]

    print("hand = lora/functional.py's derivation; autograd = the same layer composed from engine ops")
    named = [Tensor(v, requires_grad=True, name=n) for v, n in ((x, "x"), (A, "A"), (B, "B"))]
    rows = gradcheck.compare(lambda x_, A_, B_: lora_linear_composed(x_, W0, b, A_, B_, s, mask, 0.7), *named,
                             hand=hand)
    checks = [("softmax", lambda t: ops.softmax(t), [r64(3, 6)]),
              ("log_softmax", lambda t: ops.log_softmax(t), [r64(3, 6)]),
              ("layer_norm", lambda t, w, bb: ops.layer_norm(t, w, bb), [r64(3, 6), r64(6), r64(6)]),
              ("attention", lambda t: ops.attention(t, 2), [r64(2, 4, 12)]),
              ("cross_entropy", lambda t: ops.cross_entropy(t, np.array([1, 0, 5])), [r64(3, 6)]),
              ("gelu", lambda t: ops.gelu(t), [r64(4, 5)]),
              ("matmul (broadcast)", lambda a, bb: a @ bb, [r64(2, 3, 4), r64(4, 5)])]
    print("\nautograd vs central differences (float64, random cotangent):")
    worst = max(r["auto_num"] for r in rows)
    for name, fn, arrays in checks:
        rep = gradcheck.check_grad(fn, *arrays, raise_on_failure=False)
        err = max(row["abs"] for row in rep.rows)
        worst = max(worst, err)
        print(f"  {name:<20} max abs error {err:.2e}  {'ok' if rep.passed else 'FAILED'}")
    return 0 if worst < 1e-6 else 1


# --------------------------------------------------------------------------------------------------
# exercises
# --------------------------------------------------------------------------------------------------


def add_exercises_arguments(p):
    """Arguments of `minilora exercises` (list | show NAME | check NAME --file F)."""
    sub = p.add_subparsers(dest="action", metavar="action")
    sub.add_parser("list", help="list the exercises in the suggested order")
    show = sub.add_parser("show", help="print an exercise's stub (copy it to a file and fill it in)")
    show.add_argument("name")
    check = sub.add_parser("check", help="grade your solution on hypothesis-drawn inputs")
    check.add_argument("name")
    check.add_argument("--file", required=True, help="your Python file defining a function named like the exercise")


def run_exercises(args):
    """List exercises, print a stub, or grade a solution file; exit code 0 when it passes."""
    try:
        from . import exercises
    except ImportError as e:  # hypothesis is a main dependency: only a broken install gets here
        raise UserError(f"minilora exercises needs {e.name or 'hypothesis'}, which is missing: "
                        "reinstall with python -m pip install -e . (or pip install hypothesis)") from None

    if args.action in (None, "list"):
        for name, summary in exercises.list_exercises():
            print(f"{name:<24} {summary}")
        print("\nminilora exercises show NAME > my_solution.py   then   "
              "minilora exercises check NAME --file my_solution.py")
        return 0
    names = [n for n, _ in exercises.list_exercises()]
    if args.name not in names:
        raise UserError(f"unknown exercise {args.name!r}; choose from: {', '.join(names)}")
    if args.action == "show":
        print(exercises.stub_source(args.name))
        return 0
    result = exercises.check_file(args.name, args.file)
    print(result)
    return 0 if result.passed else 1


# --------------------------------------------------------------------------------------------------
# analyze: the experiments of minilora/experiments/ (choices and help from its REGISTRY)
# --------------------------------------------------------------------------------------------------


def add_analyze_arguments(p):
    """Arguments of `minilora analyze`: which experiment (a name of minilora.experiments.REGISTRY, or
    all), run folder, base checkpoint, budget, and the planted experiment's k."""
    from .experiments import DEFAULT_BASE_DIR, REGISTRY

    suite = ", ".join(e.name for e in REGISTRY.values() if e.in_all)
    p.add_argument("experiment", choices=[*REGISTRY, "all"],
                   help="; ".join(f"{e.name}: {e.description}" for e in REGISTRY.values())
                   + f"; all: {suite} on one base, with summary.md")
    p.add_argument("--out", default="runs/analyze", help="run folder (default: runs/analyze)")
    p.add_argument("--base", default=DEFAULT_BASE_DIR,
                   help="pretrained base checkpoint; pretrained there if missing (default: runs/demo/base; "
                        "alpha-lr always uses the shipped pretrained model)")
    p.add_argument("--steps", type=int, default=None,
                   help="fine-tuning steps per run (default 120, quick 30; planted: 150; alpha-lr: 50, quick 10)")
    p.add_argument("--k", type=int, default=4, help="number of swapped pairs for `planted` (default 4)")
    p.add_argument("--quick", action="store_true",
                   help="tiny in-memory base and few steps (under a minute or two; for tests, not for figures)")


def run_analyze(args):
    """Run the chosen experiment (or all) with the malloc setting; exit code.

    Raises: ValueError for --steps < 1 or --k outside 1..13, OSError for an --out (or a --base to be
    pretrained) that cannot be written: all exit 2 via main, before any training."""
    from pathlib import Path

    from . import perf
    from .experiments import DEFAULT_BASE_DIR, REGISTRY, run_all, run_experiment
    from .io import ensure_writable_dir

    if args.steps is not None and args.steps < 1:
        raise ValueError(f"--steps must be >= 1, got {args.steps}")
    if not 1 <= args.k <= 13:
        raise ValueError(f"--k must be between 1 and 13 (pairs of distinct lowercase letters), got {args.k}")
    base_dir = None if args.quick and args.base == DEFAULT_BASE_DIR else args.base
    out = ensure_writable_dir(Path(args.out), "--out")
    if base_dir is not None and not (Path(base_dir) / "latest.json").exists():
        ensure_writable_dir(base_dir, "--base")  # a missing base is pretrained there
    perf.configure_malloc()
    if args.experiment == "all":
        run_all(out, base_dir=base_dir, quick=args.quick, steps=args.steps, k=args.k)
    else:
        extra = {"k": args.k} if "k" in REGISTRY[args.experiment].defaults else {}
        run_experiment(args.experiment, out, base_dir=base_dir, quick=args.quick, steps=args.steps, **extra)
    print(f"wrote {out}/")
    return 0


# --------------------------------------------------------------------------------------------------
# drill: interview questions with checked answers (logic in minilora/drill/)
# --------------------------------------------------------------------------------------------------


def add_drill_arguments(p):
    """Arguments of `minilora drill` (--seed, --count, --topic; --answers FILE | --explain | --stats | --list)."""
    from .drill import TOPICS

    p.add_argument("--seed", type=nonneg_int, default=None, help="random seed of the question set (default: new)")
    p.add_argument("--count", type=positive_int, default=10, help="number of questions (default 10)")
    p.add_argument("--topic", action="append", choices=list(TOPICS), default=None,
                   help="only this topic (repeat for several); see --list")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--answers", metavar="FILE",
                      help="grade FILE: one answer per line, in question order (docs/drill.md); exit 0 if all right")
    mode.add_argument("--explain", action="store_true", help="print the questions with worked solutions only")
    mode.add_argument("--stats", action="store_true", help="score by topic from your progress file, weak topics")
    mode.add_argument("--list", action="store_true", help="list the question templates by topic")


def run_drill(args):
    """Run `minilora drill` (minilora.drill.session.run); exit code."""
    from .drill import run

    return run(args.seed, args.count, args.topic, args.answers, args.explain, args.stats, args.list)


# --------------------------------------------------------------------------------------------------
# registration point: one Command per subcommand, in the order `minilora --help` lists them
# (or call register() before main() runs).
# --------------------------------------------------------------------------------------------------

COMMANDS: list[Command] = [
    Command("pretrain", "pretrain a small GPT on a corpus and save checkpoints", add_pretrain_arguments,
            run_pretrain),
    Command("sample", "generate text from a checkpoint", add_sample_arguments, run_sample),
    Command("demo", "the main job: pretrain on prose, LoRA and full fine-tuning on code, merge, report",
            add_demo_arguments, run_demo),
    Command("finetune", "adapt a pretrained checkpoint to a corpus with LoRA (or --full)", add_finetune_arguments,
            run_finetune),
    Command("analyze", "SVD rank analysis: the LoRA paper's Section 7 experiments on your own model",
            add_analyze_arguments, run_analyze),
    Command("gradcheck", "hand-derived vs autograd vs numeric gradients, side by side", add_gradcheck_arguments,
            run_gradcheck),
    Command("exercises", "interview exercises: list, show a stub, check your solution", add_exercises_arguments,
            run_exercises),
]


def register(name, help, add_arguments, run):
    """Add (or replace) a subcommand at run time."""
    COMMANDS[:] = [c for c in COMMANDS if c.name != name]
    COMMANDS.append(Command(name, help, add_arguments, run))


register("drill", "interview drill: generated LoRA questions with checked, worked answers",
         add_drill_arguments, run_drill)


def _lazy(module, name):
    """A function of minilora.<module> imported when called (the command's imports stay off --help)."""
    def call(*args):
        import importlib
        return getattr(importlib.import_module(f"minilora.{module}"), name)(*args)
    return call


register("compare", "LoRA vs adapters, prefix/prompt tuning, BitFit, IA3, full FT: the LoRA paper's Tables 2-4",
         _lazy("compare", "add_compare_arguments"), _lazy("compare", "run_compare_command"))
register("latency", "inference latency over the base model (the LoRA paper's Table 1), interleaved medians",
         _lazy("latency", "add_latency_arguments"), _lazy("latency", "run_latency_command"))


def build_parser():
    """The top-level parser with one subparser per entry of COMMANDS."""
    parser = _Parser(prog="minilora", description="LoRA from the ground up in NumPy.")
    sub = parser.add_subparsers(dest="command", metavar="command")
    for c in COMMANDS:
        sp = sub.add_parser(c.name, help=c.help, description=c.help)
        c.add_arguments(sp)
        sp.set_defaults(_run=c.run)
    return parser


def main(argv=None) -> int:
    """Run the command line; returns the exit code (0 ok, 2 user error, 130 interrupted)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:          # --help (0) or a usage error (2, already printed)
        return e.code if isinstance(e.code, int) else 2
    if getattr(args, "_run", None) is None:
        parser.print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (UserError, OSError, ValueError, FloatingPointError) as e:
        if os.environ.get("MINILORA_DEBUG"):
            raise
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        print(f"minilora {args.command}: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
