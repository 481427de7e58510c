"""minilora: LoRA from the ground up in NumPy.

An autograd engine (tensor.py, function.py, ops.py), gradient checking (gradcheck.py), a GPT-2
transformer (nn/), LoRA with a hand-derived backward (lora/), SVD rank analysis (rank.py),
optimizers, data, training, and a CLI. This file only re-exports the public names; matplotlib is
never imported here (plots.py imports it inside its functions).
"""
from . import data, io, nn, ops, optim, rank
from . import ops as F
from .checkpoint import load_model
from .function import Function, unbroadcast
from .gradcheck import GradcheckError, check_function, check_grad, check_vjp, compare, numerical_grad
from .lora import (
    LoraConfig,
    LoRALinear,
    LoraModel,
    get_peft_model,
    inject_lora,
    load_lora_model,
    mark_only_lora_as_trainable,
)
from .nn import GPT, GPTConfig
from .tensor import Tensor, is_grad_enabled, no_grad, tensor
from .train import TrainConfig, evaluate, train

__version__ = "0.1.0"

__all__ = ["Tensor", "tensor", "no_grad", "is_grad_enabled", "Function", "unbroadcast", "ops", "F",
           "numerical_grad", "check_grad", "check_vjp", "check_function", "compare", "GradcheckError",
           "nn", "GPT", "GPTConfig", "LoraConfig", "LoRALinear", "LoraModel", "get_peft_model", "inject_lora",
           "load_lora_model", "mark_only_lora_as_trainable", "TrainConfig", "train", "evaluate", "load_model",
           "data", "io", "optim", "rank"]
