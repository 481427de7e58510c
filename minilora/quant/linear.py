r"""A frozen Linear stored in NF4 (bitsandbytes' Linear4bit), and QLoRA = LoRA on top of it.

`NF4Weight` is the frozen weight W0 (d_out, d_in) held as a `QuantState` (packed 4-bit codes and
block constants, nf4.py) and never as floats. It is a *frozen-weight operator*: it opts out of
NumPy's ufuncs (`__array_ufunc__ = None`), so in `X @ W0.T` and `G @ W0` NumPy hands the product to
its `__rmatmul__`, which dequantizes W0 one tile of rows at a time (a tile is a run of whole
64-weight blocks when d_in is a multiple of 64; at most `tile_elems` weights, 2^20 by default),
multiplies, and drops the tile. Those are exactly the two products the frozen path of LoRA needs:

    forward   Y  = X W0ᵀ + b + s · (X̃ Aᵀ) Bᵀ
    backward  dX = G W0 + s · (G B A) ⊙ M / k,   dA = s · (G B)ᵀ X̃,   dB = s · Gᵀ (X̃ Aᵀ)

(derived in lora/functional.py). **Why the derivation is unchanged**: W0 enters only as a constant
matrix, in the two products X W0ᵀ and G W0; dA and dB never involve W0, and dW0 is never formed.
Replacing W0 by the constant dequant(Q) changes the value of those two products, not the chain rule.
So `lora_forward` / `lora_backward` run as they are, with `W0 = NF4Weight` (their validation accepts
an object with `__array_ufunc__ = None` instead of converting it: `functional.as_frozen_weight`).
The model trained is exactly the float model with W0 replaced by dequant(Q).

`QuantLinear` is a frozen layer y = x W0ᵀ + b for the Linear layers that are not adapted (in QLoRA
every Linear of the transformer blocks is quantized); its op `NF4LinearFunction` has the backward
dx = G W0 (+ db = Σ G if the bias trains) and no dW0. The tied lm_head stays float (its weight is
the embedding table), as bitsandbytes leaves lm_head alone.

`quantize_model` turns a (LoRA-injected) GPT into a QLoRA model in place: quantize *after*
`get_peft_model`, since injection looks for float `Linear` layers. `merge_and_unload_quantized`
merges ΔW into a quantized base either keeping the merged weight in float or re-quantizing it.

Not supported on a 4-bit base (each raises a TypeError that says so): `LoRALinear.merge` (use
`merge_and_unload_quantized`), `disable_adapters` and the rank tools of rank.py, which read the base
as a float `Linear`. The 4-bit weights are not Parameters, so they are not in `state_dict()` nor in
`print_trainable_parameters`' "all params"; `base_memory` counts them.
"""
from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from ..function import Function
from ..lora.layer import LoRALinear
from ..nn.layers import Linear
from ..nn.module import Module, Parameter
from ..tensor import Tensor
from .nf4 import QuantState, quantize_4bit

__all__ = ["NF4Weight", "NF4LinearFunction", "QuantLinear", "quantize_model", "quantized_layers",
           "base_memory", "memory_lines", "merge_and_unload_quantized"]

_MERGE_MSG = ("the frozen weight is stored in 4 bits (NF4Weight) and has no float array to add to; merge with "
              "minilora.quant.merge_and_unload_quantized(model, requantize=False|True), or take .dequantize()")


class _Transposed:
    """W0ᵀ as an operator: `X @ W0.T` calls `NF4Weight.matmul_t(X)`."""

    __array_ufunc__ = None

    def __init__(self, w: NF4Weight):
        self.w = w
        self.shape = w.shape[::-1]
        self.dtype, self.ndim = w.dtype, 2

    def __rmatmul__(self, X: np.ndarray) -> np.ndarray:
        return self.w.matmul_t(X)


