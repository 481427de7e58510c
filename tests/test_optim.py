"""Optimizers against hand-written float64 references; groups, schedule, clipping, state round trip."""
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from minilora.nn import Parameter
from minilora.optim import SGD, AdamW, clip_grad_norm, cosine_schedule
from minilora.tensor import Tensor

shapes = st.lists(st.integers(1, 4), min_size=1, max_size=3).map(tuple)


def adamw_reference(ws, grads_per_step, lr, betas, eps, wds):
    """Plain float64 AdamW (Loshchilov & Hutter, Algorithm 2 with bias correction), no in-place tricks."""
    b1, b2 = betas
    ws = [w.astype(np.float64).copy() for w in ws]
    ms = [np.zeros_like(w) for w in ws]
    vs = [np.zeros_like(w) for w in ws]
    for t, grads in enumerate(grads_per_step, start=1):
        for i, (w, g, wd) in enumerate(zip(ws, grads, wds, strict=True)):
            w = w - lr * wd * w
            ms[i] = b1 * ms[i] + (1 - b1) * g
            vs[i] = b2 * vs[i] + (1 - b2) * g * g
            m_hat = ms[i] / (1 - b1 ** t)
            v_hat = vs[i] / (1 - b2 ** t)
            ws[i] = w - lr * m_hat / (np.sqrt(v_hat) + eps)
    return ws


@given(shape_list=st.lists(shapes, min_size=1, max_size=3), seed=st.integers(0, 2**16),
       lr=st.floats(1e-4, 1e-1), b1=st.floats(0.0, 0.99), b2=st.floats(0.5, 0.999),
       eps=st.sampled_from([1e-8, 1e-6, 1e-3]), wd=st.floats(0.0, 0.5), n_steps=st.integers(1, 4))
def test_adamw_matches_float64_reference(shape_list, seed, lr, b1, b2, eps, wd, n_steps):
    rng = np.random.default_rng(seed)
    params = [Parameter(rng.normal(size=s)) for s in shape_list]
    w0 = [p.data.copy() for p in params]
    grads = [[rng.normal(size=s) for s in shape_list] for _ in range(n_steps)]
    opt = AdamW(params, lr=lr, betas=(b1, b2), eps=eps, weight_decay=wd)
    for gs in grads:
        for p, g in zip(params, gs, strict=True):
            p.grad = g.copy()
        opt.step()
    wds = [wd if len(s) >= 2 else 0.0 for s in shape_list]    # plain list: decay on matrices only
    ref = adamw_reference(w0, grads, lr, (b1, b2), eps, wds)
    for p, r in zip(params, ref, strict=True):
        np.testing.assert_allclose(p.data, r, rtol=1e-10, atol=1e-12)


def adamw_reference_per_param(ws, grads_per_step, lr, betas, eps, wds):
    """Float64 AdamW as PyTorch runs it: a parameter whose gradient is None in a step is skipped
    (no decay, moments kept) and its own step count t does not advance."""
    b1, b2 = betas
    ws = [w.astype(np.float64).copy() for w in ws]
    ms = [np.zeros_like(w) for w in ws]
    vs = [np.zeros_like(w) for w in ws]
    ts = [0] * len(ws)
    for grads in grads_per_step:
        for i, (g, wd) in enumerate(zip(grads, wds, strict=True)):
            if g is None:
                continue
            ts[i] += 1
            w = ws[i] - lr * wd * ws[i]
            ms[i] = b1 * ms[i] + (1 - b1) * g
            vs[i] = b2 * vs[i] + (1 - b2) * g * g
            m_hat = ms[i] / (1 - b1 ** ts[i])
            v_hat = vs[i] / (1 - b2 ** ts[i])
            ws[i] = w - lr * m_hat / (np.sqrt(v_hat) + eps)
    return ws, ts


