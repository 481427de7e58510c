"""Reference solution: PiSSA's start and residual (PEFT's division by the scaling)."""
import numpy as np


def pissa_init(W0, r, scaling):
    """Reference solution of the `pissa_init` exercise (see stubs/pissa_init.py)."""
    U, S, Vh = np.linalg.svd(W0, full_matrices=False)
    root = np.sqrt(S[:r] / scaling)             # (r,)
    A = root[:, None] * Vh[:r]                  # (r, d_in)
    B = U[:, :r] * root                         # (d_out, r)
    return A, B, W0 - scaling * (B @ A)
