"""The `Function` base class and `unbroadcast`: the two pieces every differentiable op is built from
(plus `reduce_sum`, a float32 sum whose error does not grow with the number of rows).

An op is a subclass of `Function` with two static methods side by side, as in minitorch and early
tinygrad:

    forward(ctx, *arrays, **consts) -> ndarray      plain NumPy, saves what backward needs on ctx
    backward(ctx, grad) -> tuple of ndarray | None   one gradient per array input (vector-Jacobian product)

`Fn.apply(*inputs, **consts)` wraps inputs as Tensors, checks dtypes, runs `forward` and, when a
gradient is needed, records a graph node. Keyword arguments are constants (axes, index arrays,
targets, masks): they never receive gradients.
"""
from __future__ import annotations

import math
import numbers

import numpy as np

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def _pairwise_rows(a: np.ndarray) -> np.ndarray:
    """Sum over axis 0 of a 2-D array (N, M) by halving: rows i and i + N/2 are added, again and
    again, into one scratch array of N/2 rows. Rounding error grows like log2(N), not N."""
    n = a.shape[0]
    if n <= 8:
        return a.sum(axis=0)
    h = n // 2
    t = a[:h] + a[h:2 * h]
    if n % 2:
        t[0] += a[-1]
    n = h
    while n > 1:
        h = n // 2
        t[:h] += t[h:2 * h]
        if n % 2:
            t[0] += t[n - 1]
        n = h
    return t[0].copy()                              # a copy, so the scratch array is freed


def reduce_sum(a: np.ndarray, axis=None, keepdims: bool = False) -> np.ndarray:
    """`np.sum` whose float32 rounding error does not grow with the number of rows summed.

    NumPy sums pairwise only along the contiguous last axes; over the other axes it adds one row
    at a time in the array's dtype, so in float32 the error grows with the row count (the mean of
    2^20 rows of 0.1 comes out 0.10099). Here, for float32:
      - reductions over trailing axes of a C-contiguous array: NumPy's own (already pairwise);
      - over leading axes of a C-contiguous array (bias gradients: (B, T, C) -> (C,)): pairwise
        over the rows, in float32 (one scratch array of half the rows; about as fast as np.sum);
      - any other axes: accumulated in float64, then rounded back to float32.
    float64 input is summed by NumPy as is.
    Args:
        a: ndarray of any shape. axis: int, tuple of int, or None (all axes). keepdims: as np.sum.
    Returns:
        ndarray of a's dtype and np.sum's result shape (0-d for a full reduction).
    """
    nd = a.ndim
    if axis is None:
        axes = tuple(range(nd))
    else:
        axes = tuple(sorted({ax % nd for ax in ((axis,) if isinstance(axis, (int, np.integer)) else axis)})) \
            if nd else ()
    k = len(axes)
    if a.dtype != np.float32 or k == 0 or (a.flags.c_contiguous and axes == tuple(range(nd - k, nd))):
        return np.asarray(a.sum(axis=axes, keepdims=keepdims))
    if a.flags.c_contiguous and axes == tuple(range(k)):
        rows = a.reshape(math.prod(a.shape[:k]), math.prod(a.shape[k:]))
        out = _pairwise_rows(rows)
        return out.reshape(((1,) * k if keepdims else ()) + a.shape[k:])
    return np.asarray(a.sum(axis=axes, dtype=np.float64, keepdims=keepdims).astype(np.float32))


def unbroadcast(grad: np.ndarray, shape: tuple) -> np.ndarray:
    """Sum `grad` down to `shape`, undoing NumPy broadcasting (for every rank).

    If `x` of shape `shape` was broadcast to `grad.shape` in the forward pass, each element of x was
    used once per copy, so its gradient is the sum over the copies: sum over the leading axes that
    broadcasting added, and over the axes where `shape` has size 1 but `grad` does not.

    Args:
        grad: ndarray of the broadcast shape.
        shape: the original shape (tuple of int), broadcast-compatible with grad.shape.
    Returns:
        ndarray of exactly `shape`, same dtype as grad (a view of grad when nothing is summed).
    Raises:
        ValueError: if `shape` cannot be broadcast to grad.shape.
    """
    shape = tuple(shape)
    if grad.shape == shape:
        return grad
    lead = grad.ndim - len(shape)
    if lead < 0 or any(s != 1 and s != gs for s, gs in zip(shape, grad.shape[lead:], strict=True)):
        raise ValueError(f"unbroadcast: gradient of shape {grad.shape} cannot be reduced to shape {shape}")
    axes = tuple(range(lead)) + tuple(
        lead + i for i, s in enumerate(shape) if s == 1 and grad.shape[lead + i] != 1)
    if axes:
        grad = reduce_sum(grad, axes, keepdims=True)      # float32: error independent of the row count
    return grad.reshape(shape)


