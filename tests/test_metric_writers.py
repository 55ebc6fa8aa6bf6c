"""Metric writers: every scalar in the JSON lines, the finite ones in TensorBoard, quietly."""

from __future__ import annotations

import json
import logging
import math

from etils import epath

from cappy_jax.metric_writers import MetricWriter


def test_undefined_metrics_stay_in_the_json_lines_and_out_of_tensorboard(tmp_path, caplog):
    writer = MetricWriter(epath.Path(tmp_path), enabled=True)
    with caplog.at_level(logging.WARNING):
        writer.write(3, {"eval/all/loss": 0.5, "eval/tasks/t/pearson": float("nan")})
    writer.close()
    assert not [r for r in caplog.records if "NaN" in r.getMessage()]  # tensorboardX warns per NaN scalar
    row = json.loads((tmp_path / "metrics.jsonl").read_text())
    assert row["step"] == 3 and row["eval/all/loss"] == 0.5 and math.isnan(row["eval/tasks/t/pearson"])
    events = list((tmp_path / "tensorboard").iterdir())
    assert len(events) == 1 and b"eval/all/loss" in events[0].read_bytes()
    assert b"eval/tasks/t/pearson" not in events[0].read_bytes()


def test_a_disabled_writer_writes_nothing(tmp_path):
    writer = MetricWriter(epath.Path(tmp_path), enabled=False)
    writer.write(1, {"loss": 1.0})
    writer.close()
    assert not list(tmp_path.iterdir())
