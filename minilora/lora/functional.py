r"""The hand-derived LoRA pass on plain ndarrays: forward, backward, and a dense reference.

This file is the numerical heart of minilora's LoRA. There is no autograd here: `lora_forward`
returns the output and a cache, `lora_backward` turns an upstream gradient into the gradients of the
input and of the two LoRA factors, with formulas derived by hand below. The autograd `Function` in
`lora/layer.py` wraps exactly these two functions. `lora_forward_reference` forms the update
ΔW = s·B·A explicitly; it is slow on purpose and serves as the test oracle and for the lessons.

It follows LoRA (Hu et al. 2021, arXiv:2106.09685, §4.1, eq. 3: h = W0 x + ΔW x = W0 x + B A x, with
the output scaled by α/r) in the row-vector layout of PyTorch's nn.Linear and of loralib
(microsoft/LoRA, `loralib/layers.py`: `Linear.forward` adds
`(lora_dropout(x) @ lora_A.T @ lora_B.T) * scaling`; `MergedLinear` with `enable_lora` adapts only
some output slices of a fused projection, such as GPT-2's c_attn with its q, k and v slices).

Shape letters
-------------
    N      rows: every leading dimension of x flattened (N = B·T for a (B, T, d_in) input)
    d_in   input features;  d_out  output features
    r      rank of each group;  g  number of groups (1, or len(slices) <= 3 for a fused c_attn)
    w_i    width of output slice i (stop_i - start_i); W = Σ w_i = rows of B
    s      the scaling: lora_alpha / r (LoRA, loralib) or lora_alpha / sqrt(r) (rsLoRA), computed
           by `lora_scaling` (the one place that rule is written); the pass only multiplies by it.

Forward
-------
    X  = x.reshape(N, d_in)                                             (N, d_in)
    M  = dropout mask (0/1), k = keep_prob;  X̃ = X ⊙ M / k              (N, d_in)   (X̃ = X if no mask)
    U  = X̃ Aᵀ,  U = [U_1 | … | U_g],  U_i = X̃ A_iᵀ                      (N, g·r)
    Y  = X W0ᵀ + b,  then for each group i:  Y[:, S_i] += s · U_i B_iᵀ   (N, d_out)

with A_i = A[i·r:(i+1)·r] (r, d_in), B_i = B[off_i:off_i+w_i] (w_i, r), S_i = start_i:stop_i.
Dropout acts only on the LoRA branch: the frozen path sees the clean X (as in loralib).
With one group covering all of d_out this is  Y = X W0ᵀ + b + s · (X̃ Aᵀ) Bᵀ.

Backward (the derivation)
-------------------------
Let G = ∂L/∂Y (N, d_out) and G_i = G[:, S_i] (N, w_i). Write one group; the others add up.
The LoRA term of one output entry is  Y_nj = s · Σ_k U_nk B_jk  with  U_nk = Σ_m X̃_nm A_km.
The chain rule, entry by entry, then in matrix form:

  ∂L/∂B_jk = Σ_n G_nj · s · U_nk                     →  dB_i = s · G_iᵀ U_i           (w_i, r)

  ∂L/∂U_nk = Σ_j G_nj · s · B_jk                     →  ∂L/∂U_i = s · G_i B_i         (N, r)
     we keep the unscaled  GU_i = G_i B_i  (N, r), concatenated to GU (N, g·r), and put s back:

  ∂L/∂A_km = Σ_n ∂L/∂U_nk · X̃_nm                     →  dA = s · GUᵀ X̃                (g·r, d_in)
  ∂L/∂X̃_nm = Σ_k ∂L/∂U_nk · A_km                     →  ∂L/∂X̃ = s · GU A              (N, d_in)

  X̃_nm = X_nm · M_nm / k, so ∂X̃_nm/∂X_nm = M_nm / k (and 0 for every other entry):
  ∂L/∂X = G W0  +  s · (GU A) ⊙ M / k                                                (N, d_in)
          └ frozen path ┘  └ LoRA path, through the dropout ┘

  ∂L/∂b = Σ_n G_n                                                                    (d_out,)
  ∂L/∂W0 = Gᵀ X                                                      NEVER computed: W0 is frozen.

Sums over the N rows are what makes batch dimensions "just work": every leading dimension of x
contributes rows, and the GEMMs above sum over them.

Why dA = 0 exactly when B = 0 (the standard init). GU = G B = 0, so dA = s · GUᵀ X̃ is a sum of
products with exact zeros, which is exactly 0.0 in floating point too (for finite G and X̃). dB =
s · Gᵀ U is not zero, because U = X̃ Aᵀ with a random A is not. So at step 0 only B moves; A gets
its first gradient at step 1. (If A and B were both zero, neither would ever move: a saddle point.
PiSSA §1 makes the same observation.) The LoRA part of dx is zero too: dx = G W0.

Why the dropout mask appears in dx. The LoRA branch reads X̃, not X. Each X̃_nm depends only on
X_nm, with slope M_nm / k: an input entry that was dropped in the forward pass had no effect on
the LoRA branch, so it receives no LoRA gradient; a kept one receives it scaled by 1/k, the same
factor it was scaled by on the way in. It still receives the frozen-path gradient G W0, because
the frozen path saw the clean X. The mask must be the same array in forward and backward, which is
why the cache keeps it.

The FLOPs saved. Per layer and per step, full fine-tuning does three GEMMs of 2·N·d_in·d_out FLOPs
each: the forward X W0ᵀ, the input gradient G W0 and the weight gradient Gᵀ X. LoRA keeps the first
two (the input gradient must flow to earlier layers, whose adapters train too) and skips the third:

    forward   X W0ᵀ: 2·N·d_in·d_out    U: 2·N·d_in·g·r    U_i B_iᵀ: 2·N·W·r
    backward  G W0 : 2·N·d_in·d_out    GU: 2·N·W·r   dB: 2·N·W·r   dA: 2·N·g·r·d_in   GU A: 2·N·g·r·d_in
    skipped   Gᵀ X : 2·N·d_in·d_out

so LoRA costs about 4·N·d_in·d_out + 6·N·r·(d_in + d_out) FLOPs against 6·N·d_in·d_out: about a
third less work when r ≪ d (plus no gradient and no Adam moments for W0: LoRA §4.2).

Conventions
-----------
* All float arrays share one dtype (float32 or float64); it is kept, never upcast. A mix raises
  TypeError naming the arrays. The mask may be bool, integer or of that same float dtype.
* `scaling` and `keep_prob` are turned into Python floats, so they never change the dtype.
* Shapes are checked up front; a ValueError names the argument and both shapes.
* When `dropout_mask` is None there is no dropout: X̃ is X itself (no copy) and `keep_prob` is
  ignored (eval mode may keep passing the configured value).
"""
from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from numbers import Real

