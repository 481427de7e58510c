"""Serving many LoRA adapters at once: a mixed-adapter batch vs one merged adapter (shipped base, config S).

    python benchmarks/bench_many_adapters.py                   # 4 adapters, batch 16 x 64, 15 rounds
    python benchmarks/bench_many_adapters.py --adapters 8 --rounds 5

One forward pass (eval, no_grad) over the same batch of B = 16 rows of T = 64 bytes, timed alternately
in one process (after `minilora.perf.configure_malloc()`), medians over the rounds:

    merged      one adapter merged into W (W0 + ΔW): the plain model's cost, serves ONE adapter
    unmerged    one adapter, unmerged (x W0ᵀ + s (x Aᵀ) Bᵀ on every row): serves one adapter
    mixed       K adapters, each row its own (the rows spread evenly): base GEMM once, then each
                adapter's thin GEMMs on its rows (S-LoRA / Punica SGMV style; lora/adapters.py)
    per-adapter K forward passes, one per adapter on its own rows (set_adapter in between): what
                a server without mixed batches does

It also checks that each mixed row equals the row run with its adapter alone (max abs logit error).
The load (`uptime`) is printed before and after: the machine is shared.
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
    p.add_argument("--adapters", type=int, default=4)
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--r", type=int, default=8)
    a = p.parse_args(argv)

    from minilora import no_grad, perf
    from minilora.checkpoints import load_pretrained
    from minilora.lora import LoraConfig, get_peft_model

    perf.configure_malloc()
    print("load before:", _uptime(), flush=True)
    names = [f"a{i}" for i in range(a.adapters)]
    model = get_peft_model(load_pretrained(), LoraConfig(r=a.r, init_lora_weights=False), adapter_name=names[0])
    for n in names[1:]:
        model.add_adapter(n, LoraConfig(r=a.r, init_lora_weights=False))
    model.eval()
    T = model.config.block_size
    idx = np.random.default_rng(0).integers(0, 256, (a.batch, T))
    rows = [names[i % a.adapters] for i in range(a.batch)]

    def merged():
        return model(idx)[0].data

    def unmerged():
        return model(idx)[0].data

    def mixed():
        return model(idx, adapter_names=rows)[0].data

    def per_adapter():
        out = np.empty((a.batch, T, 256), dtype=np.float32)
        for n in names:
            sel = [i for i, r in enumerate(rows) if r == n]
            model.set_adapter(n)
            out[sel] = model(idx[sel])[0].data
        model.set_adapter(names[0])
        return out

    with no_grad():
        ref = per_adapter()
        err = float(np.abs(mixed() - ref).max())
        times = {k: [] for k in ("merged", "unmerged", "mixed", "per-adapter")}
        for _ in range(a.rounds):
            for key, fn in (("unmerged", unmerged), ("mixed", mixed), ("per-adapter", per_adapter)):
                t0 = time.perf_counter()
                fn()
                times[key].append(1e3 * (time.perf_counter() - t0))
            model.merge_adapter()
            t0 = time.perf_counter()
            merged()
            times["merged"].append(1e3 * (time.perf_counter() - t0))
            model.unmerge_adapter()
    ms = {k: statistics.median(v) for k, v in times.items()}
    print("load after:", _uptime())
    print(f"{a.adapters} adapters (r {a.r} on c_attn), batch {a.batch} x {T}; mixed row == row alone: "
          f"max abs logit error {err:.1e}")
    print("| forward pass | serves | ms (median) | vs merged |")
    print("|---|---|---|---|")
    serves = {"merged": "1 adapter", "unmerged": "1 adapter", "mixed": f"{a.adapters} adapters",
              "per-adapter": f"{a.adapters} adapters"}
    for k in ("merged", "unmerged", "mixed", "per-adapter"):
        print(f"| {k} | {serves[k]} | {ms[k]:.1f} | {ms[k] / ms['merged']:.2f}x |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
