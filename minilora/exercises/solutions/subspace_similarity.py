"""Reference solution: LoRA's subspace similarity phi (Hu et al. 2021, Sec. 7.2, Eq. 4)."""
import numpy as np


def subspace_similarity(A1, A2, i, j):
    """Reference solution of the `subspace_similarity` exercise (see stubs/subspace_similarity.py)."""
    _, _, Vh1 = np.linalg.svd(A1, full_matrices=False)   # Vh1: (min(r1, d), d)
    _, _, Vh2 = np.linalg.svd(A2, full_matrices=False)
    U1 = Vh1[:i].T                                        # (d, i) top-i right singular vectors
    U2 = Vh2[:j].T                                        # (d, j)
    return float(np.sum((U1.T @ U2) ** 2) / min(i, j))
