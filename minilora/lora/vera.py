r"""VeRA (Kopiczko et al. 2024, arXiv:2310.11454): frozen random A, B shared by every layer; train two vectors.

VeRA keeps LoRA's shape of update but freezes both factors at random values, shared by all adapted
layers, and trains only two scaling vectors per layer (paper §3.1, eq. 2; PEFT's `VeraModel`):

    h = W0 x + b + Λ_b B Λ_d A x          ΔW = Λ_b B Λ_d A = diag(b) · B · diag(d) · A     (d_out, d_in)

    A  (r, d_in)   frozen, Kaiming-uniform, one draw shared by all layers   (PEFT: `vera_A`)
    B  (d_out, r)  frozen, Kaiming-uniform, one draw shared by all layers   (PEFT: `vera_B`)
    d  (r,)        trained, initialised to d_initial (0.1)                  (PEFT: `vera_lambda_d`)
    b  (d_out,)    trained, initialised to 0, so ΔW = 0 at step 0           (PEFT: `vera_lambda_b`)

Sharing (PEFT's layout). Layers of different shapes share ONE pair, drawn at the largest shapes:
A_shared (r, max d_in), B_shared (max d_out, r), from `np.random.default_rng(projection_prng_key)`;
each layer uses the slices A_shared[:, :d_in] and B_shared[:d_out, :] (views: no copy). They are not
Parameters (nothing trains them; they do not count as parameters) but plain arrays on each layer
(`layer.vera_A`, `layer.vera_B`). With `save_projection=True` (PEFT's default) the adapter file holds
them as `vera_A` / `vera_B`, so a load never depends on the random generator; with False, the file
holds only the vectors and the pair is drawn again from `projection_prng_key`.

Parameter count. Per adapted layer VeRA trains r + d_out scalars, LoRA trains r_lora·(d_in + d_out).
The random factors cost memory once per model, not per layer. Why it works (paper §3, and the
intuition of random-feature models): a fixed random B diag(d) A spans, for r large enough, a rich
enough set of directions; training d selects and weighs the r random directions, b rescales each
output row. `vera_parameter_count` / `lora_parameter_count` give the two counts for a model.

The pass, hand-derived (row layout; X (N, d_in) all leading dims flattened, X̃ = X ⊙ M / k with
dropout on the VeRA branch only, as for LoRA):

    U = X̃ Aᵀ            (N, r)
    V = U ⊙ d           (N, r)       (d broadcast over rows)
    Z = V Bᵀ            (N, d_out)
    Y = X W0ᵀ + bias + Z ⊙ b                                                   (N, d_out)

With G = ∂L/∂Y (N, d_out), entry by entry (Y_nj = Σ_k b_j B_jk d_k U_nk + ...):

    ∂L/∂b_j  = Σ_n G_nj Z_nj                  →  db = Σ_n (G ⊙ Z)              (d_out,)
    ∂L/∂Z    = G ⊙ b                          →  GZ (N, d_out)
    ∂L/∂V    = GZ B                           →  GV (N, r)
    ∂L/∂d_k  = Σ_n GV_nk U_nk                 →  dd = Σ_n (GV ⊙ U)             (r,)
    ∂L/∂U    = GV ⊙ d                         →  GU (N, r)
    ∂L/∂X    = G W0 + (GU A) ⊙ M / k                                            (N, d_in)
    ∂L/∂bias = Σ_n G_n  (only when the bias trains);  nothing for A, B or W0 (frozen).

`VeraFunction` wraps `vera_forward` / `vera_backward`; `vera_linear_composed` builds the same output
from engine ops, the oracle of the tests (hand == composed == central differences, float64).
"""
from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass
from numbers import Integral, Real
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from .. import ops
from ..function import Function
from ..nn.module import Parameter
from ..tensor import Tensor
from .config import LoraConfig
from .layer import LoRALinear
from .variant import LoraVariant

if TYPE_CHECKING:
    from .model import LoraModel

__all__ = ["VeraConfig", "Vera", "VeraFunction", "vera_projections", "vera_forward", "vera_backward",
           "vera_linear", "vera_linear_composed", "vera_parameter_count", "lora_parameter_count"]


