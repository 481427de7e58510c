"""The grader: run a learner's function against the reference solution and explain the first mismatch.

Each exercise is checked on a few hand-picked edge cases first (large logits, alpha != r, non-square
weights, size-1 broadcast dims, ...), then on inputs drawn by hypothesis (`hypothesis.strategies` and
`hypothesis.extra.numpy`, derandomized so a run is reproducible). Outputs are compared in float64 with
rtol 1e-6 and atol 1e-8, integers exactly. The first failure stops the check and is reported with the
output's name, the index, expected vs got, the errors, the input shapes and, where the grader
recognises a typical mistake, a hint.

`run_check` grades a function in this process. `run_file_check` grades a learner's file in a child
Python process (`_worker.py`) with a time limit for the import and for each case, so an infinite
loop or an `os._exit()` ends in a FAIL with the case it happened on, never in a hang or a silent exit.
The file is executed as ordinary Python with the user's rights: this is isolation, not a sandbox.
"""
from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import pathlib
import queue
import signal
import subprocess
import sys
import threading
import traceback
from typing import Any, Callable

import numpy as np
from hypothesis import HealthCheck, Phase, Verbosity, given, settings

RTOL = 1e-6
ATOL = 1e-8
MAX_EXAMPLES = 40
CASE_TIMEOUT = 10.0      # seconds for importing a learner's file, and for each case
_START_TIMEOUT = 120.0   # the child's own start (Python, numpy, hypothesis) on a busy machine

_SETTINGS = settings(
    max_examples=MAX_EXAMPLES, deadline=None, derandomize=True, database=None,
    phases=(Phase.explicit, Phase.generate),          # no shrinking: keeps a check well under 2 s
    report_multiple_bugs=False, verbosity=Verbosity.quiet,
    suppress_health_check=list(HealthCheck),
)


@dataclasses.dataclass(frozen=True)
class Exercise:
    """One exercise: its statement (the stub), its reference solution and how to grade it.

    `strategy` is a hypothesis strategy drawing a dict of inputs (in the function's argument order);
    `edge_cases` is a tuple of (label, zero-argument function returning such a dict);
    `outputs` names the returned values ("y", or "dx", "dA", "dB" for a tuple);
    `hint_for_failure(failure) -> str | None` recognises typical mistakes.
    """

    name: str
    summary: str
    reference: Callable[..., Any]
    outputs: tuple[str, ...]
    strategy: Any
    edge_cases: tuple[tuple[str, Callable[[], dict]], ...]
    hint_for_failure: Callable[["Failure"], str | None]

    @property
    def stub_path(self) -> pathlib.Path:
        return pathlib.Path(__file__).resolve().parent / "stubs" / f"{self.name}.py"

    @property
    def solution_path(self) -> pathlib.Path:
        return pathlib.Path(__file__).resolve().parent / "solutions" / f"{self.name}.py"


@dataclasses.dataclass
class CheckResult:
    """The verdict of one check: `passed`, and a `message` meant to be printed as it is."""

    passed: bool
    message: str
    name: str = ""

    def __str__(self) -> str:
        return self.message

    def __bool__(self) -> bool:
        return self.passed


@dataclasses.dataclass
class Failure:
    """What went wrong on one input; passed to the exercise's `hint_for_failure`.

    kind: "exception" | "count" | "type" | "shape" | "nonfinite" | "value" | "mutated".
    `got` is the learner's outputs as a tuple (None if the call raised), `expected` the reference's,
    `output` the name of the first wrong output and `position` its index in the tuple.
    """

    kind: str
    inputs: dict
    label: str
    expected: tuple
    got: tuple | None = None
    output: str | None = None
    position: int | None = None
    index: tuple | None = None
    exc: BaseException | None = None
    detail: str = ""

    @property
    def got_value(self):
        """The learner's wrong output (an ndarray or scalar), or None."""
        if self.got is None or self.position is None or self.position >= len(self.got):
            return None
        return self.got[self.position]

    @property
    def expected_value(self):
        return None if self.position is None else self.expected[self.position]


