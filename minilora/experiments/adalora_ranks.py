"""AdaLoRA's rank allocation against a plain LoRA trained the same number of steps.

AdaLoRA (Zhang et al. 2023, arXiv:2303.10512, §3, Fig. 1 and 4) starts every adapted matrix at
init_r and spends a total budget of target_r per matrix where the importance scores point. This
experiment fine-tunes a copy of the base with AdaLoRA on the q and v slices of every c_attn, then
a plain LoRA (rank init_r, same targets, lr, data order and steps), and reports per layer and per
slice: the rank AdaLoRA kept, the effective rank (`rank.effective_rank`, Roy & Vetterli 2007) of
AdaLoRA's ΔW, and the effective rank of the plain LoRA's ΔW: does AdaLoRA keep rank where a plain
LoRA spreads its update? CLI: ``minilora finetune --variant adalora --init-r 12 --target-r 4``.
"""
from __future__ import annotations

from pathlib import Path

from .. import rank as _rank
from ..finetune import finetune
from ..lora import AdaLoraConfig, LoraConfig
from ..lora.adalora import group_labels
from ..plots import plot_rank_allocation
from ..train import TrainConfig, evaluate
from .common import Log, md_table, write_results

__all__ = ["adalora_schedule", "delta_effective_ranks", "adalora_vs_lora", "report", "finetune_cli"]


