"""No command replaces or loses work silently (issue 10, item 1), each fault tested as a kind:

* finetune never writes into its base's folder, and replaces an adapter/checkpoint only with --overwrite;
* every command that writes checks its output folder BEFORE any training;
* --resume continues on the checkpoint's own corpus and settings; a contradicting option is an error;
* a run that diverges (finite but huge loss) exits non-zero, says "lower the lr" and keeps the last good
  checkpoint, without raw NumPy warnings;
* temporary files of a save killed mid-way are removed by the next save or load, and nothing else is.
"""
import hashlib
import importlib
import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import time
import warnings

import numpy as np
import pytest

import minilora.data
import minilora.demo
import minilora.finetune
from minilora import GPT, GPTConfig
from minilora.checkpoint import (
    STALE_TEMP_SECONDS,
    corpus_record,
    load_checkpoint,
    load_model,
    remove_stale_temp_files,
    save_checkpoint,
)
from minilora.cli import main
from minilora.data import TokenDataset
from minilora.io import ensure_writable_dir
from minilora.train import TrainConfig, divergence_loss, train

TINY = ["--n-layer", "1", "--n-head", "2", "--n-embd", "32", "--block-size", "16", "--batch-size", "4",
        "--eval-batches", "2", "--sample-tokens", "0", "--quiet"]
FT = ["--steps", "2", "--batch-size", "2", "--eval-batches", "1", "--quiet"]


def _tree(folder):
    """{relative path: sha256} of every file under folder (to prove nothing changed)."""
    out = {}
    for root, _, files in os.walk(folder):
        for f in files:
            p = os.path.join(root, f)
            with open(p, "rb") as fh:
                out[os.path.relpath(p, folder)] = hashlib.sha256(fh.read()).hexdigest()
    return out


@pytest.fixture
def base(tmp_path):
    out = tmp_path / "base"
    assert main(["pretrain", "--out", str(out), "--steps", "4"] + TINY) == 0
    return out


# --------------------------------------------------------------------------------------------------
# finetune: never into the base, never over earlier work without --overwrite
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("full", [False, True])
@pytest.mark.parametrize("form", ["same", "relative", "trailing-dot", "symlink", "inside", "inside-symlink"])
def test_finetune_never_writes_into_its_base(base, tmp_path, monkeypatch, capsys, full, form):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "link").symlink_to(base, target_is_directory=True)
    out = {"same": str(base), "relative": "base", "trailing-dot": "./base/.", "symlink": "link",
           "inside": str(base / "ft"), "inside-symlink": "link/ft"}[form]
    before = _tree(base)
    argv = ["finetune", "--base", str(base), "--out", out, "--overwrite"] + FT + (["--full"] if full else ["--r", "2"])
    assert main(argv) == 2                                     # even with --overwrite
    assert "fine-tuning never writes into its base" in capsys.readouterr().err
    assert _tree(base) == before


@pytest.mark.parametrize("earlier", ["lora", "full", "pretrain"])
@pytest.mark.parametrize("full", [False, True])
def test_finetune_replaces_an_adapter_or_checkpoint_only_with_overwrite(base, tmp_path, capsys, earlier, full):
    out = tmp_path / "out"
    if earlier == "pretrain":
        assert main(["pretrain", "--out", str(out), "--steps", "2"] + TINY) == 0
    else:
        assert main(["finetune", "--base", str(base), "--out", str(out)] + FT
                    + (["--full"] if earlier == "full" else ["--r", "2"])) == 0
    before = _tree(out)
    capsys.readouterr()
    argv = ["finetune", "--base", str(base), "--out", str(out)] + FT + (["--full"] if full else ["--r", "2"])
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "already holds" in err and "--overwrite" in err
    assert _tree(out) == before
    assert main(argv + ["--overwrite"]) == 0
    if full:
        assert load_checkpoint(out)["step"] == 2 and load_checkpoint(out)["model_class"] == "GPT"
    else:
        assert (out / "adapter" / "adapter_model.safetensors").exists()


# --------------------------------------------------------------------------------------------------
# every writing command checks its output before training
# --------------------------------------------------------------------------------------------------


