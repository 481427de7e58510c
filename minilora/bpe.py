r"""GPT-2's byte-level BPE tokenizer (vocab.json + merges.txt), through the `tokenizers` library.

Byte-level BPE (Radford et al. 2019, "Language Models are Unsupervised Multitask Learners", §2.2;
BPE itself: Sennrich et al. 2016, arXiv:1508.07909) turns text into ids in three steps:

  1. Pre-tokenize. A regular expression cuts the text into words, a leading space kept with its word:
     's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
     ("Hello world!" -> "Hello", " world", "!"). No merge ever crosses a word boundary.
  2. Bytes, not characters. Each word's UTF-8 bytes are mapped one to one onto 256 printable
     characters (`bytes_to_unicode`: printable Latin-1 bytes map to themselves, the others to
     U+0100...; the space becomes "Ġ"). Every text is then a string over 256 base symbols: no
     unknown token is ever needed, and an emoji is simply its 4 bytes until merges join them.
  3. Merge. merges.txt lists symbol pairs by rank (rank = line number, learned by counting pair
     frequencies on the training text). Repeatedly merge the adjacent pair of lowest rank, until no
     adjacent pair is in the list (`bpe_word`, the reference loop written out here). vocab.json
     maps each final symbol string to its id.

Decoding inverts step 2 on the concatenated symbols: ids -> symbol strings -> bytes -> UTF-8 text
(an incomplete multi-byte character, e.g. cut by sampling, becomes U+FFFD).

`GPT2Tokenizer` does steps 1-3 with Hugging Face's `tokenizers` (Rust; the optional extra
`pip install "minilora[gpt2]"`): a BPE model from the two files, the ByteLevel pre-tokenizer and
decoder, "<|endoftext|>" as a special token. `bpe_word` is the pure-Python reference the tests and
lesson 15 compare it with; it is quadratic in the word length and meant for reading, not speed.
"""
from __future__ import annotations

import functools
import json
from os import PathLike
from pathlib import Path

import numpy as np

__all__ = ["VOCAB_NAME", "MERGES_NAME", "ENDOFTEXT", "bytes_to_unicode", "bpe_word", "read_merges", "GPT2Tokenizer",
           "has_bpe_files"]

VOCAB_NAME = "vocab.json"
MERGES_NAME = "merges.txt"
ENDOFTEXT = "<|endoftext|>"


