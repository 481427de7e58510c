"""Text from a trained model: sample bytes with `GPT.generate` and make them safe to print.

The sampling itself (temperature, top-k, the context crop to block_size) is `GPT.generate`; this
module turns a prompt string into token ids and the sampled ids back into terminal-safe text. It is
used by `minilora pretrain` (the final sample), `minilora sample` and the demo.
"""
from __future__ import annotations

from .data import ByteTokenizer

__all__ = ["printable", "generate_text"]


def printable(text: str) -> str:
    """text with control characters other than newline and tab replaced by U+FFFD.

    A byte-level model can emit bytes such as 0x05 or 0x1b (escape): valid text, but printed raw they
    would drive the terminal. Used when samples are printed.

    Args: text: any str. Returns: a str of the same length whose characters are all printable,
    newline or tab; ``printable(printable(t)) == printable(t)``.
    """
    return "".join(c if c.isprintable() or c in "\n\t" else "\ufffd" for c in text)


def generate_text(model, prompt: str, max_new_tokens: int, temperature=0.8, top_k=None, seed=None,
                  tokenizer=None) -> str:
    """The prompt followed by max_new_tokens sampled bytes, decoded and made terminal-safe.

    Args:
        model: anything with GPT's `generate(idx (1, T0), max_new_tokens, temperature, top_k, seed)`
            (a GPT or a LoraModel); it crops the context to its block_size itself.
        prompt: text to continue ("" is read as a newline).
        max_new_tokens, temperature, top_k, seed: passed to `model.generate` (which validates them).
        tokenizer: None (bytes: `ByteTokenizer`) or any object with encode(str) -> ids and
            decode(ids) -> str matching the model's vocabulary (e.g. `bpe.GPT2Tokenizer`).
    Returns:
        str (bytes that are not valid UTF-8 become U+FFFD; control characters too, see `printable`).
    Raises:
        TypeError: ``prompt`` is not a str; whatever `model.generate` raises for bad sampling settings.
    """
    tok = tokenizer or ByteTokenizer()
    ids = tok.encode(prompt or "\n")[None, :]                     # (1, T0)
    out = model.generate(ids, max_new_tokens, temperature=temperature, top_k=top_k, seed=seed)
    return printable(tok.decode(out[0]))
