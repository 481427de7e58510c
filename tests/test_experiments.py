"""The experiments package (minilora.experiments) in quick mode: a tiny base, few steps, into tmp_path;
its registry (the CLI's choices, `analyze all`, the docs), the alpha/lr identities under Adam, and
the figures' atomic writes."""
import ast
import inspect
import json
import re
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import minilora
from minilora import plots
from minilora.experiments import REGISTRY, get_base, run_all, run_experiment
from minilora.experiments.alpha_lr import RUNS, alpha_lr_equivalence
from minilora.experiments.amplification import amplification
from minilora.experiments.full_ft_update import full_ft_update
from minilora.experiments.planted_rank import planted_rank, planted_swap, swap_pairs
from minilora.experiments.rank_sweep import rank_sweep
from minilora.experiments.subspace import subspace_experiment

pytestmark = pytest.mark.slow   # each experiment trains small models: `pytest -m "not slow"` skips it

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "minilora" / "experiments"


def quiet(line):
    """A log function that prints nothing."""


@pytest.fixture(scope="module")
def base():
    b = get_base(quick=True, log=quiet)
    b.eval()
    return b


@pytest.fixture(scope="module")
def sweep(base, tmp_path_factory):
    out = tmp_path_factory.mktemp("sweep")
    return rank_sweep(base, out, ranks=(2, 8, 16), quick=True, steps=15, log=quiet), out


def _written(out, name):
    md, js = out / f"{name}.md", out / f"{name}.json"
    assert md.read_text().startswith("# ")
    data = json.loads(js.read_text())
    pngs = list(out.glob("*.png"))
    assert pngs and all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)
    return data


# ------------------------------------------------------------------------------ planted rank


def test_planted_swap_exact_rank_is_k():
    # a transposition's (P - I) has rank 1: k disjoint swaps -> rank k, rows pair up as negatives
    rng = np.random.default_rng(0)
    E0 = rng.standard_normal((20, 8))
    perm = np.arange(20)
    for a, b in [(1, 2), (5, 9), (11, 3)]:
        perm[a], perm[b] = b, a
    D = E0[perm] - E0
    assert np.linalg.matrix_rank(D) == 3
    assert np.linalg.matrix_rank(np.eye(20)[perm] - np.eye(20)) == 3


def test_swap_pairs_disjoint():
    pairs = swap_pairs("eeeeeettttt aaaaooo nni", 3)
    letters = [c for p in pairs for c in p]
    assert len(set(letters)) == 6 and pairs[0] == ("e", "t")
    with pytest.raises(ValueError, match="distinct letters"):
        swap_pairs("abc", 2)


PAIRS = [("e", "o"), ("a", "t"), ("s", "n")]


@given(st.text(alphabet=st.sampled_from("eoatsnxyz é\n")) | st.text(), st.integers(0, len(PAIRS)))
def test_planted_swap_is_an_involution(text, k):
    pairs = PAIRS[:k]
    swapped = planted_swap(text, pairs)
    assert len(swapped) == len(text)
    assert planted_swap(swapped, pairs) == text


def test_planted_swap_example_and_errors():
    assert planted_swap("the tea", [("e", "a")]) == "tha tae"
    assert planted_swap("abc", ["ab"]) == "bac"
    with pytest.raises(ValueError, match="disjoint"):
        planted_swap("x", [("a", "b"), ("b", "c")])
    with pytest.raises(ValueError, match="itself"):
        planted_swap("x", [("a", "a")])
    with pytest.raises(ValueError, match="single characters"):
        planted_swap("x", [("ab", "c")])
    with pytest.raises(ValueError, match="two characters"):
        planted_swap("x", [("a",)])


def test_planted_rank_recovers_k(base, tmp_path):
    k = 3
    res = planted_rank(base, tmp_path, k=k, quick=True, log=quiet)
    assert res["exact_rank"] == k
    assert res["recovered_rank"] == k            # not 2k: the trained update uses k directions
    assert res["after_val_loss"] < res["before_val_loss"]
    data = _written(tmp_path, "planted")
    assert data["recovered_rank"] == k


# ------------------------------------------------------------------------------ §7 experiments