# --------------------------------------------------------------------------- config

@dataclass
class VeraConfig(LoraConfig):
    """VeRA's options under PEFT's `VeraConfig` names; a LoraConfig whose variant is "vera".

    Args:
        r: rank of the shared random projections (PEFT's default 256; VeRA wants r large: its
            per-layer cost is r + d_out, not r·(d_in + d_out)). Must fit min(d_in, d_out) of every
            target (`inject_lora` refuses it otherwise, naming the module).
        target_modules: as LoraConfig.
        vera_dropout: in [0, 1), dropout on the VeRA branch's input (stored as lora_dropout too).
        d_initial: finite real, the initial value of every entry of d (vera_lambda_d). Default 0.1.
        projection_prng_key: int >= 0, the seed of the shared A and B.
        save_projection: bool; True stores vera_A / vera_B in the adapter file (PEFT's default).
        bias: as LoraConfig.
    VeRA has no lora_alpha: the update is Λ_b B Λ_d A with no scaling, so lora_alpha is set to r
    (scaling 1) and use_rslora, enable_lora and init_lora_weights="gaussian" are refused.
    init_lora_weights=False starts b and d random (ΔW != 0, for tests), as PEFT's init_weights=False.
    Raises:
        ValueError: a bad value, naming the field (and LoraConfig's checks).
    """

    peft_type: ClassVar[str] = "VERA"

    r: int = 256
    variant: str = "vera"
    vera_dropout: float = 0.0
    d_initial: float = 0.1
    projection_prng_key: int = 0
    save_projection: bool = True

    def __post_init__(self) -> None:
        if self.variant != "vera":
            raise ValueError(f"VeraConfig.variant must be 'vera', got {self.variant!r}")
        if self.use_rslora or self.enable_lora is not None or self.init_lora_weights not in (True, False):
            raise ValueError("VeraConfig: use_rslora, enable_lora and init_lora_weights other than True/False "
                             "do not apply to VeRA (its update has no scaling and one group)")
        if (not isinstance(self.vera_dropout, Real) or isinstance(self.vera_dropout, bool)
                or not 0.0 <= self.vera_dropout < 1.0):
            raise ValueError(f"VeraConfig.vera_dropout must be in [0, 1), got {self.vera_dropout!r}")
        if self.lora_dropout not in (0.0, self.vera_dropout) and self.vera_dropout != 0.0:
            raise ValueError(f"VeraConfig: vera_dropout {self.vera_dropout} and lora_dropout {self.lora_dropout} "
                             "disagree; give vera_dropout only")
        self.vera_dropout = float(self.vera_dropout or self.lora_dropout)
        self.lora_dropout = self.vera_dropout
        if (not isinstance(self.d_initial, Real) or isinstance(self.d_initial, bool)
                or not math.isfinite(self.d_initial)):
            raise ValueError(f"VeraConfig.d_initial must be a finite number, got {self.d_initial!r}")
        self.d_initial = float(self.d_initial)
        if (not isinstance(self.projection_prng_key, Integral) or isinstance(self.projection_prng_key, bool)
                or self.projection_prng_key < 0):
            raise ValueError(f"VeraConfig.projection_prng_key must be an int >= 0, got {self.projection_prng_key!r}")
        self.projection_prng_key = int(self.projection_prng_key)
        if not isinstance(self.save_projection, (bool, np.bool_)):
            raise ValueError(f"VeraConfig.save_projection must be a bool, got {self.save_projection!r}")
        self.save_projection = bool(self.save_projection)
        if isinstance(self.r, Integral) and not isinstance(self.r, bool):
            self.lora_alpha = float(self.r)             # scaling = 1: VeRA has no alpha
        super().__post_init__()


# --------------------------------------------------------------------------- the shared projections