class NF4Weight:
    """A frozen (d_out, d_in) weight stored in 4 bits; `X @ W.T` and `G @ W` dequantize tile by tile.

    Args:
        state: the `QuantState` of a 2-D array (from `quantize_4bit`).
        tile_elems: most weights decoded at once (the float weight is never stored whole, unless
            it fits one tile: then it is a temporary of the product, as in bitsandbytes).
    Attributes: shape, dtype (the compute dtype: the original float dtype), ndim = 2, state,
        requires_grad (always False), grad (None), data (itself: the layer code reads `weight.data`).
    Raises: ValueError for a state that is not 2-D; TypeError on any implicit conversion to an
        array or on `+`/`-` (merging needs an explicit choice: see `merge_and_unload_quantized`).
    """

    __array_ufunc__ = None            # NumPy defers `ndarray @ self` to our __rmatmul__
    grad = None

    def __init__(self, state: QuantState, tile_elems: int = 1 << 20):
        if not isinstance(state, QuantState) or len(state.shape) != 2:
            got = getattr(state, "shape", state)
            raise ValueError(f"NF4Weight: expected the QuantState of a 2-D weight, got {got}")
        self.state = state
        self.shape = tuple(state.shape)
        self.dtype = np.dtype(state.dtype)
        self.ndim = 2
        self.tile_elems = int(tile_elems)

    @classmethod
    def from_float(cls, W: np.ndarray, quant_type: str = "nf4", block_size: int = 64, double_quant: bool = True,
                   tile_elems: int = 1 << 20) -> NF4Weight:
        """Quantize a float (d_out, d_in) array (see `quantize_4bit` for the arguments and errors)."""
        W = np.asarray(W.data if isinstance(W, Tensor) else W)
        if W.ndim != 2:
            raise ValueError(f"NF4Weight.from_float: expected a 2-D weight (d_out, d_in), got shape {W.shape}")
        return cls(quantize_4bit(W, quant_type, block_size, double_quant), tile_elems)

    # ---- the frozen-tensor surface a LoRALinear reads --------------------------------------
    @property
    def data(self) -> NF4Weight:
        return self

    @property
    def requires_grad(self) -> bool:
        return False

    @requires_grad.setter
    def requires_grad(self, flag: bool) -> None:
        if flag:
            raise ValueError("NF4Weight: a 4-bit weight cannot train (QLoRA trains only the adapters); "
                             "dequantize it into a float Parameter for full fine-tuning")

    @property
    def size(self) -> int:
        return self.shape[0] * self.shape[1]

    @property
    def T(self) -> _Transposed:
        return _Transposed(self)

    def nbytes(self) -> int:
        """Bytes held (codes + constants + the per-tensor mean): about n · 4.127 / 8 with double quantization."""
        return sum(self.state.nbytes().values())

    def dequantize(self, dtype=None) -> np.ndarray:
        """A float copy of the whole weight (d_out, d_in), in `dtype` (default the compute dtype)."""
        return self.state.dequantize(dtype or self.dtype)

    # ---- the two products ------------------------------------------------------------------
    def tiles(self) -> Iterator[tuple[int, int, np.ndarray]]:
        """Yield (r0, r1, W0[r0:r1]) decoded in the compute dtype, a few rows (whole blocks) at a time."""
        d_out, d_in = self.shape
        bs = self.state.block_size
        rows = max(1, self.tile_elems // d_in)
        absmax = self.state.absmax_float()                     # (n_blocks,) decoded once per product
        for r0 in range(0, d_out, rows):
            r1 = min(d_out, r0 + rows)
            start, stop = r0 * d_in, r1 * d_in
            b0, b1 = start // bs, -(-stop // bs)
            flat = self.state.dequantize_blocks(b0, b1, absmax)[start - b0 * bs:stop - b0 * bs]
            yield r0, r1, flat.reshape(r1 - r0, d_in).astype(self.dtype, copy=False)

    def matmul_t(self, X: np.ndarray) -> np.ndarray:
        """X W0ᵀ: X (N, d_in) -> (N, d_out), in X's dtype."""
        X = np.asarray(X)
        out = None
        for r0, r1, Wt in self.tiles():
            if r1 - r0 == self.shape[0]:
                return X @ Wt.T                                # one tile: one GEMM
            if out is None:
                out = np.empty((X.shape[0], self.shape[0]), dtype=X.dtype)
            out[:, r0:r1] = X @ Wt.T                           # (N, r1 - r0)
        return out

    def __rmatmul__(self, G: np.ndarray) -> np.ndarray:
        """G W0: G (N, d_out) -> (N, d_in), in G's dtype (the input gradient of the frozen path)."""
        G = np.asarray(G)
        out = None
        for r0, r1, Wt in self.tiles():
            part = G[:, r0:r1] @ Wt                            # (N, d_in)
            if out is None:
                out = part
            else:
                out += part
        return out

    # ---- refusals ---------------------------------------------------------------------------
    def __array__(self, *args, **kwargs):
        raise TypeError("NF4Weight: the 4-bit weight is never turned into a float array implicitly "
                        "(that would undo the memory saving); call .dequantize() for a float copy")

    def __add__(self, other):
        raise TypeError(f"NF4Weight: {_MERGE_MSG}")

    __radd__ = __sub__ = __rsub__ = __add__

    def __repr__(self) -> str:
        s = self.state
        return (f"NF4Weight(shape={self.shape}, {s.quant_type}, block_size={s.block_size}, "
                f"double_quant={s.double_quant}, {s.bits_per_param():.3f} bits/param)")


# --------------------------------------------------------------------------- the frozen quantized layer

class NF4LinearFunction(Function):
    """y = x W0ᵀ + b with W0 an `NF4Weight` constant; backward dx = G W0, db = Σ_rows G; never dW0.

    Inputs (Tensors): x (..., d_in), and b (d_out,) only when the bias trains. Constants: W0,
    frozen_bias (d_out,) or None.
    """

    @staticmethod
    def forward(ctx, x: np.ndarray, b: np.ndarray | None = None, W0: NF4Weight | None = None,
                frozen_bias: np.ndarray | None = None) -> np.ndarray:
        d_out, d_in = W0.shape
        if x.shape[-1] != d_in:
            raise ValueError(f"QuantLinear: input has shape {x.shape}, whose last dim should be d_in = {d_in}")
        if x.dtype != W0.dtype:
            raise TypeError(f"QuantLinear: input dtype {x.dtype} differs from the layer's compute dtype {W0.dtype}")
        y = x.reshape(-1, d_in) @ W0.T                         # (N, d_out), tile by tile
        bias = b if b is not None else frozen_bias
        if bias is not None:
            y += bias
        ctx.save_for_backward(W0, x.shape)
        ctx.trainable_bias = b is not None
        return y.reshape(*x.shape[:-1], d_out)

    @staticmethod
    def backward(ctx, g: np.ndarray):
        W0, xshape = ctx.saved
        G = g.reshape(-1, W0.shape[0])                         # (N, d_out)
        dx = (G @ W0).reshape(xshape) if ctx.needs_input_grad[0] else None
        if ctx.trainable_bias:
            return dx, (G.sum(axis=0) if ctx.needs_input_grad[1] else None)
        return (dx,)


class QuantLinear(Module):
    """A frozen Linear whose weight is an `NF4Weight` (bitsandbytes' Linear4bit): y = x W0ᵀ + b.

    Build it with `QuantLinear.from_linear(linear, ...)` (the float weight is dropped). Attributes:
    weight (NF4Weight, not a Parameter: not in state_dict, never trained), bias (Parameter, frozen
    unless unfrozen by hand), in_features, out_features.
    """

    def __init__(self, weight: NF4Weight, bias: Parameter | None = None):
        super().__init__()
        if not isinstance(weight, NF4Weight):
            raise TypeError(f"QuantLinear: weight must be an NF4Weight, got {type(weight).__name__}")
        self.out_features, self.in_features = weight.shape
        self.weight = weight
        self.bias = bias

    @classmethod
    def from_linear(cls, linear: Linear, quant_type: str = "nf4", block_size: int = 64,
                    double_quant: bool = True) -> QuantLinear:
        """Quantize a float `Linear` (its bias Parameter is kept, frozen)."""
        if not isinstance(linear, Linear):
            raise TypeError(f"QuantLinear.from_linear: expected a Linear, got {type(linear).__name__}")
        if linear.bias is not None:
            linear.bias.requires_grad = False
        return cls(NF4Weight.from_float(linear.weight.data, quant_type, block_size, double_quant), linear.bias)

    def forward(self, x: Tensor | np.ndarray) -> Tensor:
        """x (..., d_in) -> (..., d_out)."""
        x = x if isinstance(x, Tensor) else Tensor(np.asarray(x))
        if self.bias is not None and self.bias.requires_grad:
            return NF4LinearFunction.apply(x, self.bias, W0=self.weight)
        return NF4LinearFunction.apply(x, W0=self.weight, frozen_bias=None if self.bias is None else self.bias.data)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, weight={self.weight!r}"


# --------------------------------------------------------------------------- whole models

def _replace_child(model: Module, name: str, new: Module) -> None:
    """Put `new` at the dotted `name`, keeping the child's place among its siblings."""
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name)
    order = list(parent._modules)
    setattr(parent, child, new)
    for k in order:
        parent._modules.move_to_end(k)


