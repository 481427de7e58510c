"""Strategies, edge cases and hints of the interop exercise (lesson 15): the q/v LoRA of GPT-2's fused
c_attn exported as one PEFT LoRA of rank 2r (`minilora.lora.adapter_io.expand_grouped_B`).
"""
from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

from ..grader import Failure
from ._common import _arr, _first_hint, _rng, make


@st.composite
def _qv_inputs(draw):
    r, C = draw(st.integers(1, 4)), draw(st.integers(1, 6))
    return dict(A=_arr(draw, (2 * r, C)), B=_arr(draw, (2 * C, r)),
                lora_alpha=draw(st.floats(0.5, 64.0, allow_nan=False, allow_infinity=False)))


def _qv_case(seed, r, C, lora_alpha):
    def make_inputs():
        rng = _rng(seed)
        return dict(A=rng.standard_normal((2 * r, C)), B=rng.standard_normal((2 * C, r)), lora_alpha=lora_alpha)
    return make_inputs


def _qv_hint(f: Failure):
    A, B, alpha = f.inputs["A"], f.inputs["B"], f.inputs["lora_alpha"]
    r, C = A.shape[0] // 2, A.shape[1]
    if f.kind == "shape" and f.output == "B_peft":
        return (f"B_peft is (3C, 2r) = ({3 * C}, {2 * r}): it covers all of c_attn's rows, q, k and v, with "
                "zero rows for k (PEFT has no slices), and one column block per A block.")
    if f.kind != "value":
        return None
    if f.output == "alpha_peft":
        return _first_hint(f, [
            (float(alpha), "the rank doubled (2r), so alpha must double too: the scaling alpha / r stays the same."),
            (alpha * np.sqrt(2), "sqrt(2)·alpha keeps alpha / sqrt(r) (rsLoRA); here the scaling is alpha / r."),
        ])
    if f.output == "B_peft":
        z = np.zeros((3 * C, 2 * r))
        swapped = z.copy()
        swapped[:C, r:], swapped[2 * C:, :r] = B[:C], B[C:]
        middle = z.copy()
        middle[:C, :r], middle[C:2 * C, r:] = B[:C], B[C:]
        return _first_hint(f, [
            (swapped, "B_q must multiply A_q (A's rows [0, r)), so it goes in columns [0, r); B_v in [r, 2r)."),
            (middle, "c_attn's output is [q | k | v]: v is rows [2C, 3C), and the k rows [C, 2C) stay zero."),
        ])
    return None


EXERCISES = (
    make("fused_qv_to_peft", "q/v LoRA of the fused c_attn -> one PEFT LoRA of rank 2r (B block-diagonal)",
         ["A_peft", "B_peft", "alpha_peft"], _qv_inputs(),
         [("r = 2, C = 3, lora_alpha 16 (so alpha != r)", _qv_case(30, 2, 3, 16.0)),
          ("r = 1, C = 4", _qv_case(31, 1, 4, 2.0)),
          ("r = 3, C = 2: rank larger than C", _qv_case(32, 3, 2, 8.0))],
         _qv_hint),
)
