"""A data config -> small picklable work units -> `Example`s, so the Beam build can read in parallel.

`work_units(config)` lists what to read; `read_unit(config, unit)` reads one unit and returns its
examples with integer stats for the manifest; `merge_stats` adds stats up. `config` is the data
config as a plain dict (`ConfigDict.to_dict()`; a ConfigDict is converted). Everything a reader
needs beyond the config travels in `Unit.args` as (key, value) pairs, so a unit pickles, hashes
and reads the same on any worker.

Units, in a deterministic order: training units in config order, then held-out units.
- bigbench: one unit per task of `tasks` (`()` = every JSON task under `dir`) not held out, then one
  held-out unit per `heldout_tasks` entry. A held-out name removes a listed `task:subtask` of a
  held-out task; a held-out subtask of a listed container task carves it out (the training unit
  reads the other subtasks, each capped as the whole container would cap it).
- jsonl: per file in `paths`, a training unit keeping the records whose task is not held out and,
  when `heldout_tasks` is not empty, a held-out unit keeping the others. Both read the first
  `max_examples_per_file` examples of the file; the training unit alone counts the file's bad
  lines, so merged stats count each line once.
- promptsource: one unit per (dataset[/subset], template) of `datasets`, templates chosen by
  `templates` ("all" | "original_task") minus `exclude_templates` (T0 task names, as T0's
  blacklist, or template ids). A config whose datasets are all in `heldout` (the t0 `heldout` and
  `bias` variants) builds evaluation data: every unit is held out. A config mixing held-out and
  other datasets is refused: that is how evaluation sets leak into training data.

T0's cap: a dataset whose listed size (`datasets` holds (name, T0 train size) pairs; 0 or a bare
name = unknown, never capped) exceeds `max_examples_per_dataset` gives each of its selected
templates `max_examples_per_dataset // #templates` rows, a seeded random sample (seed
`output.seed`, dataset, split, template), drawn in one pass with O(cap) memory and kept in row
order; rows left out are counted in `over_cap`. A split that `split_names` maps to several splits
(ANLI's rounds) reads each as its own task, named with the round as T0 did (`<task>_r1`), each
capped alike. Example ids are `<split>-<row index>`, the index in the full split, so a capped
example keeps the id it has uncapped. `output.seed` also seeds promptsource's `choice`/`random`
filters.
"""

from __future__ import annotations

import collections
import dataclasses
import difflib
import heapq
import logging
import random
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, NoReturn

from cappy_jax.data.records import Example
from cappy_jax.data.sources import bigbench as bb
from cappy_jax.data.sources import jsonl as jl
from cappy_jax.data.sources import promptsource as ps

log = logging.getLogger("cappy_jax.data.read")

SOURCES = ("bigbench", "jsonl", "promptsource")
# Stats every unit reports (0 where a source has no such notion); merge_stats keeps this order first.
STAT_KEYS = ("examples", "skipped_bad", "duplicates", "skipped_empty")
ROW_BACKENDS = ("hf", "tfds", "jsonl")
TEMPLATE_SELECTIONS = ("all", "original_task")
_PROBLEMS_LOGGED = 3


@dataclasses.dataclass(frozen=True)
class Unit:
    """One independently readable piece of a data config; small, hashable and picklable for Beam."""

    source: str        # "bigbench" | "jsonl" | "promptsource"
    name: str          # bigbench: task or task:subtask; jsonl: file path; promptsource: dataset[/subset]:template_id
    heldout: bool      # True: its examples are evaluation-only (the build writes them to the `heldout` split)
    args: tuple = ()   # (key, value) pairs the reader needs beyond the config

    @property
    def label(self) -> str:
        """How errors and logs name the unit."""
        return f"{self.source} unit {self.name!r}{' (held out)' if self.heldout else ''}"

    def arg(self, key: str, default: Any = None) -> Any:
        return dict(self.args).get(key, default)


# ---------------------------------------------------------------------------------------------
# Helpers

def _plain(config: Any) -> dict[str, Any]:
    return config.to_dict() if hasattr(config, "to_dict") else dict(config)


def _source(config: Mapping[str, Any]) -> str:
    source = config.get("source")
    if source not in SOURCES:
        raise ValueError(f"data config has source {source!r}; expected one of {', '.join(SOURCES)}")
    return source


