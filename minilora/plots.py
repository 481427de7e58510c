"""Figures for the rank analysis and training runs, written as PNG files.

matplotlib is imported inside each function, never at module import: the core of minilora needs
only numpy and never a display. The figures are built with ``matplotlib.figure.Figure`` directly
rather than through ``pyplot``: no GUI backend is chosen or needed, no global figure state is kept
(nothing to close, nothing leaks between calls), and it works headless whatever MPLBACKEND says.
A notebook can show the result with ``IPython.display.Image(path)``.

Every function renders its PNG in memory and writes it with the one atomic writer of the package,
:func:`minilora.io.atomic_write_bytes` (a temporary file in the same folder, fsync, then
``os.replace``), creates the parent folder if needed, and returns the path as a ``str``.

Figures follow LoRA (Hu et al. 2021, arXiv:2106.09685): singular spectra of ΔW (§7), the subspace
similarity heatmap φ(i, j) of §7.2 / Fig. 3 beside the random baseline max(i, j)/d, validation loss
against the rank r (§7.2, Tables 6 and 18 style).
"""
from __future__ import annotations

import io
import os

import numpy as np

from . import io as _io
from . import rank as _rank

__all__ = [
    "plot_spectrum",
    "plot_cumulative_energy",
    "plot_subspace_heatmap",
    "plot_loss_vs_rank",
    "plot_loss_curves",
    "plot_lines",
    "plot_pareto",
    "plot_latency_overhead",
    "plot_rank_allocation",
]


def _new_figure(ncols: int = 1, width: float = 6.0, height: float = 4.0):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width * ncols, height), layout="constrained")
    axes = fig.subplots(1, ncols, squeeze=False)[0]
    return fig, list(axes)


def _save_atomic(fig, path) -> str:
    """Render ``fig`` as PNG (100 dpi) into memory, then write it with :func:`minilora.io.atomic_write_bytes`
    (temporary file, fsync, ``os.replace``): a killed run never leaves half a PNG. Creates the
    parent folder; returns ``path`` as str."""
    path = os.fspath(path)
    buf = io.BytesIO()
    try:
        fig.savefig(buf, format="png", dpi=100)
    finally:
        fig.clear()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    _io.atomic_write_bytes(path, buf.getbuffer())
    return path


def _check_mapping(obj, name: str, fn: str) -> dict:
    if not isinstance(obj, dict) or not obj:
        raise ValueError(f"{fn}: {name} must be a non-empty dict name -> data, got {type(obj).__name__}")
    return obj


def _as_1d(x, name: str, fn: str) -> np.ndarray:
    try:
        arr = np.asarray(x)
    except (ValueError, TypeError) as e:
        raise ValueError(f"{fn}: {name} could not be converted to an array: {e}") from None
    if arr.dtype.kind not in "iuf":
        raise TypeError(f"{fn}: {name} must be real numeric, got dtype {arr.dtype}")
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"{fn}: {name} must be a non-empty 1-D array, got shape {arr.shape}")
    return arr.astype(np.float64)


def plot_spectrum(spectra, path, log=True, title="Singular values") -> str:
    """Plot singular values σ_k against k, one line per entry.

    Args: ``spectra`` dict name -> (n,) spectrum or 2-D matrix (its singular values are used, as in
    :mod:`minilora.rank`); ``path`` output PNG; ``log`` log-scale y axis (zeros are dropped there);
    ``title``. Returns: ``path`` as str. Raises: ValueError / TypeError for bad spectra or an empty
    dict.
    """
    fn = "plot_spectrum"
    _check_mapping(spectra, "spectra", fn)
    fig, (ax,) = _new_figure()
    for name, s in spectra.items():
        s = _rank._spectrum(s, fn, name=f"spectra[{name!r}]").astype(np.float64)
        k = np.arange(1, s.size + 1)
        keep = s > 0 if log else np.ones(s.size, dtype=bool)
        ax.plot(k[keep], s[keep], marker="o", markersize=3, label=str(name))
    if log:
        ax.set_yscale("log")
    ax.set_xlabel("index k")
    ax.set_ylabel("singular value σ_k")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend()
    return _save_atomic(fig, path)


