"""`LoRAFunction` (the hand-derived LoRA pass as an autograd op) and `LoRALinear` (the layer).

LoRA (Hu et al. 2021, arXiv:2106.09685, §4.1, eq. 3) in the row layout of PyTorch and loralib:

    h = x @ W0.T + b + scaling * (dropout(x) @ A.T) @ B.T      A: (g*r, d_in), B: (W, r)
    scaling = lora_alpha / r        (rsLoRA, Kalajdzievski 2023: lora_alpha / sqrt(r)): lora_scaling

`LoRAFunction` calls `functional.lora_forward` / `functional.lora_backward`, the pass derived by
hand in `lora/functional.py`; its inputs are the Tensors x, A, B (and b when the bias trains),
while W0 and a frozen bias are constants, so the engine never asks for dW0. `lora_linear_composed`
builds the same output from engine primitives (linear, matmul, getitem, concatenate): the oracle the
tests compare against (fused == composed == finite differences, STYLE.md habit 2).

`LoRALinear` replaces a `Linear`. Its options are checked by `LoraConfig` (lora/config.py); what
a LoRA variant changes (init, forward, ΔW, merge, adapter keys) is delegated to `self.variant`
(lora/variant.py; plain LoRA by default, which calls `lora_linear` below). Its parameter names are
PEFT's: the frozen weight and bias keep their names (`...c_attn.weight`, `...c_attn.bias`) and the
adapters are `...c_attn.lora_A.weight` (g*r, d_in) and `...c_attn.lora_B.weight` (W, r). With
`enable_lora` (loralib's MergedLinear) only some equal output slices of a fused projection are
adapted: for GPT-2's c_attn (width 3C), `enable_lora=[True, False, True]` adapts q and v,
slices = [(0, C), (2C, 3C)], g = 2 groups.

Merging (LoRA §4.1): W <- W0 + ΔW, ΔW = scaling * B @ A (never a dropout mask). There is no pristine
copy of W0: unmerge subtracts the same ΔW again, so a merge/unmerge round trip returns W0 up to
rounding: |W - W0| <= a few ulp of (|W0| + |ΔW|) elementwise, about 1e-7 relative in float32 and
1e-16 in float64 (the tests check 4 ulp, and 1e-12 relative in float64).

Shape letters: N rows (all leading dims of x), d_in, d_out, r rank, g groups, W = Σ slice widths.
"""
from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np

from .. import ops
from ..function import Function
from ..nn.layers import Linear, as_generator
from ..nn.module import Module, Parameter
from ..tensor import Tensor, is_grad_enabled
from . import functional
from .config import LoraConfig

__all__ = ["LoRAFunction", "lora_linear", "lora_linear_composed", "LoRAFactor", "LoRALinear"]


# --------------------------------------------------------------------------- the op

class LoRAFunction(Function):
    """The fused LoRA linear op; forward/backward are `functional.lora_forward`/`lora_backward`.

    Inputs (Tensors): x (..., d_in), A (g*r, d_in), B (W, r), and optionally b (d_out,) when the
    bias is trainable. Constants (keywords): W0 (d_out, d_in), frozen_bias (d_out,) or None,
    scaling, mask (x's shape, 0/1) or None, keep_prob, slices. No gradient for W0 is ever computed.
    """

    @staticmethod
    def forward(ctx, x: np.ndarray, A: np.ndarray, B: np.ndarray, b: np.ndarray | None = None,
                W0: np.ndarray | None = None, frozen_bias: np.ndarray | None = None, scaling: float = 1.0,
                mask: np.ndarray | None = None, keep_prob: float = 1.0,
                slices: Sequence[tuple[int, int]] | None = None) -> np.ndarray:
        if b is not None and frozen_bias is not None:
            raise ValueError("LoRAFunction: give the bias either as a trainable input b or as the "
                             "constant frozen_bias, not both")
        y, cache = functional.lora_forward(x, W0, b if b is not None else frozen_bias, A, B, scaling,
                                           dropout_mask=mask, keep_prob=keep_prob, slices=slices)
        ctx.save_for_backward(cache)
        ctx.trainable_bias = b is not None
        return y

    @staticmethod
    def backward(ctx, g: np.ndarray) -> tuple[np.ndarray | None, ...]:
        (cache,) = ctx.saved
        need = ctx.needs_input_grad
        need_db = ctx.trainable_bias and need[3]
        grads = functional.lora_backward(g, cache, need_dx=need[0], need_db=need_db)
        out = (grads["dx"], grads["dA"] if need[1] else None, grads["dB"] if need[2] else None)
        return out + (grads["db"],) if ctx.trainable_bias else out


def _arr(t):
    return t.data if isinstance(t, Tensor) else (None if t is None else functional.as_frozen_weight(t))


