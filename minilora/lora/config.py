"""`LoraConfig`: the LoRA hyper-parameters, named as PEFT's, and the one place they are checked.

`LoRALinear` (one layer), `inject_lora` / `get_peft_model` (a whole model) and the adapter files
all go through a `LoraConfig`, so a bad value is refused once, with one message, wherever it comes
from. The scaling rule itself is `functional.lora_scaling`; the initialisations and variants that
`init_lora_weights` and `variant` name are registered in `lora/variant.py`.
"""
from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, fields, replace
from numbers import Integral, Real
from typing import Any

import numpy as np

from .functional import lora_scaling

__all__ = ["LoraConfig", "BIAS_MODES"]

BIAS_MODES = ("none", "all", "lora_only")


@dataclass
class LoraConfig:
    """LoRA hyper-parameters, named as PEFT's LoraConfig (plus loralib's enable_lora).

    Args:
        r: rank, int >= 1.
        lora_alpha: finite number > 0; scaling = lora_alpha / r, or lora_alpha / sqrt(r) with
            use_rslora (`functional.lora_scaling`).
        lora_dropout: in [0, 1), dropout on the LoRA branch's input only.
        target_modules: non-empty list/tuple of names (suffix match) or a str (full-match regex);
            used by `inject_lora`, ignored by a single `LoRALinear`.
        use_rslora: bool.
        init_lora_weights: a key of `variant.LORA_INITS`: True (A kaiming-uniform, B = 0),
            "gaussian" (A ~ N(0, 1/r²), B = 0), False (both random: ΔW != 0, for tests) or
            "loftq" (LoftQ: quantizes the layer's base to NF4 and starts A, B from the SVD of the
            residual; minilora/quant/loftq.py).
        bias: "none", "all" (every bias trains) or "lora_only" (biases of adapted layers train).
            Trained biases are stored in the adapter file (PEFT does the same).
        enable_lora: None or list of bools (adapt only those equal output slices, e.g. q and v).
        variant: a key of `variant.VARIANTS` ("lora": plain LoRA; "dora", "dora_exact": DoRA with the
            §4.3 or the exact backward, lora/dora.py; "residual": PiSSA/OLoRA, lora/pissa.py).
        use_dora: bool (PEFT's switch): True selects variant "dora" (DoRA, arXiv:2402.09353).
        init_lora_weights may also be "pissa", "pissa_niter_K" or "olora" (PEFT's names), which select
            variant "residual". Combining DoRA with those starts is refused.
    Raises:
        ValueError / TypeError on construction, naming the field, the value and what is expected.
    """

    r: int = 8
    lora_alpha: float = 16
    lora_dropout: float = 0.0
    target_modules: tuple | str = ("c_attn",)
    use_rslora: bool = False
    init_lora_weights: bool | str = True
    bias: str = "none"
    enable_lora: list | None = None
    variant: str = "lora"
    use_dora: bool = False

    def __post_init__(self) -> None:
        from .variant import LORA_INITS, VARIANTS, is_known_init  # variant.py imports the layer, which imports this

        if not isinstance(self.r, Integral) or isinstance(self.r, bool) or self.r < 1:
            raise ValueError(f"LoraConfig.r must be an int >= 1, got {self.r!r}")
        self.r = int(self.r)
        if (not isinstance(self.lora_alpha, Real) or isinstance(self.lora_alpha, bool) or not self.lora_alpha > 0
                or not math.isfinite(self.lora_alpha)):
            raise ValueError(f"LoraConfig.lora_alpha must be a finite number > 0, got {self.lora_alpha!r}")
        if (not isinstance(self.lora_dropout, Real) or isinstance(self.lora_dropout, bool)
                or not 0.0 <= self.lora_dropout < 1.0):
            raise ValueError(f"LoraConfig.lora_dropout must be in [0, 1), got {self.lora_dropout!r}")
        tm = self.target_modules
        if isinstance(tm, str):
            if not tm:
                raise ValueError("LoraConfig.target_modules: an empty regular expression")
            try:
                re.compile(tm)
            except re.error as e:
                raise ValueError(f"LoraConfig.target_modules: {tm!r} is not a valid regular expression: {e}") from e
        elif isinstance(tm, (list, tuple)):
            if not tm or not all(isinstance(t, str) and t for t in tm):
                raise ValueError(f"LoraConfig.target_modules must be a non-empty list of non-empty "
                                 f"module names, got {tm!r}")
            self.target_modules = tuple(tm)
        else:
            raise TypeError(f"LoraConfig.target_modules must be a list/tuple of str or a str regex, "
                            f"got {type(tm).__name__}")
        if not isinstance(self.use_rslora, (bool, np.bool_)):
            raise ValueError(f"LoraConfig.use_rslora must be a bool, got {self.use_rslora!r}")
        self.use_rslora = bool(self.use_rslora)
        init = self.init_lora_weights
        if not (init is True or init is False or (isinstance(init, str) and is_known_init(init))):
            known = ", ".join(repr(k) for k in LORA_INITS)
            raise ValueError(f"LoraConfig.init_lora_weights must be one of {known} or 'pissa_niter_K', got {init!r}")
        if self.bias not in BIAS_MODES:
            raise ValueError(f"LoraConfig.bias must be one of {BIAS_MODES}, got {self.bias!r}")
        if self.enable_lora is not None:
            if (not isinstance(self.enable_lora, (list, tuple)) or not self.enable_lora
                    or not all(isinstance(e, (bool, np.bool_)) for e in self.enable_lora)
                    or not any(self.enable_lora)):
                raise ValueError(f"LoraConfig.enable_lora must be None or a list of bools with at least "
                                 f"one True, got {self.enable_lora!r}")
            self.enable_lora = [bool(e) for e in self.enable_lora]
        self._resolve_family_variant()
        if not isinstance(self.variant, str) or self.variant not in VARIANTS:
            raise ValueError(f"LoraConfig.variant must be one of {sorted(VARIANTS)}, got {self.variant!r}")

    def _resolve_family_variant(self) -> None:
        """PEFT's switches pick the variant: use_dora -> "dora" (or "dora_exact"), a start taken from
        W0 (init_lora_weights "pissa", "pissa_niter_K", "olora") -> "residual" (lora/pissa.py).
        Refuses combinations minilora does not implement, naming both fields."""
        from .pissa import is_residual_init

        if not isinstance(self.use_dora, (bool, np.bool_)):
            raise ValueError(f"LoraConfig.use_dora must be a bool, got {self.use_dora!r}")
        self.use_dora = bool(self.use_dora)
        dora = ("dora", "dora_exact")
        if self.use_dora and self.variant == "lora":
            self.variant = "dora"
        if self.variant in dora:
            self.use_dora = True
        elif self.use_dora:
            raise ValueError(f"LoraConfig: use_dora=True cannot be combined with variant={self.variant!r}")
        residual = is_residual_init(self.init_lora_weights)
        if residual and self.variant == "lora":
            self.variant = "residual"
        if residual and self.variant != "residual":
            raise ValueError(f"LoraConfig: init_lora_weights={self.init_lora_weights!r} (a start taken from W0) "
                             f"cannot be combined with variant={self.variant!r}"
                             + (" (use_dora)" if self.use_dora else ""))
        if self.variant == "residual" and not residual:
            raise ValueError(f"LoraConfig: variant='residual' needs init_lora_weights 'pissa', 'pissa_niter_K' "
                             f"or 'olora', got {self.init_lora_weights!r}")

    @property
    def scaling(self) -> float:
        """lora_alpha / r (or / sqrt(r) with use_rslora): `functional.lora_scaling`."""
        return lora_scaling(self.lora_alpha, self.r, self.use_rslora)

    def replace(self, **changes: Any) -> LoraConfig:
        """A copy with some fields changed, checked again (dataclasses.replace)."""
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of the fields (target_modules as a list, or the regex str)."""
        d = asdict(self)
        if not isinstance(d["target_modules"], str):
            d["target_modules"] = list(d["target_modules"])
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LoraConfig:
        """Build from `to_dict` output (a file without `variant` is plain LoRA).

        Raises: ValueError naming unknown keys; the errors of the constructor.
        """
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"LoraConfig.from_dict: unknown keys {unknown} (known: {sorted(names)})")
        return cls(**d)
