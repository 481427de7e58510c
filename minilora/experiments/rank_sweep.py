"""(a) Rank sweep: validation loss on stdlib code against the LoRA rank r, and full fine-tuning.

LoRA §7.2, Tables 6 and 18 (Hu et al. 2021, arXiv:2106.09685): LoRA with r in (1, 2, 4, 8, 16, 64)
on the query and value slices of every ``c_attn`` and full fine-tuning, prose base -> stdlib code.
lora_alpha is the same for every r (the paper fixes α and does not tune it, §4.1), so scaling = α/r
changes with r. CLI: ``minilora analyze sweep``.
"""
from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

from ..nn import GPT
from ..plots import plot_loss_vs_rank
from ..train import evaluate
from .common import Log, dataset, finetune, md_table, settings, val_batches, write_results

__all__ = ["rank_sweep", "summary"]


def rank_sweep(base: GPT, out_dir: str | Path, ranks: Sequence[int] = (1, 2, 4, 8, 16, 64), steps: int | None = None,
               quick: bool = False, lora_alpha: float = 8.0, lora_lr: float = 3e-3, full_lr: float = 1e-3,
               batch_size: int | None = None, eval_batches: int | None = None, log: Log = print) -> dict:
    """Validation loss on stdlib code against the LoRA rank r, and full fine-tuning (LoRA §7.2).

    LoRA on the query and value slices of every c_attn (enable_lora = [True, False, True]), the
    same ``lora_alpha`` for every r (so scaling = α/r; the paper fixes α, §4.1), the same lr, data
    order and step count. Ranks above n_embd are dropped.
    Writes sweep.md, sweep.json, sweep_loss_vs_rank.png. Returns the results dict: "base_val_loss"
    (nats/byte), "lora" (one row per r: method, r, scaling, trainable_params, val_loss, ms_per_step),
    "full" (the same for full fine-tuning), the settings, "seconds", "files"; its private key
    ``_models`` ({r: LoraModel, "full": GPT}) lets the other experiments reuse the trained runs.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    s = settings(quick, steps, batch_size, eval_batches)
    code = dataset("stdlib")
    C = base.config.n_embd
    ranks = [int(r) for r in ranks if int(r) <= C]
    val = val_batches(code, base, s)
    t0 = time.perf_counter()
    base_loss = evaluate(base, val)
    rows, models = [], {}
    for r in ranks:
        log(f"== sweep: LoRA r={r} (alpha {lora_alpha:g}, scaling {lora_alpha / r:.3g}) on q,v of c_attn")
        # init seed = r: adapters of different r must not share their initial A (the generator would
        # draw the same first rows for A_8 and A_64, which inflates φ between them)
        model, hist = finetune(base, code, s, "lora", r=r, lora_alpha=lora_alpha, lr=lora_lr, init_seed=r,
                               log=log)
        n_train = sum(p.size for p in model.parameters() if p.requires_grad)
        rows.append({"method": f"LoRA r={r}", "r": r, "scaling": lora_alpha / r, "trainable_params": int(n_train),
                     "val_loss": evaluate(model, val), "ms_per_step": float(hist["ms_per_step"] or 0.0)})
        models[r] = model
    log("== sweep: full fine-tuning")
    full, hist = finetune(base, code, s, "full", lr=full_lr, log=log)
    full_row = {"method": "full fine-tuning", "r": None, "scaling": None,
                "trainable_params": int(sum(p.size for p in full.parameters())),
                "val_loss": evaluate(full, val), "ms_per_step": float(hist["ms_per_step"] or 0.0)}
    models["full"] = full
    png = None
    if rows:
        png = plot_loss_vs_rank([r["r"] for r in rows], [r["val_loss"] for r in rows], out / "sweep_loss_vs_rank.png",
                                full_ft_loss=full_row["val_loss"],
                                title=f"stdlib code val loss vs r (q,v; alpha={lora_alpha:g}, {s['steps']} steps)")
    res = {"experiment": "rank_sweep", "base_val_loss": base_loss, "lora": rows, "full": full_row,
           "lora_alpha": lora_alpha, "lora_lr": lora_lr, "full_lr": full_lr, "settings": s,
           "n_embd": C, "seconds": time.perf_counter() - t0, "files": {"plot": png}, "_models": models}
    gain = base_loss - full_row["val_loss"]
    md = ["# (a) Rank sweep: LoRA on q,v of c_attn vs full fine-tuning (prose base -> stdlib code)\n",
          f"{s['steps']} steps each, batch {s['batch_size']}, lora_alpha = {lora_alpha:g} for every r "
          f"(the paper fixes α and does not tune it, so scaling = α/r), LoRA lr {lora_lr:g}, full lr {full_lr:g}. "
          f"Base model val loss on code: {base_loss:.4f} nats/byte. n_embd = {C}.\n",
          md_table(["method", "scaling", "trainable params", "val loss", "share of full-FT gain", "ms/step"],
                   [[r["method"], "-" if r["scaling"] is None else r["scaling"], f"{r['trainable_params']:,}",
                     r["val_loss"], f"{(base_loss - r['val_loss']) / gain:.1%}" if gain > 0 else "-",
                     f"{r['ms_per_step']:.0f}"] for r in rows + [full_row]])]
    write_results(out, "sweep", res, "\n".join(md))
    return res


def summary(res: dict) -> str:
    """The sweep's section of ``summary.md`` (`minilora analyze all`), from rank_sweep's result."""
    best = min(res["lora"], key=lambda r: r["val_loss"])
    return "\n".join([
        "## (a) rank sweep (sweep.md)\n",
        md_table(["method", "val loss"], [[r["method"], r["val_loss"]] for r in res["lora"]]
                 + [["full fine-tuning", res["full"]["val_loss"]], ["base (no fine-tuning)", res["base_val_loss"]]]),
        f"\nBest LoRA: {best['method']}.\n"])
