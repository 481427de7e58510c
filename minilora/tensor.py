"""`Tensor`, the reverse-mode engine (`Tensor.backward`), and `no_grad`.

How backward works (HIPS autograd's plan, written out), one module-level function per step:
1. `topological_order`: an iterative depth-first search from the output lists every tensor that
   needs a gradient, each after its inputs (no recursion, so a chain of 10,000 ops is fine);
2. `propagate`: walking that order backwards, each node's Function.backward turns the gradient of
   its output into gradients of its inputs. Interior gradients live in a local dict and are popped
   as soon as they are used; only leaves (tensors no op produced) accumulate into `.grad`;
3. `accumulate_grad`: when two paths meet, their gradients are added into a NEW array the first
   time (never in place into an array an op returned, which may be shared: `f = (x + y) + x` would
   give dy = 2);
4. afterwards each node drops its saved arrays and inputs (the graph is freed), unless
   `retain_graph=True`; a second backward through a freed graph raises.

In-place modification (as PyTorch's version counter): each Tensor counts in-place writes made
through `t.data` (`t.data -= u`, as optimizers do); each node records the count of every input (and
of its output) whose array its backward reads, and backward raises if it changed. Writes straight
into the ndarray (`t.data[0] = 5`, `np.copyto(t.data, ...)`, or through a NumPy view of it) cannot
be seen through a plain ndarray and are NOT detected: do not edit arrays between forward and backward.
"""
from __future__ import annotations

import contextlib

import numpy as np

from .function import FLOAT_DTYPES

_grad_enabled = True


def is_grad_enabled() -> bool:
    """True unless inside a `no_grad()` block."""
    return _grad_enabled


@contextlib.contextmanager
def no_grad():
    """Context manager: ops inside record no graph (evaluation, sampling, optimizer updates)."""
    global _grad_enabled
    prev, _grad_enabled = _grad_enabled, False
    try:
        yield
    finally:
        _grad_enabled = prev


