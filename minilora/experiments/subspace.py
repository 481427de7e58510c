"""(b) Subspace similarity: φ(A_8, A_64, i, j) and φ between two init seeds at r = 8.

LoRA §7.2, eq. 4, Figs. 3 and 4 (Hu et al. 2021, arXiv:2106.09685), beside the random baseline
max(i, j)/d. CLI: ``minilora analyze subspace``.
"""
from __future__ import annotations

import time
from pathlib import Path

from .. import rank as R
from ..nn import GPT
from ..plots import plot_subspace_heatmap
from .common import Log, dataset, finetune, md_table, qv_factors, settings, write_results

__all__ = ["subspace_experiment", "summary"]


def subspace_experiment(base: GPT, out_dir: str | Path, sweep: dict | None = None, r_small: int = 8,
                        r_large: int = 64, steps: int | None = None, quick: bool = False, lora_alpha: float = 8.0,
                        layer: int | None = None, log: Log = print) -> dict:
    """φ(A_{r_small}, A_{r_large}, i, j) and φ between two init seeds at r_small (LoRA §7.2, eq. 4).

    φ uses the right singular vectors of A (the d_in = n_embd input space), for the query rows
    [0:r] and the value rows [r:2r] of the grouped A, in every layer; heatmaps for ``layer``
    (default: the middle one, as the paper's layer 48 of 96) beside the random baseline max(i,j)/d.
    Adapters come from ``sweep["_models"]`` when present, otherwise they are trained here.
    Writes subspace.md/.json and subspace_<pair>_<slice>.png. Returns the results dict: "rows" (one
    per pair, layer and slice: φ(1,1), mean φ over i,j <= r_small, φ(1, j_max), φ(1,1) of ΔW, grid
    min/max, each beside its random baseline; all in [0, 1]), "r_small", "r_large", "d",
    "layer_plotted", "files", "seconds", and the private "_models".
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    s = settings(quick, steps)
    code = dataset("stdlib")
    C, L = base.config.n_embd, base.config.n_layer
    r_large = min(r_large, C)
    layer = L // 2 if layer is None else layer
    models = dict((sweep or {}).get("_models", {}))
    t0 = time.perf_counter()
    for r in (r_small, r_large):
        if r not in models:
            log(f"== subspace: training LoRA r={r}")
            models[r] = finetune(base, code, s, "lora", r=r, lora_alpha=lora_alpha, init_seed=r, log=log)[0]
    log(f"== subspace: training a second LoRA r={r_small} (another init seed, same data order)")
    seed2 = finetune(base, code, s, "lora", r=r_small, lora_alpha=lora_alpha, init_seed=1000 + r_small,
                     log=log)[0]
    pairs = {f"r{r_small}_vs_r{r_large}": (models[r_small], models[r_large], r_large),
             f"r{r_small}_two_init_seeds": (models[r_small], seed2, r_small)}
    rows, files = [], []
    for pname, (m1, m2, rj) in pairs.items():
        for i in range(L):
            A1, D1 = qv_factors(m1, i)
            A2, D2 = qv_factors(m2, i)
            for sl in ("query", "value"):
                grid = R.subspace_similarity_grid(A1[sl], A2[sl], r_small, rj)
                basel = R.random_subspace_baseline_grid(r_small, rj, C)
                gdw = R.subspace_similarity_grid(D1[sl], D2[sl], 1, 1)
                sq = grid[:r_small, :r_small]
                rows.append({"pair": pname, "layer": i, "slice": sl, "phi_11": float(grid[0, 0]),
                             "phi_mean_ij_le_r": float(sq.mean()), "baseline_11": float(basel[0, 0]),
                             "baseline_mean_ij_le_r": float(basel[:r_small, :r_small].mean()),
                             "phi_1_jmax": float(grid[0, -1]), "baseline_1_jmax": float(basel[0, -1]),
                             "phi_11_deltaW": float(gdw[0, 0]),
                             "grid_min": float(grid.min()), "grid_max": float(grid.max())})
                if i == layer:
                    files.append(plot_subspace_heatmap(
                        grid, out / f"subspace_{pname}_{sl}.png", baseline=basel,
                        title=f"φ(i, j), {pname}, {sl}, layer {i}", xlabel="j (adapter 2)",
                        ylabel=f"i (adapter 1, r={r_small})"))
    res = {"experiment": "subspace", "r_small": r_small, "r_large": r_large, "d": C, "layer_plotted": layer,
           "rows": rows, "files": files, "seconds": time.perf_counter() - t0,
           "_models": {**models, f"{r_small}_seed2": seed2}}
    md = ["# (b) Subspace similarity φ (LoRA §7.2, eq. 4) on the right singular vectors of A\n",
          f"d = n_embd = {C}; random baseline E[φ(i,j)] = max(i,j)/d. φ(1,1): top directions; mean over "
          f"i,j <= {r_small}; φ(1, j_max) = top direction of adapter 1 inside all of "
          f"adapter 2's span. Last column: φ(1,1) on the right singular vectors of ΔW = s·B·A instead of A.\n",
          md_table(["pair", "layer", "slice", "φ(1,1)", "baseline", f"mean φ, i,j<={r_small}", "baseline mean",
                    "φ(1, j_max)", "baseline", "φ(1,1) of ΔW"],
                   [[r["pair"], r["layer"], r["slice"], r["phi_11"], r["baseline_11"], r["phi_mean_ij_le_r"],
                     r["baseline_mean_ij_le_r"], r["phi_1_jmax"], r["baseline_1_jmax"], r["phi_11_deltaW"]]
                    for r in rows])]
    write_results(out, "subspace", res, "\n".join(md))
    return res


def summary(res: dict) -> str:
    """The subspace section of ``summary.md`` (the plotted layer), from subspace_experiment's result."""
    mid = [x for x in res["rows"] if x["layer"] == res["layer_plotted"]]
    return "\n".join([
        f"## (b) subspace similarity, layer {res['layer_plotted']} (subspace.md)\n",
        md_table(["pair", "slice", "φ(1,1)", "baseline", "mean φ i,j<=8", "baseline mean"],
                 [[x["pair"], x["slice"], x["phi_11"], x["baseline_11"], x["phi_mean_ij_le_r"],
                   x["baseline_mean_ij_le_r"]] for x in mid])])