def _limit(value: Any) -> int | None:
    """The configs' "0 = all" convention as read limits."""
    return int(value) if value else None


def _no_repeats(names: Iterable[str], what: str) -> list[str]:
    names = list(names)
    repeated = sorted(n for n, count in collections.Counter(names).items() if count > 1)
    if repeated:
        raise ValueError(f"{what} lists {', '.join(map(repr, repeated))} more than once; each would be read twice")
    return names


def _reraise(unit: Unit, error: Exception) -> NoReturn:
    """Re-raises a source's error with the unit's name in front, keeping its type where it can."""
    if str(error).startswith(unit.label):
        raise error  # raised here, already naming the unit
    message = f"{unit.label}: {error}"
    try:
        wrapped = type(error)(message)
    except Exception:  # an exception type with its own constructor
        wrapped = ValueError(message)
    raise wrapped from error


def _zero_stats() -> dict[str, int]:
    return dict.fromkeys(STAT_KEYS, 0)


def _log_problems(unit: Unit, problems: list[str]) -> None:
    for problem in problems[:_PROBLEMS_LOGGED]:
        log.warning("%s: skipped: %s", unit.label, problem)


# ---------------------------------------------------------------------------------------------
# BIG-bench

def _bigbench_fetch_hint(root: str, task: str | None = None) -> str:
    tasks = f" --tasks {task}" if task else ""
    return f"run `python -m cappy_jax.data.fetch bigbench --dest {root}{tasks}`"


def _check_bigbench_name(root: Path, name: str, known: list[str]) -> None:
    task, _, subtask = name.partition(":")
    task_dir = root / task
    if not (task_dir / bb.TASK_FILE).is_file():
        if (task_dir / "task.py").is_file():
            raise ValueError(f"bigbench task {task!r}: {task_dir} is a programmatic task (task.py, no "
                             f"{bb.TASK_FILE}); only JSON tasks can be read: remove it from the config")
        close = difflib.get_close_matches(task, known, n=5)
        hint = f" (close matches: {', '.join(close)})" if close else ""
        raise FileNotFoundError(f"bigbench task {task!r}: no {bb.TASK_FILE} under {task_dir}{hint}: "
                                f"{_bigbench_fetch_hint(str(root), task)}")
    if subtask and not (task_dir / subtask / bb.TASK_FILE).is_file():
        subs = [s.partition(":")[2] for s in bb.list_subtasks(root, task)]
        raise ValueError(f"bigbench task {name!r}: {task!r} has no subtask {subtask!r} "
                         f"(subtasks: {', '.join(subs) or 'none, it has its own examples'})")


def _is_within(name: str, other: str) -> bool:
    """`name` is `other` or one of its subtasks."""
    return name == other or name.startswith(other + ":")


def _no_nesting(names: list[str], what: str) -> None:
    nested = [(outer, inner) for outer in names for inner in names if inner != outer and _is_within(inner, outer)]
    if nested:
        outer, inner = nested[0]
        raise ValueError(f"{what} lists {outer!r} and its subtask {inner!r}; the subtask would be read twice")


def _bigbench_units(config: Mapping[str, Any]) -> list[Unit]:
    root = Path(config["dir"])
    try:
        known = bb.list_tasks(root)
    except FileNotFoundError as e:
        raise FileNotFoundError(f"bigbench: {e}: {_bigbench_fetch_hint(str(root))}") from e
    tasks = _no_repeats(config.get("tasks") or known, "bigbench config tasks")
    heldout = _no_repeats(config.get("heldout_tasks") or (), "bigbench config heldout_tasks")
    _no_nesting(tasks, "bigbench config tasks")
    _no_nesting(heldout, "bigbench config heldout_tasks")
    for name in (*tasks, *heldout):
        _check_bigbench_name(root, name, known)
    units = []
    for name in tasks:
        if any(_is_within(name, h) for h in heldout):
            continue  # held out whole (or its task is)
        carved = [h for h in heldout if _is_within(h, name) and h != name]
        if not carved:
            units.append(Unit("bigbench", name, False))
            continue
        subtasks = bb.list_subtasks(root, name)
        kept = tuple(s for s in subtasks if s not in carved)
        if kept:
            units.append(Unit("bigbench", name, False, (("subtasks", kept), ("of", len(subtasks)))))
    units.extend(Unit("bigbench", name, True) for name in heldout)
    return units