def _no_training(monkeypatch):
    def refuse(*a, **k):
        raise AssertionError("training started before the output folder was checked")
    # (minilora.train is also the name of the function re-exported by minilora/__init__.py)
    for mod in (importlib.import_module("minilora.train"), minilora.demo):
        monkeypatch.setattr(mod, "train", refuse)
    for mod in (minilora.finetune, minilora.demo):
        monkeypatch.setattr(mod, "finetune", refuse)


@pytest.mark.parametrize("command", ["pretrain", "finetune-lora", "finetune-full", "demo"])
@pytest.mark.parametrize("where", ["under-a-file", "deeper-under-a-file"])
def test_an_unwritable_output_fails_before_training(base, tmp_path, monkeypatch, capsys, command, where):
    (tmp_path / "a_file").write_text("x")
    out = str(tmp_path / "a_file" / "out") if where == "under-a-file" else str(tmp_path / "a_file" / "x" / "y")
    _no_training(monkeypatch)
    argv = {"pretrain": ["pretrain", "--out", out, "--steps", "2"] + TINY,
            "finetune-lora": ["finetune", "--base", str(base), "--out", out] + FT,
            "finetune-full": ["finetune", "--base", str(base), "--out", out, "--full"] + FT,
            "demo": ["demo", "--out", out, "--pretrain-steps", "2", "--finetune-steps", "2"]}[command]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "a_file" in err and "is a file" in err and len(err.strip().splitlines()) == 1


@pytest.mark.skipif(getattr(os, "geteuid", lambda: -1)() == 0, reason="root may write into a read-only folder")
def test_a_read_only_output_fails_before_training(base, tmp_path, monkeypatch, capsys):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    _no_training(monkeypatch)
    try:
        assert main(["finetune", "--base", str(base), "--out", str(ro / "ft")] + FT) == 2
        assert "cannot be written" in capsys.readouterr().err
    finally:
        ro.chmod(0o700)


def test_ensure_writable_dir_creates_and_probes(tmp_path):
    p = ensure_writable_dir(tmp_path / "a" / "b", "--out")
    assert p.is_dir() and list(p.iterdir()) == []              # the probe file is gone
    (tmp_path / "f").write_text("x")
    with pytest.raises(NotADirectoryError, match="--out .* is a file"):
        ensure_writable_dir(tmp_path / "f", "--out")
    with pytest.raises(NotADirectoryError, match="cannot be created"):
        ensure_writable_dir(tmp_path / "f" / "sub", "--out")


# --------------------------------------------------------------------------------------------------
# --resume: the checkpoint's corpus and settings, never silently other ones
# --------------------------------------------------------------------------------------------------

VERSE = ("Shall I compare thee to a summer's day? Thou art more lovely and more temperate: rough winds do "
         "shake the darling buds of May, and summer's lease hath all too short a date.\n") * 40


@pytest.fixture
def verse_run(tmp_path):
    corpus = tmp_path / "sonnet.txt"
    corpus.write_text(VERSE)
    out = tmp_path / "verse"
    assert main(["pretrain", "--corpus", str(corpus), "--out", str(out), "--steps", "4"] + TINY) == 0
    return corpus, out


def test_the_checkpoint_records_its_corpus_and_resume_uses_it(verse_run, tmp_path, monkeypatch):
    corpus, out = verse_run
    assert load_checkpoint(out)["corpus"] == corpus_record(str(corpus), VERSE)
    assert load_checkpoint(out)["corpus"]["name"] == str(corpus.resolve())
    loaded = []
    real = minilora.data.load_corpus
    monkeypatch.setattr(minilora.data, "load_corpus", lambda name: loaded.append(str(name)) or real(name))
    monkeypatch.chdir(tmp_path / "verse")                      # the record is absolute: any working folder
    assert main(["pretrain", "--out", str(out), "--steps", "6", "--resume", "--quiet", "--sample-tokens", "0"]) == 0
    assert loaded == [str(corpus.resolve())]                   # not the default 'pydoc'
    ck = load_checkpoint(out)
    assert ck["step"] == 6 and ck["corpus"]["sha256"] == hashlib.sha256(VERSE.encode()).hexdigest()


