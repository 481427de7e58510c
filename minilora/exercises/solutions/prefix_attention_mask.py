"""Reference solution: the attention mask of prefix tuning."""
import numpy as np


def prefix_attention_mask(T, P):
    """Reference solution of the `prefix_attention_mask` exercise (see stubs/prefix_attention_mask.py)."""
    prefix = np.ones((T, P), dtype=bool)                       # every query sees the whole prefix
    causal = np.tril(np.ones((T, T), dtype=bool))              # token i sees tokens 0..i
    return np.concatenate([prefix, causal], axis=1)            # (T, P + T)
