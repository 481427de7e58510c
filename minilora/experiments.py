"""The experiments of LoRA §7 (Hu et al. 2021, arXiv:2106.09685) on a GPT you train yourself.

Each experiment is one function that trains what it needs, applies the SVD tools of
:mod:`minilora.rank`, and writes into a run folder a markdown table ``<name>.md``, the numbers as
``<name>.json`` and PNG figures (all written atomically), and returns the results dict:

* :func:`rank_sweep` (``sweep``): LoRA with r in (1, 2, 4, 8, 16, 64) on the query and value slices
  of every ``c_attn`` and full fine-tuning, prose base -> stdlib code; validation loss against r
  (LoRA §7.2, Tables 6 and 18). lora_alpha is the same for every r (the paper fixes α and does not
  tune it, §4.1), so scaling = α/r changes with r.
* :func:`subspace_experiment` (``subspace``): φ(A_8, A_64, i, j) and φ between two seeds at r = 8
  (LoRA §7.2 eq. 4, Figs. 3 and 4) beside the random baseline max(i, j)/d.
* :func:`full_ft_update` (``fullft``): the spectrum and ranks of the full fine-tuning update ΔW,
  and the loss after truncating every ΔW to rank k (Eckart–Young).
* :func:`amplification` (``amplification``): ‖ΔW‖_F / ‖UᵀWV‖_F (LoRA §7.3, Table 7) for the
  adapters of the sweep, beside a random ΔW of the same rank and norm and W's own top-r subspace.
* :func:`planted_rank` (``planted``): fine-tune on a copy of the pretraining corpus in which k
  character pairs are swapped; the exact fix ΔE = (Π − I)E of the tied embedding has rank k, and
  the experiment recovers k from the *trained* update's spectrum.
* :func:`run_all`: all five (the sweep once, its adapters reused), plus ``summary.md``.

The derivations, the figures measured and how to read the plots are in docs/rank_analysis.md.
"""
from __future__ import annotations

import argparse
import time
from collections import Counter
from pathlib import Path

import numpy as np

from . import io as _io
from . import rank as R
from .checkpoint import load_model
from .data import ByteTokenizer, TokenDataset, load_corpus, planted_swap
from .finetune import copy_model
from .lora import LoraConfig, get_peft_model
from .nn import GPT, GPTConfig
from .optim import SGD, AdamW
from .train import TrainConfig, evaluate, train

__all__ = [
    "get_base", "rank_sweep", "subspace_experiment", "full_ft_update", "amplification", "planted_rank",
    "run_all", "add_analyze_arguments", "run_analyze", "swap_pairs",
]

DEFAULT_BASE_DIR = "runs/demo/base"
QUICK_GPT = dict(vocab_size=256, block_size=32, n_layer=2, n_head=2, n_embd=32, dropout=0.0, bias=True)
QV = [True, False, True]          # enable_lora for c_attn: query and value slices, not key

# --------------------------------------------------------------------------------------------------
# shared helpers
# --------------------------------------------------------------------------------------------------

_DATA: dict = {}


def _dataset(name: str) -> TokenDataset:
    """The TokenDataset of a built-in corpus (cached: the corpora are read once per process)."""
    if name not in _DATA:
        _DATA[name] = TokenDataset(ByteTokenizer().encode(load_corpus(name)))
    return _DATA[name]


def _settings(quick: bool, steps=None, batch_size=None, eval_batches=None) -> dict:
    """Budgets: quick (tests, seconds) or the default (`minilora analyze all` in a few minutes)."""
    s = dict(steps=30, batch_size=8, eval_batches=2) if quick else dict(steps=120, batch_size=16, eval_batches=8)
    if steps is not None:
        s["steps"] = int(steps)
    if batch_size is not None:
        s["batch_size"] = int(batch_size)
    if eval_batches is not None:
        s["eval_batches"] = int(eval_batches)
    return s


def _val_batches(data: TokenDataset, model, s: dict, seed: int = 0):
    T = _gpt(model).config.block_size
    return data.fixed_batches("val", s["eval_batches"], s["batch_size"], T, seed=seed)


def _gpt(model) -> GPT:
    """The plain GPT inside a LoraModel (or the model itself)."""
    return getattr(model, "base_model", model)


def _c_attn(model, i: int):
    return model.get_submodule(f"transformer.h.{i}.attn.c_attn")