def test_resume_matches_an_uninterrupted_run_on_a_file_corpus(verse_run, tmp_path):
    corpus, out = verse_run
    assert main(["pretrain", "--out", str(out), "--steps", "8", "--resume", "--quiet", "--sample-tokens", "0"]) == 0
    # the same run in one session: 8 steps on the schedule of the first session (its cosine ends at 4)
    model = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=32, block_size=16), seed=0)
    saved = load_checkpoint(out)["train_state"]["train_config"]
    hist = train(model, TokenDataset(VERSE), TrainConfig(**saved), log=lambda s: None)
    np.testing.assert_array_equal(load_checkpoint(out)["train_state"]["history"]["train_loss"], hist["train_loss"])


@pytest.mark.parametrize("option, value", [
    ("--corpus", "pydoc"), ("--n-embd", "64"), ("--n-layer", "2"), ("--n-head", "4"), ("--block-size", "32"),
    ("--dropout", "0.1"), ("--lr", "0.01"), ("--min-lr", "1e-5"), ("--batch-size", "8"), ("--seed", "3"),
    ("--weight-decay", "0"), ("--warmup-steps", "1"), ("--eval-interval", "3"), ("--eval-batches", "3"),
    ("--log-interval", "2"), ("--dtype", "float64"),
])
def test_resume_refuses_a_setting_that_contradicts_the_checkpoint(verse_run, capsys, option, value):
    _, out = verse_run
    before = _tree(out)
    assert main(["pretrain", "--out", str(out), "--steps", "6", "--resume", option, value, "--quiet"]) == 2
    err = capsys.readouterr().err
    assert option in err and "checkpoint" in err and len(err.strip().splitlines()) == 1
    assert _tree(out) == before


def test_resume_accepts_settings_equal_to_the_checkpoints(verse_run):
    corpus, out = verse_run
    assert main(["pretrain", "--out", str(out), "--steps", "6", "--resume", "--corpus", str(corpus)] + TINY) == 0
    assert load_checkpoint(out)["step"] == 6


def test_resume_refuses_a_corpus_file_that_changed(verse_run, capsys):
    corpus, out = verse_run
    corpus.write_text(VERSE.upper())
    assert main(["pretrain", "--out", str(out), "--steps", "6", "--resume", "--quiet"]) == 2
    assert "has changed" in capsys.readouterr().err


def test_train_refuses_to_resume_on_another_corpus(verse_run):
    _, out = verse_run
    model = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=32, block_size=16))
    cfg = TrainConfig(**load_checkpoint(out)["train_state"]["train_config"])
    other = "other text " * 500
    with pytest.raises(ValueError, match="resume on the same data"):
        train(model, TokenDataset(other), cfg, out_dir=out, resume=True, log=lambda s: None,
              corpus=corpus_record("x.txt", other))


def test_a_checkpoint_without_a_corpus_record_still_loads_and_resumes_with_corpus(tmp_path, capsys):
    out = tmp_path / "old"
    model = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=32, block_size=16))
    cfg = TrainConfig(max_steps=2, batch_size=4, eval_batches=2, eval_interval=1, log_interval=1)
    train(model, TokenDataset(VERSE), cfg, out_dir=out, log=lambda s: None)       # no corpus record
    assert load_checkpoint(out)["corpus"] is None
    assert main(["pretrain", "--out", str(out), "--steps", "3", "--resume", "--quiet"]) == 2
    assert "records no corpus" in capsys.readouterr().err
    (tmp_path / "v.txt").write_text(VERSE)
    assert main(["pretrain", "--out", str(out), "--steps", "3", "--resume", "--corpus", str(tmp_path / "v.txt"),
                 "--quiet", "--sample-tokens", "0"]) == 0
    assert load_checkpoint(out)["step"] == 3


def test_the_shipped_checkpoint_loads_unchanged():
    from minilora.checkpoints import path
    folder = path("pydoc-s")
    ck = load_checkpoint(folder)
    assert ck["corpus"] is None and ck["step"] == 1200
    with open(folder / ck["meta"]["npz"], "rb") as f:           # the weights file is the recorded one
        assert hashlib.sha256(f.read()).hexdigest() == ck["meta"]["sha256"]
    assert load_model(folder).config.n_embd == 128


