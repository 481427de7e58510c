"""The jobs built on the library: `demo`, `gradcheck`, `exercises`, `analyze`, `drill`, `compare`, `latency`."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ._common import UserError, nonneg_int, positive_float, positive_int

# --------------------------------------------------------------------------------------------------
# demo: the main job
# --------------------------------------------------------------------------------------------------


def add_demo_arguments(p):
    """Arguments of `minilora demo` (run folder, step budgets, LoRA rank/alpha/targets, learning rates)."""
    from ..demo import DemoConfig

    d = DemoConfig()
    p.add_argument("--out", default="runs/demo", help="run folder (default: runs/demo); the base model is kept "
                                                      "in <out>/base and reused by the next run")
    p.add_argument("--pretrain", action="store_true",
                   help="pretrain the base here (1.5-3.5 minutes on 2 quiet cores) instead of using the base "
                        "shipped with the package (minilora/checkpoints/pydoc-s, made by this same recipe)")
    p.add_argument("--pretrain-steps", type=positive_int, default=d.pretrain_steps,
                   help=f"pretraining steps on pydoc (default {d.pretrain_steps})")
    p.add_argument("--finetune-steps", type=positive_int, default=d.finetune_steps,
                   help=f"steps of each fine-tuning run on stdlib (default {d.finetune_steps})")
    p.add_argument("--r", type=positive_int, default=d.r, help=f"LoRA rank (default {d.r})")
    p.add_argument("--lora-alpha", type=positive_float, default=d.lora_alpha,
                   help=f"LoRA alpha; scaling = alpha / r (default {d.lora_alpha:g})")
    p.add_argument("--target-modules", nargs="+", default=list(d.target_modules),
                   help="module names (or dotted suffixes) to adapt (default: c_attn)")
    p.add_argument("--lora-lr", type=positive_float, default=d.lora_lr, help=f"LoRA peak lr (default {d.lora_lr:g})")
    p.add_argument("--full-lr", type=positive_float, default=d.full_lr,
                   help=f"full fine-tuning peak lr (default {d.full_lr:g})")
    p.add_argument("--seed", type=nonneg_int, default=d.seed, help=f"random seed (default {d.seed})")


def run_demo(args):
    """Run the main job (minilora.demo.run_demo) with the process-level malloc setting; exit code.

    Without --pretrain the demo starts from the base shipped with the package when its recipe matches."""
    from .. import perf
    from ..demo import DemoConfig
    from ..demo import run_demo as _run

    perf.configure_malloc()
    try:
        cfg = DemoConfig(pretrain_steps=args.pretrain_steps, finetune_steps=args.finetune_steps, r=args.r,
                         lora_alpha=args.lora_alpha, target_modules=tuple(args.target_modules),
                         lora_lr=args.lora_lr, full_lr=args.full_lr, seed=args.seed)
    except (TypeError, ValueError) as e:
        raise UserError(str(e)) from None
    _run(args.out, cfg, log=lambda s: print(s, flush=True), pretrain=args.pretrain)
    return 0


# --------------------------------------------------------------------------------------------------
# gradcheck: the three-way comparison a learner can run
# --------------------------------------------------------------------------------------------------


def add_gradcheck_arguments(p):
    """Arguments of `minilora gradcheck` (the seed of the random inputs)."""
    p.add_argument("--seed", type=nonneg_int, default=0, help="seed of the random inputs (default 0)")


def run_gradcheck(args):
    """Print hand-derived vs autograd vs numeric gradients of a LoRA layer and checks of the fused ops.

    Returns 0 when every autograd/numeric difference is below 1e-6 (float64), else 1."""
    from .. import gradcheck, ops
    from ..lora import functional as LF
    from ..lora.layer import lora_linear_composed
    from ..tensor import Tensor

    rng = np.random.default_rng(args.seed)

    def r64(*s):
        return rng.standard_normal(s)

    x, W0, b = r64(2, 3, 5), r64(4, 5), r64(4)
    A, B, s = r64(2, 5), r64(4, 2), 16 / 2
    mask = (rng.random(x.shape) > 0.3).astype(np.float64)

    print("LoRA layer y = x W0^T + b + s (x~ A^T) B^T, shapes x (2,3,5), W0 (4,5), A (2,5), B (4,2), s = 8, "
          "dropout mask kept with p = 0.7")

    def hand(c, x_, A_, B_):
        _, cache = LF.lora_forward(x_, W0, b, A_, B_, s, mask, 0.7)
        g = LF.lora_backward(c, cache)
        return [g["dx"], g["dA"], g["dB"]]

    print("hand = lora/functional.py's derivation; autograd = the same layer composed from engine ops")
    named = [Tensor(v, requires_grad=True, name=n) for v, n in ((x, "x"), (A, "A"), (B, "B"))]
    rows = gradcheck.compare(lambda x_, A_, B_: lora_linear_composed(x_, W0, b, A_, B_, s, mask, 0.7), *named,
                             hand=hand)
    checks = [("softmax", lambda t: ops.softmax(t), [r64(3, 6)]),
              ("log_softmax", lambda t: ops.log_softmax(t), [r64(3, 6)]),
              ("layer_norm", lambda t, w, bb: ops.layer_norm(t, w, bb), [r64(3, 6), r64(6), r64(6)]),
              ("attention", lambda t: ops.attention(t, 2), [r64(2, 4, 12)]),
              ("cross_entropy", lambda t: ops.cross_entropy(t, np.array([1, 0, 5])), [r64(3, 6)]),
              ("gelu", lambda t: ops.gelu(t), [r64(4, 5)]),
              ("matmul (broadcast)", lambda a, bb: a @ bb, [r64(2, 3, 4), r64(4, 5)])]
    print("\nautograd vs central differences (float64, random cotangent):")
    worst = max(r["auto_num"] for r in rows)
    for name, fn, arrays in checks:
        rep = gradcheck.check_grad(fn, *arrays, raise_on_failure=False)
        err = max(row["abs"] for row in rep.rows)
        worst = max(worst, err)
        print(f"  {name:<20} max abs error {err:.2e}  {'ok' if rep.passed else 'FAILED'}")
    return 0 if worst < 1e-6 else 1


# --------------------------------------------------------------------------------------------------
# exercises
# --------------------------------------------------------------------------------------------------


def add_exercises_arguments(p):
    """Arguments of `minilora exercises` (list | show NAME | check NAME --file F)."""
    sub = p.add_subparsers(dest="action", metavar="action")
    sub.add_parser("list", help="list the exercises in the suggested order")
    show = sub.add_parser("show", help="print an exercise's stub (copy it to a file and fill it in)")
    show.add_argument("name")
    check = sub.add_parser("check", help="grade your solution on hypothesis-drawn inputs")
    check.add_argument("name")
    check.add_argument("--file", required=True, help="your Python file defining a function named like the exercise")


def run_exercises(args):
    """List exercises, print a stub, or grade a solution file; exit code 0 when it passes."""
    try:
        from .. import exercises
    except ImportError as e:  # hypothesis is a main dependency: only a broken install gets here
        raise UserError(f"minilora exercises needs {e.name or 'hypothesis'}, which is missing: "
                        "reinstall with python -m pip install -e . (or pip install hypothesis)") from None

    if args.action in (None, "list"):
        for name, summary in exercises.list_exercises():
            print(f"{name:<24} {summary}")
        print("\nminilora exercises show NAME > my_solution.py   then   "
              "minilora exercises check NAME --file my_solution.py")
        return 0
    names = [n for n, _ in exercises.list_exercises()]
    if args.name not in names:
        raise UserError(f"unknown exercise {args.name!r}; choose from: {', '.join(names)}")
    if args.action == "show":
        print(exercises.stub_source(args.name))
        return 0
    result = exercises.check_file(args.name, args.file)
    print(result)
    return 0 if result.passed else 1


# --------------------------------------------------------------------------------------------------
# analyze: the experiments of minilora/experiments/ (choices and help from its REGISTRY)
# --------------------------------------------------------------------------------------------------


def add_analyze_arguments(p):
    """Arguments of `minilora analyze`: which experiment (a name of minilora.experiments.REGISTRY, or
    all), run folder, base checkpoint, budget, and the planted experiment's k."""
    from ..experiments import DEFAULT_BASE_DIR, REGISTRY

    suite = ", ".join(e.name for e in REGISTRY.values() if e.in_all)
    p.add_argument("experiment", choices=[*REGISTRY, "all"],
                   help="; ".join(f"{e.name}: {e.description}" for e in REGISTRY.values())
                   + f"; all: {suite} on one base, with summary.md")
    p.add_argument("--out", default="runs/analyze", help="run folder (default: runs/analyze)")
    p.add_argument("--base", default=DEFAULT_BASE_DIR,
                   help="pretrained base checkpoint; pretrained there if missing (default: runs/demo/base; "
                        "alpha-lr always uses the shipped pretrained model)")
    p.add_argument("--steps", type=int, default=None,
                   help="fine-tuning steps per run (default 120, quick 30; planted: 150; alpha-lr: 50, quick 10)")
    p.add_argument("--k", type=int, default=4, help="number of swapped pairs for `planted` (default 4)")
    p.add_argument("--quick", action="store_true",
                   help="tiny in-memory base and few steps (under a minute or two; for tests, not for figures)")


