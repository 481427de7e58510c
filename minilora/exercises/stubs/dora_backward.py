"""Exercise: DoRA's backward pass with the weight norm held constant (DoRA §4.3, as PEFT trains)."""


def dora_backward(x, W0, A, B, m, scaling, g):
    """Gradients of DoRA's y = c * (x @ V.T) with V = W0 + scaling * B @ A and c = m / norm(V, rows),
    treating the row norms n = ||V_j|| as CONSTANTS (DoRA §4.3; PEFT's `weight_norm.detach()`).

    Arguments (float64 arrays unless said otherwise):
      x        (N, d_in)      input rows (no dropout, no bias)
      W0       (d_out, d_in)  frozen weight
      A        (r, d_in)      down-projection
      B        (d_out, r)     up-projection
      m        (d_out,)       the magnitude vector (PEFT's lora_magnitude_vector)
      scaling  float          lora_alpha / r
      g        (N, d_out)     upstream gradient dL/dy
    Result: (dx, dA, dB, dm), float64 arrays of shapes (N, d_in), (r, d_in), (d_out, r), (d_out,).

    Formulas (n = row norms of V, c = m / n, P = x @ V.T (N, d_out), gP = g * c broadcast over rows):
        dm = sum over rows of (g * P), divided by n
        dB = scaling * gP.T @ (x @ A.T)
        dA = scaling * (gP @ B).T @ x
        dx = gP @ V

    Hints:
      1. The norm is one number per OUTPUT row of the (d_out, d_in) weight: sum over axis 1.
      2. c multiplies column j of y: the gradient of anything inside is g * c, not g.
      3. Treating n as a constant means no term for n in dA and dB; dm still divides by n.
    """
    raise NotImplementedError("dora_backward: fill me in")
