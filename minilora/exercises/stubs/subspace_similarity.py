"""Exercise: LoRA's subspace similarity between two adapters (Hu et al. 2021, Sec. 7.2, Eq. 4)."""


def subspace_similarity(A1, A2, i, j):
    """phi(A1, A2, i, j): how much the top-i and top-j input subspaces of two A matrices overlap.

    Arguments:
      A1  (r1, d_in) float64, a LoRA down-projection
      A2  (r2, d_in) float64
      i   int, 1 <= i <= min(r1, d_in)
      j   int, 1 <= j <= min(r2, d_in)
    Result: a float in [0, 1] (1 for identical spans, 0 for orthogonal spans).

    Formula, with U1 = the top-i RIGHT singular vectors of A1 as columns (d_in, i)
    and U2 = the top-j right singular vectors of A2 (d_in, j):

        phi = ||U1.T @ U2||_F**2 / min(i, j)

    Hints:
      1. np.linalg.svd(A, full_matrices=False) returns U, s, Vh; the right singular vectors are the
         ROWS of Vh, so U1 = Vh1[:i].T. (The left singular vectors live in the r-dim space.)
      2. ||M||_F**2 is np.sum(M**2).
      3. The signs of singular vectors are arbitrary; phi does not depend on them.
    """
    raise NotImplementedError("subspace_similarity: fill me in")
