"""Reference solution: the 16 NF4 levels (QLoRA §3 eq. 4, asymmetric: 7 negative, 0, 8 positive)."""
from statistics import NormalDist

import numpy as np


def nf4_levels(offset):
    """Reference solution of the `nf4_levels` exercise (see stubs/nf4_levels.py)."""
    q = NormalDist().inv_cdf
    pos = [q(float(p)) for p in np.linspace(offset, 0.5, 9)[:-1]]     # 8 quantiles > 0
    neg = [-q(float(p)) for p in np.linspace(offset, 0.5, 8)[:-1]]    # 7 quantiles < 0
    v = np.sort(np.array(pos + [0.0] + neg))                           # (16,)
    return v / v.max()
