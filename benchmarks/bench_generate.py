"""Generation speed with and without the KV cache (`GPT.generate(..., use_cache=...)`), float32.

    python benchmarks/bench_generate.py                      # S, M and a GPT-2 124M-sized random model
    python benchmarks/bench_generate.py --models S,M --new 64

Greedy decoding (temperature 0) of --new tokens after a --prompt-token prompt, batch 1. Each model's
cached and uncached runs alternate over --rounds rounds in one process; tokens/s are medians. The
two runs must produce the same tokens (checked). Without the cache each token re-runs the whole
context (O(T) positions per token); with it, one position per token plus attention over the cached
keys. The 124M model is random (GPT-2 small's shapes: 12 layers, 12 heads, 768 channels, vocab 50257,
block 1024), for speed only.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

import numpy as np

MODELS = {  # n_layer, n_head, n_embd, block_size, vocab
    "S": (4, 4, 128, 64, 256),
    "M": (6, 6, 192, 128, 256),
    "gpt2-124M": (12, 12, 768, 1024, 50257),
}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--prompt", type=int, default=16, help="prompt tokens")
    ap.add_argument("--new", type=int, default=32, help="tokens generated (S and M are capped to block_size)")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args(argv)
    from minilora.nn import GPT, GPTConfig
    from minilora.nn.kv_cache import KVCache
    from minilora.perf import configure_malloc

    configure_malloc()
    print(f"uptime: {subprocess.run(['uptime'], capture_output=True, text=True).stdout.strip()}")
    print(f"OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS', '<unset>')}; greedy, batch 1, "
          f"prompt {args.prompt} tokens; medians of {args.rounds} alternating rounds")
    print(f"{'model':<10} {'new':>4} {'cached tok/s':>13} {'uncached tok/s':>15} {'speed-up':>9} {'cache MB':>9} load")
    for name in args.models.split(","):
        L, H, C, T, V = MODELS[name]
        model = GPT(GPTConfig(vocab_size=V, block_size=T, n_layer=L, n_head=H, n_embd=C), seed=0)
        new = min(args.new, T - args.prompt)
        idx = np.random.default_rng(0).integers(0, V, (1, args.prompt))
        times = {True: [], False: []}
        outs = {}
        for _ in range(args.rounds):
            for use_cache in (True, False):
                t0 = time.perf_counter()
                outs[use_cache] = model.generate(idx, new, temperature=0, use_cache=use_cache)
                times[use_cache].append(time.perf_counter() - t0)
        if not np.array_equal(outs[True], outs[False]):
            sys.exit(f"{name}: cached and uncached greedy decoding differ")
        c, u = (new / statistics.median(times[k]) for k in (True, False))
        mb = KVCache.for_model(model, 1).nbytes() / 2**20
        print(f"{name:<10} {new:>4} {c:13.1f} {u:15.1f} {c / u:8.1f}x {mb:9.1f} {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
