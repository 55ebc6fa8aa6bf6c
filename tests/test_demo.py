"""The README's first command, in-process: convert, reload, score packed and single, export, re-run."""

from __future__ import annotations

from cappy_jax import checkpoint, demo


def test_demo_runs_and_reuses_finished_stages(tmp_path, capsys):
    summary = demo.run_demo(str(tmp_path / "demo"))
    assert summary["rows_packed"] < summary["pairs"] == 8
    assert summary["padding_packed"] < summary["padding_one_per_row"]
    assert summary["max_abs_diff_packed_vs_single"] <= 1e-4
    assert checkpoint.load_config(summary["scorer_dir"]).family == "bert"
    out = capsys.readouterr().out
    assert "What is the capital of France?" in out and "Paris" in out

    model_json = tmp_path / "demo" / "init_scorer" / "model.json"
    first = model_json.stat().st_mtime_ns
    demo.run_demo(str(tmp_path / "demo"))
    assert model_json.stat().st_mtime_ns == first, "a finished stage was redone"
    demo.run_demo(str(tmp_path / "demo"), fresh=True)
    assert model_json.stat().st_mtime_ns != first, "--fresh did not start over"
