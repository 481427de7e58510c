"""Exercise: take a merged LoRA adapter out of a weight again (LoRA Sec. 4.1, task switching)."""


def unmerge(W, A, B, scaling):
    """The base weight W0 recovered from a merged weight W = W0 + scaling * B @ A.

    Arguments (float64 arrays):
      W       (d_out, d_in) merged weight (do not modify it in place)
      A       (r, d_in)
      B       (d_out, r)
      scaling float         lora_alpha / r
    Result: W0 (d_out, d_in) float64, a new array.

    Formula:
        W0 = W - scaling * B @ A

    Hints:
      1. It is merge with the sign flipped.
      2. The scaling must be the same one used to merge.
      3. Return a new array; do not subtract in place.
    """
    raise NotImplementedError("unmerge: fill me in")
