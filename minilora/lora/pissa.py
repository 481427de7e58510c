r"""PiSSA and OLoRA: starts taken from W0 itself, and the residual they leave, handled exactly.

PiSSA (Meng et al. 2024, arXiv:2404.02948, §3, eq. 2-4) puts the top-r singular triplets of W0 into
the adapter and freezes the rest:

    W0 = U S Vᵀ,   A₀ = √S_r V_rᵀ / √s,   B₀ = U_r √S_r / √s,   W_res = W0 − s·B₀A₀
    (PEFT's `pissa_init` divides S_r by the scaling s, so that s·B₀A₀ = U_r S_r V_rᵀ exactly the
    principal part for any lora_alpha)

`init_lora_weights="pissa_niter_K"` replaces the full SVD by a randomised one (Halko, Martinsson and
Tropp 2011, Alg. 4.4; PEFT calls `torch.svd_lowrank(W, r, niter=K)`): K power iterations on a random
(d_in, r) test matrix. Its Gaussian draw uses a FIXED seed, so the start is a function of W0 alone
(an adapter reloaded on the same base rebuilds the same A₀, B₀; see below).

OLoRA (Büyükakyüz 2024, arXiv:2406.01775, §3): W0 = Q R (thin QR), B₀ = Q[:, :r], A₀ = R[:r] (no
division by s: PEFT's `olora_init`), W_res = W0 − s·B₀A₀. Q's first r columns span the same space
as W0's first r columns: an orthonormal start.

How minilora keeps the residual honest. PEFT overwrites the base weight with W_res. minilora keeps
the frozen weight W0 untouched and computes the SAME function with the initial factors, kept as
constants on the layer (`layer.lora_A0`, `layer.lora_B0`):

    W_res + s·B A = W0 + s·(B A − B₀A₀) = W0 + s·[B | −B₀] [A ; A₀]                   (rank 2r)

so the forward is the fused LoRA op (`layer.lora_linear`, hand-derived backward) on the stacked
factors; only A and B train. This is PEFT's own conversion of a PiSSA/OLoRA adapter into a LoRA
relative to the ORIGINAL W0 (`subtract_mutated_init`: A' = [A; A₀], B' = [B | −B₀], r' = 2r,
lora_alpha' = 2·lora_alpha, or √2·lora_alpha with rsLoRA, so that s' = s), done at every step. Then:

* `disable_adapters` gives the ORIGINAL base outputs bit for bit: the layer's weight is W0.
* merge writes W0 + ΔW with ΔW = s·(B A − B₀A₀), the update relative to W0 (what the rank tools
  should see: `delta_weight`); unmerge subtracts it again (W0 up to rounding, as plain LoRA).
* the base fingerprint is that of the original base (the weight was never changed), so an adapter
  loads on the model it was trained from without a warning, and on another base with one.
* the adapter file holds A and B under PEFT's keys, and `init_lora_weights` in its config: loading
  rebuilds A₀, B₀ from W0 (deterministic: LAPACK's SVD/QR, the fixed seed) and then overwrites A, B,
  so the logits round-trip bit for bit. `save_converted_adapter` writes PEFT's converted form
  instead: a plain rank-2r LoRA that any LoRA loader applies to the original W0.

The price: the adapter branch has rank 2r (6·N·r·(d_in + d_out) more FLOPs per step than LoRA), and
r·(d_in + d_out) numbers of A₀, B₀ per layer instead of a second copy of the weight.
At the start, s·(B A − B₀A₀) cancels only up to rounding: a fresh PiSSA layer equals the base to
about 1e-7 relative in float32 (the principal part is large: that is the point of PiSSA).
With enable_lora slices each slice's rows are decomposed on their own.
"""
from __future__ import annotations

import re
from os import PathLike
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .. import io as mio
from .. import ops
from ..tensor import Tensor
from .dora import _need_float_base
from .functional import lora_groups, lora_merge_delta
from .layer import LoRALinear, lora_linear
from .variant import LoraVariant

if TYPE_CHECKING:
    from .model import LoraModel

__all__ = ["svd_lowrank", "pissa_factors", "olora_factors", "init_pissa", "init_olora", "init_pissa_niter",
           "parse_pissa_niter", "is_residual_init", "ResidualLoRA", "residual_weight", "converted_factors",
           "save_converted_adapter", "SVD_SEED"]

