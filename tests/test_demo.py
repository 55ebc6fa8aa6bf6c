"""The README's first command on its `test` variant (two training tasks, one held out, six steps):
every stage runs, the report states held-out accuracy against both baselines, and a re-run reuses
what finished while `fresh` starts over."""

from __future__ import annotations

import json

import numpy as np

from cappy_jax import checkpoint, demo


def test_demo_trains_evaluates_and_reuses_finished_stages(tmp_path, capsys):
    work = tmp_path / "demo"
    summary = demo.run_demo(str(work), variant="test")
    assert summary["reused"] == []
    assert summary["checkpoints"] == [3, 6] and summary["train_pairs"] > 0
    assert checkpoint.load_config(work / "train").family == "bert"  # the MiniLM encoder, trained
    # Held-out tasks never reach the training data.
    manifest = json.loads((work / "data" / "manifest.json").read_text())
    assert set(manifest["splits"]["train"]["tasks"]) == {"sports_understanding", "word_sorting"}
    assert set(manifest["splits"]["heldout"]["tasks"]) == {"general_knowledge"}

    acc = summary["accuracy"]
    assert set(acc) == {"cappy", "chance", "zero-shot cosine"} and all(0 <= v <= 1 for v in acc.values())
    predictions = [json.loads(line) for line in (work / "report" / "predictions.jsonl").read_text().splitlines()]
    assert len(predictions) == summary["heldout_examples"] == 16
    assert acc["chance"] == np.mean([len(p["references"]) / len(p["candidates"]) for p in predictions])
    for method in ("cappy", "zero-shot cosine"):
        assert acc[method] == np.mean([p["candidates"][p["picks"][method]] in p["references"] for p in predictions])
    report = (work / "report" / "report.md").read_text()
    assert "general_knowledge" in report and "zero-shot cosine" in report
    assert list((work / "train" / "tensorboard").iterdir()) and (work / "hf_export" / "config.json").exists()
    out = capsys.readouterr().out
    for text in ("Held-out accuracy", "trained scorer", "chance", "zero-shot cosine", "TensorBoard:",
                 str(work / "report" / "report.md"), "[general_knowledge]"):
        assert text in out, text

    stamp = (work / "train" / "checkpoints").stat().st_mtime_ns
    again = demo.run_demo(str(work), variant="test")
    assert again["reused"] == ["init", "data", "train", "evaluate", "export"]
    assert again["accuracy"] == acc and (work / "train" / "checkpoints").stat().st_mtime_ns == stamp

    restarted = demo.run_demo(str(work), variant="test", fresh=True)
    assert restarted["reused"] == [] and restarted["checkpoints"] == [3, 6]
