"""Text from a trained model: sample bytes with `GPT.generate` and make them safe to print.

The sampling itself (temperature, top-k, the context crop to block_size) is `GPT.generate`; this
module turns a prompt string into token ids and the sampled ids back into terminal-safe text. It is
used by `minilora pretrain` (the final sample), `minilora sample` and the demo. `generate_with_adapters`
samples one prompt with several named LoRA adapters at once, in one mixed-adapter batch.
"""
from __future__ import annotations

from .data import ByteTokenizer

__all__ = ["printable", "generate_text", "generate_with_adapters"]


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


def generate_with_adapters(base, specs, prompt: str, max_new_tokens: int, temperature=0.8, top_k=None,
                           seed=None, tokenizer=None) -> list[tuple[str, str]]:
    """[(adapter name, text)]: the prompt continued once per adapter, all rows in ONE mixed-adapter batch.

    Args:
        base: a GPT (changed in place: the adapters are injected into it).
        specs: non-empty list of "PATH" (one adapter, named "default") or "NAME=PATH" (required when
            there are several); "__base__=" adds a row with no adapter. Adapter folders are those of
            `save_adapter` / `minilora finetune`.
        prompt, max_new_tokens, temperature, top_k, seed, tokenizer: as `generate_text`. Row i uses adapter i
            (lora/adapters.py, `LoraModel.mixed_batch`); with temperature 0 each row is exactly what
            its adapter alone would give.
    Raises:
        ValueError: several specs not all named, repeated names, no adapter folder at all.
        FileNotFoundError: "no adapter folder at PATH".
    """
    import os

    from .lora import load_lora_model
    from .lora.adapters import BASE_ADAPTER

    def named(spec):
        name, eq, _ = spec.partition("=")
        return bool(eq) and bool(name) and not any(c in name for c in "/\\.")

    pairs = [tuple(s.split("=", 1)) if named(s) else ("default", s) for s in specs]
    if len(specs) > 1 and not all(named(s) for s in specs):
        raise ValueError("with several --adapter options, name each one: --adapter NAME=PATH")
    names = [n for n, _ in pairs]
    if len(set(names)) < len(names):
        raise ValueError(f"adapter names must differ, got {names}")
    model = None
    for name, path in pairs:
        if name == BASE_ADAPTER:
            continue
        if not os.path.isdir(path):
            raise FileNotFoundError(f"no adapter folder at {path!r}")
        if model is None:
            model = load_lora_model(base, path, adapter_name=name)
        else:
            model.load_adapter(path, adapter_name=name)
    if model is None:
        raise ValueError("name at least one adapter folder besides __base__")
    model.eval()
    if len(pairs) == 1:
        return [(names[0], generate_text(model, prompt, max_new_tokens, temperature, top_k, seed, tokenizer))]
    tok = tokenizer or ByteTokenizer()
    ids = tok.encode(prompt or "\n")[None, :].repeat(len(names), axis=0)       # (K, T0): one row per adapter
    with model.mixed_batch(names):
        out = model.generate(ids, max_new_tokens, temperature=temperature, top_k=top_k, seed=seed)
    return [(n, printable(tok.decode(row))) for n, row in zip(names, out, strict=True)]
