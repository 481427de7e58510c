"""A base model and its tokenizer from a path: a minilora checkpoint or a Hugging Face GPT-2 folder.

`minilora pretrain/finetune/sample --base PATH` accept either kind of folder:

    minilora checkpoint   latest.json (+ ckpt-*.npz/json), written by `minilora pretrain`; bytes
                          (`data.ByteTokenizer`, 256 ids)
    Hugging Face GPT-2    config.json + model.safetensors (`GPT.from_pretrained`), with GPT-2's
                          byte-level BPE from vocab.json + merges.txt when present (`bpe.GPT2Tokenizer`;
                          required unless vocab_size is 256)

`dataset_for` encodes a corpus with the base's tokenizer into a `data.TokenDataset`.
"""
from __future__ import annotations

import os
from os import PathLike

import numpy as np

from .bpe import GPT2Tokenizer, has_bpe_files
from .data import TokenDataset
from .nn.gpt import GPT

__all__ = ["is_hf_folder", "load_base", "dataset_for"]


def is_hf_folder(path: str | PathLike) -> bool:
    """True if `path` holds a Hugging Face config.json and no minilora checkpoint pointer."""
    return os.path.isfile(os.path.join(path, "config.json")) and not os.path.exists(os.path.join(path, "latest.json"))


def load_base(path: str | PathLike, dtype=None, dropout: float | None = None) -> tuple[GPT, GPT2Tokenizer | None]:
    """(GPT, tokenizer or None for bytes) from a minilora checkpoint or a Hugging Face GPT-2 folder.

    Args: dtype: None (the checkpoint's; float32 for a Hugging Face folder) or a float dtype.
        dropout: a Hugging Face folder's dropout override (None: its *_pdrop).
    Raises:
        FileNotFoundError: neither kind of folder (the message names both).
        ValueError: a model whose vocabulary is not bytes without vocab.json/merges.txt, a tokenizer
            larger than the model's vocabulary; the errors of `GPT.from_pretrained`.
        ImportError: a BPE folder without the `tokenizers` package.
    """
    from .checkpoint import load_model

    if os.path.isfile(path) or os.path.exists(os.path.join(path, "latest.json")):   # a ckpt-*.json or its folder
        return load_model(path, dtype=dtype), None
    if not is_hf_folder(path):
        raise FileNotFoundError(f"no checkpoint in {str(path)!r}: expected a minilora checkpoint (latest.json, from "
                                "`minilora pretrain`) or a Hugging Face GPT-2 folder (config.json + model.safetensors)")
    model = GPT.from_pretrained(path, dtype=np.float32 if dtype is None else dtype, dropout=dropout)
    V = model.config.vocab_size
    if not has_bpe_files(path):
        if V != 256:
            raise ValueError(f"{str(path)!r}: a model with vocab_size {V} needs its tokenizer: vocab.json and "
                             "merges.txt (GPT-2's byte-level BPE) are missing")
        return model, None
    tok = GPT2Tokenizer(path)
    if tok.vocab_size > V:
        raise ValueError(f"{str(path)!r}: the tokenizer has {tok.vocab_size} ids but the model only {V}")
    return model, tok


def dataset_for(text: str, tokenizer: GPT2Tokenizer | None, vocab_size: int = 256, **kwargs) -> TokenDataset:
    """`TokenDataset` of `text` encoded by `tokenizer` (None: bytes); kwargs go to TokenDataset."""
    if tokenizer is None:
        return TokenDataset(text, **kwargs)
    return TokenDataset(tokenizer.encode(text), vocab_size=vocab_size, **kwargs)
