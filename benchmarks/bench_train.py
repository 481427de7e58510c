"""Training-step benchmark of minilora's GPT-2 (float32): ms/step, tokens/s, GFLOP/s, peak memory.

A step is forward + backward + AdamW (minilora.optim.AdamW when it exists, else the local Adam below).
Each (config, variant) block runs in a fresh subprocess, because `minilora.perf.configure_malloc()`
changes the whole process; blocks run alternately (S-off, S-on, M-off, M-on, then again) so a
disturbed spell of the shared machine hits every variant alike. Quote medians and ratios.

    python benchmarks/bench_train.py                  # configs S,M, 20 steps, 3 rounds
    python benchmarks/bench_train.py --configs S --steps 10 --rounds 1

The matmul ceiling is NumPy's float32 (1024, 1024) @ (1024, 1024) GFLOP/s, measured inside every
worker process (same run, same disturbance). When PyTorch is importable (not a dependency), the same
model and step are timed in PyTorch with 2 threads and the NumPy/PyTorch ratio is printed.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

import numpy as np

CONFIGS = {  # name: (n_layer, n_head, n_embd, block_size, batch)
    "S": (4, 4, 128, 64, 16),
    "M": (6, 6, 192, 128, 16),
}
VOCAB = 256
WARMUP = 3


def matmul_flops(n_layer, n_head, n_embd, block_size, batch, vocab=VOCAB):
    """FLOPs of the matmuls of one training step (forward + backward), causal mask not exploited.

    Dense part: every weight matrix used in a matmul (per layer c_attn 3C^2, attn.c_proj C^2,
    mlp.c_fc 4C^2, mlp.c_proj 4C^2 = 12 C^2; plus lm_head V C; embedding lookups are not matmuls)
    costs 2 FLOPs per weight per token forward and 4 backward (dx and dW):
        dense = 6 * (12 C^2 n_layer + V C) * B T
    Attention, per layer: Q K^T and P V are 2 * B nh T T hs FLOPs each forward, and backward
    is twice the forward (dQ, dK from dS; dP, dV from dY):
        attn = n_layer * 2*2 * B nh T T hs * 3
    """
    C, T, B = n_embd, block_size, batch
    hs = C // n_head
    dense = 6 * (12 * C * C * n_layer + vocab * C) * B * T
    attn = n_layer * 2 * 2 * B * n_head * T * T * hs * 3
    return dense + attn


def numpy_matmul_gflops(n=1024, reps=7):
    """Median float32 GFLOP/s of an (n, n) @ (n, n) NumPy matmul in this process."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n)).astype(np.float32)
    b = rng.standard_normal((n, n)).astype(np.float32)
    out = np.empty((n, n), dtype=np.float32)
    np.matmul(a, b, out=out)
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        np.matmul(a, b, out=out)
        times.append(time.perf_counter() - t0)
    return 2 * n ** 3 / statistics.median(times) / 1e9


class _LocalAdamW:
    """AdamW (Loshchilov & Hutter 2019), used only when minilora.optim.AdamW does not exist yet."""

    def __init__(self, params, lr=3e-4, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1):
        self.params = [p for p in params if p.requires_grad]
        self.lr, (self.b1, self.b2), self.eps, self.wd = lr, betas, eps, weight_decay
        self.m = [np.zeros_like(p.data) for p in self.params]
        self.v = [np.zeros_like(p.data) for p in self.params]
        self.t = 0

    def step(self):
        self.t += 1
        c1, c2 = 1 - self.b1 ** self.t, 1 - self.b2 ** self.t
        for p, m, v in zip(self.params, self.m, self.v):
            if p.grad is None:
                continue
            g = p.grad
            m *= self.b1
            m += (1 - self.b1) * g
            v *= self.b2
            v += (1 - self.b2) * (g * g)
            if self.wd and p.data.ndim >= 2:
                p.data *= p.data.dtype.type(1 - self.lr * self.wd)
            p.data -= (self.lr / c1) * m / (np.sqrt(v / c2) + self.eps)

    def zero_grad(self):
        for p in self.params:
            p.grad = None


