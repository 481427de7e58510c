"""Exercise: backward pass of softmax (a vector-Jacobian product)."""


def softmax_backward(y, g):
    """Gradient dL/dx given y = softmax(x) along the last axis and g = dL/dy.

    Arguments (float64):
      y (..., V)  the softmax output (rows sum to 1)
      g (..., V)  upstream gradient, same shape
    Result: dx (..., V) float64, same shape.

    The Jacobian of one row is dy_i/dx_j = y_i (delta_ij - y_j), so

        dx = y * (g - sum(g * y, axis=-1, keepdims=True))

    Hints:
      1. The Jacobian is not diagonal: y * (1 - y) * g is wrong.
      2. Never build the (V, V) Jacobian: the row-wise dot product <g, y> is all you need.
      3. Sum along the last axis only, and keep the dimension so it broadcasts.
    """
    raise NotImplementedError("softmax_backward: fill me in")
