"""Exercise: the hand-derived LoRA backward pass, with dropout on the LoRA branch."""


def lora_backward(x, W0, A, B, scaling, g, mask, keep_prob):
    """Gradients of y = x @ W0.T + scaling * (xt @ A.T) @ B.T, where xt = x * mask / keep_prob.

    Arguments (float64 arrays unless said otherwise):
      x         (N, d_in)      input rows
      W0        (d_out, d_in)  frozen weight (no gradient wanted for it)
      A         (r, d_in)      down-projection
      B         (d_out, r)     up-projection
      scaling   float          lora_alpha / r
      g         (N, d_out)     upstream gradient dL/dy
      mask      (N, d_in)      dropout mask of 0.0 and 1.0 (all ones when dropout is off)
      keep_prob float in (0, 1], the probability of keeping an input (1 - dropout p)
    Result: (dx, dA, dB), float64 arrays of shapes (N, d_in), (r, d_in), (d_out, r).

    Formulas (with xt = x * mask / keep_prob and u = xt @ A.T, shape (N, r)):
        dB = scaling * g.T @ u
        dA = scaling * (g @ B).T @ xt
        dx = g @ W0 + scaling * ((g @ B) @ A) * mask / keep_prob

    Hints:
      1. Each gradient has the shape of the thing it is a gradient of: dA is (r, d_in) like A.
      2. The frozen path sees the clean x, the LoRA branch sees xt: so only the LoRA term of dx
         is masked and divided by keep_prob.
      3. Reuse g @ B (N, r) for both dA and dx.
    """
    raise NotImplementedError("lora_backward: fill me in")
