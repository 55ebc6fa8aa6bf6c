"""BIG-bench JSON tasks as `Example`s, with the zero-shot prompt BIG-bench itself would build.

Layout (as in the `bigbench==1.0.0` sdist, see `cappy_jax.data.fetch`): a task is a directory
with a `task.json`. A task whose `task.json` has no `examples` is a container: its subtasks are
the subdirectories that hold a `task.json`. Subtasks are named `task:subtask` after the
directory names (BIG-bench joins the JSON `name` fields instead; 27 subtasks of 1.0.0, e.g.
`bbq_lite_json/age_ambig` named `bbq_lite_json_age_ambig`, differ, and directory names are what
`list_tasks` and the fetch CLI show).

The prompt follows `bigbench/api/json_task.py` of 1.0.0 (`default_format_fn` with zero shots,
read from the sdist):

    task_prefix + example_input_prefix + input
        [+ choice_prefix + choice_prefix.join(choices)]   # target_scores and append_choices_to_input
        + example_output_prefix

with the defaults `task_prefix=""`, `example_input_prefix="\\nQ: "`,
`example_output_prefix="\\nA: "`, `choice_prefix="\\n  choice: "`,
`append_choices_to_input=True`, each read from the task's (or subtask's) own `task.json`.
The whole instruction is then stripped of leading/trailing whitespace (so "\\nA: " ends the
prompt as "\\nA:"). BIG-bench shows the choices in the order
`np.random.RandomState(42).permutation(sorted(choices))`, with a fresh RandomState per example,
so every example with n choices gets the same shuffle; `choice_order="bigbench"` reproduces it
(`"sorted"` and `"file"` are the alternatives) and `Example.choices` follows the prompt's order.

Targets: `target` (str or list of str) makes a generation example; `target_scores`
(choice -> score) makes a multiple-choice example whose references are all choices with the
maximum score, which must be > 0 (ties give several references). An example with both is a
multiple-choice example (BIG-bench scores it both ways; 34 files in 1.0.0, e.g. strategyqa,
whose `target` is an explanation). Like BIG-bench, exact duplicate examples are dropped (counted
in `ReadStats.duplicates`). `max_examples` takes the first examples, not BIG-bench's random
sample, so ids stay stable; a container splits it evenly over its subtasks as BIG-bench does.
Keys BIG-bench ignores (`prefix`, `input_prefix` in a few files) are ignored here too.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import json
import logging
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Literal

import numpy as np

from cappy_jax.data.records import Example

log = logging.getLogger("cappy_jax.data.sources.bigbench")

TASK_FILE = "task.json"
DEFAULT_INPUT_PREFIX = "\nQ: "
DEFAULT_OUTPUT_PREFIX = "\nA: "
DEFAULT_CHOICE_PREFIX = "\n  choice: "
BIGBENCH_SEED = 42  # json_task.JsonTask's default random_seed
ChoiceOrder = Literal["bigbench", "sorted", "file"]
TaskKind = Literal["choice", "generation", "mixed"]
_MAX_PROBLEMS_KEPT = 20


class BigBenchError(ValueError):
    """A task file or example that cannot become an `Example`; the message names file and index."""


@dataclasses.dataclass
class ReadStats:
    """What reading left out, so nothing is dropped silently. Pass one in to collect counts."""

    examples: int = 0        # Examples yielded
    skipped_bad: int = 0     # invalid examples skipped because skip_bad=True
    duplicates: int = 0      # exact duplicate examples dropped (BIG-bench drops them too)
    problems: list[str] = dataclasses.field(default_factory=list)  # first messages of skipped examples

    def note_bad(self, message: str) -> None:
        self.skipped_bad += 1
        if len(self.problems) < _MAX_PROBLEMS_KEPT:
            self.problems.append(message)


def _load_json(path: Path) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise BigBenchError(f"{path}: malformed JSON at line {e.lineno} column {e.colno}: {e.msg}") from e
    if not isinstance(data, dict):
        raise BigBenchError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def _task_file(path: str | Path) -> Path:
    path = Path(path)
    file = path if path.name == TASK_FILE else path / TASK_FILE
    if not file.is_file():
        raise FileNotFoundError(f"no {TASK_FILE} at {path} (programmatic BIG-bench tasks have only task.py)")
    return file


def _subtask_files(task_file: Path) -> list[Path]:
    # Sorted by path, as BIG-bench's JsonTask sorts its subtask files.
    return sorted(p / TASK_FILE for p in task_file.parent.iterdir() if (p / TASK_FILE).is_file())


def _units(task_file: Path, task_name: str) -> list[tuple[str, str, Path, dict[str, Any] | None]]:
    """(Example.task, id prefix, file, its data if already loaded) for each file of examples of a task.

    Subtask files are loaded one at a time later (natural_instructions has hundreds).
    """
    data = _load_json(task_file)
    if "examples" in data:
        return [(task_name, task_name.rpartition(":")[2], task_file, data)]
    subtasks = _subtask_files(task_file)
    if not subtasks:
        raise BigBenchError(f"{task_file}: has neither examples nor subtask directories with {TASK_FILE}")
    return [(f"{task_name}:{f.parent.name}", f.parent.name, f, None) for f in subtasks]


@functools.lru_cache(maxsize=256)
def _bigbench_permutation(n: int) -> tuple[int, ...]:
    """BIG-bench's choice shuffle for n choices. Memoised (pure): a RandomState costs ~40 us."""
    return tuple(int(i) for i in np.random.RandomState(seed=BIGBENCH_SEED).permutation(n))