def quantized_layers(model: Module) -> list[tuple[str, Module]]:
    """(name, module) of every layer whose frozen weight is an NF4Weight (QuantLinear or LoRALinear)."""
    return [(n, m) for n, m in model.named_modules()
            if isinstance(m, (QuantLinear, LoRALinear)) and isinstance(m.weight, NF4Weight)]


def quantize_model(model: Module, quant_type: str = "nf4", block_size: int = 64, double_quant: bool = True,
                   skip: tuple[str, ...] = ("lm_head",)) -> list[str]:
    """QLoRA's base: store every Linear weight of `model` in 4 bits, in place; return the names.

    Plain `Linear` layers become `QuantLinear`; a `LoRALinear`'s frozen weight becomes an `NF4Weight`
    (its adapters stay float). Skipped: names ending in an item of `skip`, and weights shared with
    another parameter (the tied lm_head = wte). Call it after `get_peft_model`. Every float weight
    that was quantized is released (no reference kept). Returns the quantized module names.
    """
    counts: dict[int, int] = {}
    for _, p in model.named_parameters(remove_duplicate=False):
        counts[id(p)] = counts.get(id(p), 0) + 1
    done = []
    for name, m in list(model.named_modules()):
        if any(name == s or name.endswith("." + s) for s in skip):
            continue
        if isinstance(m, LoRALinear) and isinstance(m.weight, Parameter) and counts[id(m.weight)] == 1:
            m.weight = NF4Weight.from_float(m.weight.data, quant_type, block_size, double_quant)
            done.append(name)
        elif type(m) is Linear and counts[id(m.weight)] == 1 and not any(
                name.startswith(d + ".") for d in done):
            _replace_child(model, name, QuantLinear.from_linear(m, quant_type, block_size, double_quant))
            done.append(name)
    return done


