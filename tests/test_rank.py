"""Tests for minilora.rank (SVD rank analysis) and minilora.plots (figures).

Properties from LoRA §7 and Appendix G (Hu et al. 2021, arXiv:2106.09685) and docs/formulas.md: φ in [0, 1], φ = 1
for equal spans, 0 for orthogonal spans, random baseline max(i, j)/d; factor-based SVD == dense SVD;
effective / stable / energy rank bounds; Eckart-Young; amplification factor ordering.
"""
import os
import subprocess
import sys
import types

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from minilora import rank as R

ELEMENTS = st.floats(-3, 3, allow_nan=False, allow_infinity=False, allow_subnormal=False)


def mat(rows, cols, dtype=np.float64):
    """Matrices with every entry drawn (fill=nothing: not a mostly-constant array)."""
    return arrays(dtype, (rows, cols), elements=ELEMENTS, fill=st.nothing())


@st.composite
def matrices(draw, max_side=9):
    m = draw(st.integers(1, max_side))
    n = draw(st.integers(1, max_side))
    return draw(mat(m, n))


@st.composite
def factor_pairs(draw, max_side=9):
    """Two LoRA-A-like matrices (r1, d), (r2, d) sharing d, neither all zero."""
    d = draw(st.integers(1, max_side))
    A1 = draw(mat(draw(st.integers(1, max_side)), d))
    A2 = draw(mat(draw(st.integers(1, max_side)), d))
    assume(np.any(A1) and np.any(A2))
    return A1, A2


def rng_orthogonal(rng, n):
    Q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    return Q


def well_conditioned(rng, n, lo=0.5, hi=2.0):
    """Random invertible n x n matrix with singular values in [lo, hi] (condition <= hi/lo)."""
    return rng_orthogonal(rng, n) @ np.diag(rng.uniform(lo, hi, n)) @ rng_orthogonal(rng, n)


# ---------------------------------------------------------------------------------------------
# subspace similarity φ (LoRA §7.2, Eq. 4)
# ---------------------------------------------------------------------------------------------

@given(factor_pairs(), st.data(), st.sampled_from(["right", "left"]))
def test_phi_in_unit_interval_and_grid_matches(pair, data, side):
    A1, A2 = pair
    if side == "left":
        A1, A2 = A1.T, A2.T
    n1, n2 = min(A1.shape), min(A2.shape)
    i = data.draw(st.integers(1, n1))
    j = data.draw(st.integers(1, n2))
    phi = R.subspace_similarity(A1, A2, i, j, side=side)
    assert -1e-12 <= phi <= 1 + 1e-12
    grid = R.subspace_similarity_grid(A1, A2, side=side)
    assert grid.shape == (n1, n2)
    assert np.all(grid >= -1e-12) and np.all(grid <= 1 + 1e-12)
    assert grid[i - 1, j - 1] == pytest.approx(phi, abs=1e-12)
    assert R.subspace_similarity_grid(A1, A2, i, j, side=side).shape == (i, j)


@given(matrices())
def test_phi_of_a_matrix_with_itself_is_one(A):
    assume(np.any(A))
    grid = R.subspace_similarity_grid(A, A)
    np.testing.assert_allclose(grid, 1.0, atol=1e-12)


@given(st.integers(1, 6), st.integers(0, 6), st.data(), st.integers(0, 2**32 - 1))
def test_phi_invariant_to_invertible_mixing(r, extra, data, seed):
    """span(rows of M @ A) == span(rows of A) for invertible M, so φ(A, M A, r, r) = 1."""
    d = r + extra
    A = data.draw(mat(r, d))
    assume(np.linalg.cond(A) < 1e6)
    M = well_conditioned(np.random.default_rng(seed), r)
    assert R.subspace_similarity(A, M @ A, r, r) == pytest.approx(1.0, abs=1e-8)
    # the same for B with left singular vectors (LoRA footnote 7): column space of B @ M
    assert R.subspace_similarity(A.T, A.T @ M, r, r, side="left") == pytest.approx(1.0, abs=1e-8)


