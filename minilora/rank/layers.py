"""A LoRA layer's factors and its update ΔW = scaling·B·A, read through `minilora.lora.functional`."""
from __future__ import annotations

import numbers

import numpy as np

from ..lora.functional import lora_groups, lora_merge_delta
from ._checks import _as_matrix, _check_real
from .spectrum import lowrank_singular_values

# ----------------------------------------------------------------------------------------------
# LoRA layers -> factors and ΔW
# ----------------------------------------------------------------------------------------------

def _data(obj, path: str, fn: str):
    cur = obj
    for attr in path.split("."):
        if not hasattr(cur, attr):
            raise TypeError(
                f"{fn}: expected a LoRA layer with .lora_A.weight.data, .lora_B.weight.data, "
                f".scaling, .r, .slices and .base.weight.data; {type(obj).__name__} has no "
                f"'{path}'"
            )
        cur = getattr(cur, attr)
    return cur


def lora_factors(layer) -> list[tuple[slice, np.ndarray, np.ndarray, float]]:
    """Split a LoRA layer into its groups: ``[(rows, A_i, B_i, scaling), ...]``.

    Duck-typed: ``layer`` needs ``.lora_A.weight.data`` (g*r, d_in), ``.lora_B.weight.data``
    (sum of the slice widths, r), ``.scaling`` (float), ``.r`` (int), ``.slices`` (a list of g
    ``(start, stop)`` output-row ranges; ``None`` is read as ``[(0, d_out)]``) and
    ``.base.weight.data`` (d_out, d_in). Group i uses A rows ``[i*r:(i+1)*r]`` and B rows
    ``[offset_i : offset_i + (stop_i - start_i)]`` where offset_i is the sum of the earlier widths
    (the grouped LoRA of a fused q,k,v projection, as loralib's ``MergedLinear``).

    Returns: a list of g tuples ``(slice(start, stop), A_i (r, d_in), B_i (stop-start, r),
    scaling)``; A_i and B_i are views of the layer's arrays (do not write to them), in their dtype;
    for an AdaLoRA layer (a ``.lora_E.weight`` (g*r, 1) of singular values λ) A_i is diag(λ_i) Q_i, a copy.
    The update of group i is ``scaling * B_i @ A_i`` placed in rows ``start:stop`` of ΔW
    (LoRA §4.1, Eq. 3).

    Raises: TypeError if an attribute is missing or an array is not numeric; ValueError if the
    shapes do not fit together (the message names them) or a slice is outside 0..d_out.
    """
    A, B, scaling, r, slices, _ = _layer_arrays(layer, "lora_factors")
    return [(rows, A[a_rows], B[b_rows], scaling)               # A_i (r, d_in), B_i (w, r)
            for _, a_rows, b_rows, rows in lora_groups(slices, r)]


def _layer_arrays(layer, fn: str):
    """(A (g*r, d_in), B (W, r) in one float dtype, scaling, r, slices, d_out), checked as documented
    in :func:`lora_factors`."""
    variant = getattr(layer, "variant", None)
    if not getattr(variant, "delta_is_BA", True):       # DoRA, PiSSA/OLoRA: ΔW is not s·B·A of the factors
        raise ValueError(f"{fn}: the layer's LoRA variant is {variant.name!r}, whose ΔW is not s·B·A of its "
                         "factors; take layer.delta_weight() (its ΔW relative to W0) and rank.singular_values of it")
    A = _as_matrix(_data(layer, "lora_A.weight.data", fn), "lora_A.weight", fn)  # (g*r, d_in)
    B = _as_matrix(_data(layer, "lora_B.weight.data", fn), "lora_B.weight", fn)  # (sum w, r)
    W0 = np.asarray(_data(layer, "base.weight.data", fn))  # (d_out, d_in)
    scaling = _check_real(_data(layer, "scaling", fn), "layer.scaling", fn)
    r = _data(layer, "r", fn)
    if isinstance(r, bool) or not isinstance(r, numbers.Integral) or r < 1:
        raise ValueError(f"{fn}: layer.r must be a positive integer, got {r!r}")
    r = int(r)
    if W0.ndim != 2:
        raise ValueError(f"{fn}: base.weight must be 2-D (d_out, d_in), got shape {W0.shape}")
    d_out, d_in = W0.shape
    slices = getattr(layer, "slices", None)
    slices = [(0, d_out)] if slices is None else [(int(a), int(b)) for a, b in slices]
    g = len(slices)
    if A.shape != (g * r, d_in):
        raise ValueError(
            f"{fn}: lora_A.weight has shape {A.shape}, expected (g*r, d_in) = ({g}*{r}, {d_in}) "
            f"for {g} group(s), r={r} and base.weight {W0.shape}"
        )
    for a, b in slices:
        if not 0 <= a < b <= d_out:
            raise ValueError(f"{fn}: slice ({a}, {b}) is not inside the {d_out} output rows")
    width = sum(b - a for a, b in slices)
    if B.shape != (width, r):
        raise ValueError(
            f"{fn}: lora_B.weight has shape {B.shape}, expected (sum of slice widths, r) = "
            f"({width}, {r}) for slices {slices}"
        )
    E = getattr(getattr(layer, "lora_E", None), "weight", None)
    if E is not None:  # AdaLoRA (lora/adalora.py): ΔW = s · P diag(λ) Q, so Λ folds into Q's rows
        A = A * _as_matrix(E.data, "lora_E.weight", fn).reshape(-1, 1)
    dtype = np.result_type(A, B)
    return A.astype(dtype, copy=False), B.astype(dtype, copy=False), scaling, r, slices, d_out


def delta_weight(layer) -> np.ndarray:
    """The effective update ΔW = scaling · B_i @ A_i of a LoRA layer, each group in its rows.

    Args: ``layer``, duck-typed as in :func:`lora_factors`.
    Returns: ndarray (d_out, d_in) in the dtype of the LoRA weights; rows not covered by any slice
    are zero. Adding it to W0 is the merge of LoRA §4.1 (W = W0 + ΔW).
    Raises: as :func:`lora_factors`.
    """
    A, B, scaling, _, slices, d_out = _layer_arrays(layer, "delta_weight")
    return lora_merge_delta(A, B, scaling, slices, d_out)       # (d_out, d_in)


def lora_svd(layer) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Thin SVD of a LoRA layer's ΔW from its factors, without forming ΔW.

    A grouped layer is one low-rank product: ΔW = scaling · B_big @ A with A (g*r, d_in) as stored
    and B_big (d_out, g*r) holding B_i in rows ``start_i:stop_i`` and columns ``i*r:(i+1)*r``.

    Returns: ``(U (d_out, k), S (k,), Vh (k, d_in))`` with k = min(g*r, d_out, d_in), as
    :func:`lowrank_singular_values`. Raises: as :func:`lora_factors`.
    """
    A, B, scaling, r, slices, d_out = _layer_arrays(layer, "lora_svd")
    B_big = np.zeros((d_out, A.shape[0]), dtype=A.dtype)                     # (d_out, g*r)
    for _, a_rows, b_rows, rows in lora_groups(slices, r):
        B_big[rows, a_rows] = B[b_rows]                                       # (w, r)
    return lowrank_singular_values(B_big, A, scaling=scaling)


