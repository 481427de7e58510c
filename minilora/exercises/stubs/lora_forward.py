"""Exercise: the LoRA forward pass (Hu et al. 2021, Eq. 3, row-vector form)."""


def lora_forward(x, W0, A, B, scaling):
    """Output of a frozen linear layer with a LoRA adapter (no bias, no dropout).

    Arguments (float64 arrays):
      x       (N, d_in)     input rows
      W0      (d_out, d_in) frozen weight, stored like torch.nn.Linear (out, in)
      A       (r, d_in)     down-projection
      B       (d_out, r)    up-projection
      scaling float         lora_alpha / r (not 1 in general!)
    Result: y (N, d_out) float64.

    Formula:
        y = x @ W0.T + scaling * (x @ A.T) @ B.T

    Hints:
      1. Write the shape of every intermediate: x @ A.T is (N, r).
      2. Compute (x @ A.T) @ B.T, never x @ (B @ A).T: the low-rank route is cheaper.
      3. The scaling multiplies only the LoRA branch.
    """
    raise NotImplementedError("lora_forward: fill me in")
