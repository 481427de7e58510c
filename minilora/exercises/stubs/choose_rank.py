"""Exercise: choose a rank from a singular spectrum (the energy rank)."""


def choose_rank(s, threshold):
    """The smallest k such that the top-k singular values hold a fraction `threshold` of the energy.

    Arguments:
      s          (n,) float64, singular values sorted in decreasing order (as np.linalg.svd returns
                 them), all >= 0, s[0] > 0
      threshold  float in (0, 1]
    Result: k, an int with 1 <= k <= n.

    Formula:
        k = min { k : sum_{i<k} s_i**2 >= threshold * sum_i s_i**2 }

    Hints:
      1. Energy is the squared singular value, not the singular value.
      2. np.cumsum gives all the partial sums at once; k counts values, so it starts at 1, not 0.
      3. threshold = 1.0 must give a valid k (<= n) even if rounding makes the last partial sum a hair
         smaller than the total.
    """
    raise NotImplementedError("choose_rank: fill me in")