SVD_SEED = 0                                  # the randomised SVD's fixed seed (the start depends on W0 only)
_NITER = re.compile(r"pissa_niter_(\d+)")


def parse_pissa_niter(init: object) -> int | None:
    """K for init_lora_weights="pissa_niter_K" (K an int >= 0), else None."""
    if isinstance(init, str):
        hit = _NITER.fullmatch(init)
        if hit:
            return int(hit.group(1))
    return None


def is_residual_init(init: object) -> bool:
    """True for the starts that leave a residual: "pissa", "pissa_niter_K", "olora"."""
    return isinstance(init, str) and (init in ("pissa", "olora") or parse_pissa_niter(init) is not None)


def svd_lowrank(W: np.ndarray, q: int, niter: int, rng: np.random.Generator | None = None
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Randomised truncated SVD: (U (m, q), S (q,), Vh (q, n)) with W ≈ U diag(S) Vh.

    Halko, Martinsson, Tropp 2011 (arXiv:0909.4061), Alg. 4.4 (randomised subspace iteration, as
    `torch.svd_lowrank`): Q = orth(W Ω) with Ω (n, q) Gaussian; niter times Q = orth(W orth(Wᵀ Q))
    (re-orthonormalising after each product keeps the small singular directions); then the exact
    SVD of the small (q, n) matrix Qᵀ W. Exact when
    rank(W) <= q; the error of the i-th triplet falls like (σ_{q+1}/σ_i)^(2·niter+1).
    W: float (m, n); q: 1 <= q <= min(m, n); niter >= 0. rng: default np.random.default_rng(SVD_SEED).
    """
    W = np.asarray(W)
    if W.ndim != 2 or not 1 <= q <= min(W.shape) or niter < 0:
        raise ValueError(f"svd_lowrank: need W 2-D, 1 <= q <= min{W.shape} and niter >= 0, got q={q}, niter={niter}")
    rng = np.random.default_rng(SVD_SEED) if rng is None else rng
    omega = rng.standard_normal((W.shape[1], q))               # (n, q)
    Q, _ = np.linalg.qr(W @ omega)                             # (m, q)
    for _ in range(niter):
        Z, _ = np.linalg.qr(W.T @ Q)                           # (n, q)
        Q, _ = np.linalg.qr(W @ Z)                             # (m, q)
    Ub, S, Vh = np.linalg.svd(Q.T @ W, full_matrices=False)    # (q, q), (q,), (q, n)
    return Q @ Ub, S, Vh


def pissa_factors(W0: np.ndarray, r: int, scaling: float, niter: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """PiSSA's (A₀ (r, d_in), B₀ (d_out, r)), float64, with s·B₀A₀ = U_r S_r V_rᵀ.

    A₀ = diag(√(S_r/s)) V_rᵀ, B₀ = U_r diag(√(S_r/s)) (PiSSA eq. 2-3, PEFT's division by s).
    niter None: full SVD (numpy.linalg.svd); else `svd_lowrank(W0, r, niter)`.
    """
    W = np.asarray(W0, dtype=np.float64)
    if niter is None:
        U, S, Vh = np.linalg.svd(W, full_matrices=False)
        U, S, Vh = U[:, :r], S[:r], Vh[:r]
    else:
        U, S, Vh = svd_lowrank(W, r, niter)
    root = np.sqrt(S / float(scaling))                         # (r,)
    return root[:, None] * Vh, U * root                        # A₀ (r, d_in), B₀ (d_out, r)


def olora_factors(W0: np.ndarray, r: int) -> tuple[np.ndarray, np.ndarray]:
    """OLoRA's (A₀ = R[:r] (r, d_in), B₀ = Q[:, :r] (d_out, r)) from the thin QR W0 = Q R, float64."""
    Q, R = np.linalg.qr(np.asarray(W0, dtype=np.float64))
    return R[:r], Q[:, :r]


def _per_slice(layer: LoRALinear, shape_A, shape_B, factors) -> tuple[np.ndarray, np.ndarray]:
    W0 = layer.weight.data
    r = layer.r
    if r > min(W0.shape[1], min(s1 - s0 for s0, s1 in (layer.slices or [(0, W0.shape[0])]))):
        raise ValueError(f"{layer.lora_config.init_lora_weights!r} needs r <= min(d_in, rows of each slice); "
                         f"got r = {r} for a weight of shape {W0.shape} and slices {layer.slices}")
    A, B = np.empty(shape_A), np.empty(shape_B)
    for _, ar, br, oc in lora_groups(layer.slices, r, layer.out_features):
        A[ar], B[br] = factors(W0[oc])
    return A, B


def init_pissa(layer: LoRALinear, shape_A: tuple[int, int], shape_B: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """init_lora_weights="pissa": `pissa_factors` with a full SVD of each slice of W0 (float64 arrays)."""
    return _per_slice(layer, shape_A, shape_B, lambda W: pissa_factors(W, layer.r, layer.scaling))


def init_pissa_niter(niter: int):
    """The init function for init_lora_weights=f"pissa_niter_{niter}" (randomised SVD, fixed seed)."""
    def init(layer, shape_A, shape_B):
        return _per_slice(layer, shape_A, shape_B, lambda W: pissa_factors(W, layer.r, layer.scaling, niter))
    init.__name__ = f"init_pissa_niter_{niter}"
    return init


def init_olora(layer: LoRALinear, shape_A: tuple[int, int], shape_B: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """init_lora_weights="olora": `olora_factors` of each slice of W0 (float64 arrays)."""
    return _per_slice(layer, shape_A, shape_B, lambda W: olora_factors(W, layer.r))


# --------------------------------------------------------------------------- the variant

def _stacked(layer: LoRALinear, A, B):
    """(A' (g*2r, d_in), B' (W, 2r)) = per group [A_i ; A₀_i] and [B | −B₀]: Tensors if A, B are."""
    r, A0, nB0 = layer.r, layer.lora_A0, -layer.lora_B0
    g = 1 if layer.slices is None else len(layer.slices)
    if isinstance(A, Tensor):
        pieces = []
        for i in range(g):
            pieces += [A if g == 1 else ops.getitem(A, slice(i * r, (i + 1) * r)), Tensor(A0[i * r:(i + 1) * r])]
        return ops.concatenate(pieces, axis=0), ops.concatenate([B, Tensor(nB0)], axis=1)
    Ac = np.concatenate([blk for i in range(g) for blk in (A[i * r:(i + 1) * r], A0[i * r:(i + 1) * r])])
    return Ac, np.concatenate([B, nB0], axis=1)


class ResidualLoRA(LoraVariant):
    """LoRA started from W0's own factors (PiSSA, OLoRA) with the residual kept exact (module docstring).

    LoraConfig(init_lora_weights="pissa" | "pissa_niter_K" | "olora") selects it (variant "residual").
    Trains lora_A.weight (g*r, d_in) and lora_B.weight (W, r); lora_A0, lora_B0 are constant arrays.
    """

    name = "residual"
    supports_quantized_base = False   # the start is an SVD/QR of W0's entries
    delta_is_BA = False            # ΔW = s·(B A − B₀A₀): the rank tools must not read s·B·A as ΔW

    @classmethod
    def init(cls, layer: LoRALinear, init_lora_weights: bool | str) -> None:
        """A₀, B₀ from the registered start (pissa / olora), in the layer's dtype; A = A₀, B = B₀."""
        if not is_residual_init(init_lora_weights):
            raise ValueError(f"the residual variant needs init_lora_weights 'pissa', 'pissa_niter_K' or 'olora', "
                             f"got {init_lora_weights!r}")
        super().init(layer, init_lora_weights)
        layer.lora_A0 = layer.lora_A.weight.data.copy()            # (g*r, d_in) constant
        layer.lora_B0 = layer.lora_B.weight.data.copy()            # (W, r) constant

    @classmethod
    def forward(cls, layer: LoRALinear, x: Tensor, mask: np.ndarray | None, keep_prob: float) -> Tensor:
        """y = x W0ᵀ + b + s·x̃ (B A − B₀A₀)ᵀ: the fused LoRA op on the stacked rank-2r factors."""
        _need_float_base(layer, "PiSSA/OLoRA")
        A, B = _stacked(layer, layer.lora_A.weight, layer.lora_B.weight)
        return lora_linear(x, layer.weight.data, layer.bias, A, B, layer.scaling, mask, keep_prob, layer.slices)

    @classmethod
    def delta_weight(cls, layer: LoRALinear) -> np.ndarray:
        """ΔW = s·B A − s·B₀A₀ per slice: the update relative to the ORIGINAL W0 (d_out, d_in); the
        two products are formed alike, so ΔW is exactly 0 at the start (as plain LoRA's)."""
        args = (layer.scaling, layer.slices, layer.out_features)
        return (lora_merge_delta(layer.lora_A.weight.data, layer.lora_B.weight.data, *args)
                - lora_merge_delta(layer.lora_A0, layer.lora_B0, *args))


def residual_weight(layer: LoRALinear) -> np.ndarray:
    """W_res = W0 − s·B₀A₀ (d_out, d_in): the frozen weight of PiSSA/OLoRA as the papers write it."""
    if not hasattr(layer, "lora_A0"):
        raise ValueError("residual_weight: the layer was not started with init_lora_weights pissa/olora")
    base = layer.weight.data - layer.delta_weight() if layer.merged else layer.weight.data   # W0
    return base - lora_merge_delta(layer.lora_A0, layer.lora_B0, layer.scaling, layer.slices, layer.out_features)


def converted_factors(layer: LoRALinear) -> tuple[np.ndarray, np.ndarray]:
    """PEFT's conversion of one PiSSA/OLoRA layer to a plain LoRA on W0: (A' (g*2r, d_in), B' (W, 2r))."""
    return _stacked(layer, layer.lora_A.weight.data, layer.lora_B.weight.data)


def save_converted_adapter(model: LoraModel, path: str | PathLike) -> None:
    """Write a PiSSA/OLoRA model's adapter as a PLAIN LoRA on the original W0, in the folder layout PEFT
    loads as it is (PEFT's `save_pretrained(..., path_initial_model_for_weight_conversion=...)`).

    Tensors (`adapter_model.safetensors`, PEFT's `base_model.model.` keys): `converted_factors` of each
    layer, r' = 2r; `adapter_config.json` (`peft_config.to_peft_dict`): lora_alpha' = 2·lora_alpha
    (√2·lora_alpha with use_rslora) so that s' = s, init_lora_weights True, variant "lora". A layer on
    slices of a fused projection is exported as `adapter_io` exports slices (B block-diagonal, rank
    g·2r, rank_pattern / alpha_pattern). No minilora side file: the folder is a plain PEFT adapter, and
    `load_lora_model(original_base, path)` (or PEFT) computes W0 + s·(B A − B₀A₀), the fine-tuned model.
    Raises: ValueError if the model's layers are not residual (PiSSA/OLoRA) ones or trained biases.
    """
    from safetensors.numpy import save

    from .adapter_io import ADAPTER_CONFIG_NAME, ADAPTER_WEIGHTS_NAME, PEFT_PREFIX, expand_grouped_B
    from .peft_config import to_peft_dict

    layers = model._layers_or_raise("save_converted_adapter")
    if any(m.variant is not ResidualLoRA for _, m in layers):
        raise ValueError("save_converted_adapter: only PiSSA/OLoRA adapters (variant 'residual') are converted")
    cfg = model.peft_config
    if cfg.bias != "none":
        raise ValueError("save_converted_adapter: bias must be 'none' (trained biases are not converted)")
    if cfg.rank_pattern or cfg.alpha_pattern:
        raise ValueError("save_converted_adapter: per-module rank_pattern / alpha_pattern are not converted")
    factor = 2 ** 0.5 if cfg.use_rslora else 2
    tensors, rank_pattern, alpha_pattern = {}, {}, {}
    for name, m in layers:
        A, B = converted_factors(m)                                    # (g*2r, d_in), (W, 2r)
        if m.slices is not None:                                       # a rank g·2r LoRA on the whole layer
            g = len(m.slices)
            B = expand_grouped_B(B, m.slices, 2 * m.r, m.out_features)
            rank_pattern[name] = g * 2 * m.r
            alpha_pattern[name] = m.lora_alpha * factor * (g ** 0.5 if cfg.use_rslora else g)
        tensors[f"{PEFT_PREFIX}{name}.lora_A.weight"] = np.ascontiguousarray(A)
        tensors[f"{PEFT_PREFIX}{name}.lora_B.weight"] = np.ascontiguousarray(B)
    config = cfg.replace(r=2 * cfg.r, lora_alpha=cfg.lora_alpha * factor, init_lora_weights=True, variant="lora",
                         rank_pattern=rank_pattern, alpha_pattern=alpha_pattern)
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    mio.atomic_write_bytes(path / ADAPTER_WEIGHTS_NAME, save(tensors, metadata={"format": "pt"}))
    mio.save_json_atomic(path / ADAPTER_CONFIG_NAME,
                         to_peft_dict(config, getattr(model.base_model, "name_or_path", None)))
