"""`minilora drill`: interview questions with numbers, drawn from templates, checked and explained.

    from minilora.drill import generate, grade, reference_answer
    qs = generate(seed=0, count=5, topics=["scaling"])
    grade(qs[0], "4").right

Modules: `registry` (Question, the template registry, TOPICS), `templates_memory` and
`templates_math` (the templates; importing this package registers them), `grading` (reading and
checking answers), `session` (drawing a set, the interactive loop, answers files, --explain),
`progress` (score by topic in the user's data folder). Answers are computed by `minilora.costs` and
minilora's own LoRA and rank functions; docs/drill.md lists the templates and the recipe to add one.
"""
from __future__ import annotations

from . import templates_math, templates_memory  # noqa: F401  (registers the templates)
from .grading import Grade, grade, parse_choice, parse_number, reference_answer
from .registry import TEMPLATES, TOPICS, Question, Template, template
from .session import explain, generate, run, run_interactive

__all__ = ["Question", "Template", "TEMPLATES", "TOPICS", "template", "Grade", "grade", "parse_number",
           "parse_choice", "reference_answer", "generate", "explain", "run", "run_interactive",
           "LESSON_TOPICS", "lesson_questions", "lesson_drill"]

# Lesson number -> the drill topics its closing questions come from (tools/add_drill_cells.py).
LESSON_TOPICS: dict[int, tuple[str, ...]] = {
    1: ("flops",),
    2: ("flops", "activation"),
    3: ("activation", "kv_cache"),
    4: ("params", "checkpoint", "kv_cache"),
    5: ("init", "scaling", "flops"),
    6: ("params", "optimizer", "checkpoint"),
    7: ("rank",),
    8: ("merge", "latency", "nf4"),
    9: ("scaling", "nf4", "optimizer", "latency"),
    10: ("scaling", "params", "init"),
    11: ("params", "latency", "merge"),
    12: ("nf4", "optimizer", "checkpoint"),
    13: ("rank", "params"),
    14: ("latency", "params", "optimizer"),
    15: ("params", "checkpoint", "kv_cache"),
}


def lesson_questions(lesson: int, count: int = 3) -> list[Question]:
    """`count` questions on lesson `lesson`'s topics, seeded by the lesson number (the same every run).

    Raises: ValueError for a lesson without a topic list.
    """
    if lesson not in LESSON_TOPICS:
        raise ValueError(f"no drill topics for lesson {lesson!r}; lessons with drills: {sorted(LESSON_TOPICS)}")
    return generate(seed=lesson, count=count, topics=LESSON_TOPICS[lesson])


def lesson_drill(lesson: int, count: int = 3) -> list[Question]:
    """Print a lesson's drill questions with their worked answers, and check each reference answer
    with the drill's own grader (AssertionError if one is not accepted). Returns the questions."""
    qs = lesson_questions(lesson, count)
    explain(qs)
    for q in qs:
        g = grade(q, reference_answer(q))
        assert g.right, f"the grader rejects the reference answer of {q.template}: {g.message}"
    print(f"\nAll {len(qs)} reference answers accepted by the grader. More: minilora drill --topic "
          f"{LESSON_TOPICS[lesson][0]}")
    return qs
