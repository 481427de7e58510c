"""The one list of experiments: name -> module and function, description, default settings.

`minilora analyze <name>` takes its choices and help from :data:`REGISTRY`, `minilora analyze all`
runs the entries with ``in_all`` in registry order (:func:`run_all`), and the docs name the same
entries (a test checks docs/rank_analysis.md against it). Modules are imported only when an
experiment runs (:meth:`Experiment.load`).

Every experiment function has the same calling convention::

    fn(base, out_dir, *, steps=None, quick=False, log=print, **settings) -> dict

``base`` is the pretrained GPT (the ``--base`` checkpoint, or the tiny in-memory one with quick;
for ``base="shipped"`` entries None means minilora's shipped pretrained model), ``out_dir`` the run
folder (created; files written atomically), ``steps`` the fine-tuning budget (None: the
experiment's default), ``settings`` the keyword arguments of :attr:`Experiment.defaults`.
"""
from __future__ import annotations

import importlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Callable, Mapping

from .common import get_base, write_results

__all__ = ["Experiment", "REGISTRY", "get_experiment", "run_experiment", "run_all"]


def _frozen(d: Mapping | None) -> Mapping:
    return MappingProxyType(dict(d or {}))


@dataclass(frozen=True)
class Experiment:
    """One experiment: where its code lives, what it measures, how it runs.

    Attributes:
        name: the CLI name (`minilora analyze <name>`) and the key of its results in ``summary.json``.
        module, function: ``minilora.experiments.<module>.<function>``, called as described in the
            module docstring; the module also has ``summary(result) -> str`` when ``in_all``.
        description: one line for `--help` and the docs. source: the paper section it follows.
        outputs: the files it writes into the run folder (``*`` stands for several).
        defaults: keyword settings of a default run; quick: the ones that change with ``--quick``.
        in_all: run by `minilora analyze all` (and summarised in summary.md).
        all_overrides: settings that differ inside `analyze all` (e.g. None: take the sweep's).
        uses_sweep: inside `analyze all`, receives the sweep's result (its trained adapters) as ``sweep=``.
        base: "demo" (the ``--base`` checkpoint, pretrained there if missing; tiny with ``--quick``)
            or "shipped" (:func:`minilora.checkpoints.load_pretrained`; ``--base`` is not used).
    """

    name: str
    module: str
    function: str
    description: str
    source: str
    outputs: tuple[str, ...]
    defaults: Mapping[str, Any] = field(default_factory=dict)
    quick: Mapping[str, Any] = field(default_factory=dict)
    in_all: bool = True
    all_overrides: Mapping[str, Any] = field(default_factory=dict)
    uses_sweep: bool = False
    base: str = "demo"

    def __post_init__(self):
        for name in ("defaults", "quick", "all_overrides"):
            object.__setattr__(self, name, _frozen(getattr(self, name)))
        if self.base not in ("demo", "shipped"):
            raise ValueError(f"Experiment {self.name!r}: base must be 'demo' or 'shipped', got {self.base!r}")

    def load(self) -> Callable[..., dict]:
        """The experiment function (imports its module)."""
        return getattr(importlib.import_module(f"{__package__}.{self.module}"), self.function)

    def summary(self) -> Callable[[dict], str]:
        """The module's ``summary(result) -> str``: its section of summary.md."""
        return importlib.import_module(f"{__package__}.{self.module}").summary

    def settings(self, quick: bool = False) -> dict:
        """The keyword settings of a default run (``quick``: with the quick overrides)."""
        return {**self.defaults, **(self.quick if quick else {})}


