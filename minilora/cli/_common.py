"""What every command module shares: `UserError`, `Command`, the one-line-error parser, argument types."""
from __future__ import annotations

import argparse
from typing import Callable, NamedTuple

import numpy as np


class UserError(Exception):
    """A mistake in the command's input: printed as one line, exit code 2."""


class Command(NamedTuple):
    """One subcommand: its name, a one-line help, a function adding its arguments, and its runner."""

    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr (exit code 2)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


# --------------------------------------------------------------------------------------------------
# argument types (bad numbers are caught by argparse, with the option's name in the message)
# --------------------------------------------------------------------------------------------------


def _number(cast, low, strict, what):
    """An argparse type: text -> cast(text), finite and > low (strict) or >= low; else a clear error."""
    def parse(text):
        try:
            v = cast(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if not ((v > low) if strict else (v >= low)) or v == float("inf"):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return v
    parse.__name__ = what  # argparse names the type in its messages
    return parse


positive_int = _number(int, 1, False, "a positive integer")
nonneg_int = _number(int, 0, False, "an integer >= 0")
positive_float = _number(float, 0.0, True, "a positive finite number")
nonneg_float = _number(float, 0.0, False, "a finite number >= 0")


def _dtype(name):
    return {"float32": np.float32, "float64": np.float64}[name]


def _diverged(e: FloatingPointError, lr: float) -> UserError:
    """The one-line message of a diverged run: what happened, and the fix (a smaller --lr)."""
    msg = str(e).removeprefix("train: ").replace("lower the lr", f"lower the lr (--lr; this run used {lr:g})")
    return UserError(f"{msg}; no checkpoint of the diverged model was written")
