"""The LoRA variant hook and the initialisation registry; plain LoRA is their first user.

A LoRA variant (DoRA, PiSSA, VeRA, ...) changes some of five things, and only these; PEFT's
`LoraVariant` (peft/tuners/lora/layer.py) draws the same line. Here each is a class method that
receives the `LoRALinear` it serves:

    init(layer, init_lora_weights)      create the adapter parameters (plain LoRA: lora_A, lora_B)
    forward(layer, x, mask, keep_prob)  the unmerged output, a Tensor (..., d_out); the autograd op
                                        it builds defines the backward (plain LoRA: `lora_linear`,
                                        the hand-derived `LoRAFunction`)
    delta_weight(layer)                 ΔW as an ndarray (d_out, d_in)
    merge(layer) / unmerge(layer)       W <- W0 + ΔW and back
    adapter_keys                        the layer-local names of the adapter parameters: what
                                        trains, what `save_adapter` writes
    prepare_model / model_tensors /     optional, for state shared across the layers of a model
    load_model_tensors                  (VeRA's frozen random projections): set it up once the
                                        LoraModel exists, name what the adapter file stores, take
                                        it back on load (plain LoRA: nothing)

`LoRALinear` keeps everything the variants share: the frozen base, the options (checked by
`LoraConfig`), the scaling (`functional.lora_scaling`), dropout masks, the merged / disabled states
and their errors. It resolves `config.variant` once, at construction, so the hook costs one
method call per forward.

Registries. `VARIANTS` maps a name (LoraConfig.variant) to a variant class; `LORA_INITS` maps an
`init_lora_weights` value to a function (layer, shape_A, shape_B) -> (A, B), float arrays that
the variant casts to the layer's dtype. A value may be the object itself or a "module:attribute"
string, imported on first use, so a variant module is registered without an import cycle.

How to add a LoRA variant (the whole recipe; no other file changes):
    1. Write `minilora/lora/<name>.py` with `class <Name>(LoraVariant)`, overriding only what
       differs (e.g. `init` for an SVD-based start, `delta_weight` + `forward` for a new update
       rule). Cite the paper and equation in its docstring, shapes in comments.
    2. Add one entry: `VARIANTS["<name>"] = "minilora.lora.<name>:<Name>"` below (or, for a new
       start only, `LORA_INITS["<name>"] = "minilora.lora.<name>:init_<name>"`).
    3. Test it in `tests/test_lora_variants.py`: forward == `delta_weight` applied densely,
       gradients == finite differences (float64, `minilora.check_function`), merge/unmerge round
       trip, and a save_adapter/load_lora_model round trip (logits equal).
    Users select it with `LoraConfig(variant="<name>")` (or `init_lora_weights="<name>"`).
"""
from __future__ import annotations

import importlib
import math
from typing import Any, Callable

import numpy as np

from ..tensor import Tensor
from .functional import lora_merge_delta
from .layer import LoRAFactor, LoRALinear, lora_linear

__all__ = ["LoraVariant", "VARIANTS", "LORA_INITS", "get_variant", "peft_model_class", "get_init", "is_known_init",
           "init_kaiming_uniform", "init_gaussian", "init_random"]


# --------------------------------------------------------------------------- initialisations

