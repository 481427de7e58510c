"""The reverse-mode engine: accumulation at shared nodes, deep graphs, no_grad, freeing the graph,
retain_graph, leaf-only gradients, and the errors the engine raises (naming the op at fault)."""
from __future__ import annotations

import gc
import math
import weakref

import numpy as np
import pytest

from minilora import Function, Tensor, is_grad_enabled, no_grad, ops


def leaf(v, dtype=np.float64):
    return Tensor(np.array(v, dtype=dtype), requires_grad=True)


# ================================================================ accumulation
def test_reused_node_accumulates():
    a = leaf(1.5)
    b = a + a
    c = b + b
    c.backward()
    assert a.grad == 4.0


def test_two_exp_nodes_add():
    x = leaf(2.0)
    (ops.exp(x) + ops.exp(x)).backward()
    assert x.grad == 2 * math.exp(2.0)


def test_diamond_graph_exact():
    # x -> a = x*x, b = 3x, c = a*b = 3 x^3, f = c + a  =>  df/dx = 9 x^2 + 2 x
    x = leaf(3.0)
    a = x * x
    b = x * 3.0
    f = a * b + a
    f.backward()
    assert f.item() == 90.0
    assert x.grad == 9 * 9 + 2 * 3


def test_no_inplace_accumulation_into_shared_arrays():
    # Add.backward hands the same array g to both inputs; += into it would give dy = 2
    x, y = leaf([1.0, 2.0, 3.0]), leaf([4.0, 5.0, 6.0])
    f = (x + y) + x
    f.backward(np.ones(3))
    assert y.grad.tolist() == [1.0, 1.0, 1.0]
    assert x.grad.tolist() == [2.0, 2.0, 2.0]
    # the same with the shared path last, through a view-returning op, and into the cotangent itself
    x, y = leaf([1.0, 2.0]), leaf([3.0, 4.0])
    g = np.array([1.0, 10.0])
    f = ops.reshape(x, (2,)) + (y + x) + y
    f.backward(g)
    assert x.grad.tolist() == [2.0, 20.0] and y.grad.tolist() == [2.0, 20.0]
    assert g.tolist() == [1.0, 10.0]                    # the caller's gradient array is untouched


def test_leaf_grad_does_not_alias_the_cotangent():
    x = leaf([1.0, 2.0])
    g = np.array([1.0, 1.0])
    (x + 0.0).backward(g)
    x.grad += 1
    assert g.tolist() == [1.0, 1.0]


def test_repeated_indices_accumulate_in_getitem_and_embedding():
    x = leaf([10.0, 20.0, 30.0])
    x[np.array([2, 0, 2, 2])].sum().backward()
    assert x.grad.tolist() == [1.0, 0.0, 3.0]
    w = leaf(np.zeros((4, 2)))
    idx = np.array([[1, 3], [1, 1]])
    ops.embedding(w, idx).backward(np.ones((2, 2, 2)))
    np.testing.assert_array_equal(w.grad, [[0, 0], [3, 3], [0, 0], [1, 1]])


def test_deep_chain_no_recursion_error():
    x = leaf(0.0)
    y = x
    for _ in range(10_000):
        y = y + 1.0
    y.backward()
    assert y.item() == 10_000.0 and x.grad == 1.0


def test_grad_accumulates_across_separate_backward_calls():
    x = leaf([1.0, 2.0])
    (x * 2.0).sum().backward()
    (x * 3.0).sum().backward()
    assert x.grad.tolist() == [5.0, 5.0]
    x.zero_grad()
    assert x.grad is None


def test_only_leaves_get_grad():
    x = leaf([1.0, 2.0])
    h = ops.tanh(x * 2.0)
    y = h.sum()
    y.backward()
    assert x.grad is not None
    assert h.grad is None and y.grad is None
    assert not h.is_leaf and x.is_leaf


def test_constants_get_no_grad():
    x, c = leaf([1.0, 2.0]), Tensor(np.array([3.0, 4.0]))
    (x * c).sum().backward()
    assert c.grad is None and c.requires_grad is False


# ================================================================ no_grad and freeing the graph
def test_no_grad_records_no_graph():
    x = leaf([1.0, 2.0])
    with no_grad():
        assert not is_grad_enabled()
        y = ops.exp(x) * 2.0 + x
    assert is_grad_enabled()
    assert y.requires_grad is False and y._node is None
    with pytest.raises(RuntimeError, match="does not require grad"):
        y.sum().backward()


