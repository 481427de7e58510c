"""The §7 experiments (minilora.experiments) in quick mode: a tiny base, few steps, into tmp_path."""
import json

import numpy as np
import pytest

from minilora import experiments as E


@pytest.fixture(scope="module")
def base():
    b = E.get_base(quick=True, log=lambda s: None)
    b.eval()
    return b


@pytest.fixture(scope="module")
def sweep(base, tmp_path_factory):
    out = tmp_path_factory.mktemp("sweep")
    return E.rank_sweep(base, out, ranks=(2, 8, 16), quick=True, steps=15, log=lambda s: None), out


def _written(out, name):
    md, js = out / f"{name}.md", out / f"{name}.json"
    assert md.read_text().startswith("# ")
    data = json.loads(js.read_text())
    pngs = list(out.glob("*.png"))
    assert pngs and all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)
    return data


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
    pairs = E.swap_pairs("eeeeeettttt aaaaooo nni", 3)
    letters = [c for p in pairs for c in p]
    assert len(set(letters)) == 6 and pairs[0] == ("e", "t")


def test_planted_rank_recovers_k(base, tmp_path):
    k = 3
    res = E.planted_rank(tmp_path, k=k, quick=True, base=base, log=lambda s: None)
    assert res["exact_rank"] == k
    assert res["recovered_rank"] == k            # not 2k: the trained update uses k directions
    assert res["after_val_loss"] < res["before_val_loss"]
    data = _written(tmp_path, "planted")
    assert data["recovered_rank"] == k


def test_rank_sweep_writes(sweep):
    res, out = sweep
    data = _written(out, "sweep")
    assert [r["r"] for r in data["lora"]] == [2, 8, 16]
    assert all(np.isfinite(r["val_loss"]) for r in data["lora"])
    assert data["full"]["val_loss"] < data["base_val_loss"]
    assert (out / "sweep_loss_vs_rank.png").exists()


def test_subspace_phi_in_unit_interval(base, sweep, tmp_path):
    E.subspace_experiment(base, tmp_path, sweep=sweep[0], r_small=8, r_large=16, quick=True, steps=15,
                                log=lambda s: None)
    data = _written(tmp_path, "subspace")
    assert data["rows"]
    for r in data["rows"]:
        for key in ("phi_11", "phi_mean_ij_le_r", "phi_1_jmax", "phi_11_deltaW", "grid_min", "grid_max"):
            assert -1e-9 <= r[key] <= 1 + 1e-9
        j_max = 16 if r["pair"] == "r8_vs_r16" else 8  # the two-seed pair: j <= 8
        assert r["baseline_1_jmax"] == pytest.approx(j_max / 32)
    assert len(list(tmp_path.glob("subspace_*.png"))) == 4


def test_full_ft_update_writes(base, sweep, tmp_path):
    E.full_ft_update(base, tmp_path, sweep=sweep[0], ks=(1, 4), quick=True, log=lambda s: None)
    data = _written(tmp_path, "fullft")
    ks = [t["k"] for t in data["truncation"]]
    assert ks == [0, 1, 4, "full"]
    for row in data["layers"]:
        assert 1 <= row["effective_rank"] <= row["full_dim"]
        assert 1 <= row["energy_rank_90"] <= row["full_dim"]


def test_amplification_writes(base, sweep, tmp_path):
    E.amplification(base, tmp_path, sweep=sweep[0], ranks=(2, 8), quick=True, log=lambda s: None)
    data = _written(tmp_path, "amplification")
    assert {r["r"] for r in data["rows"]} == {2, 8}
    for r in data["rows"]:
        assert r["amplification"] > 0 and r["proj_norm_random"] <= r["proj_norm_top_w"] + 1e-9


def test_cli_glue_parses():
    import argparse
    p = argparse.ArgumentParser()
    E.add_analyze_arguments(p)
    a = p.parse_args(["all", "--quick", "--steps", "5"])
    assert a.experiment == "all" and a.quick and a.steps == 5 and a.base == "runs/demo/base"
