"""The documentation checks itself: its code runs, and everything it cites exists in the repository.

1. docs/interview_answers.md: every ```python block carries one tag in the prose just before it
   ([setup], [instant], [few steps], [trained base] or [quoted]). The [setup] block and every
   [instant] and [few steps] block run, in document order, in ONE namespace in a fresh Python
   process (so a snippet may only use names that the setup block or an earlier snippet defined).
   No snippet is slow: the whole run takes about 3 s on a quiet 2-core machine (Q11's 50-step
   comparison, under a second, is the longest); the run prints each snippet's time (pytest -s).
   [trained base] blocks are sketches that need a model trained for minutes; they must parse.
   [quoted] blocks quote other people's code (the seed's PyTorch sample) and are not run.
2. No file of the repository (*.md, *.py, *.ipynb) cites a repository path that does not exist
   (`docs/...`, `minilora/...`, `lessons/...`, `benchmarks/...`, `tests/...`, `tools/...`), has a
   relative markdown link to a missing file, or refers to the project's notes outside the
   repository. The failure message lists every offender with file and line.
"""
from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
INTERVIEW = ROOT / "docs" / "interview_answers.md"
TAGS = ("[setup]", "[instant]", "[few steps]", "[trained base]", "[quoted]")
RUN_TAGS = ("[setup]", "[instant]", "[few steps]")
RUN_TIMEOUT = 300            # seconds: a hang fails the test; the run itself takes about 3 s
_FENCE = re.compile(r"^```(\S*)")
_TAG = re.compile(r"`(\[(?:setup|instant|few steps|trained base|quoted)\])`")


def python_blocks(path: Path) -> list[tuple[int, str | None, str]]:
    """The ```python blocks of a markdown file, in order, as (line number, tag or None, source).

    A block's tag is the FIRST `[tag]` (in backticks) of the last paragraph before it that has one,
    with a heading or an earlier block in between clearing it.
    """
    blocks, tag, in_block, lang, start, body, para_tagged = [], None, False, "", 0, [], False
    for no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        m = _FENCE.match(line)
        if not in_block and m:
            in_block, lang, start, body = True, m.group(1), no + 1, []
        elif in_block and line.startswith("```"):
            if lang == "python":
                blocks.append((start, tag, "\n".join(body)))
            in_block, tag, para_tagged = False, None, False
        elif in_block:
            body.append(line)
        elif not line.strip():
            para_tagged = False                                   # a new paragraph starts
        elif line.startswith("#"):
            tag, para_tagged = None, False
        else:
            found = _TAG.findall(line)
            if found and not para_tagged:
                tag, para_tagged = found[0], True
    return blocks


def test_every_python_block_is_tagged():
    blocks = python_blocks(INTERVIEW)
    untagged = [no for no, tag, _ in blocks if tag not in TAGS]
    assert blocks, f"no python blocks found in {INTERVIEW}"
    assert not untagged, (f"{INTERVIEW.name}: python blocks starting at lines {untagged} have no tag; "
                          f"put one of {TAGS} (in backticks) in the prose before each")
    assert [tag for _, tag, _ in blocks].count("[setup]") == 1, "exactly one [setup] block (S0)"
    assert blocks[[t for _, t, _ in blocks].index("[setup]")][0] < min(
        no for no, t, _ in blocks if t in ("[instant]", "[few steps]")), "the [setup] block comes first"


_RUNNER = textwrap.dedent('''
    import json, sys, time, traceback
    blocks = json.load(sys.stdin)
    ns = {"__name__": "__interview__"}
    for no, tag, src in blocks:
        t0 = time.perf_counter()
        try:
            exec(compile(src, f"interview_answers.md:{no}", "exec"), ns)
        except BaseException:
            print(f"FAILED: the {tag} block at line {no} of docs/interview_answers.md", flush=True)
            traceback.print_exc()
            sys.exit(1)
        print(f"{time.perf_counter() - t0:6.2f} s  {tag:12} line {no}", flush=True)
''')


def test_interview_snippets_run_in_order(tmp_path):
    blocks = [(no, tag, src) for no, tag, src in python_blocks(INTERVIEW) if tag in RUN_TAGS]
    assert len(blocks) >= 20, "expected the setup block and the [instant] snippets"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MPLBACKEND": "Agg", "OPENBLAS_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", _RUNNER], input=json.dumps(blocks), capture_output=True,
                          text=True, cwd=tmp_path, env=env, timeout=RUN_TIMEOUT)
    print(proc.stdout)
    assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"


def test_trained_base_sketches_parse():
    bad = []
    for no, tag, src in python_blocks(INTERVIEW):
        if tag == "[trained base]":
            try:
                ast.parse(src)
            except SyntaxError as e:
                bad.append(f"line {no}: {e}")
    assert not bad, "\n".join(bad)


# ---------------------------------------------------------------- references inside the repository

