"""Interview-style exercises on plain NumPy arrays, with a grader.

Each exercise has a stub to fill in (`stubs/NAME.py`), a reference solution kept apart
(`solutions/NAME.py`) and a check that compares the two on hand-picked edge cases and
hypothesis-drawn inputs, then explains the first mismatch. See README.md in this folder.

The command line needs only three functions:
    list_exercises() -> [(name, summary), ...]     in the suggested order
    stub_source(name) -> str                       the text of the stub, to copy
    check_file(name, path) -> CheckResult          grade the function `name` defined in `path`
"""
from __future__ import annotations

from .catalog import CATALOG
from .grader import CheckResult, Exercise, Failure, load_function, run_check

EXERCISES: dict[str, Exercise] = {ex.name: ex for ex in CATALOG}


def _get(name: str) -> Exercise:
    try:
        return EXERCISES[name]
    except KeyError:
        raise KeyError(f"unknown exercise {name!r}; choose from: {', '.join(EXERCISES)}") from None


def list_exercises() -> list[tuple[str, str]]:
    """(name, one-line summary) of every exercise, in the suggested order."""
    return [(ex.name, ex.summary) for ex in EXERCISES.values()]


def stub_source(name: str) -> str:
    """The source text of the exercise's stub: copy it to a file of your own and fill it in."""
    return _get(name).stub_path.read_text(encoding="utf-8")


def check(name: str, func) -> CheckResult:
    """Grade the function `func` on exercise `name`."""
    return run_check(_get(name), func)


def check_file(name: str, path) -> CheckResult:
    """Import the file at `path`, take its function called `name` and grade it.

    Unknown exercise names, missing files, import errors and a missing function all give a failed
    CheckResult with a message; nothing is raised.
    """
    if name not in EXERCISES:
        return CheckResult(False, f"FAIL: unknown exercise {name!r}; choose from: {', '.join(EXERCISES)}",
                           name)
    func, why = load_function(name, path)
    if func is None:
        return CheckResult(False, why, name)
    return check(name, func)


__all__ = ["EXERCISES", "Exercise", "CheckResult", "Failure", "list_exercises", "stub_source",
           "check", "check_file"]
