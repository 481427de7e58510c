"""Reference solution: vector-Jacobian product of softmax, dx = y * (g - sum(g * y))."""
import numpy as np


def softmax_backward(y, g):
    """Reference solution of the `softmax_backward` exercise (see stubs/softmax_backward.py)."""
    dot = np.sum(g * y, axis=-1, keepdims=True)  # (..., 1) the row-wise <g, y>
    return y * (g - dot)                          # (..., V)