# --------------------------------------------------------------------------------------------------
# divergence: finite but exploding loss
# --------------------------------------------------------------------------------------------------


def test_divergence_rule():
    assert divergence_loss(256) == pytest.approx(2 * math.log(256)) == pytest.approx(11.0904, abs=1e-4)
    with pytest.raises(ValueError):
        divergence_loss(1)


@pytest.mark.parametrize("lr", ["50", "1e9"])
def test_a_diverging_pretrain_exits_non_zero_says_lower_lr_and_keeps_the_good_checkpoint(base, capsys, lr):
    good = _tree(base)
    capsys.readouterr()
    with warnings.catch_warnings():
        warnings.simplefilter("error")                          # a raw NumPy overflow warning fails the test
        code = main(["pretrain", "--out", str(base), "--steps", "20", "--lr", lr, "--eval-interval", "5",
                     "--overwrite"] + TINY)
    assert code == 2
    err = capsys.readouterr().err
    assert "diverged" in err and "lower the lr (--lr; this run used" in err and "RuntimeWarning" not in err
    assert _tree(base) == good


def test_a_diverging_finetune_writes_nothing(base, tmp_path, capsys):
    out = tmp_path / "ft"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        code = main(["finetune", "--base", str(base), "--out", str(out), "--full", "--lr", "1e6", "--steps", "10",
                     "--batch-size", "2", "--eval-batches", "1", "--quiet"])
    assert code == 2 and "lower the lr" in capsys.readouterr().err
    assert not (out / "latest.json").exists()


@pytest.mark.parametrize("scale", [1e3, 1e4, 1e6])
def test_train_stops_at_a_finite_validation_loss_above_the_rule(tmp_path, scale):
    """A model whose validation loss is finite but above 2 ln V raises before saving over the good checkpoint."""
    model = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=16, block_size=8), seed=0)
    ds = TokenDataset(VERSE)
    save_checkpoint(tmp_path, model, None, 0)
    model.lm_head.weight.data *= scale                          # confident and wrong: a huge finite loss
    cfg = TrainConfig(max_steps=2, batch_size=2, lr=1e-9, eval_interval=1, eval_batches=1, log_interval=1)
    with pytest.raises(FloatingPointError, match="diverged") as info:
        train(model, ds, cfg, out_dir=tmp_path, log=lambda s: None)
    vl = float(str(info.value).split("validation loss ")[1].split()[0])
    assert math.isfinite(vl) and vl > divergence_loss(256)
    assert load_checkpoint(tmp_path)["step"] == 0


# --------------------------------------------------------------------------------------------------
# temporary files of a killed save
# --------------------------------------------------------------------------------------------------

STALE = [".ckpt-000004.npz.abc_12x.tmp", ".ckpt-000004.json.q9z8y7w6.tmp", ".latest.json.k2j3h4g5.tmp"]
OTHERS = ["notes.tmp", ".ckpt-000004.npz.tmp", ".my-ckpt-000004.npz.x1.tmp", "ckpt-000004.npz.x1.tmp",
          ".adapter_model.npz.x1.tmp", "keep.txt"]


def _litter(folder, age):
    for name in STALE + OTHERS:
        (folder / name).write_bytes(b"x" * 100)
        t = time.time() - age
        os.utime(folder / name, (t, t))


def test_the_next_save_removes_stale_temp_files_and_nothing_else(base):
    _litter(base, age=0)
    save_checkpoint(base, load_model(base), None, 5)
    names = set(os.listdir(base))
    assert not names & set(STALE) and set(OTHERS) <= names


def test_a_load_removes_old_temp_files_and_leaves_fresh_ones(base):
    _litter(base, age=0)
    load_checkpoint(base)                                      # a writer may be saving right now
    assert set(STALE) | set(OTHERS) <= set(os.listdir(base))
    _litter(base, age=STALE_TEMP_SECONDS + 10)
    load_checkpoint(base)
    names = set(os.listdir(base))
    assert not names & set(STALE) and set(OTHERS) <= names
    assert remove_stale_temp_files(base / "missing") == []