def vera_projections(projection_prng_key: int, r: int, d_in: int, d_out: int) -> tuple[np.ndarray, np.ndarray]:
    """The shared frozen pair (A (r, d_in), B (d_out, r)), float64, from `projection_prng_key`.

    PEFT's `_kaiming_init` (kaiming_uniform with a = 0, fan_in mode): entries ~ U(-√(6/fan_in),
    √(6/fan_in)), fan_in = d_in for A (r, d_in) and r for B (d_out, r); A is drawn first.
    A model draws it once at the largest d_in and d_out of its targets and slices it per layer.
    """
    rng = np.random.default_rng(projection_prng_key)
    A = rng.uniform(-math.sqrt(6.0 / d_in), math.sqrt(6.0 / d_in), (r, d_in))
    B = rng.uniform(-math.sqrt(6.0 / r), math.sqrt(6.0 / r), (d_out, r))
    return A, B


# --------------------------------------------------------------------------- the hand-derived pass

def vera_forward(x: np.ndarray, W0: np.ndarray, bias: np.ndarray | None, A: np.ndarray, B: np.ndarray,
                 lambda_d: np.ndarray, lambda_b: np.ndarray, dropout_mask: np.ndarray | None = None,
                 keep_prob: float = 1.0) -> tuple[np.ndarray, dict]:
    """Y = X W0ᵀ + bias + ((X̃ Aᵀ) ⊙ d) Bᵀ ⊙ b (module docstring): (y (..., d_out), cache).

    Shapes: x (..., d_in), W0 (d_out, d_in), bias (d_out,) or None, A (r, d_in), B (d_out, r),
    lambda_d (r,), lambda_b (d_out,), dropout_mask x's shape (0/1) or None. One float dtype.
    Raises: ValueError naming the array whose shape does not fit; TypeError for mixed dtypes.
    """
    d_out, d_in = W0.shape
    r = A.shape[0]
    want = {"A": (A, (r, d_in)), "B": (B, (d_out, r)), "lambda_d": (lambda_d, (r,)),
            "lambda_b": (lambda_b, (d_out,))}
    if x.shape[-1:] != (d_in,):
        raise ValueError(f"vera_forward: x has shape {x.shape}; its last dim must be d_in = {d_in}")
    for name, (arr, shape) in want.items():
        if arr.shape != shape:
            raise ValueError(f"vera_forward: {name} has shape {arr.shape}, expected {shape}")
    dtypes = {a.dtype for a in (x, W0, A, B, lambda_d, lambda_b) if a is not None}
    if len(dtypes) > 1:
        raise TypeError(f"vera_forward: all arrays must share one float dtype, got {sorted(map(str, dtypes))}")
    lead = x.shape[:-1]
    X = x.reshape(-1, d_in)                                            # (N, d_in)
    Xt = X
    M = None
    if dropout_mask is not None:
        M = np.asarray(dropout_mask).reshape(-1, d_in).astype(X.dtype) / X.dtype.type(keep_prob)
        Xt = X * M
    U = Xt @ A.T                                                       # (N, r)
    V = U * lambda_d                                                   # (N, r)
    Z = V @ B.T                                                        # (N, d_out)
    Y = X @ W0.T + Z * lambda_b
    if bias is not None:
        Y += bias
    cache = dict(W0=W0, A=A, B=B, d=lambda_d, b=lambda_b, U=U, Z=Z, M=M, x_shape=x.shape)
    return Y.reshape(*lead, d_out), cache


def vera_backward(grad_out: np.ndarray, cache: dict, need_dx: bool = True,
                  need_dbias: bool = False) -> dict[str, np.ndarray | None]:
    """Gradients of `vera_forward` (derivation in the module docstring).

    Returns {"dx" (x's shape) or None, "dd" (r,), "db" (d_out,), "dbias" (d_out,) or None}.
    No gradient of A, B or W0 is ever formed.
    """
    W0, A, B, d, b, U, Z, M = (cache[k] for k in ("W0", "A", "B", "d", "b", "U", "Z", "M"))
    G = grad_out.reshape(-1, W0.shape[0])                              # (N, d_out)
    db = np.einsum("nj,nj->j", G, Z)                                   # (d_out,)
    GV = (G * b) @ B                                                   # (N, r)
    dd = np.einsum("nk,nk->k", GV, U)                                  # (r,)
    dx = None
    if need_dx:
        GX = (GV * d) @ A                                              # (N, d_in), the VeRA path
        if M is not None:
            GX *= M
        dx = (G @ W0 + GX).reshape(cache["x_shape"])
    dbias = G.sum(axis=0) if need_dbias else None
    return {"dx": dx, "dd": dd, "db": db, "dbias": dbias}


