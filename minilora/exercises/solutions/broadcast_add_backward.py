"""Reference solution: gradients of c = a + b under broadcasting (the `unbroadcast` step)."""
import numpy as np


def _unbroadcast(g, shape):
    g = np.sum(g, axis=tuple(range(g.ndim - len(shape))))            # drop the missing leading dims
    axes = tuple(i for i, n in enumerate(shape) if n == 1 and g.shape[i] != 1)
    return np.sum(g, axis=axes, keepdims=True).reshape(shape)         # sum where a size-1 dim grew


def broadcast_add_backward(g, shape_a, shape_b):
    """Reference solution of the `broadcast_add_backward` exercise (see stubs/broadcast_add_backward.py)."""
    return _unbroadcast(g, tuple(shape_a)), _unbroadcast(g, tuple(shape_b))
