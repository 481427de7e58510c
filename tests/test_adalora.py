"""AdaLoRA (lora/adalora.py, lora/rank_allocator.py): the hand-derived op and regulariser against the
composed oracle and central differences, the importance scores, the cubic budget, masking, training
with the allocator, merge/unmerge and the adapter round trip with its masked ranks.

Tolerances: gradients in float64, hand vs composed 1e-10 absolute + 1e-9 relative (two orders of the
same sums), autograd vs central differences with check_grad's defaults (atol 1e-6, rtol 1e-5);
forward vs dense ΔW 1e-12; merge/unmerge round trip 1e-12 relative in float64.
"""
import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minilora import check_grad, no_grad
from minilora import rank as R
from minilora.data import TokenDataset
from minilora.finetune import finetune
from minilora.lora import AdaLoraConfig, AdaLoraModel, LoraConfig, LoRALinear, get_peft_model, load_lora_model
from minilora.lora.adalora import (
    AdaLoraVariant,
    OrthRegFunction,
    adalora_linear,
    adalora_linear_composed,
    orth_regularizer,
    orth_regularizer_composed,
)
from minilora.lora.functional import lora_groups
from minilora.lora.rank_allocator import budget_schedule, importance_update, triplet_scores
from minilora.nn import GPT, GPTConfig, Linear
from minilora.tensor import Tensor
from minilora.train import TrainConfig, train

CFG = GPTConfig(vocab_size=256, block_size=8, n_layer=2, n_head=2, n_embd=12)
DATA = TokenDataset(np.random.default_rng(0).integers(32, 127, 3000).astype(np.uint8).tobytes())


def _close(a, b):
    np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-10)


@st.composite
def adalora_cases(draw):
    """(x, W0, b, A, E, B, scaling, mask, keep, slices) in float64, with or without groups and dropout."""
    rng = np.random.default_rng(draw(st.integers(0, 2**31)))
    lead = draw(st.sampled_from([(3,), (2, 3), (1,)]))
    d_in, r = draw(st.integers(1, 5)), draw(st.integers(1, 3))
    grouped = draw(st.booleans())
    if grouped:
        w = draw(st.integers(1, 3))
        enable = draw(st.sampled_from([[True, False, True], [True, True, True], [False, True, False]]))
        d_out = 3 * w
        slices = [(i * w, (i + 1) * w) for i, e in enumerate(enable) if e]
    else:
        d_out, slices = draw(st.integers(1, 5)), None
    g = 1 if slices is None else len(slices)
    W = d_out if slices is None else sum(b - a for a, b in slices)
    keep = draw(st.sampled_from([1.0, 0.75]))
    mask = (rng.random((*lead, d_in)) < keep).astype(np.float64) if keep < 1 else None
    return (rng.standard_normal((*lead, d_in)), rng.standard_normal((d_out, d_in)), rng.standard_normal(d_out),
            rng.standard_normal((g * r, d_in)), rng.standard_normal((g * r, 1)), rng.standard_normal((W, r)),
            draw(st.floats(-2, 2).filter(lambda s: abs(s) > 0.1)), mask, keep, slices)


@settings(max_examples=60, deadline=None)
@given(adalora_cases(), st.booleans())
def test_adalora_op_hand_equals_composed_equals_central_differences(case, train_bias):
    x, W0, b, A, E, B, s, mask, keep, slices = case

    def grads(fn):
        ts = [Tensor(v.copy(), requires_grad=True) for v in (x, A, E, B, b)]
        bias = ts[4] if train_bias else b
        y = fn(ts[0], W0, bias, ts[1], ts[2], ts[3], s, mask, keep, slices)
        c = np.random.default_rng(1).standard_normal(y.shape)
        y.backward(c)
        return y.data, [t.grad if t.grad is not None else np.zeros_like(t.data) for t in ts]

    y_hand, g_hand = grads(adalora_linear)
    y_comp, g_comp = grads(adalora_linear_composed)
    _close(y_hand, y_comp)
    for gh, gc in zip(g_hand, g_comp, strict=True):
        _close(gh, gc)
    # the dense reference: y = x W0ᵀ + b + x̃ ΔWᵀ with ΔW = s · P diag(λ) Q on each group's rows
    xt = x if mask is None else x * mask / keep
    dW = np.zeros_like(W0)
    for _, a_rows, b_rows, rows in lora_groups(slices, A.shape[0] // (1 if slices is None else len(slices)),
                                                   W0.shape[0]):
        dW[rows] = s * B[b_rows] @ np.diag(E[a_rows, 0]) @ A[a_rows]
    np.testing.assert_allclose(y_hand, x @ W0.T + b + xt @ dW.T, atol=1e-12, rtol=1e-12)
    fn = (lambda x_, A_, E_, B_, b_: adalora_linear(x_, W0, b_, A_, E_, B_, s, mask, keep, slices)) if train_bias \
        else (lambda x_, A_, E_, B_: adalora_linear(x_, W0, b, A_, E_, B_, s, mask, keep, slices))
    check_grad(fn, x, A, E, B, *((b,) if train_bias else ()))