import numpy as np

__all__ = [
    "lora_scaling",
    "lora_groups",
    "LoraCache",
    "lora_forward",
    "lora_backward",
    "lora_forward_reference",
    "lora_merge_delta",
    "as_frozen_weight",
]

_FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


@dataclass(frozen=True)
class LoraCache:
    """What `lora_backward` needs from `lora_forward` (treat it as opaque outside this module).

    x_tilde is the LoRA branch's input X̃ (the very array X, reshaped, when there is no mask), mask
    the 0/1 mask cast to the float dtype (or None). X itself is not kept: the gradient of W0, the
    only formula that needs it, is never computed.
    """

    x_tilde: np.ndarray            # (N, d_in)
    mask: np.ndarray | None        # (N, d_in) or None
    u: np.ndarray                  # (N, g*r)   U = X̃ Aᵀ, unscaled
    W0: np.ndarray                 # (d_out, d_in)
    A: np.ndarray                  # (g*r, d_in)
    B: np.ndarray                  # (W, r)
    scaling: float
    keep_prob: float
    slices: tuple[tuple[int, int], ...] | None
    lead_shape: tuple[int, ...]    # x.shape[:-1]
    has_bias: bool

    @property
    def rank(self) -> int:
        return self.B.shape[1]


# --------------------------------------------------------------------------- the two rules every LoRA tool shares

