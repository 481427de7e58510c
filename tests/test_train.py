"""Training loop, evaluation, crash-safe checkpoints and bit-exact resume."""
import json
import os

import numpy as np
import pytest

import minilora.io
from minilora.checkpoint import load_checkpoint, load_model, save_checkpoint
from minilora.data import TokenDataset, load_corpus
from minilora.nn import GPT, GPTConfig
from minilora.optim import AdamW
from minilora.train import TrainConfig, evaluate, train

TINY = GPTConfig(block_size=32, n_layer=1, n_head=2, n_embd=32)


@pytest.fixture(scope="module")
def pydoc():
    return TokenDataset(load_corpus("pydoc"))


def quiet(_):
    pass


def tiny_cfg(**kw):
    base = dict(max_steps=6, batch_size=4, lr=3e-3, eval_interval=3, eval_batches=2, log_interval=3, seed=1)
    base.update(kw)
    return TrainConfig(**base)


def test_train_lowers_validation_loss_on_pydoc(pydoc):
    model = GPT(TINY, seed=0)
    val = pydoc.fixed_batches("val", 4, 8, 32, seed=123)
    before = evaluate(model, val)
    lines = []
    hist = train(model, pydoc, TrainConfig(max_steps=60, batch_size=8, lr=3e-3, eval_interval=30,
                                           eval_batches=4, log_interval=20), log=lines.append, val_batches=val)
    after = evaluate(model, val)
    assert after < before - 1.0, (before, after)
    assert hist["val_step"] == [30, 60] and len(hist["train_loss"]) == 60
    assert hist["final"]["val_loss"] == hist["val_loss"][-1] == pytest.approx(after)
    assert hist["best"]["val_loss"] == min(hist["val_loss"])
    assert hist["ms_per_step"] > 0 and hist["tokens_per_s"] > 0
    prog = [s for s in lines if s.startswith("step ")]
    assert len(prog) == 3
    assert prog[-1].startswith("step 60/60 | train ") and " tok/s | " in prog[-1] and "ms/step | eta " in prog[-1]


def test_evaluate_restores_mode(pydoc):
    model = GPT(TINY)
    batches = pydoc.fixed_batches("val", 1, 2, 32)
    model.train()
    evaluate(model, batches)
    assert model.training
    model.eval()
    evaluate(model, batches)
    assert not model.training
    with pytest.raises(ValueError):
        evaluate(model, [])


def test_checkpoint_round_trip_is_bit_exact(pydoc, tmp_path):
    cfg = GPTConfig(block_size=32, n_layer=1, n_head=2, n_embd=32, dropout=0.1)
    model = GPT(cfg, seed=3)
    opt = AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    train(model, pydoc, tiny_cfg(), optimizer=opt, out_dir=tmp_path, log=quiet)
    assert sorted(os.listdir(tmp_path)) == ["ckpt-000006.json", "ckpt-000006.npz", "latest.json"]
    ck = load_checkpoint(tmp_path)
    assert ck["step"] == 6
    sd = model.state_dict()
    assert list(ck["model"]) == list(sd)
    for k, v in sd.items():
        assert ck["model"][k].dtype == v.dtype
        np.testing.assert_array_equal(ck["model"][k], v)
    osd = opt.state_dict()
    assert sorted(ck["optim"]) == sorted(osd)
    for k, v in osd.items():
        np.testing.assert_array_equal(ck["optim"][k], v)
    assert ck["model_rng"] == model.rng.bit_generator.state
    assert ck["train_state"]["train_config"]["max_steps"] == 6
    back = load_model(tmp_path)
    assert back.config == cfg and back.dtype == np.float32
    assert back.rng.bit_generator.state == model.rng.bit_generator.state
    for (n, a), (_, b) in zip(model.named_parameters(), back.named_parameters(), strict=True):
        np.testing.assert_array_equal(a.data, b.data, err_msg=n)
    assert load_model(tmp_path, dtype=np.float64).dtype == np.float64

    # any generator state survives the JSON round trip
    g = np.random.default_rng(42)
    g.random(7)
    save_checkpoint(tmp_path / "other", model, None, 0, {"rng": g.bit_generator.state})
    h = np.random.default_rng()
    h.bit_generator.state = load_checkpoint(tmp_path / "other")["train_state"]["rng"]
    np.testing.assert_array_equal(g.random(5), h.random(5))