def plot_cumulative_energy(spectra, path, title="Cumulative energy", threshold=0.9) -> str:
    """Plot the energy fraction Σ_{i<=k} σ_i² / Σ σ_i² against k, with a line at ``threshold``.

    Args: ``spectra`` dict name -> spectrum or 2-D matrix; ``path``; ``title``; ``threshold`` in
    (0, 1] or None for no line. Returns: ``path`` as str.
    Raises: ValueError / TypeError for bad spectra or an empty dict.
    """
    fn = "plot_cumulative_energy"
    _check_mapping(spectra, "spectra", fn)
    fig, (ax,) = _new_figure()
    for name, s in spectra.items():
        s = _rank._spectrum(s, fn, name=f"spectra[{name!r}]").astype(np.float64)
        k = np.arange(1, s.size + 1)
        if s[0] == 0:
            frac = np.ones(s.size)
        else:
            cum = np.cumsum((s / s[0]) ** 2)
            frac = cum / cum[-1]
        ax.plot(k, frac, marker="o", markersize=3, label=str(name))
    if threshold is not None:
        ax.axhline(threshold, color="gray", linestyle="--", linewidth=1,
                   label=f"{threshold:.0%} of the energy")
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("k (top singular values kept)")
    ax.set_ylabel("fraction of Σσ² kept")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend()
    return _save_atomic(fig, path)


def plot_subspace_heatmap(grid, path, title="Subspace similarity φ(i, j)", baseline=None,
                          xlabel="j", ylabel="i") -> str:
    """Heatmap of a φ grid (from :func:`minilora.rank.subspace_similarity_grid`), as LoRA Fig. 3.

    Entry [i-1, j-1] is drawn at row i, column j, colour scale fixed to [0, 1].
    Args: ``grid`` (max_i, max_j) values in [0, 1]; ``path``; ``title``; ``baseline`` None, a
    scalar or an array broadcastable to the grid (e.g.
    :func:`minilora.rank.random_subspace_baseline_grid`): if given, a second panel shows
    grid - baseline on a diverging scale, so the structure above chance stands out.
    Returns: ``path`` as str. Raises: ValueError for a grid that is not 2-D or not finite, or a
    baseline that does not broadcast (both shapes named).
    """
    fn = "plot_subspace_heatmap"
    grid = _rank._as_matrix(grid, "grid", fn).astype(np.float64)
    n_i, n_j = grid.shape
    extent = (0.5, n_j + 0.5, n_i + 0.5, 0.5)
    panels = [(grid, title, "viridis", 0.0, 1.0, "φ")]
    if baseline is not None:
        base = _rank._as_array(baseline, "baseline", fn, (0, 1, 2)).astype(np.float64)
        try:
            excess = grid - base
        except ValueError:
            raise ValueError(
                f"{fn}: baseline of shape {base.shape} does not broadcast to grid {grid.shape}"
            ) from None
        if excess.shape != grid.shape:
            raise ValueError(f"{fn}: baseline {base.shape} changes the grid shape {grid.shape}")
        m = max(float(np.max(np.abs(excess))), 1e-12)
        panels.append((excess, "φ minus random baseline max(i, j)/d", "RdBu_r", -m, m, "Δφ"))
    fig, axes = _new_figure(ncols=len(panels), width=5.0, height=4.2)
    for ax, (data, ttl, cmap, vmin, vmax, label) in zip(axes, panels, strict=True):
        im = ax.imshow(data, cmap=cmap, vmin=vmin, vmax=vmax, extent=extent, aspect="auto",
                       interpolation="nearest")
        ax.set_title(ttl)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        fig.colorbar(im, ax=ax, label=label)
    return _save_atomic(fig, path)


def plot_loss_vs_rank(ranks, losses, path, full_ft_loss=None, title="Validation loss vs LoRA rank",
                      ylabel="validation loss") -> str:
    """Loss against LoRA rank r (log2 x axis), with an optional full fine-tuning reference line.

    Args: ``ranks`` (n,) positive ints; ``losses`` (n,) finite; ``path``; ``full_ft_loss`` float
    or None. Returns: ``path`` as str. Raises: ValueError for mismatched lengths (both named),
    non-positive ranks or non-finite values; TypeError for non-numeric input.
    """
    fn = "plot_loss_vs_rank"
    ranks = _as_1d(ranks, "ranks", fn)
    losses = _as_1d(losses, "losses", fn)
    if ranks.shape != losses.shape:
        raise ValueError(f"{fn}: ranks {ranks.shape} and losses {losses.shape} differ in length")
    if not (np.all(np.isfinite(ranks)) and np.all(ranks > 0)):
        raise ValueError(f"{fn}: ranks must be positive and finite, got {ranks}")
    if not np.all(np.isfinite(losses)):
        raise ValueError(f"{fn}: losses contain NaN or inf: {losses}")
    order = np.argsort(ranks)
    fig, (ax,) = _new_figure()
    ax.plot(ranks[order], losses[order], marker="o", label="LoRA")
    if full_ft_loss is not None:
        ax.axhline(float(full_ft_loss), color="gray", linestyle="--", label="full fine-tuning")
    ax.set_xscale("log", base=2)
    ax.set_xticks(ranks[order])
    ax.set_xticklabels([f"{r:g}" for r in ranks[order]])
    ax.set_xlabel("rank r")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend()
    return _save_atomic(fig, path)


