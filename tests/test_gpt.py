"""Tests of the GPT-2 model: whole-model gradient checks (float64), causality, loss at
initialisation, overfitting one batch, the tied embedding, dtypes, generation, input errors, dropout."""
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import minilora
from minilora.nn import GPT, GPTConfig, Parameter
from minilora.tensor import no_grad


def make(dtype=np.float32, seed=0, **kw):
    cfg = dict(vocab_size=256, block_size=8, n_layer=2, n_head=2, n_embd=16)
    cfg.update(kw)
    return GPT(GPTConfig(**cfg), dtype=dtype, seed=seed)


def tokens(shape, seed=0, vocab=256):
    return np.random.default_rng(seed).integers(0, vocab, shape)


# ------------------------------------------------------------------ gradient checks (float64)
def test_check_vjp_whole_model_logits():
    m = make(np.float64, n_layer=2, n_head=2, n_embd=16, block_size=8)
    idx = tokens((2, 8))
    res = minilora.check_vjp(lambda *ps: m(idx)[0], *m.parameters(), n_directions=3)
    assert len(res) == 3


def test_check_vjp_whole_model_loss_biasless():
    m = make(np.float64, n_layer=2, n_head=4, n_embd=16, block_size=6, bias=False)
    idx, tgt = tokens((3, 6), 1), tokens((3, 6), 2)
    minilora.check_vjp(lambda *ps: m(idx, tgt)[1], *m.parameters(), n_directions=3)


def test_check_grad_every_parameter_one_layer():
    """Central differences on every scalar parameter of a 1-layer model (loss as the function)."""
    m = make(np.float64, vocab_size=64, n_layer=1, n_head=2, n_embd=8, block_size=4, seed=3)
    for p in m.parameters():          # move LayerNorm/bias params off their special init values
        p.data += np.random.default_rng(p.size).normal(0, 0.05, p.shape)
    idx, tgt = tokens((2, 4), 4, vocab=64), tokens((2, 4), 5, vocab=64)
    names = dict((id(p), n) for n, p in m.named_parameters())
    for p in m.parameters():
        p.name = names[id(p)]
    report = minilora.check_grad(lambda *ps: m(idx, tgt)[1], *m.parameters(), atol=1e-7, rtol=1e-5)
    assert report.passed and len(report.rows) == len(m.parameters())


def test_whole_model_gradcheck_catches_a_broken_gradient(monkeypatch):
    """The check is not vacuous: a wrong GELU derivative anywhere in the model is caught."""
    m = make(np.float64, n_layer=1, n_head=2, n_embd=8, block_size=4)
    idx = tokens((2, 4))
    orig = minilora.ops.GELU.backward
    monkeypatch.setattr(minilora.ops.GELU, "backward", staticmethod(lambda ctx, g: (orig(ctx, g)[0] * 1.01,)))
    with pytest.raises(minilora.GradcheckError):
        minilora.check_vjp(lambda *ps: m(idx)[0], *m.parameters())


# ------------------------------------------------------------------ causality
_CAUSAL = {dt: make(dt, seed=1, n_layer=2, n_head=2, n_embd=16, block_size=8) for dt in (np.float32, np.float64)}


@given(T=st.integers(1, 8), t=st.integers(0, 7), B=st.integers(1, 3), seed=st.integers(0, 2**16),
       dt=st.sampled_from([np.float32, np.float64]))
def test_causality_bit_for_bit(T, t, B, seed, dt):
    t = t % T
    m = _CAUSAL[dt]
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 256, (B, T))
    b = a.copy()
    b[:, t + 1:] = rng.integers(0, 256, (B, T - t - 1))
    la, lb = m(a)[0].data, m(b)[0].data
    assert la[:, :t + 1].tobytes() == lb[:, :t + 1].tobytes()


def test_future_tokens_do_change_later_logits():
    m = _CAUSAL[np.float64]
    a = tokens((1, 8))
    b = a.copy()
    b[0, 3] = (b[0, 3] + 1) % 256
    la, lb = m(a)[0].data, m(b)[0].data
    assert np.all(np.any(la[0, 3:] != lb[0, 3:], axis=-1))


# ------------------------------------------------------------------ loss, training, the tied weight
def test_loss_at_init_is_log_vocab():
    m = make(n_layer=4, n_head=4, n_embd=64, block_size=32)
    _, loss = m(tokens((8, 32), 1), tokens((8, 32), 2))
    assert loss.shape == () and abs(loss.item() - math.log(256)) < 0.1


