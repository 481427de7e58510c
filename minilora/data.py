"""Byte-level data pipeline: tokenizer, built-in corpora, train/val split, batch sampling, baselines.

The path of data:  text (str) --ByteTokenizer.encode--> tokens (uint8/int64, values in [0, 256))
--TokenDataset--> train/val splits --get_batch--> (x, y) int64 arrays of shape (B, T), y = x shifted by one.

Shape letters: B batch size, T block size (context length), N number of tokens, V = 256 vocabulary.

Tokenization is byte-level UTF-8 (as GPT-2's byte-level BPE before any merges): every text is a
sequence of bytes, so the vocabulary is exactly 256 and nothing is ever "unknown". A non-ASCII
character becomes 2-4 tokens.

Built-in corpora need no download; they ship with every CPython install:

- ``"pydoc"``: the English prose of ``pydoc_data.topics`` (the reference text that ``help()`` prints),
  about 465 kB;
- ``"stdlib"``: the source code of a fixed, sorted list of pure-Python standard-library modules
  (:data:`STDLIB_MODULES`), about 1 MB. Its exact bytes follow the installed Python version.

The package's main experiment pretrains on prose and LoRA-adapts to code.
"""
from __future__ import annotations

import functools
import importlib
import inspect
import math
import os
import tokenize
from pathlib import Path

import numpy as np

__all__ = [
    "ByteTokenizer",
    "CORPORA",
    "STDLIB_MODULES",
    "load_corpus",
    "TokenDataset",
    "unigram_loss",
]

VOCAB_SIZE = 256

# Pure-Python modules present (as source) in CPython 3.10 to 3.13, sorted. Fixed so that the
# "stdlib" corpus is the same selection on every machine. Avoided on purpose: modules that moved
# or became thin shims between versions (datetime, pathlib, zipfile, decimal) and frozen ones.
STDLIB_MODULES: tuple[str, ...] = (
    "argparse",
    "base64",
    "calendar",
    "configparser",
    "contextlib",
    "copy",
    "csv",
    "dataclasses",
    "difflib",
    "enum",
    "fractions",
    "functools",
    "gettext",
    "graphlib",
    "heapq",
    "inspect",
    "ipaddress",
    "json.decoder",
    "json.encoder",
    "pprint",
    "random",
    "statistics",
    "textwrap",
    "tokenize",
    "typing",
    "weakref",
)

CORPORA: dict[str, str] = {
    "pydoc": "English prose: the Python language reference topics of pydoc_data.topics "
    "(what help() prints), joined in sorted key order; about 465 kB.",
    "stdlib": f"Python source code of {len(STDLIB_MODULES)} pure-Python standard-library modules "
    "(minilora.data.STDLIB_MODULES, sorted), each preceded by a '# ===== module =====' header; about 1 MB.",
}


# --------------------------------------------------------------------------------------------------
# tokenizer
# --------------------------------------------------------------------------------------------------


def _as_token_array(ids, what: str, vocab_size: int = VOCAB_SIZE) -> np.ndarray:
    """Validate integer ids in [0, vocab_size) and return them as a 1-d ndarray (original integer dtype)."""
    arr = np.asarray(ids)
    if arr.ndim > 1:
        raise ValueError(f"{what}: expected a 1-d sequence of token ids, got shape {arr.shape} "
                         "(decode a batch row by row)")
    arr = arr.reshape(-1)
    if arr.size == 0:
        return arr.astype(np.uint8)
    if arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{what}: token ids must be integers, got dtype {arr.dtype}")
    lo, hi = int(arr.min()), int(arr.max())
    if lo < 0 or hi >= vocab_size:
        bad = lo if lo < 0 else hi
        raise ValueError(f"{what}: token ids must lie in [0, {vocab_size}), got {bad}")
    return arr


