"""The main job, end to end on the built-in corpora: pretrain on prose, LoRA-adapt to code, merge.

    1. the base: a small GPT pretrained on `pydoc` (English prose about Python). By default the
       base shipped with the package (minilora/checkpoints/pydoc-s, made by this same recipe) is
       copied to <out>/base when the configuration matches, and the output says so; with
       `pretrain=True` (`minilora demo --pretrain`) it is pretrained here. A finished base of the
       same configuration already in <out>/base is reused; an interrupted pretraining resumes;
    2. measure validation loss on `stdlib` (Python source code) and on the prose;
    3. LoRA fine-tune a copy on the code (base frozen), then full fine-tune another copy;
    4. print a table: trainable parameters, optimizer-state bytes, ms per step, validation loss on
       code before and after, and on prose before and after (forgetting);
    5. merge the adapter and report the largest |merged - unmerged| logit difference;
    6. print samples before and after adaptation; write metrics.json, the adapter and a loss-curve
       PNG into the run folder.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from . import io as _io
from .checkpoint import corpus_record, has_checkpoint, load_checkpoint, load_model
from .data import ByteTokenizer, TokenDataset, load_corpus, unigram_loss
from .finetune import finetune
from .lora import LoraConfig
from .nn import GPT, GPTConfig
from .sampling import generate_text
from .tensor import no_grad
from .train import TrainConfig, evaluate, train

__all__ = ["DemoConfig", "run_demo", "format_table", "pretrained_base", "matching_shipped_base"]


@dataclass
class DemoConfig:
    """Sizes and budgets of the demo (defaults: about 5 minutes on 2 cores).

    The model is config S of the benchmarks (4 layers, 4 heads, 128 channels, context 64 bytes).
    """

    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    block_size: int = 64
    batch_size: int = 16
    pretrain_steps: int = 1200
    pretrain_lr: float = 2e-3
    finetune_steps: int = 300
    lora_lr: float = 1e-2
    full_lr: float = 1e-3
    r: int = 8
    lora_alpha: float = 16.0
    target_modules: tuple = ("c_attn",)
    eval_batches: int = 16
    seed: int = 0
    sample_tokens: int = 160
    sample_prompt: str = "def "

    def gpt_config(self) -> GPTConfig:
        """The GPTConfig of the base model."""
        return GPTConfig(vocab_size=256, block_size=self.block_size, n_layer=self.n_layer,
                         n_head=self.n_head, n_embd=self.n_embd, dropout=0.0, bias=True)

    def pretrain_config(self) -> TrainConfig:
        """TrainConfig of the pretraining run."""
        return TrainConfig(max_steps=self.pretrain_steps, batch_size=self.batch_size, lr=self.pretrain_lr,
                           eval_interval=max(1, self.pretrain_steps // 6), eval_batches=self.eval_batches,
                           seed=self.seed, log_interval=max(1, self.pretrain_steps // 12))

    def finetune_config(self, lr) -> TrainConfig:
        """TrainConfig of a fine-tuning run with peak learning rate lr."""
        return TrainConfig(max_steps=self.finetune_steps, batch_size=self.batch_size, lr=lr,
                           warmup_steps=min(30, self.finetune_steps // 10), weight_decay=0.0,
                           eval_interval=max(1, self.finetune_steps // 5), eval_batches=self.eval_batches,
                           seed=self.seed + 1, log_interval=max(1, self.finetune_steps // 5))


def pretrained_base(cfg: DemoConfig, prose: TokenDataset, base_dir: Path, log):
    """Load <base_dir> if it holds a finished pretraining of this config; resume or start otherwise."""
    want_model, want_train = cfg.gpt_config().to_dict(), cfg.pretrain_config().to_dict()
    resume = False
    try:
        ck = load_checkpoint(base_dir)
        same = (ck["model_config"] == want_model
                and ck["train_state"].get("train_config") == want_train)
        if same and ck["step"] >= cfg.pretrain_steps:
            log(f"reusing the pretrained base in {base_dir} (step {ck['step']}, same config)")
            return load_model(base_dir), ck["train_state"].get("history"), True
        resume = same
        if not same:
            log(f"{base_dir} holds a different configuration: pretraining anew")
    except FileNotFoundError:
        pass
    except ValueError as e:
        log(f"ignoring an unreadable checkpoint in {base_dir}: {e}")
    if not resume and base_dir.exists():
        for f in list(base_dir.glob("ckpt-*")) + [base_dir / "latest.json"]:
            if f.exists():
                f.unlink()
    model = GPT(cfg.gpt_config(), seed=cfg.seed)
    history = train(model, prose, cfg.pretrain_config(), out_dir=base_dir, resume=resume, log=log,
                    corpus=corpus_record("pydoc", prose.tokens.astype(np.uint8).tobytes()))
    return model, history, False


def matching_shipped_base(cfg: DemoConfig) -> Path | None:
    """The folder of the shipped base (minilora/checkpoints/pydoc-s) if it is this config's pretraining.

    It matches when its model config and pretraining TrainConfig equal `cfg.gpt_config()` and
    `cfg.pretrain_config()` and it reached `cfg.pretrain_steps` (the default DemoConfig matches).
    Returns None otherwise, or when the shipped checkpoint is missing or unreadable.
    """
    from .checkpoints import path as shipped_path

    try:
        folder = shipped_path("pydoc-s")
        ck = load_checkpoint(folder)
    except (FileNotFoundError, ValueError):
        return None
    same = (ck["model_config"] == cfg.gpt_config().to_dict()
            and ck["train_state"].get("train_config") == cfg.pretrain_config().to_dict()
            and ck["step"] >= cfg.pretrain_steps)
    return folder if same else None


def _is_copy_of(base_dir: Path, folder: Path) -> bool:
    """True if base_dir's checkpoint has the same weights file (sha256) as the checkpoint in folder."""
    try:
        return load_checkpoint(base_dir)["meta"]["sha256"] == load_checkpoint(folder)["meta"]["sha256"]
    except (FileNotFoundError, ValueError):
        return False


