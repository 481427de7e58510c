"""Reference solution: the energy rank, the smallest k whose top-k energy reaches a threshold."""
import numpy as np


def choose_rank(s, threshold):
    """Reference solution of the `choose_rank` exercise (see stubs/choose_rank.py)."""
    energy = np.asarray(s, dtype=np.float64) ** 2     # (n,)
    cum = np.cumsum(energy)                           # (n,)
    k = int(np.searchsorted(cum, threshold * cum[-1], side="left")) + 1
    return min(k, len(energy))