def test_no_grad_restores_on_exception():
    with pytest.raises(ZeroDivisionError):
        with no_grad():
            _ = 1 / 0
    assert is_grad_enabled()


def _live_tensors():
    gc.collect()
    return sum(isinstance(o, Tensor) for o in gc.get_objects())


def test_graph_is_freed_after_backward():
    x = leaf(np.ones((3, 4)))
    before = _live_tensors()
    h1 = ops.exp(x * 2.0)
    h2 = ops.tanh(h1 + x)
    interior = weakref.ref(h1)
    y = (h2 * h1).sum()
    del h1, h2
    assert interior() is not None and _live_tensors() > before + 3
    node = y._node
    y.backward()
    assert node.freed and node.ctx is None and node.parents is None
    del y
    assert interior() is None
    assert _live_tensors() == before
    assert x.grad.shape == (3, 4)


def test_second_backward_raises_and_retain_graph_allows_it():
    x = leaf([1.0, -2.0])
    y = (x * x).sum()
    y.backward()
    with pytest.raises(RuntimeError, match="retain_graph"):
        y.backward()
    x = leaf([1.0, -2.0])
    y = (x * x).sum()
    y.backward(retain_graph=True)
    y.backward()
    assert x.grad.tolist() == [4.0, -8.0]


def test_backward_through_a_freed_graph_raises():
    x = leaf([1.0, 2.0])
    h = x * 2.0
    h.sum().backward()
    with pytest.raises(RuntimeError, match="freed"):
        (h * 3.0).sum().backward()


# ================================================================ errors
def test_backward_on_non_scalar_needs_grad():
    y = leaf([1.0, 2.0]) * 2.0
    with pytest.raises(RuntimeError, match=r"one-element.*\(2,\)"):
        y.backward()


def test_backward_on_tensor_without_grad():
    with pytest.raises(RuntimeError, match="does not require grad"):
        Tensor(np.array(1.0)).backward()


def test_backward_grad_of_wrong_shape_or_dtype():
    y = leaf([1.0, 2.0]) * 2.0
    with pytest.raises(ValueError, match="shape"):
        y.backward(np.ones(3))
    with pytest.raises(ValueError, match="dtype"):
        y.backward(np.ones(2, dtype=np.float32))


class BadSum(Function):
    """Sum whose backward forgets to broadcast g back to the input's shape."""

    @staticmethod
    def forward(ctx, x):
        return np.asarray(x.sum())

    @staticmethod
    def backward(ctx, g):
        return (g,)


class BadUpcast(Function):
    """Doubling whose backward silently upcasts to float64."""

    @staticmethod
    def forward(ctx, x):
        return x * 2

    @staticmethod
    def backward(ctx, g):
        return (g.astype(np.float64) * 2,)


class BadCount(Function):
    """A binary op whose backward returns one gradient."""

    @staticmethod
    def forward(ctx, a, b):
        return a + b

    @staticmethod
    def backward(ctx, g):
        return (g,)


def test_wrong_shape_gradient_is_caught_and_names_the_op():
    x = leaf(np.ones((2, 3)))
    with pytest.raises(RuntimeError, match=r"BadSum.*shape \(\).*\(2, 3\)"):
        BadSum.apply(x).backward()


def test_wrong_dtype_gradient_is_caught_and_names_the_op():
    x = leaf(np.ones(3), np.float32)
    with pytest.raises(RuntimeError, match=r"BadUpcast.*float64.*float32"):
        BadUpcast.apply(x).sum().backward()


def test_wrong_number_of_gradients_is_caught_and_names_the_op():
    a, b = leaf([1.0]), leaf([2.0])
    with pytest.raises(RuntimeError, match="BadCount"):
        BadCount.apply(a, b).sum().backward()


# ================================================================ in-place modification between forward and backward
def _saving_ops():
    """(op name, shape of x, shape of w, f(x, w) -> Tensor, which of x and w the op's backward reads)."""
    return [
        ("Mul", (2, 3), (3,), lambda x, w: x * w, "xw"),
        ("Div", (2, 3), (3,), lambda x, w: x / (w + 10.0), "x"),       # w + 10 is a new tensor
        ("MatMul", (2, 3), (3, 4), lambda x, w: x @ w, "xw"),
        ("Linear", (2, 3), (4, 3), ops.linear, "xw"),
        ("LayerNorm", (2, 3), (3,), ops.layer_norm, "w"),              # saves xhat, rstd and the weight
        ("Pow", (2, 3), (3,), lambda x, w: x ** 3 + w, "x"),           # Add saves nothing
        ("Attention", (1, 2, 6), (3,), lambda x, w: ops.attention(x, 1), ""),   # saves its own q, k, v copies
    ]