def test_a_real_sigkill_mid_save_leaves_a_temp_file_that_the_next_save_removes(base):
    # The child saves with a slow fsync, so it is surely killed while its temp file exists.
    script = textwrap.dedent(f"""
        import os, time
        from minilora.checkpoint import load_model, save_checkpoint
        model = load_model({str(base)!r})
        real = os.fsync
        os.fsync = lambda fd: (time.sleep(60), real(fd))
        save_checkpoint({str(base)!r}, model, None, 99)
    """)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    child = subprocess.Popen([sys.executable, "-c", script], env=env)
    try:
        deadline = time.time() + 60
        while time.time() < deadline and not any(n.endswith(".tmp") for n in os.listdir(base)):
            time.sleep(0.05)
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
    left = [n for n in os.listdir(base) if n.endswith(".tmp")]
    assert left and all(n.startswith(".ckpt-000099.npz.") for n in left)
    ck = load_checkpoint(base)                                 # the last complete checkpoint is intact
    assert ck["step"] == 4
    save_checkpoint(base, load_model(base), None, 5)
    assert not [n for n in os.listdir(base) if n.endswith(".tmp")]
    assert json.loads((base / "latest.json").read_text())["step"] == 5


# --------------------------------------------------------------------------------------------------
# a run that fails leaves its --out reusable; every variant with a 4-bit base trains or is refused
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("failure", [["--lr", "1e9", "--steps", "20"], ["--r", "1000"], ["--target-modules", "nosuch"],
                                     ["--block-size", "1000"]])
def test_a_failed_finetune_leaves_its_out_reusable(base, tmp_path, capsys, failure):
    """A failed run (divergence, bad options found late) used to leave an empty <out>/adapter that the
    next run, with the fix the message advised, took for an adapter and refused without --overwrite."""
    out = tmp_path / "ft"
    assert main(["finetune", "--base", str(base), "--corpus", "pydoc", "--out", str(out), *FT, *failure]) == 2
    capsys.readouterr()
    assert main(["finetune", "--base", str(base), "--corpus", "pydoc", "--out", str(out), *FT]) == 0
    assert (out / "adapter" / "adapter_config.json").exists()


def _variant_flags():
    from minilora.lora.variant import VARIANTS
    flags = [["--variant", v] for v in sorted(VARIANTS) if v != "residual"]   # residual is chosen by its start
    return flags + [["--use-dora"], ["--init-lora-weights", "pissa"], ["--init-lora-weights", "olora"]]


@pytest.mark.parametrize("flags", _variant_flags(), ids=lambda f: "_".join(f).lstrip("-"))
def test_every_variant_on_a_4_bit_base_trains_or_is_refused_in_one_line(base, tmp_path, capsys, flags):
    """VeRA on --quantize nf4 crashed with a traceback deep in the 4-bit weight; each variant must
    either train on the 4-bit base or be refused before training, naming the flag the user typed."""
    out = tmp_path / "q"
    extra = ["--r", "2"] + (["--init-r", "4", "--target-r", "2"] if "adalora" in flags else [])
    code = main(["finetune", "--base", str(base), "--corpus", "pydoc", "--out", str(out), *FT, *extra,
                 "--quantize", "nf4", *flags])
    err = capsys.readouterr().err
    assert code in (0, 2) and "Traceback" not in err
    if code == 2:
        assert err.count("\n") == 1 and ("nf4" in err or "--quantize" in err), err
        assert not (out / "adapter" / "adapter_config.json").exists()


def test_a_closed_pipe_is_not_an_error():
    """`minilora drill --list | head -1` printed 'error: [Errno 32] Broken pipe' and exited 2."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    p = subprocess.Popen([sys.executable, "-m", "minilora", "drill", "--seed", "0", "--count", "40", "--explain"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    p.stdout.readline()
    p.stdout.close()                     # the reader goes away, as `head -1` does
    err = p.stderr.read().decode()
    assert p.wait(timeout=60) == 0 and err == "", err
