"""Faults a new user met, each tested as a kind: refusals happen before any work is lost, a failed
run never replaces a good checkpoint, configs reject out-of-domain values, output is terminal-safe."""
import math
import sys

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from minilora import GPT, GPTConfig, LoraConfig
from minilora.checkpoint import load_checkpoint, save_checkpoint
from minilora.cli import main
from minilora.data import TokenDataset
from minilora.exercises import check
from minilora.sampling import printable
from minilora.train import TrainConfig, train

TINY = ["--n-layer", "1", "--n-head", "2", "--n-embd", "32", "--block-size", "16", "--batch-size", "4",
        "--eval-batches", "2", "--sample-tokens", "0", "--quiet"]


@pytest.fixture
def ckpt(tmp_path):
    out = tmp_path / "base"
    assert main(["pretrain", "--out", str(out), "--steps", "6"] + TINY) == 0
    return out


def test_pretrain_refuses_an_existing_checkpoint_without_resume_or_overwrite(ckpt, capsys):
    before = load_checkpoint(ckpt)["step"]
    assert main(["pretrain", "--out", str(ckpt), "--steps", "6"] + TINY) == 2
    assert "--resume" in capsys.readouterr().err
    assert load_checkpoint(ckpt)["step"] == before


def test_resume_takes_the_model_and_schedule_from_the_checkpoint(ckpt):
    # no model flags: the defaults (4 layers, 128 channels) must not be used
    assert main(["pretrain", "--out", str(ckpt), "--steps", "9", "--resume", "--quiet", "--sample-tokens", "0"]) == 0
    ck = load_checkpoint(ckpt)
    assert ck["step"] == 9 and ck["model_config"]["n_embd"] == 32


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the overflow is the point of the test
@pytest.mark.parametrize("lr", ["1e9", "1e12"])
def test_a_diverging_run_never_replaces_the_last_good_checkpoint(ckpt, lr, capsys):
    good = load_checkpoint(ckpt)
    assert main(["pretrain", "--out", str(ckpt), "--steps", "4", "--lr", lr, "--eval-interval", "1",
                 "--overwrite"] + TINY) == 2
    assert "lower the lr" in capsys.readouterr().err
    after = load_checkpoint(ckpt)
    assert after["step"] == good["step"]
    for k, v in good["model"].items():
        np.testing.assert_array_equal(after["model"][k], v)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_train_raises_before_saving_a_non_finite_validation_loss(tmp_path):
    model = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=16, block_size=8))
    ds = TokenDataset(bytes(range(32, 127)) * 40)
    save_checkpoint(tmp_path, model, None, 0)
    model.transformer.ln_f.weight.data[:] = np.nan                 # every logit becomes nan
    cfg = TrainConfig(max_steps=3, batch_size=2, eval_interval=1, eval_batches=1, log_interval=1, grad_clip=None)
    with pytest.raises(FloatingPointError):
        train(model, ds, cfg, out_dir=tmp_path, log=lambda s: None)
    assert load_checkpoint(tmp_path)["step"] == 0


def test_finetune_checks_its_arguments_before_training(ckpt, tmp_path, capsys):
    f = tmp_path / "a_file"
    f.write_text("x")
    assert main(["finetune", "--base", str(ckpt), "--out", str(f), "--steps", "2"]) == 2
    assert "is a file" in capsys.readouterr().err
    assert main(["finetune", "--base", str(ckpt), "--full", "--r", "4", "--steps", "2"]) == 2
    assert "do not apply" in capsys.readouterr().err


def test_sample_with_an_adapter(ckpt, tmp_path, capsys):
    out = tmp_path / "ft"
    assert main(["finetune", "--base", str(ckpt), "--out", str(out), "--steps", "2", "--batch-size", "2",
                 "--eval-batches", "1", "--r", "2", "--quiet"]) == 0
    capsys.readouterr()
    assert main(["sample", "--ckpt", str(ckpt), "--adapter", str(out / "adapter"), "--max-new-tokens", "5",
                 "--prompt", "ab"]) == 0
    assert capsys.readouterr().out.startswith("ab")
    assert main(["sample", "--ckpt", str(ckpt), "--adapter", str(tmp_path / "none")]) == 2


