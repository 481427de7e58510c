"""The configurations of the baselines, named as PEFT's where PEFT has the method, checked once.

    AdapterConfig          Houlsby et al. 2019 ("houlsby": after attention and after the MLP) and
                           Lin et al. 2020 ("lin": after the MLP only); the LoRA paper's Adapter^H / ^L.
    PrefixTuningConfig     Li & Liang 2021, prefix-layer: PEFT's PrefixTuningConfig names.
    PrefixEmbeddingConfig  Li & Liang 2021's embedding-only ablation (the LoRA paper's PreEmbed).
    PromptTuningConfig     Lester et al. 2021: PEFT's PromptTuningConfig names.
    BitFitConfig           Ben Zaken et al. 2021: only biases train (PEFT has no BitFit).
    IA3Config              Liu et al. 2022: PEFT's IA3Config names.

Every config has `peft_type` (a class constant, written to adapter_config.json), `to_dict`,
`from_dict` and `replace`, like `lora.LoraConfig`. Bad values raise ValueError/TypeError naming the
field, the value and what is expected.
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass, fields, replace
from numbers import Integral
from typing import Any, ClassVar

__all__ = ["AdapterConfig", "PrefixTuningConfig", "PrefixEmbeddingConfig", "PromptTuningConfig", "BitFitConfig",
           "IA3Config", "ADAPTER_TYPES", "ACTIVATIONS", "PROMPT_INITS"]

ADAPTER_TYPES = ("houlsby", "lin")
ACTIVATIONS = ("relu", "gelu")
PROMPT_INITS = ("RANDOM", "TEXT", "SAMPLE_VOCAB")


def _pos_int(cls, name, v, allow_none=False):
    if v is None and allow_none:
        return None
    if not isinstance(v, Integral) or isinstance(v, bool) or v < 1:
        raise ValueError(f"{cls}.{name} must be an int >= 1{' or None' if allow_none else ''}, got {v!r}")
    return int(v)


def _targets(cls, name, tm):
    if isinstance(tm, str):
        try:
            re.compile(tm)
        except re.error as e:
            raise ValueError(f"{cls}.{name}: {tm!r} is not a valid regular expression: {e}") from e
        if not tm:
            raise ValueError(f"{cls}.{name}: an empty regular expression")
        return tm
    if isinstance(tm, (list, tuple)) and all(isinstance(t, str) and t for t in tm):
        return tuple(tm)
    raise TypeError(f"{cls}.{name} must be a list of module names or a regex str, got {tm!r}")


class _Config:
    """Shared helpers: to_dict / from_dict / replace."""

    peft_type: ClassVar[str] = ""

    def replace(self, **changes: Any):
        """A copy with some fields changed, checked again."""
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of the fields (tuples as lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]):
        """Build from `to_dict` output. Raises ValueError naming unknown keys."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"{cls.__name__}.from_dict: unknown keys {unknown} (known: {sorted(names)})")
        return cls(**d)


@dataclass
class AdapterConfig(_Config):
    """Bottleneck adapters: h <- h + W_up act(W_down h + b_down) + b_up after a sublayer's output projection.

    Args:
        adapter_type: "houlsby" (two per block: after attn.c_proj and after mlp.c_proj) or "lin"
            (one per block, after mlp.c_proj).
        bottleneck_size: m, int >= 1 (the width of the down-projection; trainable per adapter
            2 m C + m + C).
        non_linearity: "relu" or "gelu" (GPT-2's tanh GELU).
        init_std: std of W_down's normal init; W_up and both biases start at 0, so every adapter
            starts as the identity (Houlsby's "near-identity" initialisation, made exact).
    """

    peft_type: ClassVar[str] = "ADAPTER"
    adapter_type: str = "houlsby"
    bottleneck_size: int = 8
    non_linearity: str = "relu"
    init_std: float = 0.02

    def __post_init__(self):
        if self.adapter_type not in ADAPTER_TYPES:
            raise ValueError(f"AdapterConfig.adapter_type must be one of {ADAPTER_TYPES}, got {self.adapter_type!r}")
        self.bottleneck_size = _pos_int("AdapterConfig", "bottleneck_size", self.bottleneck_size)
        if self.non_linearity not in ACTIVATIONS:
            raise ValueError(f"AdapterConfig.non_linearity must be one of {ACTIVATIONS}, got {self.non_linearity!r}")
        if not isinstance(self.init_std, (int, float)) or isinstance(self.init_std, bool) or not self.init_std >= 0:
            raise ValueError(f"AdapterConfig.init_std must be a number >= 0, got {self.init_std!r}")

    @property
    def target_modules(self) -> tuple[str, ...]:
        """The output projections the adapters follow."""
        return ("attn.c_proj", "mlp.c_proj") if self.adapter_type == "houlsby" else ("mlp.c_proj",)


