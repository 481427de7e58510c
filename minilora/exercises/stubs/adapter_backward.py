"""Exercise: backward pass of a bottleneck adapter (Houlsby et al. 2019) with a ReLU."""


def adapter_backward(h, W_down, b_down, W_up, b_up, g):
    """Gradients of y = h + relu(h @ W_down.T + b_down) @ W_up.T + b_up, given g = dL/dy.

    Arguments (float64):
      h       (N, C)  the adapter's input (the output of the frozen projection it follows)
      W_down  (m, C)  down-projection,  b_down (m,)
      W_up    (C, m)  up-projection,    b_up   (C,)
      g       (N, C)  upstream gradient dL/dy
    Result: (dh, dW_down, db_down, dW_up, db_up), float64 arrays of the shapes of
      h, W_down, b_down, W_up, b_up.

    Forward: z = h @ W_down.T + b_down (N, m); a = relu(z); y = h + a @ W_up.T + b_up.
    The ReLU's derivative is 1 where z > 0 and 0 elsewhere (0 at z == 0 too).

    Hints:
      1. Recompute z and a; the backward needs both.
      2. y has TWO paths from h: the skip connection (y = h + ...) and the bottleneck. dh is the sum.
      3. Biases are added to every row: their gradient sums over the rows.
    """
    raise NotImplementedError("adapter_backward: fill me in")