REGISTRY: Mapping[str, Experiment] = MappingProxyType({e.name: e for e in (
    Experiment("sweep", "rank_sweep", "rank_sweep",
               "(a) validation loss on code against the LoRA rank r (q,v of c_attn), and full fine-tuning",
               "LoRA §7.2, Tables 6 and 18", ("sweep.md", "sweep.json", "sweep_loss_vs_rank.png"),
               defaults={"ranks": (1, 2, 4, 8, 16, 64)}, quick={"ranks": (2, 8, 16)}),
    Experiment("subspace", "subspace", "subspace_experiment",
               "(b) subspace similarity φ between A of r=8 and r=64, and between two init seeds",
               "LoRA §7.2, eq. 4, Figs. 3 and 4", ("subspace.md", "subspace.json", "subspace_*.png"),
               defaults={"r_small": 8, "r_large": 64}, quick={"r_large": 16}, uses_sweep=True),
    Experiment("fullft", "full_ft_update", "full_ft_update",
               "(c) spectrum and ranks of the full fine-tuning update ΔW, loss after truncating ΔW to rank k",
               "LoRA §7 (Eckart–Young truncation)",
               ("fullft.md", "fullft.json", "fullft_spectrum.png", "fullft_energy.png", "fullft_truncation.png"),
               defaults={"ks": (1, 2, 4, 8, 16, 32)}, uses_sweep=True),
    Experiment("amplification", "amplification", "amplification",
               "(d) amplification ‖ΔW‖_F / ‖UᵀWV‖_F of the adapters against random and top-r subspaces",
               "LoRA §7.3, Table 7", ("amplification.md", "amplification.json", "amplification.png"),
               defaults={"ranks": (1, 4, 8, 16, 64)}, quick={"ranks": (2, 8)},
               all_overrides={"ranks": None}, uses_sweep=True),
    Experiment("planted", "planted_rank", "planted_rank",
               "(e) planted rank: pydoc with k letter pairs swapped; recover k from the trained ΔE",
               "LoRA §7 question, on a task of known rank",
               ("planted.md", "planted.json", "planted_spectrum.png", "planted_energy.png"),
               defaults={"k": 4},
               all_overrides={"steps": None}),           # its own 150-step budget inside `all`
    Experiment("alpha-lr", "alpha_lr", "alpha_lr_equivalence",
               "under Adam, lora_alpha x c equals lr_B x c (or lr x √c with A's init x √c), not lr x c",
               "LoRA §4.1 ('scale the initialization appropriately')",
               ("alpha_lr.md", "alpha_lr.json", "alpha_lr.png"),
               defaults={"c": 4.0}, in_all=False, base="shipped"),
)})


def get_experiment(name: str) -> Experiment:
    """The registry entry ``name``. Raises ValueError naming the known experiments."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown experiment {name!r}; choose from: {', '.join(REGISTRY)}") from None


def run_experiment(name: str, out_dir, *, base=None, base_dir=None, quick: bool = False, steps: int | None = None,
                   log: Callable[[str], object] = print, **settings) -> dict:
    """Run one registered experiment into ``out_dir`` and return its results dict.

    Args:
        name: a key of :data:`REGISTRY`. out_dir: run folder (created).
        base: a pretrained GPT to use; None: :func:`minilora.experiments.common.get_base` (``base_dir``,
            or the tiny in-memory base with ``quick``) for "demo" entries, the shipped model for
            "shipped" ones.
        quick: small budgets (the registry's quick settings). steps: fine-tuning steps (None: default).
        settings: overrides of the registry's settings (e.g. ``k=3`` for "planted").
    Raises: ValueError for an unknown name or a setting the experiment does not have.
    """
    e = get_experiment(name)
    unknown = sorted(set(settings) - set(e.defaults))
    if unknown:
        raise ValueError(f"experiment {name!r} has no setting {unknown}; its settings: {sorted(e.defaults)}")
    if base is None and e.base == "demo":
        base = get_base(base_dir, quick=quick, log=log)
    if base is not None:
        base.eval()
    return e.load()(base, Path(out_dir), steps=steps, quick=quick, log=log, **{**e.settings(quick), **settings})


def run_all(out_dir, base_dir=None, quick: bool = False, log: Callable[[str], object] = print,
            steps: int | None = None, k: int = 4) -> dict:
    """Every ``in_all`` experiment of the registry into ``out_dir``, on one base, in registry order.

    The sweep runs once and its adapters and full fine-tuning are reused by the entries with
    ``uses_sweep`` (subspace, fullft, amplification). ``k``: the planted experiment's pairs.
    Writes summary.md (each module's ``summary`` section) and summary.json (every result by name);
    returns {"seconds", "times", <name>: result, ...}.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    base = get_base(base_dir, quick=quick, log=log)
    base.eval()
    suite = [e for e in REGISTRY.values() if e.in_all]
    results: dict = {}
    times: dict = {}
    for e in suite:
        kw = {"steps": steps, **e.settings(quick), **e.all_overrides}
        if "k" in kw:
            kw["k"] = k
        if e.uses_sweep:
            kw["sweep"] = results["sweep"]
        t = time.perf_counter()
        results[e.name] = e.load()(base, out, quick=quick, log=log, **kw)
        times[e.name] = time.perf_counter() - t
        log(f"-- {e.name} done in {times[e.name]:.0f} s")
    total = time.perf_counter() - t0
    md = ["# minilora analyze: LoRA §7 on a GPT trained here\n",
          f"Base: {base.config.n_layer} layers x {base.config.n_embd} channels, pretrained on pydoc prose; "
          f"fine-tuning on stdlib code. "
          f"Total {total:.0f} s ({', '.join(f'{n} {t:.0f} s' for n, t in times.items())}).\n"]
    md += [e.summary()(results[e.name]) for e in suite]
    res = {"seconds": total, "times": times, **results}
    write_results(out, "summary", res, "\n".join(md))
    log(f"wrote {out}/summary.md in {total:.0f} s")
    return res
