"""Tests for minilora.data: tokenizer, corpora, split, batches, unigram baseline."""
import math
import string

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from minilora.data import (
    CORPORA,
    STDLIB_MODULES,
    ByteTokenizer,
    TokenDataset,
    load_corpus,
    unigram_loss,
)

tok = ByteTokenizer()


# ------------------------------------------------------------------------------------ tokenizer


@given(st.text())
def test_encode_decode_round_trip(text):
    ids = tok.encode(text)
    assert ids.dtype == np.int64 and ids.ndim == 1
    assert ids.size == len(text.encode("utf-8"))
    assert ((ids >= 0) & (ids < tok.vocab_size)).all()
    assert tok.decode(ids) == text
    assert tok.decode(tok.encode(text, dtype=np.uint8)) == text
    assert tok.decode(ids.tolist()) == text


@given(st.binary())
def test_decode_arbitrary_bytes_never_raises(raw):
    out = tok.decode(list(raw))
    assert isinstance(out, str)
    assert tok.decode(np.frombuffer(raw, dtype=np.uint8)) == out


def test_decode_cut_multibyte_character_gives_replacement():
    ids = tok.encode("é")[:1]
    assert tok.decode(ids) == "\ufffd"
    assert tok.vocab_size == 256


@pytest.mark.parametrize("bad", [[256], [-1], [1.0, 2.0], np.array([True]), [[1, 2]], np.array([300], dtype=np.int16)])
def test_decode_rejects_invalid_ids(bad):
    with pytest.raises(ValueError):
        tok.decode(bad)


def test_encode_rejects_non_str():
    with pytest.raises(TypeError):
        tok.encode(b"bytes")


# -------------------------------------------------------------------------------------- corpora


def test_pydoc_corpus_is_english_prose():
    text = load_corpus("pydoc")
    assert len(text.encode("utf-8")) > 300_000
    assert sum(c.isascii() for c in text) / len(text) > 0.99
    assert sum(c in string.ascii_letters for c in text) / len(text) > 0.5
    assert "the" in text.split()
    assert load_corpus("pydoc") is text  # cached


def test_stdlib_corpus_is_python_source():
    text = load_corpus("stdlib")
    assert "def " in text and "class " in text and "import " in text
    assert 500_000 < len(text.encode("utf-8")) < 2_500_000
    assert list(STDLIB_MODULES) == sorted(STDLIB_MODULES)
    for name in STDLIB_MODULES:
        assert f"# ===== {name} =====\n" in text
    assert set(CORPORA) == {"pydoc", "stdlib"}


def test_load_corpus_from_file_and_errors(tmp_path):
    path = tmp_path / "my.txt"
    path.write_text("héllo\nworld\n", encoding="utf-8")
    assert load_corpus(path) == "héllo\nworld\n"
    assert load_corpus(str(path)) == "héllo\nworld\n"
    with pytest.raises(ValueError, match="'pydoc', 'stdlib'"):
        load_corpus("shakespeare")
    with pytest.raises(FileNotFoundError, match="missing.txt"):
        load_corpus(tmp_path / "missing.txt")
    with pytest.raises(ValueError, match="directory"):
        load_corpus(tmp_path)
    (tmp_path / "latin1.txt").write_bytes("café".encode("latin-1"))
    with pytest.raises(ValueError, match="UTF-8"):
        load_corpus(tmp_path / "latin1.txt")


# ---------------------------------------------------------------------------------------- split


def _chunk_ids_corpus(n_chunks=64, per_chunk=50):
    """A corpus whose every token is the index of its chunk: makes the split visible."""
    return np.repeat(np.arange(n_chunks), per_chunk)


def test_split_is_deterministic_disjoint_and_covers_whole_corpus():
    text = load_corpus("pydoc")
    a, b = TokenDataset(text), TokenDataset(text)
    assert np.array_equal(a.train, b.train) and np.array_equal(a.val, b.val)
    assert a.val_chunks == b.val_chunks
    assert a.train.dtype == np.uint8 and a.val.dtype == np.uint8
    assert a.train.size + a.val.size == len(a) == len(text.encode("utf-8"))
    assert 0.07 < a.val.size / len(a) < 0.13
    # both splits cover the corpus: validation chunks in the first and the last quarter
    assert a.val_chunks[0] < 16 and a.val_chunks[-1] >= 48
    # the segments tile [0, N) exactly, without overlap
    ranges = sorted(a.segments("train") + a.segments("val"))
    assert ranges[0][0] == 0 and ranges[-1][1] == len(a)
    assert all(prev[1] == nxt[0] for prev, nxt in zip(ranges, ranges[1:], strict=False))
    rebuilt = np.concatenate([a.tokens[s:e] for s, e in ranges])
    assert np.array_equal(rebuilt, tok.encode(text, dtype=np.uint8))


@given(
    tokens=hnp.arrays(np.int64, st.integers(8, 400), elements=st.integers(0, 255)),
    val_fraction=st.sampled_from([0.0, 0.1, 0.25, 0.5]),
    n_chunks=st.integers(2, 8),
)
def test_split_partitions_any_corpus(tokens, val_fraction, n_chunks):
    ds = TokenDataset(tokens, val_fraction=val_fraction, n_chunks=n_chunks)
    train_idx = np.concatenate([np.arange(s, e) for s, e in ds.segments("train")])
    val_idx = np.concatenate([np.arange(s, e) for s, e in ds.segments("val")] or [np.zeros(0, int)])
    assert np.intersect1d(train_idx, val_idx).size == 0
    assert np.array_equal(np.sort(np.concatenate([train_idx, val_idx])), np.arange(tokens.size))
    assert np.array_equal(ds.train, tokens[train_idx]) and np.array_equal(ds.val, tokens[val_idx])
    assert (ds.val.size == 0) == (val_fraction == 0.0)