@dataclass
class PrefixTuningConfig(_Config):
    """Prefix-layer tuning: P trainable key/value vectors per layer, seen by every position.

    Args (PEFT's names):
        num_virtual_tokens: P, int >= 1 (key/value slots added in every layer; no positions used).
        prefix_projection: reparameterise (Li & Liang §4.3): E (P, C) -> Linear(C, encoder_hidden_size)
            -> tanh -> Linear(encoder_hidden_size, n_layer 2 C); False: E (P, n_layer 2 C) directly.
        encoder_hidden_size: int >= 1 or None (None: C), the MLP's hidden width.
        prefix_init_text: without projection, start E from the base model's own keys and values
            for the bytes of this text (repeated or cut to P): Li & Liang §7.4 found an init from
            activations of real words much better than random; None: normal(0, init_std).
        init_std: std of the normal init of E (and of the MLP weights; their biases start at 0).
    """

    peft_type: ClassVar[str] = "PREFIX_TUNING"
    num_virtual_tokens: int = 8
    prefix_projection: bool = False
    encoder_hidden_size: int | None = None
    prefix_init_text: str | None = "Python source code:\n"
    init_std: float = 0.02

    def __post_init__(self):
        self.num_virtual_tokens = _pos_int("PrefixTuningConfig", "num_virtual_tokens", self.num_virtual_tokens)
        self.encoder_hidden_size = _pos_int("PrefixTuningConfig", "encoder_hidden_size", self.encoder_hidden_size,
                                            allow_none=True)
        if not isinstance(self.prefix_projection, bool):
            raise ValueError(f"PrefixTuningConfig.prefix_projection must be a bool, got {self.prefix_projection!r}")
        if self.prefix_init_text is not None and not (isinstance(self.prefix_init_text, str) and self.prefix_init_text):
            raise ValueError(f"PrefixTuningConfig.prefix_init_text must be None or a non-empty str, "
                             f"got {self.prefix_init_text!r}")


@dataclass
class PrefixEmbeddingConfig(_Config):
    """Prefix-embedding (PreEmbed): P trainable input embeddings before the sequence.

    Args: as PrefixTuningConfig; the MLP (prefix_projection) maps (P, C) -> (P, C).
    The P virtual tokens take P of the block_size positions.
    """

    peft_type: ClassVar[str] = "PREFIX_EMBEDDING"
    num_virtual_tokens: int = 8
    prefix_projection: bool = False
    encoder_hidden_size: int | None = None
    init_std: float = 0.02

    def __post_init__(self):
        self.num_virtual_tokens = _pos_int("PrefixEmbeddingConfig", "num_virtual_tokens", self.num_virtual_tokens)
        self.encoder_hidden_size = _pos_int("PrefixEmbeddingConfig", "encoder_hidden_size",
                                            self.encoder_hidden_size, allow_none=True)
        if not isinstance(self.prefix_projection, bool):
            raise ValueError(f"PrefixEmbeddingConfig.prefix_projection must be a bool, got {self.prefix_projection!r}")