@pytest.mark.parametrize("name, xs, ws, f, reads", _saving_ops(), ids=[c[0] for c in _saving_ops()])
@pytest.mark.parametrize("victim", ["x", "w"])
def test_inplace_write_through_data_after_forward_raises_naming_tensor_and_op(name, xs, ws, f, reads, victim):
    rng = np.random.default_rng(0)
    x = Tensor(rng.standard_normal(xs), requires_grad=True, name="x")
    w = Tensor(rng.standard_normal(ws), requires_grad=True, name="w")
    y = f(x, w)
    t = {"x": x, "w": w}[victim]
    t.data -= 0.5                                       # what an optimizer step does
    if victim in reads:
        with pytest.raises(RuntimeError, match=rf"{name}\.backward.*'{victim}'.*modified in place"):
            y.backward(np.ones(y.shape))
    else:                                               # the op never reads it: the gradient is unaffected
        y.backward(np.ones(y.shape))


def test_inplace_write_seen_through_views_and_detach():
    """Views made by ops (transpose, reshape, basic slicing) and detach() share one write count."""
    rng = np.random.default_rng(0)
    for view in (lambda w: w.T, lambda w: w.reshape(3, 3), lambda w: w[::1], lambda w: w.detach()):
        x = Tensor(rng.standard_normal((2, 3)), requires_grad=True)
        w = Tensor(rng.standard_normal((3, 3)), requires_grad=True, name="w")
        y = x @ view(w)                                 # MatMul saves the view's array
        w.data -= 0.5
        with pytest.raises(RuntimeError, match=r"MatMul\.backward.*input 1.*modified in place"):
            y.backward(np.ones(y.shape))
        x = Tensor(rng.standard_normal((2, 3)), requires_grad=True)
        v = view(w)
        y = x @ w
        v.data -= 0.5                                   # through the view: the same memory changed
        with pytest.raises(RuntimeError, match=r"MatMul\.backward.*'w'.*modified in place"):
            y.backward(np.ones(y.shape))


def test_inplace_write_into_an_output_an_op_saved_raises():
    x = Tensor(np.array([0.5, 1.0]), requires_grad=True)
    for make in (ops.exp, ops.tanh, ops.sigmoid, ops.sqrt, ops.softmax):
        y = make(x)
        y.data *= 2.0
        with pytest.raises(RuntimeError, match="its output.*modified in place"):
            y.sum().backward()


def test_writes_that_change_no_saved_array_are_allowed():
    x = Tensor(np.array([1.0, 2.0]), requires_grad=True, name="x")
    y = (x + 1.0).sum()                                 # Add saves nothing
    x.data -= 5.0
    y.backward()
    assert x.grad.tolist() == [1.0, 1.0]
    w = Tensor(np.array([1.0, 2.0]), requires_grad=True)
    y = (w * w).sum()
    w.data = np.array([10.0, 20.0])                     # rebinding: the graph still holds the old array
    y.backward()
    assert w.grad.tolist() == [2.0, 4.0]                # the gradient of the forward pass that ran


def test_optimizer_step_between_two_backwards_of_a_retained_graph_raises():
    from minilora.optim import SGD
    w = Tensor(np.array([1.0, -2.0]), requires_grad=True, name="w")
    loss = (w * w).sum()
    loss.backward(retain_graph=True)
    SGD([w], lr=0.1).step()
    with pytest.raises(RuntimeError, match="'w'.*modified in place"):
        loss.backward()


def test_writes_into_the_ndarray_itself_are_not_detected():
    """The documented limit: `t.data[0] = 5` never reaches Tensor.data's setter, so the counter cannot
    see it, and backward silently uses the new value (lesson 2 shows this too)."""
    w = Tensor(np.array([1.0, 2.0]), requires_grad=True)
    y = (w * w).sum()                                   # dy/dw = 2w = [2, 4] at the forward pass
    w.data[0] = 5.0
    y.backward()
    assert w.grad.tolist() == [10.0, 4.0]               # wrong, and not detected
    assert w._version == 0