def lora_scaling(lora_alpha: float, r: int, use_rslora: bool = False) -> float:
    """The factor s of the LoRA branch: lora_alpha / r, or lora_alpha / sqrt(r) with use_rslora.

    LoRA (Hu et al. 2021, §4.1): "we then scale ΔW x by α/r", so that changing r needs little
    retuning of α. rsLoRA (Kalajdzievski 2023, arXiv:2312.03732, Theorem 3.2): α/√r keeps the
    update's magnitude stable as r grows. Returns a Python float. The arguments are checked by
    `LoraConfig` (r int >= 1, lora_alpha finite > 0); here they are only used.
    """
    return float(lora_alpha) / (math.sqrt(r) if use_rslora else r)


def lora_groups(slices: Sequence[tuple[int, int]] | None, r: int,
                d_out: int | None = None) -> Iterator[tuple[int, slice, slice, slice]]:
    """The layout of a grouped (fused) LoRA: yield (i, A rows, B rows, output rows) per group.

    Group i uses A[i*r:(i+1)*r] (r, d_in) and B[off_i:off_i+w_i] (w_i, r), off_i the sum of the
    earlier widths w = stop - start, and writes output rows start_i:stop_i (loralib's MergedLinear;
    on GPT-2's c_attn with enable_lora [True, False, True] the groups are q and v). slices None
    means one group over all d_out rows (d_out then required). The items are `slice` objects.
    """
    if slices is None:
        slices = ((0, d_out),)
    off = 0
    for i, (s0, s1) in enumerate(slices):
        w = s1 - s0
        yield i, slice(i * r, (i + 1) * r), slice(off, off + w), slice(s0, s1)
        off += w


# --------------------------------------------------------------------------- validation helpers

def _common_float_dtype(op: str, **arrays: np.ndarray | None) -> np.dtype:
    """The one float dtype shared by `arrays` (None entries skipped), or TypeError naming them."""
    named = {k: v for k, v in arrays.items() if v is not None}
    for name, a in named.items():
        if a.dtype not in _FLOAT_DTYPES:
            raise TypeError(f"{op}: {name} has dtype {a.dtype}; expected float32 or float64")
    dtypes = {a.dtype for a in named.values()}
    if len(dtypes) > 1:
        listing = ", ".join(f"{k} {a.dtype}" for k, a in named.items())
        raise TypeError(f"{op}: all float arrays must share one dtype, got {listing}")
    return dtypes.pop()


def _check_slices(op: str, slices, d_out: int) -> tuple[tuple[int, int], ...] | None:
    """Normalise `slices` to a tuple of (start, stop) int pairs inside [0, d_out), non-overlapping."""
    if slices is None:
        return None
    try:
        pairs = tuple((int(s0), int(s1)) for s0, s1 in slices)
    except (TypeError, ValueError):
        raise ValueError(f"{op}: slices must be a list of (start, stop) pairs, got {slices!r}") from None
    if not pairs:
        raise ValueError(f"{op}: slices is empty; pass None for one group over all {d_out} rows")
    for s0, s1 in pairs:
        if not 0 <= s0 < s1 <= d_out:
            raise ValueError(
                f"{op}: slices entry ({s0}, {s1}) is not a non-empty range inside [0, d_out={d_out}) "
                f"(W0 has shape (d_out, d_in) with d_out={d_out})")
    ordered = sorted(pairs)
    for (a0, a1), (b0, b1) in zip(ordered, ordered[1:], strict=False):
        if b0 < a1:
            raise ValueError(f"{op}: slices ({a0}, {a1}) and ({b0}, {b1}) overlap")
    return pairs


def as_frozen_weight(W0):
    """W0 as an ndarray, or unchanged when it is a frozen-weight operator.

    An operator (e.g. `minilora.quant.NF4Weight`, a 4-bit weight) opts out of NumPy's ufuncs with
    `__array_ufunc__ = None`, so NumPy hands `X @ W0.T` and `G @ W0` to its own `__rmatmul__`; it has
    `shape`, `ndim` and `dtype`. The pass below only ever multiplies by W0, so it runs unchanged.
    """
    return W0 if getattr(type(W0), "__array_ufunc__", False) is None else np.asarray(W0)


