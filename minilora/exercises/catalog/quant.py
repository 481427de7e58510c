"""Strategies, edge cases and hints of the quantization exercises (lesson 12): the NF4 levels,
block-wise absmax quantization, the bits per parameter of double quantization.
"""
from __future__ import annotations

from statistics import NormalDist

import numpy as np
from hypothesis import strategies as st

from ..grader import Failure
from ._common import _first_hint, _rng, make

QLORA_OFFSET = 1.0 - 0.5 * (1 / 32 + 1 / 30)

# ---------------------------------------------------------------- nf4_levels


def _nf4_variants(offset):
    q = NormalDist().inv_cdf
    pos = np.array([q(float(p)) for p in np.linspace(offset, 0.5, 9)[:-1]])
    neg = -np.array([q(float(p)) for p in np.linspace(offset, 0.5, 8)[:-1]])
    sym = np.sort(np.r_[pos, -pos])
    return pos, neg, sym


def _nf4_hint(f: Failure):
    if f.kind != "value":
        return None
    pos, neg, sym = _nf4_variants(f.inputs["offset"])
    raw = np.sort(np.r_[pos, 0.0, neg])
    return _first_hint(f, [
        (sym / sym.max(), "that is the symmetric grid (8 and 8): it has no exact zero. QLoRA takes 8 quantiles on "
                          "the positive side and 7 on the negative side, plus 0.0."),
        (raw, "divide by the largest value, so that the levels end at -1 and 1 (absmax scaling maps the block "
              "into [-1, 1])."),
        (np.sort(np.r_[pos, 0.0, neg])[::-1] / pos.max(), "return the levels in ascending order."),
    ])


# ---------------------------------------------------------------- blockwise_absmax_quantize


@st.composite
def _blockwise_inputs(draw):
    block = draw(st.sampled_from([1, 2, 4, 8, 64]))
    n_blocks = draw(st.integers(1, 6))
    seed = draw(st.integers(0, 2**31 - 1))
    rng = _rng(seed)
    x = rng.standard_normal(block * n_blocks) * rng.choice([1e-3, 1.0, 50.0], block * n_blocks)
    levels = draw(st.sampled_from(["nf4", "int4"]))
    lv = _nf4_ref(QLORA_OFFSET) if levels == "nf4" else np.arange(-7, 8) / 7.0
    return dict(x=x, levels=lv, block_size=block)


def _nf4_ref(offset):
    from ..solutions.nf4_levels import nf4_levels
    return nf4_levels(offset)


def _blockwise_case(kind):
    def make_case():
        lv = _nf4_ref(QLORA_OFFSET)
        if kind == "outlier":      # one block with an outlier, one without: the outlier must stay local
            x = np.r_[_rng(3).standard_normal(7) * 0.1, 40.0, _rng(4).standard_normal(8) * 0.1]
            return dict(x=x, levels=lv, block_size=8)
        if kind == "zeros":
            return dict(x=np.r_[np.zeros(4), -2.0, 1.0, 0.5, -0.25], levels=lv, block_size=4)
        return dict(x=np.r_[-3.0, 1.0, 2.0, 0.5], levels=lv, block_size=4)   # the max is negative
    return make_case


def _blockwise_hint(f: Failure):
    if f.kind != "value":
        return None
    x, lv, b = f.inputs["x"], f.inputs["levels"], f.inputs["block_size"]
    blocks = x.reshape(-1, b)
    if f.output == "absmax":
        return _first_hint(f, [
            (np.full(blocks.shape[0], np.abs(x).max()), "one absmax for the whole array: take the max per block "
                                                        "(axis=1 of x.reshape(-1, block_size))."),
            (blocks.max(axis=1), "absmax is the max of |x|, not of x: a block whose largest magnitude is negative "
                                 "would overflow the [-1, 1] grid."),
        ])
    glob = np.abs(x).max()
    wrong = np.argmin(np.abs((x / glob)[:, None] - lv[None, :]), axis=1)
    return _first_hint(f, [
        (wrong, "the codes use one scale for the whole array: divide each block by its own absmax."),
    ])


# ---------------------------------------------------------------- double_quant_bits_per_param


@st.composite
def _bits_inputs(draw):
    return dict(block_size=draw(st.sampled_from([16, 32, 64, 128, 256])),
                dq_block_size=draw(st.sampled_from([64, 128, 256, 512])), double_quant=draw(st.booleans()))


def _bits_hint(f: Failure):
    if f.kind != "value":
        return None
    b, b2, dq = f.inputs["block_size"], f.inputs["dq_block_size"], f.inputs["double_quant"]
    return _first_hint(f, [
        (4 + 8 / b if dq else None, "the 8-bit constants need their own float32 scale: one per dq_block_size of "
                                    "them, i.e. 32 / (block_size * dq_block_size) bits per weight."),
        (4 + 8 / b + 32 / b2 if dq else None, "the second-level constant serves dq_block_size * block_size "
                                              "weights, not dq_block_size."),
        (8 / b + 32 / (b * b2) if dq else 32 / b, "add the 4 bits of each weight's own code."),
        (4 + 16 / b if not dq else None, "QLoRA's first-level constants are float32 (32 bits), not 16."),
        (4 + 32 / b if dq else None, "double_quant is True here: the constants are stored in 8 bits."),
        (4 + 8 / b + 32 / (b * b2) if not dq else None, "double_quant is False here: float32 constants, "
                                                       "32 / block_size bits per weight."),
    ])


EXERCISES = (
    make("nf4_levels", "QLoRA's 16 NF4 levels from N(0, 1) quantiles, with an exact zero", ["levels"],
         st.builds(lambda o: dict(offset=o), st.floats(0.9, 0.995)),
         [("QLoRA's offset 0.96770833 (bitsandbytes' table)", lambda: dict(offset=QLORA_OFFSET)),
          ("offset 0.99", lambda: dict(offset=0.99))],
         _nf4_hint),
    make("blockwise_absmax_quantize", "codes and per-block absmax of block-wise 4-bit quantization",
         ["codes", "absmax"], _blockwise_inputs(),
         [("an outlier in the first block only", _blockwise_case("outlier")),
          ("a block of zeros", _blockwise_case("zeros")),
          ("the largest magnitude is negative", _blockwise_case("negative"))],
         _blockwise_hint),
    make("double_quant_bits_per_param", "bits per weight: 4 + 32/64 = 4.5, or 4 + 8/64 + 32/(64*256) = 4.127",
         ["bits"], _bits_inputs(),
         [("QLoRA, double quantization", lambda: dict(block_size=64, dq_block_size=256, double_quant=True)),
          ("QLoRA, no double quantization", lambda: dict(block_size=64, dq_block_size=256, double_quant=False))],
         _bits_hint),
)
