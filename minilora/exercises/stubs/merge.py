"""Exercise: merge a LoRA adapter into its base weight (LoRA Sec. 4.1)."""


def merge(W0, A, B, scaling):
    """The merged weight, so that x @ W.T equals the LoRA forward pass.

    Arguments (float64 arrays):
      W0      (d_out, d_in) frozen base weight (do not modify it in place)
      A       (r, d_in)
      B       (d_out, r)
      scaling float         lora_alpha / r
    Result: W (d_out, d_in) float64, a new array.

    Formula:
        W = W0 + scaling * B @ A

    Hints:
      1. B @ A has shape (d_out, d_in), the same as W0; A @ B would be (r, r) or fail.
      2. `W0 += ...` would change the caller's array: return a new one.
      3. Do not forget the scaling.
    """
    raise NotImplementedError("merge: fill me in")