def _minilora_step_fn(cfg_name):
    from minilora.nn import GPT, GPTConfig
    L, H, C, T, B = CONFIGS[cfg_name]
    model = GPT(GPTConfig(vocab_size=VOCAB, block_size=T, n_layer=L, n_head=H, n_embd=C), dtype=np.float32)
    try:
        from minilora.optim import AdamW
        opt, opt_name = AdamW(model.parameters(), lr=3e-4, weight_decay=0.1), "minilora.optim.AdamW"
    except ImportError:
        opt, opt_name = _LocalAdamW(model.parameters()), "local AdamW"
    rng = np.random.default_rng(0)
    x = rng.integers(0, VOCAB, (B, T))
    y = rng.integers(0, VOCAB, (B, T))

    def step():
        _, loss = model(x, y)
        for p in model.parameters():
            p.grad = None
        loss.backward()
        opt.step()
        return loss.item()

    return step, opt_name


def _torch_step_fn(cfg_name):
    import torch
    import torch.nn as tnn
    import torch.nn.functional as TF
    torch.set_num_threads(2)
    torch.manual_seed(0)
    L, H, C, T, B = CONFIGS[cfg_name]

    class Block(tnn.Module):
        def __init__(self):
            super().__init__()
            self.ln_1, self.ln_2 = tnn.LayerNorm(C), tnn.LayerNorm(C)
            self.c_attn, self.attn_proj = tnn.Linear(C, 3 * C), tnn.Linear(C, C)
            self.c_fc, self.mlp_proj = tnn.Linear(C, 4 * C), tnn.Linear(4 * C, C)
            self.register_buffer("mask", torch.triu(torch.ones(T, T, dtype=torch.bool), 1))

        def forward(self, x):
            Bz, Tz, _ = x.shape
            q, k, v = self.c_attn(self.ln_1(x)).split(C, dim=2)
            q, k, v = (t.view(Bz, Tz, H, C // H).transpose(1, 2) for t in (q, k, v))
            att = (q @ k.transpose(-2, -1)) * (1.0 / (C // H) ** 0.5)
            att = att.masked_fill(self.mask[:Tz, :Tz], float("-inf")).softmax(dim=-1)
            y = (att @ v).transpose(1, 2).reshape(Bz, Tz, C)
            x = x + self.attn_proj(y)
            return x + self.mlp_proj(TF.gelu(self.c_fc(self.ln_2(x)), approximate="tanh"))

    class TGPT(tnn.Module):
        def __init__(self):
            super().__init__()
            self.wte, self.wpe = tnn.Embedding(VOCAB, C), tnn.Embedding(T, C)
            self.h = tnn.ModuleList([Block() for _ in range(L)])
            self.ln_f = tnn.LayerNorm(C)

        def forward(self, idx, targets):
            x = self.wte(idx) + self.wpe(torch.arange(idx.shape[1]))
            for b in self.h:
                x = b(x)
            logits = self.ln_f(x) @ self.wte.weight.T                   # tied lm_head
            return TF.cross_entropy(logits.view(-1, VOCAB), targets.view(-1))

    model = TGPT()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4, betas=(0.9, 0.95), weight_decay=0.1)
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, VOCAB, (B, T), generator=g)
    y = torch.randint(0, VOCAB, (B, T), generator=g)

    def step():
        loss = model(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss.item()

    return step, "torch.optim.AdamW"


def worker(cfg_name, variant, steps):
    """Run one block in this (fresh) process; print one JSON line."""
    if variant == "malloc":
        from minilora.perf import configure_malloc
        configure_malloc()
    peak = numpy_matmul_gflops()
    step, opt_name = (_torch_step_fn if variant == "torch" else _minilora_step_fn)(cfg_name)
    for _ in range(WARMUP):
        step()
    times, faults = [], []
    for _ in range(steps):
        f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)
    maxrss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kilobytes
    print(json.dumps(dict(config=cfg_name, variant=variant, ms=1e3 * statistics.median(times),
                          faults=statistics.median(faults), peak_gflops=peak, maxrss_mb=maxrss_mb,
                          optimizer=opt_name)))


def _torch_available():
    try:
        import torch  # noqa: F401
        return True
    except ImportError:
        return False


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--configs", default="S,M", help="comma-separated subset of " + ",".join(CONFIGS))
    ap.add_argument("--steps", type=int, default=20, help="timed steps per block (after 3 warm-ups)")
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds of every block")
    ap.add_argument("--worker", nargs=2, metavar=("CONFIG", "VARIANT"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        return worker(args.worker[0], args.worker[1], args.steps)

    configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    for c in configs:
        if c not in CONFIGS:
            ap.error(f"unknown config {c!r}; choose from {', '.join(CONFIGS)}")
    variants = ["plain", "malloc"] + (["torch"] if _torch_available() else [])
    env = dict(os.environ, OMP_NUM_THREADS="2", OPENBLAS_NUM_THREADS="2")
    results = {}
    for r in range(args.rounds):
        for c in configs:
            for v in variants:
                out = subprocess.run([sys.executable, __file__, "--worker", c, v, "--steps", str(args.steps)],
                                     capture_output=True, text=True, env=env)
                if out.returncode:
                    sys.exit(f"worker {c}/{v} failed:\n{out.stderr}")
                res = json.loads(out.stdout.strip().splitlines()[-1])
                results.setdefault((c, v), []).append(res)
                print(f"  round {r + 1}: {c:>2} {v:<6} {res['ms']:8.1f} ms/step  "
                      f"{res['faults']:8.0f} faults/step  matmul peak {res['peak_gflops']:6.1f} GFLOP/s",
                      file=sys.stderr, flush=True)

    opt = results[(configs[0], "plain")][0]["optimizer"]
    print(f"\nminilora GPT-2 training step, float32, vocab {VOCAB}, optimizer {opt}; medians of "
          f"{args.rounds} rounds x {args.steps} steps (each block a fresh process)")
    hdr = (f"{'cfg':>3} {'variant':<7} {'ms/step':>8} {'tok/s':>8} {'GFLOP/s':>8} {'% matmul':>8} "
           f"{'faults':>8} {'maxrss MB':>9} {'vs plain':>8} {'vs torch':>8}")
    print(hdr)
    print("-" * len(hdr))
    for c in configs:
        L, H, C, T, B = CONFIGS[c]
        flops = matmul_flops(L, H, C, T, B)
        med = lambda v, k: statistics.median(x[k] for x in results[(c, v)])  # noqa: E731
        plain_ms = med("plain", "ms")
        torch_ms = med("torch", "ms") if (c, "torch") in results else None
        for v in variants:
            ms = med(v, "ms")
            gf = flops / (ms / 1e3) / 1e9
            print(f"{c:>3} {v:<7} {ms:8.1f} {B * T / (ms / 1e3):8.0f} {gf:8.1f} "
                  f"{100 * gf / med(v, 'peak_gflops'):7.1f}% {med(v, 'faults'):8.0f} {med(v, 'maxrss_mb'):9.0f} "
                  f"{ms / plain_ms:8.2f} {'-' if torch_ms is None else f'{ms / torch_ms:.2f}':>8}")
    peaks = [x["peak_gflops"] for xs in results.values() for x in xs]
    print(f"NumPy float32 1024^3 matmul: median {statistics.median(peaks):.1f} GFLOP/s over {len(peaks)} "
          f"processes; matmul FLOPs/step: " + ", ".join(f"{c} {matmul_flops(*CONFIGS[c]) / 1e9:.2f} G"
                                                           for c in configs))
    if "torch" not in variants:
        print("PyTorch not importable: no PyTorch comparison (it is not a dependency).")


if __name__ == "__main__":
    main()
