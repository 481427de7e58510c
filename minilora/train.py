"""The training loop, evaluation and progress lines (the checkpoint format is minilora.checkpoint).

One step (nanoGPT's loop, on minilora's engine):

    lr = cosine_schedule(k, ...)                    k = 1, 2, ... (the update's number)
    x, y = dataset.get_batch("train", B, T, rng)    rng: a seeded np.random.Generator
    loss = model(x, y)[1];  loss.backward()
    clip_grad_norm(params, grad_clip);  optimizer.step();  optimizer.zero_grad()

`train` relies only on `model(idx, targets) -> (logits, loss)`, `parameters()`/`named_parameters()`,
`train()`/`eval()`, `state_dict()`/`load_state_dict()` and an optional `model.rng` (the dropout
generator), so a LoRA-wrapped model trains the same way; the optimizer sees only the parameters with
`requires_grad`, so a LoRA model trains only its adapters.

With `out_dir`, a checkpoint (minilora.checkpoint.save_checkpoint) is written at every evaluation
point and at the end. Resuming restores weights, optimizer state and both RNG states, so
`train(..., resume=True)` continues bit for bit as an uninterrupted run would.

Divergence: a run whose loss is not finite, or whose validation loss exceeds `divergence_loss(V)` =
2 ln V nats (twice the loss of the uniform guess over the V-token vocabulary: 11.09 for 256 bytes),
raises FloatingPointError BEFORE that evaluation point's checkpoint is written, so the folder keeps the
last good checkpoint. Over- and underflow inside the steps are expected on the way to such a loss, so
NumPy's floating-point warnings are silenced in the loop; the loss checks report the outcome instead.
"""
from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass

import numpy as np

from .checkpoint import gpt_config_of, load_checkpoint, save_checkpoint
from .optim import AdamW, clip_grad_norm, cosine_schedule
from .tensor import no_grad

__all__ = ["TrainConfig", "train", "evaluate", "format_duration", "divergence_loss"]


def divergence_loss(vocab_size: int) -> float:
    """The validation loss (nats per token) above which a run counts as diverged: 2 ln(vocab_size).

    A model that knows nothing predicts uniformly and scores ln(vocab_size) (5.545 for 256 bytes); a
    trained model is far below it. Twice that means the weights have blown up (the example that set
    the rule: `--lr 50` reached 481769). Raises ValueError for vocab_size < 2.
    """
    if vocab_size < 2:
        raise ValueError(f"divergence_loss: vocab_size must be >= 2, got {vocab_size}")
    return 2.0 * math.log(vocab_size)


# --------------------------------------------------------------------------------------------------
# configuration
# --------------------------------------------------------------------------------------------------