def test_rank_sweep_writes(sweep):
    res, out = sweep
    data = _written(out, "sweep")
    assert [r["r"] for r in data["lora"]] == [2, 8, 16]
    assert all(np.isfinite(r["val_loss"]) for r in data["lora"])
    assert data["full"]["val_loss"] < data["base_val_loss"]
    assert (out / "sweep_loss_vs_rank.png").exists()


def test_subspace_phi_in_unit_interval(base, sweep, tmp_path):
    subspace_experiment(base, tmp_path, sweep=sweep[0], r_small=8, r_large=16, quick=True, steps=15, log=quiet)
    data = _written(tmp_path, "subspace")
    assert data["rows"]
    for r in data["rows"]:
        for key in ("phi_11", "phi_mean_ij_le_r", "phi_1_jmax", "phi_11_deltaW", "grid_min", "grid_max"):
            assert -1e-9 <= r[key] <= 1 + 1e-9
        j_max = 16 if r["pair"] == "r8_vs_r16" else 8  # the two-seed pair: j <= 8
        assert r["baseline_1_jmax"] == pytest.approx(j_max / 32)
    assert len(list(tmp_path.glob("subspace_*.png"))) == 4


def test_full_ft_update_writes(base, sweep, tmp_path):
    full_ft_update(base, tmp_path, sweep=sweep[0], ks=(1, 4), quick=True, log=quiet)
    data = _written(tmp_path, "fullft")
    ks = [t["k"] for t in data["truncation"]]
    assert ks == [0, 1, 4, "full"]
    for row in data["layers"]:
        assert 1 <= row["effective_rank"] <= row["full_dim"]
        assert 1 <= row["energy_rank_90"] <= row["full_dim"]


def test_amplification_writes(base, sweep, tmp_path):
    amplification(base, tmp_path, sweep=sweep[0], ranks=(2, 8), quick=True, log=quiet)
    data = _written(tmp_path, "amplification")
    assert {r["r"] for r in data["rows"]} == {2, 8}
    for r in data["rows"]:
        assert r["amplification"] > 0 and r["proj_norm_random"] <= r["proj_norm_top_w"] + 1e-9
    # ranks=None means the sweep's ranks, and needs a sweep
    res = amplification(base, tmp_path, sweep=sweep[0], ranks=None, quick=True, log=quiet)
    assert {r["r"] for r in res["rows"]} == {2, 8, 16}
    with pytest.raises(ValueError, match="sweep"):
        amplification(base, tmp_path, ranks=None, quick=True, log=quiet)


def test_run_all_quick_summarises_every_suite_entry(tmp_path):
    res = run_all(tmp_path, quick=True, steps=5, k=2, log=quiet)
    suite = [e.name for e in REGISTRY.values() if e.in_all]
    assert suite == ["sweep", "subspace", "fullft", "amplification", "planted"]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert set(summary) == {"seconds", "times", *suite} and list(res["times"]) == suite
    md = (tmp_path / "summary.md").read_text()
    for letter in "abcde":
        assert f"## ({letter})" in md
    assert summary["planted"]["k"] == 2
    assert [r["r"] for r in summary["sweep"]["lora"]] == [2, 8, 16]            # the registry's quick ranks
    assert {r["r"] for r in summary["amplification"]["rows"]} == {2, 8, 16}    # all: the sweep's ranks
    assert summary["planted"]["settings"]["steps"] == 150                        # planted keeps its budget in all
    for e in REGISTRY.values():
        if e.in_all:
            for pattern in e.outputs:
                assert list(tmp_path.glob(pattern)), f"{e.name} did not write {pattern}"


# ------------------------------------------------------------------------------ the registry


def test_cli_analyze_choices_are_the_registry(capsys, monkeypatch):
    from minilora.cli import build_parser

    monkeypatch.setenv("COLUMNS", "1000")           # no line wrapping inside the help text

    parser = build_parser()
    a = parser.parse_args(["analyze", "all", "--quick", "--steps", "5"])
    assert a.experiment == "all" and a.quick and a.steps == 5 and a.base == "runs/demo/base"
    for name in REGISTRY:
        assert parser.parse_args(["analyze", name]).experiment == name
    with pytest.raises(SystemExit):
        parser.parse_args(["analyze", "--help"])
    text = capsys.readouterr().out
    assert "{" + ",".join([*REGISTRY, "all"]) + "}" in text
    for e in REGISTRY.values():
        assert f"{e.name}: " in text


