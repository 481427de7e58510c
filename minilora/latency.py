"""`minilora latency`: Table 1 of the LoRA paper on a CPU — inference latency of one forward pass
over the base model, for batch sizes 1, 2, 4, 8, 16 and sequence lengths 1, 32, 128.

Models (one GPT of config S widths, 4 layers, 128 channels, context 128, random weights: latency
does not depend on the values): the base; LoRA r = 4 on c_attn merged (W = W0 + s B A) and
unmerged (x W0^T + s x A^T B^T); Adapter^H and Adapter^L (bottleneck 8); IA3 merged; prefix-layer
tuning (P = 16 key/value slots in every layer).

Method: every round visits every (sequence length, batch size) cell, and in each cell every model
once in a freshly shuffled order (interleaved, so slow spells of a shared machine hit all models
alike); each model is warmed up once per cell first. A cell's figure is the median over rounds of
the milliseconds of one forward pass (no_grad, eval mode); the overhead is 100 (median_model /
median_base - 1) %. Per-token figures divide by B T.

Clock: by default the process's CPU time (`time.process_time`), not the wall clock. With one BLAS
thread (run `OPENBLAS_NUM_THREADS=1 minilora latency`, as the tests do) the two agree on a quiet machine; on a
shared one the wall clock also counts the time the process waited for a core, which at a load of
3-4 per core swamps millisecond forward passes (we measured "+278%" for merged LoRA that way).
`--clock wall` gives wall-clock medians; both are kept in latency.json.

What reproduces on a CPU, and why (see docs/interview_answers.md for a measured table):
* merged LoRA and merged IA3 cost nothing: after merging, the forward is the base model's, op for op
  (their overhead is noise around 0).
* adapters add latency, most at batch 1 and short sequences, less as the work grows, as in the paper.
  The cause differs: on a GPU, the paper's cause is that the extra small layers run sequentially
  and cannot use the hardware's parallelism at small batch; here each extra op has a fixed Python
  and NumPy dispatch cost (tens of microseconds) that dominates when the matrices are tiny, and
  shrinks relative to the GEMMs of the base model as B T grows.
* unmerged LoRA also adds latency here (its two small GEMMs per adapted layer): the paper's point
  that one should merge for inference.
* prefix tuning's cost grows with the attention width (T, P+T): large at T = 1 (17 keys instead of 1),
  small at T = 128.
"""
from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from . import io as _io
from . import peft
from .lora import LoraConfig, get_peft_model
from .nn import GPT, GPTConfig
from .tensor import no_grad

__all__ = ["LatencyConfig", "build_models", "measure_latency", "format_latency_table", "run_latency"]


@dataclass
class LatencyConfig:
    """The grid and the model. rounds: interleaved repetitions per cell (the median is taken);
    clock: "cpu" (process CPU time) or "wall"."""

    batch_sizes: list = field(default_factory=lambda: [1, 2, 4, 8, 16])
    seq_lens: list = field(default_factory=lambda: [1, 32, 128])
    rounds: int = 15
    clock: str = "cpu"
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    lora_r: int = 4
    bottleneck_size: int = 8
    num_virtual_tokens: int = 16
    seed: int = 0

    @classmethod
    def quick(cls) -> LatencyConfig:
        """A smoke run: batch 1 and 4, sequence 1 and 32, 2 rounds."""
        return cls(batch_sizes=[1, 4], seq_lens=[1, 32], rounds=2)


def build_models(cfg: LatencyConfig) -> dict:
    """Name -> model in eval mode: base, LoRA merged / unmerged, Adapter^H / ^L, IA3 merged, prefix."""
    gcfg = GPTConfig(block_size=max(cfg.seq_lens), n_layer=cfg.n_layer, n_head=cfg.n_head, n_embd=cfg.n_embd)
    def randomise(model):                    # non-zero adapters, so nothing is skipped by accident
        rng = np.random.default_rng(cfg.seed)
        for p in model.trainable_parameters():
            p.data = (p.data + 0.01 * rng.standard_normal(p.shape)).astype(p.dtype)
        return model

    lora = LoraConfig(r=cfg.lora_r, lora_alpha=2 * cfg.lora_r, target_modules=("c_attn",))
    models = {"base": GPT(gcfg, seed=cfg.seed)}
    merged = randomise(get_peft_model(GPT(gcfg, seed=cfg.seed), lora))
    merged.merge_adapter()
    models["LoRA merged"] = merged
    models["LoRA unmerged"] = randomise(get_peft_model(GPT(gcfg, seed=cfg.seed), lora))
    for name, method in (("Adapter^H", "adapter_h"), ("Adapter^L", "adapter_l")):
        adapters = peft.make_config(method, bottleneck_size=cfg.bottleneck_size)
        models[name] = randomise(peft.get_peft_model(GPT(gcfg, seed=cfg.seed), adapters))
    ia3 = randomise(peft.get_peft_model(GPT(gcfg, seed=cfg.seed), peft.make_config("ia3")))
    ia3.merge_adapter()
    models["IA3 merged"] = ia3
    models[f"prefix P={cfg.num_virtual_tokens}"] = randomise(peft.get_peft_model(
        GPT(gcfg, seed=cfg.seed), peft.make_config("prefix_layer", num_virtual_tokens=cfg.num_virtual_tokens)))
    for m in models.values():
        m.eval()
    return models


