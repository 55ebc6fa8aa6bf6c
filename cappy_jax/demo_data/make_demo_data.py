"""Regenerates `cappy_jax/demo_data/bigbench/` from the `bigbench==1.0.0` sdist on PyPI.

    python -m cappy_jax.demo_data.make_demo_data [--sdist bigbench-1.0.0.tar.gz] [--dest DIR]

Why a curated copy: the demo (README's first command) must run with no network beyond the package
install, and the sdist is 358 MB. This keeps, for the tasks below, only what the BIG-bench source
reads (`cappy_jax/data/sources/bigbench.py`): the prompt fields of `task.json` and each example's
`input` with `target_scores` (multiple choice; an explanation `target` beside it is dropped, as
Cappy never reads it) or `target` (generation). Training tasks keep their first `TRAIN_CAP`
examples, held-out tasks all of theirs. BIG-bench is Apache 2.0 (github.com/google/BIG-bench);
`README.md` here records the origin. The output is deterministic: same sdist, same bytes.

Task choice: short multiple-choice and generation tasks for training (a 2-core CPU trains on them
in minutes), and held-out multiple-choice tasks of other kinds (general knowledge, emoji titles,
word relations, odd one out) that the scorer never sees, so the demo measures transfer.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from configs.data.demo import HELDOUT_CHOICE, TRAIN_CHOICE, TRAIN_GENERATION

TRAIN_CAP = 150
PROMPT_FIELDS = ("name", "task_prefix", "example_input_prefix", "example_output_prefix", "choice_prefix",
                 "append_choices_to_input")


def trim(task: dict[str, Any], cap: int | None) -> dict[str, Any]:
    """Only the fields the BIG-bench source reads; the first `cap` examples. Pure."""
    out = {k: task[k] for k in PROMPT_FIELDS if k in task}
    examples = []
    for ex in task["examples"][:cap]:
        kept = {"input": ex["input"]}
        if "target_scores" in ex:
            kept["target_scores"] = ex["target_scores"]
        else:
            kept["target"] = ex["target"]
        examples.append(kept)
    out["examples"] = examples
    return out


def make(sdist: str | None, dest: Path) -> dict[str, int]:
    from cappy_jax.data import fetch

    tasks = TRAIN_CHOICE + TRAIN_GENERATION + HELDOUT_CHOICE
    with tempfile.TemporaryDirectory() as tmp:
        fetch.fetch("bigbench", tmp, names=tasks, sdist=sdist)
        counts = {}
        for name in tasks:
            task = json.loads((Path(tmp) / name / "task.json").read_text(encoding="utf-8"))
            if "examples" not in task:
                raise ValueError(f"{name} has subtasks; pick tasks with one task.json")
            trimmed = trim(task, None if name in HELDOUT_CHOICE else TRAIN_CAP)
            (dest / name).mkdir(parents=True, exist_ok=True)
            (dest / name / "task.json").write_text(json.dumps(trimmed, ensure_ascii=False, indent=0,
                                                              sort_keys=True) + "\n", encoding="utf-8")
            counts[name] = len(trimmed["examples"])
    return counts


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sdist", default=None, help="bigbench-1.0.0.tar.gz (default: pip download it)")
    parser.add_argument("--dest", default=str(Path(__file__).resolve().parent / "bigbench"))
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    counts = make(args.sdist, Path(args.dest))
    print(json.dumps(counts, indent=1))


if __name__ == "__main__":
    main()