def _copy_checkpoint(src: Path, dst: Path) -> None:
    """Copy a checkpoint folder's files (weights and metadata first, the latest.json pointer last), atomically."""
    dst.mkdir(parents=True, exist_ok=True)
    for f in list(dst.glob("ckpt-*")) + [dst / "latest.json"]:
        if f.exists():
            f.unlink()
    for f in sorted(src.glob("ckpt-*")) + [src / "latest.json"]:
        _io.atomic_write_bytes(dst / f.name, f.read_bytes())


def format_table(rows) -> str:
    """The comparison table as text: one row per method (dicts as in metrics.json["methods"])."""
    head = (f"{'method':<22}{'trainable params':>22}{'optim state':>13}{'ms/step':>9}"
            f"{'code val: before -> after':>28}{'prose val: before -> after':>29}")
    lines = [head, "-" * len(head)]
    for r in rows:
        pct = 100.0 * r["trainable_params"] / r["all_params"]
        lines.append(f"{r['method']:<22}{r['trainable_params']:>13,} ({pct:5.2f}%)"
                     f"{r['optimizer_state_bytes'] / 2**10:>9.0f} KiB"
                     f"{r['ms_per_step']:>9.0f}{r['code_before']:>15.3f} -> {r['code_after']:.3f}"
                     f"{r['prose_before']:>16.3f} -> {r['prose_after']:.3f}")
    return "\n".join(lines)


