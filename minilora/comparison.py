"""`minilora compare`: LoRA against the other ways to adapt a model, as the LoRA paper's Tables 2-4.

Every method starts from the same base (the shipped `pydoc-s` checkpoint: GPT config S pretrained
on English prose), trains on the same corpus (`stdlib`, Python source) for the same steps with the
same batches (one seed), and is measured the same way:

    trainable parameters, AdamW state bytes, ms per training step (forward, backward, AdamW),
    validation loss on code (the task) and on prose (forgetting), positions of the context it uses up.

ms per step is measured after training, interleaved: `timing_rounds` rounds, each taking one step
of every trained model in a freshly shuffled order, and the median over rounds of the process's
CPU time (a shared machine's slow spells then hit every method alike, and waiting for a core is
not counted; run with OPENBLAS_NUM_THREADS=1). The wall-clock medians of the training runs
themselves, taken one method after another, are kept in compare.json as `ms_per_step_train`.

Methods: full fine-tuning; LoRA at ranks 1, 4, 16 on c_attn (and each registered LoRA-family
variant: at r = 4, VeRA at r = 64, AdaLoRA from r = 8 down to an average of 4); Adapter^H and
Adapter^L (bottleneck 2 and 16); prefix-layer (P = 4, 16 and 16 with the reparameterisation MLP);
prefix-embedding and prompt tuning (P = 4, 16); BitFit (all biases, c_attn only); IA3 (PEFT's
GPT-2 targets, and c_fc added).

One context length for all: T = block_size - 16, so that the soft-prompt methods (which take P of
the block_size positions) see the same bytes as the others. Learning rates are per family, fixed
beforehand (not tuned on the validation set): full 1e-3, LoRA 1e-2, adapters 3e-3, prefix and
prompt 3e-2, BitFit 1e-2, IA3 3e-2. A table from a run is in docs/interview_answers.md.

The default run (21 rows) took 200 s on a 2-core machine shared with other jobs (load average
2-5), 350 s at load 7-8; `--quick` (4 steps, batch 4, 1 eval batch, a few seconds) is the smoke run
the tests use.
"""
from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from . import io as _io
from . import lora, peft
from .checkpoints import load_pretrained
from .data import ByteTokenizer, TokenDataset, load_corpus
from .finetune import finetune
from .lora.variant import VARIANTS
from .optim import AdamW
from .train import TrainConfig, evaluate

__all__ = ["CompareConfig", "Spec", "default_specs", "run_compare", "interleaved_step_ms", "format_compare_table",
           "pareto_front"]

VARIANT_R = {"vera": 64}      # VeRA's A and B are frozen and random: it needs a large r (its paper: 256-1024)
FAMILY_LR = {"full": 1e-3, "lora": 1e-2, "adapter_h": 3e-3, "adapter_l": 3e-3, "prefix_layer": 3e-2,
             "prefix_embedding": 3e-2, "prompt_tuning": 3e-2, "bitfit": 1e-2, "ia3": 3e-2}


@dataclass
class CompareConfig:
    """Budgets of the comparison.

    Args: steps (per method), batch_size, eval_batches (fixed validation batches per corpus),
    seed, base (a shipped checkpoint name), prompt_room (positions kept free for soft prompts:
    T = block_size - prompt_room), families (None: all; else a list of family names).
    """

    steps: int = 150
    batch_size: int = 16
    eval_batches: int = 8
    seed: int = 0
    base: str = "pydoc-s"
    prompt_room: int = 16
    families: list | None = None
    timing_rounds: int = 9

    @classmethod
    def quick(cls) -> CompareConfig:
        """The smoke run: 4 steps, batch 4, one validation batch, one timing round."""
        return cls(steps=4, batch_size=4, eval_batches=1, timing_rounds=1)


@dataclass
class Spec:
    """One row: label, family (a FAMILY_LR key or "lora:<variant>"), kind ("full", "lora", "peft"), the
    config fields (make_config's for "peft") and, for "lora", the config class ("LoraConfig" or
    "AdaLoraConfig", from minilora.lora)."""

    label: str
    family: str
    kind: str
    fields: dict
    config: str = "LoraConfig"