class Context:
    """What `forward` leaves for `backward`: saved arrays, constants, and which inputs need gradients.

    Attributes:
        needs_input_grad: tuple of bool, one per array input.
        saved: the tuple given to `save_for_backward` (freed after backward unless the graph is kept).
    Any other attribute may be set freely by an op (`ctx.axis = ...`).
    """

    def __init__(self, needs_input_grad):
        self.needs_input_grad = needs_input_grad
        self.saved = ()

    def save_for_backward(self, *arrays):
        """Keep arrays (or anything) for the backward pass; read them back from `ctx.saved`."""
        self.saved = arrays


class Node:
    """A graph node: the Function class that made a tensor, its context and its input tensors.

    `versions` holds (input index, or -1 for the output, `_version` at forward time) for each tensor
    whose array backward will read (see `saved_versions`).
    """

    __slots__ = ("fn", "ctx", "parents", "versions", "freed")

    def __init__(self, fn, ctx, parents, versions=()):
        self.fn, self.ctx, self.parents, self.versions, self.freed = fn, ctx, parents, versions, False

    def free(self):
        """Drop saved arrays and inputs so the memory of the graph can be reclaimed."""
        self.ctx = None
        self.parents = None
        self.freed = True


def _root(a):
    return a if a.base is None else a.base      # NumPy points every view at the array owning the memory


def saved_versions(saved: tuple, inputs: tuple, output) -> tuple:
    """Which of an op's tensors backward will read, with their in-place write counts now.

    An input (or the output) counts when an array in `saved` is its array or a view of the same
    memory. Only those are checked at backward: Add saves nothing, so writing into its inputs after
    the forward pass changes no gradient.
    Args:
        saved: ctx.saved after forward. inputs: the input Tensors. output: the result Tensor.
    Returns:
        tuple of (input index or -1 for the output, version) pairs.
    """
    roots = {id(_root(s)) for s in saved if isinstance(s, np.ndarray)}
    if not roots:
        return ()
    found = tuple((i, t._version) for i, t in enumerate(inputs) if id(_root(t.data)) in roots)
    if id(_root(output.data)) in roots:
        found += ((-1, output._version),)
    return found


class Function:
    """Base class of every differentiable op; subclass it and write `forward` and `backward`.

    Example (the whole of `Exp`):

        class Exp(Function):
            @staticmethod
            def forward(ctx, x):
                y = np.exp(x); ctx.save_for_backward(y); return y
            @staticmethod
            def backward(ctx, g):
                (y,) = ctx.saved; return (g * y,)

    Rules an op must follow (the engine checks the first two and names the op when they fail):
    backward returns one gradient per array input (None where not needed), each of exactly its
    input's shape and dtype; backward never writes into `g` or into saved arrays in place.
    """

    @staticmethod
    def forward(ctx, *arrays, **consts):  # pragma: no cover - abstract
        """Compute the op on plain arrays; returns an ndarray."""
        raise NotImplementedError

    @staticmethod
    def backward(ctx, grad):  # pragma: no cover - abstract
        """Given dL/d(output), return dL/d(input) for each array input (None if not needed)."""
        raise NotImplementedError

    @classmethod
    def apply(cls, *inputs, **consts):
        """Run the op on Tensors (or numbers/arrays, treated as constants) and record the graph.

        Raises:
            TypeError: an input is not a float32/float64 array, or inputs mix float32 and float64.
        """
        from .tensor import Tensor, is_grad_enabled

        dtype = next((t.data.dtype for t in inputs if isinstance(t, Tensor)), None)
        tensors = []
        for t in inputs:
            if not isinstance(t, Tensor):
                if isinstance(t, numbers.Number) and not isinstance(t, bool) and dtype is not None:
                    t = np.asarray(t, dtype=dtype)  # a Python scalar takes the tensor's dtype
                t = Tensor(t)
            tensors.append(t)
        arrays = [t.data for t in tensors]
        dt = arrays[0].dtype
        for a in arrays:
            if a.dtype not in FLOAT_DTYPES:
                raise TypeError(f"{cls.__name__}: expected float32 or float64 inputs, got dtype {a.dtype} "
                                f"(integer arrays are not differentiable; pass indices as constants)")
            if a.dtype != dt:
                raise TypeError(f"{cls.__name__}: inputs mix {dt} and {a.dtype}; cast one of them "
                                f"explicitly (minilora never upcasts silently)")
        needs = tuple(t.requires_grad for t in tensors)
        track = is_grad_enabled() and any(needs)
        ctx = Context(needs)
        out = cls.forward(ctx, *arrays, **consts)
        if out.dtype != dt:
            raise RuntimeError(f"{cls.__name__}.forward returned dtype {out.dtype} for {dt} inputs")
        result = Tensor(out, requires_grad=track)
        root = _root(out)
        for t in tensors:
            if _root(t.data) is root:                   # a view (reshape, transpose, slice): one write count
                result._vc = t._vc
                break
        if track:
            result._node = Node(cls, ctx, tuple(tensors), saved_versions(ctx.saved, tensors, result))
        return result