def test_adamw_late_parameter_first_update_is_lr():
    """Issue 10: with one global step, a parameter first seen at step 11 moved 0.048 instead of lr = 0.1."""
    early, late = Parameter(np.zeros(3)), Parameter(np.zeros(3))
    opt = AdamW([early, late], lr=0.1, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
    for step in range(1, 12):
        early.grad = np.ones(3)
        late.grad = np.ones(3) if step == 11 else None
        opt.step()
    np.testing.assert_allclose(late.data, -0.1, rtol=1e-7)        # lr * 1 / (1 + 1e-8)
    assert opt.step_count == 11 and opt.param_steps.tolist() == [11, 1]


@given(shape_list=st.lists(shapes, min_size=1, max_size=3), seed=st.integers(0, 2**16),
       lr=st.floats(1e-4, 1e-1), b1=st.floats(0.0, 0.99), b2=st.floats(0.5, 0.999), wd=st.floats(0.0, 0.5),
       present=st.lists(st.lists(st.booleans(), min_size=3, max_size=3), min_size=1, max_size=8))
def test_adamw_per_parameter_steps_match_reference(shape_list, seed, lr, b1, b2, wd, present):
    """Any pattern of missing gradients: each parameter is bias-corrected with its own update count."""
    rng = np.random.default_rng(seed)
    params = [Parameter(rng.normal(size=s)) for s in shape_list]
    w0 = [p.data.copy() for p in params]
    grads = [[rng.normal(size=s) if row[i] else None for i, s in enumerate(shape_list)] for row in present]
    opt = AdamW(params, lr=lr, betas=(b1, b2), eps=1e-8, weight_decay=wd)
    for gs in grads:
        for p, g in zip(params, gs, strict=True):
            p.grad = None if g is None else g.copy()
        opt.step()
    wds = [wd if len(s) >= 2 else 0.0 for s in shape_list]
    ref, ts = adamw_reference_per_param(w0, grads, lr, (b1, b2), 1e-8, wds)
    order = [i for i in range(len(params)) if len(shape_list[i]) >= 2] + \
            [i for i in range(len(params)) if len(shape_list[i]) < 2]   # group order: decay, then no decay
    assert opt.param_steps.tolist() == [ts[i] for i in order]
    assert opt.step_count == len(grads)
    for p, r in zip(params, ref, strict=True):
        np.testing.assert_allclose(p.data, r, rtol=1e-10, atol=1e-12)


@given(seed=st.integers(0, 1000), lr=st.floats(1e-3, 1.0), mu=st.floats(0.0, 0.99), wd=st.floats(0.0, 0.1),
       present=st.lists(st.booleans(), min_size=1, max_size=8))
def test_sgd_momentum_late_or_missing_gradients_match_reference(seed, lr, mu, wd, present):
    """A parameter without a gradient keeps its weights and buffer; its first buffer is its first gradient."""
    rng = np.random.default_rng(seed)
    p = Parameter(rng.normal(size=(3, 2)))
    w, buf = p.data.copy(), None
    opt = SGD([p], lr=lr, momentum=mu, weight_decay=wd)
    for has_grad in present:
        g = rng.normal(size=(3, 2))
        p.grad = g.copy() if has_grad else None
        opt.step()
        if has_grad:
            d = g + wd * w
            buf = d if buf is None else mu * buf + d               # PyTorch: buf = clone(d) the first time
            w = w - lr * buf
    np.testing.assert_allclose(p.data, w, rtol=1e-12, atol=1e-12)


def test_sgd_momentum_late_parameter_first_update_is_lr_times_grad():
    early, late = Parameter(np.zeros(2)), Parameter(np.zeros(2))
    opt = SGD([early, late], lr=0.1, momentum=0.9)
    for step in range(1, 12):
        early.grad = np.ones(2)
        late.grad = np.full(2, 2.0) if step == 11 else None
        opt.step()
    np.testing.assert_allclose(late.data, -0.2, rtol=1e-12)


def test_adamw_float32_stays_float32_and_close_to_reference():
    rng = np.random.default_rng(0)
    p = Parameter(rng.normal(size=(5, 7)).astype(np.float32))
    w0 = p.data.copy()
    grads = [[rng.normal(size=(5, 7)).astype(np.float32)] for _ in range(3)]
    opt = AdamW([p], lr=1e-2)
    for (g,) in grads:
        p.grad = g
        opt.step()
    assert p.data.dtype == np.float32 and opt.state[0]["exp_avg"].dtype == np.float32
    ref = adamw_reference([w0], [[g.astype(np.float64)] for (g,) in grads], 1e-2, (0.9, 0.95), 1e-8, [0.1])
    np.testing.assert_allclose(p.data, ref[0], rtol=1e-5, atol=1e-6)


def test_adamw_decays_only_matrices_by_default():
    W = Parameter(np.ones((3, 4)))
    b = Parameter(np.ones(4))
    opt = AdamW([W, b], lr=0.1, weight_decay=0.5)
    assert [g["weight_decay"] for g in opt.param_groups] == [0.5, 0.0]
    W.grad, b.grad = np.zeros((3, 4)), np.zeros(4)        # zero gradient: only the decay moves weights
    opt.step()
    np.testing.assert_allclose(W.data, 1 - 0.1 * 0.5)
    np.testing.assert_array_equal(b.data, 1.0)


def test_skips_frozen_and_gradless_params():
    a = Parameter(np.ones((2, 2)))
    frozen = Parameter(np.ones((2, 2)), requires_grad=False)
    nograd = Parameter(np.ones((2, 2)))
    opt = AdamW([a, frozen, nograd], lr=0.1)
    a.grad = np.ones((2, 2))
    frozen.grad = np.ones((2, 2))
    opt.step()
    assert not np.array_equal(a.data, 1.0)
    np.testing.assert_array_equal(frozen.data, 1.0)
    np.testing.assert_array_equal(nograd.data, 1.0)
    assert not opt.state[1]["exp_avg"].any() and not opt.state[2]["exp_avg"].any()


def test_param_groups_with_own_lr_and_set_lr():
    a, b = Parameter(np.zeros(3)), Parameter(np.zeros(3))
    opt = SGD([{"params": [a]}, {"params": [b], "lr": 0.5}], lr=0.1)
    assert [g["lr"] for g in opt.param_groups] == [0.1, 0.5]
    a.grad, b.grad = np.ones(3), np.ones(3)
    opt.step()
    np.testing.assert_allclose(a.data, -0.1)
    np.testing.assert_allclose(b.data, -0.5)
    opt.set_lr(0.05)                                    # half the default lr: every group halves
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.05, 0.25])
    assert [g["base_lr"] for g in opt.param_groups] == [0.1, 0.5]
    with pytest.raises(ValueError, match="unknown keys"):
        SGD([{"params": [a], "momentun": 0.9}], lr=0.1)