def _read_bigbench(config: Mapping[str, Any], unit: Unit) -> tuple[list[Example], dict[str, int]]:
    root = Path(config["dir"])
    stats = bb.ReadStats()
    max_examples = _limit(config.get("max_examples_per_task"))
    names = [unit.name]
    subtasks = unit.arg("subtasks")
    if subtasks is not None:
        # A container with held-out subtasks carved out: cap each remaining subtask as the whole
        # container would (BIG-bench splits max_examples evenly over all its subtasks).
        names, of = list(subtasks), int(unit.arg("of"))
        if max_examples is not None:
            if max_examples < of:
                raise ValueError(f"{unit.label}: max_examples_per_task ({max_examples}) must be >= the number of "
                                 f"subtasks ({of})")
            max_examples //= of
    if not (root / unit.name.partition(":")[0] / bb.TASK_FILE).is_file():
        raise FileNotFoundError(f"{unit.label}: no {bb.TASK_FILE} under {root / unit.name.partition(':')[0]}: "
                                f"{_bigbench_fetch_hint(str(root), unit.name.partition(':')[0])}")
    try:
        examples = list(bb.read_tasks(root, names, max_examples=max_examples, skip_bad=bool(config.get("skip_bad")),
                                      stats=stats, choice_order=config.get("choice_order", "bigbench")))
    except (ValueError, OSError) as e:
        _reraise(unit, e)
    _log_problems(unit, stats.problems)
    return examples, {**_zero_stats(), "examples": stats.examples, "skipped_bad": stats.skipped_bad,
                      "duplicates": stats.duplicates}


# ---------------------------------------------------------------------------------------------
# JSONL

def _jsonl_units(config: Mapping[str, Any]) -> list[Unit]:
    paths = _no_repeats(config.get("paths") or (), "jsonl config paths")
    if not paths:
        raise ValueError("jsonl config has no paths: set config.paths (or pass 'a.jsonl,b.jsonl' to get_config)")
    for path in paths:
        if not Path(path).is_file():
            raise FileNotFoundError(f"jsonl unit {path!r}: no such file: check config.paths")
    units = [Unit("jsonl", str(path), False) for path in paths]
    if config.get("heldout_tasks"):
        units += [Unit("jsonl", str(path), True) for path in paths]
    return units


def _read_jsonl(config: Mapping[str, Any], unit: Unit) -> tuple[list[Example], dict[str, int]]:
    heldout = frozenset(config.get("heldout_tasks") or ())
    if unit.heldout and not heldout:
        raise ValueError(f"{unit.label}: the config has no heldout_tasks, so there is nothing to hold out")
    stats = jl.ReadStats()
    try:
        examples = [e for e in jl.read_jsonl(unit.name, default_task=config.get("default_task") or None,
                                             max_examples=_limit(config.get("max_examples_per_file")),
                                             skip_bad=bool(config.get("skip_bad")), stats=stats)
                    if (e.task in heldout) == unit.heldout]
    except (ValueError, OSError) as e:
        _reraise(unit, e)
    if unit.heldout:
        # The file's training unit reads the same lines and counts the bad ones.
        return examples, {**_zero_stats(), "examples": len(examples)}
    _log_problems(unit, stats.problems)
    return examples, {**_zero_stats(), "examples": len(examples), "skipped_bad": stats.skipped_bad}


# ---------------------------------------------------------------------------------------------
# PromptSource (T0)

def _promptsource_fetch_hint(root: str, key: str) -> str:
    return f"run `python -m cappy_jax.data.fetch promptsource --dest {root} --tasks {key}`"


def _datasets(config: Mapping[str, Any]) -> list[tuple[str, int]]:
    """(dataset[/subset], listed size; 0 = unknown) of config['datasets'] (pairs or bare names)."""
    pairs = []
    for entry in config.get("datasets") or ():
        if isinstance(entry, str):
            pairs.append((entry, 0))
        elif isinstance(entry, (tuple, list)) and len(entry) == 2 and isinstance(entry[0], str):
            pairs.append((entry[0], int(entry[1] or 0)))
        else:
            raise ValueError(f"promptsource config datasets: expected 'dataset[/subset]' or (name, size), "
                             f"got {entry!r}")
    _no_repeats((name for name, _ in pairs), "promptsource config datasets")
    return pairs


