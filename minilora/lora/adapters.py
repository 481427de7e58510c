"""Several named adapters on one model, and a mixed-adapter batch (PEFT's vocabulary).

    model = get_peft_model(gpt, LoraConfig(r=8))                 # adapter "default", active
    model.add_adapter("prose", LoraConfig(r=4, target_modules=("c_fc",)))
    model.set_adapter("prose")                                   # forward, training, saving: "prose"
    model.active_adapter                                         # "prose"
    model.delete_adapter("prose")
    logits, _ = model(idx, adapter_names=["default", "prose", "__base__", ...])   # one name per row

How the adapters are held (the design). Each named adapter is a set of ordinary `LoRALinear` layers,
one per target, all built on the SAME frozen base Parameters (the `weight` and `bias` objects of the
GPT). Only the active adapter's layers sit in the model tree; the others wait in
`LoraModel._adapter_slots`, and `set_adapter` swaps them in (a pointer swap per target: no copy, no
merge). So a single-adapter LoraModel is exactly what it was (same names, same fast path, same
file), every registered variant works as an adapter (each slot's layers run their own variant),
and adapters may differ in r, variant and target_modules: where the active adapter has no target,
the tree holds a plain `Linear` sharing the base Parameters. PEFT keeps all adapters inside each
layer (`lora_A["name"]`) instead; its in-memory names carry the adapter name, ours do not.

Files (PEFT's `save_pretrained` layout): the adapter named "default" is written at the folder's
root, every other adapter in a subfolder named after it (`path/prose/adapter_config.json`, ...).
`model.load_adapter(path, adapter_name="prose")` adds (or overwrites) an adapter from a folder.

Mixed batch (S-LoRA, Sheng et al. 2023, arXiv:2311.03285; Punica's SGMV, Chen et al. 2023,
arXiv:2310.18547). A server holding many adapters batches requests that name DIFFERENT adapters.
Merging cannot serve such a batch (W0 + ΔW is one adapter). The unmerged form can: for every target,

    Y = X W0ᵀ + b                          one GEMM over all rows, the base shared by everyone
    Y[rows_a] += s_a (X[rows_a] A_aᵀ) B_aᵀ for each adapter a in the batch (gather, 2 thin GEMMs, scatter)

which is what SGMV does in one GPU kernel ("segmented gather matrix-vector"). `MixedAdapterLinear`
does it in NumPy for plain-LoRA adapters; any other variant's rows run that adapter's own layer on
its rows (the base product is then recomputed for those rows: correct, not fused). The name
"__base__" (PEFT's) means "no adapter" for a row. Inference only (eval mode), as in PEFT.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import ops
from ..nn.layers import Linear
from ..nn.module import Module
from ..tensor import Tensor, no_grad
from .config import LoraConfig
from .functional import lora_groups
from .layer import LoRALinear
from .variant import LoraVariant

if TYPE_CHECKING:
    from .model import LoraModel

__all__ = ["DEFAULT_ADAPTER", "BASE_ADAPTER", "NamedAdaptersMixin", "MixedAdapterLinear"]

DEFAULT_ADAPTER = "default"
BASE_ADAPTER = "__base__"


@dataclass
class _Slot:
    """One named adapter: its config, its target names (model order) and its layers by name."""

    config: LoraConfig
    names: list[str]
    layers: dict[str, LoRALinear]


def _check_name(adapter_name: Any) -> str:
    if not isinstance(adapter_name, str) or not adapter_name or adapter_name == BASE_ADAPTER \
            or any(c in adapter_name for c in "/\\.") or adapter_name.startswith("_"):
        raise ValueError(f"adapter_name must be a non-empty str without '/', '\\\\' or '.', not starting with "
                         f"'_' (so it can name a folder), got {adapter_name!r}")
    return adapter_name


class NamedAdaptersMixin:
    """Named adapters for `LoraModel` (see the module docstring). Needs the LoraModel attributes
    base_model, peft_config, lora_module_names and lora_layers()."""

    # ---- bookkeeping --------------------------------------------------------------------------
    @property
    def active_adapter(self) -> str:
        """The name of the adapter in use (PEFT's `active_adapter`); "default" unless renamed."""
        return self.__dict__.get("_active_adapter", DEFAULT_ADAPTER)

    def list_adapters(self) -> list[str]:
        """The names of the adapters held, in the order they were added."""
        return list(self._slots())

    def _slots(self) -> dict[str, _Slot]:
        slots = self.__dict__.get("_adapter_slots")
        if slots is None:
            slots = {self.active_adapter: _Slot(self.peft_config, list(self.lora_module_names),
                                                dict(self.lora_layers()))}
            object.__setattr__(self, "_adapter_slots", slots)
        return slots

    def _get_slot(self, adapter_name: str, what: str) -> _Slot:
        slots = self._slots()
        if adapter_name not in slots:
            raise ValueError(f"LoraModel.{what}: no adapter named {adapter_name!r}; adapters: {list(slots)}")
        return slots[adapter_name]

    def _sync_out(self) -> None:
        """Record the active adapter's current state (load_adapter may have changed its config)."""
        slot = self._slots()[self.active_adapter]
        slot.config, slot.names, slot.layers = self.peft_config, list(self.lora_module_names), dict(self.lora_layers())

    def _positions(self) -> list[str]:
        seen = dict.fromkeys(n for s in self._slots().values() for n in s.names)
        return [n for n, _ in self.base_model.named_modules() if n in seen]

    def _base_linear(self, name: str) -> Linear:
        m = self.base_model.get_submodule(name)
        return m if isinstance(m, Linear) else m.base          # LoRALinear or MixedAdapterLinear

    def _install(self, adapter_name: str | None) -> None:
        """Put `adapter_name`'s layers in the tree (None: plain Linears everywhere, the bare base)."""
        from .model import _replace

        slot = None if adapter_name is None else self._slots()[adapter_name]
        for pos in self._positions():
            current = self.base_model.get_submodule(pos)
            new = slot.layers.get(pos) if slot is not None else None
            if new is None:
                if isinstance(current, Linear):
                    continue
                new = self._base_linear(pos)
            elif new is current:
                continue
            elif new.weight.dtype != self.dtype:
                new.astype(self.dtype)
            new.train(self.training)
            _replace(self.base_model, pos, new)
        if slot is not None:
            object.__setattr__(self, "_active_adapter", adapter_name)
            self.peft_config, self.lora_module_names = slot.config, list(slot.names)

    def _refuse_merged(self, what: str) -> None:
        if self.is_merged:
            raise RuntimeError(f"LoraModel.{what}: the adapter {self.active_adapter!r} is merged into the shared "
                               "base weights; unmerge_adapter() first")

    # ---- PEFT's API ---------------------------------------------------------------------------
    def add_adapter(self, adapter_name: str, peft_config: LoraConfig,
                    rng: np.random.Generator | int | None = None) -> None:
        """Add a new adapter `adapter_name` per `peft_config` (any variant, its own targets); the
        active adapter stays active (as in PEFT). Its layers share the base Parameters.

        Raises:
            ValueError: a bad or taken name; the injection errors of `inject_lora` (named); a bias
                mode other than "none" for a model with several adapters (the biases are shared).
            TypeError: peft_config is not a LoraConfig. RuntimeError: the model is merged.
        """
        from .model import inject_lora

        _check_name(adapter_name)
        if not isinstance(peft_config, LoraConfig):
            raise TypeError(f"LoraModel.add_adapter: peft_config must be a LoraConfig, "
                            f"got {type(peft_config).__name__}")
        slots = self._slots()
        if adapter_name in slots:
            raise ValueError(f"LoraModel.add_adapter: an adapter named {adapter_name!r} exists; delete_adapter it "
                             "first or choose another name")
        if peft_config.bias != "none" or any(s.config.bias != "none" for s in slots.values()):
            raise ValueError("LoraModel.add_adapter: several adapters share the base biases, so every adapter "
                             "must have bias='none'")
        self._refuse_merged("add_adapter")
        self._sync_out()
        active = self.active_adapter
        self._install(None)
        try:
            names = inject_lora(self.base_model, peft_config, rng=rng)
            slots[adapter_name] = _Slot(peft_config, names, {n: self.base_model.get_submodule(n) for n in names})
            self._install(adapter_name)
            for variant in dict.fromkeys(m.variant for m in slots[adapter_name].layers.values()):
                variant.prepare_model(self)
        finally:
            self._install(None)
            self._install(active)

    def set_adapter(self, adapter_name: str) -> None:
        """Make `adapter_name` the active adapter: forward, training, merge and save use it.

        Raises: ValueError naming the adapters held; RuntimeError while merged.
        """
        self._get_slot(adapter_name, "set_adapter")
        if adapter_name == self.active_adapter:
            return
        self._refuse_merged("set_adapter")
        self._sync_out()
        self._install(adapter_name)

    def delete_adapter(self, adapter_name: str) -> None:
        """Remove `adapter_name`; if it was active, the first remaining adapter becomes active (PEFT).

        Raises: ValueError for an unknown name or the last adapter (use merge_and_unload);
        RuntimeError while merged.
        """
        self._get_slot(adapter_name, "delete_adapter")
        slots = self._slots()
        if len(slots) == 1:
            raise ValueError(f"LoraModel.delete_adapter: {adapter_name!r} is the only adapter; a LoraModel holds "
                             "at least one (merge_and_unload() gives the plain model)")
        self._refuse_merged("delete_adapter")
        self._sync_out()
        if adapter_name == self.active_adapter:
            self._install(next(n for n in slots if n != adapter_name))
        self._install(None)
        del slots[adapter_name]
        self._install(self.active_adapter)

    def add_weighted_adapter(self, adapters: Sequence[str], weights: Sequence[float], adapter_name: str,
                             combination_type: str = "svd", svd_rank: int | None = None) -> None:
        """A new adapter whose ΔW combines others': see `lora.combine.add_weighted_adapter`."""
        from .combine import add_weighted_adapter

        add_weighted_adapter(self, adapters, weights, adapter_name, combination_type, svd_rank)

    # ---- files --------------------------------------------------------------------------------
    def _save_all(self, path: str | PathLike) -> None:
        """Every adapter: "default" at `path`, the others in `path/<name>` (PEFT's layout)."""
        from . import adapter_io

        self._refuse_merged("save_adapter")
        self._sync_out()
        active = self.active_adapter
        try:
            for name in self._slots():
                self._install(name)
                adapter_io.save_adapter(self, Path(path) if name == DEFAULT_ADAPTER else Path(path) / name)
        finally:
            self._install(active)

    def _load_named(self, path: str | PathLike, adapter_name: str) -> None:
        """Load the adapter folder `path` as `adapter_name` (created from the file's config if absent)."""
        from . import adapter_io

        _check_name(adapter_name)
        config, _, _ = adapter_io.read_adapter(path)
        if adapter_name not in self._slots():
            self.add_adapter(adapter_name, config)
        self._refuse_merged("load_adapter")
        active = self.active_adapter
        self.set_adapter(adapter_name)
        try:
            adapter_io.load_adapter(self, path)
        finally:
            self.set_adapter(active)

    # ---- the mixed batch ----------------------------------------------------------------------
    @contextlib.contextmanager
    def mixed_batch(self, adapter_names: Sequence[str]) -> Iterator[LoraModel]:
        """Context manager: inside, row i of every batch uses adapter `adapter_names[i]` ("__base__":
        none). `model(idx, adapter_names=...)` and `generate` inside the block use it.

        Raises:
            ValueError: an unknown name (named), an empty list, or training mode (inference only,
                as in PEFT: call eval()). RuntimeError: the model is merged.
        """
        if isinstance(adapter_names, str) or not isinstance(adapter_names, Sequence) or not adapter_names:
            raise ValueError(f"adapter_names must be a non-empty list of adapter names, one per row, got "
                             f"{adapter_names!r}")
        slots = self._slots()
        unknown = sorted({a for a in adapter_names if a != BASE_ADAPTER and a not in slots})
        if unknown:
            raise ValueError(f"adapter_names: unknown adapters {unknown}; adapters: {list(slots)} (or "
                             f"{BASE_ADAPTER!r} for the base model)")
        if self.training:
            raise ValueError("adapter_names (a mixed-adapter batch) is for inference only; call model.eval() first")
        self._refuse_merged("mixed_batch")
        self._sync_out()
        from .model import _replace

        names = np.asarray(list(adapter_names), dtype=object)
        rows = {a: np.flatnonzero(names == a) for a in dict.fromkeys(adapter_names) if a != BASE_ADAPTER}
        active = self.active_adapter
        for pos in self._positions():
            layers = {a: slots[a].layers[pos] for a in rows if pos in slots[a].layers}
            _replace(self.base_model, pos, MixedAdapterLinear(self._base_linear(pos), layers, rows, len(names)))
        try:
            yield self
        finally:
            self._install(None)
            self._install(active)


class MixedAdapterLinear(Module):
    """A target during a mixed batch: the base GEMM once over all rows, then each adapter's update on
    its own rows (SGMV's gather / thin GEMMs / scatter, module docstring). x (B, ..., d_in) with
    B = batch_size rows; returns (B, ..., d_out), no gradient (inference only).

    Args:
        base: the shared Linear (W0, b). layers: adapter name -> its LoRALinear at this target
            (adapters without a layer here add nothing). rows: adapter name -> int row indices.
        batch_size: len(adapter_names). Raises ValueError when x's first dim differs.
    """

    def __init__(self, base: Linear, layers: dict[str, LoRALinear], rows: dict[str, np.ndarray], batch_size: int):
        super().__init__()
        self.base = base
        self.adapter_layers, self.rows, self.batch_size = layers, rows, batch_size

    def forward(self, x: Tensor | np.ndarray) -> Tensor:
        x = x if isinstance(x, Tensor) else Tensor(np.asarray(x))
        if x.ndim < 2 or x.shape[0] != self.batch_size:
            raise ValueError(f"mixed batch: adapter_names names {self.batch_size} rows but the batch has "
                             f"{x.shape[0] if x.ndim else 0}")
        with no_grad():
            y = ops.linear(x, self.base.weight, self.base.bias).data        # (B, ..., d_out), base once
            X = x.data
            for name, layer in self.adapter_layers.items():
                idx = self.rows[name]
                if layer.variant is LoraVariant and layer.adapter_enabled:  # plain LoRA: delta only
                    U = X[idx] @ layer.lora_A.weight.data.T                  # (n_a, ..., g*r)
                    Bw = layer.lora_B.weight.data
                    for _, a_rows, b_rows, out in lora_groups(layer.slices, layer.r, layer.out_features):
                        y[idx, ..., out] += layer.scaling * (U[..., a_rows] @ Bw[b_rows].T)
                else:                                                         # any variant: its own layer
                    y[idx] = layer(Tensor(X[idx])).data
        return Tensor(y)

    def extra_repr(self) -> str:
        return f"adapters={sorted(self.adapter_layers)}, rows={self.batch_size}"
