"""The checkpoint format: crash-safe save, verified load, and `load_model` (a GPT back from its folder).

Checkpoint directory format (`out_dir/`):

    ckpt-000100.npz     arrays: "model.<name>" (state_dict) and "optim.<key>" (optimizer state_dict)
    ckpt-000100.json    metadata: step, model class/config/dtype, train state (train config, RNG state
                        of the batch generator, history, the corpus record), RNG state of model.rng
                        (`Generator.bit_generator.state`), and the sha256 of the .npz
    latest.json         the pointer {"step", "json", "npz"}: written atomically, LAST

A save writes the two step-stamped files (each atomically, via minilora.io), then moves the pointer,
and only then removes older stamped files. Killed at any moment, the directory still holds a complete
checkpoint that `latest.json` points to. A kill in the middle of a write leaves the writer's temporary
file (`.ckpt-000100.npz.<random>.tmp`, as large as the checkpoint); the next save in that folder removes
such files, and a load removes those older than `STALE_TEMP_SECONDS` (a younger one may belong to a run
that is saving right now). Nothing else in the folder is ever touched.

The corpus a model was trained on is recorded by `train(..., corpus=corpus_record(...))` in
`train_state["corpus"]` ({"name", "sha256", "bytes"}), so that a resumed run continues on the same
data. Checkpoints written before this record existed (such as the shipped `pydoc-s`) load unchanged.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import time
from pathlib import Path

import numpy as np

from . import io as _io

__all__ = ["CHECKPOINT_FORMAT", "CHECKPOINT_VERSION", "STALE_TEMP_SECONDS", "save_checkpoint", "load_checkpoint",
           "load_model", "has_checkpoint", "corpus_record", "gpt_config_of", "remove_stale_temp_files"]

CHECKPOINT_FORMAT = "minilora-checkpoint"
CHECKPOINT_VERSION = 1
# A 10 MB save takes well under a second; a temporary file this old belongs to a killed writer.
STALE_TEMP_SECONDS = 300.0
_STAMPED = re.compile(r"^ckpt-(\d{6,})\.(npz|json)$")
# minilora.io.atomic_write_bytes names its temporary file ".<target name>.<random>.tmp"
_TEMP = re.compile(r"^\.(ckpt-\d{6,}\.(npz|json)|latest\.json)\.[A-Za-z0-9_]+\.tmp$")


def gpt_config_of(model):
    """The GPTConfig of a GPT, or of the GPT inside a wrapper (`base_model` / `model` attribute), or None."""
    from .nn.gpt import GPTConfig

    seen = set()
    m = model
    for _ in range(4):
        if m is None or id(m) in seen:
            return None
        seen.add(id(m))
        cfg = getattr(m, "config", None)
        if isinstance(cfg, GPTConfig):
            return cfg
        inner = getattr(m, "base_model", None)
        m = inner if inner is not None else getattr(m, "model", None)
    return None


def _param_dtype(model):
    for p in model.parameters():
        return np.dtype(p.dtype).name
    return None


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def corpus_record(name_or_path, text: str | bytes) -> dict:
    """What a checkpoint records about its training corpus: {"name", "sha256", "bytes"}.

    Args:
        name_or_path: a built-in corpus name ("pydoc", "stdlib") or a file path (recorded as an
            absolute path, so a resume from another working directory finds it).
        text: the corpus as loaded (str, hashed as UTF-8, or bytes).
    Returns:
        dict: "name" (str), "sha256" (hex digest of the UTF-8 bytes), "bytes" (int, their count).
    """
    from .data import CORPORA

    data = text.encode("utf-8") if isinstance(text, str) else bytes(text)
    name = str(name_or_path)
    if name not in CORPORA:
        name = str(Path(name).resolve())
    return {"name": name, "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}


def remove_stale_temp_files(out_dir, min_age_seconds: float = 0.0) -> list[Path]:
    """Delete temporary files left in a checkpoint folder by a writer killed mid-save.

    Only names of this scheme are touched: `.ckpt-NNNNNN.npz.<random>.tmp`, `.ckpt-NNNNNN.json.<random>.tmp`
    and `.latest.json.<random>.tmp` (the names minilora.io.atomic_write_bytes gives them).

    Args:
        out_dir: the checkpoint folder (a missing or unreadable folder is no error).
        min_age_seconds: leave files modified less than this many seconds ago (0: remove all).
    Returns:
        the paths removed.
    """
    removed = []
    try:
        entries = list(Path(out_dir).iterdir())
    except OSError:
        return removed
    now = time.time()
    for f in entries:
        if not _TEMP.match(f.name):
            continue
        try:
            if min_age_seconds and now - f.stat().st_mtime < min_age_seconds:
                continue
            f.unlink()
            removed.append(f)
        except OSError:            # gone already, or a read-only folder (the shipped checkpoints)
            pass
    return removed


def save_checkpoint(out_dir, model, optimizer, step, train_state=None) -> Path:
    """Write a crash-safe checkpoint of `model` (and `optimizer`) at `step` into directory `out_dir`.

    Order: removal of stale temporary files, `ckpt-<step>.npz`, then `ckpt-<step>.json` (with the npz's
    sha256), then `latest.json` (all atomic), then removal of older `ckpt-*` files. See the module
    docstring for the format.

    Args:
        out_dir: directory (created if missing).
        model: anything with `state_dict()`; its `rng` (if any) and GPT config (if found) are recorded.
        optimizer: an Optimizer or None.
        step: number of completed updates (int >= 0).
        train_state: JSON-able dict stored as is (train() puts the train config, the batch RNG state,
            the history and the corpus record there).
    Returns:
        the path of the metadata file written.
    Raises:
        TypeError: train_state not JSON-able (nothing is written then). OSError: from the writes.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    step = int(step)
    stem = f"ckpt-{step:06d}"
    npz_path, json_path = out / f"{stem}.npz", out / f"{stem}.json"

    arrays = {f"model.{k}": v for k, v in model.state_dict().items()}
    if optimizer is not None:
        arrays.update({f"optim.{k}": v for k, v in optimizer.state_dict().items()})
    rng = getattr(model, "rng", None)
    gcfg = gpt_config_of(model)
    meta = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "step": step,
        "npz": npz_path.name,
        "model_class": type(model).__name__,
        "model_config": gcfg.to_dict() if gcfg is not None else None,
        "dtype": _param_dtype(model),
        "has_optimizer": optimizer is not None,
        "optimizer_class": type(optimizer).__name__ if optimizer is not None else None,
        "model_rng": rng.bit_generator.state if isinstance(rng, np.random.Generator) else None,
        "train_state": train_state if train_state is not None else {},
    }
    json.dumps(meta)                     # fail on non-JSON-able train_state before touching the disk

    remove_stale_temp_files(out)         # this process is the folder's writer: any temp file is stale
    _io.save_npz_atomic(npz_path, arrays)
    meta["sha256"] = _sha256_file(npz_path)
    _io.save_json_atomic(json_path, meta)
    _io.save_json_atomic(out / "latest.json", {"format": CHECKPOINT_FORMAT, "step": step,
                                               "json": json_path.name, "npz": npz_path.name})
    for f in out.iterdir():              # the pointer has moved: older checkpoints may go
        m = _STAMPED.match(f.name)
        if m and f.name not in (npz_path.name, json_path.name):
            try:
                f.unlink()
            except OSError:
                pass
    return json_path


