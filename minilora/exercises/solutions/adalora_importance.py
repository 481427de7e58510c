"""Reference solution: AdaLoRA's sensitivity EMA, uncertainty EMA and importance (AdaLoRA §3.2)."""
import numpy as np


def adalora_importance(weight, grad, ipt_bar, unc_bar, beta1, beta2):
    """Reference solution of the `adalora_importance` exercise (see stubs/adalora_importance.py)."""
    ipt = np.abs(weight * grad)                                   # I: sensitivity
    ipt_bar = beta1 * ipt_bar + (1 - beta1) * ipt                 # Ī(t)
    unc_bar = beta2 * unc_bar + (1 - beta2) * np.abs(ipt - ipt_bar)   # Ū(t)
    return ipt_bar, unc_bar, ipt_bar * unc_bar                    # s = Ī · Ū