def _validate(x, W0, b, A, B, scaling, dropout_mask, keep_prob, slices, op="lora_forward"):
    """Check every argument; return arrays and normalised constants. Raises TypeError/ValueError."""
    x, A, B = (np.asarray(a) for a in (x, A, B))
    W0 = as_frozen_weight(W0)
    b = None if b is None else np.asarray(b)
    mask = None if dropout_mask is None else np.asarray(dropout_mask)
    mask_float = mask if (mask is not None and mask.dtype.kind == "f") else None
    if mask is not None and mask.dtype.kind not in "biuf":
        raise TypeError(f"{op}: dropout_mask has dtype {mask.dtype}; expected bool, integer or float")
    dtype = _common_float_dtype(op, x=x, W0=W0, b=b, A=A, B=B, dropout_mask=mask_float)

    if not isinstance(scaling, Real) or not np.isfinite(float(scaling)):
        raise ValueError(f"{op}: scaling must be a finite real number, got {scaling!r}")
    if not isinstance(keep_prob, Real) or not 0.0 < float(keep_prob) <= 1.0:
        raise ValueError(f"{op}: keep_prob must be in (0, 1], got {keep_prob!r}")

    if x.ndim < 1:
        raise ValueError(f"{op}: x must have shape (..., d_in), got a 0-d array")
    if W0.ndim != 2:
        raise ValueError(f"{op}: W0 must have shape (d_out, d_in), got {W0.shape}")
    d_out, d_in = W0.shape
    if x.shape[-1] != d_in:
        raise ValueError(f"{op}: x has shape {x.shape} whose last dim {x.shape[-1]} != d_in = {d_in} "
                         f"of W0 {W0.shape}")
    if b is not None and b.shape != (d_out,):
        raise ValueError(f"{op}: b has shape {b.shape}, expected ({d_out},) for W0 {W0.shape}")
    if B.ndim != 2 or B.shape[1] < 1:
        raise ValueError(f"{op}: B must have shape (rows, r) with r >= 1, got {B.shape}")
    r = B.shape[1]
    slices = _check_slices(op, slices, d_out)
    g = 1 if slices is None else len(slices)
    width = d_out if slices is None else sum(s1 - s0 for s0, s1 in slices)
    if B.shape[0] != width:
        what = f"d_out of W0 {W0.shape}" if slices is None else f"the total slice width of {list(slices)}"
        raise ValueError(f"{op}: B has shape {B.shape} but its rows must equal {what} = {width}")
    if A.ndim != 2 or A.shape[1] != d_in:
        raise ValueError(f"{op}: A has shape {A.shape} but its columns must equal d_in = {d_in} "
                         f"of W0 {W0.shape}")
    if A.shape[0] != g * r:
        raise ValueError(f"{op}: A has shape {A.shape} but its rows must equal g*r = {g}*{r} = {g * r} "
                         f"(g groups, r = B.shape[1] of B {B.shape})")
    if mask is not None and mask.shape != x.shape:
        raise ValueError(f"{op}: dropout_mask has shape {mask.shape} but x has shape {x.shape}")
    return x, W0, b, A, B, float(scaling), mask, float(keep_prob), slices, dtype


# --------------------------------------------------------------------------- the pass

