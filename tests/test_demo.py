"""The main job end to end on a tiny configuration: files written, table printed, base reused,
merge exact to float32 rounding; and the finetune command's LoRA and --full paths."""
import json

import numpy as np
import pytest

from minilora.cli import main
from minilora.demo import DemoConfig, run_demo

pytestmark = pytest.mark.slow   # the demo trains three models: `pytest -m "not slow"` skips it

TINY = dict(n_layer=1, n_head=2, n_embd=32, block_size=16, batch_size=4, pretrain_steps=12,
            finetune_steps=6, eval_batches=2, sample_tokens=8, r=2, lora_alpha=6.0)


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    lines = []
    metrics = run_demo(out, DemoConfig(**TINY), log=lines.append)
    return out, metrics, "\n".join(lines)


def test_demo_writes_metrics_adapter_and_plot(demo_run):
    out, metrics, _ = demo_run
    on_disk = json.loads((out / "metrics.json").read_text())
    assert on_disk["methods"] == metrics["methods"]
    assert (out / "adapter" / "adapter_config.json").exists()
    assert (out / "adapter" / "adapter_model.safetensors").exists()
    assert (out / "loss_curves.png").stat().st_size > 1000
    assert (out / "base" / "latest.json").exists()


def test_demo_table_rows_and_figures(demo_run):
    _, metrics, text = demo_run
    lora, full = metrics["methods"]
    # LoRA r=2 on c_attn of one layer: r * (d_in + d_out) = 2 * (32 + 96)
    assert lora["trainable_params"] == 2 * (32 + 96)
    assert full["trainable_params"] == full["all_params"]
    # AdamW keeps two float32 moments per trained scalar
    assert lora["optimizer_state_bytes"] == 2 * 4 * lora["trainable_params"]
    for row in (lora, full):
        for k in ("code_before", "code_after", "prose_before", "prose_after", "ms_per_step"):
            assert np.isfinite(row[k]) and row[k] > 0
        assert row["method"] in text
    assert "code val: before -> after" in text and "sample after LoRA adaptation" in text


def test_demo_merge_matches_unmerged_to_float32_rounding(demo_run):
    _, metrics, _ = demo_run
    assert metrics["dtype"] == "float32"
    assert metrics["merge_relative_diff"] < 1e-5
    assert metrics["merge_and_unload_max_abs_logit_diff"] == pytest.approx(metrics["merge_max_abs_logit_diff"],
                                                                           abs=1e-6)


def test_demo_reuses_a_base_of_the_same_config(demo_run):
    out, metrics, _ = demo_run
    lines = []
    again = run_demo(out, DemoConfig(**TINY), log=lines.append)
    assert again["reused_base"] and not metrics["reused_base"]
    assert again["base"] == metrics["base"]
    assert any("reusing the pretrained base" in s for s in lines)


def test_finetune_cli_lora_and_full(tmp_path, capsys):
    base = tmp_path / "base"
    assert main(["pretrain", "--corpus", "pydoc", "--out", str(base), "--steps", "8", "--n-layer", "1",
                 "--n-head", "2", "--n-embd", "32", "--block-size", "16", "--batch-size", "4",
                 "--sample-tokens", "0", "--quiet"]) == 0
    common = ["finetune", "--base", str(base), "--corpus", "stdlib", "--steps", "4", "--batch-size", "4",
              "--eval-batches", "2", "--quiet"]
    assert main(common + ["--r", "2", "--lora-alpha", "5", "--out", str(tmp_path / "lora")]) == 0
    assert (tmp_path / "lora" / "adapter" / "adapter_model.safetensors").exists()
    assert "trainable params: " in capsys.readouterr().out
    assert main(common + ["--full", "--out", str(tmp_path / "full")]) == 0
    assert (tmp_path / "full" / "latest.json").exists()
    assert main(common + ["--r", "2", "--target-modules", "c_atn", "--out", str(tmp_path / "bad")]) == 2
    assert "c_atn" in capsys.readouterr().err


def test_the_shipped_base_matches_only_the_default_recipe():
    from minilora.checkpoints import path
    from minilora.demo import matching_shipped_base
    assert matching_shipped_base(DemoConfig()) == path("pydoc-s")
    for change in (dict(pretrain_steps=1300), dict(n_embd=64, n_head=4), dict(pretrain_lr=1e-3), dict(seed=1)):
        assert matching_shipped_base(DemoConfig(**change)) is None, change


def test_demo_starts_from_a_matching_shipped_base_and_says_so(tmp_path, monkeypatch):
    import minilora.demo
    from minilora.checkpoint import load_checkpoint, load_model, save_checkpoint
    from minilora.data import TokenDataset, load_corpus
    from minilora.demo import pretrained_base

    cfg = DemoConfig(**TINY)
    shipped = tmp_path / "shipped"               # stands in for minilora/checkpoints/pydoc-s, for the TINY recipe
    pretrained_base(cfg, TokenDataset(load_corpus("pydoc")), shipped, lambda s: None)
    monkeypatch.setattr(minilora.demo, "matching_shipped_base", lambda c: shipped if c == cfg else None)
    run = tmp_path / "run"
    pretraining = f"step {cfg.pretrain_steps}/{cfg.pretrain_steps} "

    lines = []
    m = run_demo(run, cfg, log=lines.append)
    assert m["base_source"] == "shipped"
    assert not any("replaces them" in s for s in lines)                           # nothing to replace yet
    assert any("shipped with minilora" in s and "--pretrain" in s for s in lines)
    assert not any(s.startswith(pretraining) for s in lines)                       # no pretraining ran
    assert (run / "base" / "ckpt-000012.npz").read_bytes() == (shipped / "ckpt-000012.npz").read_bytes()

    lines = []
    again = run_demo(run, cfg, log=lines.append, pretrain=True)                    # --pretrain: pretrains here
    assert any(s.startswith("note: ") and "replaces them" in s for s in lines)     # the first run's results
    assert again["base_source"] == "pretrained" and any(s.startswith(pretraining) for s in lines)
    assert again["base"] == m["base"] and again["methods"] == [                    # the recipe reproduces the base
        {**row, "ms_per_step": r2["ms_per_step"]} for row, r2 in zip(m["methods"], again["methods"], strict=True)]

    # a base of the user's own in <out>/base is reused, never replaced by the shipped copy
    ck = load_checkpoint(run / "base")
    own = load_model(run / "base")
    # not a constant shift: layer norm and the softmax make the loss invariant to adding one number everywhere
    w = own.transformer.wte.weight
    w.data = w.data + 0.01 * np.random.default_rng(0).standard_normal(w.shape).astype(w.data.dtype)
    save_checkpoint(run / "base", own, None, ck["step"], ck["train_state"])
    before = (run / "base" / "ckpt-000012.npz").read_bytes()
    lines = []
    third = run_demo(run, cfg, log=lines.append)
    assert third["base_source"] == "reused" and third["base"] != m["base"]
    assert (run / "base" / "ckpt-000012.npz").read_bytes() == before