def test_resume_equals_uninterrupted_run(pydoc, tmp_path):
    cfg = GPTConfig(block_size=32, n_layer=1, n_head=2, n_embd=32, dropout=0.1)   # model.rng in use
    N = 5
    full = GPT(cfg, seed=7)
    h_full = train(full, pydoc, tiny_cfg(max_steps=2 * N, eval_interval=N), log=quiet)

    first = GPT(cfg, seed=7)
    train(first, pydoc, tiny_cfg(max_steps=N, eval_interval=N, lr_decay_steps=2 * N), out_dir=tmp_path, log=quiet)
    second = GPT(cfg, seed=99)                       # different init: everything must come from the checkpoint
    h_res = train(second, pydoc, tiny_cfg(max_steps=2 * N, eval_interval=N, lr_decay_steps=2 * N),
                  out_dir=tmp_path, resume=True, log=quiet)
    for (n, a), (_, b) in zip(full.named_parameters(), second.named_parameters(), strict=True):
        np.testing.assert_array_equal(a.data, b.data, err_msg=n)
    assert h_res["train_loss"] == h_full["train_loss"]
    assert h_res["val_loss"] == h_full["val_loss"]
    assert full.rng.bit_generator.state == second.rng.bit_generator.state
    assert load_checkpoint(tmp_path)["step"] == 2 * N


