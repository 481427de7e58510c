"""minilora drill: every template against a hand computation written here (not minilora.costs), the
grader, the session's endings (Ctrl-D, Ctrl-C, empty input), answers files end to end through
`python -m minilora drill`, progress files (corrupted ones too), and the lesson cells' tool."""
from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minilora import drill
from minilora.drill import progress as prog
from minilora.drill.grading import grade, parse_number, reference_answer
from minilora.drill.registry import TEMPLATES, TOPICS
from minilora.drill.session import generate, parse_answers, run_interactive

ROOT = Path(__file__).resolve().parents[1]

# ------------------------------------------------------------------------ hand computations (independent)
# Shapes typed from the papers: (family, L, heads, d, d_ff, V, context).
SHAPES = {"gpt2-small": ("gpt2", 12, 12, 768, 3072, 50257, 1024),
          "gpt2-medium": ("gpt2", 24, 16, 1024, 4096, 50257, 1024),
          "gpt2-large": ("gpt2", 36, 20, 1280, 5120, 50257, 1024),
          "gpt2-xl": ("gpt2", 48, 25, 1600, 6400, 50257, 1024),
          "llama-7b": ("llama", 32, 32, 4096, 11008, 32000, 2048),
          "llama-65b": ("llama", 80, 64, 8192, 22016, 32000, 2048)}
BYTES = {"float64": 8, "float32": 4, "bfloat16": 2, "float16": 2}
GiB, MiB = 2.0**30, 2.0**20


def n_full(key):
    fam, L, _, d, f, V, ctx = SHAPES[key]
    if fam == "gpt2":
        return V * d + ctx * d + L * (12 * d * d + 13 * d) + 2 * d
    return 2 * V * d + L * (4 * d * d + 3 * d * f + 2 * d) + d


def dims(key, target):
    _, _, _, d, f, _, _ = SHAPES[key]
    return {"q": (d, d), "k": (d, d), "v": (d, d), "c_attn": (d, 3 * d), "attn.c_proj": (d, d), "c_fc": (d, f),
            "mlp.c_proj": (f, d), "q_proj": (d, d), "k_proj": (d, d), "v_proj": (d, d), "o_proj": (d, d),
            "gate_proj": (d, f), "up_proj": (d, f), "down_proj": (f, d)}[target]


def n_lora(p):
    L = SHAPES[p["arch"]][1]
    return L * sum(p["r"] * (dims(p["arch"], t)[0] + dims(p["arch"], t)[1]) for t in p["targets"])


def act(key, b, s):
    _, L, a, h, _, _, _ = SHAPES[key]
    return L * s * b * h * (34 + 5 * a * s / h)


def p_lin(key):
    fam, L, _, d, f, _, _ = SHAPES[key]
    return L * (12 * d * d if fam == "gpt2" else 4 * d * d + 3 * d * f)


def erank(s):
    p = [v / sum(s) for v in s]
    return math.exp(-sum(v * math.log(v) for v in p))


def merge_hand(p):
    s = p["alpha"] / p["r"]
    i, j = p["i"], p["j"]
    return p["W0"][i][j] + s * sum(p["B"][i][k] * p["A"][k][j] for k in range(p["r"]))


def dB_hand(p):
    s, x, A, G = p["alpha"] / p["r"], p["x"], p["A"], p["G"]
    i, k = p["i"], p["k"]
    return s * sum(G[n][i] * sum(x[n][m] * A[k][m] for m in range(3)) for n in range(2))


def nf4(dq, block):
    return 4 + 8 / block + 32 / (block * 256) if dq else 4 + 32 / block


