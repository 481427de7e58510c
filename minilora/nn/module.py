"""`Module` and `Parameter`: how layers own their weights, name them, save and load them.

Parameters and submodules are registered by assigning them as attributes (as in PyTorch), so
`named_parameters()` can walk the tree and produce GPT-2's names (`transformer.h.0.attn.c_attn.weight`).
A parameter shared by two modules (GPT-2's `lm_head.weight` is `transformer.wte.weight`) is listed
once, under the first name met, so an optimizer updates it once per step.
"""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, DTypeLike

from ..tensor import Tensor


class Parameter(Tensor):
    """A Tensor that a Module owns and an optimizer updates (requires_grad=True by default).

    Args:
        data: float32 or float64 array-like.
    Raises:
        TypeError: data is not float32/float64.
    """

    def __init__(self, data: ArrayLike | Tensor, requires_grad: bool = True, name: str | None = None):
        arr = np.asarray(data.data if isinstance(data, Tensor) else data)
        if arr.dtype not in (np.float32, np.float64):
            raise TypeError(f"Parameter: expected float32 or float64 data, got {arr.dtype}")
        super().__init__(arr, requires_grad=requires_grad, name=name)

    def __repr__(self):
        return f"Parameter(shape={self.shape}, dtype={self.dtype}, requires_grad={self.requires_grad})"


class Module:
    """Base class of every layer and model. Subclasses assign Parameters/Modules as attributes
    in `__init__` and implement `forward`; calling the module calls `forward`.

    Attributes:
        training: True in training mode (dropout active), False after `eval()`.
    """

    def __init__(self):
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "training", True)

    def __setattr__(self, name, value):
        if "_parameters" not in self.__dict__:
            raise RuntimeError(f"{type(self).__name__}: call super().__init__() before assigning attributes")
        self._parameters.pop(name, None)
        self._modules.pop(name, None)
        if isinstance(value, Parameter):
            self._parameters[name] = value
        elif isinstance(value, Module):
            self._modules[name] = value
        object.__setattr__(self, name, value)

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    def forward(self, *args: Any, **kwargs: Any) -> Any:  # pragma: no cover - abstract
        """The computation; subclasses implement it."""
        raise NotImplementedError

    # ---- traversal ------------------------------------------------------------------------
    def named_modules(self, prefix: str = "") -> Iterator[tuple[str, Module]]:
        """Yield (dotted name, module) for this module ("" for itself) and all submodules, depth-first."""
        yield prefix, self
        for name, m in self._modules.items():
            yield from m.named_modules(f"{prefix}.{name}" if prefix else name)

    def modules(self) -> list[Module]:
        """All modules in the tree, this one first."""
        return [m for _, m in self.named_modules()]

    def named_parameters(self, prefix: str = "", remove_duplicate: bool = True) -> Iterator[tuple[str, Parameter]]:
        """Yield (dotted name, Parameter); a shared parameter appears once (its first name)."""
        seen = set()
        for mname, m in self.named_modules(prefix):
            for pname, p in m._parameters.items():
                if remove_duplicate and id(p) in seen:
                    continue
                seen.add(id(p))
                yield (f"{mname}.{pname}" if mname else pname), p

    def parameters(self) -> list[Parameter]:
        """List of the (deduplicated) parameters."""
        return [p for _, p in self.named_parameters()]

    def num_parameters(self, trainable_only: bool = False) -> int:
        """Number of scalar parameters (each shared parameter counted once)."""
        return int(sum(p.size for p in self.parameters() if p.requires_grad or not trainable_only))

    def trainable_parameters(self) -> list[Parameter]:
        """The Parameters with requires_grad (what the optimizer should update)."""
        return [p for p in self.parameters() if p.requires_grad]

    def named_trainable_parameters(self) -> list[tuple[str, Parameter]]:
        """List of (name, Parameter) with requires_grad."""
        return [(n, p) for n, p in self.named_parameters() if p.requires_grad]

    def get_nb_trainable_parameters(self) -> tuple[int, int]:
        """(trainable, all) scalar counts; a tied parameter counts once."""
        return self.num_parameters(trainable_only=True), self.num_parameters()

    def print_trainable_parameters(self) -> None:
        """Print PEFT's line `trainable params: N || all params: M || trainable%: P` (P with 4 decimals)."""
        t, a = self.get_nb_trainable_parameters()
        print(f"trainable params: {t} || all params: {a} || trainable%: {100.0 * t / a:.4f}")

    def get_submodule(self, name: str) -> Module:
        """The submodule at a dotted name ("" is self). Raises KeyError naming the missing part."""
        m = self
        for part in filter(None, name.split(".")):
            if part not in m._modules:
                raise KeyError(f"no submodule {name!r}: {type(m).__name__} has no child {part!r}")
            m = m._modules[part]
        return m

    def get_parameter(self, name: str) -> Parameter:
        """The Parameter at a dotted name (e.g. "lora_A.weight"). Raises KeyError naming it."""
        mod, _, pname = name.rpartition(".")
        m = self.get_submodule(mod)
        if pname not in m._parameters:
            raise KeyError(f"no parameter {name!r}: {type(m).__name__} has no parameter {pname!r}")
        return m._parameters[pname]

    def set_submodule(self, name: str, module: Module) -> None:
        """Replace the submodule at a dotted name (used to swap a Linear for a LoRALinear)."""
        parent_name, _, child = name.rpartition(".")
        parent = self.get_submodule(parent_name)
        if child not in parent._modules:
            raise KeyError(f"no submodule {name!r}")
        setattr(parent, child, module)

    # ---- modes and gradients --------------------------------------------------------------
    def train(self, mode: bool = True) -> Module:
        """Set training mode on this module and all submodules; returns self."""
        for m in self.modules():
            object.__setattr__(m, "training", mode)
        return self

    def eval(self) -> Module:
        """Evaluation mode (dropout off); returns self."""
        return self.train(False)

    def requires_grad_(self, flag: bool = True) -> Module:
        """Freeze (False) or unfreeze (True) every parameter; returns self."""
        for p in self.parameters():
            p.requires_grad = flag
        return self

    def zero_grad(self) -> None:
        """Drop every parameter's accumulated gradient."""
        for p in self.parameters():
            p.grad = None

    def astype(self, dtype: DTypeLike) -> Module:
        """Cast every parameter to dtype in place (e.g. np.float64 for gradient checks); returns self.

        Args: dtype: np.float32 or np.float64 (or their names); the engine computes in these only.
        Raises: TypeError naming the dtype for anything else (float16, int, "foo"...), before any
            parameter is changed.
        """
        try:
            dt = None if dtype is None else np.dtype(dtype)     # np.dtype(None) would be float64
        except TypeError:
            dt = None
        if dt is None or dt not in (np.dtype(np.float32), np.dtype(np.float64)):
            raise TypeError(f"{type(self).__name__}.astype: dtype must be np.float32 or np.float64, got {dtype!r}")
        dtype = dt
        for p in self.parameters():
            p.data = p.data.astype(dtype)
            p.grad = None
        return self

    # ---- state ----------------------------------------------------------------------------
    def state_dict(self) -> OrderedDict[str, np.ndarray]:
        """OrderedDict name -> copy of the parameter array (shared parameters once)."""
        return OrderedDict((n, p.data.copy()) for n, p in self.named_parameters())

    def load_state_dict(self, state: Mapping[str, ArrayLike],
                        strict: bool = True) -> tuple[list[str], list[str]]:
        """Copy arrays into the parameters, bit for bit.

        Args:
            state: mapping name -> ndarray, as made by `state_dict`.
            strict: require exactly the same keys.
        Raises:
            KeyError: (strict) missing or unexpected keys, all listed.
            ValueError: a shape or dtype differs (all mismatches listed with both shapes).
        """
        params = OrderedDict(self.named_parameters())
        missing = [k for k in params if k not in state]
        unexpected = [k for k in state if k not in params]
        if strict and (missing or unexpected):
            raise KeyError(f"load_state_dict: missing keys {missing}, unexpected keys {unexpected}")
        bad = [f"{k}: model {params[k].shape} {params[k].dtype}, state {np.shape(v)} {np.asarray(v).dtype}"
               for k, v in state.items() if k in params and (np.shape(v) != params[k].shape
                                                              or np.asarray(v).dtype != params[k].dtype)]
        if bad:
            raise ValueError("load_state_dict: mismatched keys:\n  " + "\n  ".join(bad))
        for k, v in state.items():
            if k in params:
                params[k].data = np.array(v, copy=True)
        return missing, unexpected

    def extra_repr(self) -> str:
        """One-line description of this module's own settings (for repr)."""
        return ""

    def __repr__(self):
        lines = [f"{type(self).__name__}({self.extra_repr()}"]
        for name, m in self._modules.items():
            sub = repr(m).replace("\n", "\n  ")
            lines.append(f"  ({name}): {sub}")
        return "\n".join(lines) + (")" if len(lines) == 1 else "\n)")