def load_checkpoint(out_dir) -> dict:
    """Read the checkpoint `out_dir/latest.json` points to (or a given `ckpt-*.json` file).

    Temporary files of a writer killed mid-save, older than STALE_TEMP_SECONDS, are removed first.

    Returns:
        dict with "step", "model" (name -> array), "optim" (key -> array; empty without optimizer),
        "model_class", "model_config" (dict or None), "dtype", "model_rng" (bit_generator state or None),
        "train_state" (dict), "corpus" (the corpus record dict, or None for checkpoints without one),
        "meta" (the whole metadata) and "path" (the metadata file).
    Raises:
        FileNotFoundError: no such directory, or no checkpoint in it.
        ValueError: a corrupted, truncated or inconsistent file (the message names it): bad JSON, a
            dangling pointer, an .npz whose sha256 differs from the recorded one, an unreadable .npz.
    """
    p = Path(out_dir)
    if p.is_file():
        json_path = p
    else:
        if not p.is_dir():
            raise FileNotFoundError(f"no checkpoint directory {str(p)!r}")
        remove_stale_temp_files(p, STALE_TEMP_SECONDS)
        pointer = p / "latest.json"
        if not pointer.exists():
            raise FileNotFoundError(f"no checkpoint in {str(p)!r} (no latest.json)")
        ptr = _io.load_json(pointer)
        if not isinstance(ptr, dict) or not isinstance(ptr.get("json"), str):
            raise ValueError(f"{str(pointer)!r} is not a minilora checkpoint pointer (corrupted?)")
        json_path = p / ptr["json"]
        if not json_path.is_file():
            raise ValueError(f"{str(pointer)!r} points to {str(json_path)!r}, which is missing")
    meta = _io.load_json(json_path)
    required = ("format", "step", "npz", "sha256", "train_state")
    if not isinstance(meta, dict) or meta.get("format") != CHECKPOINT_FORMAT or any(k not in meta for k in required):
        raise ValueError(f"{str(json_path)!r} is not a minilora checkpoint metadata file (corrupted or "
                         f"another format; needs keys {list(required)})")
    npz_path = json_path.parent / meta["npz"]
    if not npz_path.is_file():
        raise ValueError(f"checkpoint {str(json_path)!r} refers to {str(npz_path)!r}, which is missing")
    digest = _sha256_file(npz_path)
    if digest != meta["sha256"]:
        raise ValueError(f"{str(npz_path)!r} is corrupted or truncated: its sha256 {digest[:12]}... differs "
                         f"from the {meta['sha256'][:12]}... recorded in {json_path.name}")
    arrays = _io.load_npz(npz_path)
    model_sd = {k[len("model."):]: v for k, v in arrays.items() if k.startswith("model.")}
    optim_sd = {k[len("optim."):]: v for k, v in arrays.items() if k.startswith("optim.")}
    ts = meta["train_state"]
    corpus = ts.get("corpus") if isinstance(ts, dict) else None
    return {"step": int(meta["step"]), "model": model_sd, "optim": optim_sd,
            "model_class": meta.get("model_class"), "model_config": meta.get("model_config"),
            "dtype": meta.get("dtype"), "model_rng": meta.get("model_rng"),
            "train_state": ts, "corpus": corpus if isinstance(corpus, dict) else None,
            "meta": meta, "path": json_path}


