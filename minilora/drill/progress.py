"""The learner's score by topic, kept in a small JSON file in the user's data folder.

Where: $MINILORA_DATA_DIR/progress.json if that variable is set, else $XDG_DATA_HOME/minilora/progress.json,
else ~/.local/share/minilora/progress.json. Written atomically (`minilora.io.save_json_atomic`), so a
killed drill leaves the previous file intact.

Format (version 1):
    {"version": 1, "sessions": 3,
     "topics": {"scaling": {"asked": 5, "right": 4}, ...},
     "templates": {"scaling_rslora": {"asked": 2, "right": 1}, ...}}

A file that cannot be read as this format (bad JSON, wrong shape) is reported on stderr, renamed to
progress.json.corrupt-<UTC timestamp> and replaced by a fresh record: it never stops the drill.
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Iterable

from .. import io as mio
from .registry import TOPICS, Question

__all__ = ["data_dir", "progress_path", "new_progress", "load_progress", "save_progress", "record",
           "weak_topics", "format_stats"]

VERSION = 1
WEAK_BELOW = 0.7   # a topic answered right less often than this is "weak"


def data_dir() -> Path:
    """The user's data folder for minilora (see the module docstring); not created here."""
    if os.environ.get("MINILORA_DATA_DIR"):
        return Path(os.environ["MINILORA_DATA_DIR"])
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "minilora"


def progress_path() -> Path:
    """data_dir() / "progress.json"."""
    return data_dir() / "progress.json"


def new_progress() -> dict:
    """An empty record."""
    return {"version": VERSION, "sessions": 0, "topics": {}, "templates": {}}


def _valid(p) -> bool:
    if not isinstance(p, dict) or p.get("version") != VERSION or not isinstance(p.get("sessions"), int):
        return False
    for key in ("topics", "templates"):
        table = p.get(key)
        if not isinstance(table, dict):
            return False
        for v in table.values():
            if not (isinstance(v, dict) and isinstance(v.get("asked"), int) and isinstance(v.get("right"), int)
                    and 0 <= v["right"] <= v["asked"]):
                return False
    return True


def load_progress(path: Path | None = None, warn=None) -> dict:
    """The record in `path` (default progress_path()), or a fresh one.

    A missing file gives a fresh record silently. An unreadable or malformed one is reported through
    `warn(message)` (default: print to stderr), renamed aside to <name>.corrupt-<timestamp>, and a fresh
    record is returned. Never raises for the file's content (an OSError renaming it is reported too).
    """
    path = progress_path() if path is None else Path(path)
    warn = warn or (lambda m: print(m, file=sys.stderr))
    if not path.exists():
        return new_progress()
    try:
        p = mio.load_json(path)
        problem = None if _valid(p) else "not a minilora progress record (version 1)"
    except (ValueError, OSError) as e:
        problem = str(e).splitlines()[0] if str(e) else type(e).__name__
    if problem is None:
        return p
    aside = path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}")
    try:
        os.replace(path, aside)
        warn(f"minilora drill: progress file {path} is corrupted ({problem}); moved it to {aside} and "
             f"started a fresh record")
    except OSError as e:
        warn(f"minilora drill: progress file {path} is corrupted ({problem}) and could not be moved aside "
             f"({e}); starting a fresh record")
    return new_progress()


def save_progress(progress: dict, path: Path | None = None) -> None:
    """Write the record atomically, creating the folder. Raises OSError if the folder cannot be written."""
    path = progress_path() if path is None else Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    mio.save_json_atomic(path, progress)


def record(progress: dict, results: Iterable[tuple[Question, bool]]) -> dict:
    """Add (question, was_right) pairs to the record (in place) and count one session; returns it."""
    progress["sessions"] += 1
    for q, ok in results:
        for table, key in (("topics", q.topic), ("templates", q.template)):
            e = progress[table].setdefault(key, {"asked": 0, "right": 0})
            e["asked"] += 1
            e["right"] += int(bool(ok))
    return progress


def weak_topics(progress: dict, threshold: float = WEAK_BELOW) -> list[str]:
    """Topics answered right less than `threshold` of the time, worst first (ties: most asked first)."""
    rows = [(e["right"] / e["asked"], -e["asked"], t) for t, e in progress["topics"].items() if e["asked"]]
    return [t for frac, _, t in sorted(rows) if frac < threshold]


def format_stats(progress: dict) -> str:
    """A table of score by topic, the weak topics, and the topics never practised."""
    lines = [f"{'topic':<12} {'right':>5} / {'asked':<5}  score", "-" * 34]
    for t in TOPICS:
        e = progress["topics"].get(t)
        if e and e["asked"]:
            lines.append(f"{t:<12} {e['right']:>5} / {e['asked']:<5}  {e['right'] / e['asked']:.0%}")
    weak = weak_topics(progress)
    never = [t for t in TOPICS if not progress["topics"].get(t, {}).get("asked")]
    lines.append(f"sessions: {progress['sessions']}")
    lines.append("weak topics (< {:.0%} right): {}".format(WEAK_BELOW, ", ".join(weak) if weak else "none"))
    if never:
        lines.append("not practised yet: " + ", ".join(never))
    if weak:
        lines.append(f"practise with: minilora drill --topic {weak[0]}")
    return "\n".join(lines)
