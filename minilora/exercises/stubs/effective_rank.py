"""Exercise: the effective rank of Roy & Vetterli (2007)."""


def effective_rank(s):
    """exp of the entropy of the L1-normalised singular values.

    Arguments: s (n,) float64, singular values, all >= 0, at least one > 0 (zeros allowed).
    Result: a float in [1, number of nonzero s].

    Formula:
        p_k = s_k / sum_j s_j
        erank = exp( - sum_k p_k * log(p_k) ),   with 0 * log(0) = 0

    Hints:
      1. Normalise by the sum of s (L1), not by the sum of s**2.
      2. np.log(0) is -inf and 0 * -inf is nan: drop the zero p_k before taking the log.
      3. Check: s = [1, 1, 1] gives 3.0; s = [5, 0, 0] gives 1.0.
    """
    raise NotImplementedError("effective_rank: fill me in")