def test_dataset_input_kinds_agree():
    text = "a small corpus, with ünïcode, long enough for eight chunks"
    ds_text = TokenDataset(text, n_chunks=8)
    ds_bytes = TokenDataset(text.encode("utf-8"), n_chunks=8)
    ds_ids = TokenDataset(tok.encode(text), n_chunks=8)
    for ds in (ds_bytes, ds_ids):
        assert np.array_equal(ds.train, ds_text.train) and np.array_equal(ds.val, ds_text.val)


def test_dataset_constructor_errors():
    with pytest.raises(ValueError, match="val_fraction"):
        TokenDataset("x" * 100, val_fraction=1.0)
    with pytest.raises(ValueError, match="too short"):
        TokenDataset("abc", n_chunks=64)
    with pytest.raises(ValueError, match=r"\[0, 256\)"):
        TokenDataset(np.array([1, 2, 256] * 30))


# -------------------------------------------------------------------------------------- batches


def test_batches_shape_dtype_and_shift():
    ds = TokenDataset(np.arange(64 * 40) % 251, n_chunks=64)
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        x, y = ds.get_batch(split, batch_size=7, block_size=12, rng=rng)
        assert x.shape == y.shape == (7, 12)
        assert x.dtype == y.dtype == np.int64
        assert np.array_equal(y, (x + 1) % 251)  # each target is the next token of the corpus
        assert np.array_equal(x[:, 1:], y[:, :-1])


def test_windows_stay_inside_one_segment_of_their_split():
    ds = TokenDataset(_chunk_ids_corpus(), n_chunks=64)
    rng = np.random.default_rng(1)
    val = set(ds.val_chunks)
    for split in ("train", "val"):
        block_size = 75 if split == "train" else 49  # train windows cross chunk boundaries
        x, y = ds.get_batch(split, batch_size=256, block_size=block_size, rng=rng)
        for row in np.concatenate([x, y[:, -1:]], axis=1):
            chunks = set(range(int(row.min()), int(row.max()) + 1))  # every chunk the window crosses
            assert all((c in val) == (split == "val") for c in chunks)


def test_same_seed_same_batch_and_fixed_batches():
    ds = TokenDataset(load_corpus("pydoc"))
    x1, y1 = ds.get_batch("train", 4, 32, np.random.default_rng(123))
    x2, y2 = ds.get_batch("train", 4, 32, np.random.default_rng(123))
    x3, _ = ds.get_batch("train", 4, 32, np.random.default_rng(124))
    assert np.array_equal(x1, x2) and np.array_equal(y1, y2)
    assert not np.array_equal(x1, x3)
    f1 = ds.fixed_batches("val", n_batches=3, batch_size=4, block_size=32, seed=7)
    f2 = ds.fixed_batches("val", n_batches=3, batch_size=4, block_size=32, seed=7)
    assert len(f1) == 3
    for (a, b), (c, d) in zip(f1, f2, strict=True):
        assert np.array_equal(a, c) and np.array_equal(b, d)
    assert not np.array_equal(f1[0][0], f1[1][0])


def test_batch_errors():
    ds = TokenDataset(_chunk_ids_corpus(per_chunk=20), n_chunks=64)
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="unknown split"):
        ds.get_batch("test", 2, 4, rng)
    with pytest.raises(ValueError, match="batch_size"):
        ds.get_batch("train", 0, 4, rng)
    with pytest.raises(ValueError, match="block_size"):
        ds.get_batch("train", 2, 0, rng)
    with pytest.raises(ValueError, match="too large for split 'val'"):
        ds.get_batch("val", 2, 20, rng)  # validation segments are single 20-token chunks
    ds.get_batch("val", 2, 19, rng)
    with pytest.raises(TypeError, match="Generator"):
        ds.get_batch("train", 2, 4, 0)
    with pytest.raises(ValueError, match="empty"):
        TokenDataset("x" * 100, val_fraction=0.0).get_batch("val", 1, 1, rng)
    with pytest.raises(ValueError, match="n_batches"):
        ds.fixed_batches("train", 0, 2, 4)


# ------------------------------------------------------------------------------------- baseline


def test_unigram_loss_on_real_text_beats_uniform():
    ds = TokenDataset(load_corpus("pydoc"))
    in_sample = unigram_loss(ds.tokens)
    held_out = unigram_loss(ds.val, reference_tokens=ds.train)
    for loss in (in_sample, held_out):
        assert isinstance(loss, float)
        assert 0 < loss < math.log(256)
    assert in_sample < 4.0


def test_unigram_loss_exact_values():
    assert unigram_loss(np.arange(256)) == pytest.approx(math.log(256))
    # counts: a=3 -> (3+1)/(3+256) ; evaluated on "aaa"
    assert unigram_loss([97, 97, 97]) == pytest.approx(-math.log(4 / 259))
    assert unigram_loss([98], reference_tokens=[]) == pytest.approx(math.log(256))
    with pytest.raises(ValueError):
        unigram_loss([])
    with pytest.raises(ValueError):
        unigram_loss([256])
