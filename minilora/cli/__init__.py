"""The `minilora` command line: `python -m minilora <command> ...` (or the `minilora` script).

Each subcommand is one entry of COMMANDS: (name, help, add_arguments(parser), run(args) -> exit code).
Argument parsing lives only in this package: `train` (pretrain, sample), `finetune`, `jobs` (demo,
gradcheck, exercises, analyze, drill, compare, latency); `_common` holds the argument types and
`UserError`. To add a command, write its `add_<name>_arguments` / `run_<name>` pair in the module of
its kind and append a `Command(...)` at the registration point below (or call `register(...)`
before `main` runs).

Exit codes: 0 success; 2 a user error (missing checkpoint, unknown corpus, bad numbers), reported as one
line on stderr without a traceback (set MINILORA_DEBUG=1 to see the traceback); 130 on Ctrl-C.
"""
from __future__ import annotations

import os
import sys

__all__ = ["main", "Command", "COMMANDS", "register", "UserError", "build_parser"]


from ._common import (  # noqa: F401  (the argument types are part of the package's interface)
    Command,
    UserError,
    _Parser,
    nonneg_float,
    nonneg_int,
    positive_float,
    positive_int,
)
from .finetune import add_finetune_arguments, run_finetune
from .jobs import (
    add_analyze_arguments,
    add_compare_arguments,
    add_demo_arguments,
    add_drill_arguments,
    add_exercises_arguments,
    add_gradcheck_arguments,
    add_latency_arguments,
    run_analyze,
    run_compare,
    run_demo,
    run_drill,
    run_exercises,
    run_gradcheck,
    run_latency,
)
from .train import add_pretrain_arguments, add_sample_arguments, run_pretrain, run_sample

# --------------------------------------------------------------------------------------------------
# registration point: one Command per subcommand, in the order `minilora --help` lists them
# (or call register() before main() runs).
# --------------------------------------------------------------------------------------------------

COMMANDS: list[Command] = [
    Command("pretrain", "pretrain a small GPT on a corpus and save checkpoints", add_pretrain_arguments,
            run_pretrain),
    Command("sample", "generate text from a checkpoint", add_sample_arguments, run_sample),
    Command("demo", "the main job: pretrain on prose, LoRA and full fine-tuning on code, merge, report",
            add_demo_arguments, run_demo),
    Command("finetune", "adapt a pretrained checkpoint to a corpus with LoRA (or --full)", add_finetune_arguments,
            run_finetune),
    Command("analyze", "SVD rank analysis: the LoRA paper's Section 7 experiments on your own model",
            add_analyze_arguments, run_analyze),
    Command("gradcheck", "hand-derived vs autograd vs numeric gradients, side by side", add_gradcheck_arguments,
            run_gradcheck),
    Command("exercises", "interview exercises: list, show a stub, check your solution", add_exercises_arguments,
            run_exercises),
    Command("drill", "interview drill: generated LoRA questions with checked, worked answers",
            add_drill_arguments, run_drill),
    Command("compare", "LoRA vs adapters, prefix/prompt tuning, BitFit, IA3, full FT: the LoRA paper's Tables 2-4",
            add_compare_arguments, run_compare),
    Command("latency", "inference latency over the base model (the LoRA paper's Table 1), interleaved medians",
            add_latency_arguments, run_latency),
]


def register(name, help, add_arguments, run):
    """Add (or replace) a subcommand at run time."""
    COMMANDS[:] = [c for c in COMMANDS if c.name != name]
    COMMANDS.append(Command(name, help, add_arguments, run))





def build_parser():
    """The top-level parser with one subparser per entry of COMMANDS."""
    parser = _Parser(prog="minilora", description="LoRA from the ground up in NumPy.")
    sub = parser.add_subparsers(dest="command", metavar="command")
    for c in COMMANDS:
        sp = sub.add_parser(c.name, help=c.help, description=c.help)
        c.add_arguments(sp)
        sp.set_defaults(_run=c.run)
    return parser


def main(argv=None) -> int:
    """Run the command line; returns the exit code (0 ok, 2 user error, 130 interrupted)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:          # --help (0) or a usage error (2, already printed)
        return e.code if isinstance(e.code, int) else 2
    if getattr(args, "_run", None) is None:
        parser.print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:          # `minilora drill --list | head`: the reader left, nothing went wrong
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())   # no second error at exit
        return 0
    except (UserError, OSError, ValueError, FloatingPointError) as e:
        if os.environ.get("MINILORA_DEBUG"):
            raise
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        print(f"minilora {args.command}: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