def _jsonable(obj):
    """Drop private keys (``_models``) and turn numpy scalars/arrays into plain JSON values."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items() if not str(k).startswith("_")}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, float) and not np.isfinite(obj):
        return str(obj)
    return obj


def _write(out: Path, name: str, results: dict, md: str) -> None:
    """<out>/<name>.json and <out>/<name>.md, atomically."""
    _io.save_json_atomic(out / f"{name}.json", _jsonable(results))
    _io.atomic_write_bytes(out / f"{name}.md", (md.rstrip() + "\n").encode("utf-8"))


def _table(header, rows) -> str:
    """A markdown table; floats with 4 significant digits."""
    def fmt(v):
        if isinstance(v, (float, np.floating)):
            return f"{v:.4g}"
        return str(v)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _lines_plot(series, path, title, xlabel, ylabel, logx=False, logy=False, hlines=None) -> str:
    """A small line chart: series name -> (x, y); hlines name -> y. Written atomically (plots.py)."""
    from .plots import _new_figure, _save_atomic
    fig, (ax,) = _new_figure()
    for name, (x, y) in series.items():
        ax.plot(np.asarray(x, float), np.asarray(y, float), marker="o", label=str(name))
    for name, y in (hlines or {}).items():
        ax.axhline(float(y), linestyle="--", color="gray", linewidth=1, label=str(name))
    if logx:
        ax.set_xscale("log", base=2)
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend()
    return _save_atomic(fig, path)


def _finetune(base, data, s, method="lora", r=8, lora_alpha=8.0, lr=None, init_seed=0, data_seed=1,
              trainable=None, optimizer="adamw", log=print):
    """Adapt a copy of ``base``: LoRA on c_attn's q and v slices, full fine-tuning, or only the
    parameters named in ``trainable`` (method "subset"). ``init_seed`` seeds the LoRA factors,
    ``data_seed`` the batch order (kept fixed across seeds, as LoRA §7.2 compares seeds).
    Returns (model, history)."""
    model = copy_model(base)
    if method == "lora":
        model.rng = np.random.default_rng(init_seed)
        model = get_peft_model(model, LoraConfig(r=r, lora_alpha=lora_alpha, target_modules=["c_attn"],
                                                 enable_lora=list(QV)))
        lr = 3e-3 if lr is None else lr
    elif method == "subset":
        model.requires_grad_(False)
        for name, p in model.named_parameters():
            if name in trainable:
                p.requires_grad = True
        lr = 1e-3 if lr is None else lr
    else:
        lr = 1e-3 if lr is None else lr
    cfg = TrainConfig(max_steps=s["steps"], batch_size=s["batch_size"], lr=lr, weight_decay=0.0,
                      warmup_steps=min(10, s["steps"] // 10), eval_interval=s["steps"],
                      eval_batches=s["eval_batches"], seed=data_seed,
                      log_interval=max(1, s["steps"] // 2))
    params = [p for p in model.parameters() if p.requires_grad]
    opt = (SGD(params, lr=lr, momentum=0.9) if optimizer == "sgd"
           else AdamW(params, lr=lr, weight_decay=0.0))
    hist = train(model, data, cfg, optimizer=opt, log=log)
    model.eval()
    return model, hist


# --------------------------------------------------------------------------------------------------
# the base model
# --------------------------------------------------------------------------------------------------

_QUICK_BASE: dict = {}


def get_base(base_dir=None, quick=False, log=print) -> GPT:
    """A GPT pretrained on the pydoc prose.

    * ``base_dir`` holding a checkpoint: load it (``checkpoint.load_model``).
    * quick=True (tests): a tiny GPT (2 layers x 32 channels) pretrained for 300 steps, in memory,
      cached per process (a copy is returned each call).
    * otherwise: ``base_dir`` (default runs/demo/base, the demo's base) is pretrained with the
      demo's configuration (4 layers x 128 channels, 1,200 steps; minutes), so the demo and this
      module share one base.
    """
    if base_dir is not None and (Path(base_dir) / "latest.json").exists():
        log(f"loading the pretrained base from {base_dir}")
        return load_model(base_dir)
    if quick:
        if "model" not in _QUICK_BASE:
            t = time.perf_counter()
            model = GPT(GPTConfig(**QUICK_GPT), seed=0)
            cfg = TrainConfig(max_steps=300, batch_size=16, lr=1e-2, eval_interval=300, eval_batches=2,
                              log_interval=300, weight_decay=0.0)
            train(model, _dataset("pydoc"), cfg, log=log)
            _QUICK_BASE["model"] = model
            log(f"pretrained a tiny base in {time.perf_counter() - t:.1f} s")
        return copy_model(_QUICK_BASE["model"])
    from .demo import DemoConfig, pretrained_base
    base_dir = Path(base_dir or DEFAULT_BASE_DIR)
    log(f"pretraining the demo's base model into {base_dir} (reused by later runs)")
    model, _, _ = pretrained_base(DemoConfig(), _dataset("pydoc"), base_dir, log)
    return model


# --------------------------------------------------------------------------------------------------
# (a) rank sweep
# --------------------------------------------------------------------------------------------------


def rank_sweep(base, out_dir, ranks=(1, 2, 4, 8, 16, 64), steps=None, quick=False, lora_alpha=8.0,
               lora_lr=3e-3, full_lr=1e-3, batch_size=None, eval_batches=None, log=print) -> dict:
    """Validation loss on stdlib code against the LoRA rank r, and full fine-tuning (LoRA §7.2).

    LoRA on the query and value slices of every c_attn (enable_lora = [True, False, True]), the
    same ``lora_alpha`` for every r (so scaling = α/r; the paper fixes α, §4.1), the same lr, data
    order and step count. Ranks above n_embd are dropped.
    Writes sweep.md, sweep.json, sweep_loss_vs_rank.png. Returns the results dict; its private key
    ``_models`` ({r: LoraModel, "full": GPT}) lets the other experiments reuse the trained runs.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    s = _settings(quick, steps, batch_size, eval_batches)
    code = _dataset("stdlib")
    C = base.config.n_embd
    ranks = [int(r) for r in ranks if int(r) <= C]
    val = _val_batches(code, base, s)
    t0 = time.perf_counter()
    base_loss = evaluate(base, val)
    rows, models = [], {}
    for r in ranks:
        log(f"== sweep: LoRA r={r} (alpha {lora_alpha:g}, scaling {lora_alpha / r:.3g}) on q,v of c_attn")
        # init seed = r: adapters of different r must not share their initial A (the generator would
        # draw the same first rows for A_8 and A_64, which inflates φ between them)
        model, hist = _finetune(base, code, s, "lora", r=r, lora_alpha=lora_alpha, lr=lora_lr, init_seed=r,
                                log=log)
        n_train = sum(p.size for p in model.parameters() if p.requires_grad)
        rows.append({"method": f"LoRA r={r}", "r": r, "scaling": lora_alpha / r, "trainable_params": int(n_train),
                     "val_loss": evaluate(model, val), "ms_per_step": float(hist["ms_per_step"] or 0.0)})
        models[r] = model
    log("== sweep: full fine-tuning")
    full, hist = _finetune(base, code, s, "full", lr=full_lr, log=log)
    full_row = {"method": "full fine-tuning", "r": None, "scaling": None,
                "trainable_params": int(sum(p.size for p in full.parameters())),
                "val_loss": evaluate(full, val), "ms_per_step": float(hist["ms_per_step"] or 0.0)}
    models["full"] = full
    png = None
    if rows:
        from .plots import plot_loss_vs_rank
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
          _table(["method", "scaling", "trainable params", "val loss", "share of full-FT gain", "ms/step"],
                 [[r["method"], "-" if r["scaling"] is None else r["scaling"], f"{r['trainable_params']:,}",
                   r["val_loss"], f"{(base_loss - r['val_loss']) / gain:.1%}" if gain > 0 else "-",
                   f"{r['ms_per_step']:.0f}"] for r in rows + [full_row]])]
    _write(out, "sweep", res, "\n".join(md))
    return res


