"""Soft prompts and the prefix encoder: prompt tuning (Lester et al. 2021, arXiv:2104.08691, §2),
prefix-embedding (Li & Liang 2021's embedding-only ablation, §7.2) and the reparameterisation MLP
of prefix tuning (Li & Liang §4.3).

Prepending a soft prompt E (P, C) to the token embeddings X (B, T, C):

    Z = [E ; X_b] for every b                          (B, P+T, C)
    backward: dX = dZ[:, P:],   dE = sum_b dZ[b, :P]   (E is shared by the batch)

The P virtual tokens take P of the block_size positions (they get position embeddings 0..P-1 and
the real tokens P..P+T-1), so a model of block_size n reads at most n - P real tokens: this is the
"sequence length used up" of the LoRA paper's §2.

The encoder (PEFT's PrefixEncoder / PromptEmbedding): without projection the trainable table E is
the output; with projection (prefix_projection=True) E (P, C) goes through Linear(C, H), tanh,
Linear(H, out) — the MLP Li & Liang found steadier to optimise; it is used only during training,
and an adapter file stores its output (PEFT's `prompt_embeddings`).
"""
from __future__ import annotations

import numpy as np

from .. import ops
from ..function import Function
from ..nn.layers import Embedding, Linear
from ..nn.module import Module
from ..tensor import Tensor

__all__ = ["PrependPrompt", "prepend_prompt", "prepend_prompt_composed", "PromptEncoder"]


class PrependPrompt(Function):
    """Z = [E ; X] along time: x (B, T, C), prompt (P, C) -> (B, P+T, C); see the module docstring.

    Raises: ValueError naming the shapes when they do not fit.
    """

    @staticmethod
    def forward(ctx, x, prompt):
        if x.ndim != 3 or prompt.ndim != 2 or prompt.shape[1] != x.shape[2]:
            raise ValueError(f"prepend_prompt: expected x (B, T, C) and prompt (P, C), got {x.shape} and "
                             f"{prompt.shape}")
        Bsz, T, C = x.shape
        P = prompt.shape[0]
        z = np.empty((Bsz, P + T, C), dtype=x.dtype)
        z[:, :P] = prompt
        z[:, P:] = x
        ctx.P = P
        return z

    @staticmethod
    def backward(ctx, g):
        P = ctx.P
        need = ctx.needs_input_grad
        dx = g[:, P:].copy() if need[0] else None                  # (B, T, C)
        dprompt = g[:, :P].sum(axis=0) if need[1] else None        # (P, C)
        return dx, dprompt


def prepend_prompt(x, prompt) -> Tensor:
    """The fused op (hand-derived backward): x (B, T, C), prompt (P, C) -> (B, P+T, C)."""
    return PrependPrompt.apply(x, prompt)


def prepend_prompt_composed(x, prompt) -> Tensor:
    """Twin of `prepend_prompt` from engine ops (reshape, add to zeros to broadcast, concatenate)."""
    Bsz, _, C = x.shape
    P = prompt.shape[0]
    dt = x.data.dtype if isinstance(x, Tensor) else x.dtype
    tiled = ops.add(ops.reshape(prompt, (1, P, C)), np.zeros((Bsz, P, C), dtype=dt))
    return ops.concatenate([tiled, x], axis=1)


class PromptEncoder(Module):
    """The trainable prompt table, optionally through the reparameterisation MLP: () -> (P, out).

    Args:
        num_virtual_tokens: P. token_dim: C (width of the table). out_dim: width of the output
            (C for soft prompts, n_layer 2 C for prefix-layer tuning).
        prefix_projection: use the MLP (then the table is (P, C) and the MLP maps C -> H -> out);
            without it, the table is (P, out) and is the output itself.
        encoder_hidden_size: H (None: C). init: an array (P, table width) to start the table from,
            or None for normal(0, init_std). rng, dtype.
    Parameter names (PEFT's): `embedding.weight`, `transform.0.weight/bias`, `transform.2.weight/bias`.
    """

    def __init__(self, num_virtual_tokens: int, token_dim: int, out_dim: int, prefix_projection: bool = False,
                 encoder_hidden_size: int | None = None, init: np.ndarray | None = None, init_std: float = 0.02,
                 rng: np.random.Generator | None = None, dtype=np.float32):
        super().__init__()
        rng = rng if rng is not None else np.random.default_rng(0)
        self.num_virtual_tokens, self.out_dim = num_virtual_tokens, out_dim
        self.prefix_projection = prefix_projection
        width = token_dim if prefix_projection else out_dim
        table = init if init is not None else rng.normal(0.0, init_std, (num_virtual_tokens, width))
        if np.shape(table) != (num_virtual_tokens, width):
            raise ValueError(f"PromptEncoder: init must have shape {(num_virtual_tokens, width)}, "
                             f"got {np.shape(table)}")
        self.embedding = Embedding(num_virtual_tokens, width, dtype=dtype)
        self.embedding.weight.data = np.asarray(table, dtype=dtype)
        if prefix_projection:
            H = encoder_hidden_size or token_dim
            self.transform = _MLP(token_dim, H, out_dim, init_std, rng, dtype)

    def forward(self) -> Tensor:
        """() -> (P, out_dim)."""
        if not self.prefix_projection:
            return self.embedding.weight
        return self.transform(self.embedding.weight)


class _MLP(Module):
    """Linear(C, H) -> tanh -> Linear(H, out), children named 0 and 2 as PEFT's nn.Sequential."""

    def __init__(self, C, H, out, std, rng, dtype):
        super().__init__()
        first, second = Linear(C, H, dtype=dtype), Linear(H, out, dtype=dtype)
        first.weight.data = rng.normal(0.0, std, (H, C)).astype(dtype)
        second.weight.data = rng.normal(0.0, std, (out, H)).astype(dtype)
        setattr(self, "0", first)
        setattr(self, "2", second)

    def forward(self, e):
        return self._modules["2"](ops.tanh(self._modules["0"](e)))
