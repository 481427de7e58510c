"""AdaLoRA training step vs plain LoRA step (float32), interleaved, with the machine's load printed.

A step is forward + loss + backward + AdamW (+ for AdaLoRA: the orthogonality term in the loss and
`update_and_allocate`, i.e. the importance EMAs and a re-mask). Both adapt the q and v slices of every
c_attn of a GPT of config S or M (see bench_train.py) with the same rank r = init_r, so the difference
is AdaLoRA's own work; plain LoRA at r = target_r is timed too (the rank AdaLoRA ends with). The
variants run alternately, `--rounds` times, so a disturbed spell of the shared machine hits them
alike; quote medians and ratios.

    python benchmarks/bench_adalora.py                       # config S, 20 steps, 3 rounds
    python benchmarks/bench_adalora.py --configs S M --steps 10 --rounds 2
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np

from minilora import perf
from minilora.lora import AdaLoraConfig, LoraConfig, get_peft_model
from minilora.nn import GPT, GPTConfig
from minilora.optim import AdamW

CONFIGS = {"S": (4, 4, 128, 64, 16), "M": (6, 6, 192, 128, 16)}   # n_layer, n_head, n_embd, T, B


def _load() -> str:
    return "load average %.2f %.2f %.2f (%d cores)" % (*os.getloadavg(), os.cpu_count() or 0)


def _runner(cfg: GPTConfig, config, batch: int, steps_total: int):
    model = get_peft_model(GPT(cfg, seed=0), config)
    opt = AdamW(model.trainable_parameters(), lr=1e-3, weight_decay=0.0)
    rng = np.random.default_rng(0)
    callbacks = model.training_callbacks()
    state = {"step": 0}

    def run(n: int) -> list[float]:
        times = []
        for _ in range(n):
            x = rng.integers(0, 256, (batch, cfg.block_size))
            t0 = time.perf_counter()
            _, loss = model(x, x)
            opt.zero_grad()
            loss.backward()
            opt.step()
            state["step"] += 1
            for cb in callbacks:
                cb.on_step_end(state["step"], model)
            times.append(time.perf_counter() - t0)
        return times
    return run


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--configs", nargs="+", default=["S"], choices=sorted(CONFIGS))
    ap.add_argument("--steps", type=int, default=20, help="timed steps per variant per round (default 20)")
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds (default 3)")
    ap.add_argument("--init-r", type=int, default=12)
    ap.add_argument("--target-r", type=int, default=4)
    args = ap.parse_args(argv)
    perf.configure_malloc()
    print(f"before: {_load()}")
    for name in args.configs:
        n_layer, n_head, n_embd, T, B = CONFIGS[name]
        cfg = GPTConfig(vocab_size=256, block_size=T, n_layer=n_layer, n_head=n_head, n_embd=n_embd)
        total = (args.steps + 2) * args.rounds
        qv = dict(lora_alpha=16, enable_lora=[True, False, True])
        # the allocator re-masks every step of a run whose whole length is the cubic decrease: its worst case
        variants = {
            f"LoRA r={args.init_r}": _runner(cfg, LoraConfig(r=args.init_r, **qv), B, total),
            f"AdaLoRA {args.init_r}->{args.target_r}": _runner(
                cfg, AdaLoraConfig(init_r=args.init_r, target_r=args.target_r, total_step=total + 1, tinit=0,
                                   tfinal=0, deltaT=1, **qv), B, total),
            f"LoRA r={args.target_r}": _runner(cfg, LoraConfig(r=args.target_r, **qv), B, total),
        }
        times = {k: [] for k in variants}
        for run in variants.values():
            run(2)                                                  # warm-up
        for _ in range(args.rounds):
            for k, run in variants.items():
                times[k] += run(args.steps)
        med = {k: 1000 * statistics.median(v) for k, v in times.items()}
        ref = med[f"LoRA r={args.init_r}"]
        print(f"config {name} (n_layer {n_layer}, n_embd {n_embd}, batch {B}x{T}), {args.rounds} x {args.steps} steps:")
        for k, m in med.items():
            print(f"  {k:<16} {m:8.1f} ms/step (median)   {m / ref:5.2f}x LoRA r={args.init_r}")
    print(f"after:  {_load()}")


if __name__ == "__main__":
    main()