def lora_linear(x: Tensor, W0: np.ndarray | Tensor, b: Tensor | np.ndarray | None, A: Tensor, B: Tensor,
                scaling: float, mask: np.ndarray | None = None, keep_prob: float = 1.0,
                slices: Sequence[tuple[int, int]] | None = None) -> Tensor:
    """y = x W0ᵀ + b + scaling · (x̃ A_iᵀ) B_iᵀ per slice, through `LoRAFunction` (hand-derived backward).

    W0 is a constant (an array, or a Tensor that must not require grad). b is a trainable input when
    it is a Tensor with requires_grad, else a constant (or None).
    Raises:
        ValueError: W0 requires grad (LoRA never computes dW0); the shape errors of `lora_forward`.
    """
    if isinstance(W0, Tensor) and W0.requires_grad:
        raise ValueError("lora_linear: W0 requires grad, but LoRA never computes dL/dW0 (W0 is frozen); "
                         "set W0.requires_grad = False (or fine-tune a plain Linear)")
    consts = dict(W0=_arr(W0), scaling=float(scaling), mask=_arr(mask), keep_prob=float(keep_prob),
                  slices=slices)
    if isinstance(b, Tensor) and b.requires_grad:
        return LoRAFunction.apply(x, A, B, b, **consts)
    return LoRAFunction.apply(x, A, B, frozen_bias=_arr(b), **consts)


def lora_linear_composed(x: Tensor | np.ndarray, W0: np.ndarray | Tensor, b: Tensor | np.ndarray | None,
                         A: Tensor, B: Tensor, scaling: float, mask: np.ndarray | None = None,
                         keep_prob: float = 1.0, slices: Sequence[tuple[int, int]] | None = None) -> Tensor:
    """The same output as `lora_linear`, built from engine ops (linear, mul, matmul, concatenate).

    The test oracle: its gradients come from the ops' own backward formulas, not from the LoRA
    derivation. Arguments as `lora_linear` (W0 constant; b a Tensor or array or None).
    """
    x = x if isinstance(x, Tensor) else Tensor(np.asarray(x))
    W0 = Tensor(_arr(W0))                                       # constant
    d_out = W0.shape[0]
    y = ops.linear(x, W0, b if (b is None or isinstance(b, Tensor)) else Tensor(np.asarray(b)))
    xt = x                                                      # (..., d_in)
    if mask is not None:
        xt = x * (np.asarray(mask).astype(x.dtype) / x.dtype.type(keep_prob))
    u = ops.matmul(xt, ops.transpose(A))                        # (..., g*r)
    if slices is None:
        return y + ops.matmul(u, ops.transpose(B)) * float(scaling)
    r = B.shape[1]
    lead = x.shape[:-1]
    pieces, pos = [], 0
    for i, (s0, s1) in sorted(enumerate(slices), key=lambda t: t[1][0]):
        if s0 > pos:
            pieces.append(Tensor(np.zeros((*lead, s0 - pos), dtype=x.dtype)))
        Bi = ops.getitem(B, slice(sum(b1 - b0 for b0, b1 in slices[:i]),
                                  sum(b1 - b0 for b0, b1 in slices[:i + 1])))
        ui = ops.getitem(u, (Ellipsis, slice(i * r, (i + 1) * r)))   # (..., r)
        pieces.append(ops.matmul(ui, ops.transpose(Bi)))       # (..., w_i)
        pos = s1
    if pos < d_out:
        pieces.append(Tensor(np.zeros((*lead, d_out - pos), dtype=x.dtype)))
    delta = pieces[0] if len(pieces) == 1 else ops.concatenate(pieces, axis=-1)  # (..., d_out)
    return y + delta * float(scaling)


# --------------------------------------------------------------------------- the layer

class LoRAFactor(Module):
    """A holder for one LoRA factor, so its parameter is named `lora_A.weight` / `lora_B.weight`."""

    def __init__(self, data: np.ndarray):
        super().__init__()
        self.weight = Parameter(data)

    def extra_repr(self) -> str:
        return f"shape={self.weight.shape}"