def base_memory(model: Module, block_size: int = 64) -> dict[str, int]:
    """Bytes of the quantized base weights of `model`, measured three ways on the same weights.

    Returns dict(n_params, float32 (4 bytes each), nf4 (codes + fp32 absmax, re-quantized without
    double quantization to measure it), nf4_dq (codes + 8-bit constants + fp32 second-level constants
    + mean), held (what the model holds now), other_float (bytes of every parameter still float:
    embeddings, norms, biases, adapters)).
    """
    layers = quantized_layers(model)
    out = {"n_params": 0, "float32": 0, "nf4": 0, "nf4_dq": 0, "held": 0}
    for _, m in layers:
        W = m.weight
        out["n_params"] += W.size
        out["float32"] += 4 * W.size
        out["held"] += W.nbytes()
        deq = W.dequantize(np.float32)
        for key, dq in (("nf4", False), ("nf4_dq", True)):
            st = W.state if W.state.double_quant == dq else quantize_4bit(deq, W.state.quant_type, block_size, dq)
            out[key] += sum(st.nbytes().values())
    out["other_float"] = int(sum(p.data.nbytes for p in model.parameters()))
    return out


def memory_lines(mem: dict[str, int]) -> list[str]:
    """Printable lines of a `base_memory` dict: the three storages of the quantized weights and their ratios."""
    n, f32 = mem["n_params"], mem["float32"]
    lines = [f"base memory of the {n:,} quantized Linear weights (measured):"]
    for key, label in (("float32", "float32"), ("nf4", "NF4 (fp32 absmax / 64)"), ("nf4_dq", "NF4 + double quant")):
        lines.append(f"  {label:<24} {mem[key] / 2**10:9.1f} KiB  {8 * mem[key] / n:6.3f} bits/param  "
                     f"{mem[key] / f32:.3f} x float32")
    lines.append(f"  still float (embeddings, norms, biases, adapters): {mem['other_float'] / 2**10:.1f} KiB; whole "
                 f"model {(mem['held'] + mem['other_float']) / (f32 + mem['other_float']):.3f} x its float32 size")
    return lines


def merge_and_unload_quantized(model: Module, requantize: bool) -> Module:
    """Merge each LoRA layer on a quantized base: W = dequant(Q) + ΔW, then keep W in float or re-quantize.

    Every LoRALinear of `model` (a LoraModel or GPT, changed in place) is replaced by a float `Linear`
    (requantize=False: exact, W = Q + ΔW up to float rounding, but that layer is float32 again) or a
    `QuantLinear` of nf4(W) (requantize=True: 4 bits, with a fresh NF4 rounding error of about ‖W‖/10;
    an update smaller than that can be rounded away: tests/test_quant.py::test_merge_into_quantized_base,
    lesson 12 §9 measures both on a trained model). Returns the plain model
    (LoraModel's base_model when given one). Float-base LoRA layers are merged normally.
    """
    base = getattr(model, "base_model", model)
    for name, m in list(base.named_modules()):
        if not isinstance(m, LoRALinear):
            continue
        if not isinstance(m.weight, NF4Weight):
            if not m.merged:
                m.merge()
            _replace_child(base, name, Linear.from_parameters(m.weight, m.bias))
            continue
        W = m.weight.dequantize() + m.delta_weight().astype(m.weight.dtype)       # (d_out, d_in)
        if requantize:
            st = m.weight.state
            new = QuantLinear(NF4Weight.from_float(W, st.quant_type, st.block_size, st.double_quant), m.bias)
        else:
            new = Linear.from_parameters(Parameter(W, requires_grad=False), m.bias)
        _replace_child(base, name, new)
    return base
