"""Plain JSONL records as `Example`s: the way to bring any data set that is not BIG-bench or PromptSource.

One JSON object a line (blank lines are skipped):

    {"instruction": "...", "references": ["...", ...]}              generation, several references
    {"instruction": "...", "response": "..."}                        generation, one reference
    {"instruction": "...", "choices": ["a", "b", "c"], "label": 1}   classification
    optional: "task" (else the reader's default_task, else the file's stem) and "id"
    (else "<file stem>-<line number>"); other keys are ignored.

With `choices`, the correct ones come from `label` (an index, a list of indices, the correct
choice string, or a list of those) or, without a label, from `references`/`response`, which
must then be choices; given both, they must agree. An example id may appear once per task in a
file, since ids group candidates later. Errors name the file and line; `skip_bad=True` skips bad
lines and counts them instead.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from cappy_jax.data.records import Example

log = logging.getLogger("cappy_jax.data.sources.jsonl")

_MAX_PROBLEMS_KEPT = 20


class RecordError(ValueError):
    """A line that cannot become an `Example`; the message names file and line."""


@dataclasses.dataclass
class ReadStats:
    """What reading left out, so nothing is dropped silently. Pass one in to collect counts."""

    examples: int = 0
    skipped_bad: int = 0     # bad lines skipped because skip_bad=True
    problems: list[str] = dataclasses.field(default_factory=list)  # first messages of skipped lines


def _strings(value: Any, field: str, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not value:
        raise RecordError(f"{where}: {field!r} must be a non-empty list of strings")
    for v in value:
        if not isinstance(v, str):
            raise RecordError(f"{where}: {field!r} must hold strings, got {type(v).__name__}")
        if not v.strip():
            raise RecordError(f"{where}: {field!r} has an empty string")
    return tuple(value)


def _given_references(record: dict[str, Any], where: str) -> tuple[str, ...] | None:
    has_refs, has_response = "references" in record, "response" in record
    if has_refs and has_response:
        raise RecordError(f"{where}: give 'references' or 'response', not both")
    if has_refs:
        return _strings(record["references"], "references", where)
    if has_response:
        response = record["response"]
        if not isinstance(response, str) or not response.strip():
            raise RecordError(f"{where}: 'response' must be a non-empty string")
        return (response,)
    return None


def _labelled(label: Any, choices: tuple[str, ...], where: str) -> tuple[str, ...]:
    items = label if isinstance(label, list) else [label]
    if not items:
        raise RecordError(f"{where}: 'label' is an empty list")
    correct: list[str] = []
    for item in items:
        if isinstance(item, bool) or not isinstance(item, (int, str)):
            raise RecordError(f"{where}: a label must be a choice index or a choice string, got {item!r}")
        if isinstance(item, int):
            if not 0 <= item < len(choices):
                raise RecordError(f"{where}: label {item} is out of range for {len(choices)} choices")
            item = choices[item]
        elif item not in choices:
            raise RecordError(f"{where}: label {item!r} is not one of the choices")
        if item not in correct:
            correct.append(item)
    return tuple(correct)


def parse_record(record: Any, *, default_task: str, default_id: str, where: str) -> Example:
    """One decoded JSON line -> `Example`. Raises RecordError naming `where`."""
    if not isinstance(record, dict):
        raise RecordError(f"{where}: a record must be a JSON object, got {type(record).__name__}")
    instruction = record.get("instruction")
    if not isinstance(instruction, str) or not instruction.strip():
        raise RecordError(f"{where}: missing or empty 'instruction'")
    task = record.get("task", default_task)
    if not isinstance(task, str) or not task:
        raise RecordError(f"{where}: 'task' must be a non-empty string")
    raw_id = record.get("id", default_id)
    if isinstance(raw_id, bool) or not isinstance(raw_id, (str, int)) or raw_id == "":
        raise RecordError(f"{where}: 'id' must be a non-empty string or an integer")
    given = _given_references(record, where)
    choices: tuple[str, ...] = ()
    if "choices" in record:
        choices = _strings(record["choices"], "choices", where)
        if len(set(choices)) != len(choices):
            raise RecordError(f"{where}: 'choices' has duplicates")
        if "label" in record:
            references = _labelled(record["label"], choices, where)
            if given is not None and set(given) != set(references):
                raise RecordError(f"{where}: 'label' gives {list(references)} but the references say {list(given)}")
        elif given is not None:
            missing = [r for r in given if r not in choices]
            if missing:
                raise RecordError(f"{where}: reference {missing[0]!r} is not one of the choices")
            references = given
        else:
            raise RecordError(f"{where}: 'choices' without 'label' (or references)")
    elif "label" in record:
        raise RecordError(f"{where}: 'label' without 'choices'")
    elif given is None:
        raise RecordError(f"{where}: no 'references' or 'response'")
    else:
        references = given
    try:
        return Example(task=task, example_id=str(raw_id), instruction=instruction, references=references,
                       choices=choices)
    except (ValueError, TypeError) as e:
        raise RecordError(f"{where}: {e}") from e


def read_jsonl(path: str | Path, *, default_task: str | None = None, max_examples: int | None = None,
               skip_bad: bool = False, stats: ReadStats | None = None) -> Iterator[Example]:
    """Examples of one JSONL file. `default_task` (else the file's stem) names records without 'task'."""
    path = Path(path)
    stats = stats if stats is not None else ReadStats()
    default_task = default_task or path.stem
    seen: dict[tuple[str, str], int] = {}
    yielded = skipped = 0
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if max_examples is not None and yielded >= max_examples:
                break
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as e:
                    raise RecordError(f"{where}: malformed JSON: {e.msg} (column {e.colno})") from e
                example = parse_record(record, default_task=default_task, default_id=f"{path.stem}-{lineno}",
                                       where=where)
                key = (example.task, example.example_id)
                if key in seen:
                    raise RecordError(f"{where}: id {example.example_id!r} of task {example.task!r} repeats "
                                      f"line {seen[key]}")
            except RecordError as e:
                if not skip_bad:
                    raise
                skipped += 1
                stats.skipped_bad += 1
                if len(stats.problems) < _MAX_PROBLEMS_KEPT:
                    stats.problems.append(str(e))
                continue
            seen[key] = lineno
            yielded += 1
            stats.examples += 1
            yield example
    if skipped:
        log.warning("%s: skipped %d bad lines", path, skipped)
