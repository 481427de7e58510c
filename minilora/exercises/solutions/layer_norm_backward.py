"""Reference solution: LayerNorm backward over the last axis (biased variance, eps inside the sqrt)."""
import numpy as np


def layer_norm_backward(x, gamma, g, eps):
    """Reference solution of the `layer_norm_backward` exercise (see stubs/layer_norm_backward.py)."""
    mu = np.mean(x, axis=-1, keepdims=True)                   # (N, 1)
    rstd = 1.0 / np.sqrt(np.var(x, axis=-1, keepdims=True) + eps)  # (N, 1)
    xhat = (x - mu) * rstd                                    # (N, C)
    dxhat = g * gamma                                         # (N, C)
    dx = rstd * (dxhat
                 - np.mean(dxhat, axis=-1, keepdims=True)
                 - xhat * np.mean(dxhat * xhat, axis=-1, keepdims=True))  # (N, C)
    dgamma = np.sum(g * xhat, axis=0)                         # (C,)
    dbeta = np.sum(g, axis=0)                                 # (C,)
    return dx, dgamma, dbeta
