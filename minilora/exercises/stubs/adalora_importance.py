"""Exercise: AdaLoRA's importance score of every entry of a parameter (Zhang et al. 2023, §3.2)."""


def adalora_importance(weight, grad, ipt_bar, unc_bar, beta1, beta2):
    """One step of AdaLoRA's smoothed sensitivity, uncertainty and importance, entry by entry.

    Arguments:
        weight, grad: float64 arrays of one shape (a parameter P, λ or Q and its gradient dL/dw).
        ipt_bar, unc_bar: float64 arrays of that shape, the previous Ī(t-1) and Ū(t-1) (zeros at
            the first step).
        beta1, beta2: floats in (0, 1), the moving-average factors.
    Result: a tuple (ipt_bar, unc_bar, score) of three new float64 arrays of that shape.

    Formula (AdaLoRA, arXiv:2303.10512, §3.2):
        I    = |weight * grad|                               sensitivity
        Ī(t) = beta1 * Ī(t-1) + (1 - beta1) * I              smoothed sensitivity
        Ū(t) = beta2 * Ū(t-1) + (1 - beta2) * |I - Ī(t)|      uncertainty, with the NEW Ī(t)
        s    = Ī(t) * Ū(t)                                   importance

    Hints:
      1. The sensitivity is the size of the first-order change of the loss if w were set to 0:
         |w * dL/dw|, an absolute value of a product (not |dL/dw| alone).
      2. beta multiplies the OLD average: beta1 = 0.85 keeps 85% of the history.
      3. Check: weight [2, -1], grad [0.5, 3], zeros before, beta1 0.8, beta2 0.6 give
         ipt_bar [0.2, 0.6], unc_bar [0.32, 0.96], score [0.064, 0.576].
    """
    raise NotImplementedError("adalora_importance: fill me in")