def _overlaps(a: str, b: str) -> bool:
    """Same dataset, or one is a subset of the other (`wino_bias` vs `wino_bias/type1_pro`)."""
    return a == b or a.startswith(b + "/") or b.startswith(a + "/")


def _split_dataset(key: str) -> tuple[str, str | None]:
    dataset, _, subset = key.partition("/")
    return dataset, subset or None


def _templates_of(config: Mapping[str, Any], key: str, *, where: str) -> list[ps.Template]:
    root = str(config["templates_dir"])
    path = Path(root) / key / ps.TEMPLATES_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{where}: no {ps.TEMPLATES_FILE} for {key} under {root}: "
                                f"{_promptsource_fetch_hint(root, key)}")
    return ps.load_templates(path)


def _selected(config: Mapping[str, Any], key: str, templates: list[ps.Template]) -> list[ps.Template]:
    selection = config.get("templates", "all")
    if selection not in TEMPLATE_SELECTIONS:
        raise ValueError(f"promptsource config templates={selection!r}; expected one of "
                         f"{', '.join(TEMPLATE_SELECTIONS)}")
    excluded = set(config.get("exclude_templates") or ())
    dataset, subset = _split_dataset(key)
    return [t for t in templates
            if (selection == "all" or t.metadata.original_task is True)
            and t.id not in excluded and ps.task_name(dataset, subset, t.name) not in excluded]


def _rows_config(config: Mapping[str, Any]) -> dict[str, Any]:
    rows = dict(config.get("rows") or {})
    backend = rows.get("backend", "hf")
    if backend not in ROW_BACKENDS:
        raise ValueError(f"promptsource config rows.backend={backend!r}; expected one of {', '.join(ROW_BACKENDS)}")
    if backend == "jsonl" and not rows.get("jsonl_dir"):
        raise ValueError("promptsource config rows.backend='jsonl' needs rows.jsonl_dir "
                         "(<jsonl_dir>/<dataset>[/<subset>]/<split>.jsonl)")
    return rows


def _splits(config: Mapping[str, Any], key: str) -> list[tuple[str, str]]:
    """(split name to read, task-name suffix): T0 reads each of several mapped splits as its own task."""
    split = config.get("split", "train")
    names = list(((config.get("split_names") or {}).get(key) or {}).get(split) or (split,))
    if len(names) == 1:
        return [(names[0], "")]
    suffixes = [f"_{n.rpartition('_')[2]}" for n in names]
    if len(set(suffixes)) != len(suffixes):  # no round-like tails: use the whole split names
        suffixes = [f"_{n}" for n in names]
    return list(zip(names, suffixes))


def _rows_path(config: Mapping[str, Any], key: str, split: str) -> Path:
    return Path(_rows_config(config)["jsonl_dir"]) / key / f"{split}.jsonl"


def _promptsource_units(config: Mapping[str, Any]) -> list[Unit]:
    datasets = _datasets(config)
    if not datasets:
        raise ValueError("promptsource config has no datasets")
    heldout_names = list(config.get("heldout") or ())
    held = [key for key, _ in datasets if any(_overlaps(key, h) for h in heldout_names)]
    if held and len(held) != len(datasets):
        raise ValueError(f"promptsource config datasets include held-out evaluation sets {', '.join(held)} next to "
                         f"training sets: remove them from config.datasets (build evaluation data from a config "
                         f"whose datasets are all held out, e.g. configs/data/t0.py:heldout)")
    evaluation = bool(held)
    rows = _rows_config(config)
    cap = _limit(config.get("max_examples_per_dataset"))
    units = []
    for key, size in datasets:
        where = f"promptsource dataset {key!r}"
        chosen = _selected(config, key, _templates_of(config, key, where=where))
        if not chosen:
            raise ValueError(f"{where}: no template left with templates={config.get('templates', 'all')!r} and "
                             f"exclude_templates={tuple(config.get('exclude_templates') or ())}: "
                             f"remove it from config.datasets")
        per_template = 0
        if cap is not None and size > cap:
            per_template = cap // len(chosen)
            if per_template < 1:
                raise ValueError(f"{where}: max_examples_per_dataset ({cap}) must be >= its number of templates "
                                 f"({len(chosen)})")
        if rows.get("backend") == "jsonl":
            for split, _ in _splits(config, key):
                path = _rows_path(config, key, split)
                if not path.is_file():
                    raise FileNotFoundError(f"{where}: no rows file {path} (rows.backend='jsonl'): write split "
                                            f"{split!r} there, one JSON object a line, or use rows.backend='hf'")
        units += [Unit("promptsource", f"{key}:{t.id}", evaluation,
                       (("dataset", key), ("template", t.id), ("max_rows", per_template)))
                  for t in chosen]
    return units


