"""Hypothesis strategies for the op tests, built on `hypothesis.extra.numpy`.

Values are float64 in [-3, 3] so central differences stay well conditioned; strategies for ops with
kinks or ties keep away from them (|x| > 0.1 for relu, well-separated unique values for max,
[0.5, 3] for log/sqrt/fractional powers, |b| >= 0.5 for denominators). Shapes include 0-d arrays and
size-1 axes. Everything is drawn in float64; tests cast to float32 themselves when they need it.
"""
from __future__ import annotations

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

F64 = np.float64
MAX_SIDE = 4

# ---------------------------------------------------------------- elements
finite = st.floats(-3, 3, allow_nan=False, allow_infinity=False, width=64)
positive = st.floats(0.5, 3, allow_nan=False, allow_infinity=False, width=64)
away_from_zero = st.one_of(st.floats(-3, -0.1, width=64), st.floats(0.1, 3, width=64))
denominator = st.one_of(st.floats(-3, -0.5, width=64), st.floats(0.5, 3, width=64))


# ---------------------------------------------------------------- shapes
def shapes(min_dims=0, max_dims=3, min_side=1, max_side=MAX_SIDE):
    """Array shapes with 0-d arrays (min_dims=0) and size-1 axes included."""
    return hnp.array_shapes(min_dims=min_dims, max_dims=max_dims, min_side=min_side, max_side=max_side)


def broadcast_pairs(max_dims=3):
    """Two mutually broadcastable shapes (either may be 0-d or carry size-1 axes)."""
    return hnp.mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=max_dims,
                                             min_side=1, max_side=MAX_SIDE).map(lambda s: s.input_shapes)


def matmul_shapes(max_dims=2):
    """(a_shape, b_shape) following NumPy's matmul signature, 1-D operands and broadcast batch dims."""
    return hnp.mutually_broadcastable_shapes(signature="(m?,n),(n,p?)->(m?,p?)", max_dims=max_dims,
                                             max_side=MAX_SIDE).map(lambda s: s.input_shapes)


def batched_matmul_shapes():
    """Matmul shapes with at least one batch dim on some operand (batch dims broadcast)."""
    return (hnp.mutually_broadcastable_shapes(signature="(m,n),(n,p)->(m,p)", min_dims=1, max_dims=2,
                                              max_side=MAX_SIDE)
            .map(lambda s: s.input_shapes))


# ---------------------------------------------------------------- arrays
def arrays(shape=None, elements=finite, unique=False):
    """float64 arrays of the given shape (or a drawn one) with the given elements."""
    return hnp.arrays(F64, shape if shape is not None else shapes(), elements=elements, unique=unique)


@st.composite
def separated_arrays(draw, shape=None, gap=0.02):
    """float64 arrays with unique values at least `gap` apart (no ties, no near-ties: for max)."""
    shape = draw(shapes()) if shape is None else shape
    n = int(np.prod(shape, dtype=int))
    lim = int(3 / gap)
    ks = draw(st.lists(st.integers(-lim, lim), min_size=n, max_size=n, unique=True))
    return (np.array(ks, dtype=F64) * gap).reshape(shape)


@st.composite
def reduction_args(draw, shape):
    """(axis, keepdims) for a reduction over an array of `shape`: None, an int (maybe negative) or a tuple."""
    nd = len(shape)
    keepdims = draw(st.booleans())
    if nd == 0:
        return draw(st.sampled_from([None, ()])), keepdims
    kind = draw(st.sampled_from(["none", "int", "tuple"]))
    if kind == "none":
        return None, keepdims
    if kind == "int":
        return draw(st.integers(-nd, nd - 1)), keepdims
    axes = draw(st.lists(st.integers(0, nd - 1), min_size=1, max_size=nd, unique=True))
    return tuple(axes), keepdims


# ---------------------------------------------------------------- indices
def basic_index(shape):
    """Ints, slices (any step), None and Ellipsis for an array of `shape`."""
    return hnp.basic_indices(shape, min_dims=0, allow_newaxis=True, allow_ellipsis=True)


@st.composite
def repeated_int_index(draw, shape):
    """An integer-array index along axis 0 that is guaranteed to repeat an entry (plus a slice)."""
    n = shape[0]
    idx = draw(st.lists(st.integers(-n, n - 1), min_size=n + 1, max_size=n + 3))
    return (np.array(idx),) + (slice(None),) * (len(shape) - 1)


def int_array_index(shape):
    """A tuple of broadcast integer arrays (entries may repeat), as from `integer_array_indices`."""
    return hnp.integer_array_indices(shape, result_shape=shapes(min_dims=1, max_dims=2))


@st.composite
def getitem_cases(draw):
    """(x, idx) with idx basic, integer-array (with repeats), or boolean."""
    kind = draw(st.sampled_from(["basic", "repeat", "intarr", "bool"]))
    shape = draw(shapes(min_dims=0 if kind == "basic" else 1))
    x = draw(arrays(shape))
    if kind == "basic":
        idx = draw(basic_index(shape))
    elif kind == "repeat":
        idx = draw(repeated_int_index(shape))
    elif kind == "intarr":
        idx = draw(int_array_index(shape))
    else:
        idx = draw(hnp.arrays(np.bool_, shape))
    return x, idx


# ---------------------------------------------------------------- model-shaped inputs
@st.composite
def attention_dims(draw, max_b=2, max_t=4, max_nh=2, max_hs=3):
    """(B, T, n_head, head_size)."""
    return (draw(st.integers(1, max_b)), draw(st.integers(1, max_t)),
            draw(st.integers(1, max_nh)), draw(st.integers(1, max_hs)))


@st.composite
def cross_entropy_cases(draw, ignore=True):
    """(logits (..., V), integer targets (...), ignore_index) with at least one target not ignored."""
    lead = draw(shapes(min_dims=0, max_dims=2))
    V = draw(st.integers(1, 5))
    logits = draw(arrays(lead + (V,)))
    ignore_index = draw(st.sampled_from([-100, -1, V])) if ignore else -100
    choices = st.integers(0, V - 1)
    if ignore:
        choices = st.one_of(choices, st.just(ignore_index))
    t = np.array(draw(st.lists(choices, min_size=int(np.prod(lead, dtype=int)),
                               max_size=int(np.prod(lead, dtype=int)))), dtype=np.int64).reshape(lead)
    if np.all(t == ignore_index):
        t.reshape(-1)[0] = draw(st.integers(0, V - 1))
    return logits, t, ignore_index
