"""The layers GPT-2 is made of: Linear, Embedding, LayerNorm, Dropout.

Weights are stored as PyTorch and the LoRA paper store them: Linear.weight is (out_features,
in_features) and computes y = x W^T + b. (GPT-2's original Conv1D stores (in, out); a loader from
those files would transpose.)
"""
from __future__ import annotations

import numpy as np
from numpy.typing import DTypeLike

from .. import ops
from ..tensor import Tensor
from .module import Module, Parameter


def as_generator(rng: np.random.Generator | int | None) -> np.random.Generator:
    """`rng` itself if it is a np.random.Generator, else np.random.default_rng(rng) (a seed or None).

    The one helper every layer (and LoRALinear) uses, so a model shares one generator.
    """
    return rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)


class Linear(Module):
    """y = x @ weight.T + bias.

    Args:
        in_features (d_in), out_features (d_out): ints >= 1.
        bias: whether to learn a bias (d_out,).
        dtype: np.float32 (default) or np.float64.
        rng: np.random.Generator or seed for the initialisation U(-1/sqrt(d_in), 1/sqrt(d_in))
            (PyTorch's default; GPT re-initialises with N(0, 0.02)).
    Shapes: x (..., d_in) -> (..., d_out). weight (d_out, d_in), bias (d_out,).
    Raises:
        ValueError: non-positive sizes; an input whose last dim is not d_in (from ops.linear).
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, dtype: DTypeLike = np.float32,
                 rng: np.random.Generator | int | None = None):
        super().__init__()
        if in_features < 1 or out_features < 1:
            raise ValueError(f"Linear: sizes must be >= 1, got in={in_features}, out={out_features}")
        self.in_features, self.out_features = int(in_features), int(out_features)
        bound = 1.0 / np.sqrt(in_features)
        self.weight = Parameter(as_generator(rng).uniform(-bound, bound, (out_features, in_features)).astype(dtype))
        self.bias = Parameter(np.zeros(out_features, dtype=dtype)) if bias else None

    @classmethod
    def from_parameters(cls, weight: Parameter, bias: Parameter | None = None) -> Linear:
        """A Linear around existing Parameters (the same objects, not copies): weight (d_out, d_in),
        bias (d_out,) or None. Used to unwrap a LoRA layer (merge_and_unload, rank tools).

        Raises:
            TypeError: weight or bias is not a Parameter. ValueError: weight not 2-D, or a bias of
            another length or dtype.
        """
        if not isinstance(weight, Parameter) or not (bias is None or isinstance(bias, Parameter)):
            raise TypeError(f"Linear.from_parameters: weight and bias must be Parameters (bias may be None), "
                            f"got {type(weight).__name__} and {type(bias).__name__}")
        if weight.ndim != 2:
            raise ValueError(f"Linear.from_parameters: weight must be (d_out, d_in), got shape {weight.shape}")
        if bias is not None and (bias.shape != (weight.shape[0],) or bias.dtype != weight.dtype):
            raise ValueError(f"Linear.from_parameters: bias {bias.shape} {bias.dtype} does not fit weight "
                             f"{weight.shape} {weight.dtype} (expected ({weight.shape[0]},) {weight.dtype})")
        lin = cls.__new__(cls)
        Module.__init__(lin)
        lin.out_features, lin.in_features = weight.shape
        lin.weight = weight
        lin.bias = bias
        return lin

    def forward(self, x: Tensor | np.ndarray) -> Tensor:
        """x (..., d_in) -> (..., d_out)."""
        return ops.linear(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


class Embedding(Module):
    """A lookup table: integer indices (any shape) -> rows of weight (num_embeddings, embedding_dim).

    Raises:
        ValueError/TypeError: indices out of range or not integers (from ops.embedding).
    """

    def __init__(self, num_embeddings: int, embedding_dim: int, dtype: DTypeLike = np.float32,
                 rng: np.random.Generator | int | None = None):
        super().__init__()
        self.num_embeddings, self.embedding_dim = int(num_embeddings), int(embedding_dim)
        self.weight = Parameter(as_generator(rng).normal(0.0, 0.02, (num_embeddings, embedding_dim)).astype(dtype))

    def forward(self, idx: np.ndarray) -> Tensor:
        """idx (...) ints -> (..., embedding_dim)."""
        return ops.embedding(self.weight, idx)

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}"


class LayerNorm(Module):
    """Layer normalisation over the last axis with learned weight (ones) and optional bias (zeros).

    Shapes: x (..., C) -> (..., C). eps = 1e-5 as in GPT-2.
    """

    def __init__(self, ndim: int, bias: bool = True, eps: float = 1e-5, dtype: DTypeLike = np.float32):
        super().__init__()
        self.eps = eps
        self.weight = Parameter(np.ones(ndim, dtype=dtype))
        self.bias = Parameter(np.zeros(ndim, dtype=dtype)) if bias else None

    def forward(self, x: Tensor) -> Tensor:
        """x (..., C) -> (..., C)."""
        return ops.layer_norm(x, self.weight, self.bias, self.eps)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, bias={self.bias is not None}"


class Dropout(Module):
    """Inverted dropout with probability p, active only in training mode.

    Args:
        p: drop probability in [0, 1). rng: np.random.Generator shared with the model, so a
            checkpoint that stores its state resumes with the same masks.
    Raises:
        ValueError: p outside [0, 1).
    """

    def __init__(self, p: float = 0.0, rng: np.random.Generator | int | None = None):
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"Dropout: p must be in [0, 1), got {p}")
        self.p = float(p)
        self.rng = as_generator(rng)

    def forward(self, x: Tensor) -> Tensor:
        """x (any shape) -> same shape; identity in eval mode or when p == 0."""
        return ops.dropout(x, self.p, self.training, self.rng)

    def extra_repr(self) -> str:
        return f"p={self.p}"