def _open_rows(config: Mapping[str, Any], key: str, split: str, unit: Unit) -> Iterator[dict[str, Any]]:
    rows = _rows_config(config)
    dataset, subset = _split_dataset(key)
    backend = rows["backend"]
    if backend == "jsonl":
        path = _rows_path(config, key, split)
        if not path.is_file():
            raise FileNotFoundError(f"{unit.label}: no rows file {path} (rows.backend='jsonl'): write split "
                                    f"{split!r} of {key} there, one JSON object a line, or use rows.backend='hf'")
        return ps.rows_from_jsonl(path)
    if backend == "tfds":
        return ps.rows_from_tfds(key, split, data_dir=rows.get("tfds_data_dir") or None)
    kwargs: dict[str, Any] = {}
    if dataset == "story_cloze":
        if not rows.get("story_cloze_data_dir"):
            raise ValueError(f"{unit.label}: Hugging Face story_cloze needs its manually downloaded CSVs: set "
                             f"rows.story_cloze_data_dir to their directory")
        kwargs["data_dir"] = rows["story_cloze_data_dir"]
    return ps.rows_from_hf(dataset, subset, split, **kwargs)


def _sample(rows: Iterable[dict[str, Any]], k: int, rng: random.Random,
            counts: dict[str, int]) -> list[tuple[int, dict[str, Any]]]:
    """A uniform random k-subset of the rows in one pass (the k smallest random keys), in row order."""
    heap: list[tuple[float, int, dict[str, Any]]] = []  # (-key, index, row): the root has the largest key
    for index, row in enumerate(rows):
        counts["rows"] += 1
        item = (-rng.random(), index, row)
        if len(heap) < k:
            heapq.heappush(heap, item)
        else:
            heapq.heappushpop(heap, item)
    counts["over_cap"] += counts["rows"] - len(heap)
    return sorted(((index, row) for _, index, row in heap), key=lambda pair: pair[0])


def _counted(rows: Iterable[dict[str, Any]], counts: dict[str, int]) -> Iterator[tuple[int, dict[str, Any]]]:
    for index, row in enumerate(rows):
        counts["rows"] += 1
        yield index, row


def _read_promptsource(config: Mapping[str, Any], unit: Unit) -> tuple[list[Example], dict[str, int]]:
    key, template_id, max_rows = unit.arg("dataset"), unit.arg("template"), int(unit.arg("max_rows") or 0)
    try:
        by_id = {t.id: t for t in _templates_of(config, key, where=unit.label)}
    except ps.TemplateError as e:
        _reraise(unit, e)
    if template_id not in by_id:
        raise ValueError(f"{unit.label}: {config['templates_dir']}/{key}/{ps.TEMPLATES_FILE} has no template "
                         f"{template_id!r} (changed since the units were listed?): "
                         f"{_promptsource_fetch_hint(str(config['templates_dir']), key)}")
    template = by_id[template_id]
    dataset, subset = _split_dataset(key)
    base_task = ps.task_name(dataset, subset, template.name)
    seed = int((config.get("output") or {}).get("seed", 0))
    truncate = _limit(config.get("truncate"))
    skip_bad = bool(config.get("skip_bad"))
    stats = ps.ApplyStats()
    counts = {"rows": 0, "over_cap": 0}
    examples: list[Example] = []
    try:
        for split, suffix in _splits(config, key):
            rows = _open_rows(config, key, split, unit)
            if max_rows:
                rng = random.Random(f"{seed}/{key}/{split}/{template_id}/cap")
                indexed: Iterable[tuple[int, dict[str, Any]]] = _sample(rows, max_rows, rng, counts)
            else:
                indexed = _counted(rows, counts)
            examples += _apply(template, indexed, task=base_task + suffix, id_prefix=f"{split}-", seed=seed,
                               truncate=truncate, skip_bad=skip_bad, stats=stats)
    except (ValueError, OSError, ImportError) as e:
        _reraise(unit, e)
    _log_problems(unit, stats.problems)
    return examples, {**_zero_stats(), "examples": stats.examples, "skipped_bad": stats.skipped_bad,
                      "skipped_empty": stats.skipped_empty, **counts}


