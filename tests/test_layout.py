"""The architecture's rules, checked: who may import whom, a line budget, a module map that names
every module, and a tree that is clean under ruff.

The layers (lowest first) are the ones docs/ARCHITECTURE.md draws. A module may import from its own
layer and the layers below it, never above: the engine knows nothing of models, models nothing of
LoRA, the rank tools nothing of plotting. A new top-level module must be given a layer here (and a
line in the module map), which is the point: adding a file is a decision about where it belongs.
"""
from __future__ import annotations

import ast
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PKG = ROOT / "minilora"

# top-level module or subpackage of minilora -> layer
LAYERS = {
    "io": 0, "perf": 0,
    "function": 1, "tensor": 1, "ops": 1, "gradcheck": 1,
    "nn": 2, "optim": 2, "data": 2, "bpe": 2,
    "lora": 3, "rank": 3, "sampling": 3, "quant": 3, "peft": 3,
    "checkpoint": 4, "train": 4, "finetune": 4, "plots": 4, "costs": 4, "bases": 4,
    "checkpoints": 5, "experiments": 5, "demo": 5, "exercises": 5, "drill": 5, "comparison": 5, "latency": 5,
    "cli": 6, "__main__": 6, "__init__": 6,
}
LINE_BUDGET = 600
# Data, not code: the exercises' stubs and reference solutions are one short file per exercise.
MAP_EXEMPT_DIRS = ("exercises/stubs/", "exercises/solutions/")


def _modules() -> list[Path]:
    return sorted(p for p in PKG.rglob("*.py") if "__pycache__" not in p.parts)


def _top(rel: Path) -> str:
    return rel.parts[0].removesuffix(".py")


def _imported_tops(path: Path) -> set[str]:
    """Top-level minilora modules that `path` imports (module-level or inside functions)."""
    rel = path.relative_to(PKG)
    package = list(rel.parent.parts)
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.ImportFrom):
            if node.level == 0:
                parts = (node.module or "").split(".")
                if parts[0] != "minilora":
                    continue
                target = parts[1:]
            else:
                base = package[: len(package) - (node.level - 1)] if node.level > 1 else package
                target = base + (node.module.split(".") if node.module else [])
            if target:
                found.add(target[0])
            else:  # `from . import x, y` at the package root
                found.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.Import):
            for a in node.names:
                parts = a.name.split(".")
                if parts[0] == "minilora" and len(parts) > 1:
                    found.add(parts[1])
    return found


def _third_party(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


def test_every_top_level_module_has_a_layer():
    tops = {_top(p.relative_to(PKG)) for p in _modules()}
    missing = sorted(tops - set(LAYERS))
    assert not missing, f"give these modules a layer in tests/test_layout.py LAYERS: {missing}"


def test_imports_only_go_down_the_layers():
    bad = []
    for path in _modules():
        rel = path.relative_to(PKG)
        me = _top(rel)
        for other in sorted(_imported_tops(path)):
            if other == me or other not in LAYERS:
                continue
            if LAYERS[other] > LAYERS[me]:
                bad.append(f"{rel} (layer {LAYERS[me]}) imports {other} (layer {LAYERS[other]})")
    assert not bad, "imports that go up the layers:\n" + "\n".join(bad)


def test_the_named_rules_of_the_architecture():
    """The rules as ARCHITECTURE.md states them, spelled out (the layer test implies them)."""
    engine = ["tensor.py", "function.py", "gradcheck.py", *(f"ops/{p.name}" for p in (PKG / "ops").glob("*.py"))]
    for name in engine:
        tops = _imported_tops(PKG / name)
        assert not tops & {"nn", "lora", "train", "cli", "plots", "rank", "experiments"}, (name, tops)
    for path in (PKG / "nn").glob("*.py"):
        assert "lora" not in _imported_tops(path), path
    for path in (PKG / "rank").glob("*.py"):
        assert "plots" not in _imported_tops(path), path


def test_only_plots_imports_matplotlib():
    users = sorted(str(p.relative_to(PKG)) for p in _modules() if "matplotlib" in _third_party(p))
    assert users == ["plots.py"], users


def test_no_pytorch_in_the_package_or_the_tests():
    users = [str(p) for p in list(_modules()) + sorted((ROOT / "tests").rglob("*.py"))
             if "torch" in _third_party(p)]
    assert not users, users


def test_line_budget():
    over = [(str(p.relative_to(PKG)), n) for p in _modules()
            if (n := len(p.read_text().splitlines())) > LINE_BUDGET]
    assert not over, f"modules over {LINE_BUDGET} lines (split them by idea): {over}"


def test_module_map_names_every_module():
    text = (ROOT / "docs" / "ARCHITECTURE.md").read_text()
    missing = []
    for path in _modules():
        rel = path.relative_to(PKG).as_posix()
        if rel.startswith(MAP_EXEMPT_DIRS):
            continue
        if path.name == "__init__.py":
            if rel == "__init__.py":
                continue
            rel = rel.removesuffix("__init__.py")  # a package: named by its folder, e.g. `lora/`
        if f"`{rel}`" not in text and f"`minilora/{rel}`" not in text:
            missing.append(rel)
    for d in MAP_EXEMPT_DIRS:
        if f"`{d}`" not in text and f"`minilora/{d}`" not in text:
            missing.append(d)
    assert not missing, f"docs/ARCHITECTURE.md's module map does not name: {missing}"


def test_ruff_is_clean():
    if importlib.util.find_spec("ruff") is None:
        pytest.skip("ruff is not installed (it is in the test extra)")
    res = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "."], cwd=ROOT,
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


def test_no_module_shadows_a_name_the_package_exports():
    """The first import of minilora.<sub> sets the attribute minilora.<sub> to the module, so a module
    named like an exported function and loaded after the package (a `compare.py` next to
    `minilora.compare`, the gradient table) silently replaces the function for everyone once anything
    imports it. Import every module in a fresh interpreter and check that every export survives."""
    code = (
        "import importlib, pkgutil, minilora\n"
        "before = {n: getattr(minilora, n) for n in dir(minilora) if not n.startswith('_')}\n"
        "for m in pkgutil.walk_packages(minilora.__path__, 'minilora.'):\n"
        "    if not m.name.endswith('__main__') and '.stubs.' not in m.name and '.solutions.' not in m.name:\n"
        "        importlib.import_module(m.name)\n"
        "print(sorted(n for n, v in before.items() if getattr(minilora, n) is not v))\n")
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "[]", f"exports replaced by a module of the same name: {res.stdout}"
