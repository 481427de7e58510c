"""Exercise: count the trainable parameters of VeRA, and compare with LoRA."""


def vera_param_count(d_in, d_out, r, n_matrices):
    """Number of trainable VeRA parameters when n_matrices weights, each (d_out, d_in), are adapted at rank r.

    Arguments: d_in, d_out, r, n_matrices are Python ints >= 1.
    Result: an int (exact; not a float).

    VeRA (Kopiczko et al. 2024, arXiv:2310.11454, eq. 2) freezes W0 (d_out, d_in) AND the two random
    factors A (r, d_in) and B (d_out, r), which are drawn once and shared by every adapted layer.
    Each layer trains two vectors only: d (r,) and b (d_out,), in

        ΔW = diag(b) · B · diag(d) · A

    Hints:
      1. What trains in one layer? Count the entries of d and of b.
      2. A and B are frozen (and shared): like W0, they add nothing to the trainable count.
      3. Check yourself: 12 matrices (768 -> 2304), r = 256 gives 12 * (256 + 2304) = 30,720;
         LoRA at r = 8 on the same matrices trains 12 * 8 * (768 + 2304) = 294,912.
    """
    raise NotImplementedError("vera_param_count: fill me in")