@given(st.integers(1, 4), st.integers(1, 4), st.integers(0, 4), st.data(), st.integers(0, 2**32 - 1))
def test_phi_zero_for_orthogonal_row_spaces(k1, k2, extra, data, seed):
    d = k1 + k2 + extra
    Q = rng_orthogonal(np.random.default_rng(seed), d)
    X1 = data.draw(mat(k1, k1))
    X2 = data.draw(mat(k2, k2))
    assume(np.linalg.cond(X1) < 1e6 and np.linalg.cond(X2) < 1e6)
    A1 = X1 @ Q[:, :k1].T                   # rows in span(Q[:, :k1])
    A2 = X2 @ Q[:, k1:k1 + k2].T            # rows in the orthogonal span(Q[:, k1:k1+k2])
    grid = R.subspace_similarity_grid(A1, A2)
    np.testing.assert_allclose(grid, 0.0, atol=1e-12)


def test_phi_partial_overlap_exact_value():
    # span{e1, e2} vs span{e1, e3}: ||U1^T U2||^2 = 1, min(i, j) = 2 -> φ = 0.5
    A1 = np.array([[2.0, 0, 0, 0], [0, 1.0, 0, 0]])
    A2 = np.array([[3.0, 0, 0, 0], [0, 0, 1.0, 0]])
    assert R.subspace_similarity(A1, A2, 2, 2) == pytest.approx(0.5)
    assert R.subspace_similarity(A1, A2, 1, 1) == pytest.approx(1.0)
    assert R.subspace_similarity(A1, A2, 1, 2) == pytest.approx(1.0)
    assert R.subspace_similarity(A1, A2, 2, 1) == pytest.approx(1.0)


@pytest.mark.parametrize("i,j", [(1, 1), (1, 8), (4, 4), (8, 2), (16, 32)])
def test_random_subspace_monte_carlo_matches_baseline(i, j):
    d = 64
    mc = R.random_subspace_similarity(i, j, d, n_trials=200, seed=1)
    assert abs(mc - R.random_subspace_baseline(i, j, d)) < 0.05
    assert R.random_subspace_baseline(i, j, d) == max(i, j) / d


def test_random_subspace_baseline_grid():
    g = R.random_subspace_baseline_grid(3, 4, 10)
    assert g.shape == (3, 4)
    assert g[2, 0] == pytest.approx(0.3) and g[0, 3] == pytest.approx(0.4)


# ---------------------------------------------------------------------------------------------
# factor-based SVD, LoRA layers
# ---------------------------------------------------------------------------------------------

@given(st.integers(1, 10), st.integers(1, 10), st.integers(1, 6), st.data(),
       st.one_of(st.floats(1e-3, 4), st.floats(-4, -1e-3)))
def test_lowrank_svd_matches_dense(d_out, d_in, r, data, scaling):
    B = data.draw(mat(d_out, r))
    A = data.draw(mat(r, d_in))
    U, S, Vh = R.lowrank_singular_values(B, A, scaling=scaling)
    k = min(r, d_out, d_in)
    assert U.shape == (d_out, k) and S.shape == (k,) and Vh.shape == (k, d_in)
    dense = scaling * B @ A
    S_dense = np.linalg.svd(dense, compute_uv=False)[:k]
    np.testing.assert_allclose(S, S_dense, rtol=1e-10, atol=1e-10 * max(S_dense[0], 1e-300))
    np.testing.assert_allclose((U * S) @ Vh, dense, atol=1e-10 * max(S_dense[0], 1.0))
    np.testing.assert_allclose(U.T @ U, np.eye(k), atol=1e-10)
    np.testing.assert_allclose(Vh @ Vh.T, np.eye(k), atol=1e-10)


