"""Every op against central differences, against plain NumPy, and in float32; every fused op against
its composed twin; stability at extreme logits; error messages.

The catalog `CASES` maps an op name to a function that draws inputs (hypothesis) and returns the
float64 arrays that receive gradients, the op applied to Tensors, and a plain-NumPy reference. Three
generic tests run over the whole catalog, so adding an op means adding one catalog entry.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import strategies as S  # tests/ is on sys.path (pytest rootdir-less "prepend" import mode)
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from minilora import Tensor, check_grad, ops

# ================================================================ the catalog
CASES = {}


def case(name):
    def deco(f):
        CASES[name] = f
        return f
    return deco


def _binary(name, op, ref, rhs=S.finite):
    @case(name)
    def make(draw):
        sa, sb = draw(S.broadcast_pairs())
        return [draw(S.arrays(sa)), draw(S.arrays(sb, rhs))], op, ref


_binary("add", ops.add, np.add)
_binary("sub", ops.sub, np.subtract)
_binary("mul", ops.mul, np.multiply)
_binary("div", ops.div, np.divide, rhs=S.denominator)


def _unary(name, op, ref, elements=S.finite):
    @case(name)
    def make(draw):
        return [draw(S.arrays(elements=elements))], op, ref


def _gelu_ref(x):
    return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))


_unary("neg", ops.neg, np.negative)
_unary("exp", ops.exp, np.exp)
_unary("log", ops.log, np.log, S.positive)
_unary("sqrt", ops.sqrt, np.sqrt, S.positive)
_unary("tanh", ops.tanh, np.tanh)
_unary("sigmoid", ops.sigmoid, lambda x: 1 / (1 + np.exp(-x)))
_unary("relu", ops.relu, lambda x: np.maximum(x, 0), S.away_from_zero)
_unary("gelu", ops.gelu, _gelu_ref)
_unary("pow2", lambda x: x ** 2, lambda x: x ** 2)
_unary("pow3", lambda x: ops.pow(x, 3), lambda x: x ** 3)
_unary("pow0.5", lambda x: x ** 0.5, np.sqrt, S.positive)
_unary("pow-1", lambda x: x ** -1, lambda x: 1 / x, S.denominator)
_unary("rsub_scalar", lambda x: 2.5 - x / 2.0, lambda x: 2.5 - x / 2.0)


def _reduction(name, op, ref, make_x=None):
    @case(name)
    def make(draw):
        x = draw(make_x() if make_x else S.arrays())
        axis, keepdims = draw(S.reduction_args(x.shape))
        return ([x], lambda t: op(t, axis=axis, keepdims=keepdims),
                lambda a: np.asarray(ref(a, axis=axis, keepdims=keepdims)))


_reduction("sum", ops.sum, np.sum)
_reduction("mean", ops.mean, np.mean)
_reduction("var", ops.var, np.var)
_reduction("max", ops.max, np.max, S.separated_arrays)


@case("reshape")
def _(draw):
    x = draw(S.arrays())
    s = x.shape
    new = draw(st.sampled_from([(-1,), s[::-1], (1,) + s, s + (1,), ()])) if x.size == 1 else \
        draw(st.sampled_from([(-1,), s[::-1], (1,) + s, s + (1,)]))
    return [x], lambda t: ops.reshape(t, new), lambda a: a.reshape(new)


@case("transpose")
def _(draw):
    x = draw(S.arrays())
    axes = draw(st.one_of(st.none(), st.permutations(range(x.ndim)).map(tuple)))
    return [x], lambda t: ops.transpose(t, axes), lambda a: np.transpose(a, axes)


@case("getitem")
def _(draw):
    x, idx = draw(S.getitem_cases())
    return [x], lambda t: t[idx], lambda a: np.asarray(a[idx])


@case("concatenate")
def _(draw):
    shape = draw(S.shapes(min_dims=1))
    axis = draw(st.integers(-len(shape), len(shape) - 1))
    sizes = draw(st.lists(st.integers(1, 3), min_size=1, max_size=3))
    xs = []
    for n in sizes:
        s = list(shape)
        s[axis] = n
        xs.append(draw(S.arrays(tuple(s))))
    return xs, lambda *ts: ops.concatenate(ts, axis=axis), lambda *a: np.concatenate(a, axis=axis)


@case("split")
def _(draw):
    shape = draw(S.shapes(min_dims=1))
    axis = draw(st.integers(-len(shape), len(shape) - 1))
    n = shape[axis]
    how = draw(st.one_of(st.sampled_from([d for d in range(1, n + 1) if n % d == 0]),
                         st.lists(st.integers(0, n), max_size=3).map(sorted)))
    x = draw(S.arrays(shape))
    # weight each piece differently so a gradient sent to the wrong piece is caught
    def fn(t):
        return ops.concatenate([p * float(i + 1) for i, p in enumerate(ops.split(t, how, axis))], axis)
    def ref(a):
        return np.concatenate([p * (i + 1) for i, p in enumerate(np.split(a, how, axis))], axis)
    return [x], fn, ref


@case("stack")
def _(draw):
    shape = draw(S.shapes())
    k = draw(st.integers(1, 3))
    axis = draw(st.integers(-len(shape) - 1, len(shape)))
    xs = [draw(S.arrays(shape)) for _ in range(k)]
    return xs, lambda *ts: ops.stack(ts, axis=axis), lambda *a: np.stack(a, axis=axis)


@case("matmul")
def _(draw):
    sa, sb = draw(S.matmul_shapes())
    return [draw(S.arrays(sa)), draw(S.arrays(sb))], ops.matmul, np.matmul


@case("matmul_batched")
def _(draw):
    sa, sb = draw(S.batched_matmul_shapes())
    return [draw(S.arrays(sa)), draw(S.arrays(sb))], lambda a, b: a @ b, np.matmul


@case("where")
def _(draw):
    sc, sa, sb = draw(hnp.mutually_broadcastable_shapes(num_shapes=3, min_dims=0, max_dims=3,
                                                        max_side=S.MAX_SIDE)).input_shapes
    cond = draw(hnp.arrays(np.bool_, sc))
    return [draw(S.arrays(sa)), draw(S.arrays(sb))], lambda a, b: ops.where(cond, a, b), \
        lambda a, b: np.where(cond, a, b)


@case("masked_fill")
def _(draw):
    sx, sm = draw(S.broadcast_pairs())
    mask = draw(hnp.arrays(np.bool_, sm))
    x = draw(S.arrays(sx))
    if np.broadcast_shapes(sx, sm) != sx:
        mask = np.broadcast_to(mask, np.broadcast_shapes(sx, sm)).copy()
        x = np.broadcast_to(x, mask.shape).copy()
    return [x], lambda t: ops.masked_fill(t, mask, -1.5), lambda a: np.where(mask, a.dtype.type(-1.5), a)


def _softmax_ref(x, axis):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def _log_softmax_ref(x, axis):
    z = x - x.max(axis=axis, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=axis, keepdims=True))


for _name, _op, _ref in [("softmax", ops.softmax, _softmax_ref), ("log_softmax", ops.log_softmax, _log_softmax_ref),
                         ("softmax_composed", ops.softmax_composed, _softmax_ref),
                         ("log_softmax_composed", ops.log_softmax_composed, _log_softmax_ref)]:
    def _make(draw, op=_op, ref=_ref):
        x = draw(S.arrays(S.shapes(min_dims=1)))
        axis = draw(st.integers(-x.ndim, x.ndim - 1))
        return [x], lambda t: op(t, axis=axis), lambda a: ref(a, axis)
    CASES[_name] = _make


def _layer_norm_ref(x, w, b=None, eps=1e-5):
    mu = x.mean(-1, keepdims=True)
    y = (x - mu) / np.sqrt(((x - mu) ** 2).mean(-1, keepdims=True) + eps) * w
    return y if b is None else y + b


def _layer_norm_case(op):
    def make(draw):
        shape = draw(S.shapes(min_dims=1))
        C = shape[-1]
        x = draw(S.separated_arrays(shape, gap=0.05))      # rows never (nearly) constant
        w, b = draw(S.arrays((C,))), draw(S.arrays((C,)))
        if draw(st.booleans()):
            return [x, w], lambda *ts: op(*ts), lambda *a: _layer_norm_ref(*a)
        return [x, w, b], lambda *ts: op(*ts), lambda *a: _layer_norm_ref(*a)
    return make


CASES["layer_norm"] = _layer_norm_case(ops.layer_norm)
CASES["layer_norm_composed"] = _layer_norm_case(ops.layer_norm_composed)


@case("embedding")
def _(draw):
    V, C = draw(st.integers(1, 4)), draw(st.integers(1, 3))
    idx = draw(hnp.arrays(np.int64, S.shapes(max_dims=2), elements=st.integers(0, V - 1)))
    return [draw(S.arrays((V, C)))], lambda w: ops.embedding(w, idx), lambda w: w[idx]


def _ce_ref(logits, t, ignore_index):
    V = logits.shape[-1]
    lp = _log_softmax_ref(logits.reshape(-1, V), -1)
    t = t.reshape(-1)
    keep = t != ignore_index
    return np.asarray(-lp[np.nonzero(keep)[0], t[keep]].mean(), dtype=logits.dtype)


def _ce_case(op):
    def make(draw):
        logits, t, ii = draw(S.cross_entropy_cases())
        return [logits], lambda z: op(z, t, ignore_index=ii), lambda z: _ce_ref(z, t, ii)
    return make


CASES["cross_entropy"] = _ce_case(ops.cross_entropy)
CASES["cross_entropy_composed"] = _ce_case(ops.cross_entropy_composed)


@case("dropout")
def _(draw):
    x = draw(S.arrays())
    mask = draw(hnp.arrays(np.bool_, x.shape))
    p = draw(st.sampled_from([0.0, 0.1, 0.5]))
    return [x], lambda t: ops.Dropout.apply(t, mask=mask, p=p), lambda a: a * mask / a.dtype.type(1 - p)


def _linear_case(op):
    def make(draw):
        lead = draw(S.shapes(max_dims=2))
        d_in, d_out = draw(st.integers(1, 4)), draw(st.integers(1, 4))
        x, W, b = draw(S.arrays(lead + (d_in,))), draw(S.arrays((d_out, d_in))), draw(S.arrays((d_out,)))
        if draw(st.booleans()):
            return [x, W], op, lambda x, W: x @ W.T
        return [x, W, b], op, lambda x, W, b: x @ W.T + b
    return make


CASES["linear"] = _linear_case(ops.linear)
CASES["linear_composed"] = _linear_case(ops.linear_composed)


def _attention_ref(qkv, n_head, mask=None, p=0.0):
    """Loop-per-head NumPy attention (the forward oracle)."""
    B, T, C3 = qkv.shape
    C = C3 // 3
    hs = C // n_head
    q, k, v = qkv[..., :C], qkv[..., C:2 * C], qkv[..., 2 * C:]
    y = np.zeros((B, T, C), dtype=qkv.dtype)
    for bi in range(B):
        for h in range(n_head):
            sl = slice(h * hs, (h + 1) * hs)
            s = q[bi, :, sl] @ k[bi, :, sl].T / math.sqrt(hs)          # (T, T)
            s = np.where(np.tril(np.ones((T, T), dtype=bool)), s, -np.inf)
            P = _softmax_ref(s, -1)
            if mask is not None:
                P = P * mask[bi, h] / (1 - p)
            y[bi, :, sl] = P @ v[bi, :, sl]
    return y


def _attention_case(op, with_mask=None):
    def make(draw):
        B, T, nh, hs = draw(S.attention_dims())
        qkv = draw(S.arrays((B, T, 3 * nh * hs)))
        use_mask = draw(st.booleans()) if with_mask is None else with_mask
        mask, p = None, 0.0
        if use_mask:
            mask = draw(hnp.arrays(np.bool_, (B, nh, T, T)))
            p = draw(st.sampled_from([0.1, 0.5]))
        return ([qkv], lambda t: op(t, nh, dropout_mask=mask, p=p),
                lambda a: _attention_ref(a, nh, mask, p))
    return make


CASES["attention"] = _attention_case(ops.attention)
CASES["attention_composed"] = _attention_case(ops.attention_composed)

NAMES = sorted(CASES)


def _tensors(arrays):
    return [Tensor(a, requires_grad=True, name=f"x{i}") for i, a in enumerate(arrays)]


def _grads(fn, arrays, c):
    ts = _tensors(arrays)
    out = fn(*ts)
    out.backward(c.astype(out.dtype))
    return out, [t.grad for t in ts]


# ================================================================ generic tests over the catalog
@pytest.mark.parametrize("name", NAMES)
@given(data=st.data())
def test_grad_matches_central_differences(name, data):
    arrays, fn, _ = CASES[name](data.draw)
    seed = data.draw(st.integers(0, 2 ** 16), label="cotangent seed")
    report = check_grad(fn, *arrays, seed=seed)
    assert report.passed


@pytest.mark.parametrize("name", NAMES)
@given(data=st.data())
def test_forward_matches_numpy(name, data):
    arrays, fn, ref = CASES[name](data.draw)
    out = fn(*[Tensor(a) for a in arrays])
    expected = ref(*arrays)
    assert out.shape == expected.shape
    assert out.dtype == np.float64
    np.testing.assert_allclose(out.data, expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", NAMES)
@given(data=st.data())
def test_float32_in_float32_out(name, data):
    """float32 in -> float32 out and float32 grads, agreeing with the float64 run to float32 accuracy."""
    arrays, fn, _ = CASES[name](data.draw)
    c = np.random.default_rng(0).standard_normal(fn(*[Tensor(a) for a in arrays]).shape)
    out64, g64 = _grads(fn, arrays, c)
    out32, g32 = _grads(fn, [a.astype(np.float32) for a in arrays], c)
    assert out32.dtype == np.float32
    np.testing.assert_allclose(out32.data, out64.data, rtol=1e-4, atol=1e-5)
    for a, b in zip(g32, g64, strict=True):
        assert a.dtype == np.float32 and a.shape == b.shape
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-4 * (1 + np.abs(b).max(initial=0)))


# ================================================================ fused == composed
FUSED = [
    ("linear", ops.linear, ops.linear_composed),
    ("softmax", ops.softmax, ops.softmax_composed),
    ("log_softmax", ops.log_softmax, ops.log_softmax_composed),
    ("layer_norm", ops.layer_norm, ops.layer_norm_composed),
    ("cross_entropy", ops.cross_entropy, ops.cross_entropy_composed),
    ("attention", ops.attention, ops.attention_composed),
    ("attention_dropout", ops.attention, ops.attention_composed),
]


def _fused_inputs(name, draw):
    if name == "linear":
        arrays, _, _ = CASES["linear"](draw)
        return arrays, {}
    if name in ("softmax", "log_softmax"):
        x = draw(S.arrays(S.shapes(min_dims=1)))
        return [x], {"axis": draw(st.integers(-x.ndim, x.ndim - 1))}
    if name == "layer_norm":
        arrays, _, _ = CASES["layer_norm"](draw)
        return arrays, {}
    if name == "cross_entropy":
        logits, t, ii = draw(S.cross_entropy_cases())
        return [logits], {"targets": t, "ignore_index": ii}
    B, T, nh, hs = draw(S.attention_dims(max_b=3, max_t=5, max_nh=3, max_hs=4))
    kw = {"n_head": nh}
    if name == "attention_dropout":
        kw.update(dropout_mask=draw(hnp.arrays(np.bool_, (B, nh, T, T))), p=0.2)
    return [draw(S.arrays((B, T, 3 * nh * hs)))], kw


@pytest.mark.parametrize("name, fused, composed", FUSED, ids=[f[0] for f in FUSED])
@given(data=st.data())
def test_fused_equals_composed(name, fused, composed, data):
    arrays, kw = _fused_inputs(name, data.draw)
    c = np.random.default_rng(1).standard_normal(fused(*[Tensor(a) for a in arrays], **kw).shape)
    yf, gf = _grads(lambda *ts: fused(*ts, **kw), arrays, c)
    yc, gc_ = _grads(lambda *ts: composed(*ts, **kw), arrays, c)
    np.testing.assert_allclose(yf.data, yc.data, rtol=0, atol=1e-12)
    for a, b in zip(gf, gc_, strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-10)


# ================================================================ specific properties
def test_relu_and_max_conventions_at_kinks():
    x = Tensor(np.array([-1.0, 0.0, 2.0]), requires_grad=True)
    ops.relu(x).backward(np.ones(3))
    assert x.grad.tolist() == [0.0, 0.0, 1.0]                     # ReLU'(0) = 0
    x = Tensor(np.array([3.0, 1.0, 3.0]), requires_grad=True)
    ops.max(x).backward()
    assert x.grad.tolist() == [0.5, 0.0, 0.5]                     # ties split evenly


def test_dropout_functional():
    x = Tensor(np.ones((50, 40)), requires_grad=True)
    assert ops.dropout(x, 0.3, training=False) is x
    assert ops.dropout(x, 0.0) is x
    y = ops.dropout(x, 0.25, rng=np.random.default_rng(0))
    kept = y.data != 0
    assert np.allclose(y.data[kept], 1 / 0.75) and 0.6 < kept.mean() < 0.9
    y.backward(np.ones_like(y.data))
    np.testing.assert_array_equal(x.grad, kept / 0.75)
    for p in (-0.1, 1.0):
        with pytest.raises(ValueError, match="dropout"):
            ops.dropout(x, p)


def test_split_sections_must_divide():
    with pytest.raises(ValueError, match="split"):
        ops.split(Tensor(np.zeros((2, 5))), 2, axis=1)


def test_getitem_boolean_and_repeat_accumulate():
    x = Tensor(np.arange(4.0), requires_grad=True)
    (x[np.array([0, 0, 3, 0])] * Tensor(np.array([1.0, 2.0, 3.0, 4.0]))).sum().backward()
    assert x.grad.tolist() == [7.0, 0.0, 0.0, 3.0]


# ================================================================ stability at extremes
def test_softmax_family_at_huge_logits():
    z = np.array([[1e4, -1e4, 0.0], [-1e4, -1e4, -1e4]])
    x = Tensor(z, requires_grad=True)
    p = ops.softmax(x)
    np.testing.assert_array_equal(p.data, [[1.0, 0.0, 0.0], [1 / 3, 1 / 3, 1 / 3]])
    p.backward(np.array([[1.0, 2.0, 3.0], [0.0, 1.0, 0.0]]))
    assert np.all(np.isfinite(x.grad))
    lp = ops.log_softmax(Tensor(z, requires_grad=True))
    np.testing.assert_allclose(lp.data, [[0.0, -2e4, -1e4], [-math.log(3)] * 3], rtol=1e-15)
    for ce in (ops.cross_entropy, ops.cross_entropy_composed):
        x = Tensor(z, requires_grad=True)
        loss = ce(x, np.array([1, 2]))
        np.testing.assert_allclose(loss.item(), (2e4 + math.log(3)) / 2, rtol=1e-15)
        loss.backward()
        np.testing.assert_allclose(x.grad, [[0.5, -0.5, 0.0], [1 / 6, 1 / 6, -1 / 3]], atol=1e-15)
    for dt in (np.float32, np.float64):
        x = Tensor(z.astype(dt), requires_grad=True)
        loss = ops.cross_entropy(x, np.array([0, 0]))
        assert loss.dtype == dt and np.isfinite(loss.item())
        loss.backward()
        assert np.all(np.isfinite(x.grad))


def test_layer_norm_constant_row_has_finite_gradients():
    for fn in (ops.layer_norm, ops.layer_norm_composed):
        x = Tensor(np.full((2, 5), 3.0), requires_grad=True)
        w = Tensor(np.linspace(0.5, 1.5, 5), requires_grad=True)
        b = Tensor(np.zeros(5), requires_grad=True)
        y = fn(x, w, b)
        np.testing.assert_array_equal(y.data, 0.0)
        y.backward(np.random.default_rng(0).standard_normal((2, 5)))
        for t in (x, w, b):
            assert np.all(np.isfinite(t.grad))


# ================================================================ errors
@pytest.mark.parametrize("op, name", [(ops.add, "add"), (ops.sub, "sub"), (ops.mul, "mul"), (ops.div, "div")])
def test_broadcast_mismatch_names_op_and_shapes(op, name):
    with pytest.raises(ValueError) as e:
        op(Tensor(np.ones((2, 3)), requires_grad=True), Tensor(np.ones((4,))))
    assert name in str(e.value) and "(2, 3)" in str(e.value) and "(4,)" in str(e.value)


def test_where_mismatch_names_op_and_shapes():
    with pytest.raises(ValueError) as e:
        ops.where(np.ones((2, 3), bool), Tensor(np.ones((2, 3))), Tensor(np.ones((5,))))
    assert "where" in str(e.value) and "(2, 3)" in str(e.value) and "(5,)" in str(e.value)


@pytest.mark.parametrize("sa, sb", [((2, 3), (4, 5)), ((3,), (4,)), ((2, 2, 3), (3, 3, 1)), ((), (3,))])
def test_matmul_mismatch_names_op_and_shapes(sa, sb):
    with pytest.raises(ValueError) as e:
        ops.matmul(Tensor(np.ones(sa)), Tensor(np.ones(sb)))
    assert "matmul" in str(e.value) and str(sa) in str(e.value) and str(sb) in str(e.value)


@pytest.mark.parametrize("fn", [lambda a, b: a + b, lambda a, b: a @ b, lambda a, b: ops.exp(a),
                                lambda a, b: ops.softmax(a), lambda a, b: ops.sum(a)])
def test_integer_arrays_raise_type_error(fn):
    a, b = Tensor(np.arange(4).reshape(2, 2)), Tensor(np.arange(4).reshape(2, 2))
    with pytest.raises(TypeError, match="float"):
        fn(a, b)


def test_integer_tensor_cannot_require_grad():
    with pytest.raises(TypeError):
        Tensor(np.arange(3), requires_grad=True)


@pytest.mark.parametrize("fn", [lambda a, b: a + b, lambda a, b: a * b, lambda a, b: a @ b,
                                lambda a, b: ops.linear(a, b), lambda a, b: ops.where(np.ones(2, bool), a, b)])
def test_mixing_float32_and_float64_raises_type_error(fn):
    a = Tensor(np.ones((2, 2), np.float32), requires_grad=True)
    b = Tensor(np.ones((2, 2), np.float64))
    with pytest.raises(TypeError, match="mix"):
        fn(a, b)
    with pytest.raises(TypeError, match="mix"):
        fn(b, a)


def test_python_scalars_take_the_tensor_dtype():
    x = Tensor(np.ones(3, np.float32), requires_grad=True)
    y = 2.0 * x + 1 - 0.5 / (x + 1.0)
    assert y.dtype == np.float32
    y.sum().backward()
    assert x.grad.dtype == np.float32


def test_embedding_and_cross_entropy_reject_bad_targets():
    w = Tensor(np.ones((3, 2)), requires_grad=True)
    with pytest.raises(TypeError):
        ops.embedding(w, np.array([0.0, 1.0]))
    with pytest.raises(ValueError):
        ops.embedding(w, np.array([0, 3]))
    z = Tensor(np.zeros((2, 3)), requires_grad=True)
    with pytest.raises(TypeError):
        ops.cross_entropy(z, np.array([0.0, 1.0]))
    with pytest.raises(ValueError):
        ops.cross_entropy(z, np.array([0, 1, 2]))
    with pytest.raises(ValueError):
        ops.cross_entropy(z, np.array([-100, -100]))
    with pytest.raises(ValueError):
        ops.cross_entropy(z, np.array([0, 3]))


# ================================================================ the ops package shadows builtins (max, sum, pow)
def test_op_internals_never_call_a_shadowed_builtin():
    """minilora.ops defines `max`, `sum` and `pow`, and its modules import them from each other, so a
    bare `max(a, b)` inside a Function or a private helper calls the op, not the builtin (this broke
    transpose with explicit axes and every reduction with an explicit axis). Internals must write
    `builtins.max`."""
    import ast
    import builtins
    import importlib
    import inspect
    import pkgutil

    shadowed = {name for name in dir(ops) if hasattr(builtins, name) and callable(getattr(ops, name))
                and getattr(ops, name) is not getattr(builtins, name)}
    assert {"max", "sum", "pow"} <= shadowed
    bad = []
    for info in pkgutil.iter_modules(ops.__path__):
        module = importlib.import_module(f"minilora.ops.{info.name}")
        tree = ast.parse(inspect.getsource(module))
        internals = [n for n in tree.body if isinstance(n, ast.ClassDef)
                     or (isinstance(n, ast.FunctionDef) and n.name.startswith("_"))]
        bad += [(info.name, node.name, call.lineno) for node in internals for call in ast.walk(node)
                if isinstance(call, ast.Call) and isinstance(call.func, ast.Name) and call.func.id in shadowed]
    assert bad == [], f"bare calls to shadowed builtins in the ops modules' internals: {bad}"


@pytest.mark.parametrize("fn", [
    lambda t: ops.transpose(t, (1, 0, 2)), lambda t: ops.transpose(t, (-1, 0, 1)), lambda t: t.transpose(2, 1, 0),
    lambda t: ops.sum(t, 1), lambda t: ops.mean(t, (0, -1)), lambda t: ops.var(t, -2, keepdims=True),
    lambda t: ops.max(t, 2), lambda t: t.sum(axis=(0, 2)), lambda t: ops.softmax(t, 0),
    lambda t: ops.log_softmax(t, 1), lambda t: ops.split(t, 2, axis=1)[1], lambda t: ops.stack([t, t], -1),
    lambda t: ops.concatenate([t, t], axis=-2)])
def test_explicit_axes_work_everywhere(fn):
    x = np.random.default_rng(0).standard_normal((2, 4, 3))
    assert check_grad(fn, x).passed