def run_analyze(args):
    """Run the chosen experiment (or all) with the malloc setting; exit code.

    Raises: ValueError for --steps < 1 or --k outside 1..13, OSError for an --out (or a --base to be
    pretrained) that cannot be written: all exit 2 via main, before any training."""

    from .. import perf
    from ..experiments import DEFAULT_BASE_DIR, REGISTRY, run_all, run_experiment
    from ..io import ensure_writable_dir

    if args.steps is not None and args.steps < 1:
        raise ValueError(f"--steps must be >= 1, got {args.steps}")
    if not 1 <= args.k <= 13:
        raise ValueError(f"--k must be between 1 and 13 (pairs of distinct lowercase letters), got {args.k}")
    base_dir = None if args.quick and args.base == DEFAULT_BASE_DIR else args.base
    out = ensure_writable_dir(Path(args.out), "--out")
    if base_dir is not None and not (Path(base_dir) / "latest.json").exists():
        ensure_writable_dir(base_dir, "--base")  # a missing base is pretrained there
    perf.configure_malloc()
    if args.experiment == "all":
        run_all(out, base_dir=base_dir, quick=args.quick, steps=args.steps, k=args.k)
    else:
        extra = {"k": args.k} if "k" in REGISTRY[args.experiment].defaults else {}
        run_experiment(args.experiment, out, base_dir=base_dir, quick=args.quick, steps=args.steps, **extra)
    print(f"wrote {out}/")
    return 0