class ByteTokenizer:
    """UTF-8 byte tokenizer: token id = byte value, ``vocab_size = 256``.

    >>> tok = ByteTokenizer()
    >>> tok.encode("hé").tolist()       # 'é' is two UTF-8 bytes
    [104, 195, 169]
    >>> tok.decode([104, 195, 169])
    'hé'
    """

    vocab_size: int = VOCAB_SIZE

    def encode(self, text: str, dtype=np.int64) -> np.ndarray:
        """Encode text to token ids.

        Args:
            text: any ``str`` that UTF-8 can encode (lone surrogates cannot be encoded).
            dtype: integer dtype of the result; int64 (default, ready for embedding lookups) or
                uint8 (compact storage, 1 byte per token).

        Returns:
            ndarray of shape (N,), N = number of UTF-8 bytes of ``text``, values in [0, 256).

        Raises:
            TypeError: ``text`` is not a str.
            UnicodeEncodeError (a ValueError): ``text`` holds a lone surrogate.
        """
        if not isinstance(text, str):
            raise TypeError(f"encode: expected str, got {type(text).__name__}")
        return np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype(dtype)

    def decode(self, ids) -> str:
        """Decode token ids back to text; never fails on valid ids.

        Args:
            ids: 1-d sequence or ndarray of integers in [0, 256) (any integer dtype), shape (N,).

        Returns:
            the UTF-8 decoding of the bytes; invalid byte sequences (e.g. a multi-byte character cut
            in half by sampling) become U+FFFD instead of raising.

        Raises:
            ValueError: ``ids`` is not integer-typed (floats, bools, objects), has more than one
                dimension, or holds a value outside [0, 256).
        """
        arr = _as_token_array(ids, "decode")
        return arr.astype(np.uint8).tobytes().decode("utf-8", errors="replace")

    def __repr__(self) -> str:
        return f"ByteTokenizer(vocab_size={self.vocab_size})"


# --------------------------------------------------------------------------------------------------
# corpora
# --------------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def _pydoc_corpus() -> str:
    from pydoc_data.topics import topics

    return "\n\n".join(topics[key] for key in sorted(topics))


@functools.lru_cache(maxsize=None)
def _stdlib_corpus() -> str:
    parts = []
    for name in STDLIB_MODULES:
        module = importlib.import_module(name)
        source_file = inspect.getsourcefile(module)
        if source_file is None or not os.path.isfile(source_file):
            raise FileNotFoundError(
                f"the 'stdlib' corpus needs the source of module {name!r}, which this Python "
                "install does not ship (only bytecode?); use the 'pydoc' corpus or a text file"
            )
        with tokenize.open(source_file) as f:  # honours the file's encoding declaration
            source = f.read()
        parts.append(f"# ===== {name} =====\n{source}")
    return "\n\n".join(parts)


_BUILTIN_LOADERS = {"pydoc": _pydoc_corpus, "stdlib": _stdlib_corpus}


def load_corpus(name_or_path: str | os.PathLike) -> str:
    """Return the text of a built-in corpus or of a UTF-8 text file.

    Args:
        name_or_path: a key of :data:`CORPORA` (``"pydoc"``, ``"stdlib"``) or a path to a text file.
            Built-in names win: to read a file called ``pydoc`` in the current directory, pass
            ``"./pydoc"``.

    Returns:
        the whole text as ``str`` (built-in corpora are cached after the first call).

    Raises:
        FileNotFoundError: the argument looks like a path (has a directory part or a suffix) and no
            such file exists; the message also lists the built-in names.
        ValueError: an unknown corpus name, a directory, or a file that is not valid UTF-8.
    """
    valid = ", ".join(repr(k) for k in CORPORA)
    if isinstance(name_or_path, str) and name_or_path in _BUILTIN_LOADERS:
        return _BUILTIN_LOADERS[name_or_path]()
    path = Path(name_or_path)
    if path.is_file():
        try:
            return path.read_text(encoding="utf-8")
        except UnicodeDecodeError as e:
            raise ValueError(f"corpus file {str(path)!r} is not valid UTF-8 text: {e}") from e
    if path.is_dir():
        raise ValueError(f"corpus path {str(path)!r} is a directory, not a text file")
    text = str(name_or_path)
    if os.sep in text or (os.altsep and os.altsep in text) or path.suffix:
        raise FileNotFoundError(f"corpus file {text!r} does not exist (built-in corpora: {valid})")
    raise ValueError(f"unknown corpus {text!r}: use one of the built-in corpora {valid} "
                     "or a path to a UTF-8 text file")