def _ordered_choices(choices: list[str], order: ChoiceOrder) -> list[str]:
    if order == "file":
        return list(choices)
    ordered = sorted(choices)
    if order == "sorted":
        return ordered
    if order == "bigbench":
        return [ordered[i] for i in _bigbench_permutation(len(ordered))]
    raise ValueError(f"choice_order must be 'bigbench', 'sorted' or 'file', got {order!r}")


def _targets(raw: Any, where: str) -> tuple[str, ...]:
    targets = raw if isinstance(raw, list) else [raw]
    if not targets:
        raise BigBenchError(f"{where}: empty target list")
    for t in targets:
        if not isinstance(t, str):
            raise BigBenchError(f"{where}: target must be a string or a list of strings, got {type(t).__name__}")
        if not t.strip():
            raise BigBenchError(f"{where}: empty target")
    return tuple(targets)


def _scored_choices(raw: Any, where: str) -> tuple[list[str], tuple[str, ...]]:
    """(choices in file order, correct choices): the correct ones carry the maximum score."""
    if not isinstance(raw, dict) or not raw:
        raise BigBenchError(f"{where}: target_scores must be a non-empty object of choice -> score")
    for choice, score in raw.items():
        if isinstance(score, bool) or not isinstance(score, (int, float)):
            raise BigBenchError(f"{where}: score of choice {choice!r} is not a number: {score!r}")
    best = max(raw.values())
    if best <= 0:
        raise BigBenchError(f"{where}: no correct choice (the maximum score {best} is not > 0)")
    return list(raw), tuple(c for c, s in raw.items() if s == best)


def make_example(data: dict[str, Any], raw: Any, *, task: str, example_id: str, where: str,
                 choice_order: ChoiceOrder = "bigbench") -> Example:
    """One BIG-bench example -> `Example`; `data` is its task.json (for prefixes). Raises BigBenchError."""
    if not isinstance(raw, dict):
        raise BigBenchError(f"{where}: an example must be a JSON object, got {type(raw).__name__}")
    if not isinstance(raw.get("input"), str):
        raise BigBenchError(f"{where}: missing or non-string 'input'")
    text = raw["input"]
    choices: tuple[str, ...] = ()
    if "target_scores" in raw:
        file_order, references = _scored_choices(raw["target_scores"], where)
        choices = tuple(_ordered_choices(file_order, choice_order))
        if data.get("append_choices_to_input", True):
            prefix = data.get("choice_prefix", DEFAULT_CHOICE_PREFIX)
            text = text + prefix + prefix.join(choices)
    elif "target" in raw:
        references = _targets(raw["target"], where)
    else:
        raise BigBenchError(f"{where}: example has neither 'target' nor 'target_scores'")
    instruction = (str(data.get("task_prefix", "")) + data.get("example_input_prefix", DEFAULT_INPUT_PREFIX)
                   + text + data.get("example_output_prefix", DEFAULT_OUTPUT_PREFIX)).strip()
    try:
        return Example(task=task, example_id=example_id, instruction=instruction,
                       references=references, choices=choices)
    except (ValueError, TypeError) as e:
        raise BigBenchError(f"{where}: {e}") from e


def _read_unit(task: str, id_prefix: str, file: Path, data: dict[str, Any], *, max_examples: int | None,
               skip_bad: bool, stats: ReadStats, choice_order: ChoiceOrder) -> Iterator[Example]:
    examples = data["examples"]
    if not isinstance(examples, list):
        raise BigBenchError(f"{file}: 'examples' must be a list")
    seen: set[str] = set()
    yielded = 0
    for index, raw in enumerate(examples):
        if max_examples is not None and yielded >= max_examples:
            return
        key = json.dumps(raw)
        if key in seen:
            stats.duplicates += 1
            continue
        seen.add(key)
        where = f"{file}: example {index}"
        try:
            example = make_example(data, raw, task=task, example_id=f"{id_prefix}-{index}", where=where,
                                   choice_order=choice_order)
        except BigBenchError as e:
            if not skip_bad:
                raise
            stats.note_bad(str(e))
            continue
        yielded += 1
        stats.examples += 1
        yield example


