"""Small pretrained checkpoints shipped inside the package, so lessons start from a trained model.

`pydoc-s`: config S (4 layers, 4 heads, 128 channels, context 64 bytes, 0.83M parameters), made by
the demo's pretraining recipe (`minilora demo` step 1: 1200 AdamW steps on the `pydoc` corpus),
weights only (no optimizer state).
"""
from __future__ import annotations

from pathlib import Path

__all__ = ["available", "path", "load_pretrained"]

_HERE = Path(__file__).resolve().parent


def available() -> list[str]:
    """Names of the shipped checkpoints."""
    return sorted(p.name for p in _HERE.iterdir() if (p / "latest.json").exists())


def path(name: str = "pydoc-s") -> Path:
    """Directory of a shipped checkpoint. Raises ValueError naming the available ones."""
    p = _HERE / name
    if not (p / "latest.json").exists():
        raise ValueError(f"no shipped checkpoint {name!r}; available: {available()}")
    return p


def load_pretrained(name: str = "pydoc-s", dtype=None):
    """The shipped GPT (float32, or cast to dtype, e.g. np.float64 for gradient checks), in eval mode."""
    from ..checkpoint import load_model

    model = load_model(path(name), dtype=dtype)
    return model.eval()
