"""(c) The full fine-tuning update ΔW = W_ft − W_base: its spectrum, its ranks, and truncation.

The spectrum and ranks of ΔW of full fine-tuning, and the validation loss after truncating every
weight-matrix ΔW to rank k (Eckart–Young: the best rank-k approximation in Frobenius norm); the
question behind LoRA §7 (Hu et al. 2021, arXiv:2106.09685): does the full update have a low
"intrinsic rank"? CLI: ``minilora analyze fullft``.
"""
from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .. import rank as R
from ..finetune import copy_model
from ..nn import GPT
from ..plots import plot_cumulative_energy, plot_lines, plot_spectrum
from ..train import evaluate
from .common import Log, dataset, finetune, md_table, settings, val_batches, write_results

__all__ = ["full_ft_update", "summary"]


def _rank_stats(M) -> dict:
    sv = R.singular_values(np.asarray(M, np.float64))
    return {"shape": list(np.shape(M)), "full_dim": int(min(np.shape(M))), "frobenius": float(np.sqrt((sv ** 2).sum())),
            "effective_rank": R.effective_rank(sv), "stable_rank": R.stable_rank(sv),
            "energy_rank_90": R.energy_rank(sv, 0.9), "energy_rank_99": R.energy_rank(sv, 0.99)}