class LoRALinear(Module):
    """A frozen Linear plus a trainable low-rank update: y = x W0ᵀ + b + s · (x̃ Aᵀ) Bᵀ.

    Args:
        base: the `Linear` to adapt. Its weight and bias Parameters are taken over (same objects,
            same names `weight`/`bias`) and frozen (requires_grad=False); the bias can be unfrozen
            later (`mark_only_lora_as_trainable(bias=...)`), the weight never is.
        r, lora_alpha, lora_dropout, use_rslora, init_lora_weights, enable_lora, variant: as in
            `LoraConfig`, which checks them (one place for every check; the message names the
            field). r > min(d_in, d_out) is allowed here (an over-parametrised update, used by the
            scaling tests); `inject_lora` refuses it for a model, naming the module.
            lora_dropout acts on the LoRA branch input only, in training mode only, masks drawn
            from `rng`. init_lora_weights: True: A ~ U(-1/sqrt(d_in), 1/sqrt(d_in)) (loralib's
            kaiming_uniform(a=√5)), B = 0; "gaussian": A ~ N(0, 1/r²), B = 0; False: both random
            (ΔW != 0, for tests); the functions are registered in `variant.LORA_INITS`.
            enable_lora: None (one group over all d_out rows) or k bools, d_out divisible by k:
            the output is cut into k equal slices and only the True ones are adapted (loralib's
            MergedLinear; [True, False, True] on c_attn adapts q and v).
        rng: np.random.Generator or seed, for the initialisation and the dropout masks.
    `LoRALinear.from_config(base, config, rng)` takes the same options as a LoraConfig.
    Attributes:
        weight, bias: the frozen base parameters. lora_A.weight (g*r, d_in), lora_B.weight (W, r).
        r, lora_alpha, use_rslora, scaling, lora_dropout, slices (list of (start, stop) or None),
        merged (bool), adapter_enabled (bool), base (a Linear view of weight/bias, for rank.py),
        variant (the `LoraVariant` class doing init/forward/ΔW/merge), lora_config (the LoraConfig).
    Raises:
        TypeError: base is not a Linear. ValueError: a bad option (from LoraConfig, prefixed
        "LoRALinear: "), or enable_lora that does not divide d_out.
    """

    def __init__(self, base: Linear, r: int, lora_alpha: float, lora_dropout: float = 0.0,
                 use_rslora: bool = False, init_lora_weights: bool | str = True,
                 enable_lora: list[bool] | None = None, rng: np.random.Generator | int | None = None,
                 variant: str = "lora"):
        try:
            config = LoraConfig(r=r, lora_alpha=lora_alpha, lora_dropout=lora_dropout, use_rslora=use_rslora,
                                init_lora_weights=init_lora_weights, enable_lora=enable_lora, variant=variant)
        except (TypeError, ValueError) as e:
            raise type(e)(f"LoRALinear: {e}") from None
        self._setup(base, config, rng)

    @classmethod
    def from_config(cls, base: Linear, config: LoraConfig,
                    rng: np.random.Generator | int | None = None) -> LoRALinear:
        """A LoRALinear adapting `base` with the options of `config` (its target_modules are not used)."""
        if not isinstance(config, LoraConfig):
            raise TypeError(f"LoRALinear.from_config: config must be a LoraConfig, got {type(config).__name__}")
        layer = cls.__new__(cls)
        layer._setup(base, config, rng)
        return layer

    def _setup(self, base: Linear, config: LoraConfig, rng) -> None:
        from .variant import get_variant  # variant.py imports this module

        super().__init__()
        if not isinstance(base, Linear):
            raise TypeError(f"LoRALinear: base must be a minilora.nn.Linear, got {type(base).__name__}")
        d_out, d_in = base.weight.shape
        slices = None
        if config.enable_lora is not None:
            k = len(config.enable_lora)
            if d_out % k:
                raise ValueError(f"LoRALinear: enable_lora has {k} entries but d_out = {d_out} is not "
                                 f"divisible by {k} (the output is cut into {k} equal slices)")
            w = d_out // k
            slices = [(i * w, (i + 1) * w) for i, e in enumerate(config.enable_lora) if e]

        self.in_features, self.out_features = d_in, d_out
        self.weight = base.weight
        self.weight.requires_grad = False
        self.bias = base.bias
        if self.bias is not None:
            self.bias.requires_grad = False
        self.lora_config = config
        self.r, self.lora_alpha, self.use_rslora = config.r, float(config.lora_alpha), config.use_rslora
        self.scaling = config.scaling
        self.lora_dropout = float(config.lora_dropout)
        self.slices = slices
        self.rng = as_generator(rng)
        self.merged = False
        self.adapter_enabled = True
        self.variant = get_variant(config.variant)
        self.variant.init(self, config.init_lora_weights)

    # ---- views --------------------------------------------------------------------------------
    @property
    def base(self) -> Linear:
        """A plain `Linear` sharing this layer's weight and bias Parameters (for rank.py, unloading)."""
        return Linear.from_parameters(self.weight, self.bias)

    def delta_weight(self) -> np.ndarray:
        """ΔW of the variant (plain LoRA: scaling * B_i @ A_i on each slice's rows): ndarray (d_out, d_in)."""
        return self.variant.delta_weight(self)

    def set_scaling(self, lora_alpha: float | None = None, use_rslora: bool | None = None) -> None:
        """Change lora_alpha / use_rslora and recompute `scaling` (refused while merged).

        Raises: RuntimeError while merged; ValueError for a bad value (checked by LoraConfig).
        """
        if self.merged:
            raise RuntimeError("LoRALinear.set_scaling: unmerge() first (the merged ΔW used the old scaling)")
        changes = {k: v for k, v in (("lora_alpha", lora_alpha), ("use_rslora", use_rslora)) if v is not None}
        try:
            config = self.lora_config.replace(**changes)
        except (TypeError, ValueError) as e:
            raise type(e)(f"LoRALinear.set_scaling: {e}") from None
        self.lora_config = config
        self.lora_alpha, self.use_rslora, self.scaling = float(config.lora_alpha), config.use_rslora, config.scaling

    # ---- merging ------------------------------------------------------------------------------
    def merge(self) -> None:
        """W <- W0 + ΔW (a new array; `variant.merge`); forward becomes the plain linear.

        Warns and does nothing if already merged.
        """
        if self.merged:
            warnings.warn("LoRALinear.merge(): already merged; nothing changed", UserWarning, stacklevel=2)
            return
        self.variant.merge(self)                 # plain LoRA: weight.data = weight.data + delta_weight()
        self.merged = True

    def unmerge(self) -> None:
        """W <- W - ΔW (a new array; `variant.unmerge`). Warns and does nothing if not merged."""
        if not self.merged:
            warnings.warn("LoRALinear.unmerge(): not merged; nothing changed", UserWarning, stacklevel=2)
            return
        self.variant.unmerge(self)               # plain LoRA: weight.data = weight.data - delta_weight()
        self.merged = False

    # ---- forward ------------------------------------------------------------------------------
    def forward(self, x: Tensor | np.ndarray) -> Tensor:
        """x (..., d_in) -> (..., d_out).

        Merged: the plain linear with W0 + ΔW. Adapter disabled: the plain linear with W0.
        Otherwise the variant's forward (plain LoRA: the fused op with the hand-derived backward),
        with dropout on the LoRA input in training.
        Raises:
            RuntimeError: the adapter is disabled while merged; training a merged layer with grad
                enabled (the factors would get no gradient: unmerge first); the frozen weight was
                made trainable (LoRA never computes dW0).
            ValueError: A = B = 0 in training (a saddle point: neither factor would ever move).
        """
        if self.merged:
            if not self.adapter_enabled:
                raise RuntimeError("LoRALinear: adapter disabled while merged; unmerge() first")
            if (self.training and is_grad_enabled()
                    and any(self.get_parameter(k).requires_grad for k in self.variant.adapter_keys)):
                raise RuntimeError("LoRALinear: training a merged layer would give lora_A/lora_B no "
                                   "gradient; call unmerge() first (or eval() / no_grad() to evaluate)")
            return ops.linear(x, self.weight, self.bias)
        if not self.adapter_enabled:
            return ops.linear(x, self.weight, self.bias)
        if self.weight.requires_grad and is_grad_enabled():
            raise RuntimeError("LoRALinear: the frozen weight has requires_grad=True, but LoRA never "
                               "computes dL/dW0; freeze it (mark_only_lora_as_trainable) or merge_and_unload "
                               "for full fine-tuning")
        A, B = getattr(self, "lora_A", None), getattr(self, "lora_B", None)     # VeRA has neither
        if A is not None and B is not None and self.training and is_grad_enabled() \
                and A.weight.requires_grad and B.weight.requires_grad \
                and not A.weight.data.any() and not B.weight.data.any():
            raise ValueError("LoRALinear: lora_A and lora_B are both zero: a saddle point where both "
                             "gradients vanish forever (dA = s·(GB)ᵀX̃ = 0, dB = s·Gᵀ(X̃Aᵀ) = 0); "
                             "initialise one factor randomly")
        x = x if isinstance(x, Tensor) else Tensor(np.asarray(x))
        mask, keep = None, 1.0
        if self.training and self.lora_dropout > 0:
            keep = 1.0 - self.lora_dropout
            mask = self.rng.random(x.shape) >= self.lora_dropout        # (..., d_in) bool
        return self.variant.forward(self, x, mask, keep)

    def extra_repr(self) -> str:
        s = (f"in_features={self.in_features}, out_features={self.out_features}, r={self.r}, "
             f"lora_alpha={self.lora_alpha:g}, scaling={self.scaling:.6g}")
        if self.use_rslora:
            s += ", rslora"
        if self.lora_dropout:
            s += f", lora_dropout={self.lora_dropout}"
        if self.slices is not None:
            s += f", slices={self.slices}"
        return s + (", merged" if self.merged else "")