HAND = {
    "lora_params_gpt2_qv": n_lora,
    "lora_params_gpt2_modules": n_lora,
    "lora_params_llama": n_lora,
    "full_params_gpt": lambda p: (p["vocab"] + p["ctx"]) * p["n_embd"]
    + p["n_layer"] * (12 * p["n_embd"] ** 2 + 13 * p["n_embd"]) + 2 * p["n_embd"],
    "trainable_percent": lambda p: 100 * n_lora(p) / (n_full(p["arch"]) + n_lora(p)),
    "adamw_state_lora": lambda p: 2 * n_lora(p) * BYTES[p["dtype"]] / MiB,
    "full_ft_memory": lambda p: 4 * n_full(p["arch"]) * BYTES[p["dtype"]] / GiB,
    "lora_ft_memory": lambda p: (n_full(p["arch"]) + 4 * n_lora(p)) * BYTES[p["dtype"]] / GiB,
    "activation_memory": lambda p: act(p["arch"], p["batch"], p["seq"]) / GiB,
    "activation_seq_ratio": lambda p: act(p["arch"], 1, p["k"] * p["seq"]) / act(p["arch"], 1, p["seq"]),
    "checkpoint_full": lambda p: n_full(p["arch"]) * BYTES[p["dtype"]] / 1e9,
    "checkpoint_adapter": lambda p: n_lora(p) * BYTES[p["dtype"]] / MiB,
    "kv_cache_size": lambda p: 2 * SHAPES[p["arch"]][1] * p["batch"] * p["seq"] * SHAPES[p["arch"]][3]
    * BYTES[p["dtype"]] / GiB,
    "kv_cache_vs_weights": lambda p: n_full(p["arch"]) / (2 * SHAPES[p["arch"]][1] * SHAPES[p["arch"]][3]),
    "nf4_bits": lambda p: nf4(p["dq"], p["block"]),
    "nf4_model_memory": lambda p: n_full(p["arch"]) * nf4(p["dq"], 64) / 8 / GiB,
    "flops_linear_full": lambda p: 6 * p["N"] * p["d_in"] * p["d_out"] / 1e9,
    "flops_lora_saved": lambda p: 2 * p["N"] * p["d_in"] * p["d_out"] / 1e9,
    "flops_lora_layer": lambda p: (4 * p["N"] * p["d_in"] * p["d_out"] + 6 * p["N"] * p["r"] * (p["d_in"] + p["d_out"]))
    / 1e9,
    "flops_training_ratio": lambda p: (4 * p["N"] * p_lin(p["arch"]) + 6 * p["N"] * n_lora(p))
    / (6 * p["N"] * p_lin(p["arch"])),
    "scaling_alpha_over_r": lambda p: p["alpha"] / p["r"],
    "scaling_rslora": lambda p: p["alpha"] / math.sqrt(p["r"]),
    "scaling_rank_change": lambda p: math.sqrt(p["r1"] / p["r2"]) if p["rslora"] else p["r1"] / p["r2"],
    "merge_entry": merge_hand,
    "merge_serving_bytes": lambda p: p["k"] * n_full(p["arch"]) / (n_full(p["arch"]) + p["k"] * n_lora(p)),
    "init_dB_entry": dB_hand,
    "init_dA_sum": lambda p: 0.0,
    "rank_effective_rank": lambda p: erank(p["s"]),
    "rank_phi_random_baseline": lambda p: max(p["i"], p["j"]) / p["d"],
    "rank_phi_given": lambda p: len(set(range(p["i"])) & set(range(p["off"], p["off"] + p["j"]))) / min(p["i"], p["j"]),
    "latency_unmerged_flops": lambda p: SHAPES[p["arch"]][1] * 2 * 4 * SHAPES[p["arch"]][3] * p["r"],
}
# Multiple choice: a phrase only the right option contains.
RIGHT_OPTION = {"rslora_what_changes": "alpha/sqrt(r) instead of alpha/r", "merge_roundtrip": "up to float32 rounding",
                "init_which_grads": "B only", "latency_merged": "none:", "latency_adapter_layers": "in sequence",
                "latency_multi_tenant": "unmerged", "nf4_adapter_dtype": "BF16"}


def test_registry_has_25_templates_over_every_topic_and_each_is_checked_here():
    assert len(TEMPLATES) >= 25
    assert {t.topic for t in TEMPLATES.values()} == set(TOPICS)
    assert set(HAND) | set(RIGHT_OPTION) == set(TEMPLATES), "add a hand computation for each new template"


