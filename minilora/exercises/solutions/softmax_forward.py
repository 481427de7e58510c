"""Reference solution: numerically stable softmax along the last axis."""
import numpy as np


def softmax_forward(x):
    """Reference solution of the `softmax_forward` exercise (see stubs/softmax_forward.py)."""
    z = x - np.max(x, axis=-1, keepdims=True)  # (..., V), every row's max is 0: exp never overflows
    e = np.exp(z)                               # (..., V), values in (0, 1], at least one 1 per row
    return e / np.sum(e, axis=-1, keepdims=True)
