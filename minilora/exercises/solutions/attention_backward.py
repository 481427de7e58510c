"""Reference solution: backward of single-head scaled dot-product attention."""
import numpy as np


def attention_backward(q, k, v, g, causal=True):
    """Reference solution of the `attention_backward` exercise (see stubs/attention_backward.py)."""
    T, hs = q.shape
    scale = 1.0 / np.sqrt(hs)
    S = (q @ k.T) * scale                                      # (T, T)
    if causal:
        S = np.where(np.tril(np.ones((T, T), dtype=bool)), S, -np.inf)
    P = np.exp(S - np.max(S, axis=-1, keepdims=True))
    P /= np.sum(P, axis=-1, keepdims=True)                     # (T, T), 0 above the diagonal if causal
    dv = P.T @ g                                               # (T, hs)
    dP = g @ v.T                                               # (T, T)
    dS = P * (dP - np.sum(dP * P, axis=-1, keepdims=True))     # (T, T) softmax backward, row-wise
    dq = (dS @ k) * scale                                      # (T, hs)
    dk = (dS.T @ q) * scale                                    # (T, hs)
    return dq, dk, dv