@dataclass
class TrainConfig:
    """Hyper-parameters of a training run.

    Args:
        max_steps: number of optimizer updates (>= 1).
        batch_size: B, sequences per batch.
        lr: peak learning rate (reached after warm-up). min_lr: final lr of the cosine
            (None: lr / 10).
        warmup_steps: linear warm-up length (None: min(100, lr_decay_steps // 10)).
        lr_decay_steps: where the cosine reaches min_lr (None: max_steps). Set it to train in several
            sessions of one schedule (nanoGPT's lr_decay_iters).
        weight_decay: AdamW's decoupled decay (matrices only).
        grad_clip: max global gradient norm (None or 0: no clipping).
        eval_interval: evaluate (and checkpoint, if out_dir is given) every this many steps and at the end.
        eval_batches: number of fixed validation batches per evaluation.
        seed: seeds the batch generator and the choice of validation batches.
        log_interval: print a progress line every this many steps (and at the end).
        block_size: T, the context length of the batches (None: the model's `config.block_size`).
    Raises:
        ValueError / TypeError: a value out of range (the message names the field).
    """

    max_steps: int = 1000
    batch_size: int = 16
    lr: float = 1e-3
    min_lr: float | None = None
    warmup_steps: int | None = None
    weight_decay: float = 0.1
    grad_clip: float | None = 1.0
    eval_interval: int = 100
    eval_batches: int = 8
    seed: int = 0
    log_interval: int = 50
    block_size: int | None = None
    lr_decay_steps: int | None = None

    def __post_init__(self):
        def as_int(name, minimum, allow_none=False):
            v = getattr(self, name)
            if v is None and allow_none:
                return
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
                raise TypeError(f"TrainConfig.{name} must be an int, got {v!r}")
            if v < minimum:
                raise ValueError(f"TrainConfig.{name} must be >= {minimum}, got {v}")
            setattr(self, name, int(v))

        def as_float(name, lo, allow_none=False, strict=False):
            v = getattr(self, name)
            if v is None and allow_none:
                return
            try:
                f = float(v)
            except (TypeError, ValueError):
                raise TypeError(f"TrainConfig.{name} must be a number, got {v!r}") from None
            if not math.isfinite(f) or f < lo or (strict and f == lo):
                raise ValueError(f"TrainConfig.{name} must be a finite number {'>' if strict else '>='} {lo}, got {v}")
            setattr(self, name, f)

        for name in ("max_steps", "batch_size", "eval_interval", "eval_batches", "log_interval"):
            as_int(name, 1)
        as_int("seed", 0)
        as_int("block_size", 1, allow_none=True)
        as_int("lr_decay_steps", 1, allow_none=True)
        as_int("warmup_steps", 0, allow_none=True)
        as_float("lr", 0.0, strict=True)
        as_float("min_lr", 0.0, allow_none=True)
        as_float("weight_decay", 0.0)
        as_float("grad_clip", 0.0, allow_none=True)
        if self.min_lr is None:
            self.min_lr = self.lr / 10
        if self.min_lr > self.lr:
            raise ValueError(f"TrainConfig.min_lr={self.min_lr} must not exceed lr={self.lr}")
        if self.warmup_steps is None:
            self.warmup_steps = min(100, self.decay_steps // 10)
        if self.warmup_steps > self.decay_steps:
            raise ValueError(f"TrainConfig.warmup_steps={self.warmup_steps} exceeds the decay length "
                             f"{self.decay_steps} (lr_decay_steps or max_steps)")

    @property
    def decay_steps(self) -> int:
        """Where the cosine ends: lr_decay_steps, or max_steps."""
        return self.lr_decay_steps if self.lr_decay_steps is not None else self.max_steps

    def lr_at(self, k: int) -> float:
        """The learning rate of update k (k = 1, 2, ...)."""
        return cosine_schedule(k, self.lr, self.min_lr, self.warmup_steps, self.decay_steps)

    def to_dict(self) -> dict:
        """Plain dict (for JSON)."""
        return dataclasses.asdict(self)


# --------------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------------


def format_duration(seconds: float) -> str:
    """1m32s, 2h05m, 45s (for the ETA)."""
    s = int(round(max(0.0, seconds)))
    if s >= 3600:
        return f"{s // 3600}h{(s % 3600) // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s}s"


def _fmt_rate(tok_s: float) -> str:
    if tok_s >= 1e6:
        return f"{tok_s / 1e6:.1f}M"
    if tok_s >= 1e3:
        return f"{tok_s / 1e3:.1f}k"
    return f"{tok_s:.0f}"


def evaluate(model, batches) -> float:
    """Mean loss of `model` over fixed batches, in eval mode and without a graph.

    Args:
        model: callable `model(x, y) -> (logits, loss)` with `train()`/`eval()`.
        batches: list of (x, y) int arrays (B, T), e.g. `TokenDataset.fixed_batches("val", ...)`.
    Returns:
        the mean of the per-batch losses (float, nats per token). The model's mode is restored.
    Raises:
        ValueError: no batches.
    """
    batches = list(batches)
    if not batches:
        raise ValueError("evaluate: no batches given")
    was_training = getattr(model, "training", True)
    model.eval()
    try:
        with no_grad():
            losses = [float(model(x, y)[1].item()) for x, y in batches]
    finally:
        model.train(was_training)
    return float(np.mean(losses))


# --------------------------------------------------------------------------------------------------
# the loop
# --------------------------------------------------------------------------------------------------


def _empty_history():
    return {"step": [], "train_loss": [], "val_step": [], "val_loss": [], "lr": [],
            "tokens_per_s": None, "ms_per_step": None, "best": None, "final": None}


def train(model, dataset, cfg: TrainConfig, optimizer=None, out_dir=None, resume=False, log=print,
          val_batches=None, corpus: dict | None = None, callbacks=()) -> dict:
    """Train `model` on `dataset` for `cfg.max_steps` updates (see the module docstring).

    Args:
        model: a GPT or a wrapper with the interface listed in the module docstring.
        dataset: a minilora.data.TokenDataset.
        cfg: TrainConfig.
        optimizer: None builds AdamW(lr=cfg.lr, weight_decay=cfg.weight_decay) over the parameters
            with requires_grad (decay on matrices only); its lr is set by the schedule every step.
        out_dir: checkpoint directory (None: no checkpoints). Saved at every eval point and at the end.
        resume: continue from the checkpoint in out_dir (weights, optimizer, RNG states, history).
            `cfg.max_steps` may be larger than in the first session; keep the schedule the same
            (`lr_decay_steps`) to continue exactly as one uninterrupted run.
        log: callable taking one str (print by default; `lambda s: None` for silence).
        val_batches: fixed (x, y) batches for evaluation (None: `cfg.eval_batches` batches drawn
            from the validation split with seed cfg.seed; none if the split is empty).
        corpus: JSON-able record of the training data (minilora.checkpoint.corpus_record: name, sha256,
            bytes), written into every checkpoint's train_state["corpus"]. With resume=True, a
            checkpoint that records a corpus with another sha256 is refused.
        callbacks: objects with an `on_step_end(step, model)` method, called in order after each
            optimizer step (step = 1, 2, ... the update just applied), while the parameters still
            hold their gradients (zero_grad comes after). AdaLoRA's rank allocator uses it
            (`LoraModel.training_callbacks()`); a callback may change parameters in place.
    Returns:
        history dict: "step", "train_loss" (every step), "lr", "val_step", "val_loss" (at eval
        points), "tokens_per_s" and "ms_per_step" (median step time of this session),
        "best" {"step", "val_loss"} and "final" {"step", "train_loss", "val_loss"}.
    Raises:
        FileNotFoundError: resume=True and no checkpoint in out_dir.
        ValueError: resume without out_dir; a checkpoint that does not fit the model or optimizer, or
            that was trained on another corpus; a block size the model cannot take.
        FloatingPointError: the training loss became nan or inf, or the validation loss exceeded
            divergence_loss(vocab_size) (lower the lr); raised before that step's checkpoint is written.
    """
    if not isinstance(cfg, TrainConfig):
        raise TypeError(f"train: cfg must be a TrainConfig, got {type(cfg).__name__}")
    T = cfg.block_size
    if T is None:
        gcfg = gpt_config_of(model)
        if gcfg is None:
            raise ValueError("train: set TrainConfig.block_size (the model has no GPT config to take it from)")
        T = gcfg.block_size
    B = cfg.batch_size
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("train: the model has no parameter with requires_grad=True")
    callbacks = list(callbacks)
    for cb in callbacks:
        if not callable(getattr(cb, "on_step_end", None)):
            raise TypeError(f"train: callback {cb!r} has no on_step_end(step, model) method")
    if optimizer is None:
        optimizer = AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    rng = np.random.default_rng(cfg.seed)
    if val_batches is None:
        val_batches = (dataset.fixed_batches("val", cfg.eval_batches, B, T, seed=cfg.seed)
                       if dataset.val.size > 0 else [])
    history, step = _empty_history(), 0

    if resume:
        if out_dir is None:
            raise ValueError("train: resume=True needs out_dir (where the checkpoint is)")
        ck = load_checkpoint(out_dir)
        try:
            model.load_state_dict(ck["model"])
            optimizer.load_state_dict(ck["optim"])
        except (KeyError, ValueError) as e:
            raise ValueError(f"checkpoint {str(ck['path'])!r} does not match this model/optimizer: {e}") from e
        ts = ck["train_state"]
        if corpus is not None and ck["corpus"] is not None and ck["corpus"].get("sha256") != corpus.get("sha256"):
            raise ValueError(f"checkpoint {str(ck['path'])!r} was trained on corpus {ck['corpus'].get('name')!r} "
                             f"(sha256 {str(ck['corpus'].get('sha256'))[:12]}...), not on {corpus.get('name')!r} "
                             f"(sha256 {str(corpus.get('sha256'))[:12]}...); resume on the same data")
        try:
            rng.bit_generator.state = ts["batch_rng"]
            if ck["model_rng"] is not None and isinstance(getattr(model, "rng", None), np.random.Generator):
                model.rng.bit_generator.state = ck["model_rng"]
            history = {**_empty_history(), **ts["history"]}
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"checkpoint {str(ck['path'])!r} has no usable training state: {e}") from e
        step = ck["step"]
        log(f"resumed from {ck['path']} at step {step}")

    def train_state():
        state = {"train_config": cfg.to_dict(), "batch_rng": rng.bit_generator.state, "history": history,
                 "block_size": T}
        if corpus is not None:
            state["corpus"] = corpus
        return state

    gcfg = gpt_config_of(model)
    diverged_above = divergence_loss(gcfg.vocab_size) if gcfg is not None else math.inf

    n_all = sum(p.size for p in model.parameters())
    n_train = sum(p.size for p in params)
    log(f"training {n_train:,} of {n_all:,} parameters | steps {step}->{cfg.max_steps} | batch {B}x{T} | "
        f"optimizer state {optimizer.state_bytes() / 2**20:.1f} MiB")

    model.train()
    times, last_saved, tok = [], step if resume else None, B * T
    # over/underflow on the way to a diverged loss is expected: the loss checks below report it
    with np.errstate(over="ignore", under="ignore", invalid="ignore", divide="ignore"):
        while step < cfg.max_steps:
            t0 = time.perf_counter()
            lr = cfg.lr_at(step + 1)
            optimizer.set_lr(lr)
            x, y = dataset.get_batch("train", B, T, rng)                # (B, T), (B, T)
            _, loss = model(x, y)
            optimizer.zero_grad()
            loss.backward()
            if cfg.grad_clip:
                clip_grad_norm(params, cfg.grad_clip)
            optimizer.step()
            step += 1
            for cb in callbacks:
                cb.on_step_end(step, model)
            optimizer.zero_grad()
            lv = float(loss.item())
            times.append(time.perf_counter() - t0)
            if not math.isfinite(lv):
                kept = "" if last_saved is None else f"; the checkpoint of step {last_saved} is kept"
                raise FloatingPointError(f"train: the run diverged at step {step} (lr {lr:.3g}): the training loss "
                                         f"became {lv}; lower the lr{kept}")
            history["step"].append(step)
            history["train_loss"].append(lv)
            history["lr"].append(lr)

            last = step == cfg.max_steps
            if step % cfg.eval_interval == 0 or last:
                if val_batches:
                    vl = evaluate(model, val_batches)
                    if not math.isfinite(vl) or vl > diverged_above:  # never checkpoint a diverged model
                        raise FloatingPointError(
                            f"train: the run diverged at step {step} (lr {lr:.3g}): validation loss {vl:.6g} is "
                            f"above {diverged_above:.2f} = 2 ln(vocab), twice a uniform guess's; lower the lr"
                            + ("" if last_saved is None else f"; the checkpoint of step {last_saved} is kept"))
                    history["val_step"].append(step)
                    history["val_loss"].append(vl)
                    if history["best"] is None or vl < history["best"]["val_loss"]:
                        history["best"] = {"step": step, "val_loss": vl}
            if step % cfg.log_interval == 0 or last:
                recent = history["train_loss"][-cfg.log_interval:]
                ms = 1000 * float(np.median(times[-cfg.log_interval:]))
                val = f"{history['val_loss'][-1]:.3f}" if history["val_loss"] else "-"
                log(f"step {step}/{cfg.max_steps} | train {np.mean(recent):.3f} | val {val} | "
                    f"{_fmt_rate(tok * 1000 / ms)} tok/s | {ms:.0f} ms/step | "
                    f"eta {format_duration((cfg.max_steps - step) * ms / 1000)}")
            if last or step % cfg.eval_interval == 0:
                ms_med = 1000 * float(np.median(times))
                history["ms_per_step"] = ms_med
                history["tokens_per_s"] = tok * 1000 / ms_med
                history["final"] = {"step": step,
                                    "train_loss": float(np.mean(history["train_loss"][-cfg.log_interval:])),
                                    "val_loss": history["val_loss"][-1] if history["val_loss"] else None}
                if out_dir is not None:
                    save_checkpoint(out_dir, model, optimizer, step, train_state())
                    last_saved = step

    if out_dir is not None and last_saved != step:
        save_checkpoint(out_dir, model, optimizer, step, train_state())
    if times:
        history["ms_per_step"] = 1000 * float(np.median(times))
        history["tokens_per_s"] = tok * 1000 / history["ms_per_step"]
    return history
