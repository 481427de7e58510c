"""Reading and checking an answer: numbers with a relative tolerance, letters for multiple choice.

Numbers may be written `294912`, `294,912`, `294_912`, `2.95e5`, `294.9k`, `0.29M`, `1.5G` (or `B` for
billion), `12.5%` (the % sign is ignored: the question says when it asks for percent), or a fraction
`16/3`; the unit the question asks in may follow (`0.24 GiB`). Choices are a letter a-d (or 1-4),
case-insensitive, optionally with a bracket: `(b)`.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

from .registry import Question, fmt

__all__ = ["Grade", "parse_number", "parse_choice", "grade", "reference_answer"]

_SUFFIX = {"k": 1e3, "K": 1e3, "M": 1e6, "m": 1e6, "G": 1e9, "g": 1e9, "B": 1e9, "b": 1e9, "T": 1e12, "t": 1e12}
_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


@dataclass(frozen=True)
class Grade:
    """The verdict on one answer.

    status: "right", "wrong", "invalid" (not a number / not a letter) or "skipped" (no answer given).
    given: the parsed answer (float or letter) or None. message: one line for the learner, starting
    with the status ("wrong: 4.1, the answer is 4, off by 2.5%").
    """

    status: str
    given: float | str | None
    message: str

    @property
    def right(self) -> bool:
        """True when status is "right"."""
        return self.status == "right"


def parse_number(text: str) -> float | None:
    """The number written in `text` (formats in the module docstring), or None if it is not one."""
    t = text.strip().replace(",", "").replace("_", "").replace(" ", "").rstrip("%")
    if "/" in t:
        num, _, den = t.partition("/")
        a, b = parse_number(num), parse_number(den)
        return None if a is None or not b else a / b
    mult = 1.0
    if t and t[-1] in _SUFFIX:
        t, mult = t[:-1], _SUFFIX[t[-1]]
    if not _NUMBER.match(t):
        return None
    v = float(t) * mult
    return v if math.isfinite(v) else None


def parse_choice(text: str) -> str | None:
    """The letter a-d written in `text` ("b", "B", "(b)", "2"), or None."""
    t = text.strip().strip("().").lower()
    if t in ("a", "b", "c", "d"):
        return t
    if t in ("1", "2", "3", "4"):
        return "abcd"[int(t) - 1]
    return None


def grade(q: Question, text: str | None) -> Grade:
    """Check the answer `text` to question `q` (None or blank: skipped).

    A number x is right when |x - answer| <= rtol·|answer| + atol (the tolerance the question states).
    """
    if text is None or not text.strip():
        return Grade("skipped", None, "skipped: no answer")
    if q.kind == "choice":
        c = parse_choice(text)
        if c is None:
            return Grade("invalid", None, f"invalid: {text.strip()!r} is not one of a, b, c, d")
        if c == q.answer:
            return Grade("right", c, "right")
        return Grade("wrong", c, f"wrong: ({c}), the answer is ({q.answer})")
    t = text.strip()
    if q.unit and t.lower().endswith(q.unit.lower()):   # "0.24 GiB" for a question asked in GiB
        t = t[: -len(q.unit)]
    x = parse_number(t)
    if x is None:
        return Grade("invalid", None, f"invalid: {text.strip()!r} is not a number")
    ans = float(q.answer)
    if abs(x - ans) <= q.rtol * abs(ans) + q.atol:
        return Grade("right", x, f"right ({_with_unit(ans, q.unit)})")
    rel = abs(x - ans) / abs(ans) if ans else math.inf
    how = f", off by {rel:.1%}" if math.isfinite(rel) else ""
    return Grade("wrong", x, f"wrong: {fmt(x)}, the answer is {_with_unit(ans, q.unit)}{how}")


def _with_unit(x: float, unit: str) -> str:
    return f"{fmt(x)} {unit}" if unit else fmt(x)


def reference_answer(q: Question) -> str:
    """The right answer as a learner would type it (what the lesson cells and tests feed the grader)."""
    return q.answer if q.kind == "choice" else repr(float(q.answer))