def test_lowrank_svd_keeps_float32():
    rng = np.random.default_rng(0)
    B = rng.standard_normal((12, 3)).astype(np.float32)
    A = rng.standard_normal((3, 7)).astype(np.float32)
    U, S, Vh = R.lowrank_singular_values(B, A, 2.0)
    assert U.dtype == S.dtype == Vh.dtype == np.float32
    np.testing.assert_allclose(S, np.linalg.svd(2.0 * B.astype(np.float64) @ A, compute_uv=False)[:3],
                               rtol=1e-4)


def fake_layer(rng, d_out, d_in, r, slices=None, alpha=5.0):
    """A duck-typed LoRA layer, as minilora.lora.LoRALinear exposes it (A, B, scaling, slices)."""
    ns = types.SimpleNamespace
    groups = slices if slices is not None else [(0, d_out)]
    width = sum(b - a for a, b in groups)
    return ns(
        lora_A=ns(weight=ns(data=rng.standard_normal((len(groups) * r, d_in)))),
        lora_B=ns(weight=ns(data=rng.standard_normal((width, r)))),
        base=ns(weight=ns(data=rng.standard_normal((d_out, d_in)))),
        scaling=alpha / r, r=r, slices=slices,
    )


def test_delta_weight_plain_and_grouped():
    rng = np.random.default_rng(3)
    layer = fake_layer(rng, 6, 5, 2, slices=[(0, 6)])
    A, B, s = layer.lora_A.weight.data, layer.lora_B.weight.data, layer.scaling
    np.testing.assert_allclose(R.delta_weight(layer), s * B @ A)
    # fused q,k,v with LoRA on q and v only (loralib MergedLinear enable_lora=[True, False, True])
    layer = fake_layer(rng, 12, 5, 2, slices=[(0, 4), (8, 12)])
    A, B, s = layer.lora_A.weight.data, layer.lora_B.weight.data, layer.scaling
    groups = R.lora_factors(layer)
    assert [g[0] for g in groups] == [slice(0, 4), slice(8, 12)]
    assert groups[1][1].shape == (2, 5) and groups[1][2].shape == (4, 2)
    dW = R.delta_weight(layer)
    expected = np.zeros((12, 5))
    expected[0:4] = s * B[0:4] @ A[0:2]
    expected[8:12] = s * B[4:8] @ A[2:4]
    np.testing.assert_allclose(dW, expected)
    U, S, Vh = R.lora_svd(layer)
    np.testing.assert_allclose(S, np.linalg.svd(dW, compute_uv=False)[:4], rtol=1e-10)
    np.testing.assert_allclose((U * S) @ Vh, dW, atol=1e-10)


def test_lora_factors_errors():
    rng = np.random.default_rng(0)
    layer = fake_layer(rng, 6, 5, 2)
    layer.lora_B.weight.data = np.zeros((5, 2))
    with pytest.raises(ValueError, match=r"lora_B.weight has shape \(5, 2\)"):
        R.delta_weight(layer)
    with pytest.raises(TypeError, match="has no 'lora_A.weight.data'"):
        R.delta_weight(object())


# ---------------------------------------------------------------------------------------------
# rank measures
# ---------------------------------------------------------------------------------------------

@given(st.integers(1, 12), st.integers(0, 5), st.floats(1e-3, 1e3))
def test_effective_and_stable_rank_of_equal_values(k, zeros, c):
    s = np.concatenate([np.full(k, c), np.zeros(zeros)])
    assert R.effective_rank(s) == pytest.approx(k, rel=1e-12)
    assert R.stable_rank(s) == pytest.approx(k, rel=1e-12)
    assert R.energy_rank(s, 1.0) == k
    assert R.effective_rank(c * np.eye(k)) == pytest.approx(k, rel=1e-12)