def test_exercises_without_hypothesis_is_a_one_line_error(monkeypatch, capsys):
    import minilora
    monkeypatch.delattr(minilora, "exercises")
    monkeypatch.setitem(sys.modules, "minilora.exercises", None)   # import fails as if hypothesis were missing
    assert main(["exercises", "list"]) == 2
    assert "pip install" in capsys.readouterr().err


@pytest.mark.parametrize("exit_code", [0, 1, None])
def test_the_grader_fails_a_solution_that_exits(exit_code):
    def merge(W0, A, B, scaling):
        sys.exit(exit_code)
    result = check("merge", merge)
    assert not result.passed and "SystemExit" in result.message


@pytest.mark.parametrize("k", ["0", "-2", "14"])
def test_analyze_checks_k_before_training(k, tmp_path, capsys):
    assert main(["analyze", "planted", "--quick", "--k", k, "--out", str(tmp_path)]) == 2
    assert "--k" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("alpha", [math.inf, -math.inf, math.nan, 0.0, -1.0])
def test_lora_alpha_must_be_finite_and_positive(alpha):
    with pytest.raises(ValueError, match="lora_alpha"):
        LoraConfig(lora_alpha=alpha)


@pytest.mark.parametrize("bias", ["no", 0, 1, None])
def test_gpt_config_bias_must_be_a_bool(bias):
    with pytest.raises(ValueError, match="bias"):
        GPTConfig(bias=bias)


def test_gpt_needs_a_config_object():
    with pytest.raises(TypeError, match="GPTConfig"):
        GPT({"n_layer": 1})


@given(st.text())
def test_printable_leaves_no_control_characters(text):
    out = printable(text)
    assert len(out) == len(text)
    assert all(c.isprintable() or c in "\n\t" for c in out)
    assert printable(out) == out


def test_a_too_small_corpus_says_how_much_is_needed():
    with pytest.raises(ValueError, match="larger text"):
        TokenDataset("tiny")
    ds = TokenDataset("x" * 2000)
    with pytest.raises(ValueError, match="larger text"):
        ds.get_batch("train", 2, 1000, np.random.default_rng(0))


def _saved_adapter(tmp_path, r=4):
    from minilora import get_peft_model
    model = get_peft_model(GPT(GPTConfig(n_layer=1, n_head=2, n_embd=16, block_size=8)),
                           LoraConfig(r=r, lora_alpha=8, init_lora_weights=False))
    model.save_adapter(tmp_path / "ad")
    return model, tmp_path / "ad"


@pytest.mark.parametrize("file, edit, match", [
    ("adapter_config.json", {"peft_type": "PREFIX_TUNING"}, "only LORA"),
    ("minilora_adapter.json", {"format_version": 99}, "format_version"),
    ("adapter_config.json", {"r": 2}, "inconsistent"),
    ("adapter_config.json", {"r": 8}, "inconsistent"),
    ("adapter_config.json", {"lora_alpha": 3}, "inconsistent"),
    ("minilora_adapter.json", {"dtype": "float64"}, "inconsistent"),
])
def test_an_adapter_config_that_contradicts_its_tensors_is_refused(tmp_path, file, edit, match):
    import json
    model, path = _saved_adapter(tmp_path)
    cfg = json.loads((path / file).read_text())
    cfg.update(edit)
    (path / file).write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=match):
        model.load_adapter(path)


def test_finetune_target_regex(ckpt, tmp_path, capsys):
    out = tmp_path / "ft"
    assert main(["finetune", "--base", str(ckpt), "--out", str(out), "--steps", "2", "--batch-size", "2",
                 "--eval-batches", "1", "--r", "2", "--quiet",
                 "--target-regex", r"transformer\.h\.0\..*c_(attn|fc)"]) == 0
    # r (d_in + d_out) for c_attn (32 -> 96) and c_fc (32 -> 128)
    assert "trainable params: 576 " in capsys.readouterr().out
    assert main(["finetune", "--base", str(ckpt), "--out", str(out), "--steps", "2", "--target-regex", "nomatch.*",
                 "--overwrite"]) == 2
    assert "nomatch" in capsys.readouterr().err
