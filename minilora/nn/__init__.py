"""Neural-network building blocks and the GPT-2 model."""
from .gpt import GPT, MLP, Block, CausalSelfAttention, GPTConfig, ModuleList
from .layers import Dropout, Embedding, LayerNorm, Linear
from .module import Module, Parameter

__all__ = ["Module", "Parameter", "Linear", "Embedding", "LayerNorm", "Dropout", "GPTConfig", "GPT",
           "Block", "CausalSelfAttention", "MLP", "ModuleList"]