def test_registry_entries_follow_the_calling_convention():
    for e in REGISTRY.values():
        fn = e.load()
        assert fn.__module__ == f"minilora.experiments.{e.module}" and fn.__doc__
        params = inspect.signature(fn).parameters
        assert list(params)[:2] == ["base", "out_dir"], e.name
        for key in ("steps", "quick", "log", *e.defaults, *e.quick, *e.all_overrides):
            assert key in params, f"{e.name}: {fn.__name__} has no parameter {key!r}"
        assert set(e.quick) <= set(e.defaults) and set(e.all_overrides) - {"steps"} <= set(e.defaults)
        if e.uses_sweep:
            assert "sweep" in params
        if e.in_all:
            assert callable(e.summary())
        assert e.outputs and e.description and e.source


def test_run_experiment_rejects_unknown_names_and_settings(tmp_path):
    with pytest.raises(ValueError, match="unknown experiment 'nope'; choose from: sweep"):
        run_experiment("nope", tmp_path)
    with pytest.raises(ValueError, match="no setting"):
        run_experiment("planted", tmp_path, quick=True, ranks=(2,))


def test_docs_name_every_experiment():
    doc = (ROOT / "docs" / "rank_analysis.md").read_text()
    listed = re.search(r"minilora analyze \{([a-z,-]+)\}", doc).group(1).split(",")
    assert listed == [*REGISTRY, "all"]
    for e in REGISTRY.values():
        assert f"experiments/{e.module}.py" in doc, e.name


def _private_uses(path):
    """(line, text) of every private name of another module used in a file: `from ..x import _y`,
    `from . import _y` of a module outside the package, or `<imported module>._y`."""
    tree = ast.parse(path.read_text())
    modules, bad = set(), []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules |= {a.asname or a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            outside = node.level != 1 or node.module is None
            for a in node.names:
                if a.name.startswith("_") and not a.name.startswith("__") and outside:
                    bad.append((node.lineno, f"from {'.' * node.level}{node.module or ''} import {a.name}"))
                if node.module is None or node.level >= 2:
                    modules.add(a.asname or a.name)
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in modules
                and node.attr.startswith("_") and not node.attr.startswith("__")):
            bad.append((node.lineno, f"{node.value.id}.{node.attr}"))
    return bad


def test_experiments_use_no_private_names_of_other_modules(tmp_path):
    files = sorted(PKG.glob("*.py"))
    assert {f.stem for f in files} >= {e.module for e in REGISTRY.values()} | {"common", "registry"}
    for f in files:
        assert _private_uses(f) == [], f.name
    # the checker finds both kinds
    probe = tmp_path / "probe.py"
    probe.write_text("from ..demo import _pretrained_base\nfrom .. import plots\nplots._new_figure()\n")
    assert [t for _, t in _private_uses(probe)] == ["from ..demo import _pretrained_base", "plots._new_figure"]


# ------------------------------------------------------------------------------ alpha vs lr under Adam


@pytest.fixture(scope="module")
def tiny64():
    return get_base(quick=True, log=quiet).astype(np.float64)      # a copy of the cached tiny base


def _check_identities(res, exact):
    cmp = res["compare"]
    assert set(cmp) == set(RUNS) - {"c_alpha"}
    for name in ("lr_B_x_c", "sqrt_c_lr_and_init"):       # equal at every step
        assert cmp[name]["agrees_every_step"], (name, cmp[name]["rel_dW_diff"])
        assert cmp[name]["agree_steps"] == res["steps"]
        assert max(cmp[name]["abs_loss_diff"]) <= 1e-12
        if exact:                                         # c = 4: powers of two, bit for bit
            assert max(cmp[name]["max_abs_dW_diff"]) == 0.0
    naive = cmp["lr_x_c"]                                 # equal at step 1 only
    assert naive["agree_steps"] == 1 and not naive["agrees_every_step"]
    assert naive["rel_dW_diff"][0] <= res["tol"] < naive["rel_dW_diff"][1]