# --------------------------------------------------------------------------------------------------
# dataset: split and batches
# --------------------------------------------------------------------------------------------------

_SPLITS = ("train", "val")


def _check_int(value, name: str, minimum: int) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


class TokenDataset:
    """A token corpus split into train and validation, with random and fixed batch sampling.

    The split is deterministic and interleaved: the corpus of N tokens is cut into ``n_chunks``
    contiguous chunks of (almost) equal length, and ``n_val = max(1, round(val_fraction * n_chunks))``
    of them, spread evenly over the corpus (chunk ``floor((i + 1/2) * n_chunks / n_val)`` for
    ``i = 0 .. n_val-1``), go to validation; every other chunk goes to training. Both splits thus
    sample the whole corpus: the end of a text is often unlike its start (``pydoc``'s topics are
    sorted by name; ``stdlib``'s modules by module name), and a "last 10 %" split would measure a
    distribution shift rather than generalization.

    Consecutive chunks of one split form a *segment*. Batches are windows taken inside a single
    segment, so no training example ever straddles a gap where validation text was cut out.

    Args:
        data: the corpus: a ``str`` (UTF-8 encoded by :class:`ByteTokenizer`), ``bytes``, or a 1-d
            integer array/sequence of token ids in [0, 256).
        val_fraction: fraction of the chunks held out, in [0, 1). 0 gives an empty validation split.
        n_chunks: number of chunks (default 64); the corpus needs at least ``n_chunks`` tokens.
        vocab_size: 256 (bytes, the default) or a larger vocabulary (e.g. GPT-2's BPE, 50257): then
            ``data`` must be token ids (encode text with the model's tokenizer first), stored as
            uint16 (vocab_size <= 65536) or int32.

    Attributes:
        tokens: uint8 array (N,), the whole corpus (compact storage; batches are int64); uint16 or
            int32 for a larger vocab_size.
        boundaries: int64 array (n_chunks + 1,), chunk c is ``tokens[boundaries[c]:boundaries[c+1]]``.
        val_chunks: tuple of the validation chunk indices (sorted).
        train, val: uint8 arrays, the concatenated chunks of each split, in corpus order
            (``len(train) + len(val) == N``).

    Raises:
        ValueError: ``val_fraction`` outside [0, 1), ``n_chunks < 1`` (or < 2 with a validation split),
            a corpus shorter than ``n_chunks`` tokens, or ids outside [0, 256).
    """

    def __init__(self, data, val_fraction: float = 0.1, n_chunks: int = 64, vocab_size: int = VOCAB_SIZE):
        vocab_size = _check_int(vocab_size, "vocab_size", VOCAB_SIZE)
        if vocab_size > VOCAB_SIZE:
            if isinstance(data, (str, bytes, bytearray, memoryview)):
                raise TypeError(f"TokenDataset: with vocab_size={vocab_size}, data must be token ids: encode the "
                                "text with the model's tokenizer first")
            tokens = _as_token_array(data, "TokenDataset", vocab_size).astype(
                np.uint16 if vocab_size <= 2**16 else np.int32)
        elif isinstance(data, str):
            tokens = np.frombuffer(data.encode("utf-8"), dtype=np.uint8).copy()
        elif isinstance(data, (bytes, bytearray, memoryview)):
            tokens = np.frombuffer(bytes(data), dtype=np.uint8).copy()
        else:
            tokens = _as_token_array(data, "TokenDataset").astype(np.uint8)
        n_chunks = _check_int(n_chunks, "n_chunks", 1)
        val_fraction = float(val_fraction)
        if not 0.0 <= val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
        n_val = 0 if val_fraction == 0.0 else max(1, round(val_fraction * n_chunks))
        if n_val >= n_chunks:
            raise ValueError(f"val_fraction={val_fraction} with n_chunks={n_chunks} leaves no training "
                             "chunk; lower val_fraction or raise n_chunks")
        if tokens.size < n_chunks:
            raise ValueError(f"corpus of {tokens.size} tokens is too short: it is cut into n_chunks={n_chunks} "
                             f"chunks for the train/validation split, so it needs at least {n_chunks} tokens "
                             f"(and, for batches of context T, about {n_chunks} x (T + 1)); use a larger text, "
                             "or TokenDataset(..., n_chunks=...) from Python")

        self.tokens = tokens
        self.tokens.flags.writeable = False
        self.val_fraction = val_fraction
        self.n_chunks = n_chunks
        self.boundaries = np.linspace(0, tokens.size, n_chunks + 1).round().astype(np.int64)
        self.val_chunks = tuple(sorted({int((i + 0.5) * n_chunks / n_val) for i in range(n_val)}))

        is_val = np.zeros(n_chunks, dtype=bool)
        is_val[list(self.val_chunks)] = True
        self._segments = {split: self._merge_runs(is_val == (split == "val")) for split in _SPLITS}
        self.train = self._gather("train")
        self.val = self._gather("val")

    def _merge_runs(self, member: np.ndarray) -> list[tuple[int, int]]:
        """Token ranges (start, stop) of the maximal runs of consecutive chunks with member[c] True."""
        runs: list[tuple[int, int]] = []
        for c in np.flatnonzero(member):
            start, stop = int(self.boundaries[c]), int(self.boundaries[c + 1])
            if runs and runs[-1][1] == start:
                runs[-1] = (runs[-1][0], stop)
            else:
                runs.append((start, stop))
        return runs

    def _gather(self, split: str) -> np.ndarray:
        parts = [self.tokens[a:b] for a, b in self._segments[split]]
        out = np.concatenate(parts) if parts else np.zeros(0, dtype=self.tokens.dtype)
        out.flags.writeable = False
        return out

    def __len__(self) -> int:
        """Number of tokens N of the whole corpus."""
        return int(self.tokens.size)

    def __repr__(self) -> str:
        return (f"TokenDataset(N={len(self)}, train={self.train.size}, val={self.val.size}, "
                f"n_chunks={self.n_chunks}, val_chunks={list(self.val_chunks)})")

    def segments(self, split: str) -> list[tuple[int, int]]:
        """The contiguous token ranges ``[(start, stop), ...]`` of a split, in corpus order.

        Raises:
            ValueError: unknown split (valid: "train", "val").
        """
        self._check_split(split)
        return list(self._segments[split])

    @staticmethod
    def _check_split(split: str) -> None:
        if split not in _SPLITS:
            raise ValueError(f"unknown split {split!r}; valid splits are 'train' and 'val'")

    def get_batch(self, split: str, batch_size: int, block_size: int,
                  rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Sample ``batch_size`` random windows of ``block_size + 1`` consecutive tokens.

        Every window lies inside one segment of the split; start positions are uniform over all such
        windows (sampling with replacement).

        Args:
            split: "train" or "val".
            batch_size: B >= 1.
            block_size: T >= 1, the context length; a segment of the split must hold T + 1 tokens.
            rng: a ``np.random.Generator`` (e.g. ``np.random.default_rng(seed)``), advanced in place.

        Returns:
            (x, y): int64 arrays of shape (B, T), with ``y[:, t] == x[:, t + 1]`` for t < T - 1, i.e.
            y is the next token after each position of x (the language-modelling targets).

        Raises:
            ValueError: unknown split; batch_size < 1 or block_size < 1; block_size too large for the
                split (the message gives the longest segment); an empty split.
            TypeError: non-int sizes or ``rng`` not a ``np.random.Generator``.
        """
        self._check_split(split)
        batch_size = _check_int(batch_size, "batch_size", 1)
        block_size = _check_int(block_size, "block_size", 1)
        if not isinstance(rng, np.random.Generator):
            raise TypeError(f"rng must be a np.random.Generator (np.random.default_rng(seed)), "
                            f"got {type(rng).__name__}")
        segments = self._segments[split]
        if not segments:
            raise ValueError(f"split {split!r} is empty (val_fraction={self.val_fraction})")
        starts = np.array([a for a, _ in segments], dtype=np.int64)
        n_windows = np.array([max(0, b - a - block_size) for a, b in segments], dtype=np.int64)
        total = int(n_windows.sum())
        if total == 0:
            longest = max(b - a for a, b in segments)
            raise ValueError(
                f"block_size={block_size} is too large for split {split!r}: its longest contiguous "
                f"segment has {longest} tokens, but a window needs block_size + 1 = {block_size + 1}. The "
                f"corpus ({len(self)} tokens) is cut into {self.n_chunks} chunks, so it needs about "
                f"{self.n_chunks * (block_size + 1)} tokens: use a larger text or a smaller block size "
                "(from Python, fewer chunks: TokenDataset(..., n_chunks=...))"
            )
        offsets = np.cumsum(n_windows) - n_windows                 # (S,) first window index per segment
        j = rng.integers(0, total, size=batch_size)                # (B,) global window indices
        seg = np.searchsorted(np.cumsum(n_windows), j, side="right")  # (B,) segment of each window
        begin = starts[seg] + (j - offsets[seg])                   # (B,) first token position
        window = self.tokens[begin[:, None] + np.arange(block_size + 1)]  # (B, T+1) uint8
        window = window.astype(np.int64)
        return window[:, :-1].copy(), window[:, 1:].copy()

    def fixed_batches(self, split: str, n_batches: int, batch_size: int, block_size: int,
                      seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
        """A reproducible list of batches for evaluation: the same windows on every call.

        Args:
            split, batch_size, block_size: as :meth:`get_batch`.
            n_batches: number of batches, >= 1.
            seed: seed of the private generator (``np.random.default_rng(seed)``).

        Returns:
            list of ``n_batches`` pairs (x, y), each int64 of shape (B, T).

        Raises:
            as :meth:`get_batch`; ValueError for n_batches < 1.
        """
        n_batches = _check_int(n_batches, "n_batches", 1)
        rng = np.random.default_rng(seed)
        return [self.get_batch(split, batch_size, block_size, rng) for _ in range(n_batches)]


# --------------------------------------------------------------------------------------------------
# baseline
# --------------------------------------------------------------------------------------------------


def unigram_loss(tokens, reference_tokens=None, vocab_size: int = VOCAB_SIZE) -> float:
    """Cross-entropy (nats per token) of a unigram byte model: the baseline a language model must beat.

    The model predicts every token with the same distribution p, the byte frequencies of
    ``reference_tokens`` with add-one (Laplace) smoothing over all 256 bytes:
    ``p[v] = (count[v] + 1) / (len(reference_tokens) + 256)``. The loss is ``-mean(log p[tokens])``.

    Use the training split as reference and the validation split as ``tokens`` for an honest
    baseline; the default (reference = tokens) is an in-sample estimate. For comparison, a uniform
    guess costs ``ln(256) ≈ 5.545`` nats.

    Args:
        tokens: 1-d integer ids in [0, 256), shape (N,), N >= 1 (str is not accepted: encode first).
        reference_tokens: 1-d integer ids in [0, 256), shape (M,), M >= 0; default ``tokens``.
        vocab_size: V, 256 for bytes; a larger vocabulary (GPT-2's BPE: 50257) smooths over V ids.

    Returns:
        a Python float > 0 (nats per token); below ln(256) when the reference distribution resembles
        that of ``tokens``, and possibly above it when they differ a lot.

    Raises:
        ValueError: empty ``tokens``, non-integer ids or ids outside [0, 256).
    """
    arr = _as_token_array(tokens, "unigram_loss", vocab_size)
    if arr.size == 0:
        raise ValueError("unigram_loss: tokens is empty")
    ref = arr if reference_tokens is None else _as_token_array(reference_tokens, "unigram_loss", vocab_size)
    counts = np.bincount(ref.astype(np.int64), minlength=vocab_size).astype(np.float64) + 1.0  # (V,)
    log_p = np.log(counts) - math.log(counts.sum())                                          # (V,)
    return float(-log_p[arr.astype(np.int64)].mean())