@given(st.integers(1, 8), st.integers(1, 8), st.data())
def test_rank_one_matrix(m, n, data):
    u = data.draw(arrays(np.float64, m, elements=ELEMENTS, fill=st.nothing()))
    v = data.draw(arrays(np.float64, n, elements=ELEMENTS, fill=st.nothing()))
    assume(np.linalg.norm(u) > 1e-3 and np.linalg.norm(v) > 1e-3)
    M = np.outer(u, v)
    assert R.effective_rank(M) == pytest.approx(1.0, abs=1e-12)
    assert R.stable_rank(M) == pytest.approx(1.0, abs=1e-12)
    assert R.energy_rank(M, 0.999) == 1


@given(matrices())
def test_rank_bounds(M):
    assume(np.any(M))
    rank = np.linalg.matrix_rank(M)
    assert 1 - 1e-12 <= R.stable_rank(M) <= rank + 1e-9
    assert 1 - 1e-12 <= R.effective_rank(M) <= rank + 1e-9
    p = R.normalized_spectrum(M)
    assert p.sum() == pytest.approx(1.0) and np.all(np.diff(p) <= 0)


def test_zero_spectrum_conventions():
    Z = np.zeros((4, 3))
    assert R.effective_rank(Z) == 0.0
    assert R.stable_rank(Z) == 0.0
    assert R.energy_rank(Z) == 0
    assert R.energy(Z, 2) == 1.0
    np.testing.assert_array_equal(R.normalized_spectrum(Z), 0.0)


@given(matrices(), st.floats(0.01, 1.0), st.floats(0.01, 1.0))
def test_energy_rank_monotone_in_threshold(M, t1, t2):
    assume(np.any(M))
    lo, hi = sorted((t1, t2))
    k_lo, k_hi = R.energy_rank(M, lo), R.energy_rank(M, hi)
    assert 1 <= k_lo <= k_hi <= min(M.shape)
    # k is the smallest rank that reaches the threshold
    assert R.energy(M, k_hi) >= hi - 1e-12
    if k_hi > 1:
        assert R.energy(M, k_hi - 1) < hi


# ---------------------------------------------------------------------------------------------
# truncation (Eckart-Young-Mirsky)
# ---------------------------------------------------------------------------------------------

@given(matrices(), st.data())
def test_truncation_matches_eckart_young(M, data):
    q = min(M.shape)
    k = data.draw(st.integers(1, q))
    s = np.linalg.svd(M, compute_uv=False)
    Mk = R.truncate(M, k)
    scale = max(s[0], 1.0)
    assert np.linalg.matrix_rank(Mk) <= k
    tail = np.sqrt(np.sum(s[k:] ** 2))
    assert R.truncation_error(s, k) == pytest.approx(tail, abs=1e-12 * scale)
    assert R.truncation_error(M, k) == pytest.approx(tail, abs=1e-12 * scale)
    assert np.linalg.norm(M - Mk) == pytest.approx(tail, abs=1e-10 * scale)
    spectral = np.linalg.norm(M - Mk, 2)
    assert spectral == pytest.approx(s[k] if k < q else 0.0, abs=1e-10 * scale)
    np.testing.assert_allclose(R.truncate(M, q), M, atol=1e-10 * scale)


# ---------------------------------------------------------------------------------------------
# amplification factor (LoRA §7.3, Table 7)
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", [0, 1, 2])
def test_amplification_top_vs_bottom_directions(seed):
    rng = np.random.default_rng(seed)
    d_out, d_in, r = 24, 16, 3
    U = rng_orthogonal(rng, d_out)
    V = rng_orthogonal(rng, d_in)
    sw = np.sort(rng.uniform(0.1, 10.0, d_in))[::-1]
    W = U[:, :d_in] @ np.diag(sw) @ V.T                            # (d_out, d_in)
    dW_top = 0.5 * U[:, :r] @ V[:, :r].T                            # along W's top directions
    dW_bottom = 0.5 * U[:, d_in - r:d_in] @ V[:, d_in - r:].T       # along W's weakest directions
    top = R.amplification_factor(dW_top, W, r, seed=seed)
    bottom = R.amplification_factor(dW_bottom, W, r, seed=seed)
    assert top["amplification"] < bottom["amplification"]
    assert top["proj_norm"] == pytest.approx(np.sqrt(np.sum(sw[:r] ** 2)))
    assert top["proj_norm_top_w"] == pytest.approx(np.sqrt(np.sum(sw[:r] ** 2)))
    assert bottom["proj_norm"] == pytest.approx(np.sqrt(np.sum(sw[-r:] ** 2)))
    assert top["w_norm"] == pytest.approx(np.linalg.norm(W))
    assert top["delta_norm"] == pytest.approx(0.5 * np.sqrt(r))
    assert 0 < top["proj_norm_random"] <= top["proj_norm_top_w"] + 1e-12