class VeraFunction(Function):
    """The fused VeRA linear op. Inputs (Tensors): x, lambda_d, lambda_b, and bias when it trains.
    Constants (keywords): W0, A, B, frozen_bias, mask, keep_prob. Backward: `vera_backward`."""

    @staticmethod
    def forward(ctx, x, lambda_d, lambda_b, bias=None, W0=None, A=None, B=None, frozen_bias=None,
                mask=None, keep_prob=1.0):
        y, cache = vera_forward(x, W0, bias if bias is not None else frozen_bias, A, B, lambda_d, lambda_b,
                                mask, keep_prob)
        ctx.save_for_backward(cache)
        ctx.trainable_bias = bias is not None
        return y

    @staticmethod
    def backward(ctx, g):
        (cache,) = ctx.saved
        need = ctx.needs_input_grad
        gr = vera_backward(g, cache, need_dx=need[0], need_dbias=ctx.trainable_bias and need[3])
        out = (gr["dx"], gr["dd"] if need[1] else None, gr["db"] if need[2] else None)
        return out + (gr["dbias"],) if ctx.trainable_bias else out


def _arr(t):
    return t.data if isinstance(t, Tensor) else (None if t is None else np.asarray(t))


def vera_linear(x: Tensor, W0, bias, A: np.ndarray, B: np.ndarray, lambda_d: Tensor, lambda_b: Tensor,
                mask: np.ndarray | None = None, keep_prob: float = 1.0) -> Tensor:
    """y = x W0ᵀ + bias + Λ_b B Λ_d A x̃ through `VeraFunction` (hand-derived backward); x (..., d_in).

    A, B and W0 are constants; bias is a trainable input when it is a Tensor with requires_grad.
    """
    consts = dict(W0=_arr(W0), A=np.asarray(A), B=np.asarray(B), mask=_arr(mask), keep_prob=float(keep_prob))
    if isinstance(bias, Tensor) and bias.requires_grad:
        return VeraFunction.apply(x, lambda_d, lambda_b, bias, **consts)
    return VeraFunction.apply(x, lambda_d, lambda_b, frozen_bias=_arr(bias), **consts)


def vera_linear_composed(x: Tensor, W0, bias, A: np.ndarray, B: np.ndarray, lambda_d: Tensor, lambda_b: Tensor,
                         mask: np.ndarray | None = None, keep_prob: float = 1.0) -> Tensor:
    """The same output as `vera_linear` from engine ops (linear, matmul, mul): the test oracle."""
    x = x if isinstance(x, Tensor) else Tensor(np.asarray(x))
    y = ops.linear(x, Tensor(_arr(W0)), bias if (bias is None or isinstance(bias, Tensor)) else Tensor(bias))
    xt = x if mask is None else x * (np.asarray(mask).astype(x.dtype) / x.dtype.type(keep_prob))
    u = ops.matmul(xt, Tensor(np.ascontiguousarray(np.asarray(A).T)))          # (..., r)
    z = ops.matmul(u * lambda_d, Tensor(np.ascontiguousarray(np.asarray(B).T)))  # (..., d_out)
    return y + z * lambda_b


# --------------------------------------------------------------------------- the variant