# --------------------------------------------------------------------------------------------------
# (b) subspace similarity
# --------------------------------------------------------------------------------------------------


def _slices_A(model, i):
    """{"query": A_q (r, C), "value": A_v (r, C)} of layer i (rows [0:r] and [r:2r] of the grouped A),
    and the matching effective updates ΔW_slice = scaling · B_i A_i."""
    groups = R.lora_factors(_c_attn(model, i))
    return ({name: np.asarray(A, np.float64) for name, (_, A, _, _) in zip(("query", "value"), groups)},
            {name: s * np.asarray(B, np.float64) @ np.asarray(A, np.float64)
             for name, (_, A, B, s) in zip(("query", "value"), groups)})


def subspace_experiment(base, out_dir, sweep=None, r_small=8, r_large=64, steps=None, quick=False,
                        lora_alpha=8.0, layer=None, log=print) -> dict:
    """φ(A_{r_small}, A_{r_large}, i, j) and φ between two init seeds at r_small (LoRA §7.2, eq. 4).

    φ uses the right singular vectors of A (the d_in = n_embd input space), for the query rows
    [0:r] and the value rows [r:2r] of the grouped A, in every layer; heatmaps for ``layer``
    (default: the middle one, as the paper's layer 48 of 96) beside the random baseline max(i,j)/d.
    Adapters come from ``sweep["_models"]`` when present, otherwise they are trained here.
    Writes subspace.md/.json and subspace_<pair>_<slice>.png.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    s = _settings(quick, steps)
    code = _dataset("stdlib")
    C, L = base.config.n_embd, base.config.n_layer
    r_large = min(r_large, C)
    layer = L // 2 if layer is None else layer
    models = dict((sweep or {}).get("_models", {}))
    t0 = time.perf_counter()
    for r in (r_small, r_large):
        if r not in models:
            log(f"== subspace: training LoRA r={r}")
            models[r] = _finetune(base, code, s, "lora", r=r, lora_alpha=lora_alpha, init_seed=r, log=log)[0]
    log(f"== subspace: training a second LoRA r={r_small} (another init seed, same data order)")
    seed2 = _finetune(base, code, s, "lora", r=r_small, lora_alpha=lora_alpha, init_seed=1000 + r_small,
                      log=log)[0]
    pairs = {f"r{r_small}_vs_r{r_large}": (models[r_small], models[r_large], r_large),
             f"r{r_small}_two_init_seeds": (models[r_small], seed2, r_small)}
    from .plots import plot_subspace_heatmap
    rows, files = [], []
    for pname, (m1, m2, rj) in pairs.items():
        for i in range(L):
            A1, D1 = _slices_A(m1, i)
            A2, D2 = _slices_A(m2, i)
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
          _table(["pair", "layer", "slice", "φ(1,1)", "baseline", f"mean φ, i,j<={r_small}", "baseline mean",
                  "φ(1, j_max)", "baseline", "φ(1,1) of ΔW"],
                 [[r["pair"], r["layer"], r["slice"], r["phi_11"], r["baseline_11"], r["phi_mean_ij_le_r"],
                   r["baseline_mean_ij_le_r"], r["phi_1_jmax"], r["baseline_1_jmax"], r["phi_11_deltaW"]]
                  for r in rows])]
    _write(out, "subspace", res, "\n".join(md))
    return res


# --------------------------------------------------------------------------------------------------
# (c) the full fine-tuning update
# --------------------------------------------------------------------------------------------------


def _rank_stats(M) -> dict:
    sv = R.singular_values(np.asarray(M, np.float64))
    return {"shape": list(np.shape(M)), "full_dim": int(min(np.shape(M))), "frobenius": float(np.sqrt((sv ** 2).sum())),
            "effective_rank": R.effective_rank(sv), "stable_rank": R.stable_rank(sv),
            "energy_rank_90": R.energy_rank(sv, 0.9), "energy_rank_99": R.energy_rank(sv, 0.99)}


def full_ft_update(base, out_dir, sweep=None, ks=(1, 2, 4, 8, 16, 32), steps=None, quick=False,
                   full_lr=1e-3, log=print) -> dict:
    """ΔW = W_finetuned − W_base of full fine-tuning: spectra and ranks, and the loss after
    truncating every weight-matrix ΔW to rank k (Eckart–Young: the best rank-k ΔW in Frobenius norm).

    In the truncated models every 2-D weight (embeddings, c_attn, c_proj, c_fc, mlp.c_proj) is
    W_base + truncate(ΔW, k); vectors (biases, LayerNorm) keep their fine-tuned values at every k
    ("k = 0" changes only them). Writes fullft.md/.json, fullft_spectrum.png, fullft_energy.png,
    fullft_truncation.png.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    s = _settings(quick, steps)
    code = _dataset("stdlib")
    C, L = base.config.n_embd, base.config.n_layer
    t0 = time.perf_counter()
    full = (sweep or {}).get("_models", {}).get("full")
    if full is None:
        log("== fullft: full fine-tuning on stdlib code")
        full = _finetune(base, code, s, "full", lr=full_lr, log=log)[0]
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
    from .plots import plot_cumulative_energy, plot_spectrum
    files = [plot_spectrum(spectra, out / "fullft_spectrum.png", log=True,
                           title="Singular values of full fine-tuning ΔW (c_attn)"),
             plot_cumulative_energy(spectra, out / "fullft_energy.png",
                                    title="Cumulative energy of ΔW (c_attn)")]
    # truncation
    val = _val_batches(code, base, s)
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
    files.append(_lines_plot({"rank-k ΔW": (ks_num, [t["val_loss"] for t in trunc[1:-1]])},
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
          _table(["layer", "matrix", "shape", "‖ΔW‖_F", "effective rank", "stable rank", "energy rank 90%",
                  "energy rank 99%", "full dim"],
                 [[r["layer"], r["matrix"], "x".join(map(str, r["shape"])), r["frobenius"], r["effective_rank"],
                   r["stable_rank"], r["energy_rank_90"], r["energy_rank_99"], r["full_dim"]] for r in layers]),
          "\n## Truncating every weight-matrix ΔW to rank k (Eckart–Young)\n",
          f"Base val loss {base_loss:.4f}, full fine-tuning {full_loss:.4f}. k = 0: only vectors (biases, "
          "LayerNorm) fine-tuned. Gain kept = (L_base − L_k) / (L_base − L_full).\n",
          _table(["k", "val loss", "mean energy kept", "gain kept"],
                 [[t["k"], t["val_loss"], t["energy_kept_mean"],
                   "-" if t["gain_kept"] is None else f"{t['gain_kept']:.1%}"] for t in trunc])]
    _write(out, "fullft", res, "\n".join(md))
    return res


# --------------------------------------------------------------------------------------------------
# (d) amplification factor
# --------------------------------------------------------------------------------------------------


def amplification(base, out_dir, sweep=None, ranks=(1, 4, 8, 16, 64), steps=None, quick=False, lora_alpha=8.0,
                  layer=None, log=print) -> dict:
    """LoRA §7.3 / Table 7: amplification ‖ΔW‖_F / ‖UᵀWV‖_F of each adapter's ΔW (query and value
    slices of c_attn) against the frozen W of the same slice, with ‖UᵀWV‖_F for W's own top-r
    subspace and for a random subspace, and the amplification of a random ΔW of the same rank and
    norm (a Gaussian B·A rescaled). Table 7 style rows for ``layer`` (default: the middle one) and
    the mean amplification over all layers. Writes amplification.md/.json/.png.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    s = _settings(quick, steps)
    C, L = base.config.n_embd, base.config.n_layer
    layer = L // 2 if layer is None else layer
    models = dict((sweep or {}).get("_models", {}))
    ranks = [int(r) for r in ranks if int(r) <= C]
    if sweep is not None:
        ranks = [r for r in ranks if r in models] or sorted(k for k in models if isinstance(k, int))
    t0 = time.perf_counter()
    rows = []
    for r in ranks:
        if r not in models:
            log(f"== amplification: training LoRA r={r}")
            models[r] = _finetune(base, _dataset("stdlib"), s, "lora", r=r, lora_alpha=lora_alpha, init_seed=r,
                                  log=log)[0]
        for i in range(L):
            _, D = _slices_A(models[r], i)
            Wfull = base.get_submodule(f"transformer.h.{i}.attn.c_attn").weight.data.astype(np.float64)
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
            means[f"{r}/{sl}"] = {"amplification": float(np.mean([x["amplification"] for x in sel])),
                                  "amplification_random_dW": float(np.mean([x["amplification_random_dW"] for x in sel]))}
    series = {}
    for sl in ("query", "value"):
        series[f"ΔW{sl[0]} (mean over layers)"] = (ranks, [means[f"{r}/{sl}"]["amplification"] for r in ranks])
        series[f"random ΔW, same rank and norm ({sl[0]})"] = (
            ranks, [means[f"{r}/{sl}"]["amplification_random_dW"] for r in ranks])
    png = _lines_plot(series, out / "amplification.png", "Amplification ‖ΔW‖_F / ‖UᵀWV‖_F (LoRA §7.3)",
                      "LoRA rank r", "amplification factor", logx=True, logy=True)
    res = {"experiment": "amplification", "layer": layer, "rows": rows, "mean_over_layers": means,
           "files": [png], "seconds": time.perf_counter() - t0, "_models": models}
    md = [f"# (d) Amplification factor (LoRA §7.3, Table 7), layer {layer} of {L}\n",
          "‖UᵀWVᵀ‖_F: W (the frozen slice of c_attn) projected onto the top-r singular subspaces of ΔW, "
          "of W itself, and of a random orthonormal pair. Amplification = ‖ΔW‖_F / ‖UᵀWVᵀ‖_F; the "
          "last column is the same factor for a random Gaussian ΔW of the same rank and Frobenius norm.\n",
          _table(["r", "slice", "‖UᵀWV‖ (ΔW)", "‖UᵀWV‖ (W top-r)", "‖UᵀWV‖ (random)", "‖W‖_F", "‖ΔW‖_F",
                  "amplification", "random ΔW amplification"],
                 [[x["r"], x["slice"], x["proj_norm"], x["proj_norm_top_w"], x["proj_norm_random"], x["w_norm"],
                   x["delta_norm"], x["amplification"], x["amplification_random_dW"]] for x in mid]),
          "\n## Mean amplification over all layers\n",
          _table(["r", "slice", "amplification", "random ΔW"],
                 [[k.split("/")[0], k.split("/")[1], v["amplification"], v["amplification_random_dW"]]
                  for k, v in means.items()])]
    _write(out, "amplification", res, "\n".join(md))
    return res


# --------------------------------------------------------------------------------------------------
# (e) planted rank
# --------------------------------------------------------------------------------------------------


def swap_pairs(text: str, k: int) -> list[tuple[str, str]]:
    """k disjoint pairs of frequent ASCII lowercase letters of ``text``: the 2k most frequent,
    paired 1st with 2nd, 3rd with 4th, ... (frequent, so every swap moves the loss)."""
    counts = Counter(ch for ch in text if "a" <= ch <= "z")
    letters = [ch for ch, _ in counts.most_common(2 * k)]
    if len(letters) < 2 * k:
        raise ValueError(f"swap_pairs: the text has only {len(letters)} distinct letters, need {2 * k}")
    return [(letters[2 * i], letters[2 * i + 1]) for i in range(k)]


def _gap_rank(sv, kmax=None) -> int:
    """Position of the largest ratio σ_i / σ_{i+1} among the first kmax values (the 'elbow')."""
    sv = np.asarray(sv, np.float64)[: (kmax or sv.size)]
    ratios = sv[:-1] / np.maximum(sv[1:], 1e-300 * max(sv[0], 1e-300))
    return int(np.argmax(ratios)) + 1


def planted_rank(out_dir, k=4, quick=False, base=None, base_dir=None, steps=None, lr=3e-3, optimizer="adamw",
                 control=False, log=print) -> dict:
    """A task of known intrinsic rank: the pretraining corpus (pydoc) with k letter pairs swapped.

    With the tied embedding E (V x C, used by the input lookup and by lm_head) the exact fix is
    E' = ΠE, Π the permutation matrix of the k transpositions, so ΔE* = (Π − I)E: row a holds
    E_b − E_a, row b holds E_a − E_b = −(row a), every other row is 0. A transposition's Π − I has
    rank 1, so rank ΔE* = k (not 2k) when the k differences are independent.

    The experiment fine-tunes only E (tied: both uses) on the swapped corpus, weight decay 0, then
    reads k off the *trained* ΔE = E_ft − E_base: the spectrum of its 2k swapped rows (2k x C, a
    priori rank <= 2k) and of the whole matrix, the elbow (largest σ_i/σ_{i+1}), the energy rank,
    and φ between the trained and exact top-k row spaces. ``recovered_rank`` is the 90 % energy
    rank of the swapped rows' update (k expected, 2k the a-priori bound). ``control=True`` also
    fine-tunes on the original corpus (same windows and seed) and subtracts that update, removing
    what fine-tuning E changes anyway when the base is not converged. Writes planted.md/.json, planted_spectrum.png, planted_energy.png.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    s = _settings(quick, steps)
    if steps is None:
        s["steps"] = 150                                           # the embedding needs more steps than the sweep
    if base is None:
        base = get_base(base_dir, quick=quick, log=log)
    text = load_corpus("pydoc")
    pairs = swap_pairs(text, k)
    tok = ByteTokenizer()
    orig = _dataset("pydoc")
    swapped = TokenDataset(tok.encode(planted_swap(text, pairs)))
    val_o, val_s = _val_batches(orig, base, s), _val_batches(swapped, base, s)
    floor, before = evaluate(base, val_o), evaluate(base, val_s)
    log(f"== planted: k={k} swaps {pairs}; base loss on pydoc {floor:.4f} (the floor), on the swapped copy {before:.4f}")
    emb = {"transformer.wte.weight"}
    model, hist = _finetune(base, swapped, s, "subset", trainable=emb, lr=lr, optimizer=optimizer, log=log)
    after = evaluate(model, val_s)
    E0 = base.transformer.wte.weight.data.astype(np.float64)        # (V, C)
    dE = model.transformer.wte.weight.data.astype(np.float64) - E0  # (V, C)
    ctrl_after = None
    if control:
        # paired control: the same run on the original corpus (same windows, same seed): what
        # fine-tuning E changes anyway (the base is not converged); subtract it.
        ctrl, _ = _finetune(base, orig, s, "subset", trainable=emb, lr=lr, optimizer=optimizer, log=log)
        ctrl_after = evaluate(ctrl, val_o)
        dE = dE - (ctrl.transformer.wte.weight.data.astype(np.float64) - E0)
    ids = [ord(c) for p in pairs for c in p]                        # the 2k swapped rows
    perm = np.arange(E0.shape[0])
    for a, b in pairs:
        perm[ord(a)], perm[ord(b)] = ord(b), ord(a)
    exact = E0[perm] - E0                                           # (Π − I) E
    sv_rows, sv_all, sv_exact = (R.singular_values(dE[ids]), R.singular_values(dE),
                                 R.singular_values(exact[ids]))
    exact_rank = int(np.linalg.matrix_rank(exact))
    rec = R.energy_rank(sv_rows, 0.9)
    phi = R.subspace_similarity(dE[ids], exact[ids], k, k)
    others = np.setdiff1d(np.arange(E0.shape[0]), ids)
    pair_sum = float(np.linalg.norm(dE[ids[0::2]] + dE[ids[1::2]]) / np.linalg.norm(dE[ids]))
    res = {"experiment": "planted_rank", "k": k, "pairs": pairs, "floor_val_loss": floor,
           "before_val_loss": before, "after_val_loss": after, "exact_rank": exact_rank,
           "recovered_rank": rec, "gap_rank_swapped_rows": _gap_rank(sv_rows),
           "gap_rank_all_rows": _gap_rank(sv_all, 4 * k), "control": control, "control_val_loss": ctrl_after,
           "energy_rank_90_swapped_rows": R.energy_rank(sv_rows, 0.9),
           "energy_rank_90_all_rows": R.energy_rank(sv_all, 0.9),
           "effective_rank_swapped_rows": R.effective_rank(sv_rows),
           "stable_rank_swapped_rows": R.stable_rank(sv_rows),
           "phi_topk_trained_vs_exact": phi, "pair_antisymmetry": pair_sum,
           "norm_swapped_rows": float(np.linalg.norm(dE[ids])), "norm_other_rows": float(np.linalg.norm(dE[others])),
           "sv_swapped_rows": sv_rows, "sv_all_rows": sv_all[: 4 * k + 4], "sv_exact_swapped_rows": sv_exact,
           "rel_error_vs_exact": float(np.linalg.norm(dE[ids] - exact[ids]) / np.linalg.norm(exact[ids])),
           "settings": s, "lr": lr, "seconds": time.perf_counter() - t0}
    from .plots import plot_cumulative_energy, plot_spectrum
    spectra = {"trained ΔE, 2k swapped rows": sv_rows, "trained ΔE, all rows": sv_all[: 4 * k + 4],
               # the exact spectrum's zeros (1e-16) would squash the log axis: plot its nonzero part
               "exact (Π − I)E, swapped rows": sv_exact[sv_exact > 1e-10 * max(sv_exact[0], 1e-300)]}
    res["files"] = [plot_spectrum(spectra, out / "planted_spectrum.png",
                                  title=f"Planted rank k={k}: singular values of ΔE"),
                    plot_cumulative_energy(spectra, out / "planted_energy.png",
                                           title=f"Planted rank k={k}: cumulative energy")]
    md = [f"# (e) Planted rank: pydoc with k = {k} letter pairs swapped {pairs}\n",
          f"Only the tied embedding E trains ({s['steps']} steps, lr {lr:g}, no weight decay). Exact fix "
          f"ΔE* = (Π − I)E, rank {exact_rank} (each transposition adds rank 1).\n",
          _table(["quantity", "value"], [
              ["val loss: base on pydoc (floor)", floor], ["val loss: base on swapped", before],
              ["val loss: after fine-tuning E", after],
              ["energy rank 90 % of ΔE[swapped rows] (2k x C) = recovered rank", rec],
              ["elbow (largest σ_i/σ_(i+1)) of σ(ΔE[swapped rows])", res["gap_rank_swapped_rows"]],
              ["elbow of σ(ΔE) over all rows (first 4k)", res["gap_rank_all_rows"]],
              ["energy rank 90 %, all rows (V x C)", res["energy_rank_90_all_rows"]],
              ["effective rank, swapped rows", res["effective_rank_swapped_rows"]],
              ["φ(top-k of trained, exact) row spaces", phi],
              ["‖ΔE_a + ΔE_b‖ / ‖ΔE[swapped]‖ (0 = exact antisymmetry)", pair_sum],
              ["‖ΔE[swapped] − ΔE*[swapped]‖ / ‖ΔE*[swapped]‖", res["rel_error_vs_exact"]],
              ["‖ΔE[other rows]‖_F vs ‖ΔE[swapped rows]‖_F",
               f"{res['norm_other_rows']:.3g} vs {res['norm_swapped_rows']:.3g}"]]),
          "\nSingular values of ΔE on the swapped rows: " + ", ".join(f"{v:.3g}" for v in sv_rows),
          "\nExact (Π − I)E on the swapped rows: " + ", ".join(f"{v:.3g}" for v in sv_exact)]
    _write(out, "planted", res, "\n".join(md))
    return res


# --------------------------------------------------------------------------------------------------
# all of them, and the CLI glue
# --------------------------------------------------------------------------------------------------


def run_all(out_dir, base_dir=None, quick=False, log=print, steps=None, k=4) -> dict:
    """The five experiments into ``out_dir``; the sweep runs once and its adapters and full
    fine-tuning are reused by (b), (c) and (d). Writes summary.md and summary.json."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    times = {}
    base = get_base(base_dir, quick=quick, log=log)
    base.eval()
    C = base.config.n_embd
    ranks = (1, 2, 4, 8, 16, 64) if not quick else (2, 8, 16)
    r_large = 64 if not quick else 16

    def timed(name, fn, *a, **kw):
        t = time.perf_counter()
        res = fn(*a, **kw)
        times[name] = time.perf_counter() - t
        log(f"-- {name} done in {times[name]:.0f} s")
        return res

    sweep = timed("sweep", rank_sweep, base, out, ranks=ranks, steps=steps, quick=quick, log=log)
    sub = timed("subspace", subspace_experiment, base, out, sweep=sweep, r_small=8, r_large=r_large, steps=steps,
                quick=quick, log=log)
    full = timed("fullft", full_ft_update, base, out, sweep=sweep, steps=steps, quick=quick, log=log)
    amp = timed("amplification", amplification, base, out, sweep=sweep, ranks=ranks, quick=quick, log=log)
    pl = timed("planted", planted_rank, out, k=k, quick=quick, base=base, log=log)
    total = time.perf_counter() - t0
    best = min(sweep["lora"], key=lambda r: r["val_loss"])
    mid = [x for x in sub["rows"] if x["layer"] == sub["layer_plotted"]]
    md = ["# minilora analyze: LoRA §7 on a GPT trained here\n",
          f"Base: {base.config.n_layer} layers x {C} channels, pretrained on pydoc prose; fine-tuning on stdlib code. "
          f"Total {total:.0f} s ({', '.join(f'{n} {t:.0f} s' for n, t in times.items())}).\n",
          "## (a) rank sweep (sweep.md)\n",
          _table(["method", "val loss"], [[r["method"], r["val_loss"]] for r in sweep["lora"]]
                 + [["full fine-tuning", sweep["full"]["val_loss"]], ["base (no fine-tuning)", sweep["base_val_loss"]]]),
          f"\nBest LoRA: {best['method']}.\n",
          f"## (b) subspace similarity, layer {sub['layer_plotted']} (subspace.md)\n",
          _table(["pair", "slice", "φ(1,1)", "baseline", "mean φ i,j<=8", "baseline mean"],
                 [[x["pair"], x["slice"], x["phi_11"], x["baseline_11"], x["phi_mean_ij_le_r"],
                   x["baseline_mean_ij_le_r"]] for x in mid]),
          "\n## (c) full fine-tuning ΔW (fullft.md)\n",
          _table(["layer", "matrix", "effective rank", "stable rank", "energy rank 90%", "full dim"],
                 [[x["layer"], x["matrix"], x["effective_rank"], x["stable_rank"], x["energy_rank_90"], x["full_dim"]]
                  for x in full["layers"] if x["matrix"] == "c_attn"]),
          "\n" + _table(["k", "val loss", "gain kept"],
                        [[t["k"], t["val_loss"], "-" if t["gain_kept"] is None else f"{t['gain_kept']:.1%}"]
                         for t in full["truncation"]]),
          "\n## (d) amplification, mean over layers (amplification.md)\n",
          _table(["r/slice", "amplification", "random ΔW"],
                 [[kk, v["amplification"], v["amplification_random_dW"]] for kk, v in amp["mean_over_layers"].items()]),
          f"\n## (e) planted rank k = {pl['k']} (planted.md)\n",
          _table(["quantity", "value"],
                 [["swapped pairs", pl["pairs"]], ["exact rank of (Π − I)E", pl["exact_rank"]],
                  ["recovered rank (90 % energy of trained ΔE, swapped rows)", pl["recovered_rank"]],
                  ["elbow of the swapped rows' spectrum", pl["gap_rank_swapped_rows"]],
                  ["φ(top-k trained, exact)", pl["phi_topk_trained_vs_exact"]],
                  ["val loss floor / before / after", f"{pl['floor_val_loss']:.4f} / {pl['before_val_loss']:.4f} / "
                                                     f"{pl['after_val_loss']:.4f}"]])]
    res = {"seconds": total, "times": times, "sweep": sweep, "subspace": sub, "fullft": full,
           "amplification": amp, "planted": pl}
    _write(out, "summary", res, "\n".join(md))
    log(f"wrote {out}/summary.md in {total:.0f} s")
    return res


_COMMANDS = ("sweep", "subspace", "fullft", "amplification", "planted", "all")


def add_analyze_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `minilora analyze`: which experiment, run folder, base, budget."""
    parser.add_argument("experiment", choices=_COMMANDS,
                        help="sweep (a), subspace (b), fullft (c), amplification (d), planted (e) or all")
    parser.add_argument("--out", default="runs/analyze", help="run folder (default: runs/analyze)")
    parser.add_argument("--base", default=DEFAULT_BASE_DIR,
                        help="pretrained base checkpoint; pretrained there if missing (default: runs/demo/base)")
    parser.add_argument("--steps", type=int, default=None, help="fine-tuning steps per run (default 120, quick 30; planted: 150)")
    parser.add_argument("--k", type=int, default=4, help="number of swapped pairs for `planted` (default 4)")
    parser.add_argument("--quick", action="store_true",
                        help="tiny in-memory base and few steps (under a minute or two; for tests, not for figures)")


def run_analyze(args) -> int:
    """Run the experiment chosen by add_analyze_arguments' args; returns the exit code."""
    if args.steps is not None and args.steps < 1:
        raise ValueError(f"--steps must be >= 1, got {args.steps}")
    if not 1 <= args.k <= 13:
        raise ValueError(f"--k must be between 1 and 13 (pairs of distinct lowercase letters), got {args.k}")
    base_dir = None if args.quick and args.base == DEFAULT_BASE_DIR else args.base
    out = Path(args.out)
    if args.experiment == "all":
        run_all(out, base_dir=base_dir, quick=args.quick, steps=args.steps, k=args.k)
    elif args.experiment == "planted":
        planted_rank(out, k=args.k, quick=args.quick, base_dir=base_dir, steps=args.steps)
    else:
        base = get_base(base_dir, quick=args.quick)
        base.eval()
        kw = dict(steps=args.steps, quick=args.quick)
        if args.experiment == "sweep":
            rank_sweep(base, out, **({"ranks": (2, 8, 16)} if args.quick else {}), **kw)
        elif args.experiment == "subspace":
            subspace_experiment(base, out, **({"r_large": 16} if args.quick else {}), **kw)
        elif args.experiment == "fullft":
            full_ft_update(base, out, **kw)
        else:
            amplification(base, out, **({"ranks": (2, 8)} if args.quick else {}), **kw)
    print(f"wrote {out}/")
    return 0
