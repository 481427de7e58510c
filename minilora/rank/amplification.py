"""The amplification factor ‖ΔW‖_F / ‖Uᵀ W Vᵀ‖_F (LoRA §7.3)."""
from __future__ import annotations

import numpy as np

from ._checks import _as_matrix, _check_int
from .subspace import _random_orthonormal

# ----------------------------------------------------------------------------------------------
# amplification factor (LoRA §7.3)
# ----------------------------------------------------------------------------------------------

def amplification_factor(delta_w, w, r, seed=0) -> dict[str, float]:
    """How much ΔW amplifies directions of W: ||ΔW||_F / ||U^T W V||_F (LoRA §7.3, Table 7).

    U (d_out, r) and Vh (r, d_in) are the top-r singular vectors of ΔW; proj = U^T W Vh^T (r, r)
    is W projected onto ΔW's subspaces. A large factor means ΔW points along directions that W
    barely uses (the paper: about 21.5 for r = 4, about 2 for r = 64, GPT-3 layer 48).
    Baselines (Table 7's other columns): the same projection onto W's own top-r singular
    subspaces (= sqrt of the sum of W's top r σ²) and onto a random orthonormal pair (seeded).

    Args: ``delta_w`` (d_out, d_in), use the effective update scaling·B·A (:func:`delta_weight`);
    ``w`` (d_out, d_in), the frozen weight; ``r`` int in 1..min(d_out, d_in), usually the LoRA
    rank; ``seed`` for the random baseline.
    Returns: dict of Python floats: ``amplification`` (inf if proj_norm is 0), ``delta_norm``
    ||ΔW||_F, ``proj_norm`` ||U^T W Vh^T||_F, ``proj_norm_top_w``, ``proj_norm_random``,
    ``w_norm`` ||W||_F. Computed in float64.
    Raises: TypeError (non-numeric, non-integer r); ValueError (not 2-D, NaN/inf, shapes differ:
    both named; r out of range; delta_w all zeros, whose singular vectors are undefined).
    """
    fn = "amplification_factor"
    dW = _as_matrix(delta_w, "delta_w", fn).astype(np.float64, copy=False)
    W = _as_matrix(w, "w", fn).astype(np.float64, copy=False)
    if dW.shape != W.shape:
        raise ValueError(
            f"{fn}: delta_w and w must have the same shape (d_out, d_in), got delta_w {dW.shape} "
            f"and w {W.shape}"
        )
    r = _check_int(r, "r", fn, 1, min(W.shape), f" for matrices of shape {W.shape}")
    if not np.any(dW):
        raise ValueError(f"{fn}: delta_w {dW.shape} is all zeros (LoRA at init, B = 0?)")
    U, _, Vh = np.linalg.svd(dW, full_matrices=False)
    proj = U[:, :r].T @ W @ Vh[:r].T                          # (r, d_out)(d_out, d_in)(d_in, r)
    Uw, Sw, Vhw = np.linalg.svd(W, full_matrices=False)
    proj_top = Uw[:, :r].T @ W @ Vhw[:r].T                    # (r, r), = diag(Sw[:r])
    rng = np.random.default_rng(seed)
    Q1 = _random_orthonormal(rng, W.shape[0], r)              # (d_out, r)
    Q2 = _random_orthonormal(rng, W.shape[1], r)              # (d_in, r)
    proj_rand = Q1.T @ W @ Q2                                 # (r, r)
    delta_norm = float(np.linalg.norm(dW))
    proj_norm = float(np.linalg.norm(proj))
    return {
        "amplification": delta_norm / proj_norm if proj_norm > 0 else float("inf"),
        "delta_norm": delta_norm,
        "proj_norm": proj_norm,
        "proj_norm_top_w": float(np.linalg.norm(proj_top)),
        "proj_norm_random": float(np.linalg.norm(proj_rand)),
        "w_norm": float(np.linalg.norm(W)),
    }
