"""`LoraConfig`: the LoRA hyper-parameters, named as PEFT's, and the one place they are checked.

`LoRALinear` (one layer), `inject_lora` / `get_peft_model` (a whole model) and the adapter files
all go through a `LoraConfig`, so a bad value is refused once, with one message, wherever it comes
from. The scaling rule itself is `functional.lora_scaling`; the initialisations and variants that
`init_lora_weights` and `variant` name are registered in `lora/variant.py`.
"""
from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field, fields, replace
from numbers import Integral, Real
from typing import Any

import numpy as np

from .functional import lora_scaling

__all__ = ["LoraConfig", "BIAS_MODES"]


def _is_int(v: Any) -> bool:
    return isinstance(v, Integral) and not isinstance(v, (bool, np.bool_))


def _is_real(v: Any) -> bool:
    return isinstance(v, Real) and not isinstance(v, (bool, np.bool_))

BIAS_MODES = ("none", "all", "lora_only")


@dataclass
class LoraConfig:
    r"""LoRA hyper-parameters, named as PEFT's LoraConfig (plus loralib's enable_lora).

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
        rank_pattern, alpha_pattern: PEFT's per-module overrides of r and lora_alpha: dict pattern ->
            value; the first pattern p (in order) with re.match(rf"(.*\.)?({p})$", module name)
            wins (PEFT's `get_pattern_key`). `for_module(name)` applies them.
        layers_to_transform: None, an int or a list of ints >= 0: adapt only targets in those blocks
            (the first ".<name>.<index>." of the module name, or `layers_pattern`'s); list
            target_modules only (as PEFT). layers_pattern: None, a str or a list of str (e.g. "h").
        exclude_modules: None, a list of names (suffix match) or a regex str: never adapted.
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
    rank_pattern: dict = field(default_factory=dict)
    alpha_pattern: dict = field(default_factory=dict)
    layers_to_transform: int | list | None = None
    layers_pattern: str | list | None = None
    exclude_modules: list | str | None = None
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
        self._check_per_module_fields()

    def _check_per_module_fields(self) -> None:
        """The PEFT per-module options: patterns, layers_to_transform, layers_pattern, exclude_modules."""
        for name, ok, what in (("rank_pattern", lambda v: _is_int(v) and v >= 1, "an int >= 1"),
                               ("alpha_pattern", lambda v: _is_real(v) and v > 0 and math.isfinite(v),
                                "a finite number > 0")):
            if name == "rank_pattern" and not self._rank_pattern_is_lora():
                continue                                # the subclass checks its own rank_pattern
            pat = getattr(self, name)
            if not isinstance(pat, dict) or not all(isinstance(k, str) and k and ok(v) for k, v in pat.items()):
                raise ValueError(f"LoraConfig.{name} must be a dict module pattern -> {what}, got {pat!r}")
            for k in pat:
                try:
                    re.compile(k)
                except re.error as e:
                    raise ValueError(f"LoraConfig.{name}: {k!r} is not a valid regular expression: {e}") from e
            setattr(self, name, dict(pat))
        ltt = self.layers_to_transform
        if ltt is not None:
            items = [ltt] if _is_int(ltt) else ltt
            if not isinstance(items, (list, tuple)) or not all(_is_int(i) and i >= 0 for i in items):
                raise ValueError(f"LoraConfig.layers_to_transform must be None, an int >= 0 or a list of them, "
                                 f"got {ltt!r}")
            if isinstance(self.target_modules, str):
                raise ValueError("LoraConfig.layers_to_transform cannot be used when target_modules is a regex "
                                 "str (as in PEFT): put the layer indices in the regex")
            self.layers_to_transform = int(ltt) if _is_int(ltt) else [int(i) for i in ltt]
        lp = self.layers_pattern
        if lp is not None and not (isinstance(lp, str) or (isinstance(lp, (list, tuple))
                                                           and all(isinstance(p, str) for p in lp))):
            raise ValueError(f"LoraConfig.layers_pattern must be None, a str or a list of str, got {lp!r}")
        if isinstance(lp, tuple):
            self.layers_pattern = list(lp)
        ex = self.exclude_modules
        if ex is not None and not isinstance(ex, str) and not (isinstance(ex, (list, tuple))
                                                               and all(isinstance(e, str) and e for e in ex)):
            raise ValueError(f"LoraConfig.exclude_modules must be None, a list of module names or a regex str, "
                             f"got {ex!r}")
        if isinstance(ex, tuple):
            self.exclude_modules = list(ex)

    def _rank_pattern_is_lora(self) -> bool:
        """False when a subclass redefines rank_pattern with another meaning (AdaLoraConfig: layer -> kept
        triplets, as PEFT's AdaLoraConfig does); LoRA's per-module ranks then do not apply."""
        return type(self).__dataclass_fields__["rank_pattern"].default_factory is dict

    def for_module(self, name: str) -> LoraConfig:
        r"""The config of the module named `name`: r and lora_alpha from rank_pattern / alpha_pattern
        (PEFT's `get_pattern_key`: the first pattern p with re.match(rf"(.*\.)?({p})$", name))."""
        changes = {}
        for field_name, attr in (("rank_pattern", "r"), ("alpha_pattern", "lora_alpha")):
            if field_name == "rank_pattern" and not self._rank_pattern_is_lora():
                continue
            for p, v in getattr(self, field_name).items():
                if re.match(rf"(.*\.)?({p})$", name):
                    changes[attr] = v
                    break
        return replace(self, **changes) if changes else self

    def selects(self, name: str) -> bool:
        """False if `exclude_modules` or `layers_to_transform` leave the target `name` out (PEFT's
        `check_target_module_exists`: the layer index is the first ".<x>.<digits>." of the name, or
        the digits after one of `layers_pattern`)."""
        ex = self.exclude_modules
        if ex:
            if isinstance(ex, str) and re.fullmatch(ex, name):
                return False
            if not isinstance(ex, str) and any(name == e or name.endswith("." + e) for e in ex):
                return False
        ltt = self.layers_to_transform
        if ltt is None or ltt == []:
            return True
        match = None
        if not self.layers_pattern:
            match = re.match(r".*?\.[^.]*\.(?P<idx>\d+)\.", name)
        else:
            for p in [self.layers_pattern] if isinstance(self.layers_pattern, str) else self.layers_pattern:
                match = re.match(rf"(?:^|.*?\.){p}\.(?P<idx>\d+)\.", name)
                if match:
                    break
        if match is None:
            return False
        idx = int(match.group("idx"))
        return idx == ltt if isinstance(ltt, int) else idx in ltt

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
