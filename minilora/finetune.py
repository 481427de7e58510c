"""Fine-tuning a pretrained GPT on a new corpus: LoRA or full fine-tuning, with the figures to compare.

`finetune(base, dataset, method="lora" | "full", ...)` copies the base model (the base itself is never
modified), adapts the copy, trains it with `minilora.train.train`, and returns a `FinetuneResult`
holding the adapted model and what the demo's table reports: trainable parameters, optimizer-state
bytes, ms per step and the loss history.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from . import peft
from .lora import LoraConfig, get_peft_model
from .lora.loraplus import create_loraplus_optimizer
from .lora.variant import get_variant
from .nn import GPT
from .optim import AdamW
from .train import TrainConfig, train

__all__ = ["FinetuneResult", "copy_model", "finetune"]

# what a user typed, for messages: the registry's names are internal ("residual" is chosen by a start)
_VARIANT_NAMES = {"dora": "DoRA (--use-dora)", "dora_exact": "DoRA (exact gradient)",
                  "residual": "PiSSA/OLoRA (--init-lora-weights)", "vera": "VeRA (--variant vera)"}



@dataclass
class FinetuneResult:
    """What a fine-tuning run produced.

    Attributes:
        method: "lora", "full" or "peft".
        model: the adapted model (a LoraModel for LoRA, a GPT for full fine-tuning, a
            peft.PeftModel for a baseline).
        history: the dict returned by `minilora.train.train` (losses, ms_per_step, ...).
        trainable_params: number of trained scalars. all_params: number of scalars in the model.
        optimizer_state_bytes: bytes of AdamW's m and v (2 float arrays per trained parameter).
        extra: figures of a quantized run (quantize="nf4"): "quantized" (layer names) and
            "base_memory" (`quant.base_memory`); empty otherwise.
    """

    method: str
    model: object
    history: dict
    trainable_params: int
    all_params: int
    optimizer_state_bytes: int
    extra: dict = field(default_factory=dict)

    @property
    def ms_per_step(self) -> float:
        """Median milliseconds per training step (forward, backward, AdamW)."""
        return float(self.history.get("ms_per_step") or 0.0)


def copy_model(model: GPT, seed=0) -> GPT:
    """A new GPT with the same config, dtype and weights (bit for bit); the original is untouched.

    seed (int or sequence of ints) seeds the clone's `rng` (dropout masks, LoRA initialisation).
    """
    clone = GPT(model.config, dtype=model.dtype, seed=seed)
    clone.load_state_dict(model.state_dict())
    return clone


def finetune(base: GPT, dataset, method="lora", lora_config: LoraConfig | None = None,
             cfg: TrainConfig | None = None, log=print, out_dir=None, seed=0, quantize: str | None = None,
             double_quant: bool = True, callbacks=(), peft_config=None,
             loraplus_lr_ratio: float | None = None) -> FinetuneResult:
    """Adapt a copy of `base` to `dataset` with LoRA, full fine-tuning or a baseline of `minilora.peft`.

    Args:
        base: a pretrained GPT (not modified).
        dataset: minilora.data.TokenDataset of the new domain.
        method: "lora" (freeze the base, train adapters per lora_config), "full" (train everything)
            or "peft" (a baseline of minilora.peft: adapters, prefix/prompt tuning, BitFit, IA3, per
            peft_config, e.g. `peft.make_config("ia3")`).
        lora_config: LoraConfig for method="lora" (default: r=8, lora_alpha=16 on c_attn).
        cfg: TrainConfig (steps, lr, ...); default TrainConfig(max_steps=200).
        log: progress printer. out_dir: checkpoint directory for the run (None: no checkpoints).
        seed: seeds the LoRA initialisation and dropout, together with r: runs with different ranks
            get independent initial A (with one stream, A of rank 4 would be the first rows of A of
            rank 16, and their subspaces would overlap before any training).
        quantize: None (float base) or "nf4": QLoRA, every Linear of the copy's blocks stored in
            4-bit NF4 after injection (`minilora.quant.quantize_model`); the memory of the base is
            measured into `result.extra["base_memory"]` (`quant.base_memory`). LoRA only.
        double_quant: with quantize, also quantize the block constants (QLoRA's default).
        callbacks: extra `train` callbacks (on_step_end(step, model)); the LoRA model's own
            (`LoraModel.training_callbacks()`, e.g. AdaLoRA's rank allocation) run first. An
            AdaLoraConfig without total_step gets cfg.max_steps.
        loraplus_lr_ratio: None, or LoRA+'s λ (arXiv:2402.12354): lora_B (and 1-D adapter parameters)
            train with λ·lr, the rest with lr (`lora.loraplus.loraplus_param_groups`); LoRA only.
    Returns:
        FinetuneResult.
    Raises:
        ValueError: unknown method, or a LoRA config that does not fit the model.
    """
    if method not in ("lora", "full", "peft"):
        raise ValueError(f"finetune: method must be 'lora', 'full' or 'peft', got {method!r}")
    if method == "peft" and peft_config is None:
        raise ValueError("finetune: method 'peft' needs a peft_config (e.g. minilora.peft.make_config('ia3'))")
    cfg = cfg or TrainConfig(max_steps=200)
    lora_config = lora_config or LoraConfig()
    model = copy_model(base, seed=[seed, lora_config.r] if method == "lora" else seed)
    if quantize is not None and (method != "lora" or quantize != "nf4"):
        raise ValueError(f"finetune: quantize must be None or 'nf4' (with method='lora'), got {quantize!r}")
    variant = getattr(lora_config, "variant", "lora")
    if quantize is not None and not get_variant(variant).supports_quantized_base:
        raise ValueError(f"finetune: the {_VARIANT_NAMES.get(variant, variant)} variant needs the float base "
                         "weight; a 4-bit base (--quantize nf4) is not supported with it")
    extra = {}
    callbacks = list(callbacks)
    if method == "lora":
        if getattr(lora_config, "total_step", 0) is None:
            lora_config = lora_config.replace(total_step=cfg.max_steps)
        model = get_peft_model(model, lora_config)
        callbacks = model.training_callbacks() + callbacks
    elif method == "peft":
        model = peft.get_peft_model(model, peft_config)
    if quantize is not None:
        from .quant import base_memory, quantize_model
        extra["quantized"] = quantize_model(model, double_quant=double_quant)
        extra["base_memory"] = base_memory(model)
    params = [p for p in model.parameters() if p.requires_grad]
    if loraplus_lr_ratio is not None:
        if method != "lora":
            raise ValueError("finetune: loraplus_lr_ratio applies to method='lora' only")
        opt = create_loraplus_optimizer(model, cfg.lr, loraplus_lr_ratio, cfg.weight_decay)
    else:
        opt = AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    history = train(model, dataset, cfg, optimizer=opt, out_dir=out_dir, log=log, callbacks=callbacks)
    return FinetuneResult(method=method, model=model, history=history,
                          trainable_params=int(sum(p.size for p in params)),
                          all_params=int(sum(p.size for p in model.parameters())),
                          optimizer_state_bytes=int(opt.state_bytes()), extra=extra)
