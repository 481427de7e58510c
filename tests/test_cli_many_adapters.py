"""The command line of lesson 11: `finetune --variant vera`, and `sample` with several named adapters."""
import json

from minilora import checkpoints, cli

QUICK = ["--steps", "2", "--batch-size", "4", "--eval-batches", "1", "--quiet"]


def test_finetune_vera_then_sample_two_adapters_in_one_mixed_batch(tmp_path, capsys):
    base = str(checkpoints.path())
    assert cli.main(["finetune", "--base", base, "--corpus", "stdlib", "--variant", "vera", "--r", "64",
                     "--out", str(tmp_path / "vera"), *QUICK]) == 0
    out = capsys.readouterr().out
    assert "trainable params: 1792 " in out                       # 4 layers x (r 64 + d_out 384)
    meta = json.loads((tmp_path / "vera" / "adapter" / "adapter_config.json").read_text())
    assert meta["peft_type"] == "VERA" and meta["r"] == 64
    assert cli.main(["finetune", "--base", base, "--corpus", "stdlib", "--r", "2",
                     "--out", str(tmp_path / "lora"), *QUICK]) == 0
    capsys.readouterr()
    args = ["sample", "--ckpt", base, "--prompt", "def ", "--max-new-tokens", "8", "--temperature", "0"]
    assert cli.main([*args, "--adapter", f"code={tmp_path / 'lora' / 'adapter'}",
                     "--adapter", f"vera={tmp_path / 'vera' / 'adapter'}", "--adapter", "__base__="]) == 0
    mixed = capsys.readouterr().out
    assert [line for line in mixed.splitlines() if line.startswith("--- ")] == ["--- code", "--- vera", "--- __base__"]
    assert cli.main([*args, "--adapter", str(tmp_path / "vera" / "adapter")]) == 0     # one adapter, as before
    alone = capsys.readouterr().out.strip()
    assert alone in mixed                                           # greedy: the mixed row == the adapter alone


def test_sample_several_adapters_must_be_named(tmp_path, capsys):
    base = str(checkpoints.path())
    assert cli.main(["sample", "--ckpt", base, "--adapter", "a", "--adapter", "b"]) == 2
    assert "name each one: --adapter NAME=PATH" in capsys.readouterr().err
    assert cli.main(["sample", "--ckpt", base, "--adapter", "x=nowhere", "--adapter", "y=nowhere"]) == 2
    assert "no adapter folder at 'nowhere'" in capsys.readouterr().err
    assert cli.main(["finetune", "--base", base, "--full", "--variant", "vera"]) == 2
    assert "--variant) do not apply" in capsys.readouterr().err