@dataclass
class PromptTuningConfig(_Config):
    """Prompt tuning: a soft prompt (P, C) prepended to the input embeddings.

    Args (PEFT's names):
        num_virtual_tokens: P, int >= 1 (takes P of the block_size positions).
        prompt_tuning_init: "TEXT" (rows of wte for the bytes of prompt_tuning_init_text, repeated
            to P; Lester et al. §3's class-label/vocab init), "SAMPLE_VOCAB" (rows of wte at random
            byte ids) or "RANDOM" (normal with the std of wte).
        prompt_tuning_init_text: str, non-empty when prompt_tuning_init is "TEXT".
    """

    peft_type: ClassVar[str] = "PROMPT_TUNING"
    num_virtual_tokens: int = 8
    prompt_tuning_init: str = "TEXT"
    prompt_tuning_init_text: str | None = "Python source code:\n"

    def __post_init__(self):
        self.num_virtual_tokens = _pos_int("PromptTuningConfig", "num_virtual_tokens", self.num_virtual_tokens)
        if self.prompt_tuning_init not in PROMPT_INITS:
            raise ValueError(f"PromptTuningConfig.prompt_tuning_init must be one of {PROMPT_INITS}, "
                             f"got {self.prompt_tuning_init!r}")
        if self.prompt_tuning_init == "TEXT" and not (isinstance(self.prompt_tuning_init_text, str)
                                                      and self.prompt_tuning_init_text):
            raise ValueError("PromptTuningConfig.prompt_tuning_init_text must be a non-empty str when "
                             f"prompt_tuning_init is 'TEXT', got {self.prompt_tuning_init_text!r}")


@dataclass
class BitFitConfig(_Config):
    """BitFit: every weight frozen, the biases of the selected modules train.

    Args:
        target_modules: None (every bias of the model, LayerNorm's included, as Ben Zaken et al.)
            or module names (suffix match, as LoraConfig) / a full-match regex: only their biases.
    """

    peft_type: ClassVar[str] = "BITFIT"
    target_modules: tuple | str | None = None

    def __post_init__(self):
        if self.target_modules is not None:
            self.target_modules = _targets("BitFitConfig", "target_modules", self.target_modules)


@dataclass
class IA3Config(_Config):
    """(IA)^3: learned vectors rescale outputs (keys, values) or, for feed-forward modules, inputs.

    Args (PEFT's names):
        target_modules: Linear modules to rescale (PEFT's GPT-2 default: c_attn and mlp.c_proj).
        feedforward_modules: the subset whose INPUT is rescaled (y = W (l * x) + b; for mlp.c_proj
            that is the GELU output, the paper's l_ff); the others rescale their output
            (y = l * (W x + b)). With GPT-2's fused c_attn, q is rescaled together with k and v (as PEFT).
        init_ia3_weights: True: l = 1 (the identity); False: random around 1 (for tests).
    Raises:
        ValueError: a feedforward module that is not a target.
    """

    peft_type: ClassVar[str] = "IA3"
    target_modules: tuple | str = ("c_attn", "mlp.c_proj")
    feedforward_modules: tuple | str = ("mlp.c_proj",)
    init_ia3_weights: bool = True

    def __post_init__(self):
        self.target_modules = _targets("IA3Config", "target_modules", self.target_modules)
        self.feedforward_modules = _targets("IA3Config", "feedforward_modules", self.feedforward_modules)
        if (isinstance(self.target_modules, tuple) and isinstance(self.feedforward_modules, tuple)
                and not set(self.feedforward_modules) <= set(self.target_modules)):
            raise ValueError(f"IA3Config.feedforward_modules {list(self.feedforward_modules)} must be a subset of "
                             f"target_modules {list(self.target_modules)}")
        if not isinstance(self.init_ia3_weights, bool):
            raise ValueError(f"IA3Config.init_ia3_weights must be a bool, got {self.init_ia3_weights!r}")
