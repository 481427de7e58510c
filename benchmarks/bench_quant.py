"""QLoRA benchmark: NF4 quantize / dequantize throughput, the QLoRA step vs the LoRA step, base memory,
and (with --loss-steps) the quality figures: QLoRA vs LoRA validation loss after the same steps, the
LoftQ vs QLoRA start, and merging into the 4-bit base kept float vs re-quantized.

    python benchmarks/bench_quant.py                      # throughput + steps on configs S and M
    python benchmarks/bench_quant.py --configs S --rounds 1 --steps 5
    python benchmarks/bench_quant.py --loss-steps 300 --configs ""   # the quality figures (pydoc-s -> stdlib)

Targets (issue 14): a QLoRA step at most 1.5x the LoRA step; base memory at most 0.16x of float32.
Steps are timed alternately (LoRA, QLoRA, LoRA, ...) in one process after `perf.configure_malloc()`,
over rounds, reported as medians and their ratio; the load (`os.getloadavg`) is printed with them.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np

CONFIGS = {"S": (4, 4, 128, 64, 16), "M": (6, 6, 192, 128, 16)}  # n_layer, n_head, n_embd, T, B (bench_lora's)
R, ALPHA = 8, 16.0


def load() -> str:
    return "load average %.2f %.2f %.2f" % os.getloadavg()


def throughput(reps: int = 3) -> None:
    from minilora.quant import quantize_4bit
    W = np.random.default_rng(0).normal(0, 0.02, (768, 3072)).astype(np.float32)     # 9.4 MB, a GPT-2 c_fc
    mb = W.nbytes / 1e6
    for dq in (False, True):
        tq, td = [], []
        for _ in range(reps):
            t0 = time.perf_counter()
            st = quantize_4bit(W, double_quant=dq)
            t1 = time.perf_counter()
            st.dequantize()
            td.append(time.perf_counter() - t1)
            tq.append(t1 - t0)
        print(f"  {'NF4 + DQ' if dq else 'NF4     '} on {W.shape} float32 ({mb:.1f} MB): quantize "
              f"{mb / statistics.median(tq):6.0f} MB/s, dequantize {mb / statistics.median(td):6.0f} MB/s")


def step_setup(cfg_name: str):
    from minilora.finetune import copy_model
    from minilora.lora import LoraConfig, get_peft_model
    from minilora.nn import GPT, GPTConfig
    from minilora.optim import AdamW
    from minilora.quant import base_memory, quantize_model

    L, H, C, T, B = CONFIGS[cfg_name]
    base = GPT(GPTConfig(n_layer=L, n_head=H, n_embd=C, block_size=T), seed=0)
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 256, (B, T)), rng.integers(0, 256, (B, T))
    steps = {}
    models = {}
    for name in ("lora", "qlora"):
        model = get_peft_model(copy_model(base), LoraConfig(r=R, lora_alpha=ALPHA, target_modules=["c_attn"]))
        for p in model.parameters():                 # B != 0 so the LoRA branch is not trivially zero
            if p.requires_grad and p.data.ndim == 2 and not p.data.any():
                p.data[...] = np.random.default_rng(1).standard_normal(p.shape).astype(p.dtype) * 0.01
        if name == "qlora":
            quantize_model(model)
        opt = AdamW(model.trainable_parameters(), lr=1e-4, weight_decay=0.0)

        def step(model=model, opt=opt):
            _, loss = model(x, y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        steps[name] = step
        models[name] = model
    return steps, base_memory(models["qlora"])


def bench_steps(configs, steps_per_round: int, rounds: int) -> None:
    for c in configs:
        steps, mem = step_setup(c)
        for s in steps.values():
            s()                                      # warm-up
        times = {k: [] for k in steps}
        for _ in range(rounds):
            for _ in range(steps_per_round):
                for k, s in steps.items():           # interleaved
                    t0 = time.perf_counter()
                    s()
                    times[k].append(time.perf_counter() - t0)
        lo, q = (1e3 * statistics.median(times[k]) for k in ("lora", "qlora"))
        ratio = mem["nf4_dq"] / mem["float32"]
        print(f"  config {c}: LoRA step {lo:6.1f} ms, QLoRA step {q:6.1f} ms, ratio {q / lo:.2f} "
              f"(target <= 1.5: {'met' if q / lo <= 1.5 else 'NOT met'}); base weights NF4+DQ {ratio:.3f} x float32 "
              f"(target <= 0.16: {'met' if ratio <= 0.16 else 'NOT met'}); {load()}")


def quality(n_steps: int) -> None:
    """QLoRA vs LoRA after the same steps; LoftQ vs QLoRA start; merge kept float vs re-quantized."""
    from minilora.checkpoints import load_pretrained
    from minilora.data import TokenDataset, load_corpus
    from minilora.finetune import copy_model, finetune
    from minilora.lora import LoraConfig, get_peft_model
    from minilora.quant import merge_and_unload_quantized, quantize_4bit, quantize_model
    from minilora.train import TrainConfig, evaluate

    base = load_pretrained("pydoc-s")
    ds = TokenDataset(load_corpus("stdlib"))
    val = ds.fixed_batches("val", 16, 16, base.config.block_size, seed=0)
    targets = ["c_attn", "c_proj", "c_fc"]
    lcfg = LoraConfig(r=R, lora_alpha=ALPHA, target_modules=targets)
    print(f"  pydoc-s -> stdlib, r={R}, alpha={ALPHA:g}, targets {targets}, {n_steps} steps; float base val "
          f"{evaluate(base, val):.4f}")
    starts = {}
    for name, init in (("QLoRA (B = 0)", True), ("LoftQ (T = 1)", "loftq")):
        m = get_peft_model(copy_model(base), lcfg.replace(init_lora_weights=init))
        quantize_model(m)
        err = 0.0
        for lname, layer in m.named_modules():
            if hasattr(layer, "lora_A"):
                W = base.get_submodule(lname).weight.data.astype(np.float64)
                err += np.linalg.norm(W - layer.weight.dequantize(np.float64) - layer.delta_weight()) ** 2
        starts[name] = (np.sqrt(err), evaluate(m, val))
        print(f"  start {name}: sqrt(sum ||W - (Q + sBA)||_F^2) = {starts[name][0]:.4f}, val loss "
              f"{starts[name][1]:.4f}")
    tcfg = TrainConfig(max_steps=n_steps, batch_size=16, lr=1e-2, weight_decay=0.0, warmup_steps=min(30, n_steps // 10),
                       eval_interval=n_steps, eval_batches=4, seed=0, log_interval=n_steps)
    res = {}
    for name, q in (("LoRA", None), ("QLoRA", "nf4")):
        res[name] = finetune(base, ds, "lora", lcfg, tcfg, log=lambda s: None, quantize=q)
        print(f"  {name:5}: val loss after {n_steps} steps {evaluate(res[name].model, val):.4f}, "
              f"{res[name].ms_per_step:.0f} ms/step; {load()}")
    model = res["QLoRA"].model
    dws = [m.delta_weight() for _, m in model.named_modules() if hasattr(m, "lora_A")]
    qs = [m.weight.dequantize() for _, m in model.named_modules() if hasattr(m, "lora_A")]
    re_err = np.sqrt(sum(np.linalg.norm(quantize_4bit(Q + d, double_quant=True).dequantize() - (Q + d)) ** 2
                         for Q, d in zip(qs, dws, strict=True)))
    dw_norm = np.sqrt(sum(np.linalg.norm(d) ** 2 for d in dws))
    unmerged = evaluate(model, val)
    kept = merge_and_unload_quantized(_clone_qlora(model, base, lcfg), requantize=False)
    requant = merge_and_unload_quantized(model, requantize=True)
    print(f"  merge into the 4-bit base: ||dW|| = {dw_norm:.4f}; keep float: error 0 (exact), "
          f"val {evaluate(kept, val):.4f}; "
          f"re-quantize: ||nf4(Q + dW) - (Q + dW)|| = {re_err:.4f}, val {evaluate(requant, val):.4f} "
          f"(unmerged QLoRA {unmerged:.4f})")


def _clone_qlora(model, base, lcfg):
    """A second QLoRA model with the same Q and the same adapters (the merge functions change models in place)."""
    from minilora.finetune import copy_model
    from minilora.lora import get_peft_model
    from minilora.quant import quantize_model
    twin = get_peft_model(copy_model(base), lcfg)
    quantize_model(twin)
    twin.load_state_dict(model.state_dict())
    return twin


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--configs", default="S,M", help="comma-separated subset of S,M ('' to skip the step timing)")
    ap.add_argument("--steps", type=int, default=10, help="timed steps per variant per round (default 10)")
    ap.add_argument("--rounds", type=int, default=2, help="rounds (default 2)")
    ap.add_argument("--loss-steps", type=int, default=0, help="also run the quality figures with this many steps")
    args = ap.parse_args(argv)
    from minilora import perf
    perf.configure_malloc()
    print(f"bench_quant ({load()}; OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS', 'unset')})")
    configs = [c for c in args.configs.split(",") if c]
    bad = [c for c in configs if c not in CONFIGS]
    if bad:
        ap.error(f"unknown config(s) {bad}; choose from {', '.join(CONFIGS)}")
    throughput()
    if configs:
        bench_steps(configs, args.steps, args.rounds)
    if args.loss_steps:
        quality(args.loss_steps)
    return 0


if __name__ == "__main__":
    sys.exit(main())
