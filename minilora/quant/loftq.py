r"""LoftQ: start the adapter from the quantization residual instead of ΔW = 0 (Li et al. 2023, arXiv:2310.08659).

QLoRA starts from Q + s·B·A with B = 0, i.e. from the quantized model: its distance to the float
model is ‖W − Q‖. LoftQ (Algorithm 1) chooses Q and the factors together, alternating for T steps

    Q_t       = nf4(W − s·B_{t-1} A_{t-1})                 (quantize what the adapter does not carry)
    s·B_t A_t = SVD_r(W − Q_t)                              (best rank-r approximation, Eckart–Young)

from B_0 A_0 = 0, so that ‖W − (Q + s·B A)‖_F is smaller than ‖W − Q‖_F: the residual's r leading
singular directions are carried by the float adapter. With T = 1 (PEFT's default) this is
Q = nf4(W) and B A = the top-r SVD of W − Q, divided by s. The split of U_r Σ_r V_rᵀ / s is balanced:
B = U_r √(Σ_r / s) (d_out, r), A = √(Σ_r / s) V_rᵀ (r, d_in), so both factors have the same scale
and both get gradients from the first step (neither is zero).

PEFT names: `LoraConfig(init_lora_weights="loftq", loftq_config=LoftQConfig(loftq_bits=4, loftq_iter=1))`.
minilora registers `init_lora_weights="loftq"` in `lora.variant.LORA_INITS` (with the default
`LoftQConfig()`); `replace_lora_weights_loftq(model, LoftQConfig(...))` (PEFT's function of that
name) re-initialises the LoRA layers of an injected float model with any config. Either way the
layer's frozen weight becomes the `NF4Weight` of Q (the base is quantized by the init).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..lora.functional import lora_groups
from ..lora.layer import LoRALinear
from ..nn.module import Parameter
from .linear import NF4Weight
from .nf4 import quantize_4bit

__all__ = ["LoftQConfig", "loftq_decompose", "init_loftq", "replace_lora_weights_loftq"]


@dataclass(frozen=True)
class LoftQConfig:
    """LoftQ's options, named as PEFT's: loftq_bits (4: NF4 only here), loftq_iter T >= 1 (1).

    block_size and double_quant describe the NF4 storage of Q (64, True as in QLoRA).
    Raises: ValueError for loftq_bits != 4 or loftq_iter < 1.
    """

    loftq_bits: int = 4
    loftq_iter: int = 1
    block_size: int = 64
    double_quant: bool = True

    def __post_init__(self):
        if self.loftq_bits != 4:
            raise ValueError(f"LoftQConfig.loftq_bits: minilora implements 4-bit NF4 only, got {self.loftq_bits!r}")
        if not isinstance(self.loftq_iter, int) or isinstance(self.loftq_iter, bool) or self.loftq_iter < 1:
            raise ValueError(f"LoftQConfig.loftq_iter must be an int >= 1, got {self.loftq_iter!r}")


def loftq_decompose(W: np.ndarray, r: int, scaling: float, config: LoftQConfig = LoftQConfig()):
    """LoftQ Algorithm 1 on one weight: returns (state, A, B, errors).

    W (d_out, d_in) float; r >= 1; scaling s > 0. state: the QuantState of Q; A (r, d_in), B (d_out, r)
    in float64 with s·B A the rank-r SVD of W − Q; errors: ‖W − (Q + s·B A)‖_F after each step.
    """
    W = np.asarray(W)
    if W.ndim != 2 or not 1 <= r <= min(W.shape):
        raise ValueError(f"loftq_decompose: need a 2-D W and 1 <= r <= min(W.shape); got W {W.shape}, r={r!r}")
    if not scaling > 0:
        raise ValueError(f"loftq_decompose: scaling must be > 0, got {scaling!r}")
    W64 = W.astype(np.float64)
    low = np.zeros_like(W64)                                     # s·B A, starts at 0
    errors = []
    for _ in range(config.loftq_iter):
        state = quantize_4bit((W64 - low).astype(W.dtype), "nf4", config.block_size, config.double_quant)
        Q = state.dequantize(np.float64)
        U, S, Vt = np.linalg.svd(W64 - Q, full_matrices=False)  # residual, (d_out, k) (k,) (k, d_in)
        root = np.sqrt(S[:r] / scaling)
        B, A = U[:, :r] * root, root[:, None] * Vt[:r]           # (d_out, r), (r, d_in)
        low = scaling * (B @ A)
        errors.append(float(np.linalg.norm(W64 - Q - low)))
    return state, A, B, errors


def init_loftq(layer: LoRALinear, shape_A: tuple[int, int], shape_B: tuple[int, int],
               config: LoftQConfig | None = None) -> tuple[np.ndarray, np.ndarray]:
    """`init_lora_weights="loftq"`: quantize the layer's base with LoftQ and return (A, B).

    For grouped layers (enable_lora) each group's rows get their own decomposition; the rows of
    W0 that no group adapts are quantized jointly with the rest (one Q for the whole weight).
    Side effect: `layer.weight` becomes the NF4Weight of Q. Raises ValueError if the base is
    already quantized (LoftQ needs the float W).
    """
    config = config or LoftQConfig()
    if not isinstance(layer.weight, Parameter):
        raise ValueError("init_loftq: the layer's base is already quantized; LoftQ needs the float weight "
                         "(inject LoRA into the float model, then quantize)")
    W = layer.weight.data
    r, s = layer.r, layer.scaling
    A = np.zeros(shape_A)
    B = np.zeros(shape_B)
    if layer.slices is None:
        state, A, B, _ = loftq_decompose(W, r, s, config)
    else:                                                        # one SVD per group, Q alternated jointly
        low = np.zeros(W.shape)
        for _ in range(config.loftq_iter):
            state = quantize_4bit((W - low).astype(W.dtype), "nf4", config.block_size, config.double_quant)
            R = W - state.dequantize(np.float64)
            for _, ar, br, oc in lora_groups(layer.slices, r):
                U, S, Vt = np.linalg.svd(R[oc], full_matrices=False)
                root = np.sqrt(S[:r] / s)
                B[br], A[ar] = U[:, :r] * root, root[:, None] * Vt[:r]
                low[oc] = s * (B[br] @ A[ar])
    layer.weight = NF4Weight(state)
    return A, B


def replace_lora_weights_loftq(model, config: LoftQConfig = LoftQConfig()) -> list[str]:
    """Re-initialise every LoRA layer of an injected float model with LoftQ (PEFT's function name).

    Each LoRALinear with a float base gets Q (its weight becomes an NF4Weight) and A, B from
    `init_loftq`. Returns the names of the layers changed. Quantize the other Linear layers
    afterwards with `quantize_model`.
    """
    names = []
    for name, m in model.named_modules():
        if isinstance(m, LoRALinear) and isinstance(m.weight, Parameter):
            A, B = init_loftq(m, m.lora_A.weight.shape, m.lora_B.weight.shape, config)
            m.lora_A.weight.data = A.astype(m.weight.dtype)
            m.lora_B.weight.data = B.astype(m.weight.dtype)
            names.append(name)
    return names
