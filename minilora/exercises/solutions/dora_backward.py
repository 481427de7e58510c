"""Reference solution: DoRA's backward pass with the weight norm held constant (DoRA §4.3)."""
import numpy as np


def dora_backward(x, W0, A, B, m, scaling, g):
    """Reference solution of the `dora_backward` exercise (see stubs/dora_backward.py)."""
    V = W0 + scaling * (B @ A)                  # (d_out, d_in)
    n = np.sqrt((V * V).sum(axis=1))            # (d_out,)  one norm per output row
    c = m / n                                   # (d_out,)
    P = x @ V.T                                 # (N, d_out)
    gP = g * c                                  # (N, d_out)
    dm = (g * P).sum(axis=0) / n                # (d_out,)
    dB = scaling * (gP.T @ (x @ A.T))           # (d_out, r)
    dA = scaling * ((gP @ B).T @ x)             # (r, d_in)
    dx = gP @ V                                 # (N, d_in)
    return dx, dA, dB, dm
