"""The command line: --help of each subcommand, a tiny pretrain + sample, user errors exit 2."""
import subprocess
import sys

import pytest

from minilora import cli

TINY = ["--steps", "20", "--n-layer", "1", "--n-head", "2", "--n-embd", "32", "--block-size", "32",
        "--batch-size", "8", "--lr", "3e-3", "--eval-batches", "2", "--sample-tokens", "20"]


@pytest.mark.parametrize("name", [c.name for c in cli.COMMANDS])
def test_help_of_each_subcommand(name, capsys):
    assert cli.main([name, "--help"]) == 0
    assert "usage: minilora " + name in capsys.readouterr().out


def test_top_level_help_lists_commands(capsys):
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    for c in cli.COMMANDS:
        assert c.name in out
    assert cli.main([]) == 2


def test_python_dash_m_works():
    r = subprocess.run([sys.executable, "-m", "minilora", "sample", "--help"], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0 and "--max-new-tokens" in r.stdout


def test_tiny_pretrain_then_sample(tmp_path, capsys):
    out = tmp_path / "base"
    assert cli.main(["pretrain", "--out", str(out), "--quiet", *TINY]) == 0
    text = capsys.readouterr().out
    assert "validation loss" in text and "unigram baseline" in text and "--- sample ---" in text
    assert (out / "latest.json").exists() and (out / "ckpt-000020.npz").exists()

    assert cli.main(["sample", "--ckpt", str(out), "--prompt", "The ", "--max-new-tokens", "15", "--seed", "1"]) == 0
    s1 = capsys.readouterr().out
    assert s1.startswith("The ")
    assert cli.main(["sample", "--ckpt", str(out), "--prompt", "The ", "--max-new-tokens", "15", "--seed", "1"]) == 0
    assert capsys.readouterr().out == s1                           # same seed, same text
    long_prompt = "x" * 100                                        # longer than block_size: cropped context
    assert cli.main(["sample", "--ckpt", str(out), "--prompt", long_prompt, "--max-new-tokens", "3"]) == 0

    # resume with more steps continues from the checkpoint
    args = [a if a != "20" else "24" for a in TINY]
    assert cli.main(["pretrain", "--out", str(out), "--quiet", "--resume", *args]) == 0
    assert (out / "ckpt-000024.npz").exists() and not (out / "ckpt-000020.npz").exists()


@pytest.mark.parametrize("argv, needle", [
    (["sample", "--ckpt", "{tmp}/missing"], "no checkpoint"),
    (["pretrain", "--corpus", "no-such-corpus", "--out", "{tmp}/x"], "unknown corpus"),
    (["pretrain", "--corpus", "{tmp}/nofile.txt", "--out", "{tmp}/x"], "does not exist"),
    (["pretrain", "--steps", "-5"], "--steps"),
    (["pretrain", "--lr", "abc"], "--lr"),
    (["pretrain", "--n-embd", "30", "--n-head", "4", "--out", "{tmp}/x"], "divisible"),
    (["pretrain", "--resume", "--out", "{tmp}/none", "--steps", "2"], "no checkpoint"),
    (["sample", "--ckpt", "{tmp}/corrupt"], "latest.json"),
    (["sample", "--temperature", "-1"], "--temperature"),
    (["frobnicate"], "invalid choice"),
])
def test_user_errors_exit_2_with_one_line(argv, needle, tmp_path, capsys):
    (tmp_path / "corrupt").mkdir()
    (tmp_path / "corrupt" / "latest.json").write_text("{not json")
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert needle in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_register_adds_a_subcommand(monkeypatch, capsys):
    monkeypatch.setattr(cli, "COMMANDS", list(cli.COMMANDS))
    seen = {}

    def add(p):
        p.add_argument("--n", type=cli.positive_int, default=1)

    def run(args):
        seen["n"] = args.n
        return 0

    cli.register("hello", "say hello", add, run)
    assert cli.main(["hello", "--n", "3"]) == 0 and seen == {"n": 3}


def test_readme_quick_start_has_two_commands_and_ci_runs_its_test_command():
    from pathlib import Path
    root = Path(__file__).resolve().parent.parent
    readme = (root / "README.md").read_text()
    section = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    blocks = [b.split("\n", 1)[1].strip() for b in section.split("```")[1::2]]
    assert len(blocks) == 2 and all("\n" not in b for b in blocks), blocks
    assert blocks[0] == "python -m pip install -e . && minilora demo"
    install, test_command = blocks[1].split(" && ")
    ci = (root / ".ci" / "run").read_text().splitlines()
    assert test_command in ci                                   # CI runs README's test command exactly
    assert any(line.endswith(install.removeprefix("python -m pip install ")) and "pip install" in line
               for line in ci)
