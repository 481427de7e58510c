"""`PeftModel`: what every baseline shares with `lora.LoraModel` — a GPT changed in place, frozen
except for the method's parameters, with PEFT's names and adapter files.

    model = get_peft_model(GPT(...), IA3Config())          # minilora.peft.get_peft_model
    model.print_trainable_parameters()
    ... train with AdamW(model.trainable_parameters()) (or minilora.finetune) ...
    model.save_adapter("out/ia3")                           # adapter_config.json + adapter_model.npz
    again = load_peft_model(GPT(...), "out/ia3")

Names are transparent as in LoraModel: the GPT's own parameter names (`transformer.h.0.attn.c_attn.ia3_l`),
plus the model-level `prompt_encoder.*` of the prompt methods. Adapter files hold the method's tensors
under PEFT's keys where PEFT has the method (`...ia3_l`; `prompt_embeddings` (P, width) for prefix
and prompt tuning, the encoder's output, as PEFT saves it) and the config with `peft_type`, the
dtype and fingerprints (another base model warns on load; a .json and .npz of two saves are refused).
"""
from __future__ import annotations

import warnings
from collections import OrderedDict
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np

from .. import io as mio
from ..nn.gpt import GPT
from ..nn.module import ModelWrapper, Module, Parameter

__all__ = ["PeftModel", "replace_module", "ADAPTER_CONFIG_NAME", "ADAPTER_WEIGHTS_NAME", "read_peft_adapter"]

ADAPTER_CONFIG_NAME = "adapter_config.json"
ADAPTER_WEIGHTS_NAME = "adapter_model.npz"
PEFT_PREFIX = "base_model.model."


def replace_module(model: Module, name: str, new: Module) -> None:
    """model.set_submodule(name, new), keeping the child's place (parameter order unchanged)."""
    parent = model.get_submodule(name.rpartition(".")[0])
    order = list(parent._modules)
    model.set_submodule(name, new)
    for k in order:
        parent._modules.move_to_end(k)