@settings(max_examples=60, deadline=None)
@given(adalora_cases())
def test_orth_regularizer_hand_equals_composed_equals_central_differences(case):
    x, W0, _, A, E, B, s, _, _, slices = case
    r = B.shape[1]
    layer = LoRALinear(Linear(W0.shape[1], W0.shape[0], dtype=np.float64, rng=0), r, 2.0, variant="adalora",
                       enable_lora=None if slices is None else _enable_of(slices, W0.shape[0]), rng=0)
    layer.lora_A.weight.data, layer.lora_B.weight.data = A.copy(), B.copy()
    hand, comp = orth_regularizer([layer]), orth_regularizer_composed([layer])
    _close(hand.data, comp.data)
    hand.backward()
    dA, dB = layer.lora_A.weight.grad, layer.lora_B.weight.grad
    layer.lora_A.weight.grad = layer.lora_B.weight.grad = None
    comp.backward()
    _close(dA, layer.lora_A.weight.grad)
    _close(dB, layer.lora_B.weight.grad)
    check_grad(lambda A_, B_: OrthRegFunction.apply(A_, B_, r=r, slices=slices), A, B)


def _enable_of(slices, d_out):
    w = slices[0][1] - slices[0][0]
    starts = {a for a, _ in slices}
    return [i * w in starts for i in range(d_out // w)]


def test_orth_regularizer_values():
    lay = LoRALinear(Linear(6, 5, dtype=np.float64, rng=0), 3, 2.0, variant="adalora", rng=0)
    Q = np.linalg.qr(np.random.default_rng(0).standard_normal((6, 3)))[0].T      # orthonormal rows
    P = np.linalg.qr(np.random.default_rng(1).standard_normal((5, 3)))[0]        # orthonormal columns
    lay.lora_A.weight.data, lay.lora_B.weight.data = Q, P
    assert abs(orth_regularizer([lay]).item()) < 1e-24
    lay.lora_A.weight.data, lay.lora_B.weight.data = 2 * Q, 0 * P               # QQᵀ = 4I, PᵀP = 0
    assert orth_regularizer([lay]).item() == pytest.approx(3 * 9 + 3 * 1)


# ----------------------------------------------------------------------------- importance and budget

def test_importance_update_follows_the_sensitivity_and_uncertainty_emas():
    w, g = np.array([2.0, -1.0]), np.array([0.5, 3.0])
    ib, ub, s = importance_update(w, g, np.zeros(2), np.zeros(2), 0.8, 0.6)
    np.testing.assert_allclose(ib, [0.2, 0.6])                        # 0.2 · |w g| = 0.2 · [1, 3]
    np.testing.assert_allclose(ub, [0.4 * 0.8, 0.4 * 2.4])            # 0.4 · |I − Ī|
    np.testing.assert_allclose(s, ib * ub)
    ib2, ub2, _ = importance_update(w, 0 * g, ib, ub, 0.8, 0.6)       # a zero gradient: I = 0
    np.testing.assert_allclose(ib2, 0.8 * ib)
    np.testing.assert_allclose(ub2, 0.6 * ub + 0.4 * 0.8 * ib)
    with pytest.raises(ValueError, match="shapes differ"):
        importance_update(w, g[:1], ib, ub, 0.8, 0.6)


def test_triplet_scores_sum_lambda_and_the_vector_means_per_group():
    rng = np.random.default_rng(0)
    r, slices = 2, [(0, 3), (6, 9)]
    sA, sE, sB = rng.random((4, 5)), rng.random((4, 1)), rng.random((6, 2))
    S = triplet_scores(sA, sE, sB, r, slices)
    for i in range(2):
        for j in range(r):
            k = i * r + j
            assert S[k] == pytest.approx(sE[k, 0] + sA[k].mean() + sB[3 * i:3 * i + 3, j].mean())


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 40), st.integers(0, 40), st.integers(0, 10), st.integers(0, 10), st.integers(1, 60),
       st.integers(1, 5))
