"""The evaluation harness: how well a scorer picks answers, per task and averaged, next to baselines.

    python -m cappy_jax.evaluate --checkpoint runs/cappy --suite choice --data data/bigbench --output runs/eval
    python -m cappy_jax.evaluate --hf cappy-large --head_activation=identity --config configs/evaluate.py:t0 \\
        --data data/promptsource --output runs/eval_t0
    python -m cappy_jax.evaluate --checkpoint runs/cappy --suite generation --data data/bigbench \\
        --llm hf --llm_model path/to/flan-t5 --output runs/eval_gen

Suites:
- `choice`: each example's answer choices are scored and the top one picked (ties: lowest index);
  accuracy = share of examples whose pick is a correct choice (one among the references). Next to
  it the chance baseline (expected accuracy of a uniform random pick: #correct / #choices per
  example) and any extra baselines (`baselines={name: fn(list of (instruction, choices)) ->
  picked indices}`), all on the same examples.
- `generation`: an LLM samples candidates (`config.llm`, the decoding recipe of
  `cappy_jax.data.llm`), `cappy_jax.boost.rerank` scores them and every selection method picks one
  (cappy, beam, first_<mode>, and ll_sum/ll_mean when the backend has `log_likelihood`); each
  method's value is the mean Rouge-L of its pick against the references (a method that picked
  nothing scores 0), and `oracle`, the best candidate's Rouge-L, bounds what any reranker of these
  candidates can reach.

Which examples: the data config's units (`cappy_jax.data.read`); by default only its held-out units
(`units="heldout"`, an error when it has none; `units="validation"` takes the examples of the other
units that the data build put in its `validation` split, by the same hash (`records.split_of`) and
the data config's `output.validation_fraction` and `output.seed`: a downstream task's test
examples; `units="all"` takes every unit), then only the
examples of the suite's kind (with answer choices for `choice`, without for `generation`), then at
most `max_examples_per_task` of them per task (the first ones; 0 = all).

Averages: a task's value is its mean over examples. Tasks fall into groups, and the reported
average is the mean over groups of the mean over each group's tasks: for PromptSource a group is a
dataset (and ANLI round), so templates are averaged within a dataset and then datasets (as the T0
and Cappy papers report); for BIG-bench and JSONL a group is its task, so the average is the plain
mean over tasks. The maths (`summarize`, `average_over_groups`, `chance`) is pure.

`--data PATH` is a shorthand for the data config's location: bigbench `dir` (PATH/<task>/task.json),
promptsource `templates_dir` (PATH/<dataset>[/<subset>]/templates.yaml), jsonl `paths` (PATH/*.jsonl,
sorted, or PATH itself when it is a file). Without `--config`, the variant follows PATH's layout
(*.jsonl: `jsonl`; */task.json: `bigbench_choice`; templates.yaml files: `t0`); `--config.*`
overrides are replayed onto it. `--llm NAME --llm_model M [--llm_base_url URL]` set `config.llm`
(hf: `model_dir`; openai: `model` and `base_url`).

Outputs (`cappy_jax.report`): `OUTPUT/report.md`, `results.json` (every number, plus the config),
`predictions.jsonl` (per example) and PNG plots.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from cappy_jax import cli
from cappy_jax.data.records import Example, split_of

log = logging.getLogger("cappy_jax.evaluate")

CHOICE = "choice"
GENERATION = "generation"
SUITES = (CHOICE, GENERATION)
UNITS = ("heldout", "validation", "all")
METRICS = {CHOICE: "accuracy", GENERATION: "rouge_l"}
CAPPY = "cappy"
CHANCE = "chance"
ORACLE = "oracle"

Pair = tuple[str, str]
# An extra choice baseline: (instruction, choices) of every example -> the index it picks for each.
ChoiceBaseline = Callable[[list[tuple[str, tuple[str, ...]]]], Sequence[int]]


class PairScorer(Protocol):
    """What the harness needs of a scorer (`cappy_jax.scoring.Scorer` is one): scores in pair order."""

    def score(self, pairs: Sequence[Pair], *, progress: Callable[[int], None] | None = None) -> np.ndarray: ...


class FunctionScorer:
    """A `PairScorer` from a plain function `fn(instruction, response) -> float`: test doubles, baselines."""

    def __init__(self, fn: Callable[[str, str], float]) -> None:
        self.fn = fn

    def score(self, pairs: Sequence[Pair], *, progress: Callable[[int], None] | None = None) -> np.ndarray:
        out = np.array([self.fn(i, r) for i, r in pairs], np.float32)
        if progress is not None:
            progress(len(out))
        return out

    def __repr__(self) -> str:
        return f"FunctionScorer({getattr(self.fn, '__name__', self.fn)!r})"


@dataclasses.dataclass
class Evaluation:
    """What a suite returns: `results` (plain JSON: every number) and one prediction per example."""

    results: dict[str, Any]
    predictions: list[dict[str, Any]]


# ---------------------------------------------------------------------------------------------
# Pure maths

def mean(values: Sequence[float]) -> float | None:
    """The mean; None (JSON null) for no values."""
    values = [float(v) for v in values]
    return math.fsum(values) / len(values) if values else None


def first_argmax(values: Sequence[float]) -> int | None:
    """Lowest index of the largest finite value (ties: the first); None when no value is finite."""
    v = np.asarray(values, np.float64)
    finite = np.isfinite(v)
    if not finite.any():
        return None
    return int(np.argmax(np.where(finite, v, -np.inf)))


def chance(choices: Sequence[str], references: Sequence[str]) -> float:
    """Expected accuracy of a uniform random pick: #correct choices / #choices."""
    if not choices:
        raise ValueError("chance needs at least one choice")
    refs = set(references)
    return sum(c in refs for c in choices) / len(choices)


