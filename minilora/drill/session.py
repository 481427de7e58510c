"""Drawing a question set, the interactive session, answers-file grading, --explain and --stats.

Answers file (`minilora drill --seed N --count K --answers FILE`): UTF-8 text, ONE ANSWER PER LINE IN
QUESTION ORDER (the order `--explain` prints with the same --seed, --count and --topic). Anything after
a `#` is a comment; a line that is only a comment is ignored; an empty line is a skipped question;
missing lines at the end are skipped questions; more answers than questions is an error. Numbers and
letters are read as `minilora.drill.grading` describes. Exit code 0 when every answer is right, else 1.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable, Iterable, TextIO

import numpy as np

from . import progress as prog
from .grading import Grade, grade
from .registry import TEMPLATES, TOPICS, Question, fmt

MAX_INVALID = 3   # unreadable answers in a row that end an interactive session

__all__ = ["generate", "parse_answers", "run_interactive", "grade_answers", "explain", "list_templates", "run"]


def generate(seed: int, count: int, topics: Iterable[str] | None = None) -> list[Question]:
    """`count` questions drawn with numpy.random.default_rng(seed), from the templates of `topics` (all if None).

    Templates are taken in a seeded random order, each once before any repeats, so a session covers
    as many templates as it can. Raises ValueError for an unknown topic or count < 1.
    """
    topics = list(TOPICS) if not topics else list(topics)
    bad = [t for t in topics if t not in TOPICS]
    if bad:
        raise ValueError(f"unknown topic(s) {bad}; expected some of {list(TOPICS)}")
    if not isinstance(count, (int, np.integer)) or count < 1:
        raise ValueError(f"count must be an int >= 1, got {count!r}")
    names = sorted(n for n, t in TEMPLATES.items() if t.topic in topics)
    rng = np.random.default_rng(seed)
    order: list[str] = []
    while len(order) < count:
        order += [names[i] for i in rng.permutation(len(names))]
    return [TEMPLATES[n].make(rng) for n in order[:count]]


def parse_answers(text: str, n_questions: int) -> list[str | None]:
    """The answers of an answers file (format in the module docstring), padded with None to n_questions.

    Raises: ValueError when the file holds more answers than there are questions.
    """
    answers: list[str | None] = []
    for line in text.splitlines():
        body, hashed, _ = line.partition("#")
        if hashed and not body.strip():
            continue
        answers.append(body.strip() or None)
    while answers and answers[-1] is None and len(answers) > n_questions:
        answers.pop()
    if len(answers) > n_questions:
        raise ValueError(f"the answers file has {len(answers)} answers for {n_questions} questions "
                         f"(one answer per line, in question order)")
    return answers + [None] * (n_questions - len(answers))


def _header(i: int, n: int, q: Question) -> str:
    return f"\nQ{i}/{n} [{q.topic}] {q.text}"


def _score_lines(results: list[tuple[Question, bool]], n_total: int) -> str:
    right = sum(ok for _, ok in results)
    pct = f" ({right / len(results):.0%})" if results else ""
    lines = [f"score: {right}/{len(results)} answered{pct}, {n_total - len(results)} not answered"]
    by: dict[str, list[int]] = {}
    for q, ok in results:
        by.setdefault(q.topic, [0, 0])
        by[q.topic][0] += int(ok)
        by[q.topic][1] += 1
    lines += [f"  {t:<12} {r}/{a}" for t, (r, a) in by.items()]
    return "\n".join(lines)


def _save(results) -> None:
    if not results:
        return
    try:
        p = prog.load_progress(warn=lambda m: print(m, file=sys.stderr))
        prog.save_progress(prog.record(p, results))
    except OSError as e:  # progress is a convenience: never lose the session's output for it
        print(f"minilora drill: could not save progress ({e})", file=sys.stderr)


def run_interactive(questions: list[Question], input_fn: Callable[[str], str] = input,
                    out: TextIO | None = None, save: bool = True) -> int:
    """Ask the questions one by one with input_fn; show the worked solution after each answer.

    A non-number (or a letter outside a-d) is pointed out and the question asked again; the third
    unreadable answer in a row ends the session (so piped garbage cannot loop). An empty answer, "q",
    Ctrl-D (EOFError) or Ctrl-C (KeyboardInterrupt) ends the session too; in every case the
    score so far is printed and the answered questions are added to the progress file (if save).
    Returns: 0, or 130 after Ctrl-C (the CLI's convention).
    """
    out = out or sys.stdout
    results: list[tuple[Question, bool]] = []
    code = 0
    print("Answer each question; press Enter (or type q) to stop and see your score.", file=out)
    try:
        for i, q in enumerate(questions, 1):
            print(_header(i, len(questions), q), file=out)
            for attempt in range(1, MAX_INVALID + 1):
                text = input_fn("> ")
                if not text.strip() or text.strip().lower() in ("q", "quit", "exit"):
                    raise EOFError
                g = grade(q, text)
                if g.status != "invalid":
                    break
                if attempt == MAX_INVALID:
                    print(f"  {g.message}; {MAX_INVALID} unreadable answers in a row", file=out)
                    raise EOFError
                print(f"  {g.message}; answer again (Enter stops)", file=out)
            results.append((q, g.right))
            print(f"  {g.message}", file=out)
            if not g.right:
                print("  worked solution:\n    " + q.solution.replace("\n", "\n    "), file=out)
    except EOFError:
        print("\nsession ended", file=out)
    except KeyboardInterrupt:
        print("\ninterrupted", file=out)
        code = 130
    print(_score_lines(results, len(questions)), file=out)
    if save:
        _save(results)
    return code


def grade_answers(questions: list[Question], answers: list[str | None]) -> list[Grade]:
    """Grade answers (already parsed from a file) against the questions, in order."""
    return [grade(q, a) for q, a in zip(questions, answers, strict=True)]


def explain(questions: list[Question], out: TextIO | None = None) -> None:
    """Print each question with its answer and worked solution (nothing is recorded)."""
    out = out or sys.stdout
    for i, q in enumerate(questions, 1):
        print(_header(i, len(questions), q), file=out)
        ans = f"({q.answer})" if q.kind == "choice" else f"{fmt(float(q.answer))} {q.unit}".rstrip()
        tol = "" if q.kind == "choice" else f"   [tolerance: rtol {q.rtol:g}" + (f", atol {q.atol:g}]" if q.atol
                                                                                  else "]")
        print(f"answer: {ans}{tol}   (template {q.template})", file=out)
        print("  " + q.solution.replace("\n", "\n  "), file=out)


def list_templates(out: TextIO | None = None) -> None:
    """Print the templates grouped by topic."""
    out = out or sys.stdout
    for topic, what in TOPICS.items():
        print(f"{topic}: {what}", file=out)
        for t in sorted(TEMPLATES.values(), key=lambda t: t.name):
            if t.topic == topic:
                print(f"  {t.name:<26} {t.summary}", file=out)
    print(f"{len(TEMPLATES)} templates", file=out)


def run(seed: int | None, count: int, topics: list[str] | None = None, answers: str | None = None,
        explain_only: bool = False, stats: bool = False, list_only: bool = False,
        input_fn: Callable[[str], str] = input, out: TextIO | None = None) -> int:
    """What `minilora drill` does with its parsed arguments; returns the exit code.

    --stats prints the progress table; --list the templates; --explain the questions with solutions;
    --answers FILE grades the file (0 if all right, else 1); otherwise the interactive session.
    Raises: ValueError (unknown topic, too many answers, --answers without a seed), OSError (unreadable
    answers file).
    """
    out = out or sys.stdout
    if stats:
        print(f"progress file: {prog.progress_path()}", file=out)
        print(prog.format_stats(prog.load_progress()), file=out)
        return 0
    if list_only:
        list_templates(out)
        return 0
    if seed is None:
        if answers is not None:
            raise ValueError("--answers needs --seed (and the --count and --topic the answers were written for)")
        seed = int(np.random.SeedSequence().entropy % 1_000_000)
    questions = generate(seed, count, topics)
    if explain_only:
        explain(questions, out)
        return 0
    if answers is not None:
        text = Path(answers).read_text(encoding="utf-8")
        grades = grade_answers(questions, parse_answers(text, len(questions)))
        for i, (q, g) in enumerate(zip(questions, grades, strict=True), 1):
            print(f"Q{i} [{q.topic}] {g.message}", file=out)
            if not g.right:
                print("  " + q.text.replace("\n", "\n  "), file=out)
                print("  worked solution:\n    " + q.solution.replace("\n", "\n    "), file=out)
        answered = [(q, g.right) for q, g in zip(questions, grades, strict=True) if g.status != "skipped"]
        print(_score_lines(answered, len(questions)), file=out)
        _save(answered)
        return 0 if all(g.right for g in grades) else 1
    print(f"minilora drill: seed {seed} (repeat with --seed {seed}), {len(questions)} questions", file=out)
    return run_interactive(questions, input_fn, out)
