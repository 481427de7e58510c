"""Where the time of one training step goes: a per-op profile of minilora's GPT-2 (float32).

Every `Function` subclass's forward and backward is wrapped with a timer (in this process only), so
the table lists, per op, the median over steps of its forward and backward milliseconds; the rest is
split into the optimizer (`AdamW.step`), zero_grad, and the engine's own Python work (graph
recording, topological sort, gradient bookkeeping = step time minus everything timed). Page faults
per step (allocation that reaches the kernel) and the growth of the peak RSS over the steps (what
the graph keeps for backward, plus temporaries) come from `getrusage` (Linux).

    python benchmarks/profile_step.py                    # config M, full step, 10 steps
    python benchmarks/profile_step.py --config S --lora  # LoRA r=8 on c_attn
    python benchmarks/profile_step.py --no-malloc        # without minilora.perf.configure_malloc()

Categories: "GEMM" ops are those whose time is almost all BLAS matrix products (Linear, MatMul,
the LoRA op); Attention is listed on its own (its two batched GEMMs per direction plus the softmax,
mask and scaling passes); everything else is elementwise / reduction work. The timer wrappers add
about 1 microsecond per op call; the step has about 70 op calls. The machine is shared: quote the
shares, and compare before/after in one sitting.
"""
from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import time
from collections import defaultdict

import numpy as np

CONFIGS = {"S": (4, 4, 128, 64, 16), "M": (6, 6, 192, 128, 16)}  # n_layer, n_head, n_embd, T, B
GEMM_OPS = {"Linear", "MatMul", "LoRAFunction"}


def _subclasses(cls):
    out = []
    for c in cls.__subclasses__():
        out.append(c)
        out.extend(_subclasses(c))
    return out


def _rss_mb():
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def instrument(stats):
    """Wrap forward/backward of every Function subclass to add its wall time to stats[(name, dir)]."""
    from minilora.function import Function

    for cls in set(_subclasses(Function)):
        for direction in ("forward", "backward"):
            if direction not in cls.__dict__:
                continue
            fn = cls.__dict__[direction].__func__

            def timed(*a, _fn=fn, _key=(cls.__name__, direction), **k):
                t0 = time.perf_counter()
                try:
                    return _fn(*a, **k)
                finally:
                    stats[_key] += time.perf_counter() - t0
            setattr(cls, direction, staticmethod(timed))


def build(config, lora):
    from minilora.lora import LoraConfig, get_peft_model
    from minilora.nn import GPT, GPTConfig
    from minilora.optim import AdamW

    L, H, C, T, B = CONFIGS[config]
    model = GPT(GPTConfig(n_layer=L, n_head=H, n_embd=C, block_size=T), seed=0)
    if lora:
        model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules=["c_attn"]))
    opt = AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-4, weight_decay=0.1)
    rng = np.random.default_rng(0)
    return model, opt, rng.integers(0, 256, (B, T)), rng.integers(0, 256, (B, T))


def profile(config, lora, steps, malloc):
    if malloc:
        from minilora.perf import configure_malloc
        configure_malloc()
    model, opt, x, y = build(config, lora)
    rss0 = _rss_mb()
    stats = defaultdict(float)
    parts = defaultdict(list)
    per_op = defaultdict(list)
    for i in range(3 + steps):
        if i == 3:
            instrument(stats)
        stats.clear()
        f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        t0 = time.perf_counter()
        opt.zero_grad()
        t1 = time.perf_counter()
        _, loss = model(x, y)
        t2 = time.perf_counter()
        loss.backward()
        t3 = time.perf_counter()
        opt.step()
        t4 = time.perf_counter()
        if i >= 3:
            for k, v in (("zero_grad", t1 - t0), ("forward", t2 - t1), ("backward", t3 - t2),
                         ("optimizer", t4 - t3), ("step", t4 - t0)):
                parts[k].append(v)
            parts["faults"].append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)
            for k in set(per_op) | set(stats):
                per_op[k].append(stats.get(k, 0.0))
    parts["peak_growth_mb"] = [resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - rss0]
    # medians over steps, per op and per part: one disturbed step does not skew the table
    return (defaultdict(float, {k: statistics.median(v) for k, v in per_op.items()}),
            {k: statistics.median(v) for k, v in parts.items()})


def report(stats, parts, title):
    ms = lambda s: 1e3 * s  # noqa: E731
    step = parts["step"]
    ops = sorted({k[0] for k in stats}, key=lambda n: -(stats[(n, "forward")] + stats[(n, "backward")]))
    lines = [f"### {title}", "", f"step {ms(step):.1f} ms (median); page faults/step {parts['faults']:.0f}; "
             f"peak RSS growth over the steps {parts['peak_growth_mb']:.0f} MB; load {os.getloadavg()[0]:.2f}", "",
             "| op | category | forward ms | backward ms | share of step |", "|---|---|---|---|---|"]
    cat_tot = defaultdict(float)
    for n in ops:
        f, b = stats[(n, "forward")], stats[(n, "backward")]
        cat = "GEMM" if n in GEMM_OPS else ("attention" if n == "Attention" else "elementwise/reduce")
        cat_tot[cat] += f + b
        lines.append(f"| {n} | {cat} | {ms(f):.2f} | {ms(b):.2f} | {100 * (f + b) / step:.1f}% |")
    timed_ops = sum(stats.values())
    engine = step - timed_ops - parts["optimizer"] - parts["zero_grad"]
    lines += ["", "| category | ms/step | share |", "|---|---|---|"]
    for cat in ("GEMM", "attention", "elementwise/reduce"):
        lines.append(f"| {cat} | {ms(cat_tot[cat]):.1f} | {100 * cat_tot[cat] / step:.1f}% |")
    lines.append(f"| optimizer (AdamW.step) | {ms(parts['optimizer']):.1f} | {100 * parts['optimizer'] / step:.1f}% |")
    lines.append(f"| zero_grad | {ms(parts['zero_grad']):.2f} | {100 * parts['zero_grad'] / step:.1f}% |")
    lines.append(f"| engine Python (graph, sort, grad bookkeeping) | {ms(engine):.1f} | {100 * engine / step:.1f}% |")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="M", choices=sorted(CONFIGS))
    ap.add_argument("--lora", action="store_true", help="LoRA r=8 on c_attn instead of full fine-tuning")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--no-malloc", action="store_true", help="skip minilora.perf.configure_malloc()")
    ap.add_argument("--inprocess", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if not args.inprocess:       # a fresh process, so configure_malloc and the op wrappers start clean
        cmd = [sys.executable, __file__, "--inprocess", "--config", args.config, "--steps", str(args.steps)]
        cmd += ["--lora"] * args.lora + ["--no-malloc"] * args.no_malloc
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        env = dict(os.environ, OPENBLAS_NUM_THREADS=os.environ.get("OPENBLAS_NUM_THREADS", "2"),
                   PYTHONPATH=os.pathsep.join(filter(None, [os.environ.get("PYTHONPATH"), root])))
        return subprocess.run(cmd, env=env, check=True).returncode
    stats, parts = profile(args.config, args.lora, args.steps, not args.no_malloc)
    kind = "LoRA r=8 (c_attn)" if args.lora else "full"
    print(report(stats, parts, f"config {args.config}, {kind} step, float32, "
                               f"OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS')}"))


if __name__ == "__main__":
    main()