def _apply(template: ps.Template, indexed: Iterable[tuple[int, dict[str, Any]]], *, task: str, id_prefix: str,
           seed: int, truncate: int | None, skip_bad: bool, stats: ps.ApplyStats) -> list[Example]:
    """`ps.apply_all`, but ids keep each row's index in the full split (a capped sample has gaps)."""
    return list(ps.apply_all(template, indexed, task=task, skip_bad=skip_bad, stats=stats, truncate=truncate,
                             seed=seed, id_prefix=id_prefix, indexed=True))


# ---------------------------------------------------------------------------------------------
# API

_UNITS: dict[str, Callable[[Mapping[str, Any]], list[Unit]]] = {
    "bigbench": _bigbench_units, "jsonl": _jsonl_units, "promptsource": _promptsource_units}
_READERS: dict[str, Callable[[Mapping[str, Any], Unit], tuple[list[Example], dict[str, int]]]] = {
    "bigbench": _read_bigbench, "jsonl": _read_jsonl, "promptsource": _read_promptsource}


def work_units(config: Mapping[str, Any]) -> list[Unit]:
    """The units of a data config, in a deterministic order (training units, then held-out ones).

    Checks what can fail early (missing files, unknown tasks, held-out overlap) so a bad config
    fails here, before a Beam job starts.
    """
    config = _plain(config)
    return _UNITS[_source(config)](config)


def tasks_within_units(config: Mapping[str, Any]) -> bool:
    """Whether every task of the config lies whole in one unit, so a build can make its candidates (which
    draw negatives from the task's other examples) unit by unit: a BIG-bench unit is a task (or a task's
    subtasks, each its own task), a PromptSource unit is one template of one dataset. Not JSONL: two files
    may hold one task."""
    return _source(_plain(config)) in ("bigbench", "promptsource")


def read_unit(config: Mapping[str, Any], unit: Unit) -> tuple[list[Example], dict[str, int]]:
    """The unit's examples and integer stats (at least `STAT_KEYS`; promptsource adds `rows`, `over_cap`)."""
    config = _plain(config)
    source = _source(config)
    if unit.source != source:
        raise ValueError(f"{unit.label} does not belong to a {source} data config")
    return _READERS[source](config, unit)


def merge_stats(stats: Iterable[Mapping[str, int]]) -> dict[str, int]:
    """Sums per-unit stats; a key a unit lacks counts 0. `STAT_KEYS` first, then the others sorted."""
    total = _zero_stats()
    for one in stats:
        for key, value in one.items():
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"stat {key!r} must be an int, got {value!r}")
            total[key] = total.get(key, 0) + value
    return {**{k: total[k] for k in STAT_KEYS}, **{k: total[k] for k in sorted(total) if k not in STAT_KEYS}}


def evaluation_group(config: Mapping[str, Any], unit: Unit, task: str) -> str:
    """What evaluation averages a task of `unit` into first, before averaging over these groups.

    promptsource: the unit's `dataset[/subset]`, plus the split suffix of `task` when the split maps
    to several (ANLI's rounds: `anli_r1`), so the templates of one dataset (and round) are averaged
    together, then the datasets, as the T0 and Cappy papers report. bigbench and jsonl: the task itself.
    """
    if unit.source != "promptsource":
        return task
    key = unit.arg("dataset")
    for _, suffix in _splits(_plain(config), key):
        if suffix and task.endswith(suffix):
            return key + suffix
    return key