@given(seed=st.integers(0, 1000), lr=st.floats(1e-3, 1.0), mu=st.floats(0.0, 0.99), wd=st.floats(0.0, 0.1))
def test_sgd_momentum_matches_reference(seed, lr, mu, wd):
    rng = np.random.default_rng(seed)
    p = Parameter(rng.normal(size=(3, 2)))
    w = p.data.copy()
    buf = np.zeros_like(w)
    opt = SGD([p], lr=lr, momentum=mu, weight_decay=wd)
    for _ in range(4):
        g = rng.normal(size=(3, 2))
        p.grad = g.copy()
        opt.step()
        d = g + wd * w
        buf = mu * buf + d
        w = w - lr * buf
    np.testing.assert_allclose(p.data, w, rtol=1e-12, atol=1e-12)


def test_cosine_schedule_endpoints_and_monotonicity():
    f = lambda s: cosine_schedule(s, 1e-3, 1e-4, 10, 100)  # noqa: E731
    assert f(0) == 0.0
    assert f(10) == pytest.approx(1e-3)
    assert f(100) == pytest.approx(1e-4)
    assert f(150) == pytest.approx(1e-4)
    lrs = [f(s) for s in range(0, 121)]
    assert all(x <= y for x, y in zip(lrs[:11], lrs[1:11], strict=False))      # warm-up rises
    assert all(x >= y for x, y in zip(lrs[10:], lrs[11:], strict=False))       # decay falls, then flat
    assert all(1e-4 <= x <= 1e-3 for x in lrs[10:])
    with pytest.raises(ValueError):
        cosine_schedule(5, 1e-4, 1e-3, 10, 100)
    with pytest.raises(ValueError):
        cosine_schedule(5, 1e-3, 1e-4, 100, 10)