class _Found(Exception):
    """Raised inside the hypothesis test to carry the first failure out."""

    def __init__(self, failure: Failure):
        super().__init__(failure.kind)
        self.failure = failure


# ---------------------------------------------------------------- comparing one output


def _copy_inputs(inputs: dict) -> dict:
    return {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in inputs.items()}


def _is_int(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def _compare(expected, got) -> tuple[str, tuple | None, str] | None:
    """None if `got` matches `expected`, else (kind, index, detail)."""
    if _is_int(expected):
        if isinstance(got, (float, np.floating)) and float(got).is_integer() and got == expected:
            return "type", None, f"expected an int, got {type(got).__name__} {got!r}: return an int"
        if not _is_int(got):
            return "type", None, f"expected an int, got {type(got).__name__} {got!r}"
        if int(got) != int(expected):
            return "value", (), ""
        return None
    try:
        g = np.asarray(got, dtype=np.float64)
    except (TypeError, ValueError) as e:
        return "type", None, f"could not read the result as a float array ({type(got).__name__}: {e})"
    e = np.asarray(expected, dtype=np.float64)
    if g.shape != e.shape:
        return "shape", None, f"expected shape {e.shape}, got shape {g.shape}"
    bad = ~np.isfinite(g) & np.isfinite(e)
    if bad.any():
        return "nonfinite", tuple(int(i) for i in np.argwhere(bad)[0]), ""
    both_inf = np.isinf(g) & np.isinf(e) & (np.sign(g) == np.sign(e))
    with np.errstate(invalid="ignore"):
        err = np.where(both_inf, 0.0, np.abs(g - e))
        viol = err - (ATOL + RTOL * np.abs(e))
    viol = np.where(np.isnan(viol), np.inf, viol)
    if (viol > 0).any():
        return "value", tuple(int(i) for i in np.unravel_index(int(np.argmax(viol)), e.shape)), ""
    return None


def _run_case(ex: Exercise, func, inputs: dict, label: str, on_case=None) -> Failure | None:
    expected = ex.reference(*_copy_inputs(inputs).values())
    expected = tuple(expected) if len(ex.outputs) > 1 else (expected,)
    mine = _copy_inputs(inputs)
    if on_case is not None:
        on_case(label, inputs)
    try:
        with np.errstate(all="ignore"):  # overflow in the learner's code shows up as a wrong value
            got = func(*mine.values())
    except (Exception, SystemExit) as exc:  # the learner's bug (sys.exit included), reported
        return Failure("exception", inputs, label, expected, exc=exc)
    for k, v in inputs.items():
        if isinstance(v, np.ndarray) and not np.array_equal(v, mine[k], equal_nan=True):
            return Failure("mutated", inputs, label, expected, output=k,
                           detail=f"your function modified its input '{k}' in place")
    n = len(ex.outputs)
    if n > 1:
        if not isinstance(got, (tuple, list)) or len(got) != n:
            what = f"a {type(got).__name__} of length {len(got)}" if isinstance(got, (tuple, list)) \
                else f"a {type(got).__name__}"
            return Failure("count", inputs, label, expected, detail=(
                f"expected a tuple of {n} outputs ({', '.join(ex.outputs)}), got {what}"))
        got = tuple(got)
    else:
        got = (got,)
    for pos, (name, e, g) in enumerate(zip(ex.outputs, expected, got, strict=True)):
        res = _compare(e, g)
        if res is not None:
            kind, index, detail = res
            return Failure(kind, inputs, label, expected, got=got, output=name, position=pos,
                           index=index, detail=detail)
    return None


# ---------------------------------------------------------------- messages


def describe_inputs(inputs: dict) -> str:
    """The inputs of a failing case as one line: each name with its shape and dtype (or its value)."""
    parts = []
    for k, v in inputs.items():
        if isinstance(v, np.ndarray):
            parts.append(f"{k} {v.shape} {v.dtype}")
        else:
            parts.append(f"{k}={v!r}")
    return ", ".join(parts)


def _small_values(inputs: dict) -> str:
    lines = []
    for k, v in inputs.items():
        if isinstance(v, np.ndarray) and 0 < v.size <= 24:
            text = np.array2string(v, precision=4, separator=", ", max_line_width=100)
            lines.append(f"    {k} = " + text.replace("\n", "\n" + " " * (len(k) + 7)))
    return "\n".join(lines)


def _fmt(v) -> str:
    return f"{v:.10g}" if isinstance(v, (float, np.floating)) else repr(v)


def _exception_text(exc: BaseException) -> str:
    text = "".join(traceback.format_exception_only(type(exc), exc)).strip()
    frames = traceback.extract_tb(exc.__traceback__)
    if frames:
        f = frames[-1]
        text += f"\n  at {f.filename}:{f.lineno}" + (f": {f.line}" if f.line else "")
    return text


def _generic_hint(ex: Exercise, f: Failure) -> str | None:
    if f.kind == "exception" and isinstance(f.exc, NotImplementedError):
        return "the stub is not filled in yet: replace `raise NotImplementedError` with your code."
    if f.kind == "exception" and "matmul" in str(f.exc):
        return ("a matrix product has mismatched shapes: write down the shape of every array "
                "and check your transposes (weights are stored (out, in)).")
    if f.kind == "shape":
        e, g = np.shape(f.expected_value), np.shape(f.got_value)
        if len(e) == 2 and g == e[::-1] and e[0] != e[1]:
            return f"you returned the transpose: '{f.output}' must have shape {e}."
        if int(np.prod(g)) == int(np.prod(e)):
            return f"right number of entries, wrong layout: reshape to {e} (or fix the axes)."
    if f.kind == "nonfinite":
        return "your result has nan or inf where the reference is finite: look for overflow in exp, " \
               "log(0) or a division by zero."
    if f.kind == "mutated":
        return "return a new array (e.g. `W = W0 + ...`) instead of updating the argument (`W0 += ...`)."
    return None


def _failure_message(ex: Exercise, f: Failure) -> str:
    lines = []
    if f.kind == "exception":
        lines.append(f"FAIL {ex.name}: your function raised {_exception_text(f.exc)}")
    elif f.kind == "mutated":
        lines.append(f"FAIL {ex.name}: {f.detail}.")
    elif f.kind == "count":
        lines.append(f"FAIL {ex.name}: {f.detail}.")
    elif f.kind in ("type", "shape"):
        lines.append(f"FAIL {ex.name}: output '{f.output}' has the wrong {f.kind}: {f.detail}.")
    else:
        e = np.asarray(f.expected_value, dtype=np.float64)
        g = np.asarray(f.got_value, dtype=np.float64)
        ev, gv = e[f.index], g[f.index]
        where = f" at index {f.index}" if f.index else ""
        what = "is nan/inf" if f.kind == "nonfinite" else "is wrong"
        lines.append(f"FAIL {ex.name}: output '{f.output}' {what}{where}.")
        if _is_int(f.expected_value):
            lines.append(f"  expected {f.expected_value!r}, got {f.got_value!r}")
        else:
            abs_err = abs(float(gv) - float(ev))
            rel_err = abs_err / abs(float(ev)) if ev != 0 else float("inf")
            lines.append(f"  expected  {_fmt(float(ev))}")
            lines.append(f"  got       {_fmt(float(gv))}")
            lines.append(f"  abs error {abs_err:.3g}, rel error {rel_err:.3g} "
                         f"(tolerance: rtol {RTOL:g}, atol {ATOL:g})")
    lines.append(f"  on the {f.label}")
    lines.append(f"  inputs: {describe_inputs(f.inputs)}")
    small = _small_values(f.inputs)
    if small:
        lines.append("  input values:\n" + small)
    hint = None
    if not isinstance(f.exc, NotImplementedError):
        try:
            with np.errstate(all="ignore"):
                hint = ex.hint_for_failure(f)
        except Exception:  # a hint must never hide the verdict
            hint = None
    hint = hint or _generic_hint(ex, f)
    if hint:
        lines.append(f"  hint: {hint}")
    return "\n".join(lines)


# ---------------------------------------------------------------- the public entry points


def run_check(ex: Exercise, func, on_case=None) -> CheckResult:
    """Grade `func` on `ex`: the edge cases, then hypothesis-drawn inputs (in this process, no time limit).

    `on_case(label, inputs)`, if given, is called just before each call of `func` (the child process
    of `run_file_check` uses it to tell the parent which case is running).
    """
    if not callable(func):
        return CheckResult(False, f"FAIL {ex.name}: expected a function, got {type(func).__name__}.",
                           ex.name)
    for label, make in ex.edge_cases:
        f = _run_case(ex, func, make(), f'hand-picked case "{label}"', on_case)
        if f is not None:
            return CheckResult(False, _failure_message(ex, f), ex.name)

    count = 0

    @_SETTINGS
    @given(ex.strategy)
    def _property(inputs):
        nonlocal count
        count += 1
        f = _run_case(ex, func, inputs, f"hypothesis-drawn example {count}", on_case)
        if f is not None:
            raise _Found(f)

    try:
        _property()
    except _Found as found:
        return CheckResult(False, _failure_message(ex, found.failure), ex.name)
    except Exception as exc:  # hypothesis itself complained (e.g. flaky function)
        return CheckResult(False, f"FAIL {ex.name}: the check could not finish: "
                                  f"{type(exc).__name__}: {exc}", ex.name)
    return CheckResult(True, f"PASS {ex.name}: {len(ex.edge_cases)} hand-picked cases and {count} "
                             f"hypothesis-drawn examples match the reference.", ex.name)


def load_function(name: str, path) -> tuple[Callable | None, str]:
    """Import the file at `path` and return (its function called `name`, "") or (None, why not)."""
    path = pathlib.Path(path)
    if not path.is_file():
        return None, f"FAIL {name}: no such file: {path}"
    modname = f"_minilora_exercise_{name}_{abs(hash(str(path.resolve())))}"
    spec = importlib.util.spec_from_file_location(modname, path)
    if spec is None or spec.loader is None:
        return None, f"FAIL {name}: cannot import {path} (is it a .py file?)"
    module = importlib.util.module_from_spec(spec)
    sys.modules[modname] = module
    try:
        spec.loader.exec_module(module)
    except (Exception, SystemExit) as exc:
        return None, f"FAIL {name}: importing {path} raised {_exception_text(exc)}"
    finally:
        sys.modules.pop(modname, None)
    func = getattr(module, name, None)
    if func is None:
        found = sorted(k for k, v in vars(module).items()
                       if callable(v) and not k.startswith("_") and getattr(v, "__module__", None) == modname)
        also = f" It defines: {', '.join(found)}." if found else " It defines no functions."
        return None, (f"FAIL {name}: {path} has no function named '{name}'.{also} "
                      f"Name your function exactly '{name}'.")
    if not callable(func):
        return None, f"FAIL {name}: '{name}' in {path} is a {type(func).__name__}, not a function."
    return func, ""


# ---------------------------------------------------------------- grading a file in a child process


def _signal_name(code: int) -> str:
    try:
        return signal.Signals(-code).name
    except ValueError:
        return f"signal {-code}"


def _read_lines(stream, q: queue.Queue) -> None:
    for line in stream:
        q.put(line)
    q.put(None)


def run_file_check(name: str, path, timeout: float = CASE_TIMEOUT) -> CheckResult:
    """Grade the function `name` defined in the file `path`, in a child Python process with time limits.

    The file is imported and run as ordinary Python, with the user's rights (this is no sandbox),
    but in a separate process (`python -m minilora.exercises._worker NAME PATH`) that reports each
    case to this one before calling the learner's function. So an infinite loop (at import or in the
    function) ends with "did not return within N s on the <case>", and a child that stops without
    a verdict (`os._exit(0)`, a crash of the interpreter) is a FAIL too: never a hang, never a silent
    pass. The learner's prints go to stderr. The checking itself is `run_check`'s.

    Args:
        name: an exercise name (see `EXERCISES`); path: the learner's .py file.
        timeout: seconds allowed for importing the file and for each case (default CASE_TIMEOUT).
    Returns:
        CheckResult (a missing file, an import error or a wrong result is a failed result, not an
        exception).
    Raises:
        ValueError: timeout is not a positive number.
    """
    timeout = float(timeout)
    if not timeout > 0:
        raise ValueError(f"run_file_check: timeout must be > 0 seconds, got {timeout}")
    path = pathlib.Path(path)
    if not path.is_file():
        return CheckResult(False, f"FAIL {name}: no such file: {path}", name)
    env = dict(os.environ)
    root = str(pathlib.Path(__file__).resolve().parents[2])     # the folder that holds the package
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["PYTHONSAFEPATH"] = "1"    # Python >= 3.11: a numpy.py in the current folder cannot shadow numpy
    proc = subprocess.Popen([sys.executable, "-m", "minilora.exercises._worker", name, str(path)],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, env=env,
                            text=True, encoding="utf-8", errors="replace",
                            start_new_session=os.name == "posix")   # Ctrl-C reaches us; we stop the child
    lines: queue.Queue = queue.Queue()
    reader = threading.Thread(target=_read_lines, args=(proc.stdout, lines), daemon=True)
    reader.start()
    where, inputs, limit, verdict = "starting the grader", "", _START_TIMEOUT, False
    try:
        while True:
            try:
                line = lines.get(timeout=limit)
            except queue.Empty:
                proc.kill()
                if where == "importing":
                    return CheckResult(False, (
                        f"FAIL {name}: importing {path} did not finish within {timeout:g} s.\n"
                        "  hint: the file's module-level code runs when it is imported: does it loop, wait "
                        "for input, or compute something long? Keep the work inside the function."), name)
                if where == "starting the grader":
                    return CheckResult(False, f"FAIL {name}: the grader's child process did not start "
                                              f"within {_START_TIMEOUT:g} s (is the machine overloaded?)", name)
                return CheckResult(False, (
                    f"FAIL {name}: your function did not return within {timeout:g} s on the {where}.\n"
                    f"  inputs: {inputs}\n"
                    "  hint: an infinite loop? Look for a `while` whose condition never changes, or a loop "
                    "over a value that grows."), name)
            if line is None:                                 # the child ended without a verdict
                code = proc.wait()
                how = f"was killed by {_signal_name(code)}" if code < 0 else f"exited with code {code}"
                if where == "starting the grader":
                    return CheckResult(False, f"FAIL {name}: the grader's child process {how} before reading "
                                              "your file (its error, if any, is printed above).", name)
                during = "while importing" if where == "importing" else f"during the {where}"
                return CheckResult(False, (
                    f"FAIL {name}: no verdict: the Python process running your file {how} {during}.\n"
                    + (f"  inputs: {inputs}\n" if inputs else "")
                    + "  hint: does your code call os._exit(), kill its own process or crash the interpreter? "
                      "A solution must return its result."), name)
            try:
                msg = json.loads(line)
            except ValueError:
                continue
            event = msg.get("event") if isinstance(msg, dict) else None
            if event == "import":
                where, limit = "importing", timeout
            elif event == "case":
                where, inputs, limit = msg["label"], msg["inputs"], timeout
            elif event == "verdict":
                verdict = True
                return CheckResult(bool(msg["passed"]), str(msg["message"]), name)
    finally:                     # after a verdict the child exits by itself; otherwise (time-out, Ctrl-C) stop it
        if verdict:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        reader.join(timeout=5)
        if not reader.is_alive():
            proc.stdout.close()