def test_budget_schedule_is_cubic_from_init_to_target(target, extra, tinit, tfinal, span, deltaT):
    init, T = target + extra, tinit + tfinal + span
    b = [budget_schedule(t, init, target, tinit, tfinal, T, deltaT) for t in range(0, T + 3)]
    budgets = [x for x, _ in b]
    assert all(target <= x <= init for x in budgets)
    assert all(x >= y for x, y in zip(budgets[:-1], budgets[1:], strict=True))                 # never increases
    assert all(b[t] == (init, False) for t in range(tinit + 1))               # warm-up: full budget
    assert budgets[T - tfinal] == target and all(x == target for x in budgets[T - tfinal:])
    for t in range(tinit + 1, T - tfinal):
        frac = 1 - (t - tinit) / (T - tfinal - tinit)
        assert b[t] == (int((init - target) * frac ** 3 + target), t % deltaT == 0)


def test_budget_schedule_example():
    # init 24 triplets, target 8, warm-up 10, final 10 of T = 50: the cubic runs over t = 11..40
    assert budget_schedule(10, 24, 8, 10, 10, 50, 1) == (24, False)
    assert budget_schedule(25, 24, 8, 10, 10, 50, 5) == (10, True)            # 8 + 16 · 0.5³ = 10
    assert budget_schedule(26, 24, 8, 10, 10, 50, 5) == (9, False)
    assert budget_schedule(45, 24, 8, 10, 10, 50, 5) == (8, True)


# ----------------------------------------------------------------------------- the model

def _model(dtype=np.float64, **kw):
    cfg = dict(init_r=4, target_r=2, lora_alpha=8, tinit=2, tfinal=3, total_step=12, deltaT=1,
               enable_lora=[True, False, True])
    cfg.update(kw)
    return get_peft_model(GPT(CFG, dtype=dtype, seed=0), AdaLoraConfig(**cfg))


def test_start_is_zero_update_with_nonzero_factors():
    m = _model()
    assert isinstance(m, AdaLoraModel)
    for _, lay in m.lora_layers():
        assert not lay.lora_E.weight.data.any() and lay.lora_A.weight.data.all() and lay.lora_B.weight.data.all()
        assert lay.lora_A.weight.shape == (8, 12) and lay.lora_E.weight.shape == (8, 1)
        assert lay.lora_B.weight.shape == (24, 4) and lay.scaling == 8 / 4
        assert not lay.delta_weight().any()


def test_forward_matches_dense_delta_and_rank_tools_see_lambda():
    lay = LoRALinear(Linear(6, 9, dtype=np.float64, rng=0), 3, 4.0, variant="adalora", init_lora_weights=False,
                     enable_lora=[True, False, True], rng=1)
    x = np.random.default_rng(2).standard_normal((4, 6))
    dense = x @ (lay.weight.data + lay.delta_weight()).T + lay.bias.data
    np.testing.assert_allclose(lay(x).data, dense, atol=1e-12)
    np.testing.assert_allclose(R.delta_weight(lay), lay.delta_weight(), atol=1e-14)
    U, S, Vh = R.lora_svd(lay)
    np.testing.assert_allclose(U * S @ Vh, lay.delta_weight(), atol=1e-12)
    W0 = lay.weight.data.copy()
    lay.merge()
    with no_grad():
        np.testing.assert_allclose(lay(x).data, dense, atol=1e-12)
    lay.unmerge()
    np.testing.assert_allclose(lay.weight.data, W0, rtol=1e-12, atol=1e-15)


