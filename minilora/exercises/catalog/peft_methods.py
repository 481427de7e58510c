"""Strategies, edge cases and hints of the exercises on LoRA's competitors (lesson 14): the adapter
backward and the prefix-tuning attention mask.
"""
from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

from ..grader import Failure
from ._common import _arr, _first_hint, _rng, make

# ---------------------------------------------------------------- adapter_backward


@st.composite
def _adapter_inputs(draw):
    N, C, m = draw(st.integers(1, 5)), draw(st.integers(1, 6)), draw(st.integers(1, 4))
    return dict(h=_arr(draw, (N, C)), W_down=_arr(draw, (m, C)), b_down=_arr(draw, (m,)),
                W_up=_arr(draw, (C, m)), b_up=_arr(draw, (C,)), g=_arr(draw, (N, C)))


def _adapter_case(seed, N, C, m, zero_up=False):
    def make_inputs():
        rng = _rng(seed)
        return dict(h=rng.standard_normal((N, C)), W_down=rng.standard_normal((m, C)), b_down=rng.standard_normal(m),
                    W_up=np.zeros((C, m)) if zero_up else rng.standard_normal((C, m)), b_up=rng.standard_normal(C),
                    g=rng.standard_normal((N, C)))
    return make_inputs


def _adapter_variant(h, W_down, b_down, W_up, b_up, g, skip=True, relu_grad=True, sum_bias=True):
    z = h @ W_down.T + b_down
    a = np.maximum(z, 0.0)
    dz = (g @ W_up) * ((z > 0) if relu_grad else 1.0)
    dh = (g if skip else 0.0) + dz @ W_down
    return dh, dz.T @ h, dz.sum(0) if sum_bias else dz, g.T @ a, g.sum(0) if sum_bias else g


def _adapter_hint(f: Failure):
    if f.kind not in ("value", "shape"):
        return None
    i = f.inputs
    args = (i["h"], i["W_down"], i["b_down"], i["W_up"], i["b_up"], i["g"])
    pos = f.position
    return _first_hint(f, [
        (lambda: _adapter_variant(*args, skip=False)[pos],
         "dh misses the skip connection: y = h + ..., so dh = g + (the bottleneck path)."),
        (lambda: _adapter_variant(*args, relu_grad=False)[pos],
         "the ReLU's derivative is missing: dz = (g @ W_up) * (z > 0)."),
        (lambda: _adapter_variant(*args, sum_bias=False)[pos],
         "a bias is added to every row, so its gradient is the sum over rows (axis 0)."),
        (lambda: _adapter_variant(*args)[pos].T if pos in (1, 3) else None,
         "transposed weight gradient: it has the weight's shape, dW_up = g.T @ a (C, m), dW_down = dz.T @ h (m, C)."),
    ])


# ---------------------------------------------------------------- prefix_attention_mask


@st.composite
def _mask_inputs(draw):
    return dict(T=draw(st.integers(1, 12)), P=draw(st.integers(0, 8)))


def _mask_hint(f: Failure):
    if f.kind not in ("value", "shape"):
        return None
    T, P = f.inputs["T"], f.inputs["P"]
    ones = np.ones((T, P + T), dtype=bool)
    return _first_hint(f, [
        (np.tril(ones), "np.tril over (T, P + T) without shifting the diagonal hides prefix slots from the "
                        "first tokens: use np.tril(..., k=P), or two blocks [ones (T, P) | tril (T, T)]."),
        (np.concatenate([np.zeros((T, P), bool), np.tril(np.ones((T, T), bool))], axis=1),
         "the prefix must be visible to every token: the (T, P) block is all True."),
        (np.concatenate([np.tril(np.ones((T, T), bool)), np.ones((T, P), bool)], axis=1),
         "the keys are ordered [prefix ; tokens]: the prefix block comes first."),
        (ones, "the tokens part must stay causal: token i sees tokens 0..i only."),
    ])


EXERCISES = (
    make("adapter_backward", "dh, dW_down, db_down, dW_up, db_up of a ReLU bottleneck adapter with its skip path",
         ["dh", "dW_down", "db_down", "dW_up", "db_up"], _adapter_inputs(),
         [("N = 3, C = 4, m = 2", _adapter_case(41, 3, 4, 2)),
          ("W_up = 0 (the identity start): dW_down = 0", _adapter_case(42, 2, 3, 2, zero_up=True)),
          ("one row, m = 1", _adapter_case(43, 1, 5, 1))],
         _adapter_hint),
    make("prefix_attention_mask", "bool (T, P+T): every token sees the prefix, tokens stay causal", ["mask"],
         _mask_inputs(),
         [("T = 3, P = 2", lambda: dict(T=3, P=2)), ("T = 1, P = 4", lambda: dict(T=1, P=4)),
          ("P = 0: the plain causal mask", lambda: dict(T=4, P=0))],
         _mask_hint),
)