def _adam(params, lr):
    try:
        from minilora.optim import AdamW
        return AdamW(params, lr=lr, weight_decay=0.0)
    except ImportError:
        pass

    class Adam:
        def __init__(self):
            self.t, self.m, self.v = 0, [np.zeros_like(p.data) for p in params], [np.zeros_like(p.data) for p in params]

        def step(self):
            self.t += 1
            for p, m, v in zip(params, self.m, self.v, strict=True):
                m[:] = 0.9 * m + 0.1 * p.grad
                v[:] = 0.999 * v + 0.001 * p.grad ** 2
                mh, vh = m / (1 - 0.9 ** self.t), v / (1 - 0.999 ** self.t)
                p.data -= (lr * mh / (np.sqrt(vh) + 1e-8)).astype(p.dtype)

        def zero_grad(self):
            for p in params:
                p.grad = None

    return Adam()


def test_overfits_one_batch():
    m = make(n_layer=2, n_head=2, n_embd=32, block_size=16, seed=0)
    idx = tokens((4, 16), 7)
    x, y = idx[:, :-1], idx[:, 1:]
    opt = _adam(m.parameters(), 1e-2)
    losses = []
    for _ in range(150):
        _, loss = m(x, y)
        m.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if losses[-1] < 0.5:
            break
    assert losses[-1] < 0.5, losses[::10]
    assert losses[0] > 5.0


def _untied_copy(m):
    u = GPT(m.config, dtype=m.dtype)
    u.load_state_dict(m.state_dict())
    u.lm_head.weight = Parameter(m.transformer.wte.weight.data.copy())   # separate copy
    return u


def test_tied_weight_gradient_is_embedding_plus_head_gradient():
    m = make(np.float64, seed=2)
    u = _untied_copy(m)
    assert u.lm_head.weight is not u.transformer.wte.weight
    assert len(u.parameters()) == len(m.parameters()) + 1
    idx, tgt = tokens((2, 8), 1), tokens((2, 8), 2)
    m(idx, tgt)[1].backward()
    u(idx, tgt)[1].backward()
    expected = u.transformer.wte.weight.grad + u.lm_head.weight.grad
    np.testing.assert_allclose(m.transformer.wte.weight.grad, expected, rtol=1e-10, atol=1e-14)
    assert np.any(u.transformer.wte.weight.grad != 0) and np.any(u.lm_head.weight.grad != 0)


def test_tied_weight_gets_one_update_per_step():
    m = make(np.float64, seed=2)
    u = _untied_copy(m)
    idx, tgt = tokens((2, 8), 1), tokens((2, 8), 2)
    m(idx, tgt)[1].backward()
    u(idx, tgt)[1].backward()
    w0 = m.transformer.wte.weight.data.copy()
    lr = 0.1
    for p in m.parameters():               # plain SGD over the deduplicated list
        p.data -= lr * p.grad
    step = lr * (u.transformer.wte.weight.grad + u.lm_head.weight.grad)
    np.testing.assert_allclose(m.transformer.wte.weight.data, w0 - step, rtol=1e-12, atol=1e-15)
    assert m.lm_head.weight is m.transformer.wte.weight


# ------------------------------------------------------------------ dtypes
@pytest.mark.parametrize("dt", [np.float32, np.float64])
def test_dtype_end_to_end(dt):
    m = make(dt, dropout=0.1)
    logits, loss = m(tokens((2, 8)), tokens((2, 8), 1))
    assert logits.dtype == dt and loss.dtype == dt and logits.shape == (2, 8, 256)
    loss.backward()
    for n, p in m.named_parameters():
        assert p.dtype == dt and p.grad.dtype == dt and p.grad.shape == p.shape, n


def test_float32_matches_float64():
    m32, m64 = make(np.float32, seed=4), make(np.float32, seed=4).astype(np.float64)
    idx, tgt = tokens((2, 8)), tokens((2, 8), 1)
    l32, l64 = m32(idx, tgt)[1], m64(idx, tgt)[1]
    l32.backward()
    l64.backward()
    assert abs(l32.item() - l64.item()) < 1e-5
    for p32, p64 in zip(m32.parameters(), m64.parameters(), strict=True):
        np.testing.assert_allclose(p32.grad, p64.grad, rtol=1e-3, atol=1e-5)


# ------------------------------------------------------------------ generation
def test_generate_shape_and_prompt_kept():
    m = make()
    prompt = tokens((3, 5))
    out = m.generate(prompt, 6, seed=0)
    assert out.shape == (3, 11) and out.dtype == np.int64
    np.testing.assert_array_equal(out[:, :5], prompt)
    assert out.min() >= 0 and out.max() < 256
    assert m.generate(prompt, 0).shape == (3, 5)