def read_task(path: str | Path, *, task_name: str | None = None, max_examples: int | None = None,
              skip_bad: bool = False, stats: ReadStats | None = None,
              choice_order: ChoiceOrder = "bigbench") -> Iterator[Example]:
    """Examples of one task (a task directory or its task.json), subtasks included.

    `task_name` defaults to the directory name. `skip_bad` skips invalid examples and counts
    them in `stats` (and logs the count); malformed JSON always raises.
    """
    file = _task_file(path)
    name = task_name or file.parent.name
    stats = stats if stats is not None else ReadStats()
    units = _units(file, name)
    per_unit = max_examples
    if max_examples is not None and len(units) > 1:
        per_unit = max_examples // len(units)
        if per_unit < 1:
            raise ValueError(f"{name}: max_examples ({max_examples}) must be >= the number of subtasks ({len(units)})")
    before = (stats.skipped_bad, stats.duplicates)
    for unit_task, id_prefix, unit_file, data in units:
        data = data if data is not None else _load_json(unit_file)
        yield from _read_unit(unit_task, id_prefix, unit_file, data, max_examples=per_unit, skip_bad=skip_bad,
                              stats=stats, choice_order=choice_order)
    skipped, dups = stats.skipped_bad - before[0], stats.duplicates - before[1]
    if skipped or dups:
        log.warning("%s: skipped %d invalid and %d duplicate examples", name, skipped, dups)


def list_tasks(root: str | Path) -> list[str]:
    """Names of the JSON tasks (directories with a task.json) directly under `root`, sorted."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"no BIG-bench task directory at {root}")
    return sorted(p.name for p in root.iterdir() if (p / TASK_FILE).is_file())


def list_subtasks(root: str | Path, task: str) -> list[str]:
    """`task:subtask` names of a container task; [] for a task with its own examples."""
    file = _task_file(Path(root) / task)
    if "examples" in _load_json(file):
        return []
    return [f"{task}:{f.parent.name}" for f in _subtask_files(file)]


def _resolve(root: Path, name: str, known: list[str]) -> tuple[Path, str]:
    task, _, subtask = name.partition(":")
    if task not in known:
        close = difflib.get_close_matches(task, known, n=5)
        hint = f"; close matches: {', '.join(close)}" if close else ""
        raise ValueError(f"unknown BIG-bench task {task!r} under {root}{hint}")
    if not subtask:
        return root / task, task
    path = root / task / subtask
    if not (path / TASK_FILE).is_file():
        subs = [s.partition(":")[2] for s in list_subtasks(root, task)]
        close = difflib.get_close_matches(subtask, subs, n=5)
        raise ValueError(f"task {task!r} has no subtask {subtask!r}; subtasks: {', '.join(close or subs) or 'none'}")
    return path, name


def read_tasks(root: str | Path, names: Iterable[str] | None = None, *, max_examples: int | None = None,
               skip_bad: bool = False, stats: ReadStats | None = None,
               choice_order: ChoiceOrder = "bigbench") -> Iterator[Example]:
    """Examples of several tasks under `root` (all JSON tasks if `names` is None).

    A name is `task` or `task:subtask` (one subtask); `max_examples` applies to each name.
    Unknown names raise before anything is read, listing close matches.
    """
    root = Path(root)
    known = list_tasks(root)
    resolved = [_resolve(root, n, known) for n in (known if names is None else list(names))]
    stats = stats if stats is not None else ReadStats()
    for path, name in resolved:
        yield from read_task(path, task_name=name, max_examples=max_examples, skip_bad=skip_bad, stats=stats,
                             choice_order=choice_order)


def task_kind(path: str | Path) -> TaskKind:
    """'choice' if every example has target_scores, 'generation' if none has, else 'mixed'.

    Counts what this module yields (an example with both target and target_scores is a choice
    example), over all subtasks; invalid examples count by the keys they have.
    """
    file = _task_file(path)
    kinds: set[str] = set()
    for _, _, unit_file, data in _units(file, file.parent.name):
        examples = (data if data is not None else _load_json(unit_file)).get("examples")
        if not isinstance(examples, list):
            raise BigBenchError(f"{unit_file}: 'examples' must be a list")
        kinds.update("choice" if isinstance(e, dict) and "target_scores" in e else "generation" for e in examples)
    if not kinds:
        raise BigBenchError(f"{file}: no examples")
    if kinds == {"choice"}:
        return "choice"
    if kinds == {"generation"}:
        return "generation"
    return "mixed"
