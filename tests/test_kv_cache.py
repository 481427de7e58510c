"""The KV cache of GPT.generate: same tokens and logits as recomputing the context, with and without
LoRA (merged and unmerged), and clear errors when a cache does not fit."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minilora.lora import LoraConfig, get_peft_model
from minilora.nn import GPT, GPTConfig
from minilora.nn.kv_cache import KVCache
from minilora.tensor import no_grad


def _model(n_layer=2, n_head=2, n_embd=16, block_size=12, vocab=37, seed=0, dtype=np.float32):
    return GPT(GPTConfig(vocab_size=vocab, block_size=block_size, n_layer=n_layer, n_head=n_head, n_embd=n_embd),
               dtype=dtype, seed=seed)


@settings(max_examples=12, deadline=None)
@given(n_head=st.sampled_from([1, 2, 4]), n_layer=st.integers(1, 3), batch=st.integers(1, 3),
       prompt=st.integers(1, 12), new=st.integers(0, 20), seed=st.integers(0, 100))
def test_greedy_decode_is_identical_with_and_without_cache(n_head, n_layer, batch, prompt, new, seed):
    """Token for token, including past block_size (the window slides and the cache is refilled)."""
    m = _model(n_layer=n_layer, n_head=n_head, seed=seed)
    idx = np.random.default_rng(seed).integers(0, 37, (batch, prompt))
    cached = m.generate(idx, new, temperature=0, use_cache=True)
    plain = m.generate(idx, new, temperature=0, use_cache=False)
    assert cached.shape == (batch, prompt + new)
    np.testing.assert_array_equal(cached, plain)


def test_sampling_with_the_cache_gives_the_same_text():
    m = _model()
    idx = np.array([[1, 2, 3]])
    np.testing.assert_array_equal(m.generate(idx, 25, temperature=0.9, top_k=5, seed=7),
                                  m.generate(idx, 25, temperature=0.9, top_k=5, seed=7, use_cache=False))


@pytest.mark.parametrize("dtype,tol", [(np.float32, 2e-6), (np.float64, 1e-13)])
@pytest.mark.parametrize("prefill", [1, 5, 12])
def test_cached_logits_equal_the_full_forward(dtype, tol, prefill):
    """Logits of positions fed one at a time after a prefill == one forward of the whole sequence."""
    m = _model(dtype=dtype).eval()
    x = np.random.default_rng(1).integers(0, 37, (2, 12))
    with no_grad():
        full = m(x)[0].data
        cache = KVCache.for_model(m, 2)
        rows = [m(x[:, :prefill], kv_cache=cache)[0].data]
        for t in range(prefill, 12):
            rows.append(m(x[:, t:t + 1], kv_cache=cache)[0].data)
    got = np.concatenate(rows, axis=1)
    assert cache.length == 12
    np.testing.assert_allclose(got, full, rtol=0, atol=tol * np.abs(full).max())


@pytest.mark.parametrize("merge", [False, True])
def test_lora_models_work_with_the_cache(merge):
    """Unmerged: the adapter's term is in the cached K, V; merged: plain weights. Both decode as
    without the cache, and merged == unmerged to float32 rounding of the logits."""
    m = get_peft_model(_model(), LoraConfig(r=4, lora_alpha=8, target_modules=["c_attn", "c_fc"]))
    rng = np.random.default_rng(2)
    for name, p in m.named_parameters():
        if "lora_B" in name:
            p.data = (0.3 * rng.standard_normal(p.shape)).astype(p.dtype)   # a non-zero update
    idx = rng.integers(0, 37, (2, 3))
    unmerged = m.generate(idx, 15, temperature=0)
    m.eval()
    with no_grad():
        ref = m(unmerged[:, :12])[0].data
    if merge:
        m.merge_adapter()
    out = m.generate(idx, 15, temperature=0)
    np.testing.assert_array_equal(out, m.generate(idx, 15, temperature=0, use_cache=False))
    np.testing.assert_array_equal(out, unmerged)
    with no_grad():
        cache = KVCache.for_model(m, 2)
        m(unmerged[:, :4], kv_cache=cache)
        last = [m(unmerged[:, t:t + 1], kv_cache=cache)[0].data for t in range(4, 12)]
    np.testing.assert_allclose(np.concatenate(last, 1), ref[:, 4:], atol=1e-5 * np.abs(ref).max(), rtol=0)


def test_cache_size_is_two_layers_batch_time_channels():
    m = _model(n_layer=3, n_embd=16, block_size=12)
    c = KVCache.for_model(m, 5)
    assert c.nbytes() == 2 * 3 * 5 * 12 * 16 * 4
    assert (c.length, c.capacity) == (0, 12)


def test_cache_errors_are_clear():
    m = _model().eval()
    x = np.zeros((2, 4), dtype=np.int64)
    with pytest.raises(RuntimeError, match="no_grad"):
        m(x, kv_cache=KVCache.for_model(m, 2))
    with no_grad():
        with pytest.raises(ValueError, match="batch 1"):
            m(x, kv_cache=KVCache.for_model(m, 1))
        c = KVCache.for_model(m, 2)
        m(np.zeros((2, 10), dtype=np.int64), kv_cache=c)
        with pytest.raises(ValueError, match="block_size 12"):
            m(x, kv_cache=c)
    with pytest.raises(ValueError, match="sizes must be >= 1"):
        KVCache(1, 1, 4, 0, 8)
    with pytest.raises(TypeError, match="use_cache"):
        m.generate(x, 2, use_cache="yes")


def test_chunks_after_the_prefill_are_masked_causally():
    """Several new positions at once (offset > 0, Tq > 1) see only the cache and their own past."""
    m = _model().eval()
    x = np.random.default_rng(3).integers(0, 37, (2, 12))
    with no_grad():
        full = m(x)[0].data
        cache = KVCache.for_model(m, 2)
        got = np.concatenate([m(x[:, a:b], kv_cache=cache)[0].data for a, b in ((0, 2), (2, 5), (5, 12))], 1)
    np.testing.assert_allclose(got, full, rtol=0, atol=2e-6 * np.abs(full).max())


def test_cached_generation_does_not_grow_the_mask_cache():
    """The causal-mask cache is keyed by T; a cached decode must not add one mask per context length."""
    from minilora.ops import fused_attention

    m = _model(block_size=64)
    m.generate(np.array([[1, 2]]), 3, temperature=0)
    before = len(fused_attention._CAUSAL)
    m.generate(np.array([[1, 2]]), 40, temperature=0)
    assert len(fused_attention._CAUSAL) == before


def test_prompt_tuning_models_generate_without_the_cache():
    """minilora.peft models call GPT.generate with their own forward (virtual tokens take positions):
    the cache is skipped for them, and use_cache=True gives exactly use_cache=False's tokens."""
    from minilora.peft import PromptTuningConfig
    from minilora.peft import get_peft_model as get_baseline_model

    m = get_baseline_model(_model(block_size=24), PromptTuningConfig(num_virtual_tokens=3))
    idx = np.array([[1, 2, 3]])
    out = m.generate(idx, 6, temperature=0)
    assert out.shape == (1, 9)
    np.testing.assert_array_equal(out, m.generate(idx, 6, temperature=0, use_cache=False))