@settings(max_examples=15)
@given(T0=st.integers(1, 20), n=st.integers(0, 4), top_k=st.sampled_from([None, 1, 5]))
def test_generate_any_prompt_length_crops_to_block_size(T0, n, top_k):
    """Prompts shorter, equal to and longer than block_size (8) all work; a long prompt behaves
    as its last block_size tokens (regression: generate rejected prompts longer than block_size)."""
    m = _CAUSAL[np.float32]
    prompt = tokens((2, T0), T0)
    out = m.generate(prompt, n, top_k=top_k, seed=1)
    assert out.shape == (2, T0 + n)
    np.testing.assert_array_equal(out[:, :T0], prompt)
    bs = m.config.block_size
    cropped = m.generate(prompt[:, -bs:], n, top_k=top_k, seed=1)
    np.testing.assert_array_equal(out[:, T0:], cropped[:, -n:] if n else cropped[:, :0])


def test_generate_same_seed_same_text():
    m = make()
    p = tokens((2, 3))
    a, b = m.generate(p, 10, seed=42), m.generate(p, 10, seed=42)
    np.testing.assert_array_equal(a, b)
    others = [m.generate(p, 10, seed=s) for s in range(5)]
    assert any(not np.array_equal(a, o) for o in others)


def test_top_k_1_equals_greedy():
    m = make(seed=3)
    p = tokens((2, 4), 9)
    greedy = m.generate(p, 12, temperature=0)
    np.testing.assert_array_equal(m.generate(p, 12, top_k=1, seed=0), greedy)
    np.testing.assert_array_equal(m.generate(p, 12, top_k=1, temperature=2.0, seed=5), greedy)
    with no_grad():                               # greedy really is the argmax of the logits
        logits = m(p)[0].data
    np.testing.assert_array_equal(greedy[:, 4], logits[:, -1].argmax(-1))


def test_generate_restores_mode_and_is_dropout_free():
    m = make(dropout=0.3)
    p = tokens((1, 3))
    a = m.generate(p, 8, temperature=0)
    assert m.training
    assert all(mod.training for mod in m.modules())
    np.testing.assert_array_equal(a, m.generate(p, 8, temperature=0))


@pytest.mark.parametrize("kw", [dict(temperature=-1), dict(top_k=0), dict(max_new_tokens=-1)])
def test_generate_bad_arguments(kw):
    args = dict(max_new_tokens=2)
    args.update(kw)
    with pytest.raises(ValueError):
        make().generate(tokens((1, 2)), **args)


# a bad argument of each kind: wrong type (float, bool, str, None where not allowed), out of range,
# non-finite; each must be refused at the call, with a message naming the argument
_BAD_GENERATE = st.one_of(
    st.tuples(st.just("max_new_tokens"), st.one_of(st.floats(allow_nan=True), st.booleans(), st.just("3"),
                                                   st.none(), st.integers(max_value=-1))),
    st.tuples(st.just("temperature"), st.one_of(st.just(math.nan), st.just(math.inf), st.just(-math.inf),
                                                st.floats(max_value=-1e-12), st.booleans(), st.just("1"),
                                                st.none(), st.just(1 + 0j))),
    st.tuples(st.just("top_k"), st.one_of(st.floats(allow_nan=True), st.booleans(), st.just("2"),
                                          st.integers(max_value=0))),
    st.tuples(st.just("seed"), st.one_of(st.floats(), st.just("7"), st.booleans(), st.integers(max_value=-1))),
)


@settings(max_examples=120, deadline=None)
@given(bad=_BAD_GENERATE)
def test_generate_refuses_bad_arguments_at_the_call(bad):
    name, value = bad
    args = dict(max_new_tokens=2)
    args[name] = value
    m = _SMALL
    with pytest.raises((TypeError, ValueError), match=f"generate: {name} must be") as e:
        m.generate(tokens((1, 2)), **args)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        assert e.type is TypeError
    assert m.training                                   # refused before anything ran


def test_generate_examples_of_the_issue():
    m = _SMALL
    with pytest.raises(TypeError, match=r"top_k must be None or an int >= 1, got float 2.5"):
        m.generate(tokens((1, 2)), 2, top_k=2.5)
    with pytest.raises(ValueError, match=r"temperature must be a finite number >= 0 \(0 = greedy\), got nan"):
        m.generate(tokens((1, 2)), 2, temperature=float("nan"))
    with pytest.raises(TypeError, match=r"max_new_tokens must be an int >= 0, got float 2.5"):
        m.generate(tokens((1, 2)), 2.5)
    # the accepted kinds still work: numpy ints, a Generator, top_k above the vocabulary
    out = m.generate(tokens((1, 2)), np.int64(3), temperature=np.float32(0.5), top_k=np.int32(1000),
                     seed=np.random.default_rng(0))
    assert out.shape == (1, 5)


