"""GPT-2's byte-level BPE (issue 12, item 4) and `--base` on a Hugging Face folder in the CLI (item 3).

The tokenizer files are built here (a tiny vocab.json + merges.txt in GPT-2's format); `GPT2Tokenizer`
(the `tokenizers` library) is checked against the pure-Python merge loop `bpe_word` and against
tokens worked out by hand. Faults covered: a GPT-2 folder could not be tokenized (no BPE) and the CLI
could not read such a folder.
"""
import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minilora.bpe import GPT2Tokenizer, bpe_word, bytes_to_unicode, read_merges
from minilora.cli import main
from minilora.nn import GPT, GPTConfig

MERGES = [("l", "l"), ("h", "e"), ("he", "ll"), ("Ġ", "w"), ("o", "r"), ("Ġw", "or"), ("Ġwor", "l"), ("Ġworl", "d"),
          ("hell", "o"), ("Ġ", "t"), ("Ġt", "he"), ("e", "r")]


def bpe_folder(path):
    """vocab.json (the 256 byte symbols in byte order, then one id per merge, then <|endoftext|>) + merges.txt."""
    path.mkdir(parents=True, exist_ok=True)
    b2u = bytes_to_unicode()
    vocab = {b2u[b]: b for b in range(256)}
    for a, b in MERGES:
        vocab[a + b] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    (path / "vocab.json").write_text(json.dumps(vocab))
    (path / "merges.txt").write_text("#version: 0.2\n" + "\n".join(f"{a} {b}" for a, b in MERGES) + "\n")
    return path


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    return GPT2Tokenizer(bpe_folder(tmp_path_factory.mktemp("bpe")))


def test_bytes_to_unicode_is_gpt2_s_table():
    t = bytes_to_unicode()
    assert len(set(t.values())) == 256
    assert t[ord(" ")] == "Ġ" and t[ord("\n")] == "Ċ" and t[0] == "Ā" and t[ord("a")] == "a" and t[0xE9] == "é"


def test_hand_worked_example(tok):
    # "hello world" -> words "hello", " world" -> bytes mapped: "hello", "Ġworld" -> merges by rank:
    # hello: l+l (0), h+e (1), he+ll (2), hell+o (8) = ["hello"]; Ġworld: o+r (4), Ġ+w (3), Ġw+or (5), +l, +d
    assert tok.tokens("hello world") == ["hello", "Ġworld"]
    assert tok.encode("hello world").tolist() == [256 + 8, 256 + 7]
    assert tok.tokens("the other") == ["t", "he", "Ġ", "o", "t", "he", "r"]   # "er" (rank 11) loses to "he" (1)
    assert tok.tokens("é") == ["Ã", "©"]                                 # two UTF-8 bytes, two symbols
    assert tok.vocab_size == 256 + len(MERGES) + 1 and tok.eot_id == 256 + len(MERGES)
    assert tok.encode("a<|endoftext|>b").tolist() == [97, tok.eot_id, 98]


@settings(max_examples=60, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("helo wrdt\n!é😀'1")), max_size=40))
def test_tokenizers_equals_the_reference_merge_loop_and_round_trips(tok, text):
    from tokenizers import pre_tokenizers

    ranks = read_merges(tok.path / "merges.txt")
    words = [w for w, _ in pre_tokenizers.ByteLevel(add_prefix_space=False).pre_tokenize_str(text)]
    assert tok.tokens(text) == [s for w in words for s in bpe_word(w, ranks)]
    assert tok.decode(tok.encode(text)) == text


def test_tokenizer_faults_are_named(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="merges.txt"):
        (tmp_path / "vocab.json").write_text("{}")
        GPT2Tokenizer(tmp_path)
    with pytest.raises(ValueError, match=r"token ids must lie in \[0, 269\)"):
        GPT2Tokenizer(bpe_folder(tmp_path / "ok")).decode([269])
    monkeypatch.setitem(__import__("sys").modules, "tokenizers", None)
    with pytest.raises(ImportError, match=r"minilora\[gpt2\]"):
        GPT2Tokenizer(tmp_path / "ok")


@pytest.fixture
def hf_gpt2_folder(tmp_path):
    """A tiny GPT-2 folder in Hugging Face's format with its BPE files, written by save_pretrained."""
    folder = bpe_folder(tmp_path / "gpt2")
    GPT(GPTConfig(vocab_size=269, block_size=32, n_layer=1, n_head=2, n_embd=16)).save_pretrained(folder)
    return folder


def test_cli_sample_and_finetune_accept_a_hugging_face_folder(hf_gpt2_folder, tmp_path, capsys):
    assert main(["sample", "--base", str(hf_gpt2_folder), "--prompt", "hello world", "--max-new-tokens", "4",
                 "--temperature", "0"]) == 0
    assert capsys.readouterr().out.startswith("hello world")
    corpus = tmp_path / "c.txt"
    corpus.write_text("hello world, the other world. " * 200)
    out = tmp_path / "ft"
    assert main(["finetune", "--base", str(hf_gpt2_folder), "--corpus", str(corpus), "--out", str(out),
                 "--steps", "2", "--batch-size", "2", "--eval-batches", "1", "--block-size", "16", "--quiet",
                 "--target-modules", "c_attn"]) == 0
    assert (out / "adapter" / "adapter_model.safetensors").exists()
    assert main(["sample", "--base", str(hf_gpt2_folder), "--adapter", str(out / "adapter"), "--prompt", "the",
                 "--max-new-tokens", "3"]) == 0
    assert main(["pretrain", "--base", str(hf_gpt2_folder), "--corpus", str(corpus), "--out", str(tmp_path / "pt"),
                 "--steps", "2", "--batch-size", "2", "--block-size", "16", "--eval-batches", "1",
                 "--sample-tokens", "3", "--quiet"]) == 0
    assert "uniform ln 269 = 5.595" in capsys.readouterr().out
    assert main(["sample", "--base", str(tmp_path / "nowhere")]) == 2
    assert "no checkpoint in" in capsys.readouterr().err


def test_a_folder_without_its_tokenizer_is_refused(tmp_path, capsys):
    GPT(GPTConfig(vocab_size=300, block_size=8, n_layer=1, n_head=2, n_embd=8)).save_pretrained(tmp_path)
    assert main(["sample", "--base", str(tmp_path)]) == 2
    assert "vocab.json and merges.txt" in capsys.readouterr().err
    GPT(GPTConfig(vocab_size=256, block_size=8, n_layer=1, n_head=2, n_embd=8)).save_pretrained(tmp_path / "b")
    assert main(["sample", "--base", str(tmp_path / "b"), "--max-new-tokens", "2"]) == 0   # bytes: no BPE needed


def test_token_dataset_holds_a_large_vocabulary():
    from minilora.data import TokenDataset, unigram_loss

    ids = np.arange(50257).repeat(2)
    ds = TokenDataset(ids, vocab_size=50257)
    assert ds.tokens.dtype == np.uint16 and len(ds) == ids.size and ds.train.max() <= 50256
    # every id twice: p = (2 + 1) / (2V + V) = 1/V for each, so the in-sample loss is ln V exactly
    assert unigram_loss(ids, vocab_size=50257) == pytest.approx(np.log(50257), rel=1e-12)
    with pytest.raises(TypeError, match="encode the text"):
        TokenDataset("text", vocab_size=50257)
    with pytest.raises(ValueError, match=r"\[0, 300\)"):
        TokenDataset(np.array([1, 300] * 64), vocab_size=300)
