"""(e) Planted rank: a fine-tuning task whose exact update has a known rank k.

The pretraining corpus (pydoc) with k pairs of frequent letters swapped consistently
(:func:`planted_swap`). With the tied embedding E the exact fix is a permutation of k pairs of
rows, ΔE* = (Π − I)E of rank k; the experiment fine-tunes only E and recovers k from the *trained*
update's spectrum. A check of the SVD tools of :mod:`minilora.rank` on a task whose answer is known
(the question of LoRA §7, Hu et al. 2021, arXiv:2106.09685). CLI: ``minilora analyze planted``.
"""
from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from .. import rank as R
from ..data import ByteTokenizer, TokenDataset, load_corpus
from ..nn import GPT
from ..plots import plot_cumulative_energy, plot_spectrum
from ..train import evaluate
from .common import Log, dataset, finetune, get_base, md_table, settings, val_batches, write_results

__all__ = ["planted_swap", "swap_pairs", "planted_rank", "summary"]


def planted_swap(text: str, pairs: Iterable[Sequence[str]]) -> str:
    """Swap characters pairwise, consistently: for each pair (a, b) every a becomes b and every b becomes a.

    All swaps happen simultaneously (one ``str.translate``), so the map is an involution:
    ``planted_swap(planted_swap(t, p), p) == t``. The task of :func:`planted_rank`: a fine-tuning
    task whose "true" change is a permutation of a few characters, i.e. of low rank in the embedding.

    Args:
        text: any str.
        pairs: iterable of 2-sequences of single characters, e.g. ``[("e", "o"), "st"]``.

    Returns:
        the transformed str, same length as ``text``.

    Raises:
        ValueError: a pair is not two single characters, a pair swaps a character with itself, or a
            character appears in more than one pair (pairs must be disjoint).
    """
    table: dict[int, str] = {}
    for pair in pairs:
        try:
            a, b = pair
        except (TypeError, ValueError):
            raise ValueError(f"planted_swap: each pair must be two characters, got {pair!r}") from None
        if not (isinstance(a, str) and isinstance(b, str) and len(a) == 1 and len(b) == 1):
            raise ValueError(f"planted_swap: each pair must be two single characters, got {pair!r}")
        if a == b:
            raise ValueError(f"planted_swap: pair {pair!r} swaps a character with itself")
        for ch in (a, b):
            if ord(ch) in table:
                raise ValueError(f"planted_swap: character {ch!r} appears in more than one pair; "
                                 "pairs must be disjoint")
        table[ord(a)] = b
        table[ord(b)] = a
    return text.translate(table)


def swap_pairs(text: str, k: int) -> list[tuple[str, str]]:
    """k disjoint pairs of frequent ASCII lowercase letters of ``text``: the 2k most frequent,
    paired 1st with 2nd, 3rd with 4th, ... (frequent, so every swap moves the loss).

    Raises ValueError if ``text`` has fewer than 2k distinct lowercase letters."""
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


def planted_rank(base: GPT | None, out_dir: str | Path, k: int = 4, steps: int | None = None, quick: bool = False,
                 lr: float = 3e-3, optimizer: str = "adamw", control: bool = False, log: Log = print) -> dict:
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
    what fine-tuning E changes anyway when the base is not converged. ``base`` None: :func:`get_base`
    (quick or the demo's). ``steps`` None: 150 (the embedding needs more steps than the sweep).
    Writes planted.md/.json, planted_spectrum.png, planted_energy.png. Returns the results dict:
    "k", "pairs", "exact_rank", "recovered_rank", the val losses ("floor_val_loss" = base on pydoc,
    "before_val_loss" / "after_val_loss" on the swapped copy, nats/byte), the ranks and spectra of
    ΔE (swapped rows and all rows), "phi_topk_trained_vs_exact", "pair_antisymmetry",
    "rel_error_vs_exact", "files", "settings", "seconds".
    Raises ValueError if pydoc has fewer than 2k distinct lowercase letters (k <= 13 works).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    s = settings(quick, steps)
    if steps is None:
        s["steps"] = 150                                           # the embedding needs more steps than the sweep
    if base is None:
        base = get_base(None, quick=quick, log=log)
    text = load_corpus("pydoc")
    pairs = swap_pairs(text, k)
    tok = ByteTokenizer()
    orig = dataset("pydoc")
    swapped = TokenDataset(tok.encode(planted_swap(text, pairs)))
    val_o, val_s = val_batches(orig, base, s), val_batches(swapped, base, s)
    floor, before = evaluate(base, val_o), evaluate(base, val_s)
    log(f"== planted: k={k} swaps {pairs}; base loss on pydoc {floor:.4f} (the floor), "
        f"on the swapped copy {before:.4f}")
    emb = {"transformer.wte.weight"}
    model, hist = finetune(base, swapped, s, "subset", trainable=emb, lr=lr, optimizer=optimizer, log=log)
    after = evaluate(model, val_s)
    E0 = base.transformer.wte.weight.data.astype(np.float64)        # (V, C)
    dE = model.transformer.wte.weight.data.astype(np.float64) - E0  # (V, C)
    ctrl_after = None
    if control:
        # paired control: the same run on the original corpus (same windows, same seed): what
        # fine-tuning E changes anyway (the base is not converged); subtract it.
        ctrl, _ = finetune(base, orig, s, "subset", trainable=emb, lr=lr, optimizer=optimizer, log=log)
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
          md_table(["quantity", "value"], [
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
    write_results(out, "planted", res, "\n".join(md))
    return res


def summary(res: dict) -> str:
    """The planted-rank section of ``summary.md``, from planted_rank's result."""
    return "\n".join([
        f"\n## (e) planted rank k = {res['k']} (planted.md)\n",
        md_table(["quantity", "value"],
                 [["swapped pairs", res["pairs"]], ["exact rank of (Π − I)E", res["exact_rank"]],
                  ["recovered rank (90 % energy of trained ΔE, swapped rows)", res["recovered_rank"]],
                  ["elbow of the swapped rows' spectrum", res["gap_rank_swapped_rows"]],
                  ["φ(top-k trained, exact)", res["phi_topk_trained_vs_exact"]],
                  ["val loss floor / before / after", f"{res['floor_val_loss']:.4f} / {res['before_val_loss']:.4f} / "
                                                      f"{res['after_val_loss']:.4f}"]])])