class Tensor:
    """An ndarray plus what reverse-mode differentiation needs.

    Args:
        data: array-like; kept as an ndarray (no copy when it already is one).
        requires_grad: whether gradients should flow to this tensor (needs a float32/float64 dtype).
        name: optional label used in error messages and gradient-check reports.
    Attributes:
        data: the ndarray. grad: ndarray of data's shape and dtype, or None (set on leaves by backward).
        requires_grad: bool. is_leaf: True when no op produced this tensor.
        _version: number of in-place writes through `.data` to this array or any view of it that an
            op (or detach) made (see the setter); backward compares it with the count each op recorded.
    Raises:
        TypeError: requires_grad=True on a non-float array.
    """

    __array_priority__ = 1000  # so ndarray + Tensor calls Tensor.__radd__

    def __init__(self, data, requires_grad=False, name=None):
        if isinstance(data, Tensor):
            data = data.data
        self._data = data if isinstance(data, np.ndarray) else np.asarray(data)
        self._vc = [0]      # in-place write count, one cell shared with views of the same array
        if requires_grad and self._data.dtype not in FLOAT_DTYPES:
            raise TypeError(f"only float32/float64 tensors can require gradients, got dtype {self.data.dtype}")
        self.requires_grad = bool(requires_grad)
        self.grad = None
        self.name = name
        self._node = None

    # ---- basic properties -------------------------------------------------------------------
    @property
    def data(self) -> np.ndarray:
        """The ndarray. Assigning to it is allowed (optimizers do); see the setter for what is tracked."""
        return self._data

    @data.setter
    def data(self, value: np.ndarray):
        # `t.data -= u` writes into the array itself, then assigns the same object back: that is an
        # in-place modification, which arrays saved for backward would silently see; it is counted
        # in the cell shared with every view of this array made by an op (or detach), as PyTorch
        # does. Rebinding to a new array leaves the saved ones intact. Writes like `t.data[0] = 5`
        # never reach this setter.
        if value is self._data:
            self._vc[0] += 1
        else:
            self._vc = [self._vc[0]]                # a new array: no longer a view of the old one's memory
        self._data = value

    @property
    def _version(self) -> int:
        return self._vc[0]

    shape = property(lambda self: self._data.shape, doc="Shape of data (tuple of int).")
    dtype = property(lambda self: self._data.dtype, doc="dtype of data.")
    ndim = property(lambda self: self._data.ndim, doc="Number of dimensions.")
    size = property(lambda self: self._data.size, doc="Number of elements.")
    is_leaf = property(lambda self: self._node is None, doc="True if no op produced this tensor.")

    def __repr__(self):
        extra = ", requires_grad=True" if self.requires_grad else ""
        return f"Tensor({np.array2string(self.data, precision=4, threshold=20)}, dtype={self.dtype}{extra})"

    def __len__(self):
        return len(self.data)

    def numpy(self) -> np.ndarray:
        """The underlying ndarray (not a copy)."""
        return self.data

    def item(self) -> float:
        """The value of a one-element tensor as a Python number."""
        return self.data.item()

    def detach(self) -> "Tensor":
        """A new leaf tensor sharing data (and the in-place write count), cut from the graph."""
        t = Tensor(self.data)
        t._vc = self._vc
        return t

    def astype(self, dtype) -> "Tensor":
        """A new leaf tensor with data cast to dtype (not differentiable: cast parameters, not activations)."""
        return Tensor(self.data.astype(dtype), requires_grad=self.requires_grad)

    def zero_grad(self):
        """Forget the accumulated gradient."""
        self.grad = None

    # ---- the engine -------------------------------------------------------------------------
    def backward(self, grad: np.ndarray | Tensor | None = None, retain_graph: bool = False) -> None:
        """Accumulate d(self)/d(leaf) · grad into `.grad` of every leaf that requires gradients.

        Walks `topological_order(self)` backwards; `propagate` does one op's step.
        Args:
            grad: dL/d(self), ndarray of self's shape and dtype; may be omitted for a one-element
                tensor (then it is 1).
            retain_graph: keep the graph so backward can run through it again.
        Raises:
            RuntimeError: self does not require grad; grad omitted for a non-scalar; the graph was
                already freed by an earlier backward; an op returned a gradient of the wrong shape
                or dtype (the message names the op); an array an op saved for backward was modified
                in place after the forward pass (the message names the tensor and the op).
            ValueError: grad has the wrong shape or dtype.
        """
        if not self.requires_grad:
            raise RuntimeError("backward() called on a tensor that does not require grad "
                               "(no input had requires_grad=True, or it was made under no_grad())")
        if grad is None:
            if self.data.size != 1:
                raise RuntimeError(f"backward() without a gradient needs a one-element tensor, got shape "
                                   f"{self.shape}; pass grad= of that shape")
            grad = np.ones_like(self.data)
        else:
            grad = grad.data if isinstance(grad, Tensor) else np.asarray(grad)
            if grad.shape != self.shape or grad.dtype != self.dtype:
                raise ValueError(f"backward(): grad has shape {grad.shape} and dtype {grad.dtype}, "
                                 f"expected {self.shape} and {self.dtype}")
        grads, owned = {id(self): grad}, set()
        for t in reversed(topological_order(self)):             # outputs first, leaves last
            g = grads.pop(id(t), None)
            if g is None:
                continue
            if t._node is None:                                 # a leaf keeps its gradient
                t.grad = (g if id(t) in owned else g.copy()) if t.grad is None else t.grad + g
            else:
                propagate(t, g, grads, owned, retain_graph)

    # ---- operators (implemented in ops.py) --------------------------------------------------
    def __add__(self, o): return _ops.add(self, o)
    def __radd__(self, o): return _ops.add(o, self)
    def __sub__(self, o): return _ops.sub(self, o)
    def __rsub__(self, o): return _ops.sub(o, self)
    def __mul__(self, o): return _ops.mul(self, o)
    def __rmul__(self, o): return _ops.mul(o, self)
    def __truediv__(self, o): return _ops.div(self, o)
    def __rtruediv__(self, o): return _ops.div(o, self)
    def __neg__(self): return _ops.neg(self)
    def __pow__(self, p): return _ops.pow(self, p)
    def __matmul__(self, o): return _ops.matmul(self, o)
    def __rmatmul__(self, o): return _ops.matmul(o, self)
    def __getitem__(self, idx): return _ops.getitem(self, idx)

    def sum(self, axis=None, keepdims=False):
        """Sum over axis (None: all); see ops.sum."""
        return _ops.sum(self, axis, keepdims)

    def mean(self, axis=None, keepdims=False):
        """Mean over axis (None: all); see ops.mean."""
        return _ops.mean(self, axis, keepdims)

    def var(self, axis=None, keepdims=False):
        """Population variance over axis; see ops.var."""
        return _ops.var(self, axis, keepdims)

    def max(self, axis=None, keepdims=False):
        """Maximum over axis (ties share the gradient); see ops.max."""
        return _ops.max(self, axis, keepdims)

    def exp(self): return _ops.exp(self)
    def log(self): return _ops.log(self)
    def sqrt(self): return _ops.sqrt(self)
    def tanh(self): return _ops.tanh(self)
    def sigmoid(self): return _ops.sigmoid(self)
    def relu(self): return _ops.relu(self)

    def reshape(self, *shape):
        """Reshape (accepts a tuple or separate ints); see ops.reshape."""
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        return _ops.reshape(self, shape)

    def transpose(self, *axes):
        """Permute axes (no axes: reverse them); see ops.transpose."""
        if len(axes) == 1 and isinstance(axes[0], (tuple, list)):
            axes = tuple(axes[0])
        return _ops.transpose(self, axes or None)

    @property
    def T(self):
        """The transpose (all axes reversed)."""
        return _ops.transpose(self, None)