def full_ft_update(base: GPT, out_dir: str | Path, sweep: dict | None = None, ks: Sequence[int] = (1, 2, 4, 8, 16, 32),
                   steps: int | None = None, quick: bool = False, full_lr: float = 1e-3, log: Log = print) -> dict:
    """ΔW = W_finetuned − W_base of full fine-tuning: spectra and ranks, and the loss after
    truncating every weight-matrix ΔW to rank k (Eckart–Young: the best rank-k ΔW in Frobenius norm).

    In the truncated models every 2-D weight (embeddings, c_attn, c_proj, c_fc, mlp.c_proj) is
    W_base + truncate(ΔW, k); vectors (biases, LayerNorm) keep their fine-tuned values at every k
    ("k = 0" changes only them). The fully fine-tuned model comes from ``sweep["_models"]["full"]``
    when present. Writes fullft.md/.json, fullft_spectrum.png, fullft_energy.png,
    fullft_truncation.png. Returns the results dict: "layers" (per layer, c_attn and its q/k/v
    slices: shape, full_dim, frobenius, effective/stable rank, energy rank 90 %/99 %), "truncation"
    (per k: val_loss, energy_kept_mean, gain_kept; k = "full" last), "base_val_loss",
    "full_val_loss", "spectra", "files", "settings", "seconds".
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    s = settings(quick, steps)
    code = dataset("stdlib")
    C, L = base.config.n_embd, base.config.n_layer
    t0 = time.perf_counter()
    full = (sweep or {}).get("_models", {}).get("full")
    if full is None:
        log("== fullft: full fine-tuning on stdlib code")
        full = finetune(base, code, s, "full", lr=full_lr, log=log)[0]
    W0 = {n: p.data.astype(np.float64) for n, p in base.named_parameters()}
    W1 = {n: p.data.astype(np.float64) for n, p in full.named_parameters()}
    layers, spectra = [], {}
    for i in range(L):
        name = f"transformer.h.{i}.attn.c_attn.weight"
        dW = W1[name] - W0[name]                         # (3C, C)
        row = {"layer": i, "matrix": "c_attn", **_rank_stats(dW)}
        layers.append(row)
        spectra[f"layer {i} c_attn"] = R.singular_values(dW)
        for j, sl in enumerate(("query", "key", "value")):
            layers.append({"layer": i, "matrix": f"c_attn.{sl}", **_rank_stats(dW[j * C:(j + 1) * C])})
    files = [plot_spectrum(spectra, out / "fullft_spectrum.png", log=True,
                           title="Singular values of full fine-tuning ΔW (c_attn)"),
             plot_cumulative_energy(spectra, out / "fullft_energy.png",
                                    title="Cumulative energy of ΔW (c_attn)")]
    # truncation
    val = val_batches(code, base, s)
    base_loss, full_loss = evaluate(base, val), evaluate(full, val)
    mats = [n for n in W0 if W0[n].ndim == 2]
    svds = {n: np.linalg.svd(W1[n] - W0[n], full_matrices=False) for n in mats}
    trunc = []
    for k in [0] + [int(k) for k in ks]:
        m = copy_model(base)
        sd = {}
        for n, p in m.named_parameters():
            if n in svds:
                U, S, Vh = svds[n]
                kk = min(k, S.size)
                d = (U[:, :kk] * S[:kk]) @ Vh[:kk]
                sd[n] = (W0[n] + d).astype(p.data.dtype)
            else:
                sd[n] = W1[n].astype(p.data.dtype)
        for n, p in m.named_parameters():
            p.data = sd[n]
        loss = evaluate(m, val)
        kept = float(np.mean([np.sum(svds[n][1][:k] ** 2) / max(np.sum(svds[n][1] ** 2), 1e-300) for n in mats]))
        trunc.append({"k": k, "val_loss": loss, "energy_kept_mean": kept,
                      "gain_kept": (base_loss - loss) / (base_loss - full_loss) if base_loss > full_loss else None})
    trunc.append({"k": "full", "val_loss": full_loss, "energy_kept_mean": 1.0, "gain_kept": 1.0})
    ks_num = [t["k"] for t in trunc[1:-1]]
    files.append(plot_lines({"rank-k ΔW": (ks_num, [t["val_loss"] for t in trunc[1:-1]])},
                            out / "fullft_truncation.png", "Val loss after truncating every ΔW to rank k",
                            "k", "stdlib val loss", logx=True,
                            hlines={"base": base_loss, "full fine-tuning": full_loss}))
    res = {"experiment": "full_ft_update", "base_val_loss": base_loss, "full_val_loss": full_loss, "layers": layers,
           "truncation": trunc, "spectra": {k: v for k, v in spectra.items()}, "files": files,
           "settings": s, "seconds": time.perf_counter() - t0}
    md = ["# (c) The full fine-tuning update ΔW = W_ft − W_base\n",
          f"Full fine-tuning on stdlib code ({s['steps']} steps). Ranks of ΔW (Roy & Vetterli effective rank, "
          "stable rank ‖ΔW‖²_F/‖ΔW‖²_2, energy rank = smallest k holding 90 % / 99 % of Σσ²) against the full "
          "dimension min(d_out, d_in).\n",
          md_table(["layer", "matrix", "shape", "‖ΔW‖_F", "effective rank", "stable rank", "energy rank 90%",
                    "energy rank 99%", "full dim"],
                   [[r["layer"], r["matrix"], "x".join(map(str, r["shape"])), r["frobenius"], r["effective_rank"],
                     r["stable_rank"], r["energy_rank_90"], r["energy_rank_99"], r["full_dim"]] for r in layers]),
          "\n## Truncating every weight-matrix ΔW to rank k (Eckart–Young)\n",
          f"Base val loss {base_loss:.4f}, full fine-tuning {full_loss:.4f}. k = 0: only vectors (biases, "
          "LayerNorm) fine-tuned. Gain kept = (L_base − L_k) / (L_base − L_full).\n",
          md_table(["k", "val loss", "mean energy kept", "gain kept"],
                   [[t["k"], t["val_loss"], t["energy_kept_mean"],
                     "-" if t["gain_kept"] is None else f"{t['gain_kept']:.1%}"] for t in trunc])]
    write_results(out, "fullft", res, "\n".join(md))
    return res


def summary(res: dict) -> str:
    """The full fine-tuning section of ``summary.md``: c_attn ranks and the truncation table."""
    return "\n".join([
        "\n## (c) full fine-tuning ΔW (fullft.md)\n",
        md_table(["layer", "matrix", "effective rank", "stable rank", "energy rank 90%", "full dim"],
                 [[x["layer"], x["matrix"], x["effective_rank"], x["stable_rank"], x["energy_rank_90"], x["full_dim"]]
                  for x in res["layers"] if x["matrix"] == "c_attn"]),
        "\n" + md_table(["k", "val loss", "gain kept"],
                        [[t["k"], t["val_loss"], "-" if t["gain_kept"] is None else f"{t['gain_kept']:.1%}"]
                         for t in res["truncation"]])])
