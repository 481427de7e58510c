"""The LoRA family on the shipped base: trainable parameters, code validation loss after the same number
of steps, ms/step relative to plain LoRA (timed interleaved), and merged == unmerged logit error.

    python benchmarks/bench_variants.py                     # 300 steps each (the demo's budget)
    python benchmarks/bench_variants.py --steps 60 --variants lora dora

Base: `minilora.checkpoints.load_pretrained()` (config S, float32, pretrained on prose). Corpus: the code
corpus ("stdlib"). Every variant gets the demo's fine-tuning recipe (r = 8, lora_alpha = 16 on c_attn,
batch 16, peak lr 1e-2, 30 warm-up steps, cosine) and the same seeds; LoRA+ keeps lr for A and trains B
with λ·lr (--loraplus-lr-ratio, default 16); "lora+_lrA/16" gives A lr/16 and B λ·lr/16 (= lr for
λ = 16). Validation: the demo's 16 fixed batches of the code corpus. Timing: each variant's training
step (forward, backward, AdamW) timed in turn, round after round in one process, medians, after
`perf.configure_malloc()`; the load average is printed with the figures (the machine is shared).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

VARIANTS = {                       # name -> (LoraConfig keywords, LoRA+ or not, lr of A as a fraction of --lr)
    "lora": ({}, False, 1.0),
    "dora": ({"use_dora": True}, False, 1.0),
    "dora_exact": ({"variant": "dora_exact"}, False, 1.0),
    "pissa": ({"init_lora_weights": "pissa"}, False, 1.0),
    "pissa_niter_4": ({"init_lora_weights": "pissa_niter_4"}, False, 1.0),
    "olora": ({"init_lora_weights": "olora"}, False, 1.0),
    "lora+": ({}, True, 1.0),                       # A: lr, B: λ·lr
    "lora+_lrA/16": ({}, True, 1 / 16),             # A: lr/16, B: λ·lr/16 = lr (λ = 16): B as in LoRA
}


def _load() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.2f} (1 min), {five:.2f} (5 min) on {os.cpu_count()} cores"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--loraplus-lr-ratio", type=float, default=16.0)
    p.add_argument("--lr", type=float, default=1e-2)
    p.add_argument("--time-steps", type=int, default=5, help="timed steps per variant per round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--no-train", action="store_true", help="only the interleaved timing (no 300-step runs)")
    args = p.parse_args(argv)

    from minilora import checkpoints, no_grad, perf
    from minilora.data import TokenDataset, load_corpus
    from minilora.finetune import copy_model, finetune
    from minilora.lora import LoraConfig, get_peft_model
    from minilora.lora.loraplus import create_loraplus_optimizer
    from minilora.optim import AdamW
    from minilora.train import TrainConfig, evaluate

    perf.configure_malloc()
    base = checkpoints.load_pretrained()
    code = TokenDataset(load_corpus("stdlib"))
    T, bs = base.config.block_size, 16
    val = code.fixed_batches("val", 16, bs, T, seed=0)
    print(f"base: shipped pydoc-s (config S), code validation loss {evaluate(base, val):.4f} nats/byte; {_load()}")

    def config(name):
        kw = VARIANTS[name][0]
        return LoraConfig(r=8, lora_alpha=16.0, target_modules=("c_attn",), **kw)

    def ratio(name):
        return args.loraplus_lr_ratio if VARIANTS[name][1] else None

    rows = {}
    for name in ([] if args.no_train else args.variants):
        tcfg = TrainConfig(max_steps=args.steps, batch_size=bs, lr=args.lr * VARIANTS[name][2],
                           warmup_steps=min(30, args.steps // 10), weight_decay=0.0, eval_interval=args.steps,
                           eval_batches=16, seed=1, log_interval=args.steps)
        t0 = time.perf_counter()
        res = finetune(base, code, "lora", config(name), tcfg, log=lambda s: None, loraplus_lr_ratio=ratio(name))
        model = res.model
        loss = evaluate(model, val)
        x = val[0][0]
        model.eval()
        with no_grad():
            unmerged = model(x)[0].data
            model.merge_adapter()
            merged = model(x)[0].data
            model.unmerge_adapter()
        rows[name] = dict(params=res.trainable_params, loss=loss, err=float(np.abs(merged - unmerged).max()))
        print(f"  trained {name:<14} {args.steps} steps in {time.perf_counter() - t0:5.1f} s: val {loss:.4f}",
              flush=True)

    # interleaved timing of one training step
    rng = np.random.default_rng(0)
    xb, yb = rng.integers(0, 256, (bs, T)), rng.integers(0, 256, (bs, T))
    steps = {}
    for name in args.variants:
        model = get_peft_model(copy_model(base, seed=0), config(name))
        model.train()
        if ratio(name):
            opt = create_loraplus_optimizer(model, 1e-4, ratio(name))
        else:
            opt = AdamW(model.trainable_parameters(), lr=1e-4, weight_decay=0.0)

        def step(model=model, opt=opt):
            opt.zero_grad()
            _, loss = model(xb, yb)
            loss.backward()
            opt.step()
        step()
        steps[name] = step
    times = {n: [] for n in args.variants}
    for _ in range(args.rounds):
        for name in args.variants:
            for _ in range(args.time_steps):
                t0 = time.perf_counter()
                steps[name]()
                times[name].append(1e3 * (time.perf_counter() - t0))
    ms = {n: statistics.median(v) for n, v in times.items()}
    ref = ms.get("lora", next(iter(ms.values())))

    what = "no training (--no-train)" if args.no_train else f"{args.steps} steps each on the code corpus"
    print(f"\n{what}; timing: {args.rounds} rounds x {args.time_steps} steps, interleaved; {_load()}")
    print("| variant | trainable params | code val loss | ms/step | vs LoRA | merged vs unmerged max |Δlogit| |")
    print("|---|---:|---:|---:|---:|---:|")
    for name in args.variants:
        r = rows.get(name, dict(params=0, loss=float("nan"), err=float("nan")))
        print(f"| {name} | {r['params']:,} | {r['loss']:.4f} | {ms[name]:.1f} | {ms[name] / ref:.2f}x | "
              f"{r['err']:.1e} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
