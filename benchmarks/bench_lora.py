"""LoRA benchmark (float32): training step LoRA vs full fine-tuning, the hand-derived fused LoRA op vs
its composed autograd twin, merged vs unmerged inference, optimizer-state bytes, and (when PyTorch is
importable) the same LoRA step in PyTorch (benchmarks/torch_reference.py: nanoGPT-style, the same
scaled_dot_product_attention as the full model, same weights and batch, loss checked equal first).
In-process, so both libraries' thread pools share one process: the cross-library figures that count
come from benchmarks/bench_train.py (fresh process per block).

    python benchmarks/bench_lora.py                 # configs S and M, 15 timed steps, 3 rounds
    python benchmarks/bench_lora.py --configs S --steps 8 --rounds 1

Targets (issue "LoRA ..."): a LoRA step <= 0.8x a full fine-tuning step; merged inference within 2% of
the base model; the fused op faster than the composed one; the LoRA step <= 1.5x PyTorch's.
The machine has disturbed spells: variants are timed alternately in one process (after
`minilora.perf.configure_malloc()`), repeated over rounds, and reported as medians and ratios.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time

import numpy as np

CONFIGS = {"S": (4, 4, 128, 64, 16), "M": (6, 6, 192, 128, 16)}  # n_layer, n_head, n_embd, T, B
R, ALPHA = 8, 16.0


def _median_ms(fn, reps):
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(ts)


def minilora_setup(cfg_name):
    from minilora.finetune import copy_model
    from minilora.lora import LoraConfig, get_peft_model
    from minilora.nn import GPT, GPTConfig
    from minilora.optim import AdamW

    L, H, C, T, B = CONFIGS[cfg_name]
    base = GPT(GPTConfig(n_layer=L, n_head=H, n_embd=C, block_size=T), seed=0)
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 256, (B, T)), rng.integers(0, 256, (B, T))

    def make_step(model):
        params = [p for p in model.parameters() if p.requires_grad]
        opt = AdamW(params, lr=1e-4, weight_decay=0.0)

        def step():
            _, loss = model(x, y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        return step, opt

    full = copy_model(base)
    lora = get_peft_model(copy_model(base), LoraConfig(r=R, lora_alpha=ALPHA, target_modules=["c_attn"]))
    for p in lora.parameters():                      # B != 0 so the LoRA branch is not trivially zero
        if p.requires_grad and p.data.ndim == 2 and not p.data.any():
            p.data[...] = rng.standard_normal(p.shape).astype(p.dtype) * 0.01
    full_step, full_opt = make_step(full)
    lora_step, lora_opt = make_step(lora)
    merged = copy_model(base)
    mlora = get_peft_model(merged, LoraConfig(r=R, lora_alpha=ALPHA, target_modules=["c_attn"]))
    mlora.load_state_dict(lora.state_dict())
    mlora.merge_adapter()
    for m in (base, lora, mlora):
        m.eval()
    return dict(x=x, y=y, full_step=full_step, lora_step=lora_step, base=base, lora=lora, merged=mlora,
                full_state=full_opt.state_bytes(), lora_state=lora_opt.state_bytes(),
                n_full=sum(p.size for p in full.parameters()),
                n_lora=sum(p.size for p in lora.parameters() if p.requires_grad))


def op_setup(cfg_name):
    """The c_attn layer of the config: fused hand-derived LoRA op vs the composed autograd twin."""
    from minilora.lora.layer import lora_linear, lora_linear_composed
    from minilora.tensor import Tensor

    L, H, C, T, B = CONFIGS[cfg_name]
    rng = np.random.default_rng(1)

    def f32(*s):
        return rng.standard_normal(s).astype(np.float32)
    x = Tensor(f32(B, T, C), requires_grad=True)
    W0, b = f32(3 * C, C) * 0.02, f32(3 * C) * 0.0
    A = Tensor(f32(R, C) * 0.1, requires_grad=True)
    Bm = Tensor(f32(3 * C, R) * 0.1, requires_grad=True)
    g = f32(B, T, 3 * C)

    def run(fn):
        def go():
            x.grad = A.grad = Bm.grad = None
            fn(x, W0, b, A, Bm, ALPHA / R).backward(g)
        return go
    return run(lora_linear), run(lora_linear_composed)


def torch_lora_step(s):
    """The same LoRA step in PyTorch (benchmarks/torch_reference.py: nanoGPT-style, the same
    F.scaled_dot_product_attention as its full model), from the same weights and batch as minilora's
    LoRA model; raises if the two losses differ by more than 1e-5 relative."""
    import torch
    from torch_reference import build_torch_gpt

    from minilora.tensor import no_grad

    lora = s["lora"]
    cfg = lora.config
    model, params = build_torch_gpt({n: p.data for n, p in lora.named_parameters()}, cfg.n_layer, cfg.n_head,
                                    dict(r=R, alpha=ALPHA))
    opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.0)
    x, y = torch.from_numpy(s["x"]), torch.from_numpy(s["y"])
    with torch.no_grad():
        lt = float(model(x, y)[1])
    with no_grad():
        lm = float(lora(s["x"], s["y"])[1].item())
    if abs(lt - lm) > 1e-5 * abs(lt):
        raise SystemExit(f"PyTorch and minilora LoRA models compute different losses: {lt} vs {lm}")

    def step():
        _, loss = model(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return step


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--configs", default="S,M")
    ap.add_argument("--steps", type=int, default=15)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args(argv)
    from minilora.perf import configure_malloc
    from minilora.tensor import no_grad
    print(f"configure_malloc: {configure_malloc()}")
    try:
        import torch  # noqa: F401
        have_torch = True
    except ImportError:
        have_torch = False
    for cfg_name in args.configs.split(","):
        s = minilora_setup(cfg_name)
        fused, composed = op_setup(cfg_name)
        tstep = torch_lora_step(s) if have_torch else None
        x = s["x"]

        def infer(m, x=x):
            def go():
                with no_grad():
                    m(x)
            return go
        variants = {"full step": s["full_step"], "LoRA step": s["lora_step"], "fused LoRA op": fused,
                    "composed LoRA op": composed, "base inference": infer(s["base"]),
                    "unmerged inference": infer(s["lora"]), "merged inference": infer(s["merged"])}
        if tstep:
            variants["PyTorch LoRA step"] = tstep
        for fn in variants.values():
            fn()
            fn()
        res = {k: [] for k in variants}
        for _ in range(args.rounds):
            for k, fn in variants.items():                        # alternate variants within each round
                reps = args.steps * (4 if "inference" in k else 1)   # inference is cheap and noisier: more reps
                res[k].append(_median_ms(fn, reps))
        med = {k: statistics.median(v) for k, v in res.items()}
        print(f"\n== config {cfg_name} {CONFIGS[cfg_name]} (n_layer, n_head, n_embd, T, B), float32, r={R} on c_attn")
        for k, v in med.items():
            print(f"  {k:<22} {v:9.2f} ms")

        def ratio(a, b, med=med):
            return med[a] / med[b]
        print(f"  LoRA step / full step           {ratio('LoRA step', 'full step'):.2f}   (target <= 0.80)")
        print(f"  fused op / composed op          {ratio('fused LoRA op', 'composed LoRA op'):.2f}   (target < 1)")
        print(f"  merged / base inference         {ratio('merged inference', 'base inference'):.3f}  (target <= 1.02)")
        print(f"  unmerged / base inference       {ratio('unmerged inference', 'base inference'):.3f}")
        if tstep:
            print(f"  LoRA step / PyTorch LoRA step   {ratio('LoRA step', 'PyTorch LoRA step'):.2f}   (target <= 1.5)")
        else:
            print("  (PyTorch not importable: `pip install torch==2.13.0` to compare)")
        print(f"  optimizer state: full {s['full_state'] / 2**20:.2f} MiB vs LoRA {s['lora_state'] / 2**10:.1f} KiB "
              f"({s['n_full']:,} vs {s['n_lora']:,} trainable parameters)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