def test_training_loss_carries_the_regulariser_and_eval_does_not():
    m = _model(orth_reg_weight=0.3)
    x = np.random.default_rng(0).integers(0, 256, (2, 8))
    _, with_reg = m(x, x)
    reg = orth_regularizer([lay for _, lay in m.lora_layers()]).item()
    m.eval()
    with no_grad():
        _, plain = m(x, x)
    assert reg > 1 and with_reg.item() == pytest.approx(plain.item() + 0.3 * reg, rel=1e-12)


def test_allocator_keeps_the_budget_and_masks_lambda():
    m = _model()
    x = np.random.default_rng(0).integers(0, 256, (2, 8))
    for lay in (lay for _, lay in m.lora_layers()):
        lay.lora_E.weight.data = np.random.default_rng(3).standard_normal(lay.lora_E.weight.shape)
    _, loss = m(x, x)
    loss.backward()
    pattern = m.rankallocator.mask_to_budget(5)
    assert sum(map(sum, pattern.values())) == 5 and m.rankallocator.budget == 5
    scores = np.concatenate(list(m.rankallocator.triplet_scores().values()))
    kept = np.concatenate([np.array(v) for v in pattern.values()])
    assert scores[kept].min() >= scores[~kept].max()                    # the most important stay
    for _, lay in m.lora_layers():
        assert not lay.lora_E.weight.data[~lay.rank_mask].any() and lay.lora_E.weight.data[lay.rank_mask].all()
    assert m.peft_config.rank_pattern == m.rank_pattern()


def test_finetune_ends_at_the_target_budget_and_round_trips(tmp_path):
    cfg = AdaLoraConfig(init_r=4, target_r=2, lora_alpha=8, tinit=2, tfinal=3, deltaT=1,
                        enable_lora=[True, False, True])
    tc = TrainConfig(max_steps=12, batch_size=2, block_size=8, lr=1e-2, eval_interval=6, eval_batches=1,
                     log_interval=6)
    res = finetune(GPT(CFG, seed=0), DATA, "lora", cfg, tc, log=lambda s: None)
    m = res.model
    assert m.peft_config.total_step == 12
    alloc = m.rank_allocation()
    assert sum(sum(v.values()) for v in alloc.values()) == 2 * 4 and set(alloc["transformer.h.0.attn.c_attn"]) == {
        "q", "v"}
    for _, lay in m.lora_layers():
        assert not lay.lora_E.weight.data[~lay.rank_mask].any()
    x = np.random.default_rng(1).integers(0, 256, (2, 8))
    m.eval()
    ref = m(x)[0].data.copy()
    m.save_adapter(tmp_path / "a")
    m2 = load_lora_model(GPT(CFG, seed=0), tmp_path / "a")
    assert isinstance(m2, AdaLoraModel) and m2.peft_config.rank_pattern == m.rank_pattern()
    assert m2.rank_allocation() == alloc
    m2.eval()
    np.testing.assert_array_equal(m2(x)[0].data, ref)
    m2.merge_adapter()
    np.testing.assert_allclose(m2(x)[0].data, ref, atol=1e-4)