@pytest.mark.parametrize("dtype", [np.float16, np.int64, np.longdouble, "float16", "foo", None, bool, object,
                                   np.complex128, np.dtype(">f8")])
def test_astype_refuses_dtypes_the_engine_does_not_compute_in(dtype):
    m = make()
    before = {n: p.data.copy() for n, p in m.named_parameters()}
    with pytest.raises(TypeError, match=r"GPT.astype: dtype must be np.float32 or np.float64, got"):
        m.astype(dtype)
    for n, p in m.named_parameters():                  # nothing was cast
        assert p.dtype == np.float32 and np.array_equal(p.data, before[n])
    assert m.astype("float64").dtype == np.float64 and m.astype(np.float32).dtype == np.float32


_SMALL = make()


# ------------------------------------------------------------------ bad inputs
def test_bad_inputs_raise_clear_errors():
    m = make()
    with pytest.raises(ValueError, match="block_size=8"):
        m(tokens((1, 9)))
    with pytest.raises(TypeError, match="integers"):
        m(np.zeros((1, 4), dtype=np.float32))
    with pytest.raises(ValueError, match=r"\(B, T\)"):
        m(tokens((4,)))
    with pytest.raises(ValueError, match=r"\(B, T\)"):
        m(tokens((1, 2, 3)))
    with pytest.raises(ValueError, match="block_size"):
        m(np.zeros((1, 0), dtype=np.int64))
    with pytest.raises(ValueError, match=r"\[0, 256\)"):
        m(np.array([[1, 256]]))
    with pytest.raises(ValueError, match=r"\[0, 256\)"):
        m(np.array([[-1, 2]]))
    with pytest.raises(TypeError, match="integers"):
        m.generate(np.zeros((1, 4)), 2)
    with pytest.raises(ValueError, match=r"\(B, T\)"):
        m.generate(tokens((4,)), 2)
    with pytest.raises((ValueError, TypeError)):
        m(tokens((2, 4)), tokens((2, 5)))           # targets of the wrong shape


# ------------------------------------------------------------------ dropout
def test_eval_is_deterministic_and_train_is_not():
    m = make(dropout=0.2)
    idx = tokens((2, 8))
    m.eval()
    a, b = m(idx)[0].data, m(idx)[0].data
    assert a.tobytes() == b.tobytes()
    no_drop = make(dropout=0.0)
    assert no_drop(idx)[0].data.tobytes() == a.tobytes()     # eval == a model without dropout
    m.train()
    c, d = m(idx)[0].data, m(idx)[0].data
    assert not np.array_equal(c, d) and not np.array_equal(c, a)


def test_attention_dropout_active_only_in_train():
    m = make(dropout=0.5)
    attn = m.transformer.h[0].attn
    attn.resid_dropout.p = 0.0                                 # isolate attention-probability dropout
    x = minilora.Tensor(np.random.default_rng(0).standard_normal((2, 8, 16)).astype(np.float32))
    r1, r2 = attn(x).data, attn(x).data
    assert not np.array_equal(r1, r2)
    attn.eval()
    e1, e2 = attn(x).data, attn(x).data
    assert e1.tobytes() == e2.tobytes()
    attn.p = 0.0
    attn.train()
    np.testing.assert_array_equal(attn(x).data, e1)           # p = 0 in train mode == eval


def test_residual_dropout_active_only_in_train():
    m = make(dropout=0.5)
    x = minilora.Tensor(np.random.default_rng(0).standard_normal((2, 8, 16)).astype(np.float32))
    attn, mlp = m.transformer.h[0].attn, m.transformer.h[0].mlp
    attn.p = 0.0                                               # isolate the residual dropout
    for mod in (attn, mlp):
        y = mod(x).data
        assert 0.35 < (y == 0).mean() < 0.65
        mod.eval()
        y = mod(x).data
        assert (y == 0).mean() < 0.01
        mod.train()


def test_dropout_gradients_flow_through_mask():
    m = make(np.float64, dropout=0.3, n_layer=1, n_embd=8, n_head=2, block_size=4)
    idx = tokens((2, 4))
    state = m.rng.bit_generator.state

    def f(*ps):
        m.rng.bit_generator.state = state                      # the same masks on every call
        return m(idx)[0]

    minilora.check_vjp(f, *m.parameters())
