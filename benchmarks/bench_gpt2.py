"""A real GPT-2 size (124M: 12 layers, 12 heads, n_embd 768, vocab 50257, 1024 positions) in NumPy.

    python benchmarks/bench_gpt2.py                       # LoRA r=8 on c_attn, batch 4 x 128, float32
    python benchmarks/bench_gpt2.py --steps 3 --gen-tokens 8

Random weights (nothing is downloaded; the speed and memory do not depend on the values). Measures,
after `minilora.perf.configure_malloc()`:
  * the LoRA training step (forward, backward, AdamW on the adapters) at batch 4 x 128 tokens:
    median ms/step over --steps steps after one warm-up step;
  * peak memory: the process's peak resident set size (getrusage ru_maxrss), after building the
    model, and after the steps; and the parameter bytes (124M x 4 bytes);
  * generation: tokens/s of `GPT.generate` for --gen-tokens tokens after a 16-token prompt.
The machine is shared: `uptime` is printed with the figures. Run it once, not in a loop.
"""
from __future__ import annotations

import argparse
import os
import resource
import statistics
import time

import numpy as np


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far, MiB (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=5, help="timed LoRA steps (default 5)")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--T", type=int, default=128)
    ap.add_argument("--r", type=int, default=8)
    ap.add_argument("--gen-tokens", type=int, default=16)
    args = ap.parse_args()

    from minilora import perf
    from minilora.lora import LoraConfig, get_peft_model
    from minilora.nn import GPT, GPTConfig
    from minilora.optim import AdamW

    perf.configure_malloc()
    print("load:", os.popen("uptime").read().strip())
    print(f"OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS', 'unset')}")
    t0 = time.perf_counter()
    gpt = GPT(GPTConfig(vocab_size=50257, block_size=1024, n_layer=12, n_head=12, n_embd=768), seed=0)
    n_params = gpt.num_parameters()
    print(f"GPT-2 124M config: {n_params / 1e6:.1f}M parameters ({n_params * 4 / 2**20:.0f} MiB float32), "
          f"built in {time.perf_counter() - t0:.1f} s; peak RSS {peak_rss_mib():.0f} MiB")
    model = get_peft_model(gpt, LoraConfig(r=args.r, lora_alpha=2 * args.r, target_modules=["c_attn"]))
    for p in model.trainable_parameters():          # B != 0, so the LoRA branch does real work
        if not p.data.any():
            p.data = np.full_like(p.data, 1e-3)
    t, a = model.get_nb_trainable_parameters()
    opt = AdamW(model.trainable_parameters(), lr=1e-4, weight_decay=0.0)
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 50257, (args.batch, args.T)), rng.integers(0, 50257, (args.batch, args.T))
    model.train()

    def step():
        _, loss = model(x, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return float(loss.data)

    times = []
    for i in range(args.steps + 1):
        s0 = time.perf_counter()
        loss = step()
        if i:                                       # step 0 is the warm-up
            times.append(time.perf_counter() - s0)
    print(f"LoRA r={args.r} on c_attn ({t:,} trainable of {a:,}): batch {args.batch} x {args.T} float32: "
          f"{1e3 * statistics.median(times):.0f} ms/step (median of {len(times)}; min {1e3 * min(times):.0f}, "
          f"max {1e3 * max(times):.0f}); loss {loss:.3f} (ln 50257 = {np.log(50257):.3f}); "
          f"peak RSS {peak_rss_mib():.0f} MiB")
    prompt = rng.integers(0, 50257, (1, 16))
    model.eval()
    g0 = time.perf_counter()
    model.generate(prompt, args.gen_tokens, temperature=0)
    dt = time.perf_counter() - g0
    print(f"generate: {args.gen_tokens} tokens after a 16-token prompt in {dt:.1f} s = "
          f"{args.gen_tokens / dt:.1f} tokens/s (greedy, batch 1); peak RSS {peak_rss_mib():.0f} MiB")
    print("load:", os.popen("uptime").read().strip())


if __name__ == "__main__":
    main()