def test_docs_list_every_template_and_topic():
    doc = (ROOT / "docs" / "drill.md").read_text(encoding="utf-8")
    assert all(f"`{name}`" in doc for name in TEMPLATES)
    assert all(f"| {topic} |" in doc for topic in TOPICS)
    assert f"Templates by topic ({len(TEMPLATES)})" in doc


@pytest.mark.parametrize("name", sorted(TEMPLATES))
def test_template_answer_equals_hand_computation(name):
    for seed in range(6):
        q = TEMPLATES[name].make(np.random.default_rng(seed))
        assert (q.template, q.topic) == (name, TEMPLATES[name].topic)
        assert "minilora." in q.solution, "the worked solution must name the minilora function"
        if name in RIGHT_OPTION:
            assert q.kind == "choice" and len(q.choices) == 4
            right = q.choices["abcd".index(q.answer)]
            assert RIGHT_OPTION[name] in right
            assert sum(RIGHT_OPTION[name] in c for c in q.choices) == 1
        else:
            assert q.kind == "number"
            assert float(q.answer) == pytest.approx(HAND[name](q.params), rel=1e-9, abs=1e-12), (seed, q.params)
            assert "within" in q.text, "the question states its tolerance"
        assert grade(q, reference_answer(q)).right


def test_choice_answers_are_spread_over_the_letters():
    letters = [q.answer for q in generate(0, 200, ["latency", "init", "merge", "scaling", "nf4"]) if q.kind == "choice"]
    assert len(letters) > 40 and set(letters) == set("abcd")


def test_sessions_are_reproducible_and_cover_templates():
    a, b = generate(7, 40), generate(7, 40)
    assert [q.text for q in a] == [q.text for q in b]
    assert {q.template for q in a} == set(TEMPLATES)          # each template once before repeats
    assert all(q.topic == "rank" for q in generate(1, 5, ["rank"]))
    with pytest.raises(ValueError, match="unknown topic"):
        generate(0, 3, ["nope"])


# ------------------------------------------------------------------------------------------- grading

@pytest.mark.parametrize("text,value", [("294912", 294912), ("294,912", 294912), ("294_912", 294912),
                                        ("2.94912e5", 294912), ("294.912k", 294912), ("0.294912M", 294912),
                                        ("1.5G", 1.5e9), ("1.5B", 1.5e9), ("12.5%", 12.5), ("16/3", 16 / 3),
                                        (" -4 ", -4)])
def test_parse_number_formats(text, value):
    assert parse_number(text) == pytest.approx(value, rel=1e-12)


@pytest.mark.parametrize("text", ["abc", "4x", "nan", "inf", "1/0", "", "--1", "1e999"])
def test_parse_number_rejects_non_numbers(text):
    assert parse_number(text) is None


def test_grade_right_wrong_invalid_skipped():
    q = drill.Question("t", "scaling", "s?", "number", 4.0, "s = 16/4", rtol=0.01)
    assert grade(q, "4.03").status == "right"
    g = grade(q, "4.1")
    assert g.status == "wrong" and "2.5%" in g.message
    assert grade(q, "four").status == "invalid"
    gq = drill.Question("t", "kv_cache", "?", "number", 0.25, "", unit="GiB")
    assert grade(gq, "0.25 GiB").right and grade(gq, "0.25gib").right and grade(gq, "0.25 MiB").status == "invalid"
    assert grade(q, "   ").status == "skipped" and not grade(q, None).right
    zero = drill.Question("t", "init", "dA?", "number", 0.0, "", rtol=0.0, atol=1e-9)
    assert grade(zero, "0").right and not grade(zero, "1e-3").right
    c = drill.Question("t", "latency", "?", "choice", "c", "", choices=("w", "x", "y", "z"))
    assert grade(c, "C").right and grade(c, "(c)").right and grade(c, "3").right
    assert grade(c, "a").status == "wrong" and grade(c, "e").status == "invalid"


@settings(max_examples=200, deadline=None)
@given(answer=st.floats(-1e15, 1e15, allow_nan=False), given_=st.floats(-1e16, 1e16, allow_nan=False),
       rtol=st.sampled_from([0.0, 0.001, 0.01]))
