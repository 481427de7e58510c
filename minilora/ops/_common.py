"""What the op modules share: the argument types, shape and axis checks, `_t`, `_centre`."""
from __future__ import annotations

import builtins
import math
from typing import Union

import numpy as np

from ..function import reduce_sum
from ..tensor import Tensor

TensorLike = Union[Tensor, np.ndarray, float]   # what an op accepts; arrays and numbers become constants
Axis = Union[int, tuple, None]                  # one axis, several, or None for all


def _shape_error(op, a, b, why="cannot be broadcast together"):
    return ValueError(f"{op}: shapes {a} and {b} {why}")


def _broadcast_check(op, a, b):
    try:
        np.broadcast_shapes(np.shape(a), np.shape(b))
    except ValueError:
        raise _shape_error(op, np.shape(a), np.shape(b)) from None


def _norm_axis(axis, ndim):
    if axis is None:
        return tuple(range(ndim))
    axes = (axis,) if isinstance(axis, (int, np.integer)) else tuple(axis)
    out = []
    for a in axes:
        if not -ndim <= a < builtins.max(ndim, 1):  # ops.max shadows the builtin here
            raise ValueError(f"axis {a} is out of range for an array of {ndim} dimensions")
        out.append(a % ndim if ndim else 0)
    return tuple(sorted(set(out)))


def _expand(g, axes, keepdims):
    """Give a reduced gradient back its reduced axes (size 1), so it broadcasts against the input."""
    if not keepdims:
        g = np.expand_dims(g, axes) if axes else g
    return g


def _centre(x, axes):
    """x minus its mean over axes, exact for a constant slice (which gives exactly 0).

    The mean is taken of d = x - x0, x0 the first element along the axes: d is exact for a constant
    slice and has no large common offset. (In float32, mean(x) of 7 copies of 1e6 + 0.1 is one
    float32 step, 0.0625, off, and normalising by the tiny variance blows that up to ~1.) Shifting x
    changes neither the variance nor its gradient, so x0 is a constant."""
    x0 = x[tuple(slice(0, 1) if i in axes else slice(None) for i in range(x.ndim))]
    n = x.dtype.type(math.prod(x.shape[a] for a in axes))
    d = x - x0
    d -= reduce_sum(d, axes, keepdims=True) / n
    return d


def _t(x):
    return x if isinstance(x, Tensor) else Tensor(x)


