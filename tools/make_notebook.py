"""Write a lesson notebook from a plain Python script of cells (and back), via nbformat.

The script uses the "percent" cell format that Jupytext, VS Code and Spyder understand:

    # %% [markdown]
    # # A title
    # Prose, each line starting with "# ".

    # %%
    import numpy as np          # a code cell runs until the next "# %%" marker

Usage:
    python tools/make_notebook.py lesson.py lessons/NN_topic.ipynb   # script -> notebook (no outputs)
    python tools/make_notebook.py lessons/NN_topic.ipynb lesson.py   # notebook -> script (to edit)
    python tools/make_notebook.py --strip lessons/*.ipynb            # drop outputs and execution counts

Notebooks are committed without outputs (the tests execute them); every mode writes them that way.
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

import nbformat

_MARKER = re.compile(r"^# %%(.*)$")


def script_to_cells(text: str):
    """Split a percent-format script into a list of (kind, source) with kind 'code' or 'markdown'."""
    cells, kind, lines = [], None, []

    def flush():
        if kind is None:
            return
        body = "\n".join(lines).strip("\n")
        if kind == "markdown":
            body = "\n".join(re.sub(r"^# ?", "", ln) for ln in body.splitlines())
        if body.strip():
            cells.append((kind, body))

    for line in text.splitlines():
        m = _MARKER.match(line)
        if m:
            flush()
            kind, lines = ("markdown" if "[markdown]" in m.group(1) else "code"), []
        elif kind is not None:
            lines.append(line)
    flush()
    return cells


def cells_to_notebook(cells):
    """A version-4 notebook with the python3 kernel, no outputs and no execution counts."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"display_name": "Python 3", "language": "python", "name": "python3"}
    nb.metadata["language_info"] = {"name": "python"}
    for kind, src in cells:
        nb.cells.append(nbformat.v4.new_markdown_cell(src) if kind == "markdown"
                        else nbformat.v4.new_code_cell(src))
    for i, cell in enumerate(nb.cells):  # stable ids so regenerating gives the same file
        cell["id"] = f"cell-{i:03d}"
    return nb


def strip(nb):
    """Remove outputs and execution counts in place; returns nb."""
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
    return nb


def notebook_to_script(nb) -> str:
    """The inverse of script_to_cells (markdown lines get a "# " prefix)."""
    parts = []
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            body = "\n".join(("# " + ln) if ln else "#" for ln in cell.source.splitlines())
            parts.append("# %% [markdown]\n" + body)
        elif cell.cell_type == "code":
            parts.append("# %%\n" + cell.source)
    return "\n\n".join(parts) + "\n"


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "--strip":
        for p in argv[1:]:
            nb = strip(nbformat.read(p, as_version=4))
            nbformat.write(nb, p)
        return 0
    if len(argv) != 2:
        print(__doc__)
        return 2
    src, dst = Path(argv[0]), Path(argv[1])
    if src.suffix == ".ipynb":
        dst.write_text(notebook_to_script(nbformat.read(src, as_version=4)), encoding="utf-8")
    else:
        nb = cells_to_notebook(script_to_cells(src.read_text(encoding="utf-8")))
        nbformat.validate(nb)
        nbformat.write(nb, dst)
    return 0


if __name__ == "__main__":
    sys.exit(main())
