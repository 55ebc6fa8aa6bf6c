"""Where training metrics go: TensorBoard event files and a JSON-lines file, from process 0 only.

tensorboardX writes event files without TensorFlow, which stays out of the training loop. An undefined
metric (NaN: e.g. the Pearson of a task an eval capped by `eval_max_batches` saw one pair of) is kept in
the JSON lines and left out of TensorBoard, where tensorboardX logged a warning for each one (780 lines
for one capped eval over BIG-bench's 315 validation tasks).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping

from etils import epath


class MetricWriter:
    def __init__(self, workdir: epath.Path, *, enabled: bool):
        self.enabled = enabled
        self._jsonl = None
        self._tb = None
        if enabled:
            from tensorboardX import SummaryWriter

            self._tb = SummaryWriter(str(workdir / "tensorboard"))
            self._jsonl = (workdir / "metrics.jsonl").open("a")

    def write(self, step: int, scalars: Mapping[str, float]) -> None:
        if not self.enabled:
            return
        for k, v in scalars.items():
            if math.isfinite(float(v)):
                self._tb.add_scalar(k, float(v), step)
        self._jsonl.write(json.dumps({"step": step, **{k: float(v) for k, v in scalars.items()}}) + "\n")
        self._jsonl.flush()
        self._tb.flush()

    def close(self) -> None:
        if self.enabled:
            self._tb.close()
            self._jsonl.close()