def plot_loss_curves(curves, path, title="Loss", ylabel="loss", log=False) -> str:
    """Loss curves, one line per run: ``curves`` dict name -> (steps, losses).

    Args: ``curves`` non-empty dict of pairs of equal-length 1-D arrays; ``path``; ``title``;
    ``ylabel``; ``log`` log-scale y. Returns: ``path`` as str. Raises: ValueError for an empty dict,
    a value that is not a pair, or lengths that differ (both named); TypeError for non-numeric data.
    """
    fn = "plot_loss_curves"
    _check_mapping(curves, "curves", fn)
    fig, (ax,) = _new_figure()
    for name, pair in curves.items():
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            raise ValueError(f"{fn}: curves[{name!r}] must be a pair (steps, losses)")
        steps = _as_1d(pair[0], f"curves[{name!r}] steps", fn)
        losses = _as_1d(pair[1], f"curves[{name!r}] losses", fn)
        if steps.shape != losses.shape:
            raise ValueError(
                f"{fn}: curves[{name!r}]: steps {steps.shape} and losses {losses.shape} differ"
            )
        ax.plot(steps, losses, label=str(name))
    if log:
        ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend()
    return _save_atomic(fig, path)


def plot_lines(series, path, title, xlabel, ylabel, logx=False, logy=False, hlines=None) -> str:
    """A small line chart with markers: one line per entry of ``series``, optional reference lines.

    Args: ``series`` non-empty dict name -> (x, y), two equal-length 1-D numeric arrays; ``path``
    output PNG; ``title``, ``xlabel``, ``ylabel`` text; ``logx`` log2 x axis; ``logy`` log10 y axis;
    ``hlines`` None or dict name -> y (dashed gray horizontal lines, e.g. a baseline).
    Returns: ``path`` as str. Raises: ValueError for an empty dict, a value that is not a pair, or x
    and y of different lengths (both named); TypeError for non-numeric data.
    """
    fn = "plot_lines"
    _check_mapping(series, "series", fn)
    fig, (ax,) = _new_figure()
    for name, pair in series.items():
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            raise ValueError(f"{fn}: series[{name!r}] must be a pair (x, y)")
        x = _as_1d(pair[0], f"series[{name!r}] x", fn)
        y = _as_1d(pair[1], f"series[{name!r}] y", fn)
        if x.shape != y.shape:
            raise ValueError(f"{fn}: series[{name!r}]: x {x.shape} and y {y.shape} differ")
        ax.plot(x, y, marker="o", label=str(name))
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


def plot_pareto(rows, path, base_loss=None, title="Validation loss vs trainable parameters") -> str:
    """The LoRA-vs-baselines Pareto plot: trainable parameters (log x) against validation loss,
    one colour per method family, the Pareto front as a dashed line (`minilora compare`).

    Args: ``rows`` non-empty list of dicts with "method", "family", "trainable_params" (> 0),
    "code_val" (finite); ``path``; ``base_loss`` None or the base model's loss (a gray line).
    Returns: ``path`` as str. Raises: ValueError for no rows or a row without those keys.
    """
    fn = "plot_pareto"
    if not rows or not all(isinstance(r, dict) and {"method", "family", "trainable_params", "code_val"} <= set(r)
                           for r in rows):
        raise ValueError(f"{fn}: rows must be a non-empty list of dicts with method, family, trainable_params, "
                         "code_val")
    fig, (ax,) = _new_figure(width=8.0, height=5.0)
    for fam in dict.fromkeys(r["family"] for r in rows):
        pts = [r for r in rows if r["family"] == fam]
        ax.scatter([r["trainable_params"] for r in pts], [r["code_val"] for r in pts], label=fam, s=36)
        for r in pts:
            ax.annotate(r["method"], (r["trainable_params"], r["code_val"]), fontsize=6, alpha=0.7,
                        xytext=(3, 3), textcoords="offset points")
    front = sorted((r["trainable_params"], r["code_val"]) for r in rows)
    best, line = np.inf, []
    for x, y in front:
        if y < best:
            best = y
            line.append((x, y))
    ax.plot([p[0] for p in line], [p[1] for p in line], "k--", linewidth=1, label="Pareto front")
    if base_loss is not None:
        ax.axhline(float(base_loss), linestyle=":", color="gray", label="base model")
    ax.set_xscale("log")
    ax.set_xlabel("trainable parameters")
    ax.set_ylabel("validation loss on code (nats/byte)")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    return _save_atomic(fig, path)


