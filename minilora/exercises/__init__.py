"""Interview-style exercises on plain NumPy arrays, with a grader.

Each exercise has a stub to fill in (`stubs/NAME.py`), a reference solution kept apart
(`solutions/NAME.py`) and a check that compares the two on hand-picked edge cases and
hypothesis-drawn inputs, then explains the first mismatch. See README.md in this folder.

The command line needs only three functions:
    list_exercises() -> [(name, summary), ...]     in the suggested order
    stub_source(name) -> str                       the text of the stub, to copy
    check_file(name, path) -> CheckResult          grade the function `name` defined in `path`
                                                   (in a child process, with a time limit per case)
"""
from __future__ import annotations

from .catalog import CATALOG
from .grader import CASE_TIMEOUT, CheckResult, Exercise, Failure, run_check, run_file_check

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
    """Grade the function `func` on exercise `name`, in this process (no time limit: use `check_file`
    for a file graded in a child process with time limits)."""
    return run_check(_get(name), func)


def check_file(name: str, path, timeout: float = CASE_TIMEOUT) -> CheckResult:
    """Import the file at `path` in a child process, take its function called `name` and grade it.

    The file runs as ordinary Python with your rights (it is not sandboxed), in a child process with
    `timeout` seconds for the import and for each case (see `grader.run_file_check`). Unknown
    exercise names, missing files, import errors, a missing function, a time-out and a child that
    ends without a verdict all give a failed CheckResult with a message; nothing is raised.
    """
    if name not in EXERCISES:
        return CheckResult(False, f"FAIL: unknown exercise {name!r}; choose from: {', '.join(EXERCISES)}",
                           name)
    return run_file_check(name, path, timeout=timeout)


__all__ = ["EXERCISES", "Exercise", "CheckResult", "Failure", "list_exercises", "stub_source",
           "check", "check_file"]
