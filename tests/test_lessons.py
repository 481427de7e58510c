"""Every lesson notebook runs top to bottom, and is committed without outputs.

Notebooks are found by glob (lessons/*.ipynb), so lessons added later are tested automatically.
Each is executed with nbclient in a fresh python3 kernel, cwd = lessons/, MPLBACKEND=Agg. A failure
reports the failing cell's source and the error. Run times are printed in a session summary (run
`pytest -s` or look at the terminal summary); there is no timing assert, since a shared machine makes
those flaky, but each lesson is meant to finish in well under 90 s on 2 cores.
"""
from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow   # every notebook, executed (1-2 minutes): `pytest -m "not slow"` skips it

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

LESSONS = Path(__file__).resolve().parent.parent / "lessons"
NOTEBOOKS = sorted(LESSONS.glob("*.ipynb"))
CELL_TIMEOUT = 300
DURATIONS: dict[str, float] = {}
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _ids(paths):
    return [p.name for p in paths]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_notebook_runs(path, monkeypatch):
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("PYDEVD_DISABLE_FILE_VALIDATION", "1")
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=CELL_TIMEOUT, kernel_name="python3",
                                     resources={"metadata": {"path": str(LESSONS)}})
    start = time.perf_counter()
    failure = None
    try:
        client.execute()
    except nbclient.exceptions.CellExecutionError as err:
        failing = next((c for c in nb.cells if c.cell_type == "code" and any(
            o.get("output_type") == "error" for o in c.get("outputs", []))), None)
        source = failing.source if failing is not None else "(cell not found)"
        failure = f"{path.name}: a cell failed\n--- cell source ---\n{source}\n--- error ---\n{_ANSI.sub('', str(err))}"
    except nbclient.exceptions.CellTimeoutError as err:
        failure = f"{path.name}: a cell exceeded {CELL_TIMEOUT} s\n{err}"
    finally:
        DURATIONS[path.name] = time.perf_counter() - start
    if failure is not None:
        pytest.fail(failure, pytrace=False)
    print(f"\n{path.name}: {DURATIONS[path.name]:.1f} s")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_notebook_committed_without_outputs(path):
    nb = nbformat.read(path, as_version=4)
    dirty = [i for i, c in enumerate(nb.cells) if c.cell_type == "code"
             and (c.get("outputs") or c.get("execution_count") is not None)]
    assert not dirty, (f"{path.name}: code cells {dirty} have outputs or execution counts; strip them "
                       f"(python tools/make_notebook.py --strip {path.relative_to(LESSONS.parent)})")


def test_lessons_exist():
    assert NOTEBOOKS, f"no notebooks found in {LESSONS}"


class _DurationReport:
    """A tiny plugin registered at run time: prints the lesson run times in the terminal summary."""

    @staticmethod
    def pytest_terminal_summary(terminalreporter):
        if DURATIONS:
            terminalreporter.write_sep("-", "lesson run times (budget: 90 s each on 2 cores)")
            for name, seconds in sorted(DURATIONS.items()):
                terminalreporter.write_line(f"{name:55} {seconds:6.1f} s")


@pytest.fixture(scope="module", autouse=True)
def _report_durations(request):
    pm = request.config.pluginmanager
    if not pm.has_plugin("minilora-lesson-durations"):
        pm.register(_DurationReport(), "minilora-lesson-durations")
    yield