def lora_forward(x: np.ndarray, W0: np.ndarray, b: np.ndarray | None, A: np.ndarray, B: np.ndarray,
                 scaling: float, dropout_mask: np.ndarray | None = None, keep_prob: float = 1.0,
                 slices: Sequence[tuple[int, int]] | None = None) -> tuple[np.ndarray, LoraCache]:
    """y = x @ W0.T + b + scaling * (x̃ @ A_i.T) @ B_i.T on each output slice; returns (y, cache).

    x (..., d_in); W0 (d_out, d_in), frozen; b (d_out,) or None; A (g*r, d_in); B (W, r);
    dropout_mask None or 0/1 of x's shape, x̃ = x * mask / keep_prob; slices None (one group, all
    d_out rows) or g (start, stop) output ranges. y has shape (..., d_out) and x's dtype.
    See the module docstring for the derivation and `lora_backward` for the gradients.
    """
    x, W0, b, A, B, s, mask, keep_prob, slices, dtype = _validate(
        x, W0, b, A, B, scaling, dropout_mask, keep_prob, slices)
    lead_shape = x.shape[:-1]
    d_out, d_in = W0.shape
    r = B.shape[1]

    x2 = x.reshape(-1, d_in)                                   # (N, d_in)
    y2 = x2 @ W0.T                                             # (N, d_out)  frozen path, clean x
    if b is not None:
        y2 += b                                                # (N, d_out)
    if mask is None:
        m2, xt = None, x2                                      # X̃ is X: no copy
    else:
        m2 = mask.reshape(-1, d_in).astype(dtype, copy=False)  # (N, d_in)
        xt = x2 * m2                                           # (N, d_in)
        if keep_prob != 1.0:
            xt *= 1.0 / keep_prob                              # (N, d_in)  X̃ = X ⊙ M / k
    u = xt @ A.T                                               # (N, g*r)
    us = u * s                                                 # (N, g*r)   scale the thin matrix
    if slices is None:
        y2 += us @ B.T                                         # (N, d_out)
    else:
        for _, ar, br, oc in lora_groups(slices, r):
            y2[:, oc] += us[:, ar] @ B[br].T                   # (N, w_i)

    cache = LoraCache(x_tilde=xt, mask=m2, u=u, W0=W0, A=A, B=B, scaling=s, keep_prob=keep_prob,
                      slices=slices, lead_shape=lead_shape, has_bias=b is not None)
    return y2.reshape(*lead_shape, d_out), cache


def lora_backward(grad_out: np.ndarray, cache: LoraCache, need_dx: bool = True,
                  need_db: bool = False) -> dict[str, np.ndarray | None]:
    """Gradients of the LoRA pass; returns dict(dx, dA, dB, db) (dx/db None when not asked for).

    With G = grad_out reshaped to (N, d_out), G_i = G[:, start_i:stop_i], U_i and X̃ from the cache:

        GU_i = G_i @ B_i                         (N, r)     concatenated to GU (N, g*r)
        dB_i = s * G_i.T @ U_i                   (w_i, r)   concatenated to dB (W, r)
        dA   = s * GU.T @ X̃                      (g*r, d_in)
        dx   = G @ W0 + s * (GU @ A) ⊙ M / k     (N, d_in)  reshaped to x's shape
        db   = G.sum(0)                          (d_out,)   only if need_db

    dW0 = G.T @ X is NEVER computed: W0 is frozen, so one of the three d_in·d_out GEMMs of a linear
    layer's training step is skipped (the module docstring derives all of this and counts FLOPs).
    """
    op = "lora_backward"
    if not isinstance(cache, LoraCache):
        raise TypeError(f"{op}: cache must be the LoraCache returned by lora_forward, "
                        f"got {type(cache).__name__}")
    G = np.asarray(grad_out)
    c = cache
    d_out, d_in = c.W0.shape
    r = c.rank
    _common_float_dtype(op, grad_out=G, x=c.x_tilde)
    if G.shape != (*c.lead_shape, d_out):
        raise ValueError(f"{op}: grad_out has shape {G.shape}, expected {(*c.lead_shape, d_out)} "
                         f"(the shape of y)")
    if need_db and not c.has_bias:
        raise ValueError(f"{op}: need_db=True but lora_forward was called with b=None")
    s = c.scaling

    G2 = G.reshape(-1, d_out)                                  # (N, d_out)
    if c.slices is None:
        gu = G2 @ c.B                                          # (N, r)
        dB = G2.T @ c.u                                        # (d_out, r)
        dB *= s                                                # (d_out, r)
    else:
        N = G2.shape[0]
        gu = np.empty((N, c.A.shape[0]), dtype=G2.dtype)       # (N, g*r)
        dB = np.empty_like(c.B)                                # (W, r)
        for _, ar, br, oc in lora_groups(c.slices, r):
            Gi = G2[:, oc]                                     # (N, w_i)
            gu[:, ar] = Gi @ c.B[br]                           # (N, r)
            dB[br] = Gi.T @ c.u[:, ar]                         # (w_i, r)
        dB *= s                                                # (W, r)
    dA = gu.T @ c.x_tilde                                      # (g*r, d_in)
    dA *= s                                                    # (g*r, d_in)

    dx = None
    if need_dx:
        dx = G2 @ c.W0                                         # (N, d_in)   frozen path
        if c.mask is None:
            dxt = (gu * s) @ c.A                               # (N, d_in)   LoRA path
        else:
            dxt = (gu * (s / c.keep_prob)) @ c.A               # (N, d_in)
            dxt *= c.mask                                      # (N, d_in)   ⊙ M / k
        dx += dxt                                              # (N, d_in)
        dx = dx.reshape(*c.lead_shape, d_in)                   # (..., d_in)
    db = G2.sum(axis=0) if need_db else None                   # (d_out,)
    return {"dx": dx, "dA": dA, "dB": dB, "db": db}