class Vera(LoraVariant):
    """VeRA through the variant hook: parameters vera_lambda_d (r,) and vera_lambda_b (d_out,)."""

    name = "vera"
    adapter_keys = ("vera_lambda_b", "vera_lambda_d")
    supports_quantized_base = False   # its forward reads W0's float entries

    @classmethod
    def init(cls, layer: LoRALinear, init_lora_weights: bool | str) -> None:
        """b = 0, d = d_initial (PEFT's `reset_vera_parameters`); a standalone layer draws its own pair
        at its own shape; `prepare_model` then points every layer of a model at one shared pair."""
        if layer.slices is not None:
            raise ValueError("vera: enable_lora is not supported (VeRA adapts the whole output)")
        cfg = layer.lora_config
        dtype = layer.weight.dtype
        A, B = vera_projections(getattr(cfg, "projection_prng_key", 0), layer.r, layer.in_features,
                                layer.out_features)
        layer.vera_A, layer.vera_B = A.astype(dtype), B.astype(dtype)      # frozen arrays, not Parameters
        if init_lora_weights is False:                                     # tests: ΔW != 0
            b, d = layer.rng.standard_normal(layer.out_features), layer.rng.standard_normal(layer.r)
        else:
            b, d = np.zeros(layer.out_features), np.full(layer.r, getattr(cfg, "d_initial", 0.1))
        layer.vera_lambda_b = Parameter(b.astype(dtype))
        layer.vera_lambda_d = Parameter(d.astype(dtype))

    @classmethod
    def forward(cls, layer: LoRALinear, x: Tensor, mask: np.ndarray | None, keep_prob: float) -> Tensor:
        A, B = layer.vera_A, layer.vera_B
        if A.dtype != x.dtype:                                             # after Module.astype
            A, B = A.astype(x.dtype), B.astype(x.dtype)
        return vera_linear(x, layer.weight.data, layer.bias, A, B, layer.vera_lambda_d, layer.vera_lambda_b,
                           mask, keep_prob)

    @classmethod
    def delta_weight(cls, layer: LoRALinear) -> np.ndarray:
        """ΔW = diag(b) B diag(d) A: (d_out, d_in) in the layer's dtype."""
        dtype = layer.weight.dtype
        d, b = layer.vera_lambda_d.data, layer.vera_lambda_b.data
        return ((b[:, None] * layer.vera_B.astype(dtype)) @ (d[:, None] * layer.vera_A.astype(dtype))).astype(dtype)

    # ---- model-level: one shared pair -------------------------------------------------------
    @classmethod
    def prepare_model(cls, model: LoraModel) -> None:
        """Draw the pair once at the largest shapes and give each VeRA layer its slices (views)."""
        layers = [m for _, m in model.lora_layers() if m.variant is cls]
        if not layers:
            return
        cfg = model.peft_config
        A, B = vera_projections(getattr(cfg, "projection_prng_key", 0), cfg.r,
                                max(m.in_features for m in layers), max(m.out_features for m in layers))
        _share(layers, A.astype(model.dtype), B.astype(model.dtype))

    @classmethod
    def model_tensors(cls, model: LoraModel) -> OrderedDict[str, np.ndarray]:
        """{"vera_A": A_shared (r, max d_in), "vera_B": B_shared (max d_out, r)} with save_projection, else {}."""
        layers = [m for _, m in model.lora_layers() if m.variant is cls]
        if not layers or not getattr(model.peft_config, "save_projection", True):
            return OrderedDict()
        widest = max(layers, key=lambda m: m.in_features)
        tallest = max(layers, key=lambda m: m.out_features)
        return OrderedDict(vera_A=widest.vera_A, vera_B=tallest.vera_B)

    @classmethod
    def load_model_tensors(cls, model: LoraModel, tensors: dict[str, np.ndarray]) -> None:
        """Point every VeRA layer at the file's vera_A / vera_B (shapes checked by the caller)."""
        layers = [m for _, m in model.lora_layers() if m.variant is cls]
        if layers and "vera_A" in tensors:
            _share(layers, np.array(tensors["vera_A"]), np.array(tensors["vera_B"]))


def _share(layers, A, B):
    for m in layers:
        m.vera_A = A[:, :m.in_features]                     # (r, d_in) view
        m.vera_B = B[:m.out_features, :]                    # (d_out, r) view


# --------------------------------------------------------------------------- counting

def vera_parameter_count(shapes: list[tuple[int, int]], r: int) -> int:
    """Trainable scalars of VeRA over layers of weight shapes (d_out, d_in): Σ (r + d_out)."""
    return int(sum(r + d_out for d_out, _ in shapes))


def lora_parameter_count(shapes: list[tuple[int, int]], r: int) -> int:
    """Trainable scalars of LoRA over layers of weight shapes (d_out, d_in): Σ r·(d_in + d_out)."""
    return int(sum(r * (d_in + d_out) for d_out, d_in in shapes))
