"""Helpers shared by the experiments: the base model, the corpora, budgets, fine-tuning, output files.

Every experiment module of :mod:`minilora.experiments` uses these and nothing private of another
module: the pretrained base (:func:`get_base`), the cached built-in corpora (:func:`dataset`), the
step/batch budgets (:func:`settings`), one fine-tuning routine (:func:`finetune`: LoRA on c_attn's
query and value slices, full fine-tuning, or a named subset of parameters), the query/value factors
of a LoRA c_attn (:func:`qv_factors`, on top of :func:`minilora.rank.lora_factors`), and the
writers of ``<name>.json`` / ``<name>.md`` (:func:`write_results`, :func:`md_table`); figures come
from :mod:`minilora.plots`. Every file is written atomically (:mod:`minilora.io`).
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import numpy as np

from .. import io as _io
from .. import rank as R
from ..checkpoint import load_model
from ..data import ByteTokenizer, TokenDataset, load_corpus
from ..finetune import copy_model
from ..lora import LoraConfig, get_peft_model
from ..nn import GPT, GPTConfig
from ..optim import SGD, AdamW
from ..train import TrainConfig, train

__all__ = ["Log", "DEFAULT_BASE_DIR", "QUICK_GPT", "QV", "get_base", "dataset", "settings", "val_batches", "plain_gpt",
           "c_attn", "qv_factors", "finetune", "jsonable", "write_results", "md_table"]

DEFAULT_BASE_DIR = "runs/demo/base"
QUICK_GPT = dict(vocab_size=256, block_size=32, n_layer=2, n_head=2, n_embd=32, dropout=0.0, bias=True)
QV = [True, False, True]          # enable_lora for c_attn: query and value slices, not key

Log = Callable[[str], object]     # a progress-line printer, e.g. print

_DATA: dict = {}
_QUICK_BASE: dict = {}


def dataset(name: str) -> TokenDataset:
    """The TokenDataset of a built-in corpus ("pydoc" or "stdlib"), cached: each corpus is read once
    per process. Raises ValueError for an unknown name (as :func:`minilora.data.load_corpus`)."""
    if name not in _DATA:
        _DATA[name] = TokenDataset(ByteTokenizer().encode(load_corpus(name)))
    return _DATA[name]


def settings(quick: bool, steps: int | None = None, batch_size: int | None = None,
             eval_batches: int | None = None) -> dict:
    """Budgets: quick (tests, seconds: 30 steps, batch 8, 2 eval batches) or the default
    (`minilora analyze all` in a few minutes: 120 steps, batch 16, 8 eval batches); a given value
    overrides. Returns dict with int "steps", "batch_size", "eval_batches"."""
    s = dict(steps=30, batch_size=8, eval_batches=2) if quick else dict(steps=120, batch_size=16, eval_batches=8)
    if steps is not None:
        s["steps"] = int(steps)
    if batch_size is not None:
        s["batch_size"] = int(batch_size)
    if eval_batches is not None:
        s["eval_batches"] = int(eval_batches)
    return s


def val_batches(data: TokenDataset, model, s: dict, seed: int = 0) -> list:
    """``s["eval_batches"]`` fixed validation batches (x, y), each int64 (batch_size, block_size)."""
    T = plain_gpt(model).config.block_size
    return data.fixed_batches("val", s["eval_batches"], s["batch_size"], T, seed=seed)


def plain_gpt(model) -> GPT:
    """The plain GPT inside a LoraModel (or the model itself)."""
    return getattr(model, "base_model", model)


def c_attn(model, i: int):
    """The fused q,k,v projection ``transformer.h.<i>.attn.c_attn`` of a GPT or LoraModel."""
    return model.get_submodule(f"transformer.h.{i}.attn.c_attn")


def qv_factors(model, i: int) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """The query and value adapters of layer i's c_attn (LoRA with enable_lora = QV), in float64.

    The group layout is :func:`minilora.rank.lora_factors`'s (group 0 = query, group 1 = value).
    Returns: ``({"query": A_q, "value": A_v}, {"query": ΔW_q, "value": ΔW_v})`` with A (r, n_embd) and
    ΔW = scaling · B @ A (n_embd, n_embd) (LoRA §4.1, Eq. 3), float64.
    Raises: as :func:`minilora.rank.lora_factors` (TypeError for a layer without LoRA).
    """
    groups = R.lora_factors(c_attn(model, i))
    A = {name: np.asarray(A_i, np.float64) for name, (_, A_i, _, _) in zip(("query", "value"), groups, strict=True)}
    dW = {name: s * np.asarray(B_i, np.float64) @ A[name]
          for name, (_, _, B_i, s) in zip(("query", "value"), groups, strict=True)}
    return A, dW


def get_base(base_dir: str | Path | None = None, quick: bool = False, log: Log = print) -> GPT:
    """A GPT pretrained on the pydoc prose.

    * ``base_dir`` holding a checkpoint: load it (``checkpoint.load_model``).
    * quick=True (tests): a tiny GPT (2 layers x 32 channels) pretrained for 300 steps, in memory,
      cached per process (a copy is returned each call).
    * otherwise: ``base_dir`` (default runs/demo/base, the demo's base) is pretrained with the
      demo's configuration (4 layers x 128 channels, 1,200 steps; minutes), so the demo and the
      experiments share one base.
    """
    if base_dir is not None and (Path(base_dir) / "latest.json").exists():
        log(f"loading the pretrained base from {base_dir}")
        return load_model(base_dir)
    if quick:
        if "model" not in _QUICK_BASE:
            t = time.perf_counter()
            model = GPT(GPTConfig(**QUICK_GPT), seed=0)
            cfg = TrainConfig(max_steps=300, batch_size=16, lr=1e-2, eval_interval=300, eval_batches=2,
                              log_interval=300, weight_decay=0.0)
            train(model, dataset("pydoc"), cfg, log=log)
            _QUICK_BASE["model"] = model
            log(f"pretrained a tiny base in {time.perf_counter() - t:.1f} s")
        return copy_model(_QUICK_BASE["model"])
    from ..demo import DemoConfig, pretrained_base
    base_dir = Path(base_dir or DEFAULT_BASE_DIR)
    log(f"pretraining the demo's base model into {base_dir} (reused by later runs)")
    model, _, _ = pretrained_base(DemoConfig(), dataset("pydoc"), base_dir, log)
    return model


def finetune(base: GPT, data: TokenDataset, s: dict, method: str = "lora", r: int = 8, lora_alpha: float = 8.0,
             lr: float | None = None, init_seed: int = 0, data_seed: int = 1, trainable: set | None = None,
             optimizer: str = "adamw", log: Log = print) -> tuple:
    """Adapt a copy of ``base`` (left untouched) and return ``(model, history)``, model in eval mode.

    Args:
        base: a GPT. data: the TokenDataset to train on. s: budgets from :func:`settings`.
        method: "lora" (LoRA r, lora_alpha on c_attn's q and v slices, default lr 3e-3), "full"
            (every parameter, default lr 1e-3) or "subset" (only the parameters named in
            ``trainable``, default lr 1e-3).
        init_seed: seeds the LoRA factors; data_seed: the batch order (kept fixed across init seeds,
            as LoRA §7.2 compares seeds).
        optimizer: "adamw" (weight decay 0) or "sgd" (momentum 0.9).
    The schedule is `train`'s: warm-up min(10, steps/10) then cosine; gradient clipping at 1.
    """
    model = copy_model(base)
    if method == "lora":
        model.rng = np.random.default_rng(init_seed)
        model = get_peft_model(model, LoraConfig(r=r, lora_alpha=lora_alpha, target_modules=["c_attn"],
                                                 enable_lora=list(QV)))
        lr = 3e-3 if lr is None else lr
    elif method == "subset":
        model.requires_grad_(False)
        for name, p in model.named_parameters():
            if name in trainable:
                p.requires_grad = True
        lr = 1e-3 if lr is None else lr
    else:
        lr = 1e-3 if lr is None else lr
    cfg = TrainConfig(max_steps=s["steps"], batch_size=s["batch_size"], lr=lr, weight_decay=0.0,
                      warmup_steps=min(10, s["steps"] // 10), eval_interval=s["steps"],
                      eval_batches=s["eval_batches"], seed=data_seed,
                      log_interval=max(1, s["steps"] // 2))
    params = [p for p in model.parameters() if p.requires_grad]
    opt = (SGD(params, lr=lr, momentum=0.9) if optimizer == "sgd"
           else AdamW(params, lr=lr, weight_decay=0.0))
    hist = train(model, data, cfg, optimizer=opt, log=log)
    model.eval()
    return model, hist


def jsonable(obj):
    """Drop private keys (``_models``) and turn numpy scalars/arrays and non-finite floats into plain
    JSON values (nan/inf become the strings "nan"/"inf")."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items() if not str(k).startswith("_")}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, float) and not np.isfinite(obj):
        return str(obj)
    return obj


def write_results(out: Path, name: str, results: dict, md: str) -> None:
    """Write ``<out>/<name>.json`` (:func:`jsonable` of results) and ``<out>/<name>.md``, atomically."""
    _io.save_json_atomic(out / f"{name}.json", jsonable(results))
    _io.atomic_write_bytes(out / f"{name}.md", (md.rstrip() + "\n").encode("utf-8"))


def md_table(header: list, rows: list) -> str:
    """A markdown table: ``header`` list of str, ``rows`` lists of cells; floats with 4 significant digits."""
    def fmt(v):
        if isinstance(v, (float, np.floating)):
            return f"{v:.4g}"
        return str(v)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)