def test_amplification_table7_ordering_for_a_random_lowrank_update():
    # LoRA §7.3, Table 7: ||Uᵀ W Vᵀ||_F is smallest for a random subspace, then ΔW's own, then W's top
    # directions; here the ordering holds by construction
    rng = np.random.default_rng(7)
    W = rng.standard_normal((32, 32))
    U, s, Vh = np.linalg.svd(W)
    dW = 0.1 * U[:, 10:14] @ Vh[10:14]            # middle directions of W
    out = R.amplification_factor(dW, W, 4)
    assert out["proj_norm_random"] < out["proj_norm"] < out["proj_norm_top_w"]


# ---------------------------------------------------------------------------------------------
# validation and error messages
# ---------------------------------------------------------------------------------------------

def test_error_messages():
    A = np.ones((3, 5))
    with pytest.raises(ValueError, match=r"A1 \(3, 5\) and A2 \(3, 6\)"):
        R.subspace_similarity(A, np.ones((3, 6)), 1, 1)
    with pytest.raises(ValueError, match=r"i=4 is out of range \[1, 3\]"):
        R.subspace_similarity(A, A, 4, 1)
    with pytest.raises(ValueError, match=r"j=0 is out of range"):
        R.subspace_similarity(A, A, 1, 0)
    with pytest.raises(TypeError, match="i must be an integer"):
        R.subspace_similarity(A, A, 1.5, 1)
    with pytest.raises(ValueError, match="all zeros"):
        R.subspace_similarity(np.zeros((3, 5)), A, 1, 1)
    with pytest.raises(ValueError, match="side must be"):
        R.subspace_similarity(A, A, 1, 1, side="top")
    with pytest.raises(ValueError, match=r"must be 2-D, got shape \(5,\)"):
        R.truncate(np.ones(5), 1)
    with pytest.raises(ValueError, match=r"must be 1-D or 2-D, got shape \(2, 2, 2\)"):
        R.effective_rank(np.ones((2, 2, 2)))
    with pytest.raises(ValueError, match="NaN or inf"):
        R.singular_values(np.array([[1.0, np.nan]]))
    with pytest.raises(ValueError, match="NaN or inf"):
        R.stable_rank(np.array([1.0, np.inf]))
    with pytest.raises(ValueError, match="non-negative"):
        R.effective_rank(np.array([1.0, -0.5]))
    with pytest.raises(TypeError, match="real numeric"):
        R.singular_values([["a", "b"]])
    with pytest.raises(TypeError, match="real numeric"):
        R.energy(np.array([True, False]), 1)
    with pytest.raises(TypeError, match="real numeric"):
        R.singular_values(np.eye(2) * 1j)
    with pytest.raises(ValueError, match=r"k=3 is out of range \[1, 2\]"):
        R.truncate(np.eye(2), 3)
    with pytest.raises(ValueError, match=r"k=0 is out of range"):
        R.truncation_error(np.array([2.0, 1.0]), 0)
    with pytest.raises(ValueError, match=r"threshold must be in \(0, 1\]"):
        R.energy_rank(np.array([2.0, 1.0]), 1.5)
    with pytest.raises(ValueError, match=r"B \(4, 2\) and A \(3, 5\)"):
        R.lowrank_singular_values(np.ones((4, 2)), np.ones((3, 5)))
    with pytest.raises(TypeError, match="same dtype"):
        R.lowrank_singular_values(np.ones((4, 2), np.float32), np.ones((2, 5)))
    with pytest.raises(ValueError, match=r"delta_w \(4, 5\) and w \(5, 4\)"):
        R.amplification_factor(np.ones((4, 5)), np.ones((5, 4)), 1)
    with pytest.raises(ValueError, match="all zeros"):
        R.amplification_factor(np.zeros((4, 5)), np.ones((4, 5)), 1)
    with pytest.raises(ValueError, match=r"r=5 is out of range \[1, 4\]"):
        R.amplification_factor(np.ones((4, 5)), np.ones((4, 5)), 5)
    with pytest.raises(ValueError, match=r"i=65 is out of range \[1, 64\]"):
        R.random_subspace_baseline(65, 1, 64)
    with pytest.raises(ValueError, match="empty"):
        R.singular_values(np.ones((0, 3)))


