"""The block-causal path of the fused attention (T > ops.fused_attention.BLOCK): query blocks skip the
key blocks above the diagonal. Checked hand == composed == central differences in float64, with and
without a dropout mask, over shapes and block lengths (BLOCK is lowered so small shapes take the path)."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minilora import ops
from minilora.gradcheck import check_grad
from minilora.ops import fused_attention
from minilora.tensor import Tensor


def _grads(fn, qkv, g):
    t = Tensor(qkv, requires_grad=True)
    y = fn(t)
    y.backward(g)
    return y.data, t.grad


@settings(max_examples=25, deadline=None)
@given(block=st.integers(1, 4), B=st.integers(1, 2), T=st.integers(2, 11), nh=st.integers(1, 2),
       hs=st.integers(1, 3), use_mask=st.booleans(), seed=st.integers(0, 1000))
def test_blocked_attention_equals_composed(block, B, T, nh, hs, use_mask, seed):
    rng = np.random.default_rng(seed)
    qkv = rng.standard_normal((B, T, 3 * nh * hs))
    g = rng.standard_normal((B, T, nh * hs))
    mask, p = (rng.random((B, nh, T, T)) >= 0.3, 0.3) if use_mask else (None, 0.0)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(fused_attention, "BLOCK", block)
        assert len(fused_attention._spans(T)) == (-(-T // block) if T > block else 1)
        yf, gf = _grads(lambda t: ops.attention(t, nh, mask, p), qkv, g)
    yc, gc = _grads(lambda t: ops.attention_composed(t, nh, mask, p), qkv, g)
    np.testing.assert_allclose(yf, yc, rtol=0, atol=1e-12)
    np.testing.assert_allclose(gf, gc, rtol=0, atol=1e-10)


@pytest.mark.parametrize("T", [5, 6, 7])
def test_blocked_attention_central_differences(T):
    qkv = np.random.default_rng(T).standard_normal((2, T, 12))
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(fused_attention, "BLOCK", 3)
        check_grad(lambda t: ops.attention(t, 2), qkv)


def test_long_context_float32_matches_float64():
    """T = 300 takes the real path (BLOCK 128: blocks 0-128, 128-256, 256-300, aligned and not)."""
    rng = np.random.default_rng(0)
    qkv = rng.standard_normal((1, 300, 3 * 8))
    g = rng.standard_normal((1, 300, 8))
    y64, g64 = _grads(lambda t: ops.attention(t, 2), qkv, g)
    yc, gc = _grads(lambda t: ops.attention_composed(t, 2), qkv, g)
    np.testing.assert_allclose(y64, yc, rtol=0, atol=1e-12)
    np.testing.assert_allclose(g64, gc, rtol=0, atol=1e-10)
    y32, g32 = _grads(lambda t: ops.attention(t, 2), qkv.astype(np.float32), g.astype(np.float32))
    np.testing.assert_allclose(y32, y64, rtol=0, atol=1e-5 * np.abs(y64).max())
    np.testing.assert_allclose(g32, g64, rtol=0, atol=1e-5 * np.abs(g64).max())


def test_writing_into_the_input_after_forward_leaves_the_gradient_unchanged():
    """The op keeps its own contiguous copies of q, k, v (`heads`), so an in-place write into qkv
    between forward and backward cannot corrupt the gradient (and needs no version error)."""
    rng = np.random.default_rng(5)
    qkv = rng.standard_normal((2, 6, 12))
    g = rng.standard_normal((2, 6, 4))
    _, want = _grads(lambda t: ops.attention(t, 2), qkv, g)
    x = Tensor(qkv.copy(), requires_grad=True)
    y = ops.attention(x, 2)
    x.data -= 0.5                                       # what an optimizer step does
    y.backward(g)
    np.testing.assert_array_equal(x.grad, want)


def test_single_thread_blas_sets_one_thread_and_restores(monkeypatch):
    """The per-head GEMMs run on one OpenBLAS thread; the process's setting comes back afterwards,
    also after an exception, and the helper is a no-op where OpenBLAS is not found."""
    from minilora.ops import _blas

    funcs = _blas._openblas_funcs()
    if funcs:
        get, put = funcs
        before = get()
        put(2)
        try:
            with _blas.single_thread_blas():
                assert get() == 1
            assert get() == 2
            with pytest.raises(KeyError), _blas.single_thread_blas():
                raise KeyError("inside")
            assert get() == 2
        finally:
            put(before)
    monkeypatch.setattr(_blas, "_FUNCS", ())
    with _blas.single_thread_blas():
        pass


@settings(max_examples=15, deadline=None)
@given(block=st.integers(2, 6), B=st.integers(2, 5), T=st.integers(2, 9), use_mask=st.booleans(),
       seed=st.integers(0, 1000))
def test_two_batch_halves_on_two_threads_equal_the_serial_op(block, B, T, use_mask, seed):
    """With 2+ BLAS threads the op runs two batch halves concurrently: bit for bit the serial result,
    and equal to the composed twin (float64), with and without dropout, blocked or not."""
    rng = np.random.default_rng(seed)
    nh, hs = 2, 2
    qkv = rng.standard_normal((B, T, 3 * nh * hs))
    g = rng.standard_normal((B, T, nh * hs))
    mask, p = (rng.random((B, nh, T, T)) >= 0.3, 0.3) if use_mask else (None, 0.0)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(fused_attention, "BLOCK", block)
        mp.setattr(fused_attention, "blas_threads", lambda: 2)
        mp.setattr(fused_attention, "PARALLEL", True)
        mp.setattr(fused_attention, "PARALLEL_MIN", 0)
        assert len(fused_attention._batch_parts(B, nh, T)) == 2
        yp, gp = _grads(lambda t: ops.attention(t, nh, mask, p), qkv, g)
        mp.setattr(fused_attention, "PARALLEL_MIN", 1 << 62)
        assert len(fused_attention._batch_parts(B, nh, T)) == 1
        ys, gs = _grads(lambda t: ops.attention(t, nh, mask, p), qkv, g)
    np.testing.assert_array_equal(yp, ys)
    np.testing.assert_array_equal(gp, gs)
    yc, gc = _grads(lambda t: ops.attention_composed(t, nh, mask, p), qkv, g)
    np.testing.assert_allclose(yp, yc, rtol=0, atol=1e-12)
    np.testing.assert_allclose(gp, gc, rtol=0, atol=1e-10)