# --------------------------------------------------------------------------------------------------
# drill: interview questions with checked answers (logic in minilora/drill/)
# --------------------------------------------------------------------------------------------------


def add_drill_arguments(p):
    """Arguments of `minilora drill` (--seed, --count, --topic; --answers FILE | --explain | --stats | --list)."""
    from ..drill import TOPICS

    p.add_argument("--seed", type=nonneg_int, default=None, help="random seed of the question set (default: new)")
    p.add_argument("--count", type=positive_int, default=10, help="number of questions (default 10)")
    p.add_argument("--topic", action="append", choices=list(TOPICS), default=None,
                   help="only this topic (repeat for several); see --list")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--answers", metavar="FILE",
                      help="grade FILE: one answer per line, in question order (docs/drill.md); exit 0 if all right")
    mode.add_argument("--explain", action="store_true", help="print the questions with worked solutions only")
    mode.add_argument("--stats", action="store_true", help="score by topic from your progress file, weak topics")
    mode.add_argument("--list", action="store_true", help="list the question templates by topic")


def run_drill(args):
    """Run `minilora drill` (minilora.drill.session.run); exit code."""
    from ..drill import run

    return run(args.seed, args.count, args.topic, args.answers, args.explain, args.stats, args.list)


# --------------------------------------------------------------------------------------------------
# compare and latency: the LoRA paper's Tables 2-4 and Table 1 (logic in minilora/comparison.py, latency.py)
# --------------------------------------------------------------------------------------------------


def add_compare_arguments(p):
    """Arguments of `minilora compare` (output folder, steps per method, method families, seed, --quick)."""
    p.add_argument("--out", default="runs/compare", help="output folder (default runs/compare)")
    p.add_argument("--steps", type=positive_int, default=None, help="training steps per method (default 150)")
    p.add_argument("--methods", default=None,
                   help="comma-separated families, e.g. lora,ia3,adapter_h (default: all)")
    p.add_argument("--seed", type=nonneg_int, default=0)
    p.add_argument("--quick", action="store_true", help="smoke run: 4 steps, batch 4, one eval batch")


def run_compare(args):
    """Run `minilora compare` (minilora.comparison.run_compare); exit code.

    Raises: OSError for an --out that cannot be written, before any training (exit 2 via main)."""
    from ..comparison import CompareConfig
    from ..comparison import run_compare as _run
    from ..io import ensure_writable_dir

    cfg = CompareConfig.quick() if args.quick else CompareConfig()
    if args.steps is not None:
        cfg.steps = args.steps
    cfg.seed = args.seed
    if args.methods:
        cfg.families = [m.strip() for m in args.methods.split(",") if m.strip()]
    _run(ensure_writable_dir(args.out, "--out"), cfg)
    return 0


def add_latency_arguments(p):
    """Arguments of `minilora latency` (output folder, rounds per cell, clock, --quick)."""
    p.add_argument("--out", default="runs/latency", help="output folder (default runs/latency)")
    p.add_argument("--rounds", type=positive_int, default=None, help="interleaved rounds per cell (default 15)")
    p.add_argument("--clock", choices=("cpu", "wall"), default="cpu",
                   help="process CPU time (default; robust on a shared machine) or wall clock")
    p.add_argument("--quick", action="store_true", help="smoke run: batch 1 and 4, sequence 1 and 32, 2 rounds")


def run_latency(args):
    """Run `minilora latency` (minilora.latency.run_latency); exit code.

    Raises: OSError for an --out that cannot be written, before any timing (exit 2 via main)."""
    from ..io import ensure_writable_dir
    from ..latency import LatencyConfig
    from ..latency import run_latency as _run

    cfg = LatencyConfig.quick() if args.quick else LatencyConfig()
    if args.rounds is not None:
        cfg.rounds = args.rounds
    cfg.clock = args.clock
    _run(ensure_writable_dir(args.out, "--out"), cfg)
    return 0
