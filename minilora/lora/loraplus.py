r"""LoRA+: a larger learning rate for B than for A (Hayou, Ghosh and Yu 2024, arXiv:2402.12354).

The argument (§3-4, in the infinite-width limit d → ∞): with one learning rate η for both factors,
the updates of A and B cannot both be "efficient" (each contributing Θ(1) to the change of the
output per step). B's gradient is s·Gᵀ(X̃Aᵀ): large, because X̃Aᵀ sums over d_in; A's gradient
s·(GB)ᵀX̃ is small while B is small (exactly 0 at the standard init B = 0). Feature learning at
every width needs η_B / η_A = Θ(d); the paper sets η_B = λ·η_A with λ = 2⁴ = 16 as the default
that worked across its models (§5), which PEFT's `create_loraplus_optimizer` also uses.

Groups, as PEFT (`peft/optimizers/loraplus.py`) builds them:
    "A":          every trainable matrix that is not a lora_B      lr,      weight_decay
    "B":          lora_B matrices                                  λ·lr,    weight_decay
    "B_no_decay": trainable 1-D parameters (DoRA's magnitude m,    λ·lr,    0
                  trained biases): PEFT puts every 1-D parameter with B

`Optimizer.set_lr` (the schedule in `train`) scales every group by the same factor, so the ratio
λ holds at every step of warm-up and cosine decay.
"""
from __future__ import annotations

from numbers import Real

from ..nn.module import Module
from ..optim import AdamW

__all__ = ["LORAPLUS_LR_RATIO", "loraplus_param_groups", "create_loraplus_optimizer"]

LORAPLUS_LR_RATIO = 16.0


def _check_positive(name: str, v) -> float:
    if isinstance(v, bool) or not isinstance(v, Real) or not v > 0 or v != v or v == float("inf"):
        raise ValueError(f"LoRA+: {name} must be a finite number > 0, got {v!r}")
    return float(v)


def loraplus_param_groups(model: Module, lr: float, loraplus_lr_ratio: float = LORAPLUS_LR_RATIO,
                          weight_decay: float = 0.0) -> list[dict]:
    """AdamW parameter groups of LoRA+ over `model`'s trainable parameters (module docstring).

    Args: model (a LoraModel, or any Module: its parameters with requires_grad); lr (float > 0): A's
        learning rate; loraplus_lr_ratio λ (float > 0, default 16): B's lr is λ·lr; weight_decay >= 0.
    Returns: list of dicts {"params", "lr", "weight_decay"} in the order A, B, B_no_decay (empty
        groups left out), ready for `AdamW(groups, lr=lr)`.
    Raises: ValueError for a non-positive lr or ratio, or a model with no trainable lora_B.
    """
    lr = _check_positive("lr", lr)
    ratio = _check_positive("loraplus_lr_ratio", loraplus_lr_ratio)
    group_a, group_b, group_b_nd = [], [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if p.ndim < 2:
            group_b_nd.append(p)
        elif "lora_B" in name.split("."):
            group_b.append(p)
        else:
            group_a.append(p)
    if not group_b:
        raise ValueError("LoRA+: the model has no trainable lora_B parameter (inject LoRA first)")
    groups = [{"params": group_a, "lr": lr, "weight_decay": weight_decay},
              {"params": group_b, "lr": lr * ratio, "weight_decay": weight_decay},
              {"params": group_b_nd, "lr": lr * ratio, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


def create_loraplus_optimizer(model: Module, lr: float, loraplus_lr_ratio: float = LORAPLUS_LR_RATIO,
                              weight_decay: float = 0.0, **adamw_kwargs) -> AdamW:
    """AdamW over `loraplus_param_groups` (PEFT's `create_loraplus_optimizer` with AdamW).

    The optimizer's default lr is `lr`, so `set_lr(lr_t)` gives A lr_t and B λ·lr_t.
    """
    groups = loraplus_param_groups(model, lr, loraplus_lr_ratio, weight_decay)
    return AdamW(groups, lr=lr, weight_decay=weight_decay, **adamw_kwargs)
