"""Strategy, edge cases and hints of the AdaLoRA exercise (lesson 13): the importance score."""
from __future__ import annotations

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from ..grader import Failure
from ._common import _arr, _first_hint, make

_beta = st.floats(0.05, 0.95, allow_nan=False, allow_infinity=False)


@st.composite
def _importance_inputs(draw):
    shape = draw(hnp.array_shapes(min_dims=1, max_dims=2, min_side=1, max_side=5))
    return dict(weight=_arr(draw, shape), grad=_arr(draw, shape), ipt_bar=_arr(draw, shape, 0.0, 3.0),
                unc_bar=_arr(draw, shape, 0.0, 3.0), beta1=draw(_beta), beta2=draw(_beta))


def _case(weight, grad, ipt_bar=None, unc_bar=None, beta1=0.85, beta2=0.85):
    def make_inputs():
        w, g = np.array(weight, dtype=np.float64), np.array(grad, dtype=np.float64)
        z = np.zeros_like(w)
        return dict(weight=w, grad=g, ipt_bar=z.copy() if ipt_bar is None else np.array(ipt_bar, dtype=np.float64),
                    unc_bar=z.copy() if unc_bar is None else np.array(unc_bar, dtype=np.float64),
                    beta1=beta1, beta2=beta2)
    return make_inputs


def _hint(f: Failure):
    if f.kind == "count":
        return "return three arrays: (ipt_bar, unc_bar, score)."
    if f.kind != "value":
        return None
    i = f.inputs
    w, g, ib0, ub0, b1, b2 = i["weight"], i["grad"], i["ipt_bar"], i["unc_bar"], i["beta1"], i["beta2"]
    I = np.abs(w * g)  # noqa: E741  (the paper's letter)
    ib = b1 * ib0 + (1 - b1) * I
    ub = b2 * ub0 + (1 - b2) * np.abs(I - ib)
    out = f.output
    if out == "ipt_bar":
        return _first_hint(f, [
            (b1 * ib0 + (1 - b1) * w * g, "the sensitivity is |w * grad|: take the absolute value of the product."),
            (b1 * ib0 + (1 - b1) * np.abs(g), "the sensitivity is |w * grad| (the first-order change of the loss "
                                              "if w were zeroed), not |grad| alone."),
            ((1 - b1) * ib0 + b1 * I, "beta1 multiplies the OLD average Ī(t-1); (1 - beta1) the new sensitivity."),
            (b2 * ib0 + (1 - b2) * I, "the sensitivity average uses beta1; beta2 is for the uncertainty."),
        ])
    if out == "unc_bar":
        return _first_hint(f, [
            (b2 * ub0 + (1 - b2) * np.abs(I - ib0), "the uncertainty compares I with the NEW average Ī(t) (after "
                                                    "this step's update), not with Ī(t-1)."),
            ((1 - b2) * ub0 + b2 * np.abs(I - ib), "beta2 multiplies the OLD average Ū(t-1)."),
            (b1 * ub0 + (1 - b1) * np.abs(I - ib), "the uncertainty average uses beta2, not beta1."),
            (b2 * ub0 + (1 - b2) * (I - ib), "the uncertainty is the absolute deviation |I - Ī(t)|."),
        ])
    return _first_hint(f, [
        (I * ub, "the score multiplies the SMOOTHED sensitivity Ī(t), not this step's I."),
        (ib + ub, "the score is the product Ī(t) * Ū(t), not the sum."),
        (ib, "the score is Ī(t) * Ū(t): the uncertainty factor is missing."),
    ])


EXERCISES = (
    make("adalora_importance", "AdaLoRA's importance: sensitivity EMA x uncertainty EMA (AdaLoRA §3.2)",
         ["ipt_bar", "unc_bar", "score"], _importance_inputs(),
         [("first step from zeros: weight [2, -1], grad [0.5, 3], beta1 0.8, beta2 0.6",
           _case([2.0, -1.0], [0.5, 3.0], beta1=0.8, beta2=0.6)),
          ("negative products: |w * g| of (-2)(3) and (2)(-0.5)", _case([-2.0, 2.0], [3.0, -0.5], [0.5, 0.5],
                                                                          [0.1, 0.2], 0.7, 0.9)),
          ("a zero gradient: the averages decay, beta1 != beta2",
           _case([[1.0, -3.0], [0.5, 2.0]], [[0.0, 0.0], [0.0, 0.0]], [[1.0, 2.0], [0.5, 0.1]],
                 [[0.3, 0.2], [0.1, 0.4]], 0.6, 0.9))],
         _hint),
)