def run_demo(out_dir="runs/demo", cfg: DemoConfig | None = None, log=print, pretrain: bool = False) -> dict:
    """Run the whole story (see the module docstring) and return the metrics written to metrics.json.

    Args:
        out_dir: run folder (created); <out>/base keeps the base checkpoint for reuse.
        cfg: DemoConfig. log: printer for progress and results.
        pretrain: pretrain the base here even if the shipped base matches cfg (a copy of the shipped
            base left in <out>/base by an earlier run is replaced by the pretraining).
    Returns:
        dict (also written to <out>/metrics.json): config, where the base came from ("base_source":
        "shipped", "pretrained" or "reused"), base losses, per-method rows, the merge check, samples,
        timings.
    Raises:
        OSError: the run folder cannot be created or written (checked before any training).
        FloatingPointError: a training run diverged (see minilora.train).
    """
    cfg = cfg or DemoConfig()
    out = _io.ensure_writable_dir(out_dir, "the demo's run folder")
    base_dir = _io.ensure_writable_dir(out / "base", "the demo's base folder")
    if (out / "metrics.json").exists():
        log(f"note: {out} holds an earlier demo's results (metrics.json, adapter/, loss_curves.png); this run "
            "replaces them (the base in base/ is kept; --out elsewhere keeps both)")
    t_start = time.perf_counter()
    tok = ByteTokenizer()
    prose = TokenDataset(tok.encode(load_corpus("pydoc")))
    code = TokenDataset(tok.encode(load_corpus("stdlib")))
    B, T = cfg.batch_size, cfg.block_size
    prose_val = prose.fixed_batches("val", cfg.eval_batches, B, T, seed=cfg.seed)
    code_val = code.fixed_batches("val", cfg.eval_batches, B, T, seed=cfg.seed)

    # Never replaces a base of the user's own: the shipped one is copied only into an empty base folder.
    shipped = matching_shipped_base(cfg)
    copy_there = shipped is not None and _is_copy_of(base_dir, shipped)
    if pretrain and copy_there:
        log(f"--pretrain: removing the copy of the shipped base in {base_dir}")
        for f in list(base_dir.glob("ckpt-*")) + [base_dir / "latest.json"]:
            f.unlink()
    source = "pretrained"
    if not pretrain and shipped is not None and (copy_there or not has_checkpoint(base_dir)):
        source = "shipped"
        log(f"== 1. the base: the GPT ({cfg.n_layer} layers, {cfg.n_embd} channels) shipped with minilora in "
            f"{shipped}, pretrained by this demo's own recipe ({cfg.pretrain_steps} steps on pydoc prose, "
            f"{prose.train.size:,} training bytes); `minilora demo --pretrain` pretrains it here instead")
        if not copy_there:
            _copy_checkpoint(shipped, base_dir)
            log(f"copied it to {base_dir}")
    else:
        log(f"== 1. pretraining a GPT ({cfg.n_layer} layers, {cfg.n_embd} channels) on pydoc prose "
            f"({prose.train.size:,} training bytes)")
    base, pre_hist, reused = pretrained_base(cfg, prose, base_dir, log)
    if reused and source == "pretrained":
        source = "reused"
    base.eval()
    base_losses = {"prose": evaluate(base, prose_val), "code": evaluate(base, code_val)}
    baselines = {"prose": unigram_loss(prose.val, prose.train), "code": unigram_loss(code.val, code.train)}
    log(f"base model: prose val loss {base_losses['prose']:.3f} (unigram baseline {baselines['prose']:.3f}), "
        f"code val loss {base_losses['code']:.3f} (unigram baseline {baselines['code']:.3f}) [nats/byte]")
    sample_before = generate_text(base, cfg.sample_prompt, cfg.sample_tokens, top_k=40, seed=cfg.seed)

    rows, results = [], {}
    lora_cfg = LoraConfig(r=cfg.r, lora_alpha=cfg.lora_alpha, target_modules=list(cfg.target_modules))
    for method, lr, label in (("lora", cfg.lora_lr, f"LoRA r={cfg.r} {'+'.join(cfg.target_modules)}"),
                              ("full", cfg.full_lr, "full fine-tuning")):
        log(f"== {2 if method == 'lora' else 3}. {label} on stdlib code ({code.train.size:,} training bytes), "
            f"lr {lr:g}, {cfg.finetune_steps} steps")
        res = finetune(base, code, method, lora_cfg, cfg.finetune_config(lr), log=log)
        res.model.eval()
        row = {"method": label, "trainable_params": res.trainable_params, "all_params": res.all_params,
               "optimizer_state_bytes": res.optimizer_state_bytes, "ms_per_step": res.ms_per_step,
               "code_before": base_losses["code"], "code_after": evaluate(res.model, code_val),
               "prose_before": base_losses["prose"], "prose_after": evaluate(res.model, prose_val)}
        rows.append(row)
        results[method] = res

    lora_model = results["lora"].model
    lora_model.save_adapter(out / "adapter")
    lora_model.eval()
    x = code_val[0][0]
    with no_grad():
        unmerged = lora_model(x)[0].data.copy()
        lora_model.merge_adapter()
        merged = lora_model(x)[0].data
    merge_diff = float(np.max(np.abs(merged - unmerged)))
    rel = merge_diff / float(np.max(np.abs(unmerged)))
    plain = lora_model.merge_and_unload()
    with no_grad():
        unload_diff = float(np.max(np.abs(plain(x)[0].data - unmerged)))
    sample_after = generate_text(plain, cfg.sample_prompt, cfg.sample_tokens, top_k=40, seed=cfg.seed)

    log("\n== results (validation loss in nats per byte; lower is better)")
    log(format_table(rows))
    log(f"\nmerge: largest |merged - unmerged| logit difference {merge_diff:.2e} "
        f"({rel:.1e} of the largest logit; {plain.dtype}); after merge_and_unload {unload_diff:.2e}")
    log(f"\n-- sample before adaptation (base model, prompt {cfg.sample_prompt!r}):\n{sample_before}")
    log(f"\n-- sample after LoRA adaptation (merged model):\n{sample_after}")

    curves = {"pretraining: prose val": (pre_hist["val_step"], pre_hist["val_loss"])} if pre_hist else {}
    w, off = 20, cfg.pretrain_steps                               # fine-tuning continues after pretraining
    for m, res in results.items():
        h = res.history
        if len(h["train_loss"]) >= w:                             # moving average over w steps, no edge effects
            smooth = np.convolve(h["train_loss"], np.ones(w) / w, "valid")
            curves[f"{m}: code train (avg of {w})"] = ([off + s for s in h["step"][w - 1:]], list(smooth))
        curves[f"{m}: code val"] = ([off] + [off + s for s in h["val_step"]], [base_losses["code"]] + h["val_loss"])
    png = None
    try:
        from .plots import plot_loss_curves
        png = plot_loss_curves(curves, out / "loss_curves.png", title="pretraining on prose, then fine-tuning on code")
    except ImportError as e:  # matplotlib missing: the figures are still in metrics.json
        log(f"(no plot: {e})")
    metrics = {"config": asdict(cfg), "reused_base": reused, "base_source": source, "base": base_losses,
               "unigram_baseline": baselines,
               "methods": rows, "merge_max_abs_logit_diff": merge_diff, "merge_relative_diff": rel,
               "merge_and_unload_max_abs_logit_diff": unload_diff, "dtype": str(plain.dtype),
               "samples": {"before": sample_before, "after_lora": sample_after},
               "histories": {m: {k: r.history[k] for k in ("step", "train_loss", "val_step", "val_loss")}
                             for m, r in results.items()},
               "files": {"adapter": str(out / "adapter"), "loss_curves": png},
               "seconds": time.perf_counter() - t_start}
    _io.save_json_atomic(out / "metrics.json", metrics)
    log(f"\nwrote {out / 'metrics.json'}, {out / 'adapter'}/, {png or '(no plot)'} "
        f"in {metrics['seconds']:.0f} s")
    return metrics
