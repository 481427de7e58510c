"""Reference solution: backward of a bottleneck adapter with a ReLU."""
import numpy as np


def adapter_backward(h, W_down, b_down, W_up, b_up, g):
    """Reference solution of the `adapter_backward` exercise (see stubs/adapter_backward.py)."""
    z = h @ W_down.T + b_down                                  # (N, m)
    a = np.maximum(z, 0.0)                                     # (N, m)
    dW_up = g.T @ a                                            # (C, m)
    db_up = g.sum(axis=0)                                      # (C,)
    dz = (g @ W_up) * (z > 0)                                  # (N, m)
    dW_down = dz.T @ h                                         # (m, C)
    db_down = dz.sum(axis=0)                                   # (m,)
    dh = g + dz @ W_down                                       # skip path + bottleneck path
    return dh, dW_down, db_down, dW_up, db_up