# ---------------------------------------------------------------------------------------------
# plots
# ---------------------------------------------------------------------------------------------

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _is_png(path):
    with open(path, "rb") as f:
        head = f.read(8)
    return os.path.getsize(path) > 1000 and head == PNG_MAGIC


def test_plots_write_pngs(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    from minilora import plots

    rng = np.random.default_rng(0)
    B, A = rng.standard_normal((20, 4)), rng.standard_normal((4, 16))
    spectra = {"ΔW r=4": B @ A, "random": rng.standard_normal((20, 16)), "zeros": np.zeros(5)}
    A8, A64 = rng.standard_normal((8, 48)), rng.standard_normal((16, 48))
    grid = R.subspace_similarity_grid(A8, A64)
    out = [
        plots.plot_spectrum(spectra, tmp_path / "spectrum.png"),
        plots.plot_spectrum(spectra, tmp_path / "spectrum_lin.png", log=False),
        plots.plot_cumulative_energy(spectra, tmp_path / "energy.png"),
        plots.plot_subspace_heatmap(grid, tmp_path / "phi.png", "φ(A8, A16)"),
        plots.plot_subspace_heatmap(grid, tmp_path / "phi2.png", "φ(A8, A16)",
                                    baseline=R.random_subspace_baseline_grid(8, 16, 48)),
        plots.plot_loss_vs_rank([1, 2, 4, 8], [2.1, 2.0, 1.95, 1.94], tmp_path / "rank.png",
                                full_ft_loss=1.9),
        plots.plot_loss_curves({"r=4": ([0, 10, 20], [3.0, 2.5, 2.2]),
                                "r=8": (np.arange(5), np.linspace(3, 2, 5))},
                               tmp_path / "sub" / "curves.png"),
    ]
    for p in out:
        assert isinstance(p, str) and _is_png(p), p
    leftovers = [f for f in os.listdir(tmp_path) if f.startswith(".tmp-")]
    assert leftovers == []
    with pytest.raises(ValueError, match="non-empty dict"):
        plots.plot_spectrum({}, tmp_path / "x.png")
    with pytest.raises(ValueError, match=r"ranks \(3,\) and losses \(2,\)"):
        plots.plot_loss_vs_rank([1, 2, 4], [1.0, 2.0], tmp_path / "x.png")
    with pytest.raises(ValueError, match="does not broadcast"):
        plots.plot_subspace_heatmap(grid, tmp_path / "x.png", "t", baseline=np.ones((3, 3)))
    assert not (tmp_path / "x.png").exists()
    assert [f for f in os.listdir(tmp_path) if f.startswith(".tmp-")] == []


def test_importing_rank_and_plots_does_not_import_matplotlib():
    code = ("import sys, minilora.rank, minilora.plots; "
            "assert 'matplotlib' not in sys.modules, 'matplotlib imported at module import'")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