@functools.lru_cache(maxsize=None)
def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> printable character table (openai/gpt-2 `encoder.py`): 256 entries, one to one.

    Bytes that are printable Latin-1 characters ('!'..'~', '¡'..'¬', '®'..'ÿ') map to themselves; the
    other 68 bytes (control characters, space, ...) map to U+0100, U+0101, ... in byte order, so the
    space 0x20 becomes 'Ġ' (U+0120) and the newline 0x0A becomes 'Ċ' (U+010A).
    """
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    table, n = {}, 0
    for b in range(256):
        if b in keep:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + n)
            n += 1
    return table


def read_merges(path: str | PathLike) -> dict[tuple[str, str], int]:
    """merges.txt -> {(left, right): rank}; a "#version" first line and blank lines are skipped.

    Raises: ValueError naming the line that is not two space-separated symbols.
    """
    ranks = {}
    for i, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines()):
        if not line or (i == 0 and line.startswith("#version")):
            continue
        parts = line.split(" ")
        if len(parts) != 2:
            raise ValueError(f"{path}: line {i + 1} {line!r} is not a merge (two symbols separated by a space)")
        ranks.setdefault((parts[0], parts[1]), len(ranks))
    return ranks


def bpe_word(word: str, ranks: dict[tuple[str, str], int]) -> list[str]:
    """The BPE merge loop on one pre-tokenized word (step 3 of the module docstring).

    Args: word: the word already mapped through `bytes_to_unicode` (e.g. "Ġworld"); ranks: from
        `read_merges`.
    Returns: the list of symbols after merging (their concatenation is `word`).
    Each round finds the adjacent pair of lowest rank and merges every occurrence of it, left to
    right; it stops when no adjacent pair has a rank. O(len(word)²) per word.
    """
    symbols = list(word)
    while len(symbols) > 1:
        pairs = {(a, b) for a, b in zip(symbols, symbols[1:], strict=False)}
        best = min(pairs, key=lambda p: ranks.get(p, float("inf")))
        if best not in ranks:
            break
        merged, i = [], 0
        while i < len(symbols):
            if i < len(symbols) - 1 and (symbols[i], symbols[i + 1]) == best:
                merged.append(symbols[i] + symbols[i + 1])
                i += 2
            else:
                merged.append(symbols[i])
                i += 1
        symbols = merged
    return symbols


def has_bpe_files(path: str | PathLike) -> bool:
    """True if the folder holds vocab.json and merges.txt."""
    return (Path(path) / VOCAB_NAME).is_file() and (Path(path) / MERGES_NAME).is_file()


class GPT2Tokenizer:
    """GPT-2's byte-level BPE from `vocab.json` + `merges.txt` (see the module docstring).

    Args: path: a folder holding both files (a Hugging Face GPT-2 folder).
    Attributes: vocab_size (int, 50257 for GPT-2), eot_id (id of "<|endoftext|>" or None).
    Raises:
        ImportError: the `tokenizers` package is missing (names the extra to install).
        FileNotFoundError: a file is missing. ValueError: vocab.json is not a {symbol: id} object.
    """

    def __init__(self, path: str | PathLike):
        try:
            from tokenizers import Tokenizer, decoders, models, pre_tokenizers
        except ImportError as e:
            raise ImportError("GPT2Tokenizer needs the `tokenizers` package: pip install 'minilora[gpt2]' "
                              "(or pip install tokenizers)") from e
        path = Path(path)
        for name in (VOCAB_NAME, MERGES_NAME):
            if not (path / name).is_file():
                raise FileNotFoundError(f"GPT2Tokenizer: {str(path / name)!r} not found (GPT-2's byte-level BPE "
                                        f"needs {VOCAB_NAME} and {MERGES_NAME})")
        vocab = json.loads((path / VOCAB_NAME).read_text(encoding="utf-8"))
        if not isinstance(vocab, dict) or not all(isinstance(v, int) for v in vocab.values()):
            raise ValueError(f"GPT2Tokenizer: {str(path / VOCAB_NAME)!r} is not a JSON object symbol -> id")
        self.path = path
        self._tok = Tokenizer(models.BPE.from_file(str(path / VOCAB_NAME), str(path / MERGES_NAME)))
        self._tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        self._tok.decoder = decoders.ByteLevel()
        self.eot_id = vocab.get(ENDOFTEXT)
        if self.eot_id is not None:
            self._tok.add_special_tokens([ENDOFTEXT])
        self.vocab_size = max(vocab.values()) + 1

    @classmethod
    def from_pretrained(cls, path: str | PathLike) -> GPT2Tokenizer:
        """The same as GPT2Tokenizer(path) (Hugging Face's spelling)."""
        return cls(path)

    def encode(self, text: str, dtype=np.int64) -> np.ndarray:
        """text -> ids (N,) of `dtype`. Raises TypeError if text is not a str."""
        if not isinstance(text, str):
            raise TypeError(f"encode: expected str, got {type(text).__name__}")
        return np.asarray(self._tok.encode(text).ids, dtype=dtype)

    def tokens(self, text: str) -> list[str]:
        """The symbol strings of `encode(text)` (in bytes_to_unicode's alphabet: " world" is "Ġworld")."""
        return self._tok.encode(text).tokens

    def decode(self, ids) -> str:
        """ids (1-d ints in [0, vocab_size)) -> text. Raises ValueError for other ids."""
        from .data import _as_token_array

        arr = _as_token_array(ids, "decode", self.vocab_size)
        return self._tok.decode([int(i) for i in arr], skip_special_tokens=False)

    def __repr__(self) -> str:
        return f"GPT2Tokenizer(vocab_size={self.vocab_size}, path={str(self.path)!r})"