class PeftModel(ModelWrapper):
    """Base class of the baselines' models. Subclasses set `peft_type`, implement `_inject` (change
    the GPT, add own modules) and `_is_adapter(name)` (which parameters train), and may override
    `forward`, `adapter_state` / `_load_state`, `merge_adapter` / `unmerge_adapter` / `merge_and_unload`.

    Args:
        model: a GPT (changed in place). config: the method's config. rng: initialisation generator
            (default: the GPT's `rng`, so the adapter is reproducible from the model's seed).
    Attributes: base_model, peft_config, base_fingerprint (io.fingerprint of the frozen parameters).
    """

    peft_type = ""
    mergeable = False

    def __init__(self, model: Module, config: Any, rng: np.random.Generator | None = None):
        super().__init__()
        if not isinstance(model, GPT):
            raise TypeError(f"{type(self).__name__}: model must be a minilora GPT, got {type(model).__name__}")
        self.base_model = model
        self.peft_config = config
        self._inject(rng if rng is not None else model.rng)
        train = set(self.adapter_parameters())
        if not train:
            raise ValueError(f"{type(self).__name__}: the config selects no parameters to train: {config}")
        for name, p in self.named_parameters():
            p.requires_grad = name in train
        self.base_fingerprint = mio.fingerprint(self._base_state())
        self.train(model.training)

    # ---- what subclasses fill in ------------------------------------------------------------
    def _inject(self, rng: np.random.Generator) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _is_adapter(self, name: str) -> bool:  # pragma: no cover - abstract
        raise NotImplementedError

    # ---- the GPT's names, attributes and calls: nn.ModelWrapper ------------------------------
    @property
    def sequence_tokens_used(self) -> int:
        """How many of the block_size positions the method takes from the user (P for soft prompts)."""
        return 0

    def forward(self, idx, targets=None):
        """`logits, loss = model(idx, targets)`, as GPT.forward."""
        return self.base_model(idx, targets)

    def generate(self, *args: Any, **kwargs: Any) -> np.ndarray:
        """GPT.generate run through this model's forward (so prompts and prefixes take part)."""
        return GPT.generate(self, *args, **kwargs)

    # ---- parameters -------------------------------------------------------------------------
    def adapter_parameters(self) -> OrderedDict[str, Parameter]:
        """Name -> Parameter of the method's trainable parameters, in model order."""
        return OrderedDict((n, p) for n, p in self.named_parameters() if self._is_adapter(n))

    def _base_state(self):
        return OrderedDict((n, p.data) for n, p in self.named_parameters() if not self._is_adapter(n))

    # ---- merging ----------------------------------------------------------------------------
    def _not_mergeable(self, what):
        raise RuntimeError(f"{type(self).__name__}.{what}: {self.peft_type} cannot be merged into the weights "
                           "(only LoRA, IA3 and BitFit can); it stays in the forward pass")

    def merge_adapter(self) -> None:
        """Fold the adapter into the weights (mergeable methods only; RuntimeError otherwise)."""
        self._not_mergeable("merge_adapter")

    def unmerge_adapter(self) -> None:
        """Undo merge_adapter (mergeable methods only)."""
        self._not_mergeable("unmerge_adapter")

    def merge_and_unload(self) -> GPT:
        """Merge and return the plain GPT (mergeable methods only)."""
        self._not_mergeable("merge_and_unload")

    # ---- adapter files ----------------------------------------------------------------------
    def adapter_state(self) -> OrderedDict[str, np.ndarray]:
        """Copies of the tensors an adapter file holds (PEFT's keys)."""
        return OrderedDict((n, p.data.copy()) for n, p in self.adapter_parameters().items())

    def _load_state(self, tensors: dict[str, np.ndarray]) -> None:
        params = self.adapter_parameters()
        for k, p in params.items():
            p.data = np.array(tensors[k], copy=True)

    def save_adapter(self, path: str | PathLike) -> None:
        """Write `path/adapter_model.npz` then `path/adapter_config.json`, each atomically."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        tensors = self.adapter_state()
        meta = dict(self.peft_config.to_dict(), peft_type=self.peft_type, format_version=1,
                    base_model_fingerprint=self.base_fingerprint, adapter_fingerprint=mio.fingerprint(tensors),
                    dtype=str(self.dtype))
        mio.save_npz_atomic(path / ADAPTER_WEIGHTS_NAME, tensors)
        mio.save_json_atomic(path / ADAPTER_CONFIG_NAME, meta)

    def load_adapter(self, path: str | PathLike) -> None:
        """Load a file written by `save_adapter` of the same method, bit for bit.

        Raises: ValueError (another method, missing/unexpected keys, shape or dtype mismatch, files
        of two saves); FileNotFoundError. Warns (UserWarning) when the base model differs.
        """
        meta, tensors = read_peft_adapter(path)
        if meta["peft_type"] != self.peft_type:
            raise ValueError(f"load_adapter: {str(path)!r} holds a {meta['peft_type']} adapter, this model is "
                             f"{self.peft_type}")
        want = self.adapter_state()
        missing = [k for k in want if k not in tensors]
        unexpected = [k for k in tensors if k not in want]
        if missing or unexpected:
            raise ValueError(f"load_adapter: {path}: missing keys {missing}, unexpected keys {unexpected}")
        for k, v in want.items():
            if tensors[k].shape != v.shape or tensors[k].dtype != v.dtype:
                raise ValueError(f"load_adapter: {k} is {tensors[k].shape} {tensors[k].dtype} in the file but "
                                 f"{v.shape} {v.dtype} in the model")
        if meta.get("base_model_fingerprint") != self.base_fingerprint:
            warnings.warn(f"load_adapter: the adapter in {str(path)!r} was trained on a different base model; "
                          "its outputs may be meaningless", UserWarning, stacklevel=2)
        self._load_state(tensors)

    def extra_repr(self) -> str:
        return f"{self.peft_type}: {self.peft_config}"


def read_peft_adapter(path: str | PathLike) -> tuple[dict[str, Any], OrderedDict[str, np.ndarray]]:
    """(metadata, tensors with PEFT's `base_model.model.` prefix stripped) of an adapter directory.

    Raises: FileNotFoundError (a file missing); ValueError (not a JSON object, no peft_type,
    another format_version, a .npz from another save, a dtype other than the config's).
    """
    path = Path(path)
    cfg_file, npz_file = path / ADAPTER_CONFIG_NAME, path / ADAPTER_WEIGHTS_NAME
    for f in (cfg_file, npz_file):
        if not f.exists():
            raise FileNotFoundError(f"load_adapter: {str(f)!r} not found (an adapter directory holds "
                                    f"{ADAPTER_CONFIG_NAME} and {ADAPTER_WEIGHTS_NAME})")
    meta = mio.load_json(cfg_file)
    if not isinstance(meta, dict) or "peft_type" not in meta:
        raise ValueError(f"load_adapter: {str(cfg_file)!r} is not an adapter config (no peft_type)")
    if meta.get("format_version", 1) != 1:
        raise ValueError(f"load_adapter: {str(cfg_file)!r} has format_version {meta['format_version']!r}; "
                         "this minilora reads format_version 1")
    raw = mio.load_npz(npz_file)
    if meta.get("adapter_fingerprint") not in (None, mio.fingerprint(raw)):
        raise ValueError(f"load_adapter: {str(npz_file)!r} does not match {str(cfg_file)!r} (files from two saves?)")
    for k, v in raw.items():
        if "dtype" in meta and str(v.dtype) != meta["dtype"]:
            raise ValueError(f"load_adapter: {k} is {v.dtype} but {ADAPTER_CONFIG_NAME} says {meta['dtype']}")
    tensors = OrderedDict((k[len(PEFT_PREFIX):] if k.startswith(PEFT_PREFIX) else k, v) for k, v in raw.items())
    return meta, tensors
