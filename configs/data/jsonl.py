"""Plain JSONL data (`cappy_jax.data.sources.jsonl`), as data: `get_config('a.jsonl,b.jsonl')`.

The argument is a comma-separated list of files (also settable later as `config.paths`); the
record format is in the source module's docstring.
"""

from __future__ import annotations

import ml_collections

from configs.data import common


def get_config(paths: str = "") -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict(dict(
        source="jsonl",
        paths=tuple(p.strip() for p in paths.split(",") if p.strip()),  # JSONL files, read in this order
        default_task="",                 # task of records without "task"; "" = each file's stem
        heldout_tasks=(),                # evaluation-only tasks: never in the training data
        max_examples_per_file=0,         # 0 = all; else the first N examples of each file
        skip_bad=False,                  # True: skip and count bad lines instead of failing on the first
        candidates=common.candidates(),
        llm=common.llm(),
        output=common.output(),
        beam=common.beam(),
    ))
    config.lock()
    return config