def plot_latency_overhead(overhead, batch_sizes, seq_lens, path, title="Inference latency over the base model") -> str:
    """Table 1 of the LoRA paper as a figure: % latency over the base model against batch size,
    one panel per sequence length, one line per model (`minilora latency`).

    Args: ``overhead`` dict model -> array (len(seq_lens), len(batch_sizes)) of percentages;
    ``batch_sizes``, ``seq_lens`` lists of ints; ``path``. Returns: ``path`` as str.
    Raises: ValueError for an empty dict or an array of another shape (named).
    """
    fn = "plot_latency_overhead"
    _check_mapping(overhead, "overhead", fn)
    fig, axes = _new_figure(ncols=len(seq_lens), width=4.0, height=3.6)
    for model, table in overhead.items():
        a = np.asarray(table, dtype=float)
        if a.shape != (len(seq_lens), len(batch_sizes)):
            raise ValueError(f"{fn}: overhead[{model!r}] has shape {a.shape}, expected "
                             f"{(len(seq_lens), len(batch_sizes))}")
        for ax, row in zip(axes, a, strict=True):
            ax.plot(batch_sizes, row, marker="o", label=str(model))
    for ax, T in zip(axes, seq_lens, strict=True):
        ax.axhline(0.0, color="gray", linewidth=1)
        ax.set_xscale("log", base=2)
        ax.set_xticks(batch_sizes)
        ax.set_xticklabels([str(b) for b in batch_sizes])
        ax.set_xlabel("batch size")
        ax.set_title(f"sequence length {T}")
        ax.grid(True, alpha=0.3)
    axes[0].set_ylabel("% latency over the base model")
    axes[-1].legend(fontsize=7)
    fig.suptitle(title)
    return _save_atomic(fig, path)


def plot_rank_allocation(kept, path, compare=None, title="Rank kept per layer (AdaLoRA)",
                         compare_label="effective rank of a plain LoRA ΔW") -> str:
    """Grouped bars of the rank each adapted matrix kept, with optional markers to compare against.

    Args: ``kept`` non-empty dict group label (e.g. "q", "v") -> dict layer label -> kept rank
    (every group with the same layers, in plot order); ``compare`` None or the same shape with
    floats (e.g. :func:`minilora.rank.effective_rank` of a plain LoRA ΔW), drawn as black markers
    on the bars; ``path`` output PNG.
    Returns: ``path`` as str. Raises: ValueError for an empty dict or groups whose layers differ.
    """
    fn = "plot_rank_allocation"
    _check_mapping(kept, "kept", fn)
    layers = list(next(iter(kept.values())))
    for g, row in [*kept.items(), *(compare or {}).items()]:
        if list(row) != layers:
            raise ValueError(f"{fn}: group {g!r} has layers {list(row)}, expected {layers}")
    fig, (ax,) = _new_figure(width=max(6.0, 0.9 * len(layers) * len(kept)))
    x = np.arange(len(layers), dtype=float)
    width = 0.8 / len(kept)
    for i, (g, row) in enumerate(kept.items()):
        pos = x + (i - (len(kept) - 1) / 2) * width
        ax.bar(pos, [row[k] for k in layers], width=width, label=f"{g}: rank kept")
        if compare and g in compare:
            ax.plot(pos, [compare[g][k] for k in layers], "k_", markersize=14, markeredgewidth=2,
                    label=compare_label if i == 0 else None)
    ax.set_xticks(x, layers)
    ax.set_xlabel("layer")
    ax.set_ylabel("rank")
    ax.set_title(title)
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.15), ncol=3, fontsize="small")
    return _save_atomic(fig, path)
