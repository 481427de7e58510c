"""Exercise: LayerNorm backward."""


def layer_norm_backward(x, gamma, g, eps):
    """Gradients of y = gamma * xhat + beta, xhat = (x - mean) / sqrt(var + eps), over the last axis.

    Arguments (float64):
      x     (N, C)  input rows
      gamma (C,)    scale
      g     (N, C)  upstream gradient dL/dy
      eps   float   added to the (biased, divide-by-C) variance
    Result: (dx, dgamma, dbeta), float64 arrays of shapes (N, C), (C,), (C,).

    Formulas (per row; mean() is over the last axis, rstd = 1 / sqrt(var + eps)):
        dxhat  = g * gamma
        dx     = rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat))
        dgamma = sum over rows of g * xhat
        dbeta  = sum over rows of g

    Hints:
      1. The mean and the variance both depend on every x in the row: that gives the two mean terms.
         Without them you get rstd * dxhat, which is wrong.
      2. Use the biased variance (np.var's default, ddof=0).
      3. dgamma and dbeta are summed over rows (axis 0): they have gamma's shape (C,).
    """
    raise NotImplementedError("layer_norm_backward: fill me in")
