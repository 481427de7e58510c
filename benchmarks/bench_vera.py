"""VeRA vs plain LoRA on the shipped base (config S) and the code corpus (stdlib): the closing table.

    python benchmarks/bench_vera.py                        # 300 steps each (the CLI's default budget)
    python benchmarks/bench_vera.py --steps 100 --timing-steps 10

For each of plain LoRA (r 8, lora_alpha 16, lr 1e-2: `minilora finetune`'s defaults) and VeRA (r 128,
lr 5e-2, both on c_attn), it prints: trainable parameters, code validation loss after the same number
of steps (16 fixed validation batches), the merged == unmerged max logit error (float32), and ms per
training step relative to plain LoRA, timed alternately step by step in one process (after
`minilora.perf.configure_malloc()`), medians. The machine is shared: the load (`uptime`) is printed
before and after.

The equivalent commands: `minilora finetune --base minilora/checkpoints/pydoc-s --corpus stdlib` and
`... --variant vera --r 128 --lr 5e-2`.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import time

import numpy as np


def _uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, timeout=5).stdout.strip()
    except OSError:
        return f"loadavg {os.getloadavg()}"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--timing-steps", type=int, default=20)
    p.add_argument("--vera-r", type=int, default=128)
    p.add_argument("--vera-lr", type=float, default=5e-2)
    a = p.parse_args(argv)

    from minilora import no_grad, perf
    from minilora.checkpoints import load_pretrained
    from minilora.data import TokenDataset, load_corpus
    from minilora.finetune import finetune
    from minilora.lora import LoraConfig
    from minilora.lora.vera import VeraConfig, lora_parameter_count, vera_parameter_count
    from minilora.optim import AdamW
    from minilora.train import TrainConfig, evaluate

    perf.configure_malloc()
    print("load before:", _uptime(), flush=True)
    base = load_pretrained()
    ds = TokenDataset(load_corpus("stdlib"))
    T = base.config.block_size
    val = ds.fixed_batches("val", 16, 16, T, seed=0)
    print(f"base model: code validation loss {evaluate(base, val):.4f} nats/byte")
    runs = {"lora": (LoraConfig(r=8, lora_alpha=16), 1e-2),
            "vera": (VeraConfig(r=a.vera_r, target_modules=("c_attn",)), a.vera_lr)}
    rows, models = {}, {}
    for name, (cfg, lr) in runs.items():
        tc = TrainConfig(max_steps=a.steps, batch_size=16, lr=lr, weight_decay=0.0,
                         warmup_steps=min(30, a.steps // 10), eval_interval=a.steps, eval_batches=16, seed=0,
                         log_interval=a.steps)
        res = finetune(base, ds, "lora", cfg, tc, log=lambda s: None)
        model = res.model.eval()
        loss = evaluate(model, val)
        x = val[0][0]
        with no_grad():
            y = model(x)[0].data
            model.merge_adapter()
            err = float(np.abs(model(x)[0].data - y).max())
            model.unmerge_adapter()
        rows[name] = dict(params=res.trainable_params, loss=loss, err=err, lr=lr)
        models[name] = model.train()
        print(f"{name}: trained {a.steps} steps, loss {loss:.4f}", flush=True)

    shapes = [m.weight.shape for _, m in models["vera"].lora_layers()]
    print(f"parameter count on c_attn x {len(shapes)}: LoRA r 8 = {lora_parameter_count(shapes, 8):,}, "
          f"VeRA r {a.vera_r} = {vera_parameter_count(shapes, a.vera_r):,} "
          f"(LoRA at r {a.vera_r} would be {lora_parameter_count(shapes, a.vera_r):,})")

    rng = np.random.default_rng(1)
    steps, times = {}, {n: [] for n in models}
    for name, model in models.items():
        opt = AdamW(model.trainable_parameters(), lr=1e-4, weight_decay=0.0)

        def step(model=model, opt=opt):
            xb, yb = ds.get_batch("train", 16, T, rng)
            _, loss = model(xb, yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
        steps[name] = step
        step()                                                  # warm-up
    for _ in range(a.timing_steps):                             # alternate: both see the same machine
        for name in models:
            t0 = time.perf_counter()
            steps[name]()
            times[name].append(1e3 * (time.perf_counter() - t0))
    ms = {n: statistics.median(t) for n, t in times.items()}
    print("load after:", _uptime())
    print()
    print("| variant | trainable params | code val loss after {} steps | ms/step (vs LoRA) | merged vs unmerged "
          "max logit error |".format(a.steps))
    print("|---|---|---|---|---|")
    for name, r in rows.items():
        label = "LoRA r 8 (lr 1e-2)" if name == "lora" else f"VeRA r {a.vera_r} (lr {r['lr']:g})"
        print(f"| {label} | {r['params']:,} | {r['loss']:.4f} | {ms[name]:.0f} ({ms[name] / ms['lora']:.2f}x) | "
              f"{r['err']:.1e} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
