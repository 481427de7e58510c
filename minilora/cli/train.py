"""`minilora pretrain` and `minilora sample`: train a GPT from scratch (or resume it), and sample from it."""
from __future__ import annotations

import os

import numpy as np

from ._common import UserError, _diverged, _dtype, nonneg_float, nonneg_int, positive_float, positive_int

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


def _resumed_settings(args, ck):
    """GPTConfig, TrainConfig, dtype and corpus of a resumed run, from checkpoint `ck` (load_checkpoint's dict).

    Raises UserError when a setting given on the command line differs from the checkpoint's, or when
    the checkpoint records no corpus and --corpus is not given."""
    from ..checkpoint import corpus_record
    from ..data import load_corpus
    from ..nn.gpt import GPTConfig
    from ..train import TrainConfig

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
    from .. import perf
    from ..bases import dataset_for, load_base
    from ..checkpoint import corpus_record, has_checkpoint, load_checkpoint
    from ..data import load_corpus, unigram_loss
    from ..io import ensure_writable_dir
    from ..nn.gpt import GPT, GPTConfig
    from ..sampling import generate_text
    from ..train import TrainConfig, train

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
    from ..bases import load_base
    from ..checkpoint import load_model
    from ..sampling import generate_text

    tok = None
    if args.base:
        model, tok = load_base(args.base)     # OSError / ValueError: one line via main
    elif not os.path.exists(args.ckpt):
        raise UserError(f"no checkpoint at {args.ckpt!r} (train one with `minilora pretrain --out {args.ckpt}`)")
    else:
        model = load_model(args.ckpt)
    if args.adapter:
        from ..sampling import generate_with_adapters

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


