"""Where training metrics go: TensorBoard event files and a JSON-lines file, from process 0 only.

tensorboardX writes event files without TensorFlow, which stays out of the training loop.
"""

from __future__ import annotations

import json
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
            self._tb.add_scalar(k, float(v), step)
        self._jsonl.write(json.dumps({"step": step, **{k: float(v) for k, v in scalars.items()}}) + "\n")
        self._jsonl.flush()
        self._tb.flush()

    def close(self) -> None:
        if self.enabled:
            self._tb.close()
            self._jsonl.close()