def test_adapter_round_trip_restores_masks_and_refuses_wrong_keys(tmp_path):
    m = _model()
    for _, lay in m.lora_layers():
        lay.lora_E.weight.data = np.random.default_rng(3).standard_normal(lay.lora_E.weight.shape)
    pattern = {n: [i % 3 != 0 for i in range(8)] for n, _ in m.lora_layers()}
    m.apply_rank_pattern(pattern)
    m.save_adapter(tmp_path / "a")
    m2 = load_lora_model(GPT(CFG, dtype=np.float64, seed=0), tmp_path / "a")
    assert m2.rank_pattern() == pattern
    for (_, a), (_, b) in zip(m.lora_layers(), m2.lora_layers(), strict=True):
        np.testing.assert_array_equal(a.lora_E.weight.data, b.lora_E.weight.data)
    # a plain LoRA file has no lora_E: refused by name
    plain = get_peft_model(GPT(CFG, dtype=np.float64, seed=0), LoraConfig(r=4, enable_lora=[True, False, True]))
    plain.save_adapter(tmp_path / "plain")
    with pytest.raises(ValueError, match=r"missing keys \[.*lora_E\.weight"):
        m2.load_adapter(tmp_path / "plain")
    with pytest.raises(ValueError, match="unknown layers"):
        m2.apply_rank_pattern({"transformer.h.9.attn.c_attn": [True] * 8})
    meta = json.loads((tmp_path / "a" / "adapter_config.json").read_text())
    assert meta["peft_type"] == "ADALORA" and meta["variant"] == "adalora" and meta["rank_pattern"] == pattern
    # an AdaLoRA file whose λ key is PEFT's bare `lora_E` (no `.weight`): refused, naming both keys
    from safetensors.numpy import load_file, save_file

    from minilora import io as mio
    raw = load_file(str(tmp_path / "a" / "adapter_model.safetensors"))      # keys with PEFT's base_model.model.
    key = "base_model.model.transformer.h.0.attn.c_attn.lora_E.weight"
    raw[key[:-len(".weight")]] = raw.pop(key)
    save_file(raw, str(tmp_path / "a" / "adapter_model.safetensors"))
    side = json.loads((tmp_path / "a" / "minilora_adapter.json").read_text())
    side["adapter_fingerprint"] = mio.fingerprint(raw)
    (tmp_path / "a" / "minilora_adapter.json").write_text(json.dumps(side))
    with pytest.raises(ValueError, match=r"missing keys \['transformer.h.0.attn.c_attn.lora_E.weight'\], "
                                         r"unexpected keys \['transformer.h.0.attn.c_attn.lora_E'\]"):
        m2.load_adapter(tmp_path / "a")


@pytest.mark.parametrize("kw, match", [
    (dict(target_r=13), "exceeds init_r"), (dict(init_r=0), "init_r"), (dict(beta1=1.0), "beta1"),
    (dict(beta2=0), "beta2"), (dict(deltaT=0), "deltaT"), (dict(orth_reg_weight=-1), "orth_reg_weight"),
    (dict(tinit=5, tfinal=5, total_step=10), "tinit \\+ tfinal"), (dict(variant="lora"), "variant"),
    (dict(rank_pattern={"a": [1, 0]}), "rank_pattern"), (dict(tinit=-1), "tinit"),
])
def test_config_refuses_bad_values_by_name(kw, match):
    with pytest.raises(ValueError, match=match):
        AdaLoraConfig(**kw)


def test_config_round_trips_and_r_is_init_r():
    c = AdaLoraConfig(init_r=6, target_r=3, total_step=100, rank_pattern={"x": [True] * 6})
    assert c.r == 6 and AdaLoraConfig.from_dict(c.to_dict()) == c


def test_allocation_needs_total_step():
    m = _model(total_step=None)
    with pytest.raises(ValueError, match="total_step is None"):
        m.update_and_allocate(1)


# ----------------------------------------------------------------------------- train's callbacks

def test_train_calls_callbacks_after_the_step_with_gradients():
    seen = []

    class Spy:
        def on_step_end(self, step, model):
            seen.append((step, all(p.grad is not None for p in model.parameters() if p.requires_grad)))

    tc = TrainConfig(max_steps=3, batch_size=2, block_size=8, eval_interval=3, eval_batches=1, log_interval=3)
    train(GPT(CFG, seed=0), DATA, tc, log=lambda s: None, callbacks=[Spy()])
    assert seen == [(1, True), (2, True), (3, True)]
    with pytest.raises(TypeError, match="on_step_end"):
        train(GPT(CFG, seed=0), DATA, tc, log=lambda s: None, callbacks=[object()])


def test_plain_lora_model_has_no_callbacks_and_the_variant_refuses_other_inits():
    assert get_peft_model(GPT(CFG, seed=0), LoraConfig(r=2)).training_callbacks() == []
    with pytest.raises(ValueError, match="init_lora_weights"):
        LoRALinear(Linear(4, 4, rng=0), 2, 4, variant="adalora", init_lora_weights="gaussian")
    assert AdaLoraVariant.adapter_keys == ("lora_A.weight", "lora_B.weight", "lora_E.weight")


