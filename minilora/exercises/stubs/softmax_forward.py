"""Exercise: a numerically stable softmax."""


def softmax_forward(x):
    """Softmax along the last axis, stable for logits as large as 1e4.

    Arguments: x (..., V) float64, at least 1-D, V >= 1.
    Result: y (..., V) float64, same shape; each row along the last axis is >= 0 and sums to 1.

    Formula:
        y_i = exp(x_i - m) / sum_j exp(x_j - m),   m = max_j x_j   (per row)

    Hints:
      1. exp(1e4) overflows to inf, and inf/inf is nan: subtract the row max first.
         Softmax does not change when you add a constant to a row.
      2. Use axis=-1 and keepdims=True so the row max and row sum broadcast back.
      3. Rows can live in any number of leading dimensions: do not assume x is 2-D.
    """
    raise NotImplementedError("softmax_forward: fill me in")
