"""Experiments on a GPT you train yourself: LoRA §7 (Hu et al. 2021, arXiv:2106.09685) and the
alpha/learning-rate equivalence under Adam (§4.1).

One module per experiment, one registry (:data:`REGISTRY`, in :mod:`.registry`) that the CLI
(`minilora analyze <name>`), `minilora analyze all` and the docs read from:

======================  ==============================================  ===========================
``analyze`` name        function                                        paper
======================  ==============================================  ===========================
``sweep``               :func:`.rank_sweep.rank_sweep`                  §7.2, Tables 6 and 18
``subspace``            :func:`.subspace.subspace_experiment`           §7.2, eq. 4, Figs. 3 and 4
``fullft``              :func:`.full_ft_update.full_ft_update`          §7 (Eckart–Young)
``amplification``       :func:`.amplification.amplification`            §7.3, Table 7
``planted``             :func:`.planted_rank.planted_rank`              §7, a task of known rank
``alpha-lr``            :func:`.alpha_lr.alpha_lr_equivalence`          §4.1 (not part of ``all``)
======================  ==============================================  ===========================

Each writes into a run folder a markdown table ``<name>.md``, the numbers as ``<name>.json`` and
PNG figures (all atomically), and returns its results dict. :func:`run_all` runs the §7 five on one
base (the sweep once, its adapters reused) and writes ``summary.md``. Shared helpers (the base
model, corpora, budgets, fine-tuning, output files) are in :mod:`.common`.

Import an experiment from its module (``from minilora.experiments.alpha_lr import
alpha_lr_equivalence``); this package exports only the registry, the runners and :func:`get_base`.
The derivations, the figures measured and how to read the plots are in docs/rank_analysis.md.
"""
from __future__ import annotations

from .common import DEFAULT_BASE_DIR, get_base
from .registry import REGISTRY, Experiment, get_experiment, run_all, run_experiment

__all__ = ["REGISTRY", "Experiment", "get_experiment", "run_experiment", "run_all", "get_base", "DEFAULT_BASE_DIR"]