class ModelWrapper(Module):
    """A Module around `self.base_model` that answers with the wrapped model's names and attributes.

    PEFT's wrappers (LoraModel, the baselines' PeftModel) hold the GPT as `base_model` but report its
    own parameter and module names, with no `base_model.` prefix, so files carry the names the field
    uses. Modules of the wrapper's own (e.g. a prompt encoder) keep their own names. Attribute reads
    that miss fall through to the wrapped model; `config`, `dtype` and `rng` are the wrapped model's.
    """

    def named_modules(self, prefix: str = "") -> Iterator[tuple[str, Module]]:
        """(name, module) pairs: this wrapper, the wrapped model's modules under their own names,
        then the wrapper's own modules."""
        yield prefix, self
        yield from self.base_model.named_modules(prefix)
        for name, m in self._modules.items():
            if name != "base_model":
                yield from m.named_modules(f"{prefix}.{name}" if prefix else name)

    def get_submodule(self, name: str) -> Module:
        """The submodule at a dotted name: one of the wrapper's own, else the wrapped model's."""
        head = name.split(".")[0]
        own = head in self._modules and head != "base_model"
        return Module.get_submodule(self, name) if own or not name else self.base_model.get_submodule(name)

    def set_submodule(self, name: str, module: Module) -> None:
        """Replace a submodule of the wrapped model (a Linear by a LoRALinear, ...)."""
        self.base_model.set_submodule(name, module)

    def __getattr__(self, name):  # only called when normal lookup fails
        base = self.__dict__.get("base_model")
        if base is None:
            raise AttributeError(name)
        return getattr(base, name)

    config = property(lambda self: self.base_model.config, doc="The wrapped model's config (GPTConfig).")
    dtype = property(lambda self: self.base_model.dtype, doc="The wrapped model's dtype.")
    rng = property(lambda self: self.base_model.rng, doc="The wrapped model's generator (dropout, LoRA dropout).")