def default_specs() -> list[Spec]:
    """The methods and sizes of the default table (see the module docstring)."""
    s = [Spec("full fine-tuning", "full", "full", {})]
    s += [Spec(f"LoRA r={r} (c_attn)", "lora", "lora", {"r": r, "lora_alpha": 2 * r}) for r in (1, 4, 16)]
    for v in sorted(VARIANTS):
        if v == "adalora":
            s.append(Spec("AdaLoRA r=8 -> 4", "lora:adalora", "lora",
                          {"init_r": 8, "target_r": 4, "lora_alpha": 8}, config="AdaLoraConfig"))
        elif v == "residual":       # selected by its start (lora/pissa.py), not by variant=
            s.append(Spec("PiSSA r=4", "lora:residual", "lora",
                          {"r": 4, "lora_alpha": 8, "init_lora_weights": "pissa"}))
        elif v != "lora":
            r = VARIANT_R.get(v, 4)
            s.append(Spec(f"LoRA variant {v} r={r}", f"lora:{v}", "lora", {"r": r, "lora_alpha": 2 * r, "variant": v}))
    for fam, name in (("adapter_h", "Adapter^H"), ("adapter_l", "Adapter^L")):
        s += [Spec(f"{name} m={m}", fam, "peft", {"bottleneck_size": m}) for m in (2, 16)]
    s += [Spec(f"prefix-layer P={p}", "prefix_layer", "peft", {"num_virtual_tokens": p}) for p in (4, 16)]
    s += [Spec("prefix-layer P=16 +MLP", "prefix_layer", "peft",
               {"num_virtual_tokens": 16, "prefix_projection": True, "encoder_hidden_size": 64})]
    s += [Spec(f"prefix-embedding P={p}", "prefix_embedding", "peft", {"num_virtual_tokens": p}) for p in (4, 16)]
    s += [Spec(f"prompt tuning P={p}", "prompt_tuning", "peft", {"num_virtual_tokens": p}) for p in (4, 16)]
    s += [Spec("BitFit (all biases)", "bitfit", "peft", {}),
          Spec("BitFit (c_attn biases)", "bitfit", "peft", {"target_modules": ["c_attn"]})]
    s += [Spec("IA3 (c_attn, mlp.c_proj)", "ia3", "peft", {}),
          Spec("IA3 (+ c_fc)", "ia3", "peft", {"target_modules": ["c_attn", "c_fc", "mlp.c_proj"]})]
    return s


def _lr(family):
    return FAMILY_LR[family.split(":")[0]]


def pareto_front(rows: list[dict]) -> list[str]:
    """Labels of the rows no other row beats on both trainable parameters and code validation loss."""
    front = []
    for r in rows:
        if not any(o["trainable_params"] <= r["trainable_params"] and o["code_val"] < r["code_val"]
                   or o["trainable_params"] < r["trainable_params"] and o["code_val"] <= r["code_val"] for o in rows):
            front.append(r["method"])
    return front


def format_compare_table(rows: list[dict], base: dict) -> str:
    """The table as text (validation losses in nats per byte; * marks the Pareto front)."""
    front = set(pareto_front(rows))
    head = (f"{'method':<28}{'trainable':>11}{'%':>8}{'optim state':>13}{'ms/step':>9}{'code val':>10}"
            f"{'prose val':>11}{'positions':>11}")
    lines = [head, "-" * len(head),
             f"{'base model (not adapted)':<28}{0:>11,}{0:>8.3f}{'-':>13}{'-':>9}{base['code']:>10.3f}"
             f"{base['prose']:>11.3f}{0:>11}"]
    for r in rows:
        star = "*" if r["method"] in front else " "
        lines.append(f"{r['method'] + star:<28}{r['trainable_params']:>11,}{r['trainable_pct']:>8.3f}"
                     f"{r['optimizer_state_bytes'] / 2**10:>9.1f} KiB{r['ms_per_step']:>9.0f}{r['code_val']:>10.3f}"
                     f"{r['prose_val']:>11.3f}{r['positions_used']:>11}")
    return "\n".join(lines)


def interleaved_step_ms(models: list, batch: tuple, rounds: int, seed: int = 0) -> list[float]:
    """Median CPU ms of one training step (forward, backward, AdamW) of each model, interleaved.

    CPU time of the process (`time.process_time`), as `minilora latency`: with one BLAS thread it is
    the step's compute, without the time spent waiting for a core on a shared machine.

    Each round takes one step of every model in a shuffled order. The models are trained further
    by these steps (lr 1e-3): call this after evaluating them.
    """
    x, y = batch
    opts = [AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-3, weight_decay=0.0) for m in models]
    times = np.zeros((rounds, len(models)))
    rng = np.random.default_rng(seed)
    for m in models:
        m.train()
    for k in range(rounds):
        for i in rng.permutation(len(models)):
            t = time.process_time()
            opts[i].zero_grad()
            _, loss = models[i](x, y)
            loss.backward()
            opts[i].step()
            times[k, i] = (time.process_time() - t) * 1e3
    return [float(v) for v in np.median(times, axis=0)]