def test_alpha_lr_example_c4_is_bitwise(tiny64, base):
    res = alpha_lr_equivalence(tiny64, c=4.0, steps=4, log=quiet)
    # a float32 base is cast on a copy: the caller's model is untouched
    alpha_lr_equivalence(base, c=4.0, steps=1, log=quiet)
    assert base.dtype == np.float32
    _check_identities(res, exact=True)
    assert res["dtype"] == "float64" and res["steps"] == 4 and res["files"] == []
    # one ε for both groups: not equal to rounding even at step 1 (ε/√v̂ differs)
    assert res["compare"]["lr_B_x_c_same_eps"]["rel_dW_diff"][0] > res["tol"]


@settings(max_examples=6, deadline=None)
@given(st.floats(1.5, 12.0) | st.floats(0.05, 0.7))
def test_alpha_lr_identities_hold_for_any_c(tiny64, c):
    res = alpha_lr_equivalence(tiny64, c=c, steps=3, log=quiet)
    _check_identities(res, exact=False)


def test_alpha_lr_on_the_shipped_model_writes(tmp_path):
    res = run_experiment("alpha-lr", tmp_path, quick=True, steps=3, log=quiet)
    _check_identities(res, exact=True)
    data = _written(tmp_path, "alpha_lr")
    assert data["compare"]["lr_x_c"]["agree_steps"] == 1 and data["c"] == 4.0
    assert data["loss"]["c_alpha"] == data["loss"]["lr_B_x_c"]
    assert "| yes |" in (tmp_path / "alpha_lr.md").read_text()


def test_alpha_lr_rejects_bad_input(tiny64):
    for kw, match in [({"c": 0.0}, "c must"), ({"c": float("nan")}, "c must"), ({"steps": 0}, "steps"),
                      ({"eps": 0.0}, "eps"), ({"dtype": np.float16}, "dtype")]:
        with pytest.raises(ValueError, match=match):
            alpha_lr_equivalence(tiny64, log=quiet, **kw)


# ------------------------------------------------------------------------------ figures


def test_plots_write_through_the_one_atomic_writer(tmp_path, monkeypatch):
    calls = []
    real = minilora.io.atomic_write_bytes

    def spy(path, data):
        calls.append(str(path))
        return real(path, data)

    monkeypatch.setattr(minilora.io, "atomic_write_bytes", spy)
    out = tmp_path / "new" / "lines.png"          # the folder is created
    assert plots.plot_lines({"a": ([1, 2, 4], [3.0, 2.0, 1.5])}, out, "t", "x", "y", logx=True,
                            hlines={"base": 2.5}) == str(out)
    plots.plot_spectrum({"s": [3.0, 2.0, 1.0]}, tmp_path / "s.png")
    assert calls == [str(out), str(tmp_path / "s.png")]
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and (out.stat().st_mode & 0o777) == 0o644


def test_a_failed_plot_write_keeps_the_old_figure(tmp_path, monkeypatch):
    target = tmp_path / "fig.png"
    plots.plot_lines({"a": ([1, 2], [1.0, 2.0])}, target, "t", "x", "y")
    old = target.read_bytes()

    def boom(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(minilora.io.os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        plots.plot_lines({"b": ([1, 2, 3], [3.0, 1.0, 2.0])}, target, "t2", "x", "y")
    assert target.read_bytes() == old
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fig.png"]      # no temporary file left


@pytest.mark.parametrize("series, match", [
    ({}, "non-empty dict"), ({"a": [1, 2, 3]}, "pair"), ({"a": ([1, 2], [1.0])}, "differ"),
    ({"a": (["x", "y"], [1.0, 2.0])}, "numeric")])
def test_plot_lines_rejects_bad_series(tmp_path, series, match):
    with pytest.raises((ValueError, TypeError), match=match):
        plots.plot_lines(series, tmp_path / "x.png", "t", "x", "y")
    assert not (tmp_path / "x.png").exists()

