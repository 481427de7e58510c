r"""DoRA, weight-decomposed low-rank adaptation: the hand-derived pass, both backward rules, the variant.

DoRA (Liu et al. 2024, arXiv:2402.09353, §4.1, eq. 5) splits the adapted weight into a magnitude
and a direction and trains both, the direction through LoRA:

    W' = m ⊙ V / ‖V‖_row,      V = W0 + s·B A,      m ∈ R^{d_out} trainable, m₀ = ‖W0 + s·B₀A₀‖_row

The norm is taken per OUTPUT feature, one per row of the (d_out, d_in) weight (PEFT's layout,
`DoraLinearLayer.get_weight_norm`: `torch.linalg.norm(W + s·BA, dim=1)`; the paper writes ‖·‖_c, a
norm per column of its weight matrix, and the magnitude it trains has one entry per output feature,
as here). m is PEFT's `lora_magnitude_vector`
(that is its key in the adapter file). With B₀ = 0, m₀ = ‖W0‖_row and W' = W0 bit for bit: a fresh
DoRA layer IS the base layer (c = m/‖V‖ is exactly 1.0 because m₀ and ‖V‖ are the same computation).

Shape letters as in `lora/functional.py`: N rows (leading dims of x flattened), d_in, d_out, r.

Forward (PEFT's formula, which keeps the frozen path on the clean x when there is dropout)
-------
    X̃ = X ⊙ M / k                       dropout on the adapter input only (X̃ = X without dropout)
    U = X̃ Aᵀ                                                                       (N, r)
    V = W0 + s·B A,   n = ‖V‖_row,   c = m / n                          (d_out, d_in), (d_out,), (d_out,)
    P = X̃ W0ᵀ + s·U Bᵀ  ( = X̃ Vᵀ )                                                 (N, d_out)
    Y = X W0ᵀ + b + (c − 1) ⊙ (X̃ W0ᵀ) + c ⊙ s·U Bᵀ  =  X W0ᵀ − X̃ W0ᵀ + c ⊙ P + b     (N, d_out)

Without dropout X̃ = X and Y = c ⊙ (X Vᵀ) + b = X W'ᵀ + b: the merged layer.

Backward, exact (the derivation)
-----------------------------
G = ∂L/∂Y (N, d_out). c_j multiplies column j of P, so

    ∂L/∂c_j = Σ_n G_nj P_nj                    →  dc = Σ_n G ⊙ P                       (d_out,)
    ∂L/∂m_j = dc_j / n_j                       →  dm = dc / n                           (d_out,)
    ∂L/∂n_j = −dc_j m_j / n_j² = −dc_j c_j / n_j                                         (d_out,)

V enters twice: through P (P = X̃ Vᵀ) and through n (n_j = ‖V_j‖, ∂n_j/∂V_j = V_j / n_j):

    ∂L/∂V = (G ⊙ c)ᵀ X̃  +  diag(dn / n) V                                           (d_out, d_in)

and V = W0 + s·B A, so ∂L/∂B = s·(∂L/∂V) Aᵀ and ∂L/∂A = s·Bᵀ (∂L/∂V). The first term is never formed
densely (it is the LoRA gradient with G replaced by G_P = G ⊙ c); the second has no N in it:

    G_P = G ⊙ c                      GU = G_P B                                         (N, r)
    dB  = s·G_Pᵀ U   +  s·w ⊙_row (V Aᵀ)                    w = dn / n = −dc ⊙ c / n²    (d_out, r)
    dA  = s·GUᵀ X̃    +  s·(w ⊙_row B)ᵀ V                                                 (r, d_in)
    dX  = G W0 + ((G_P − G) W0 + s·GU A) ⊙ M / k     (= G_P W0 + s·GU A without dropout) (N, d_in)
    db  = Σ_n G                                                                          (d_out,)

Backward with the norm held constant (DoRA §4.3, what PEFT does: `weight_norm.detach()`)
-----------------------------------------------------------------------------------------
§4.3 treats ‖V‖ as a constant in the backward pass, so the gradient of V flows only through P: the
same formulas without the w terms (dm is unchanged). It saves the (d_out, d_in) products V Aᵀ and
Bᵀ V of the backward (and in PyTorch the graph through the norm, which is the memory the paper is
after). It is NOT the gradient of the loss: the exact dA, dB also have a component that keeps the
row norms where m says; the paper reports that dropping it changes accuracy little.
`tests/test_lora_family.py` shows the two differ and that only the exact one matches central differences.

Cost per step beyond LoRA: V = W0 + s·B A and its norms (2·r·d_in·d_out + 3·d_in·d_out FLOPs, no N),
the two products of the exact w terms (4·r·d_in·d_out), and, with dropout, one more N·d_in·d_out
GEMM (X̃ W0ᵀ next to X W0ᵀ).

Merging (PEFT's `DoraLinearVariant.merge_*`): W ← c ⊙ (W0 + s·B A) with c = m / ‖W0 + s·B A‖ cached,
so unmerge can undo it: W0 = W / c − s·B A. The round trip returns W0 up to rounding (a few ulp of
|W0| + s|BA|, scaled by max(c, 1/c)). A row whose V has norm 0 gives c = inf: DoRA is undefined there.

Slices of a fused projection (loralib's enable_lora) are refused: DoRA's magnitude is one number per
row of the WHOLE weight, and PEFT's DoRA has no MergedLinear form either.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import ops
from ..function import Function
from ..nn.module import Parameter
from ..tensor import Tensor
from .functional import _common_float_dtype, _validate
from .layer import LoRALinear, _arr
from .variant import LoraVariant

__all__ = ["DoraCache", "dora_forward", "dora_backward", "DoRAFunction", "dora_linear", "dora_linear_composed",
           "dora_weight_norm", "DoRA", "DoRAExact", "NORM_GRADS"]

NORM_GRADS = ("exact", "constant")


@dataclass(frozen=True)
class DoraCache:
    """What `dora_backward` needs from `dora_forward` (opaque outside this module)."""

    x_tilde: np.ndarray         # (N, d_in)  X̃
    mask: np.ndarray | None     # (N, d_in)  0/1 in the float dtype, or None
    u: np.ndarray               # (N, r)     X̃ Aᵀ
    p: np.ndarray               # (N, d_out) X̃ Vᵀ
    V: np.ndarray               # (d_out, d_in)
    n: np.ndarray               # (d_out,)   ‖V‖_row
    c: np.ndarray               # (d_out,)   m / n
    W0: np.ndarray
    A: np.ndarray
    B: np.ndarray
    scaling: float
    keep_prob: float
    lead_shape: tuple[int, ...]
    has_bias: bool


def dora_weight_norm(W0: np.ndarray, A: np.ndarray, B: np.ndarray, scaling: float) -> tuple[np.ndarray, np.ndarray]:
    """(V, n): V = W0 + scaling·B A (d_out, d_in) and its row norms n = ‖V_j‖₂ (d_out,), W0's dtype.

    The one place the norm is computed, so m₀ (DoRA's init) and the forward's n are bitwise the same.
    """
    V = W0 + float(scaling) * (B @ A)                          # (d_out, d_in)
    return V, np.sqrt(np.einsum("ij,ij->i", V, V))             # (d_out,)


def dora_forward(x: np.ndarray, W0: np.ndarray, b: np.ndarray | None, A: np.ndarray, B: np.ndarray,
                 m: np.ndarray, scaling: float, dropout_mask: np.ndarray | None = None,
                 keep_prob: float = 1.0) -> tuple[np.ndarray, DoraCache]:
    """y = x W0ᵀ + b + (c − 1) ⊙ (x̃ W0ᵀ) + c ⊙ s·(x̃ Aᵀ) Bᵀ with c = m / ‖W0 + s·B A‖_row; (y, cache).

    x (..., d_in); W0 (d_out, d_in) frozen; b (d_out,) or None; A (r, d_in); B (d_out, r); m (d_out,);
    dropout_mask None or 0/1 of x's shape (x̃ = x ⊙ mask / keep_prob). y (..., d_out), x's dtype.
    Raises: the TypeError/ValueError of `functional.lora_forward` (names the argument and shapes),
    ValueError if m is not (d_out,). Derivation: the module docstring.
    """
    op = "dora_forward"
    x, W0, b, A, B, s, mask, keep_prob, _, dtype = _validate(x, W0, b, A, B, scaling, dropout_mask, keep_prob,
                                                             None, op=op)
    m = np.asarray(m)
    _common_float_dtype(op, x=x, m=m)
    d_out, d_in = W0.shape
    if m.shape != (d_out,):
        raise ValueError(f"{op}: m (lora_magnitude_vector) has shape {m.shape}, expected ({d_out},) for W0 {W0.shape}")
    lead = x.shape[:-1]
    x2 = x.reshape(-1, d_in)                                   # (N, d_in)
    if mask is None:
        m2, xt = None, x2
    else:
        m2 = mask.reshape(-1, d_in).astype(dtype, copy=False)
        xt = x2 * m2
        if keep_prob != 1.0:
            xt *= 1.0 / keep_prob                              # (N, d_in)  X̃
    V, n = dora_weight_norm(W0, A, B, s)                       # (d_out, d_in), (d_out,)
    c = m / n                                                  # (d_out,)
    u = xt @ A.T                                               # (N, r)
    q = xt @ W0.T                                              # (N, d_out)  X̃ W0ᵀ
    p = q + (u * s) @ B.T                                      # (N, d_out)  X̃ Vᵀ
    y = p * c                                                  # (N, d_out)
    if mask is not None:
        y += x2 @ W0.T - q                                     # the frozen path on the clean X
    if b is not None:
        y += b
    cache = DoraCache(x_tilde=xt, mask=m2, u=u, p=p, V=V, n=n, c=c, W0=W0, A=A, B=B, scaling=s,
                      keep_prob=keep_prob, lead_shape=lead, has_bias=b is not None)
    return y.reshape(*lead, d_out), cache


def dora_backward(grad_out: np.ndarray, cache: DoraCache, norm_grad: str = "exact", need_dx: bool = True,
                  need_db: bool = False) -> dict[str, np.ndarray | None]:
    """Gradients of `dora_forward`: dict(dx, dA, dB, dm, db) (dx / db None when not asked for).

    norm_grad: "exact" (the gradient of the loss, through ‖V‖ too) or "constant" (DoRA §4.3 / PEFT:
    ‖V‖ treated as a constant, so dA and dB lose the w terms; dm and dx are the same in both).
    Formulas: the module docstring. Shapes: dx like x, dA (r, d_in), dB (d_out, r), dm and db (d_out,).
    Raises: ValueError for an unknown norm_grad, a grad_out of the wrong shape, need_db without b.
    """
    op = "dora_backward"
    if not isinstance(cache, DoraCache):
        raise TypeError(f"{op}: cache must be the DoraCache returned by dora_forward, got {type(cache).__name__}")
    if norm_grad not in NORM_GRADS:
        raise ValueError(f"{op}: norm_grad must be one of {NORM_GRADS}, got {norm_grad!r}")
    c = cache
    G = np.asarray(grad_out)
    d_out, d_in = c.W0.shape
    _common_float_dtype(op, grad_out=G, x=c.x_tilde)
    if G.shape != (*c.lead_shape, d_out):
        raise ValueError(f"{op}: grad_out has shape {G.shape}, expected {(*c.lead_shape, d_out)} (the shape of y)")
    if need_db and not c.has_bias:
        raise ValueError(f"{op}: need_db=True but dora_forward was called with b=None")
    s = c.scaling
    G2 = G.reshape(-1, d_out)                                  # (N, d_out)
    dc = np.einsum("nj,nj->j", G2, c.p)                        # (d_out,)
    dm = dc / c.n                                              # (d_out,)
    GP = G2 * c.c                                              # (N, d_out)  G ⊙ c
    gu = GP @ c.B                                              # (N, r)
    dB = (GP.T @ c.u) * s                                      # (d_out, r)
    dA = (gu.T @ c.x_tilde) * s                                # (r, d_in)
    if norm_grad == "exact":
        w = -dc * c.c / (c.n * c.n)                            # (d_out,)  dn / n
        dB += s * w[:, None] * (c.V @ c.A.T)                   # (d_out, r)
        dA += s * ((c.B * w[:, None]).T @ c.V)                 # (r, d_in)
    dx = None
    if need_dx:
        lora_in = (gu * s) @ c.A                               # (N, d_in)
        if c.mask is None:
            dx = GP @ c.W0 + lora_in                           # (N, d_in)
        else:
            dx = G2 @ c.W0 + ((GP - G2) @ c.W0 + lora_in) * (c.mask / c.keep_prob)
        dx = dx.reshape(*c.lead_shape, d_in)
    db = G2.sum(axis=0) if need_db else None
    return {"dx": dx, "dA": dA, "dB": dB, "dm": dm, "db": db}


class DoRAFunction(Function):
    """The fused DoRA linear op: forward/backward are `dora_forward` / `dora_backward`.

    Inputs (Tensors): x (..., d_in), A (r, d_in), B (d_out, r), m (d_out,), and b (d_out,) when the
    bias trains. Constants: W0, frozen_bias, scaling, mask, keep_prob, norm_grad ("exact" | "constant").
    """

    @staticmethod
    def forward(ctx, x, A, B, m, b=None, W0=None, frozen_bias=None, scaling=1.0, mask=None, keep_prob=1.0,
                norm_grad="exact"):
        if norm_grad not in NORM_GRADS:
            raise ValueError(f"DoRAFunction: norm_grad must be one of {NORM_GRADS}, got {norm_grad!r}")
        y, cache = dora_forward(x, W0, b if b is not None else frozen_bias, A, B, m, scaling, mask, keep_prob)
        ctx.save_for_backward(cache)
        ctx.trainable_bias = b is not None
        ctx.norm_grad = norm_grad
        return y

    @staticmethod
    def backward(ctx, g):
        (cache,) = ctx.saved
        need = ctx.needs_input_grad
        grads = dora_backward(g, cache, ctx.norm_grad, need_dx=need[0], need_db=ctx.trainable_bias and need[4])
        out = (grads["dx"], grads["dA"] if need[1] else None, grads["dB"] if need[2] else None,
               grads["dm"] if need[3] else None)
        return out + (grads["db"],) if ctx.trainable_bias else out


def dora_linear(x: Tensor, W0: np.ndarray | Tensor, b: Tensor | np.ndarray | None, A: Tensor, B: Tensor, m: Tensor,
                scaling: float, mask: np.ndarray | None = None, keep_prob: float = 1.0,
                norm_grad: str = "exact") -> Tensor:
    """DoRA's output through `DoRAFunction` (hand-derived backward). W0 constant; b trainable if a
    Tensor with requires_grad. Raises ValueError if W0 requires grad, and the errors of `dora_forward`."""
    if isinstance(W0, Tensor) and W0.requires_grad:
        raise ValueError("dora_linear: W0 requires grad, but DoRA never computes dL/dW0 (W0 is frozen)")
    consts = dict(W0=_arr(W0), scaling=float(scaling), mask=_arr(mask), keep_prob=float(keep_prob),
                  norm_grad=norm_grad)
    if isinstance(b, Tensor) and b.requires_grad:
        return DoRAFunction.apply(x, A, B, m, b, **consts)
    return DoRAFunction.apply(x, A, B, m, frozen_bias=_arr(b), **consts)


def dora_linear_composed(x: Tensor | np.ndarray, W0: np.ndarray | Tensor, b: Tensor | np.ndarray | None, A: Tensor,
                         B: Tensor, m: Tensor, scaling: float, mask: np.ndarray | None = None, keep_prob: float = 1.0,
                         norm_grad: str = "exact") -> Tensor:
    """The same output from engine ops (PEFT's formula, term by term): the test oracle.

    y = linear(x, W0, b) + (c − 1) ⊙ linear(x̃, W0) + c ⊙ s·(x̃ Aᵀ) Bᵀ, c = m / sqrt(Σ_row V²); with
    norm_grad="constant" the norm enters as a constant array (PEFT's `.detach()`).
    """
    if norm_grad not in NORM_GRADS:
        raise ValueError(f"dora_linear_composed: norm_grad must be one of {NORM_GRADS}, got {norm_grad!r}")
    x = x if isinstance(x, Tensor) else Tensor(np.asarray(x))
    W0 = Tensor(_arr(W0))
    s = float(scaling)
    V = W0 + ops.matmul(B, A) * s                                # (d_out, d_in)
    n = ops.sqrt(ops.sum(V * V, axis=1))                         # (d_out,)
    if norm_grad == "constant":
        n = Tensor(n.data)
    c = m / n                                                    # (d_out,)
    xt = x if mask is None else x * (np.asarray(mask).astype(x.dtype) / x.dtype.type(keep_prob))
    bias = b if (b is None or isinstance(b, Tensor)) else Tensor(np.asarray(b))
    lora = ops.matmul(ops.matmul(xt, ops.transpose(A)), ops.transpose(B))
    return ops.linear(x, W0, bias) + ops.linear(xt, W0) * (c - 1.0) + lora * (c * s)


# --------------------------------------------------------------------------- the variant

def _need_float_base(layer: LoRALinear, what: str) -> None:
    """Raise ValueError if the layer's W0 is not a float Parameter (e.g. a 4-bit QLoRA base)."""
    if not isinstance(layer.weight, Parameter):
        raise ValueError(f"{what} needs the float base weight W0, but this layer's base is "
                         f"{type(layer.weight).__name__} (a quantized base is not supported with {what})")


class DoRA(LoraVariant):
    """DoRA on the variant hook (LoraConfig(use_dora=True)): backward with the norm held constant
    (DoRA §4.3, as PEFT trains); `DoRAExact` (variant "dora_exact") uses the exact gradient.

    Parameters: lora_A.weight (r, d_in), lora_B.weight (d_out, r), lora_magnitude_vector (d_out,).
    """

    name = "dora"
    supports_quantized_base = False   # the row norms need W0's entries
    norm_grad = "constant"
    delta_is_BA = False            # the rank tools (rank.py) must not read s·B·A as this layer's ΔW
    adapter_keys = ("lora_A.weight", "lora_B.weight", "lora_magnitude_vector")

    @classmethod
    def init(cls, layer: LoRALinear, init_lora_weights: bool | str) -> None:
        """A, B as plain LoRA, then m = ‖W0 + s·B A‖_row (= ‖W0‖_row when B = 0), W0's dtype.

        Raises: ValueError for enable_lora slices (one magnitude per row of the whole weight).
        """
        if layer.slices is not None:
            raise ValueError("DoRA adapts the whole weight (one magnitude per output row); enable_lora slices "
                             "are not supported: adapt the full layer (drop enable_lora)")
        if init_lora_weights == "loftq":
            raise ValueError("DoRA with init_lora_weights='loftq' is not supported: DoRA needs the float W0")
        super().init(layer, init_lora_weights)
        _, n = dora_weight_norm(layer.weight.data, layer.lora_A.weight.data, layer.lora_B.weight.data, layer.scaling)
        layer.lora_magnitude_vector = Parameter(n)

    @classmethod
    def forward(cls, layer: LoRALinear, x: Tensor, mask: np.ndarray | None, keep_prob: float) -> Tensor:
        """The fused DoRA op with this class's norm_grad."""
        _need_float_base(layer, "DoRA")
        return dora_linear(x, layer.weight.data, layer.bias, layer.lora_A.weight, layer.lora_B.weight,
                           layer.lora_magnitude_vector, layer.scaling, mask, keep_prob, cls.norm_grad)

    @classmethod
    def _factor(cls, layer: LoRALinear, W0: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        V, n = dora_weight_norm(W0, layer.lora_A.weight.data, layer.lora_B.weight.data, layer.scaling)
        return V, layer.lora_magnitude_vector.data / n               # (d_out, d_in), c (d_out,)

    @classmethod
    def _unmerged_weight(cls, layer: LoRALinear) -> np.ndarray:
        W = layer.weight.data
        if not layer.merged:
            return W
        BA = layer.scaling * (layer.lora_B.weight.data @ layer.lora_A.weight.data)
        return W / layer._dora_factor[:, None] - BA                  # W0 = W / c − s·B A

    @classmethod
    def delta_weight(cls, layer: LoRALinear) -> np.ndarray:
        """ΔW = c ⊙ (W0 + s·B A) − W0 (full rank in general: the magnitude rescales all of W0's rows)."""
        W0 = cls._unmerged_weight(layer)
        V, c = cls._factor(layer, W0)
        return c[:, None] * V - W0

    @classmethod
    def merge(cls, layer: LoRALinear) -> None:
        """W ← c ⊙ (W0 + s·B A), keeping c for unmerge (PEFT caches the norm the same way)."""
        _need_float_base(layer, "DoRA")
        V, c = cls._factor(layer, layer.weight.data)
        layer._dora_factor = c
        layer.weight.data = c[:, None] * V

    @classmethod
    def unmerge(cls, layer: LoRALinear) -> None:
        """W ← W / c − s·B A with the c of merge: W0 up to rounding."""
        layer.weight.data = cls._unmerged_weight(layer)
        del layer._dora_factor


class DoRAExact(DoRA):
    """DoRA trained with the exact gradient (through ‖W0 + s·B A‖): variant "dora_exact"."""

    name = "dora_exact"
    norm_grad = "exact"
