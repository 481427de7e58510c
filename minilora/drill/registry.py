"""The drill's question type, its template registry, and the small formatting helpers templates share.

A template is a function `make(rng) -> Question` registered with `@template(name, topic, summary)`.
It draws its values from the seeded `numpy.random.Generator` it is given (and from nothing else, so a
seed reproduces a session), computes the answer with minilora's own functions (`minilora.costs`,
`minilora.lora`, `minilora.rank`), and writes a worked solution naming the function it called.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

__all__ = ["Question", "Template", "TEMPLATES", "TOPICS", "template", "choice_question", "fmt", "gib", "mib"]

# Topic names, in the order `--stats` and the docs list them, with a one-line description.
TOPICS: dict[str, str] = {
    "params": "trainable and total parameter counts",
    "optimizer": "optimizer-state and training memory",
    "activation": "activation memory",
    "checkpoint": "checkpoint and adapter file sizes",
    "flops": "FLOPs of forward and backward, with and without LoRA",
    "scaling": "the scaling rule alpha/r and rsLoRA",
    "merge": "merge arithmetic and serving many adapters",
    "init": "dA and dB at initialisation",
    "rank": "effective rank and subspace similarity phi",
    "nf4": "NF4 and double-quantization memory (QLoRA)",
    "kv_cache": "KV-cache size",
    "latency": "adapter latency vs merged LoRA",
}


@dataclass
class Question:
    """One drawn question.

    Attributes:
        template, topic: the registry names it came from.
        text: the question as shown (states the unit and the tolerance, or lists the choices).
        kind: "number" or "choice".
        answer: float (kind "number") or the right letter "a".."d" (kind "choice").
        rtol, atol: a number x is right when |x - answer| <= rtol·|answer| + atol.
        unit: the unit the answer is asked in ("" for a pure number).
        choices: the options of a choice question, in the order shown (a, b, c, d).
        solution: the worked solution: formula, numbers substituted, the minilora function used.
        params: the drawn values (what the tests recompute the answer from).
    """

    template: str
    topic: str
    text: str
    kind: str
    answer: float | str
    solution: str
    rtol: float = 0.01
    atol: float = 0.0
    unit: str = ""
    choices: tuple[str, ...] = ()
    params: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Template:
    """A registered template: name, topic (a key of TOPICS), one-line summary, and make(rng) -> Question."""

    name: str
    topic: str
    summary: str
    make: Callable[[np.random.Generator], Question]


TEMPLATES: dict[str, Template] = {}


def template(name: str, topic: str, summary: str):
    """Decorator registering `make(rng) -> Question` under `name` (unique) and `topic` (a key of TOPICS).

    Raises: ValueError for a duplicate name or an unknown topic (at import time).
    """
    if topic not in TOPICS:
        raise ValueError(f"template {name!r}: unknown topic {topic!r}; expected one of {list(TOPICS)}")
    if name in TEMPLATES:
        raise ValueError(f"template {name!r} is registered twice")

    def deco(make):
        def wrapped(rng: np.random.Generator) -> Question:
            q = make(rng)
            q.template, q.topic = name, topic
            return q

        wrapped.__doc__ = make.__doc__
        TEMPLATES[name] = Template(name, topic, summary, wrapped)
        return make

    return deco


def choice_question(rng: np.random.Generator, text: str, right: str, wrong: list[str], explanation: str,
                    params: dict | None = None) -> Question:
    """A multiple-choice Question: the right option and three wrong ones, shuffled by `rng`."""
    options = [right, *wrong]
    order = rng.permutation(len(options))
    shown = tuple(options[i] for i in order)
    letter = "abcd"[int(np.flatnonzero(order == 0)[0])]
    body = text + "\n" + "\n".join(f"  ({'abcd'[i]}) {o}" for i, o in enumerate(shown))
    return Question("", "", body + "\nAnswer with a letter.", "choice", letter,
                    f"({letter}) {right}\n{explanation}", choices=shown, params=dict(params or {}))


def fmt(x: float) -> str:
    """A number for humans: ints with thousands separators, floats with 6 significant digits."""
    if float(x).is_integer() and abs(x) < 1e18:
        return f"{int(x):,}"
    return f"{x:.6g}"


def gib(n_bytes: float) -> float:
    """Bytes -> GiB (2**30 bytes)."""
    return n_bytes / 2**30


def mib(n_bytes: float) -> float:
    """Bytes -> MiB (2**20 bytes)."""
    return n_bytes / 2**20