def run_compare(out_dir: str | os.PathLike = "runs/compare", cfg: CompareConfig | None = None, log=print) -> dict:
    """Fine-tune every method of `default_specs()` (or `cfg.families`) and write the table.

    A registered LoRA-family variant that cannot be built from the spec's config is skipped, and
    said so (logged, and listed under "skipped" in compare.json).
    Writes <out>/compare.json (config, base losses, rows, load average), <out>/compare.txt (the
    table) and <out>/pareto.png (trainable parameters, log scale, against code validation loss).
    Returns the dict of compare.json. Raises ValueError for an unknown family.
    """
    cfg = cfg or CompareConfig()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    specs = default_specs()
    if cfg.families is not None:
        known = sorted({s.family for s in specs})
        bad = [f for f in cfg.families if f not in known]
        if bad:
            raise ValueError(f"compare: unknown method families {bad}; known: {known}")
        specs = [s for s in specs if s.family in cfg.families]
    base = load_pretrained(cfg.base)
    tok = ByteTokenizer()
    prose = TokenDataset(tok.encode(load_corpus("pydoc")))
    code = TokenDataset(tok.encode(load_corpus("stdlib")))
    T = base.config.block_size - cfg.prompt_room
    prose_val = prose.fixed_batches("val", cfg.eval_batches, cfg.batch_size, T, seed=cfg.seed)
    code_val = code.fixed_batches("val", cfg.eval_batches, cfg.batch_size, T, seed=cfg.seed)
    base_losses = {"code": evaluate(base, code_val), "prose": evaluate(base, prose_val)}
    if os.environ.get("OPENBLAS_NUM_THREADS") != "1":
        log("warning: OPENBLAS_NUM_THREADS is not 1: CPU time per step then adds up every BLAS thread's time")
    log(f"base {cfg.base}: code val {base_losses['code']:.3f}, prose val {base_losses['prose']:.3f} "
        f"(context {T} bytes); {len(specs)} methods x {cfg.steps} steps")
    rows, trained, skipped = [], [], []
    for spec in specs:
        tcfg = TrainConfig(max_steps=cfg.steps, batch_size=cfg.batch_size, lr=_lr(spec.family),
                           warmup_steps=min(30, cfg.steps // 10), weight_decay=0.0, eval_interval=cfg.steps,
                           eval_batches=cfg.eval_batches, seed=cfg.seed + 1, log_interval=cfg.steps, block_size=T)
        if spec.kind == "lora":
            try:
                lcfg = getattr(lora, spec.config)(**{**spec.fields, "target_modules": ("c_attn",)})
                res = finetune(base, code, "lora", lcfg, tcfg, log=lambda *_: None, seed=cfg.seed)
            except (TypeError, ValueError) as e:
                if spec.family == "lora":
                    raise
                skipped.append({"method": spec.label, "reason": str(e)})   # a variant that needs its own config
                log(f"  skipped {spec.label}: {e}")
                continue
        elif spec.kind == "full":
            res = finetune(base, code, "full", cfg=tcfg, log=lambda *_: None, seed=cfg.seed)
        else:
            res = finetune(base, code, "peft", cfg=tcfg, log=lambda *_: None, seed=cfg.seed,
                           peft_config=peft.make_config(spec.family, **spec.fields))
        model = res.model
        row = {"method": spec.label, "family": spec.family, "fields": spec.fields, "lr": tcfg.lr,
               "trainable_params": res.trainable_params,
               "trainable_pct": 100.0 * res.trainable_params / base.num_parameters(),
               "optimizer_state_bytes": res.optimizer_state_bytes, "ms_per_step": res.ms_per_step,
               "code_val": evaluate(model, code_val), "prose_val": evaluate(model, prose_val),
               "positions_used": int(getattr(model, "sequence_tokens_used", 0)),
               "mergeable": spec.kind != "peft" or bool(getattr(model, "mergeable", False))}
        rows.append(row)
        trained.append(model)
        log(f"  {spec.label:<28} {row['trainable_params']:>9,} params  code {row['code_val']:.3f}  "
            f"prose {row['prose_val']:.3f}")
    batch = code.get_batch("train", cfg.batch_size, T, np.random.default_rng(cfg.seed + 2))
    for row, ms in zip(rows, interleaved_step_ms(trained, batch, cfg.timing_rounds, cfg.seed), strict=True):
        row["ms_per_step_train"], row["ms_per_step"] = row["ms_per_step"], ms
    table = format_compare_table(rows, base_losses)
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    log("\n== validation loss in nats per byte (lower is better); * = on the Pareto front")
    log(table)
    log(f"load average during the run: {load}")
    png = None
    try:
        from .plots import plot_pareto
        png = plot_pareto(rows, out / "pareto.png", base_loss=base_losses["code"])
    except ImportError as e:
        log(f"(no plot: {e})")
    result = {"config": asdict(cfg), "context": T, "base": base_losses, "rows": rows,
              "pareto_front": pareto_front(rows), "skipped": skipped, "loadavg": load,
              "seconds": time.perf_counter() - t0, "files": {"pareto": png}}
    _io.save_json_atomic(out / "compare.json", result)
    _io.atomic_write_bytes(out / "compare.txt", (table + "\n").encode())
    log(f"wrote {out / 'compare.json'}, {out / 'compare.txt'}, {png or '(no plot)'} in {result['seconds']:.0f} s")
    return result
