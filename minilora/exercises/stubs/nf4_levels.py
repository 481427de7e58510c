"""Exercise: the 16 NF4 levels of QLoRA (Dettmers et al. 2023, §3, eq. 4, asymmetric construction)."""


def nf4_levels(offset):
    """The 16 levels of 4-bit NormalFloat, ascending, from the quantiles of N(0, 1).

    Arguments: offset, a float in (0.5, 1): the probability of the outermost quantile
        (QLoRA uses offset = 1 - (1/32 + 1/30) / 2 = 0.96770833...).
    Result: (16,) float64, ascending: 7 negative values, an exact 0.0, 8 positive values; the
        first is -1.0 and the last 1.0.

    Formula (Q = the N(0, 1) quantile function, `statistics.NormalDist().inv_cdf`):
        positive = [Q(p) for p in linspace(offset, 0.5, 9)[:-1]]        8 values
        negative = [-Q(p) for p in linspace(offset, 0.5, 8)[:-1]]       7 values
        levels = sort(positive + [0] + negative) / max(positive)

    Hints:
      1. A symmetric 16-level grid has no exact zero; QLoRA takes 8 quantiles on one side and 7 on
         the other so that 0 is a level (zero-padded blocks and exact zeros stay exact).
      2. linspace(offset, 0.5, 9)[:-1] drops the last point, 0.5, whose quantile is 0.
      3. Check: with offset 0.9677083 the second level is about -0.6962 (bitsandbytes' table).
    """
    raise NotImplementedError("nf4_levels: fill me in")
