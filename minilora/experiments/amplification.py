"""(d) Amplification factor ‖ΔW‖_F / ‖UᵀWV‖_F of the LoRA updates (LoRA §7.3, Table 7).

For the adapters of the sweep, beside a random ΔW of the same rank and norm and W's own top-r
subspace (Hu et al. 2021, arXiv:2106.09685). CLI: ``minilora analyze amplification``.
"""
from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .. import rank as R
from ..nn import GPT
from ..plots import plot_lines
from .common import Log, c_attn, dataset, finetune, md_table, qv_factors, settings, write_results

__all__ = ["amplification", "summary"]


def amplification(base: GPT, out_dir: str | Path, sweep: dict | None = None,
                  ranks: Sequence[int] | None = (1, 4, 8, 16, 64), steps: int | None = None, quick: bool = False,
                  lora_alpha: float = 8.0, layer: int | None = None, log: Log = print) -> dict:
    """LoRA §7.3 / Table 7: amplification ‖ΔW‖_F / ‖UᵀWV‖_F of each adapter's ΔW (query and value
    slices of c_attn) against the frozen W of the same slice, with ‖UᵀWV‖_F for W's own top-r
    subspace and for a random subspace, and the amplification of a random ΔW of the same rank and
    norm (a Gaussian B·A rescaled). Table 7 style rows for ``layer`` (default: the middle one) and
    the mean amplification over all layers. With a ``sweep``, its adapters are reused and ``ranks``
    is cut to the sweep's (None: all of the sweep's ranks). Writes amplification.md/.json/.png.
    Returns the results dict: "rows" (per r, layer and slice: the fields of
    :func:`minilora.rank.amplification_factor`, "amplification_random_dW", "amplification_top_w"),
    "mean_over_layers" ({"<r>/<slice>": {"amplification", "amplification_random_dW"}}), "layer",
    "files", "seconds", and the private "_models". Raises ValueError for ``ranks=None`` without a sweep.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    s = settings(quick, steps)
    C, L = base.config.n_embd, base.config.n_layer
    layer = L // 2 if layer is None else layer
    models = dict((sweep or {}).get("_models", {}))
    swept = sorted(k for k in models if isinstance(k, int))
    if ranks is None and not swept:
        raise ValueError("amplification: ranks=None means the sweep's ranks, but no sweep with adapters was given")
    ranks = [int(r) for r in (swept if ranks is None else ranks) if int(r) <= C]
    if sweep is not None:
        ranks = [r for r in ranks if r in models] or swept
    t0 = time.perf_counter()
    rows = []
    for r in ranks:
        if r not in models:
            log(f"== amplification: training LoRA r={r}")
            models[r] = finetune(base, dataset("stdlib"), s, "lora", r=r, lora_alpha=lora_alpha, init_seed=r,
                                 log=log)[0]
        for i in range(L):
            _, D = qv_factors(models[r], i)
            Wfull = c_attn(base, i).weight.data.astype(np.float64)
            for j, sl in ((0, "query"), (2, "value")):
                W = Wfull[j * C:(j + 1) * C]
                a = R.amplification_factor(D[sl], W, r, seed=i)
                rng = np.random.default_rng(1000 + 7 * i + j)
                rand = rng.standard_normal((C, r)) @ rng.standard_normal((r, C))
                rand *= a["delta_norm"] / np.linalg.norm(rand)
                a_rand = R.amplification_factor(rand, W, r, seed=i)["amplification"]
                rows.append({"r": r, "layer": i, "slice": sl, **a, "amplification_random_dW": a_rand,
                             "amplification_top_w": a["delta_norm"] / a["proj_norm_top_w"]})
    mid = [x for x in rows if x["layer"] == layer]
    means = {}
    for r in ranks:
        for sl in ("query", "value"):
            sel = [x for x in rows if x["r"] == r and x["slice"] == sl]
            means[f"{r}/{sl}"] = {
                "amplification": float(np.mean([x["amplification"] for x in sel])),
                "amplification_random_dW": float(np.mean([x["amplification_random_dW"] for x in sel]))}
    series = {}
    for sl in ("query", "value"):
        series[f"ΔW{sl[0]} (mean over layers)"] = (ranks, [means[f"{r}/{sl}"]["amplification"] for r in ranks])
        series[f"random ΔW, same rank and norm ({sl[0]})"] = (
            ranks, [means[f"{r}/{sl}"]["amplification_random_dW"] for r in ranks])
    png = plot_lines(series, out / "amplification.png", "Amplification ‖ΔW‖_F / ‖UᵀWV‖_F (LoRA §7.3)",
                     "LoRA rank r", "amplification factor", logx=True, logy=True)
    res = {"experiment": "amplification", "layer": layer, "rows": rows, "mean_over_layers": means,
           "files": [png], "seconds": time.perf_counter() - t0, "_models": models}
    md = [f"# (d) Amplification factor (LoRA §7.3, Table 7), layer {layer} of {L}\n",
          "‖UᵀWVᵀ‖_F: W (the frozen slice of c_attn) projected onto the top-r singular subspaces of ΔW, "
          "of W itself, and of a random orthonormal pair. Amplification = ‖ΔW‖_F / ‖UᵀWVᵀ‖_F; the "
          "last column is the same factor for a random Gaussian ΔW of the same rank and Frobenius norm.\n",
          md_table(["r", "slice", "‖UᵀWV‖ (ΔW)", "‖UᵀWV‖ (W top-r)", "‖UᵀWV‖ (random)", "‖W‖_F", "‖ΔW‖_F",
                    "amplification", "random ΔW amplification"],
                   [[x["r"], x["slice"], x["proj_norm"], x["proj_norm_top_w"], x["proj_norm_random"], x["w_norm"],
                     x["delta_norm"], x["amplification"], x["amplification_random_dW"]] for x in mid]),
          "\n## Mean amplification over all layers\n",
          md_table(["r", "slice", "amplification", "random ΔW"],
                   [[k.split("/")[0], k.split("/")[1], v["amplification"], v["amplification_random_dW"]]
                    for k, v in means.items()])]
    write_results(out, "amplification", res, "\n".join(md))
    return res


def summary(res: dict) -> str:
    """The amplification section of ``summary.md``: the mean over layers per r and slice."""
    return "\n".join([
        "\n## (d) amplification, mean over layers (amplification.md)\n",
        md_table(["r/slice", "amplification", "random ΔW"],
                 [[kk, v["amplification"], v["amplification_random_dW"]]
                  for kk, v in res["mean_over_layers"].items()])])
