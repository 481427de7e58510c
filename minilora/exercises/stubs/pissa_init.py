"""Exercise: PiSSA's start, the principal singular triplets of W0 in A and B, and the residual."""


def pissa_init(W0, r, scaling):
    """PiSSA (arXiv:2404.02948) with PEFT's scaling: A, B such that scaling * B @ A is the best rank-r
    approximation of W0, and the residual W_res = W0 - scaling * B @ A that stays frozen.

    Arguments:
      W0       (d_out, d_in) float64   the pretrained weight
      r        int, 1 <= r <= min(d_out, d_in)
      scaling  float > 0               lora_alpha / r
    Result: (A, B, W_res), float64 arrays of shapes (r, d_in), (d_out, r), (d_out, d_in).

    Formulas, with U, S, Vh = numpy.linalg.svd(W0, full_matrices=False) (use it, so that the signs
    of the singular vectors are numpy's):
        root  = sqrt(S[:r] / scaling)                 (r,)
        A     = root[:, None] * Vh[:r]                 each row of Vh scaled
        B     = U[:, :r] * root                        each column of U scaled
        W_res = W0 - scaling * B @ A

    Hints:
      1. numpy returns Vh = V transposed: its ROWS are the right singular vectors.
      2. The square root of S goes half into A and half into B.
      3. Dividing S by the scaling first makes scaling * B @ A equal U_r S_r V_r^T for any lora_alpha.
    """
    raise NotImplementedError("pissa_init: fill me in")
