"""The `Function` base class and `unbroadcast`: the two pieces every differentiable op is built from.

An op is a subclass of `Function` with two static methods side by side, as in minitorch and early
tinygrad:

    forward(ctx, *arrays, **consts) -> ndarray      plain NumPy, saves what backward needs on ctx
    backward(ctx, grad) -> tuple of ndarray | None   one gradient per array input (vector-Jacobian product)

`Fn.apply(*inputs, **consts)` wraps inputs as Tensors, checks dtypes, runs `forward` and, when a
gradient is needed, records a graph node. Keyword arguments are constants (axes, index arrays,
targets, masks): they never receive gradients.
"""
from __future__ import annotations

import numbers

import numpy as np

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


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
    if lead < 0 or any(s != 1 and s != gs for s, gs in zip(shape, grad.shape[lead:])):
        raise ValueError(f"unbroadcast: gradient of shape {grad.shape} cannot be reduced to shape {shape}")
    axes = tuple(range(lead)) + tuple(
        lead + i for i, s in enumerate(shape) if s == 1 and grad.shape[lead + i] != 1)
    if axes:
        grad = grad.sum(axis=axes, keepdims=True)
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
    """A graph node: the Function class that made a tensor, its context and its input tensors."""

    __slots__ = ("fn", "ctx", "parents", "freed")

    def __init__(self, fn, ctx, parents):
        self.fn, self.ctx, self.parents, self.freed = fn, ctx, parents, False

    def free(self):
        """Drop saved arrays and inputs so the memory of the graph can be reclaimed."""
        self.ctx = None
        self.parents = None
        self.freed = True


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
        if track:
            result._node = Node(cls, ctx, tuple(tensors))
        return result