@given(shape_list=st.lists(shapes, min_size=1, max_size=3), seed=st.integers(0, 1000),
       max_norm=st.floats(0.01, 10.0), scale=st.floats(0.01, 100.0))
def test_clip_grad_norm(shape_list, seed, max_norm, scale):
    rng = np.random.default_rng(seed)
    params = [Parameter(np.zeros(s, dtype=np.float32)) for s in shape_list]
    for p in params:
        p.grad = (scale * rng.normal(size=p.shape)).astype(np.float32)
    before = [p.grad.copy() for p in params]
    expected = math.sqrt(sum(float(np.sum(g.astype(np.float64) ** 2)) for g in before))
    total = clip_grad_norm(params + params[:1], max_norm)         # a duplicate counts once
    assert isinstance(total, float)
    assert total == pytest.approx(expected, rel=1e-5)
    after = math.sqrt(sum(float(np.sum(p.grad.astype(np.float64) ** 2)) for p in params))
    if expected <= max_norm:
        for p, g in zip(params, before, strict=True):
            np.testing.assert_array_equal(p.grad, g)
    else:
        assert after <= max_norm * (1 + 1e-6)
        assert after == pytest.approx(max_norm, rel=1e-4)


def test_clip_grad_norm_large_float32_does_not_overflow():
    """Issue 10: 100 float32 entries of 1e20 (norm 1e21) returned inf and clipped nothing."""
    p = Parameter(np.zeros(100, dtype=np.float32))
    p.grad = np.full(100, 1e20, dtype=np.float32)
    total = clip_grad_norm([p], 1.0)
    assert total == pytest.approx(1e21, rel=1e-6, abs=0)
    assert p.grad.dtype == np.float32
    assert np.linalg.norm(p.grad.astype(np.float64)) == pytest.approx(1.0, rel=1e-6, abs=0)


@pytest.mark.parametrize("dtype,value,expected", [(np.float32, 1e-30, 1e-29), (np.float32, 1e-23, 1e-22),
                                                  (np.float64, 1e-200, 1e-199), (np.float64, 1e200, 1e201)])
def test_clip_grad_norm_tiny_and_huge_squares(dtype, value, expected):
    """Squares that underflow (or overflow) in the gradient's dtype must not give a norm of 0 (or inf)."""
    p = Parameter(np.zeros(100, dtype=dtype))
    p.grad = np.full(100, value, dtype=dtype)
    before = p.grad.copy()
    total = clip_grad_norm([p], 1e300 if value < 1 else 1.0)
    assert total == pytest.approx(expected, rel=1e-6, abs=0)
    if value < 1:
        np.testing.assert_array_equal(p.grad, before)      # below max_norm: untouched


def _fsum_norm(arrays):
    return math.sqrt(math.fsum(float(x) ** 2 for a in arrays for x in a.astype(np.float64).ravel()))


@given(shape_list=st.lists(shapes, min_size=1, max_size=3), seed=st.integers(0, 1000),
       exponent=st.floats(-30.0, 30.0), dtype=st.sampled_from([np.float32, np.float64]),
       max_norm=st.floats(0.01, 10.0))