def test_grade_numbers_is_the_stated_tolerance(answer, given_, rtol):
    q = drill.Question("t", "params", "?", "number", answer, "", rtol=rtol, atol=1e-9)
    g = grade(q, repr(given_))
    assert parse_number(repr(given_)) == given_
    assert g.right == (abs(given_ - answer) <= rtol * abs(answer) + 1e-9)
    assert g.status in ("right", "wrong")
    assert grade(q, reference_answer(q)).right


@settings(max_examples=300, deadline=None)
@given(text=st.text(max_size=30))
def test_grade_never_raises_on_any_text(text):
    for q in (drill.Question("t", "params", "?", "number", 3.0, ""),
              drill.Question("t", "latency", "?", "choice", "b", "", choices=("w", "x", "y", "z"))):
        assert grade(q, text).status in ("right", "wrong", "invalid", "skipped")


def test_many_drawn_questions_are_sane():
    for seed in range(8):
        for q in generate(seed, len(TEMPLATES)):
            if q.kind == "number":
                assert math.isfinite(float(q.answer)), (q.template, q.params)
                if q.template not in ("merge_entry", "init_dB_entry"):   # matrix entries may be negative
                    assert float(q.answer) >= 0, (q.template, q.params)
                assert q.rtol > 0 or q.atol > 0
            assert grade(q, reference_answer(q)).right


def test_parse_answers_file_format():
    text = "# my answers\n294912\n\n(b)   # a comment\n"
    assert parse_answers(text, 4) == ["294912", None, "(b)", None]
    with pytest.raises(ValueError, match="3 answers for 2 questions"):
        parse_answers("1\n2\n3\n", 2)


# --------------------------------------------------------------------------------------- interactive

def _wrong(q):
    """An answer the grader must call wrong (not invalid)."""
    if q.kind == "choice":
        return "a" if q.answer != "a" else "b"
    return repr(3 * abs(float(q.answer)) + 1)


def _feeder(items):
    it = iter(items)

    def input_fn(prompt):
        v = next(it)
        if isinstance(v, BaseException):
            raise v
        return v
    return input_fn


