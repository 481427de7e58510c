"""Reference solution: effective rank of Roy & Vetterli (2007), exp of the entropy of s / sum(s)."""
import numpy as np


def effective_rank(s):
    """Reference solution of the `effective_rank` exercise (see stubs/effective_rank.py)."""
    s = np.asarray(s, dtype=np.float64)
    p = s / np.sum(s)                  # (n,) L1-normalised singular values
    p = p[p > 0]                       # 0 * log 0 = 0
    return float(np.exp(-np.sum(p * np.log(p))))