_SKIP_DIRS = {".git", "__pycache__", ".venv", "venv", "runs", ".ipynb_checkpoints", ".hypothesis", "build", "dist"}
_TOP = ("docs", "minilora", "lessons", "benchmarks", "tests", "tools")
# a path that starts at the repository root: not preceded by a path character (so "repo/docs/x.md" of
# another project does not count), one of the top folders, and a file name with an extension
_CITED = re.compile(r"(?<![\w./\-])((?:" + "|".join(_TOP) + r")/[\w./\-]*\w\.(?:md|py|ipynb|toml|json|txt))\b")
# template names in usage text and recipes (lessons/NN_topic.ipynb, minilora/experiments/my_experiment.py)
_PLACEHOLDER = re.compile(r"/(?:NN_|my_|your_|x\.)")
_LINK = re.compile(r"!?\[[^\]\n]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
# the notes of the project's authors live outside the repository; spelled in pieces so that this
# file does not match itself
_OUTSIDE = ("shared" + "/docs", "/work" + "/shared", "shared" + "/DESIGN", "lora" + "_formulas.md")


def repository_files() -> list[Path]:
    """Every *.md, *.py and *.ipynb file of the working tree (git's view when available)."""
    try:
        out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                             capture_output=True, text=True, check=True).stdout.split()
        files = [ROOT / f for f in out]
    except (OSError, subprocess.CalledProcessError):
        files = list(ROOT.rglob("*"))
    return sorted(p for p in files if p.suffix in (".md", ".py", ".ipynb") and p.is_file()
                  and not _SKIP_DIRS.intersection(p.relative_to(ROOT).parts))


def _texts(path: Path):
    """(line number or cell label, text, is_markdown) pieces of a file; notebook cells one by one."""
    if path.suffix == ".ipynb":
        nb = json.loads(path.read_text(encoding="utf-8"))
        for i, cell in enumerate(nb.get("cells", [])):
            src = "".join(cell.get("source", []))
            for no, line in enumerate(src.splitlines(), 1):
                yield f"cell {i} line {no}", line, cell.get("cell_type") == "markdown"
    else:
        for no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            yield f"line {no}", line, path.suffix == ".md"


def reference_offenders(files=None) -> list[str]:
    """One message per missing cited path, broken relative link or reference to notes outside the repo."""
    me = Path(__file__).resolve()
    bad = []
    for path in files if files is not None else repository_files():
        if path.resolve() == me:
            continue
        rel = path.relative_to(ROOT)
        for where, line, is_md in _texts(path):
            for word in _OUTSIDE:
                if word in line:
                    bad.append(f"{rel}:{where}: refers to {word!r}, which is not in the repository")
            for cited in _CITED.findall(line):
                if not (ROOT / cited).exists() and not _PLACEHOLDER.search(cited):
                    bad.append(f"{rel}:{where}: cites {cited}, which does not exist")
            if is_md:
                for target in _LINK.findall(line):
                    if re.match(r"^[a-zA-Z][\w+.-]*:", target) or target.startswith("#"):
                        continue                              # a URL (http:, mailto:) or an anchor
                    file_part = target.split("#", 1)[0]
                    if file_part and not (path.parent / file_part).exists():
                        bad.append(f"{rel}:{where}: link to {target}, which does not exist")
    return bad


def test_no_reference_to_missing_or_outside_files():
    bad = reference_offenders()
    assert not bad, f"{len(bad)} reference(s) to files that are not in the repository:\n" + "\n".join(bad)


def test_reference_checker_catches_each_kind(tmp_path, monkeypatch):
    """The checker itself: each kind of bad reference is reported, and good ones are not."""
    docs = ROOT / "docs"
    probe = docs / "_probe_for_test_docs.md"
    text = ("ok: docs/formulas.md, [link](formulas.md), [web](https://example.org/x.md), [a](#q11), "
            "other/docs/nothing.md\n"
            "ok too: templates lessons/NN_topic.ipynb, minilora/my_variant.py, docs/x.md\n"
            "bad1: docs/no_such_file.md\nbad2: [gone](no_such_file.md)\nbad3: minilora/no_such.py\n"
            "bad4: see " + "/work" + "/shared/notes\n")
    probe.write_text(text, encoding="utf-8")
    try:
        bad = reference_offenders([probe])
    finally:
        probe.unlink()
    assert len(bad) == 4, bad
    assert any("docs/no_such_file.md" in b for b in bad) and any("link to no_such_file.md" in b for b in bad)
    assert any("minilora/no_such.py" in b for b in bad) and any("not in the repository" in b for b in bad)
    assert all("line 1:" not in b and "line 2:" not in b for b in bad)


@pytest.mark.parametrize("name", ["formulas.md", "paper_numbers.md"])
def test_reference_docs_exist(name):
    text = (ROOT / "docs" / name).read_text(encoding="utf-8")
    assert "arXiv:2106.09685" in text                                # they cite their sources


def test_block_tags_follow_the_paragraph_rule(tmp_path):
    """A block takes the first tag of the last tagged paragraph before it; headings and blocks reset it."""
    md = tmp_path / "t.md"
    md.write_text("\n".join([
        "intro mentions `[instant]` and `[few steps]`", "", "## S0", "",
        "**S0**, the `[setup]` of every `[instant]` snippet:", "```python", "a = 1", "```", "",
        "`[instant]` see Q11 (no block here)", "", "`[trained base]` a sketch:", "```python", "b = 2", "```",
        "```python", "c = 3", "```", "", "## Q2", "", "`[quoted]` someone else's code", "```text", "x", "```",
        "```python", "d = 4", "```"]), encoding="utf-8")
    got = [(tag, src) for _, tag, src in python_blocks(md)]
    assert got == [("[setup]", "a = 1"), ("[trained base]", "b = 2"), (None, "c = 3"), (None, "d = 4")]