# ----------------------------------------------------------------------------- CLI and the plot

def test_cli_finetune_adalora_prints_and_plots_the_allocation(tmp_path, capsys):
    from minilora.cli import main
    from minilora.train import save_checkpoint

    base = GPT(GPTConfig(vocab_size=256, block_size=16, n_layer=2, n_head=2, n_embd=16), seed=0)
    save_checkpoint(tmp_path / "base", base, None, 0)
    corpus = tmp_path / "code.txt"
    corpus.write_text("def f(x):\n    return x + 1\n" * 200)
    out = tmp_path / "out"
    code = main(["finetune", "--base", str(tmp_path / "base"), "--corpus", str(corpus), "--variant", "adalora",
                 "--init-r", "4", "--target-r", "2", "--steps", "10", "--batch-size", "2", "--eval-batches", "1",
                 "--out", str(out), "--quiet"])
    text = capsys.readouterr().out
    assert code == 0
    assert "| h.0 | q |" in text and "| h.1 | v |" in text
    assert "budget: 16 triplets at the start, target 8, kept 8" in text
    assert (out / "rank_allocation.png").read_bytes()[:4] == b"\x89PNG" and (out / "adalora.md").exists()
    m = load_lora_model(GPT(base.config, seed=0), out / "adapter")
    assert sum(sum(v.values()) for v in m.rank_allocation().values()) == 8
    assert main(["finetune", "--base", str(tmp_path / "base"), "--full", "--variant", "adalora"]) == 2


def test_plot_rank_allocation_refuses_mismatched_groups(tmp_path):
    from minilora.plots import plot_rank_allocation

    with pytest.raises(ValueError, match="group 'v' has layers"):
        plot_rank_allocation({"q": {"h.0": 1, "h.1": 2}, "v": {"h.0": 3}}, tmp_path / "x.png")
    with pytest.raises(ValueError):
        plot_rank_allocation({}, tmp_path / "x.png")


# ----------------------------------------------------------------------------- the exercise

def _ex_fails(func, hint):
    from minilora.exercises import check

    res = check("adalora_importance", func)
    assert not res.passed and hint in res.message, res.message


def test_exercise_reference_matches_the_allocator_and_mistakes_get_hints():
    from minilora.exercises import EXERCISES, check

    ref = EXERCISES["adalora_importance"].reference
    rng = np.random.default_rng(0)
    args = [rng.standard_normal((3, 4)) for _ in range(2)] + [rng.random((3, 4)) for _ in range(2)]
    for a, b in zip(ref(*args, 0.7, 0.8), importance_update(*args, 0.7, 0.8), strict=True):
        np.testing.assert_array_equal(a, b)
    assert check("adalora_importance", ref).passed

    def signed(w, g, ib, ub, b1, b2):
        i = w * g
        ib = b1 * ib + (1 - b1) * i
        ub = b2 * ub + (1 - b2) * np.abs(i - ib)
        return ib, ub, ib * ub
    _ex_fails(signed, "absolute value of the product")

    def old_mean(w, g, ib, ub, b1, b2):
        i = np.abs(w * g)
        ub = b2 * ub + (1 - b2) * np.abs(i - ib)
        ib = b1 * ib + (1 - b1) * i
        return ib, ub, ib * ub
    _ex_fails(old_mean, "NEW average")

    def raw_score(w, g, ib, ub, b1, b2):
        i = np.abs(w * g)
        ib = b1 * ib + (1 - b1) * i
        ub = b2 * ub + (1 - b2) * np.abs(i - ib)
        return ib, ub, i * ub
    _ex_fails(raw_score, "SMOOTHED sensitivity")

    def swapped(w, g, ib, ub, b1, b2):
        i = np.abs(w * g)
        ib = (1 - b1) * ib + b1 * i
        ub = b2 * ub + (1 - b2) * np.abs(i - ib)
        return ib, ub, ib * ub
    _ex_fails(swapped, "OLD average")