def test_resume_errors(pydoc, tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        train(GPT(TINY), pydoc, tiny_cfg(), out_dir=tmp_path, resume=True, log=quiet)
    with pytest.raises(ValueError, match="out_dir"):
        train(GPT(TINY), pydoc, tiny_cfg(), resume=True, log=quiet)
    train(GPT(TINY), pydoc, tiny_cfg(max_steps=1), out_dir=tmp_path, log=quiet)
    other = GPT(GPTConfig(block_size=32, n_layer=1, n_head=2, n_embd=16))
    with pytest.raises(ValueError, match="ckpt-000001.json.*does not match"):
        train(other, pydoc, tiny_cfg(max_steps=2), out_dir=tmp_path, resume=True, log=quiet)


@pytest.fixture
def saved(pydoc, tmp_path):
    model = GPT(TINY, seed=0)
    train(model, pydoc, tiny_cfg(max_steps=2, eval_interval=2), out_dir=tmp_path, log=quiet)
    return tmp_path


def test_truncated_npz_gives_clear_error(saved):
    npz = saved / "ckpt-000002.npz"
    npz.write_bytes(npz.read_bytes()[: npz.stat().st_size // 2])
    with pytest.raises(ValueError, match="ckpt-000002.npz.*(corrupted or truncated)"):
        load_checkpoint(saved)


def test_corrupted_npz_gives_clear_error(saved, monkeypatch):
    npz = saved / "ckpt-000002.npz"
    data = bytearray(npz.read_bytes())
    data[len(data) // 2] ^= 0xFF
    npz.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="ckpt-000002.npz.*sha256"):
        load_checkpoint(saved)
    # even with the checksum bypassed, the reader names the file
    meta = json.loads((saved / "ckpt-000002.json").read_text())
    (saved / "ckpt-000002.npz").write_bytes(b"PK\x03\x04 not really a zip")
    import hashlib
    meta["sha256"] = hashlib.sha256(b"PK\x03\x04 not really a zip").hexdigest()
    (saved / "ckpt-000002.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="ckpt-000002.npz"):
        load_checkpoint(saved)


def test_corrupted_metadata_and_missing_checkpoint(saved, tmp_path_factory):
    (saved / "ckpt-000002.json").write_text('{"format": "minilora-checkpoint", "step": 2,')
    with pytest.raises(ValueError, match="ckpt-000002.json"):
        load_checkpoint(saved)
    (saved / "latest.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="latest.json"):
        load_checkpoint(saved)
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path_factory.mktemp("empty"))
    with pytest.raises(FileNotFoundError):
        load_checkpoint(saved / "does-not-exist")


@pytest.mark.parametrize("where", ["npz", "meta", "pointer"])
def test_interrupted_save_leaves_previous_checkpoint(pydoc, tmp_path, monkeypatch, where):
    model = GPT(TINY, seed=0)
    real_npz, real_json = minilora.io.save_npz_atomic, minilora.io.save_json_atomic
    calls = {"saves": 0}

    def npz(path, arrays):
        calls["saves"] += 1
        if where == "npz" and calls["saves"] == 2:
            with open(path, "wb") as f:          # a torn write of the new file, then the crash
                f.write(b"PK\x03\x04partial")
            raise KeyboardInterrupt
        real_npz(path, arrays)

    def js(path, obj):
        if calls["saves"] == 2 and ((where == "meta" and path.name.startswith("ckpt-"))
                                    or (where == "pointer" and path.name == "latest.json")):
            raise OSError("disk full")
        real_json(path, obj)

    monkeypatch.setattr(minilora.io, "save_npz_atomic", npz)
    monkeypatch.setattr(minilora.io, "save_json_atomic", js)
    with pytest.raises((KeyboardInterrupt, OSError)):
        train(model, pydoc, tiny_cfg(max_steps=6, eval_interval=3), out_dir=tmp_path, log=quiet)
    monkeypatch.undo()
    ck = load_checkpoint(tmp_path)
    assert ck["step"] == 3
    back = load_model(tmp_path)
    assert not np.array_equal(back.transformer.wte.weight.data, model.transformer.wte.weight.data)
    # and a resumed run goes on from step 3
    h = train(back, pydoc, tiny_cfg(max_steps=6, eval_interval=3), out_dir=tmp_path, resume=True, log=quiet)
    assert h["step"][-1] == 6 and load_checkpoint(tmp_path)["step"] == 6
    assert not any(n.startswith("ckpt-000003") for n in os.listdir(tmp_path))


def test_train_config_validation():
    with pytest.raises(ValueError, match="max_steps"):
        TrainConfig(max_steps=0)
    with pytest.raises(TypeError, match="batch_size"):
        TrainConfig(batch_size=2.5)
    with pytest.raises(ValueError, match="min_lr"):
        TrainConfig(lr=1e-4, min_lr=1e-3)
    with pytest.raises(ValueError, match="warmup_steps"):
        TrainConfig(max_steps=10, warmup_steps=20)
    with pytest.raises(ValueError, match="lr"):
        TrainConfig(lr=float("nan"))
    cfg = TrainConfig(max_steps=1000)
    assert cfg.min_lr == pytest.approx(1e-4) and cfg.warmup_steps == 100
    assert cfg.lr_at(100) == pytest.approx(1e-3) and cfg.lr_at(1000) == pytest.approx(1e-4)


def test_trains_only_parameters_with_requires_grad(pydoc):
    model = GPT(TINY, seed=0)
    frozen = {n: p.data.copy() for n, p in model.named_parameters() if "ln_" not in n}
    for n, p in model.named_parameters():
        p.requires_grad = "ln_" in n
    train(model, pydoc, tiny_cfg(max_steps=2), log=quiet)
    for n, p in model.named_parameters():
        if n in frozen:
            np.testing.assert_array_equal(p.data, frozen[n], err_msg=n)


def test_lora_model_trains_only_adapters_and_resumes_exactly(pydoc, tmp_path):
    lora = pytest.importorskip("minilora.lora")
    cfg = GPTConfig(block_size=32, n_layer=1, n_head=2, n_embd=32)

    def make():
        return lora.get_peft_model(GPT(cfg, seed=5), lora.LoraConfig(r=2, lora_alpha=4, lora_dropout=0.1,
                                                                     target_modules=("c_attn", "c_fc")))

    full = make()
    base_before = {n: p.data.copy() for n, p in full.named_parameters() if not p.requires_grad}
    train(full, pydoc, tiny_cfg(max_steps=4, eval_interval=2), log=quiet)
    for n, p in full.named_parameters():
        if n in base_before:
            np.testing.assert_array_equal(p.data, base_before[n], err_msg=n)
    first = make()
    train(first, pydoc, tiny_cfg(max_steps=2, eval_interval=2, lr_decay_steps=4), out_dir=tmp_path, log=quiet)
    second = make()
    train(second, pydoc, tiny_cfg(max_steps=4, eval_interval=2, lr_decay_steps=4), out_dir=tmp_path,
          resume=True, log=quiet)
    for (n, a), (_, b) in zip(full.named_parameters(), second.named_parameters(), strict=True):
        np.testing.assert_array_equal(a.data, b.data, err_msg=n)
    with pytest.raises(ValueError, match="not a plain GPT"):
        load_model(tmp_path)