@pytest.mark.parametrize("ending,code", [(EOFError(), 0), ("", 0), ("q", 0), (KeyboardInterrupt(), 130)])
def test_interactive_session_ends_cleanly_with_the_score(ending, code, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MINILORA_DATA_DIR", str(tmp_path))
    qs = generate(3, 5)
    feed = ["not a number" if qs[0].kind == "number" else "z", reference_answer(qs[0]), _wrong(qs[1]), ending]
    assert run_interactive(qs, _feeder(feed)) == code
    out = capsys.readouterr().out
    assert "answer again" in out and "worked solution" in out
    assert "score: 1/2 answered (50%), 3 not answered" in out
    saved = json.loads((tmp_path / "progress.json").read_text())
    assert saved["sessions"] == 1 and sum(e["asked"] for e in saved["topics"].values()) == 2


def test_interactive_three_unreadable_answers_end_the_session(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MINILORA_DATA_DIR", str(tmp_path))
    qs = generate(4, 3)
    assert run_interactive(qs, _feeder([reference_answer(qs[0]), "??", "what", "no idea", "never read"])) == 0
    out = capsys.readouterr().out
    assert out.count("answer again") == 2 and "3 unreadable answers in a row" in out
    assert "score: 1/1 answered (100%), 2 not answered" in out


def test_interactive_session_through_stdin(tmp_path):
    qs = generate(11, 3)
    stdin = "\n".join(["what?", reference_answer(qs[0]), reference_answer(qs[1])]) + "\n"   # then Ctrl-D
    r = _drill(tmp_path, "--seed", "11", "--count", "3", stdin=stdin)
    assert r.returncode == 0, r.stderr
    assert "score: 2/2 answered (100%), 1 not answered" in r.stdout and "Traceback" not in r.stderr


@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT to a child process")
def test_real_ctrl_c_ends_with_the_score(tmp_path):
    import signal

    env = dict(os.environ, MINILORA_DATA_DIR=str(tmp_path), PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
    # A job started in the background by a non-interactive shell (nohup, `&`, some CI runners) inherits
    # SIGINT ignored, and Python then installs no KeyboardInterrupt handler: give the child the default.
    p = subprocess.Popen([sys.executable, "-m", "minilora", "drill", "--seed", "2", "--count", "3"],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        line = "x"
        while line and not line.startswith("Q1/"):      # "" is end of file: the child died early
            line = p.stdout.readline()
        assert line, p.stderr.read()
        time.sleep(0.3)
        p.send_signal(signal.SIGINT)
        p.wait(timeout=30)     # stdin stays open: communicate() would close it, and EOF could win the race
        out, err = p.stdout.read(), p.stderr.read()
    finally:
        p.kill()
    assert p.returncode == 130 and "interrupted" in out and "score: 0/0 answered" in out
    assert "Traceback" not in err


# ---------------------------------------------------------------------------------- the command line

def _drill(tmp_path, *args, stdin=None, data=None):
    env = dict(os.environ, MINILORA_DATA_DIR=str(data or tmp_path / "data"), PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "minilora", "drill", *args], input=stdin, capture_output=True,
                          text=True, env=env, timeout=60, cwd=tmp_path)


def test_answers_file_end_to_end(tmp_path):
    qs = generate(5, 6)
    lines = [reference_answer(q) for q in qs]
    lines[1] = "not-a-number" if qs[1].kind == "number" else "x"
    lines[2] = _wrong(qs[2])
    f = tmp_path / "answers.txt"
    f.write_text("# seed 5, 6 questions\n" + "\n".join(lines[:5]) + "\n")     # the 6th is missing
    r = _drill(tmp_path, "--seed", "5", "--count", "6", "--answers", str(f))
    assert r.returncode == 1, r.stderr
    assert "Q1 [" in r.stdout and "] right" in r.stdout and "] invalid" in r.stdout and "] wrong" in r.stdout
    assert "Q6 [" in r.stdout and "] skipped" in r.stdout
    assert "score: 3/5 answered (60%), 1 not answered" in r.stdout
    saved = json.loads((tmp_path / "data" / "progress.json").read_text())
    assert sum(e["right"] for e in saved["topics"].values()) == 3
    f.write_text("\n".join(reference_answer(q) for q in qs) + "\n")
    r = _drill(tmp_path, "--seed", "5", "--count", "6", "--answers", str(f))
    assert r.returncode == 0 and "score: 6/6" in r.stdout
    r = _drill(tmp_path, "--stats")
    assert r.returncode == 0 and "sessions: 2" in r.stdout and "weak topics" in r.stdout


def test_cli_explain_topic_and_errors(tmp_path):
    r = _drill(tmp_path, "--seed", "0", "--count", "4", "--topic", "nf4", "--topic", "rank", "--explain")
    assert r.returncode == 0 and r.stdout.count("answer: ") == 4
    assert set(line.split("] ")[0].split(" [")[1] for line in r.stdout.splitlines() if line.startswith("Q")) <= \
        {"nf4", "rank"}
    assert not (tmp_path / "data" / "progress.json").exists()   # --explain records nothing
    assert _drill(tmp_path, "--topic", "nope").returncode == 2
    r = _drill(tmp_path, "--answers", str(tmp_path / "missing.txt"), "--seed", "0")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    r = _drill(tmp_path, "--answers", str(tmp_path / "missing.txt"))
    assert r.returncode == 2 and "needs --seed" in r.stderr
    r = _drill(tmp_path, "--list")
    assert r.returncode == 0 and f"{len(TEMPLATES)} templates" in r.stdout


# ---------------------------------------------------------------------------------------- progress

@pytest.mark.parametrize("content", ["{not json", '{"version": 1, "topics": []}', "[]", "\xff\xfe"])
def test_corrupted_progress_file_is_set_aside(tmp_path, content):
    data = tmp_path / "data"
    data.mkdir()
    (data / "progress.json").write_bytes(content.encode("latin-1"))
    msgs = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MINILORA_DATA_DIR", str(data))
        assert prog.load_progress(warn=msgs.append) == prog.new_progress()
    assert len(msgs) == 1 and "corrupted" in msgs[0]
    aside = list(data.glob("progress.json.corrupt-*"))
    assert len(aside) == 1 and aside[0].read_bytes() == content.encode("latin-1")
    assert not (data / "progress.json").exists()
    # and through the command line: reported, never a crash
    (data / "progress.json").write_bytes(content.encode("latin-1"))
    r = _drill(tmp_path, "--stats", data=data)
    assert r.returncode == 0 and "corrupted" in r.stderr and "sessions: 0" in r.stdout


def test_progress_location_and_weak_topics(tmp_path, monkeypatch):
    monkeypatch.delenv("MINILORA_DATA_DIR", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert prog.progress_path() == tmp_path / "xdg" / "minilora" / "progress.json"
    monkeypatch.delenv("XDG_DATA_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert prog.progress_path() == tmp_path / "home" / ".local" / "share" / "minilora" / "progress.json"
    monkeypatch.setenv("MINILORA_DATA_DIR", str(tmp_path / "d"))
    q = {t: drill.Question(t, t, "", "number", 1.0, "") for t in ("rank", "nf4", "merge")}
    p = prog.record(prog.new_progress(), [(q["rank"], False), (q["rank"], True), (q["nf4"], True),
                                          (q["merge"], False)])
    assert prog.weak_topics(p) == ["merge", "rank"]
    prog.save_progress(p)
    assert prog.load_progress() == p
    assert "practise with: minilora drill --topic merge" in prog.format_stats(p)


# ---------------------------------------------------------------------------------- lessons and tool

def test_every_lesson_has_three_drill_questions(capsys):
    for lesson in drill.LESSON_TOPICS:
        qs = drill.lesson_drill(lesson)
        assert len(qs) == 3 and all(q.topic in drill.LESSON_TOPICS[lesson] for q in qs)
    assert capsys.readouterr().out.count("reference answers accepted") == len(drill.LESSON_TOPICS)


def test_add_drill_cells_is_idempotent_and_the_cell_runs(tmp_path):
    nbformat = pytest.importorskip("nbformat")
    lessons = tmp_path / "lessons"
    lessons.mkdir()
    for nb in sorted((ROOT / "lessons").glob("[0-9][0-9]_*.ipynb")):
        shutil.copy(nb, lessons / nb.name)
    before = {p.name: sum("drill" not in c.metadata.get("tags", []) for c in nbformat.read(p, as_version=4).cells)
              for p in lessons.glob("*.ipynb")}                  # the lessons' own cells (drill cells are replaced)
    tool = [sys.executable, str(ROOT / "tools" / "add_drill_cells.py"), str(lessons)]
    for _ in range(2):
        r = subprocess.run(tool, capture_output=True, text=True, timeout=60, env=dict(os.environ, PYTHONPATH=str(ROOT)))
        assert r.returncode == 0, r.stderr
    for p in sorted(lessons.glob("*.ipynb")):
        nb = nbformat.read(p, as_version=4)
        nbformat.validate(nb)
        tagged = [c for c in nb.cells if "drill" in c.metadata.get("tags", [])]
        assert [c.cell_type for c in tagged] == ["markdown", "code"] and nb.cells[-2:] == tagged
        assert len(nb.cells) == before[p.name] + 2
    code = tagged[1].source
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=lessons,
                       env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert r.returncode == 0, r.stderr
    assert time.perf_counter() - t0 < 5.0
    assert r.stdout.count("answer: ") == 3 and "reference answers accepted" in r.stdout


def test_every_lesson_notebook_ends_with_its_drill_cells():
    """Issue 16: each lesson ends with three drill questions on its topic. A new lesson fails here until it
    has a LESSON_TOPICS entry and `python tools/add_drill_cells.py` has been run."""
    nbformat = pytest.importorskip("nbformat")
    for path in sorted((ROOT / "lessons").glob("[0-9][0-9]_*.ipynb")):
        assert int(path.name[:2]) in drill.LESSON_TOPICS, path.name
        nb = nbformat.read(path, as_version=4)
        tags = [c.metadata.get("tags", []) for c in nb.cells[-2:]]
        assert all("drill" in t for t in tags), f"{path.name}: run python tools/add_drill_cells.py"
        assert f"lesson_questions({int(path.name[:2])})" in nb.cells[-1].source, path.name