def measure_latency(models: dict, cfg: LatencyConfig, log=print, clocks: dict | None = None) -> dict[str, np.ndarray]:
    """Name -> ms per forward pass, array (len(seq_lens), len(batch_sizes)) of interleaved medians
    on `cfg.clock`. If `clocks` is a dict, the medians of both clocks are put in it ("cpu", "wall").

    Raises: ValueError for a clock other than "cpu" or "wall".
    """
    if cfg.clock not in ("cpu", "wall"):
        raise ValueError(f"latency: clock must be 'cpu' or 'wall', got {cfg.clock!r}")
    rng = np.random.default_rng(cfg.seed)
    names = list(models)
    times = {n: np.zeros((cfg.rounds, len(cfg.seq_lens), len(cfg.batch_sizes))) for n in names}
    walls = {n: np.zeros_like(t) for n, t in times.items()}
    with no_grad():
        for k in range(cfg.rounds):
            for i, T in enumerate(cfg.seq_lens):
                for j, B in enumerate(cfg.batch_sizes):
                    idx = rng.integers(0, 256, (B, T))
                    if k == 0:
                        for n in names:
                            models[n](idx)                          # warm-up
                    for n in rng.permutation(names):
                        c, t = time.process_time(), time.perf_counter()
                        models[n](idx)
                        walls[n][k, i, j] = (time.perf_counter() - t) * 1e3
                        times[n][k, i, j] = (time.process_time() - c) * 1e3
            if (k + 1) % 5 == 0 or k + 1 == cfg.rounds:
                log(f"  round {k + 1}/{cfg.rounds} done")
    cpu = {n: np.median(t, axis=0) for n, t in times.items()}
    wall = {n: np.median(t, axis=0) for n, t in walls.items()}
    if clocks is not None:
        clocks.update(cpu=cpu, wall=wall)
    return cpu if cfg.clock == "cpu" else wall


def format_latency_table(ms: dict[str, np.ndarray], cfg: LatencyConfig) -> str:
    """Base model in ms per forward pass, every other model in % over the base (Table 1's layout)."""
    cols = [(T, B) for T in cfg.seq_lens for B in cfg.batch_sizes]
    head = f"{'':<16}" + "".join(f"{f'T={T} B={B}':>12}" for T, B in cols)
    base = ms["base"]
    lines = [head, "-" * len(head), f"{'base (ms)':<16}" + "".join(f"{base[i, j]:>12.2f}" for i in
                                                                  range(len(cfg.seq_lens)) for j in
                                                                  range(len(cfg.batch_sizes)))]
    for n, a in ms.items():
        if n == "base":
            continue
        pct = 100.0 * (a / base - 1.0)
        lines.append(f"{n:<16}" + "".join(f"{pct[i, j]:>+11.1f}%" for i in range(len(cfg.seq_lens))
                                          for j in range(len(cfg.batch_sizes))))
    return "\n".join(lines)


def run_latency(out_dir: str | os.PathLike = "runs/latency", cfg: LatencyConfig | None = None, log=print) -> dict:
    """Measure, print and write <out>/latency.json, latency.txt and latency.png; return the dict."""
    cfg = cfg or LatencyConfig()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    load_before = os.getloadavg() if hasattr(os, "getloadavg") else None
    models = build_models(cfg)
    log(f"{len(models)} models x {len(cfg.seq_lens) * len(cfg.batch_sizes)} cells x {cfg.rounds} rounds, "
        f"interleaved; load average {load_before}")
    if cfg.clock == "cpu" and os.environ.get("OPENBLAS_NUM_THREADS") != "1":
        log("warning: OPENBLAS_NUM_THREADS is not 1: CPU time then adds up every BLAS thread's time")
    clocks: dict = {}
    ms = measure_latency(models, cfg, log, clocks)
    table = format_latency_table(ms, cfg)
    load_after = os.getloadavg() if hasattr(os, "getloadavg") else None
    log(f"\n== latency of one forward pass ({cfg.clock} clock): base in ms, others in % over the base (medians)")
    log(table)
    log(f"load average before {load_before}, after {load_after}")
    overhead = {n: 100.0 * (a / ms["base"] - 1.0) for n, a in ms.items() if n != "base"}
    png = None
    try:
        from .plots import plot_latency_overhead
        png = plot_latency_overhead(overhead, cfg.batch_sizes, cfg.seq_lens, out / "latency.png")
    except ImportError as e:
        log(f"(no plot: {e})")
    per_token = {n: (a / (np.array(cfg.seq_lens)[:, None] * np.array(cfg.batch_sizes)[None, :]) * 1e3).tolist()
                 for n, a in ms.items()}
    result = {"config": asdict(cfg), "ms": {n: a.tolist() for n, a in ms.items()},
              "ms_by_clock": {k: {n: a.tolist() for n, a in v.items()} for k, v in clocks.items()},
              "overhead_pct": {n: a.tolist() for n, a in overhead.items()}, "us_per_token": per_token,
              "loadavg": [load_before, load_after], "seconds": time.perf_counter() - t0, "files": {"plot": png}}
    _io.save_json_atomic(out / "latency.json", result)
    _io.atomic_write_bytes(out / "latency.txt", (table + "\n").encode())
    log(f"wrote {out / 'latency.json'}, {out / 'latency.txt'}, {png or '(no plot)'} in {result['seconds']:.0f} s")
    return result
