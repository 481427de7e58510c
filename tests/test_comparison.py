"""`minilora compare` and `minilora latency`: the smoke runs, the table, the Pareto front, the CLI."""
import json

import numpy as np
import pytest

from minilora.cli import main
from minilora.comparison import CompareConfig, default_specs, format_compare_table, pareto_front, run_compare
from minilora.latency import LatencyConfig, build_models, format_latency_table, run_latency
from minilora.tensor import no_grad


def _row(method, params, loss):
    return {"method": method, "trainable_params": params, "code_val": loss}


def test_pareto_front_keeps_exactly_the_undominated_rows():
    rows = [_row("a", 10, 2.0), _row("b", 100, 1.5), _row("c", 100, 1.8), _row("d", 1000, 1.6),
            _row("e", 5, 2.5), _row("f", 10, 2.0)]
    assert pareto_front(rows) == ["a", "b", "e", "f"]


@pytest.mark.slow
def test_compare_quick_runs_every_method_and_writes_the_table(tmp_path):
    res = run_compare(tmp_path, CompareConfig.quick(), log=lambda *_: None)
    rows = {r["method"]: r for r in res["rows"]}
    assert list(rows) == [s.label for s in default_specs()]
    assert rows["LoRA r=4 (c_attn)"]["trainable_params"] == 4 * 4 * (128 + 3 * 128)   # n_layer r (d_in + d_out)
    assert rows["prompt tuning P=16"]["positions_used"] == 16 and rows["prefix-layer P=16"]["positions_used"] == 0
    assert rows["IA3 (c_attn, mlp.c_proj)"]["trainable_params"] == 4 * (3 * 128 + 4 * 128)
    assert rows["full fine-tuning"]["optimizer_state_bytes"] == 2 * 4 * rows["full fine-tuning"]["trainable_params"]
    assert all(np.isfinite(r["code_val"]) and np.isfinite(r["prose_val"]) for r in rows.values())
    assert res["context"] == 64 - 16
    saved = json.loads((tmp_path / "compare.json").read_text())
    assert saved["pareto_front"] == pareto_front(res["rows"]) and saved["pareto_front"]
    text = (tmp_path / "compare.txt").read_text()
    assert all(label in text for label in rows) and "base model (not adapted)" in text
    assert (tmp_path / "pareto.png").stat().st_size > 1000


def test_compare_table_marks_the_front():
    rows = [dict(_row("x", 10, 1.0), trainable_pct=1.0, optimizer_state_bytes=80, ms_per_step=3.0, prose_val=2.0,
                 positions_used=0),
            dict(_row("y", 20, 1.5), trainable_pct=2.0, optimizer_state_bytes=160, ms_per_step=3.0, prose_val=2.0,
                 positions_used=4)]
    lines = format_compare_table(rows, {"code": 2.0, "prose": 1.0}).splitlines()
    assert lines[3].startswith("x*") and lines[4].startswith("y ")


def test_compare_cli_refuses_an_unknown_family(capsys):
    assert main(["compare", "--quick", "--methods", "lora,nope", "--out", "/tmp/never"]) == 2
    assert "unknown method families ['nope']" in capsys.readouterr().err


def test_latency_models_compute_what_their_names_say():
    cfg = LatencyConfig(batch_sizes=[1], seq_lens=[4], rounds=1, n_layer=1, n_embd=32, n_head=2)
    models = build_models(cfg)
    assert list(models) == ["base", "LoRA merged", "LoRA unmerged", "Adapter^H", "Adapter^L", "IA3 merged",
                            "prefix P=16"]
    idx = np.arange(4)[None]
    with no_grad():
        out = {n: m(idx)[0].data for n, m in models.items()}
    np.testing.assert_allclose(out["LoRA merged"], out["LoRA unmerged"], atol=1e-5)   # same adapter, merged
    assert all(np.abs(out[n] - out["base"]).max() > 1e-6 for n in out if n != "base")  # none is a no-op


def test_latency_quick_run_writes_the_table(tmp_path):
    cfg = LatencyConfig(batch_sizes=[1, 2], seq_lens=[1, 4], rounds=1, n_layer=1, n_embd=32, n_head=2)
    res = run_latency(tmp_path, cfg, log=lambda *_: None)
    assert set(res["overhead_pct"]) == set(res["ms"]) - {"base"}
    assert np.array(res["ms"]["base"]).shape == (2, 2)
    text = (tmp_path / "latency.txt").read_text()
    assert "T=4 B=2" in text and "Adapter^H" in text and (tmp_path / "latency.png").exists()


def test_latency_table_gives_percent_over_the_base():
    cfg = LatencyConfig(batch_sizes=[1], seq_lens=[1])
    text = format_latency_table({"base": np.array([[2.0]]), "slow": np.array([[3.0]])}, cfg)
    assert "2.00" in text and "+50.0%" in text


@pytest.mark.parametrize("argv", [["latency", "--quick", "--rounds", "0"], ["compare", "--quick", "--steps", "0"],
                                  ["compare", "--quick", "--seed", "-1"], ["latency", "--clock", "sundial"]])
def test_latency_and_compare_refuse_bad_numbers_in_one_line_before_any_work(argv, capsys, tmp_path):
    out = tmp_path / "never"
    assert main([*argv, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "error" in err and argv[2] in err
    assert not out.exists()


def test_compare_skips_a_variant_it_cannot_build_and_says_so(tmp_path, monkeypatch):
    import minilora.comparison as cmp
    monkeypatch.setattr(cmp, "VARIANTS", {"lora": None, "bogus": None})   # LoraConfig does not know "bogus"
    logged = []
    res = run_compare(tmp_path, CompareConfig(steps=1, batch_size=2, eval_batches=1, timing_rounds=1,
                                              families=["lora:bogus", "bitfit"]), log=logged.append)
    assert [s["method"] for s in res["skipped"]] == ["LoRA variant bogus r=4"]
    assert "variant" in res["skipped"][0]["reason"]
    assert any(line.startswith("  skipped LoRA variant bogus") for line in logged)
    assert [r["family"] for r in res["rows"]] == ["bitfit", "bitfit"]