def average_over_groups(per_task: Mapping[str, float | None],
                        task_groups: Mapping[str, str] | None = None) -> tuple[dict[str, float | None], float | None]:
    """(mean per group of its tasks' values, mean over groups); a task without a group is its own.

    Tasks whose value is None are left out (a group with none left is None, and left out of the mean).
    """
    task_groups = task_groups or {}
    members: dict[str, list[float]] = {}
    for task, value in per_task.items():
        group = task_groups.get(task, task)
        members.setdefault(group, [])
        if value is not None:
            members[group].append(value)
    groups = {g: mean(vs) for g, vs in members.items()}
    return groups, mean([v for v in groups.values() if v is not None])


def summarize(values: Mapping[str, Sequence[float]], tasks: Sequence[str],
              task_groups: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Per-example values of each method -> per task, per group and average (see the module docstring).

    `values[method][i]` belongs to example i of task `tasks[i]`. Returns plain JSON:
    `{"tasks": {task: {"group", "examples", method...}}, "groups": {group: {"tasks", "examples",
    method...}}, "average": {method...}}`, tasks and groups in order of first appearance.
    """
    task_groups = dict(task_groups or {})
    methods = list(values)
    for m in methods:
        if len(values[m]) != len(tasks):
            raise ValueError(f"method {m!r} has {len(values[m])} values for {len(tasks)} examples")
    rows: dict[str, list[int]] = {}
    for i, t in enumerate(tasks):
        rows.setdefault(t, []).append(i)
    per_task: dict[str, Any] = {}
    for t, idx in rows.items():
        per_task[t] = {"group": task_groups.get(t, t), "examples": len(idx),
                       **{m: mean([values[m][i] for i in idx]) for m in methods}}
    groups: dict[str, Any] = {}
    for t, row in per_task.items():
        g = groups.setdefault(row["group"], {"tasks": 0, "examples": 0})
        g["tasks"] += 1
        g["examples"] += row["examples"]
    average: dict[str, Any] = {}
    for m in methods:
        by_group, overall = average_over_groups({t: row[m] for t, row in per_task.items()},
                                                {t: row["group"] for t, row in per_task.items()})
        for g, v in by_group.items():
            groups[g][m] = v
        average[m] = overall
    return {"tasks": per_task, "groups": groups, "average": average}


# ---------------------------------------------------------------------------------------------
# Suites

def _check_examples(examples: Sequence[Example]) -> None:
    if not examples:
        raise ValueError("no examples to evaluate")


def _scores(scorer: PairScorer, pairs: list[Pair], progress: Any) -> np.ndarray:
    scores = np.asarray(scorer.score(pairs, progress=progress), np.float64).reshape(-1)
    if len(scores) != len(pairs):
        raise ValueError(f"{scorer!r} returned {len(scores)} scores for {len(pairs)} pairs")
    return scores


def _baseline_picks(name: str, fn: ChoiceBaseline, examples: Sequence[Example]) -> list[int]:
    picks = list(fn([(e.instruction, tuple(e.choices)) for e in examples]))
    if len(picks) != len(examples):
        raise ValueError(f"baseline {name!r} returned {len(picks)} picks for {len(examples)} examples")
    out = []
    for e, p in zip(examples, picks):
        if isinstance(p, bool) or not isinstance(p, (int, np.integer)) or not 0 <= p < len(e.choices):
            raise ValueError(f"baseline {name!r} picked {p!r} for {e.group_id}, which has {len(e.choices)} choices")
        out.append(int(p))
    return out


def _num(x: Any) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


def evaluate_choice(scorer: PairScorer, examples: Sequence[Example], *,
                    task_groups: Mapping[str, str] | None = None,
                    baselines: Mapping[str, ChoiceBaseline] | None = None,
                    progress: Callable[[int], None] | None = None) -> Evaluation:
    """The `choice` suite on examples with answer choices (see the module docstring)."""
    examples = list(examples)
    _check_examples(examples)
    for e in examples:
        if not e.choices:
            raise ValueError(f"{e.group_id} has no answer choices: the choice suite needs classification examples")
    baselines = dict(baselines or {})
    clash = sorted(set(baselines) & {CAPPY, CHANCE})
    if clash:
        raise ValueError(f"baseline names {clash} are taken; name them otherwise")
    methods = [CAPPY, CHANCE, *baselines]
    pairs = [(e.instruction, c) for e in examples for c in e.choices]
    scores = _scores(scorer, pairs, progress)
    extra = {name: _baseline_picks(name, fn, examples) for name, fn in baselines.items()}
    values: dict[str, list[float]] = {m: [] for m in methods}
    predictions = []
    k = 0
    for i, e in enumerate(examples):
        s = scores[k:k + len(e.choices)]
        k += len(e.choices)
        refs = set(e.references)
        labels = [int(c in refs) for c in e.choices]
        picks: dict[str, int | None] = {CAPPY: first_argmax(s), **{name: p[i] for name, p in extra.items()}}
        correct = {m: p is not None and bool(labels[p]) for m, p in picks.items()}
        for m, ok in correct.items():
            values[m].append(float(ok))
        values[CHANCE].append(chance(e.choices, e.references))
        predictions.append({
            "task": e.task, "id": e.example_id, "group": (task_groups or {}).get(e.task, e.task),
            "instruction": e.instruction, "candidates": list(e.choices), "references": list(e.references),
            "labels": labels, "scores": [_num(x) for x in s], "picks": picks, "correct": correct,
            "chance": values[CHANCE][-1]})
    tasks = [e.task for e in examples]
    summary = summarize(values, tasks, task_groups)
    results = {"suite": CHOICE, "metric": METRICS[CHOICE], "methods": methods, **summary,
               "counts": {"examples": len(examples), "tasks": len(summary["tasks"]),
                          "groups": len(summary["groups"]), "candidates": len(pairs)}}
    return Evaluation(results, predictions)


def evaluate_generation(scorer: PairScorer, backend: Any, examples: Sequence[Example], *,
                        recipe: Sequence[Any] | None = None, self_score: bool = True,
                        task_groups: Mapping[str, str] | None = None,
                        progress: Callable[[int], None] | None = None) -> Evaluation:
    """The `generation` suite: rerank `backend`'s samples for each example (see the module docstring).

    `self_score` adds ll_sum/ll_mean and needs `backend.log_likelihood`.
    """
    from cappy_jax import boost
    from cappy_jax.data import llm as llm_lib
    from cappy_jax.data.rouge import rouge_l_batch

    examples = list(examples)
    _check_examples(examples)
    recipe = tuple(recipe or llm_lib.REFERENCE_RECIPE)
    reranked = boost.rerank(scorer, backend, [e.instruction for e in examples], recipe=recipe,
                            self_score=self_score, progress=progress)
    methods = [*boost.methods(recipe, self_score=self_score), ORACLE]
    values: dict[str, list[float]] = {m: [] for m in methods}
    no_pick = dict.fromkeys(methods, 0)
    predictions = []
    candidates = empty = 0
    for e, r in zip(examples, reranked):
        rouge = rouge_l_batch([e.references] * len(r.texts), list(r.texts))
        picks: dict[str, int | None] = {m: r.picks.get(m) for m in methods if m != ORACLE}
        picks[ORACLE] = first_argmax(rouge)
        got = {}
        for m, p in picks.items():
            got[m] = rouge[p] if p is not None else 0.0
            no_pick[m] += p is None
            values[m].append(got[m])
        candidates += len(r.texts)
        empty += sum(not t for t in r.texts)
        cands = []
        for k, (text, mode) in enumerate(zip(r.texts, r.modes)):
            c = {"text": text, "mode": mode, "score": _num(r.scores[k]), "rouge_l": rouge[k]}
            if r.ll_sum is not None:
                c.update(ll_sum=_num(r.ll_sum[k]), ll_mean=_num(r.ll_mean[k]))
            cands.append(c)
        predictions.append({
            "task": e.task, "id": e.example_id, "group": (task_groups or {}).get(e.task, e.task),
            "instruction": e.instruction, "references": list(e.references), "candidates": cands,
            "picks": picks, "rouge_l": got})
    summary = summarize(values, [e.task for e in examples], task_groups)
    results = {"suite": GENERATION, "metric": METRICS[GENERATION], "methods": methods, **summary,
               "counts": {"examples": len(examples), "tasks": len(summary["tasks"]),
                          "groups": len(summary["groups"]), "candidates": candidates,
                          "empty_candidates": empty, "no_pick": no_pick},
               "recipe": [{"name": m.name, "num_return": m.num_return, "beam": m.is_beam} for m in recipe]}
    return Evaluation(results, predictions)


# ---------------------------------------------------------------------------------------------
# Data

@dataclasses.dataclass
class Loaded:
    """The examples to evaluate, each task's group, and what was read and left out."""

    examples: list[Example]
    task_groups: dict[str, str]
    units: list[str]
    skipped: dict[str, int]


def _plain(config: Any) -> dict[str, Any]:
    return config.to_dict() if hasattr(config, "to_dict") else dict(config)


def load_examples(data_config: Any, *, suite: str, units: str = "heldout",
                  max_examples_per_task: int = 0) -> Loaded:
    """The examples of `suite`'s kind from the data config's units (see the module docstring)."""
    from cappy_jax.data import read

    if suite not in SUITES:
        raise ValueError(f"unknown suite {suite!r}; choose one of {', '.join(SUITES)}")
    if units not in UNITS:
        raise ValueError(f"units={units!r}; expected one of {', '.join(UNITS)}")
    if isinstance(max_examples_per_task, bool) or not isinstance(max_examples_per_task, int) \
            or max_examples_per_task < 0:
        raise ValueError(f"max_examples_per_task={max_examples_per_task!r} must be an int >= 0 (0 = all)")
    data = _plain(data_config)
    chosen = read.work_units(data)
    if units == "heldout":
        chosen = [u for u in chosen if u.heldout]
        if not chosen:
            where = {"bigbench": "heldout_tasks", "jsonl": "heldout_tasks", "promptsource": "heldout"}.get(
                data.get("source"), "its held-out list")
            raise ValueError(f"the {data.get('source')} data config has no held-out units to evaluate: set its "
                             f"{where} (--config.data.{where}=...), or evaluate every unit with --config.units=all")
    elif units == "validation":
        chosen = [u for u in chosen if not u.heldout]
    out = data.get("output") or {}
    if units == "validation" and "validation_fraction" not in out:
        raise ValueError("units='validation' needs the data config's output.validation_fraction and output.seed")

    def skip_reason(e: Example) -> str | None:
        if bool(e.choices) != (suite == CHOICE):
            return "other_kind"
        if units == "validation" and split_of(e.group_id, heldout=False, seed=int(out.get("seed", 0)),
                                              validation_fraction=float(out["validation_fraction"])) != "validation":
            return "other_split"
        return None

    skipped = {"other_kind": 0, "other_split": 0, "over_cap": 0}
    examples: list[Example] = []
    task_groups: dict[str, str] = {}
    per_task: dict[str, int] = {}
    for unit in chosen:
        read_examples, _ = read.read_unit(data, unit)
        for e in read_examples:
            reason = skip_reason(e)
            if reason:
                skipped[reason] += 1
                continue
            if max_examples_per_task and per_task.get(e.task, 0) >= max_examples_per_task:
                skipped["over_cap"] += 1
                continue
            per_task[e.task] = per_task.get(e.task, 0) + 1
            group = read.evaluation_group(data, unit, e.task)
            if task_groups.setdefault(e.task, group) != group:
                raise ValueError(f"task {e.task!r} falls into two groups ({task_groups[e.task]!r}, {group!r})")
            examples.append(e)
    if not examples:
        kind = "with answer choices" if suite == CHOICE else "without answer choices (generation)"
        raise ValueError(f"no examples {kind} in the {len(chosen)} {units} unit(s) "
                         f"({', '.join(u.name for u in chosen[:5])}{', ...' if len(chosen) > 5 else ''}); "
                         f"{skipped['other_kind']} example(s) of the other kind were left out: pick the other "
                         f"--suite or other tasks")
    return Loaded(examples, task_groups, [u.name for u in chosen], skipped)


def data_location(data_config: Any) -> str:
    """Where a data config reads from, in words (for the report)."""
    data = _plain(data_config)
    source = data.get("source")
    if source == "bigbench":
        return f"bigbench {data.get('dir')}"
    if source == "promptsource":
        rows = data.get("rows") or {}
        extra = f", rows {rows.get('backend')}"
        if rows.get("backend") == "jsonl":
            extra += f" {rows.get('jsonl_dir')}"
        return f"promptsource {data.get('templates_dir')} (split {data.get('split')}{extra})"
    return f"jsonl {', '.join(map(str, data.get('paths') or ()))}"


def detect_source(path: str | os.PathLike) -> str | None:
    """The data source a directory's layout suggests: 'jsonl', 'bigbench', 'promptsource', or None."""
    p = Path(path)
    if p.is_file():
        return "jsonl" if p.suffix == ".jsonl" else None
    if not p.is_dir():
        return None
    if any(p.glob("*.jsonl")):
        return "jsonl"
    if any(p.glob("*/task.json")):
        return "bigbench"
    if any(p.glob("*/templates.yaml")) or any(p.glob("*/*/templates.yaml")):
        return "promptsource"
    return None


VARIANT_OF_SOURCE = {"jsonl": "jsonl", "bigbench": "bigbench_choice", "promptsource": "t0"}


def set_data_path(config: Any, path: str | os.PathLike) -> None:
    """The `--data` shorthand: writes `path` where the config's data source reads from."""
    data = config.data
    source = data.source
    if source == "bigbench":
        data.dir = str(path)
    elif source == "promptsource":
        data.templates_dir = str(path)
    elif source == "jsonl":
        p = Path(path)
        paths = (str(p),) if p.is_file() else tuple(str(f) for f in sorted(p.glob("*.jsonl")))
        if not paths:
            raise ValueError(f"--data {path}: no *.jsonl files there for the jsonl data config")
        data.paths = paths
    else:
        raise ValueError(f"unknown data source {source!r}")


# ---------------------------------------------------------------------------------------------
# A config end to end

def _progress(total: int) -> Any:
    from cappy_jax.cli import Progress

    return Progress(total, "pairs")


def run_suite(config: Any, loaded: Loaded, scorer: PairScorer, *, backend: Any = None,
              baselines: Mapping[str, ChoiceBaseline] | None = None) -> Evaluation:
    """The config's suite on loaded examples; `backend` overrides `config.llm` (generation)."""
    cfg = _plain(config)
    suite = cfg["suite"]
    if suite == CHOICE:
        progress = _progress(sum(len(e.choices) for e in loaded.examples))
        try:
            return evaluate_choice(scorer, loaded.examples, task_groups=loaded.task_groups, baselines=baselines,
                                   progress=progress)
        finally:
            progress.close()
    if suite != GENERATION:
        raise ValueError(f"unknown suite {suite!r}; choose one of {', '.join(SUITES)}")
    if baselines:
        raise ValueError("extra baselines are for the choice suite")
    from cappy_jax.data import llm as llm_lib

    recipe = llm_lib.recipe_named(cfg["llm"]["recipe"])
    backend = backend if backend is not None else llm_lib.backend_from_config(cfg["llm"])
    self_score = bool(cfg["self_score"]) and hasattr(backend, "log_likelihood")
    if cfg["self_score"] and not self_score:
        log.warning("self-scoring baselines (ll_sum, ll_mean) are off: %r has no log_likelihood", backend)
    progress = _progress(len(loaded.examples) * llm_lib.responses_per_instruction(recipe))
    log.info("sampling %d responses for each of %d instructions with %r", llm_lib.responses_per_instruction(recipe),
             len(loaded.examples), backend)
    try:
        return evaluate_generation(scorer, backend, loaded.examples, recipe=recipe, self_score=self_score,
                                   task_groups=loaded.task_groups, progress=progress)
    finally:
        progress.close()


def evaluate_config(config: Any, output: str | os.PathLike, scorer: PairScorer, *, scorer_name: str = "",
                    backend: Any = None, baselines: Mapping[str, ChoiceBaseline] | None = None) -> Evaluation:
    """Reads the config's examples, runs its suite and writes the report into `output`."""
    cfg = _plain(config)
    loaded = load_examples(cfg["data"], suite=cfg["suite"], units=cfg["units"],
                           max_examples_per_task=cfg["max_examples_per_task"])
    return _run_and_report(cfg, loaded, scorer, output, scorer_name=scorer_name or repr(scorer), backend=backend,
                           baselines=baselines)


def _readable(loaded: Loaded, scorer: PairScorer, *, choices: bool) -> Loaded:
    """Leaves out, and counts, the examples with a text of which the scorer's tokenizer keeps nothing: such a
    pair has nothing to score, and the tokenizer refuses it. BIG-bench's real_or_fake_text:gpt2 has a choice
    of two U+FFFD characters, which BERT's normalizer drops."""
    tokenizer = getattr(scorer, "tokenizer", None)
    if not hasattr(tokenizer, "has_tokens"):
        return loaded
    texts = [[e.instruction, *(e.choices if choices else ())] for e in loaded.examples]
    kept_text = iter(tokenizer.has_tokens([t for ts in texts for t in ts]))
    keep = [all([next(kept_text) for _ in ts]) for ts in texts]
    left = keep.count(False)
    if not left:
        return loaded
    first = loaded.examples[keep.index(False)]
    log.warning("left out %d example(s) with an instruction or choice of which the tokenizer keeps nothing, "
                "e.g. %s", left, first.group_id)
    return dataclasses.replace(loaded, examples=[e for e, k in zip(loaded.examples, keep) if k],
                               skipped={**loaded.skipped, "no_tokens": left})


def _run_and_report(cfg: dict[str, Any], loaded: Loaded, scorer: PairScorer, output: str | os.PathLike, *,
                    scorer_name: str, backend: Any, baselines: Any) -> Evaluation:
    from cappy_jax import report

    start = time.time()
    loaded = _readable(loaded, scorer, choices=cfg["suite"] == CHOICE)
    log.info("%s suite: %d examples in %d tasks from %d unit(s)", cfg["suite"], len(loaded.examples),
             len({e.task for e in loaded.examples}), len(loaded.units))
    evaluation = run_suite(cfg, loaded, scorer, backend=backend, baselines=baselines)
    meta = {"scorer": scorer_name, "data": data_location(cfg["data"]), "units": cfg["units"],
            "unit_names": loaded.units, "skipped": loaded.skipped, "seconds": round(time.time() - start, 3),
            "created": time.strftime("%Y-%m-%d %H:%M:%S"), "config": json.loads(json.dumps(cfg, default=str))}
    report.write_report(output, evaluation, meta=meta, plots=bool(cfg["plots"]))
    return evaluation


# ---------------------------------------------------------------------------------------------
# CLI

def default_config_path() -> str:
    import configs

    return os.path.join(os.path.dirname(configs.__file__), "evaluate.py")


def _replay_overrides(config: Any, overrides: Mapping[str, Any]) -> None:
    """Sets `--config.a.b=v` overrides (parsed against another variant) on `config`."""
    for path, value in overrides.items():
        *parents, leaf = path.split(".")
        node = config
        try:
            for name in parents:
                node = node[name]
            if leaf not in node:
                raise KeyError(leaf)
            node[leaf] = value
        except (KeyError, AttributeError, TypeError):
            raise ValueError(f"--config.{path} does not apply to {config.data.source} data: pass --config "
                             f"configs/evaluate.py:VARIANT for the data's source") from None


def resolve_config(flags_obj: Any) -> Any:
    """The config after the shorthand flags: `--data` (and the variant it implies), `--suite`, `--llm*`."""
    from ml_collections import config_flags

    from configs import evaluate as evaluate_configs

    config = flags_obj.config
    if flags_obj.data:
        source = detect_source(flags_obj.data)
        if source is None and not Path(flags_obj.data).exists():
            raise ValueError(f"--data {flags_obj.data}: no such file or directory")
        if not flags_obj["config"].present and source is not None and source != config.data.source:
            variant = VARIANT_OF_SOURCE[source]
            log.info("--data %s looks like %s data: using configs/evaluate.py:%s", flags_obj.data, source, variant)
            config = evaluate_configs.get_config(variant)
            _replay_overrides(config, config_flags.get_override_values(flags_obj["config"]))
        elif source is not None and source != config.data.source:
            raise ValueError(f"--data {flags_obj.data} looks like {source} data but the config reads "
                             f"{config.data.source}: pass --config configs/evaluate.py:{VARIANT_OF_SOURCE[source]}")
        set_data_path(config, flags_obj.data)
    if flags_obj.suite:
        config.suite = flags_obj.suite
    cli.apply_llm_shorthands(config, llm=flags_obj.llm, llm_model=flags_obj.llm_model,
                             llm_base_url=flags_obj.llm_base_url)
    return config


def print_summary(evaluation: Evaluation, output: str | os.PathLike) -> None:
    results = evaluation.results
    metric = results["metric"]
    width = max(len(m) for m in results["methods"])
    counts = results["counts"]
    groups = f", {counts['groups']} groups" if counts["groups"] != counts["tasks"] else ""
    tasks = f"{counts['tasks']} task{'s' if counts['tasks'] != 1 else ''}"
    print(f"\n{results['suite']} suite: {counts['examples']} examples, {tasks}{groups}; average {metric}:")
    for m in results["methods"]:
        v = results["average"][m]
        print(f"  {m:<{width}}  {'-' if v is None else f'{v:.4f}'}")
    print(f"report: {Path(output) / 'report.md'}")


def main(argv: list[str]) -> None:
    from absl import flags

    from cappy_jax import scoring
    from cappy_jax.cli import enable_compilation_cache, quiet_logging
    from cappy_jax.data import llm as llm_lib

    del argv
    quiet_logging()
    f = flags.FLAGS
    try:
        config = resolve_config(f)
        cfg = _plain(config)
        loaded = load_examples(cfg["data"], suite=cfg["suite"], units=cfg["units"],
                               max_examples_per_task=cfg["max_examples_per_task"])
        backend = llm_lib.backend_from_config(cfg["llm"]) if cfg["suite"] == GENERATION else None
        scorer = scoring.load(checkpoint=f.checkpoint, hf=f.hf, step=f.step, head_activation=f.head_activation,
                              **cfg["scoring"])
        enable_compilation_cache(scorer.opts.compilation_cache_dir)
    except (ValueError, FileNotFoundError) as e:
        raise SystemExit(f"error: {e}") from None
    name = f"checkpoint {f.checkpoint}" + (f" (step {f.step})" if f.step is not None else "") if f.checkpoint \
        else f"hf {f.hf}"
    evaluation = _run_and_report(cfg, loaded, scorer, f.output, scorer_name=name, backend=backend, baselines=None)
    print_summary(evaluation, f.output)


def run() -> None:
    from absl import app, flags
    from ml_collections import config_flags

    config_flags.DEFINE_config_file("config", default_config_path(),
                                    "An evaluate config, e.g. configs/evaluate.py:t0 (default: the variant --data "
                                    "implies, else bigbench_choice).", lock_config=True)
    flags.DEFINE_string("checkpoint", None, "A scorer directory or training workdir (latest step, or --step).")
    flags.DEFINE_integer("step", None, "With --checkpoint on a training workdir: this step instead of the latest.")
    flags.DEFINE_string("hf", None, "An HF BERT/RoBERTa scorer directory instead of --checkpoint.")
    flags.DEFINE_enum("head_activation", None, ["sigmoid", "identity"],
                      "With --hf: the score head's activation (btan2/cappy-large publishes raw logits: identity).")
    flags.DEFINE_enum("suite", None, list(SUITES), "Overrides config.suite.")
    flags.DEFINE_string("data", None, "Where the data is: bigbench dir, promptsource templates_dir, or a dir of "
                                      "*.jsonl / one .jsonl file (see the module docstring).")
    flags.DEFINE_string("output", None, "The report directory (report.md, results.json, predictions.jsonl, PNGs).")
    flags.DEFINE_enum("llm", None, ["none", "hf", "openai"], "Overrides config.llm.name (generation).")
    flags.DEFINE_string("llm_model", None, "hf: the model directory; openai: the model name.")
    flags.DEFINE_string("llm_base_url", None, "openai: the server's API root, e.g. http://host:8000/v1.")
    flags.mark_flags_as_required(["output"])
    app.run(main)


if __name__ == "__main__":
    run()