# --------------------------------------------------------------------------- dense reference

def lora_merge_delta(A: np.ndarray, B: np.ndarray, scaling: float, slices: Sequence[tuple[int, int]] | None = None,
                     d_out: int | None = None) -> np.ndarray:
    """ΔW = scaling * B_i @ A_i placed on the rows of each slice, zero elsewhere: (d_out, d_in).

    With slices None this is scaling * B @ A and d_out defaults to B's rows. With slices, d_out
    (the base layer's output width) is required. merge: W0 + ΔW; unmerge: W - ΔW.
    """
    op = "lora_merge_delta"
    A, B = np.asarray(A), np.asarray(B)
    dtype = _common_float_dtype(op, A=A, B=B)
    if A.ndim != 2 or B.ndim != 2 or B.shape[1] < 1:
        raise ValueError(f"{op}: A must be (g*r, d_in) and B (rows, r), got A {A.shape}, B {B.shape}")
    r = B.shape[1]
    if slices is None:
        d_out = B.shape[0] if d_out is None else int(d_out)
        if B.shape[0] != d_out or A.shape[0] != r:
            raise ValueError(f"{op}: B has shape {B.shape} and A {A.shape}, expected B ({d_out}, r) "
                             f"and A (r, d_in) with r = {r}")
        return float(scaling) * (B @ A)                        # (d_out, d_in)
    if d_out is None:
        raise ValueError(f"{op}: d_out is required when slices are given")
    slices = _check_slices(op, slices, int(d_out))
    width = sum(s1 - s0 for s0, s1 in slices)
    if B.shape[0] != width or A.shape[0] != len(slices) * r:
        raise ValueError(f"{op}: B has shape {B.shape} and A {A.shape}, expected B ({width}, r) and "
                         f"A ({len(slices)}*r, d_in) for slices {list(slices)}")
    dW = np.zeros((int(d_out), A.shape[1]), dtype=dtype)       # (d_out, d_in)
    for _, ar, br, oc in lora_groups(slices, r):
        dW[oc] = B[br] @ A[ar]                                 # (w_i, d_in)
    dW *= float(scaling)
    return dW


def lora_forward_reference(x: np.ndarray, W0: np.ndarray, b: np.ndarray | None, A: np.ndarray, B: np.ndarray,
                           scaling: float, dropout_mask: np.ndarray | None = None, keep_prob: float = 1.0,
                           slices: Sequence[tuple[int, int]] | None = None) -> np.ndarray:
    """The same y as `lora_forward`, the slow obvious way: y = x W0ᵀ + b + x̃ ΔWᵀ with ΔW dense.

    Costs 2·d_in·d_out extra FLOPs per row instead of 2·r·(d_in + d_out): for tests and lessons.
    """
    x, W0, b, A, B, s, mask, keep_prob, slices, dtype = _validate(
        x, W0, b, A, B, scaling, dropout_mask, keep_prob, slices, op="lora_forward_reference")
    dW = lora_merge_delta(A, B, s, slices, W0.shape[0])        # (d_out, d_in)
    xt = x if mask is None else x * mask.astype(dtype) / keep_prob   # (..., d_in)
    y = np.matmul(x, W0.T) + np.matmul(xt, dW.T)               # (..., d_out)
    if b is not None:
        y = y + b                                              # (..., d_out)
    return y