def init_kaiming_uniform(layer: LoRALinear, shape_A: tuple[int, int],
                         shape_B: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """init_lora_weights=True: A ~ U(-1/sqrt(d_in), 1/sqrt(d_in)), B = 0, so ΔW = 0 at step 0.

    loralib's `kaiming_uniform_(A, a=sqrt(5))`, whose bound is 1/sqrt(fan_in) (LoRA §4.1: "random
    Gaussian initialization for A and zero for B"; loralib and PEFT use this uniform). Draws from
    layer.rng. Returns float64 arrays A shape_A (g*r, d_in), B shape_B (W, r).
    """
    bound = 1.0 / math.sqrt(shape_A[1])
    return layer.rng.uniform(-bound, bound, shape_A), np.zeros(shape_B)


def init_gaussian(layer: LoRALinear, shape_A: tuple[int, int],
                  shape_B: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """init_lora_weights="gaussian": A ~ N(0, σ²) with σ = 1/r (PEFT's "gaussian"), B = 0."""
    return layer.rng.normal(0.0, 1.0 / layer.r, shape_A), np.zeros(shape_B)


def init_random(layer: LoRALinear, shape_A: tuple[int, int],
                shape_B: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """init_lora_weights=False: A as for True, B ~ U(-1/sqrt(r), 1/sqrt(r)): ΔW != 0 (tests only)."""
    A, _ = init_kaiming_uniform(layer, shape_A, shape_B)                   # A is drawn first
    r = shape_B[1]
    return A, layer.rng.uniform(-1 / math.sqrt(r), 1 / math.sqrt(r), shape_B)


LORA_INITS: dict[Any, Callable | str] = {True: init_kaiming_uniform, False: init_random, "gaussian": init_gaussian}
# LoftQ (arXiv:2310.08659): A, B from the SVD of W - nf4(W); quantizes the layer's base (minilora/quant).
LORA_INITS["loftq"] = "minilora.quant.loftq:init_loftq"
# starts taken from W0 (they leave a residual: variant "residual", lora/pissa.py); "pissa_niter_K" is parsed
LORA_INITS.update(pissa="minilora.lora.pissa:init_pissa", olora="minilora.lora.pissa:init_olora")


def _resolve(entry: Any) -> Any:
    if isinstance(entry, str):
        module, _, attr = entry.partition(":")
        return getattr(importlib.import_module(module), attr)
    return entry


def is_known_init(init_lora_weights: Any) -> bool:
    """True for a key of LORA_INITS or PEFT's "pissa_niter_K" (K an int >= 0: randomised SVD)."""
    from .pissa import parse_pissa_niter

    if isinstance(init_lora_weights, bool) or (isinstance(init_lora_weights, str) and init_lora_weights in LORA_INITS):
        return init_lora_weights in LORA_INITS
    return parse_pissa_niter(init_lora_weights) is not None


def get_init(init_lora_weights: bool | str) -> Callable:
    """The init function registered for `init_lora_weights` (True, False, a name or "pissa_niter_K").

    Raises: ValueError naming the registered keys (LoraConfig checks this first).
    """
    if not is_known_init(init_lora_weights):
        raise ValueError(f"init_lora_weights must be one of {list(LORA_INITS)} or 'pissa_niter_K', "
                         f"got {init_lora_weights!r}")
    if init_lora_weights not in LORA_INITS:
        from .pissa import init_pissa_niter, parse_pissa_niter

        return init_pissa_niter(parse_pissa_niter(init_lora_weights))
    return _resolve(LORA_INITS[init_lora_weights])


# --------------------------------------------------------------------------- the hook, and plain LoRA

class LoraVariant:
    """Plain LoRA (Hu et al. 2021, §4.1, eq. 3): h = W0 x + b + s · B A x̃; the base of every variant.

    Every method takes the `LoRALinear` it serves; a variant overrides only what differs (see the
    module docstring). Shapes: A (g*r, d_in), B (W, r), ΔW (d_out, d_in), x (..., d_in).
    """

    name = "lora"
    adapter_keys: tuple[str, ...] = ("lora_A.weight", "lora_B.weight")
    # what `get_peft_model` builds for this variant ("module:attribute", or None: LoraModel); AdaLoRA
    # needs its own (a loss term and a rank allocator)
    model_class: str | None = None
    # True if the forward only multiplies by W0 (X W0ᵀ, G W0), which a 4-bit base (minilora.quant)
    # computes; False if it reads W0's entries (DoRA's row norms, PiSSA's residual, VeRA's shapes)
    supports_quantized_base = True

    @classmethod
    def init(cls, layer: LoRALinear, init_lora_weights: bool | str) -> None:
        """Create layer.lora_A (g*r, d_in) and layer.lora_B (W, r) in the layer's dtype."""
        g = 1 if layer.slices is None else len(layer.slices)
        W = layer.out_features if layer.slices is None else sum(s1 - s0 for s0, s1 in layer.slices)
        A, B = get_init(init_lora_weights)(layer, (g * layer.r, layer.in_features), (W, layer.r))
        dtype = layer.weight.dtype
        layer.lora_A = LoRAFactor(np.asarray(A).astype(dtype))
        layer.lora_B = LoRAFactor(np.asarray(B).astype(dtype))

    @classmethod
    def forward(cls, layer: LoRALinear, x: Tensor, mask: np.ndarray | None, keep_prob: float) -> Tensor:
        """y = x W0ᵀ + b + s · (x̃ Aᵀ) Bᵀ per slice, through the fused op (hand-derived backward)."""
        return lora_linear(x, layer.weight.data, layer.bias, layer.lora_A.weight, layer.lora_B.weight,
                           layer.scaling, mask, keep_prob, layer.slices)

    @classmethod
    def delta_weight(cls, layer: LoRALinear) -> np.ndarray:
        """ΔW = s · B_i A_i on each slice's rows, zeros elsewhere: (d_out, d_in), the layer's dtype."""
        return lora_merge_delta(layer.lora_A.weight.data, layer.lora_B.weight.data, layer.scaling,
                                layer.slices, layer.out_features)

    @classmethod
    def merge(cls, layer: LoRALinear) -> None:
        """W <- W0 + ΔW (a new array, so a caller's view of W0 stays W0)."""
        layer.weight.data = layer.weight.data + cls.delta_weight(layer)   # (d_out, d_in)

    @classmethod
    def unmerge(cls, layer: LoRALinear) -> None:
        """W <- W - ΔW, the same ΔW again (no pristine copy of W0 is kept: see layer.py)."""
        layer.weight.data = layer.weight.data - cls.delta_weight(layer)   # (d_out, d_in)

    # ---- model-level state (VeRA's shared projections); plain LoRA has none --------------------
    @classmethod
    def prepare_model(cls, model: Any) -> None:
        """Called by `LoraModel` once its layers exist (and by `add_adapter`): set up what the layers
        of this variant share across the model. Plain LoRA: nothing."""

    @classmethod
    def model_tensors(cls, model: Any) -> dict[str, np.ndarray]:
        """Model-level tensors the adapter file stores besides each layer's `adapter_keys`
        (VeRA: vera_A, vera_B). Plain LoRA: none."""
        return {}

    @classmethod
    def load_model_tensors(cls, model: Any, tensors: dict[str, np.ndarray]) -> None:
        """Take the model-level tensors back from a file (keys as `model_tensors`). Plain LoRA: nothing."""


VARIANTS: dict[str, type[LoraVariant] | str] = {"lora": LoraVariant, "vera": "minilora.lora.vera:Vera",
                                                 "adalora": "minilora.lora.adalora:AdaLoraVariant"}
VARIANTS.update(dora="minilora.lora.dora:DoRA", dora_exact="minilora.lora.dora:DoRAExact",
                residual="minilora.lora.pissa:ResidualLoRA")


def peft_model_class(name: str) -> type:
    """The model class `get_peft_model` builds for the variant `name`: LoraModel unless it names its own."""
    from .model import LoraModel  # model.py imports layer.py, which imports this module lazily

    v = get_variant(name)
    return _resolve(v.model_class) if v.model_class else LoraModel


def get_variant(name: str) -> type[LoraVariant]:
    """The variant class registered under `name`. Raises ValueError naming the registered ones."""
    if not isinstance(name, str) or name not in VARIANTS:
        raise ValueError(f"LoRA variant must be one of {sorted(VARIANTS)}, got {name!r}")
    cls = _resolve(VARIANTS[name])
    if not (isinstance(cls, type) and issubclass(cls, LoraVariant)):
        raise TypeError(f"VARIANTS[{name!r}] is {cls!r}, not a LoraVariant subclass")
    return cls