def test_clip_grad_norm_any_magnitude(shape_list, seed, exponent, dtype, max_norm):
    """Magnitudes 1e-30 to 1e30 in float32 and float64: the norm matches an exactly summed float64
    reference to 1e-6, and gradients above max_norm end with norm max_norm."""
    rng = np.random.default_rng(seed)
    params = [Parameter(np.zeros(s, dtype=dtype)) for s in shape_list]
    for p in params:
        p.grad = (10.0 ** exponent * rng.normal(size=p.shape)).astype(dtype)
    expected = _fsum_norm([p.grad for p in params])
    total = clip_grad_norm(params, max_norm)
    assert total == pytest.approx(expected, rel=1e-6, abs=0)
    after = _fsum_norm([p.grad for p in params])
    if expected > max_norm:
        assert after == pytest.approx(max_norm * expected / (expected + 1e-6), rel=1e-6, abs=0)
    elif expected > 0:
        assert after == expected


def test_clip_grad_norm_nonfinite_clips_nothing():
    a, b = Parameter(np.zeros(3)), Parameter(np.zeros(3))
    a.grad, b.grad = np.array([1.0, np.inf, 2.0]), np.ones(3)
    assert clip_grad_norm([a, b], 1.0) == math.inf
    b.grad = np.array([np.nan, 0.0, 0.0])
    assert math.isnan(clip_grad_norm([b, a], 1.0))
    np.testing.assert_array_equal(a.grad, [1.0, np.inf, 2.0])


def _make_params(rng):
    return [Parameter(rng.normal(size=(4, 3)).astype(np.float32)), Parameter(rng.normal(size=3).astype(np.float32))]


@pytest.mark.parametrize("make_opt", [lambda ps: AdamW(ps, lr=1e-2),
                                      lambda ps: SGD(ps, lr=1e-2, momentum=0.9)])
def test_state_dict_round_trip_makes_next_step_identical(make_opt):
    rng = np.random.default_rng(0)
    pa = _make_params(rng)
    opt_a = make_opt(pa)
    for _ in range(3):
        for p in pa:
            p.grad = rng.normal(size=p.shape).astype(np.float32)
        opt_a.step()
    sd = opt_a.state_dict()
    pb = [Parameter(p.data.copy()) for p in pa]
    opt_b = make_opt(pb)
    opt_b.load_state_dict(sd)
    assert opt_b.step_count == opt_a.step_count
    grads = [rng.normal(size=p.shape).astype(np.float32) for p in pa]
    for ps, opt in ((pa, opt_a), (pb, opt_b)):
        for p, g in zip(ps, grads, strict=True):
            p.grad = g.copy()
        opt.step()
    for a, b in zip(pa, pb, strict=True):
        np.testing.assert_array_equal(a.data, b.data)
    assert opt_a.state_bytes() == sum(v.nbytes for k, v in sd.items() if k.startswith("param."))


def test_per_parameter_steps_survive_state_dict_and_checkpoint(tmp_path):
    """The step counts are in state_dict, survive an .npz file (what checkpoints hold) and a resumed run
    continues exactly."""
    rng = np.random.default_rng(1)
    pa = _make_params(rng)
    opt_a = AdamW(pa, lr=1e-2)
    for step in range(4):
        pa[0].grad = rng.normal(size=pa[0].shape).astype(np.float32)
        pa[1].grad = rng.normal(size=pa[1].shape).astype(np.float32) if step == 3 else None
        opt_a.step()
    assert opt_a.param_steps.tolist() == [4, 1]
    np.savez(tmp_path / "optim.npz", **opt_a.state_dict())
    pb = [Parameter(p.data.copy()) for p in pa]
    opt_b = AdamW(pb, lr=1e-2)
    with np.load(tmp_path / "optim.npz") as f:
        opt_b.load_state_dict(dict(f))
    assert opt_b.param_steps.tolist() == [4, 1] and opt_b.step_count == 4
    grads = [rng.normal(size=p.shape).astype(np.float32) for p in pa]
    for ps, opt in ((pa, opt_a), (pb, opt_b)):
        for p, g in zip(ps, grads, strict=True):
            p.grad = g.copy()
        opt.step()
    for a, b in zip(pa, pb, strict=True):
        np.testing.assert_array_equal(a.data, b.data)