def adalora_schedule(steps: int) -> dict[str, int]:
    """Default tinit / tfinal / deltaT for `steps` training steps: 10% warm-up, the last 20% at the
    final pattern, a re-allocation every ~1/30 of the run (the paper's Table 9 keeps similar ratios)."""
    return {"tinit": steps // 10, "tfinal": steps // 5, "deltaT": max(1, steps // 30)}


def _short(name: str) -> str:
    """transformer.h.3.attn.c_attn -> h.3"""
    parts = name.split(".")
    return ".".join(parts[1:3]) if len(parts) > 2 and parts[1] == "h" else name


def delta_effective_ranks(model) -> dict[str, dict[str, float]]:
    """{slice label: {layer label: effective rank of that slice's ΔW}} for every LoRA layer of `model`."""
    out: dict[str, dict[str, float]] = {}
    for name, layer in model.lora_layers():
        for label, (_, A_i, B_i, s) in zip(group_labels(layer), _rank.lora_factors(layer), strict=True):
            S = _rank.lowrank_singular_values(B_i, A_i, s)[1]
            out.setdefault(label or "all", {})[_short(name)] = _rank.effective_rank(S)
    return out


def adalora_vs_lora(base, dataset, out_dir: str | Path | None = None, *, init_r: int = 12, target_r: int = 4,
                    steps: int = 300, lr: float = 1e-2, lora_alpha: float = 16.0, batch_size: int = 16,
                    eval_batches: int = 16, seed: int = 0, target_modules=("c_attn",),
                    enable_lora=(True, False, True), orth_reg_weight: float = 0.5, lora_dropout: float = 0.0,
                    use_rslora: bool = False, compare: bool = True, log: Log = print) -> dict:
    """Fine-tune with AdaLoRA (init_r -> target_r) and, if `compare`, with plain LoRA of rank init_r.

    Args: base (GPT, not modified), dataset (TokenDataset), out_dir (None: nothing written; else the
    adapter, rank_allocation.png, adalora.json and adalora.md, atomically), the AdaLoRA and training
    settings (tinit/tfinal/deltaT from `adalora_schedule`), log.
    Returns: dict with "allocation" {slice: {layer: kept rank}}, "adalora_erank" and "lora_erank"
    (same shape, floats), "val_loss" {"base", "adalora", "lora"}, "budget" {"init", "target",
    "kept"}, "ms_per_step" {"adalora", "lora"}, "model" (the AdaLoraModel) and "lora_model".
    Raises: ValueError for settings the configs refuse (named).
    """
    tc = TrainConfig(max_steps=steps, batch_size=batch_size, lr=lr, weight_decay=0.0,
                     warmup_steps=min(30, steps // 10), eval_interval=max(1, steps // 5), eval_batches=eval_batches,
                     seed=seed, log_interval=max(1, steps // 10))
    common = dict(lora_alpha=lora_alpha, target_modules=target_modules, enable_lora=list(enable_lora),
                  lora_dropout=lora_dropout, use_rslora=use_rslora)
    acfg = AdaLoraConfig(init_r=init_r, target_r=target_r, total_step=steps, orth_reg_weight=orth_reg_weight,
                         **adalora_schedule(steps), **common)
    val = dataset.fixed_batches("val", eval_batches, batch_size, base.config.block_size, seed=seed)
    res = {"val_loss": {"base": evaluate(base, val)}}
    log(f"AdaLoRA: init_r {init_r} -> target_r {target_r}, tinit {acfg.tinit}, tfinal {acfg.tfinal}, "
        f"deltaT {acfg.deltaT}, {steps} steps")
    ada = finetune(base, dataset, "lora", acfg, tc, log=log, seed=seed)
    model = ada.model
    res["val_loss"]["adalora"] = evaluate(model, val)
    alloc: dict[str, dict[str, int]] = {}
    for name, groups in model.rank_allocation().items():
        for label, k in groups.items():
            alloc.setdefault(label or "all", {})[_short(name)] = k
    res.update(allocation=alloc, adalora_erank=delta_effective_ranks(model), model=model,
               budget={"init": model.rankallocator.init_bgt, "target": model.rankallocator.target_bgt,
                       "kept": int(sum(sum(v.values()) for v in alloc.values()))},
               ms_per_step={"adalora": ada.ms_per_step})
    if compare:
        log(f"plain LoRA: r {init_r}, same targets, lr, data and {steps} steps")
        lora = finetune(base, dataset, "lora", LoraConfig(r=init_r, **common), tc, log=log, seed=seed)
        res["val_loss"]["lora"] = evaluate(lora.model, val)
        res["lora_erank"] = delta_effective_ranks(lora.model)
        res["lora_model"] = lora.model
        res["ms_per_step"]["lora"] = lora.ms_per_step
    if out_dir is not None:
        out = Path(out_dir)
        model.save_adapter(out / "adapter")
        plot_rank_allocation(alloc, out / "rank_allocation.png", compare=res.get("lora_erank"),
                             title=f"AdaLoRA: rank kept per layer (init_r {init_r} -> target_r {target_r})",
                             compare_label=f"effective rank of a plain LoRA ΔW (r = {init_r})")
        keep = {k: v for k, v in res.items() if k not in ("model", "lora_model")}
        write_results(out, "adalora", keep, report(res))
    return res


def report(res: dict) -> str:
    """The allocation table and the losses as markdown (what the CLI prints)."""
    alloc, lora = res["allocation"], res.get("lora_erank")
    header = ["layer", "slice", "AdaLoRA rank kept", "AdaLoRA ΔW erank"] + (["plain LoRA ΔW erank"] if lora else [])
    rows = []
    for label, per_layer in alloc.items():
        for layer, k in per_layer.items():
            row = [layer, label, k, float(res["adalora_erank"][label][layer])]
            rows.append(row + ([float(lora[label][layer])] if lora else []))
    rows.sort(key=lambda r: (r[0], r[1]))
    b, v = res["budget"], res["val_loss"]
    lines = [md_table(header, rows), "",
             f"budget: {b['init']} triplets at the start, target {b['target']}, kept {b['kept']}",
             f"validation loss: base {v['base']:.4f}, AdaLoRA {v['adalora']:.4f}"
             + (f", plain LoRA (r = init_r) {v['lora']:.4f}" if "lora" in v else "")]
    return "\n".join(lines)


def finetune_cli(args, base, dataset, out: str, lr: float) -> int:
    """`minilora finetune --variant adalora`: run `adalora_vs_lora`, print the table, return the exit code.

    args: the parsed `minilora finetune` arguments (init_r, target_r, steps, lora_alpha, lora_dropout,
    use_rslora, target_modules / target_regex, batch_size, eval_batches, seed, quiet).
    """
    log = (lambda s: None) if args.quiet else (lambda s: print(s, flush=True))
    res = adalora_vs_lora(base, dataset, out, init_r=args.init_r, target_r=args.target_r, steps=args.steps, lr=lr,
                          lora_alpha=args.lora_alpha, batch_size=args.batch_size, eval_batches=args.eval_batches,
                          seed=args.seed, target_modules=args.target_regex or list(args.target_modules),
                          lora_dropout=args.lora_dropout, use_rslora=args.use_rslora, log=log)
    print("(AdaLoRA's training losses above include orth_reg_weight times the orthogonality term)")
    print(report(res))
    out = Path(out)
    print(f"saved to {out / 'adapter'}, {out / 'rank_allocation.png'}, {out / 'adalora.md'}")
    return 0