def _describe(t: Tensor) -> str:
    """A short label for error messages: the tensor's name, else its shape and dtype."""
    return repr(t.name) if t.name else f"a tensor of shape {t.shape} and dtype {t.dtype}"


def topological_order(root: Tensor) -> list[Tensor]:
    """Every tensor `root` depends on through gradient-carrying ops, each listed after all its inputs.

    An iterative depth-first search (an explicit stack, no recursion, so a chain of 10,000 ops is
    fine): a tensor is pushed once to visit its inputs and once more, marked done, to be appended
    after them. Inputs that do not require gradients are skipped.
    Args:
        root: the Tensor backward starts from (the loss).
    Returns:
        list of Tensors, leaves first, `root` last; walk it reversed for backward.
    Raises:
        RuntimeError: the graph was freed by an earlier backward (without retain_graph=True).
    """
    order, seen, stack = [], set(), [(root, False)]
    while stack:
        t, done = stack.pop()
        if done:
            order.append(t)
            continue
        if id(t) in seen:
            continue
        seen.add(id(t))
        stack.append((t, True))
        node = t._node
        if node is not None:
            if node.freed:
                raise RuntimeError(
                    "backward through a graph that was already freed: a previous backward() "
                    "released it; call the first backward(retain_graph=True) to go through it twice")
            for p in node.parents:
                if p.requires_grad and id(p) not in seen:
                    stack.append((p, False))
    return order


def accumulate_grad(grads: dict, owned: set, key: int, g: np.ndarray) -> None:
    """Add the gradient `g` arriving along one path into `grads[key]`, never writing into a shared array.

    An op's backward may return the very array it was given, or one array for two inputs (Add
    returns `(g, g)`), so an array in `grads` may also be held elsewhere. The first time two paths
    meet, their sum goes into a NEW array, which the engine then owns (`owned`) and may update in
    place. With `+=` into a shared array, `f = (x + y) + x` would give df/dy = 2.
    Args:
        grads: id(tensor) -> dL/d(tensor) gathered so far (ndarray).
        owned: ids whose array in `grads` the engine allocated itself.
        key: id of the tensor the gradient is for. g: ndarray of that tensor's shape and dtype.
    """
    if key not in grads:
        grads[key] = g
    elif key in owned:
        grads[key] += g
    else:
        grads[key] = grads[key] + g
        owned.add(key)


def propagate(t: Tensor, g: np.ndarray, grads: dict, owned: set, retain_graph: bool = False) -> None:
    """One backward step: the op that made `t` turns g = dL/dt into dL/d(input) for each of its inputs.

    Checks what the op returns (one gradient per input, each of its input's shape and dtype) and
    that nothing the op saved was modified in place since the forward pass, adds each gradient
    into `grads` with `accumulate_grad`, then frees the node (saved arrays and inputs) unless
    retain_graph.
    Args:
        t: a non-leaf Tensor. g: ndarray of t's shape and dtype.
        grads, owned: as in `accumulate_grad`. retain_graph: keep the node for another backward.
    Raises:
        RuntimeError: wrong number, shape or dtype of gradients (names the op); a saved input or
            the output was modified in place after the forward pass (names the tensor and the op).
    """
    node = t._node
    name = node.fn.__name__
    for i, version in node.versions:
        src = t if i < 0 else node.parents[i]
        if src._version != version:
            what = f"its output ({_describe(t)})" if i < 0 else f"its input {i} ({_describe(src)})"
            raise RuntimeError(
                f"{name}.backward needs {what} as it was in the forward pass, but it was modified in place "
                f"afterwards (version {version} -> {src._version}, e.g. by `t.data -= ...`); the gradient would "
                f"be wrong. Update tensors after backward(), or run the forward pass again.")
    in_grads = node.fn.backward(node.ctx, g)
    if not isinstance(in_grads, tuple):
        in_grads = (in_grads,)
    if len(in_grads) != len(node.parents):
        raise RuntimeError(f"{name}.backward returned {len(in_grads)} gradients for {len(node.parents)} inputs")
    for i, (p, pg) in enumerate(zip(node.parents, in_grads, strict=True)):
        if pg is None or not p.requires_grad:
            continue
        if pg.shape != p.data.shape or pg.dtype != p.data.dtype:
            raise RuntimeError(
                f"{name}.backward returned a gradient of shape {pg.shape} and dtype {pg.dtype} "
                f"for input {i} of shape {p.data.shape} and dtype {p.data.dtype} "
                f"(a missing unbroadcast or a silent upcast in {name})")
        accumulate_grad(grads, owned, id(p), pg)
    if not retain_graph:
        node.free()


def tensor(data, requires_grad=False, dtype=None, name=None) -> Tensor:
    """Make a Tensor from array-like data, optionally casting to dtype (e.g. np.float64)."""
    arr = np.array(data, dtype=dtype) if dtype is not None else np.asarray(data)
    return Tensor(arr, requires_grad=requires_grad, name=name)


from . import ops as _ops  # noqa: E402  (ops needs Tensor; Tensor's operators need ops)