def test_load_older_state_dict_with_one_global_step():
    """A state dict without "param_steps" (before per-parameter steps) gives every parameter its "step",
    so the next update is the one the old code would have made."""
    rng = np.random.default_rng(2)
    params = _make_params(rng)
    opt = AdamW(params, lr=1e-2)
    for _ in range(3):
        for p in params:
            p.grad = rng.normal(size=p.shape).astype(np.float32)
        opt.step()
    old = {k: v for k, v in opt.state_dict().items() if k != "param_steps"}
    old["step"] = np.array(7, dtype=np.int64)
    fresh = AdamW([Parameter(p.data.copy()) for p in params], lr=1e-2)
    fresh.load_state_dict(old)
    assert fresh.param_steps.tolist() == [7, 7] and fresh.step_count == 7
    bad = dict(opt.state_dict(), param_steps=np.array([1.5, 2.0]))
    with pytest.raises(ValueError, match="param_steps must be integers"):
        fresh.load_state_dict(bad)
    with pytest.raises(ValueError, match="param_steps"):
        fresh.load_state_dict(dict(opt.state_dict(), param_steps=np.array([3, 3, 3])))


def test_load_state_dict_rejects_mismatches():
    rng = np.random.default_rng(0)
    opt = AdamW(_make_params(rng))
    sd = opt.state_dict()
    bad = dict(sd)
    bad["param.0.exp_avg"] = np.zeros((5, 3), dtype=np.float32)
    with pytest.raises(ValueError, match=r"param\.0\.exp_avg.*\(4, 3\).*\(5, 3\)"):
        opt.load_state_dict(bad)
    missing = {k: v for k, v in sd.items() if k != "step"}
    with pytest.raises(KeyError, match="missing keys \\['step'\\]"):
        opt.load_state_dict(missing)


def test_tied_parameter_updated_once_per_step():
    w = Parameter(np.zeros(3))
    opt = SGD([w, w], lr=1.0)
    w.grad = np.ones(3)
    opt.step()
    np.testing.assert_array_equal(w.data, -1.0)
    assert len(opt.state) == 1

    from minilora.nn import GPT, GPTConfig
    m = GPT(GPTConfig(block_size=8, n_layer=1, n_head=2, n_embd=8), dtype=np.float64)
    assert m.lm_head.weight is m.transformer.wte.weight
    ref = GPT(GPTConfig(block_size=8, n_layer=1, n_head=2, n_embd=8), dtype=np.float64)
    x = np.arange(16).reshape(2, 8) % 7
    opt = AdamW(m.parameters() + [m.lm_head.weight], lr=1e-2)      # the tied weight listed twice
    opt_ref = AdamW(ref.parameters(), lr=1e-2)
    for model, o in ((m, opt), (ref, opt_ref)):
        _, loss = model(x, x)
        loss.backward()
        o.step()
    for (n, a), (_, b) in zip(m.named_parameters(), ref.named_parameters(), strict=True):
        np.testing.assert_array_equal(a.data, b.data, err_msg=n)


def test_bad_arguments():
    with pytest.raises(ValueError):
        AdamW([], lr=1e-3)
    with pytest.raises(TypeError):
        AdamW([np.zeros(3)], lr=1e-3)
    with pytest.raises(ValueError):
        AdamW([Parameter(np.zeros(3))], betas=(1.0, 0.9))
    with pytest.raises(ValueError):
        SGD([Parameter(np.zeros(3))], lr=-1.0)
    with pytest.raises(ValueError):
        clip_grad_norm([Parameter(np.zeros(3))], 0.0)
    t = Tensor(np.zeros(2), requires_grad=True)
    SGD([t], lr=0.1).zero_grad()
