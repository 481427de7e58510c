"""minilora vs a nanoGPT-style PyTorch GPT-2 on the CPU (float32): forward-only inference, the full
training step and the LoRA step, for configs S and M and T = 64, 128, 256, 512 at a fixed number of
tokens per batch.

    python benchmarks/bench_train.py                          # S and M, all T, 3 rounds (~15 min quiet)
    python benchmarks/bench_train.py --configs M --T 128 --rounds 5
    python benchmarks/bench_train.py --threads 1              # both sides on one thread
    python benchmarks/bench_train.py --baseline /path/to/other/checkout   # + that minilora, interleaved

How it stays honest:
- PyTorch is written as its users write it (`torch_reference.py`: nn.Linear,
  F.scaled_dot_product_attention, torch.optim.AdamW defaults), with the same attention in its full
  and LoRA models, GPT-2 initialisation (PyTorch's default init makes denormal numbers, which are
  slow on this CPU) and flushed denormals; minilora runs as the CLI runs it (after
  `minilora.perf.configure_malloc()`), with AdamW at PyTorch's defaults (lr 1e-3, betas
  (0.9, 0.999), eps 1e-8, weight decay 0.01; minilora leaves biases and LayerNorm undecayed).
- Both start from the same weights (minilora's GPT-2 init, copied into torch) and batch; each worker
  computes the loss before timing, and the run stops if the two sides differ by more than 1e-5
  relative.
- Every (side, config, T, full|lora) block runs in a fresh process; blocks are interleaved, their
  order rotated each round; medians over rounds of per-block medians, ranges (min-max over rounds),
  and the 1-minute load average before each block are printed. Ratios (minilora / PyTorch) are per
  round, then the median: a disturbed spell hits both sides of a round alike.
- Threads: OPENBLAS_NUM_THREADS / OMP_NUM_THREADS / torch.set_num_threads = --threads (default 2).
Peak memory: the growth of the process's peak RSS during the timed steps (imports and weights
excluded), in MB.
torch is optional; without it only minilora's times are printed.
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

CONFIGS = {"S": (4, 4, 128, 1024), "M": (6, 6, 192, 2048)}  # n_layer, n_head, n_embd, tokens per batch
TS = (64, 128, 256, 512)
VOCAB, R, ALPHA = 256, 8, 16.0
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _rss_mb():
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def minilora_model(cfg, T, lora):
    """The shared starting point: minilora GPT-2 (seed 0) at block_size T, optionally LoRA r=8 on c_attn
    with lora_B drawn non-zero (so the LoRA branch is not trivially zero), and the batch."""
    from minilora.lora import LoraConfig, get_peft_model
    from minilora.nn import GPT, GPTConfig

    L, H, C, tokens = CONFIGS[cfg]
    model = GPT(GPTConfig(vocab_size=VOCAB, block_size=T, n_layer=L, n_head=H, n_embd=C), seed=0)
    rng = np.random.default_rng(1)
    if lora:
        model = get_peft_model(model, LoraConfig(r=R, lora_alpha=ALPHA, target_modules=["c_attn"]))
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.data = (0.01 * rng.standard_normal(p.shape)).astype(np.float32)
    B = tokens // T
    x, y = rng.integers(0, VOCAB, (B, T)), rng.integers(0, VOCAB, (B, T))
    return model, x, y


def _time(fn, warmup, steps):
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(steps):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return ts


def worker(side, cfg, T, kind, warmup, steps, threads):
    """One block in this fresh process; prints one JSON line."""
    lora = kind == "lora"
    model, x, y = minilora_model(cfg, T, lora)
    out = dict(side=side, cfg=cfg, T=T, kind=kind)
    if side == "torch":
        import torch
        from torch_reference import build_torch_gpt
        state = {n: p.data for n, p in model.named_parameters()}
        tm, params = build_torch_gpt(state, CONFIGS[cfg][0], CONFIGS[cfg][1],
                                     dict(r=R, alpha=ALPHA) if lora else None, threads)
        opt = torch.optim.AdamW(params)
        tx, ty = torch.from_numpy(x), torch.from_numpy(y)
        with torch.no_grad():
            out["loss0"] = float(tm(tx, ty)[1])

        def step():
            opt.zero_grad(set_to_none=True)
            _, loss = tm(tx, ty)
            loss.backward()
            opt.step()

        def infer():
            with torch.inference_mode():
                tm(tx)
    else:
        from minilora.optim import AdamW
        from minilora.perf import configure_malloc
        from minilora.tensor import no_grad
        out["configure_malloc"] = configure_malloc()
        opt = AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3, betas=(0.9, 0.999),
                    weight_decay=0.01)
        with no_grad():
            out["loss0"] = float(model(x, y)[1].item())

        def step():
            opt.zero_grad()
            _, loss = model(x, y)
            loss.backward()
            opt.step()

        def infer():
            with no_grad():
                model(x)
    rss0 = _rss_mb()
    if kind == "full":
        out["infer"] = _time(infer, warmup, steps)
    f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    out["step"] = _time(step, warmup, steps)
    out["faults_per_step"] = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0) / (warmup + steps)
    out["peak_growth_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - rss0
    print("RESULT " + json.dumps(out))


def _med_range(xs):
    return statistics.median(xs), min(xs), max(xs)


def _fmt(xs, scale=1e3, nd=1):
    m, lo, hi = _med_range([scale * v for v in xs])
    return f"{m:.{nd}f} ({lo:.{nd}f}-{hi:.{nd}f})"


def report(results, sides):
    """Print the tables; results: list of worker dicts (with 'round')."""
    by = {}
    for r in results:
        by.setdefault((r["cfg"], r["T"], r["kind"], r["side"]), []).append(r)
    print("\nms per call: median over rounds of per-block medians (min-max over rounds); ratio = minilora / "
          "PyTorch, per round, then median (min-max)")
    hdr = f"{'cfg':>3} {'T':>4} {'B':>3} {'what':<10} {'minilora ms':>22} {'PyTorch ms':>22} {'ratio':>18} " \
          f"{'ml MB':>6} {'pt MB':>6}"
    print(hdr)
    print("-" * len(hdr))
    cfgs = sorted({k[0] for k in by}, key=list(CONFIGS).index)
    for cfg in cfgs:
        for T in sorted({k[1] for k in by if k[0] == cfg}):
            B = CONFIGS[cfg][3] // T
            for what, kind, field in (("inference", "full", "infer"), ("full step", "full", "step"),
                                      ("LoRA step", "lora", "step")):
                row = {s: by.get((cfg, T, kind, s), []) for s in sides}
                meds = {s: {r["round"]: statistics.median(r[field]) for r in row[s]} for s in sides}
                mem = {s: statistics.median([r["peak_growth_mb"] for r in row[s]]) if row[s] and field == "step"
                       else float("nan") for s in sides}
                ml = _fmt(list(meds["minilora"].values())) if meds.get("minilora") else "-"
                if meds.get("baseline"):
                    ks = sorted(set(meds["baseline"]) & set(meds["minilora"]))
                    rel = _fmt([meds["minilora"][k] / meds["baseline"][k] for k in ks], 1, 2)
                    print(f"{cfg:>3} {T:>4} {B:>3} {what:<10} baseline {_fmt(list(meds['baseline'].values())):>22}"
                          f"  minilora / baseline {rel}")
                pt = _fmt(list(meds["torch"].values())) if meds.get("torch") else "-"
                rounds = sorted(set(meds.get("minilora", {})) & set(meds.get("torch", {})))
                ratio = _fmt([meds["minilora"][k] / meds["torch"][k] for k in rounds], 1, 2) if rounds else "-"
                print(f"{cfg:>3} {T:>4} {B:>3} {what:<10} {ml:>22} {pt:>22} {ratio:>18} "
                      f"{mem.get('minilora', float('nan')):6.0f} {mem.get('torch', float('nan')):6.0f}")
            for s in sides:
                if s == "baseline":
                    continue
                full = {r["round"]: statistics.median(r["step"]) for r in by.get((cfg, T, "full", s), [])}
                lo = {r["round"]: statistics.median(r["step"]) for r in by.get((cfg, T, "lora", s), [])}
                ks = sorted(set(full) & set(lo))
                if ks:
                    print(f"{'':>13}LoRA step / full step, {s}: {_fmt([lo[k] / full[k] for k in ks], 1, 2)}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--configs", default="S,M", help="comma-separated subset of " + ",".join(CONFIGS))
    ap.add_argument("--T", default=",".join(map(str, TS)), help="sequence lengths (tokens per batch fixed)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=5, help="timed calls per block (after --warmup)")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--kinds", default="full,lora")
    ap.add_argument("--out", default=None, help="also write the raw results as JSON")
    ap.add_argument("--blas-thread-timeout", type=int, default=None, metavar="N",
                    help="set OPENBLAS_THREAD_TIMEOUT=N for the minilora workers (OpenBLAS's idle threads spin "
                         "2^N cycles after each call; 4 = stop spinning soon; must be set before NumPy loads)")
    ap.add_argument("--baseline", default=None, metavar="DIR",
                    help="also time the minilora package found in DIR (another checkout), as side 'baseline'")
    ap.add_argument("--worker", nargs=4, metavar=("SIDE", "CFG", "T", "KIND"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        side, cfg, T, kind = args.worker
        return worker(side, cfg, int(T), kind, args.warmup, args.steps, args.threads)

    configs = [c for c in args.configs.split(",") if c]
    for c in configs:
        if c not in CONFIGS:
            ap.error(f"unknown config {c!r}; choose from {', '.join(CONFIGS)}")
    Ts = [int(t) for t in args.T.split(",")]
    try:
        import torch  # noqa: F401
        sides = ["minilora", "torch"]
    except ImportError:
        sides = ["minilora"]
        print("PyTorch not importable: minilora only (torch is not a dependency).")
    env = dict(os.environ, OPENBLAS_NUM_THREADS=str(args.threads), OMP_NUM_THREADS=str(args.threads),
               PYTHONPATH=os.pathsep.join(filter(None, [ROOT, os.path.join(ROOT, "benchmarks"),
                                                        os.environ.get("PYTHONPATH")])))
    envs = {s: env for s in sides}
    if args.blas_thread_timeout is not None:
        envs["minilora"] = dict(env, OPENBLAS_THREAD_TIMEOUT=str(args.blas_thread_timeout))
    if args.baseline:
        sides.insert(1, "baseline")
        envs["baseline"] = dict(envs["minilora"], PYTHONPATH=os.pathsep.join([os.path.abspath(args.baseline),
                                                                  os.path.join(ROOT, "benchmarks")]))
    blocks = [(s, c, T, k) for c in configs for T in Ts for k in args.kinds.split(",") for s in sides]
    results, checked = [], set()
    for rnd in range(args.rounds):
        order = blocks[rnd % len(blocks):] + blocks[:rnd % len(blocks)]
        print(f"round {rnd + 1}: uptime: {subprocess.run(['uptime'], capture_output=True, text=True).stdout.strip()}",
              file=sys.stderr, flush=True)
        for side, cfg, T, kind in order:
            load = os.getloadavg()[0]
            cmd = [sys.executable, __file__, "--worker", "minilora" if side == "baseline" else side, cfg, str(T), kind,
                   "--steps", str(args.steps),
                   "--warmup", str(args.warmup), "--threads", str(args.threads)]
            p = subprocess.run(cmd, env=envs[side], capture_output=True, text=True)
            line = [ln for ln in p.stdout.splitlines() if ln.startswith("RESULT ")]
            if p.returncode or not line:
                sys.exit(f"worker {side} {cfg} T={T} {kind} failed:\n{p.stderr[-3000:]}")
            res = json.loads(line[0][7:])
            res.update(round=rnd, load=load, side=side)
            results.append(res)
            extra = f"infer {1e3 * statistics.median(res['infer']):8.1f} ms  " if "infer" in res else ""
            print(f"  {cfg} T={T:<4} {kind:<4} {side:<8} step {1e3 * statistics.median(res['step']):8.1f} ms  "
                  f"{extra}loss0 {res['loss0']:.6f}  load {load:.2f}", file=sys.stderr, flush=True)
            key = (cfg, T, kind)
            both = [r for r in results if (r["cfg"], r["T"], r["kind"]) == key]
            if {"minilora", "torch"} <= {r["side"] for r in both} and key not in checked:
                l0 = {r["side"]: r["loss0"] for r in both}
                if abs(l0["minilora"] - l0["torch"]) > 1e-5 * abs(l0["torch"]):
                    sys.exit(f"{key}: the two sides compute different losses from the same weights: {l0}")
                checked.add(key)
        if args.out:
            with open(args.out, "w") as fh:
                json.dump(results, fh)
    if args.blas_thread_timeout is not None:
        print(f"\nminilora workers ran with OPENBLAS_THREAD_TIMEOUT={args.blas_thread_timeout}")
    print(f"\nfloat32, {args.threads} thread(s), vocab {VOCAB}, LoRA r={R} alpha={ALPHA:g} on c_attn; "
          f"{args.rounds} rounds x {args.steps} calls; losses equal to 1e-5 relative: "
          f"{len(checked)} of {len(set((c, T, k) for _, c, T, k in blocks))} blocks checked")
    print(f"load (1 min) during the blocks: median {statistics.median(r['load'] for r in results):.2f}, "
          f"max {max(r['load'] for r in results):.2f} on {os.cpu_count()} CPUs")
    report(results, sides)


if __name__ == "__main__":
    main()