def load_model(out_dir, dtype=None):
    """Rebuild the GPT saved in a checkpoint directory (weights bit for bit, and its dropout RNG state).

    Args:
        out_dir: a checkpoint directory (or a `ckpt-*.json` file).
        dtype: cast the parameters to it (e.g. np.float64); None keeps the saved dtype.
    Returns:
        a GPT in training mode (call `.eval()` for inference; `generate` does it for you).
    Raises:
        FileNotFoundError / ValueError: as load_checkpoint; ValueError also when the checkpoint does
            not hold a plain GPT, or its arrays do not match its config.
    """
    from .nn.gpt import GPT, GPTConfig

    ck = load_checkpoint(out_dir)
    if ck["model_config"] is None or ck["model_class"] != "GPT":
        raise ValueError(f"checkpoint {str(ck['path'])!r} holds a {ck['model_class']} model, not a plain GPT; "
                         "rebuild that model and call load_checkpoint() instead")
    try:
        model = GPT(GPTConfig(**ck["model_config"]), dtype=np.dtype(ck["dtype"] or "float32"))
        model.load_state_dict(ck["model"])
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"checkpoint {str(ck['path'])!r} does not match its own model config: {e}") from e
    if ck["model_rng"] is not None:
        model.rng.bit_generator.state = ck["model_rng"]
    if dtype is not None:
        model.astype(dtype)
    return model


def has_checkpoint(path) -> bool:
    """True if `path` is a folder holding a checkpoint pointer (latest.json)."""
    return os.path.isfile(os.path.join(path, "latest.json"))
