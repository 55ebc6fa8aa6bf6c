"""The evaluation report (`cappy_jax.evaluate`): report.md, results.json, predictions.jsonl, PNG plots.

`write_report(output, evaluation, meta=...)` writes into the directory `output`:
- `results.json`: the evaluation's results (every number) with `meta` (scorer, data, units, the
  whole config) under the key "meta"; strict JSON (no NaN: undefined values are null);
- `predictions.jsonl`: one line per example (task, id, candidates, scores, picks, correct/rouge_l);
- `report.md`: the average of each method, then tables per group (when groups are not tasks, e.g.
  PromptSource datasets) and per task, with counts, the scorer and the data used;
- `per_task.png` (and `per_group.png` when groups are not tasks): bars of each method;
  `scores.png`: choice, histograms of the scores of correct and incorrect candidates;
  generation, a histogram of scores split by the candidate's Rouge-L (>= 0.5 or not) and a
  score-versus-Rouge-L scatter.
Plots use matplotlib's Agg canvas directly (no pyplot, no display, the caller's backend untouched).
Files are written to a temporary name and renamed, so none is ever half-written.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

RESULTS = "results.json"
PREDICTIONS = "predictions.jsonl"
REPORT = "report.md"
PER_TASK_PNG = "per_task.png"
PER_GROUP_PNG = "per_group.png"
SCORES_PNG = "scores.png"
ROUGE_SPLIT = 0.5  # generation's score histogram: candidates with Rouge-L >= this vs below

METRIC_WORDS = {
    "accuracy": "accuracy: share of examples whose picked choice is a correct one; `chance` is the expected "
                "accuracy of a uniform random pick (#correct / #choices)",
    "rouge_l": "Rouge-L (F) of the picked candidate against the references (no pick: 0); `oracle` is the best "
               "candidate's, an upper bound for any reranker of these candidates",
}


def finite(obj: Any) -> Any:
    """`obj` with every non-finite float replaced by None (JSON null), tuples as lists."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, np.generic):
        return finite(obj.item())
    if isinstance(obj, Mapping):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite(v) for v in obj]
    return obj


def _write(path: Path, data: str | bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data.encode() if isinstance(data, str) else data)
    os.replace(tmp, path)


def write_report(output: str | os.PathLike, evaluation: Any, *, meta: Mapping[str, Any] | None = None,
                 plots: bool = True) -> dict[str, Path]:
    """Writes every report file (see the module docstring); returns their paths by kind."""
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    results = evaluation.results
    meta = dict(meta or {})
    paths = {"results": out / RESULTS, "predictions": out / PREDICTIONS, "report": out / REPORT}
    _write(paths["results"], json.dumps(finite({**results, "meta": meta}), indent=2, allow_nan=False) + "\n")
    _write(paths["predictions"], "".join(json.dumps(finite(p), allow_nan=False) + "\n"
                                         for p in evaluation.predictions))
    images: dict[str, str] = {}
    if plots:
        metric = results["metric"]
        methods = results["methods"]
        tasks = [(name, row) for name, row in results["tasks"].items()]
        plot_methods(out / PER_TASK_PNG, tasks + [("average", results["average"])], methods, metric,
                     title=f"{results['suite']}: {metric} per task")
        images["per task"] = PER_TASK_PNG
        if _grouped(results):
            groups = [(name, row) for name, row in results["groups"].items()]
            plot_methods(out / PER_GROUP_PNG, groups + [("average", results["average"])], methods, metric,
                         title=f"{results['suite']}: {metric} per group (mean over its tasks)")
            images["per group"] = PER_GROUP_PNG
        if results["suite"] == "choice":
            scores, labels = choice_scores(evaluation.predictions)
            plot_choice_scores(out / SCORES_PNG, scores, labels)
        else:
            scores, rouge = generation_scores(evaluation.predictions)
            plot_generation_scores(out / SCORES_PNG, scores, rouge)
        images["scores"] = SCORES_PNG
        paths.update({k: out / v for k, v in images.items()})
    _write(paths["report"], markdown(results, meta, images))
    return paths


# ---------------------------------------------------------------------------------------------
# report.md

def _grouped(results: Mapping[str, Any]) -> bool:
    """Whether groups differ from tasks (PromptSource datasets over templates)."""
    return any(row["group"] != task for task, row in results["tasks"].items())


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]], *, numbers: bool = True) -> list[str]:
    """A markdown table; with `numbers`, every column but the first is right-aligned."""
    lines = ["| " + " | ".join(_cell(h) for h in header) + " |",
             "|" + "|".join(" --- " if i == 0 or not numbers else " ---: " for i in range(len(header))) + "|"]
    lines += ["| " + " | ".join(_cell(_fmt(v)) for v in row) + " |" for row in rows]
    return lines


def markdown(results: Mapping[str, Any], meta: Mapping[str, Any], images: Mapping[str, str]) -> str:
    """report.md's text: pure, from the results, the meta data and the image file names."""
    methods = list(results["methods"])
    metric = results["metric"]
    counts = results["counts"]
    grouped = _grouped(results)
    lines = [f"# Evaluation: {results['suite']} suite", ""]
    info = [(k, meta[k]) for k in ("scorer", "data") if meta.get(k)]
    if meta.get("unit_names") is not None:
        names = list(meta["unit_names"])
        shown = ", ".join(names[:8]) + (f", ... ({len(names)} in all)" if len(names) > 8 else "")
        info.append(("units", f"{meta.get('units', '')}: {shown}"))
    skipped = meta.get("skipped") or {}
    left = ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in skipped.items() if v)
    info.append(("examples", f"{counts['examples']} in {counts['tasks']} task{'s' if counts['tasks'] != 1 else ''}"
                 + (f" ({counts['groups']} groups)" if grouped else "") + (f"; left out: {left}" if left else "")))
    info.append(("candidates", str(counts["candidates"]) + (
        f" ({counts['empty_candidates']} empty)" if counts.get("empty_candidates") else "")))
    if results.get("recipe"):
        info.append(("decoding", ", ".join(f"{m['name']} x{m['num_return']}" for m in results["recipe"])))
    if counts.get("no_pick") and any(counts["no_pick"].values()):
        info.append(("no pick", ", ".join(f"{m}: {n}" for m, n in counts["no_pick"].items() if n)))
    info.append(("metric", METRIC_WORDS.get(metric, metric)))
    if meta.get("created"):
        info.append(("created", f"{meta['created']}" + (f", {meta['seconds']:.1f} s" if "seconds" in meta else "")))
    lines += _table(["", ""], info, numbers=False)
    lines += ["", "## Average", ""]
    how = ("mean over groups of the mean over each group's tasks (templates within a dataset, then datasets)"
           if grouped else "mean over tasks")
    lines += [f"{metric}, {how}.", ""]
    lines += _table(["method", metric], [(m, results["average"][m]) for m in methods])
    if grouped:
        lines += ["", "## Per group", ""]
        lines += _table(["group", "tasks", "examples", *methods],
                        [(g, row["tasks"], row["examples"], *(row[m] for m in methods))
                         for g, row in results["groups"].items()])
    lines += ["", "## Per task", ""]
    header = ["task", *(["group"] if grouped else []), "examples", *methods]
    lines += _table(header, [(t, *([row["group"]] if grouped else []), row["examples"], *(row[m] for m in methods))
                             for t, row in results["tasks"].items()])
    if images:
        lines += ["", "## Plots", ""]
        lines += [f"![{name}]({file})" for name, file in images.items()]
    lines += ["", f"Every number is in `{RESULTS}`; every example's candidates, scores and picks in "
                  f"`{PREDICTIONS}`.", ""]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Plot data (pure)

def choice_scores(predictions: Sequence[Mapping[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
    """(score, label) of every scored candidate of the choice suite's predictions."""
    scores, labels = [], []
    for p in predictions:
        for s, y in zip(p["scores"], p["labels"]):
            if s is not None:
                scores.append(s)
                labels.append(y)
    return np.asarray(scores, np.float64), np.asarray(labels, np.int64)


def generation_scores(predictions: Sequence[Mapping[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
    """(score, Rouge-L) of every scored candidate of the generation suite's predictions."""
    scores, rouge = [], []
    for p in predictions:
        for c in p["candidates"]:
            if c["score"] is not None:
                scores.append(c["score"])
                rouge.append(c["rouge_l"])
    return np.asarray(scores, np.float64), np.asarray(rouge, np.float64)


# ---------------------------------------------------------------------------------------------
# Plots

def _figure(width: float, height: float, ncols: int = 1) -> tuple[Any, list[Any]]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    axes = [fig.add_subplot(1, ncols, i + 1) for i in range(ncols)]
    return fig, axes


def _save(fig: Any, path: str | os.PathLike) -> None:
    fig.tight_layout()
    tmp = Path(str(path) + ".tmp")
    fig.savefig(tmp, format="png", dpi=100)
    os.replace(tmp, path)


def plot_methods(path: str | os.PathLike, rows: Sequence[tuple[str, Mapping[str, Any]]], methods: Sequence[str],
                 metric: str, *, title: str = "") -> None:
    """Grouped bars: one group of bars per row (task, group or average), one bar per method."""
    n, k = len(rows), len(methods)
    fig, (ax,) = _figure(min(60.0, max(6.0, 1.0 + n * (0.22 * k + 0.35))), 4.5)
    x = np.arange(n)
    width = 0.8 / max(k, 1)
    for j, m in enumerate(methods):
        values = [row.get(m) for _, row in rows]
        ax.bar(x + (j - (k - 1) / 2) * width, [np.nan if v is None else v for v in values], width, label=m)
    ax.set_xticks(x)
    ax.set_xticklabels([name for name, _ in rows], rotation=45 if n > 3 else 0, ha="right" if n > 3 else "center",
                       fontsize=8)
    ax.set_ylabel(metric)
    ax.set_ylim(0, 1)
    ax.set_title(title)
    ax.legend(fontsize=8, ncol=min(k, 4))
    ax.grid(axis="y", alpha=0.3)
    _save(fig, path)


def _bins(values: np.ndarray) -> np.ndarray:
    lo, hi = (float(values.min()), float(values.max())) if values.size else (0.0, 1.0)
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    return np.linspace(lo, hi, 31)


def plot_choice_scores(path: str | os.PathLike, scores: np.ndarray, labels: np.ndarray) -> None:
    """Histograms of the scores of correct and incorrect choices."""
    fig, (ax,) = _figure(6.5, 4.0)
    bins = _bins(scores)
    for mask, name in ((labels == 1, "correct"), (labels == 0, "incorrect")):
        ax.hist(scores[mask], bins=bins, alpha=0.6, label=f"{name} ({int(mask.sum())})")
    ax.set_xlabel("score")
    ax.set_ylabel("candidates")
    ax.set_title("scores of correct and incorrect choices")
    ax.legend()
    _save(fig, path)


def plot_generation_scores(path: str | os.PathLike, scores: np.ndarray, rouge: np.ndarray) -> None:
    """A histogram of scores split by Rouge-L (>= ROUGE_SPLIT or not) and a score-vs-Rouge-L scatter."""
    fig, (left, right) = _figure(11.0, 4.0, ncols=2)
    bins = _bins(scores)
    for mask, name in ((rouge >= ROUGE_SPLIT, f"Rouge-L >= {ROUGE_SPLIT}"), (rouge < ROUGE_SPLIT,
                                                                             f"Rouge-L < {ROUGE_SPLIT}")):
        left.hist(scores[mask], bins=bins, alpha=0.6, label=f"{name} ({int(mask.sum())})")
    left.set_xlabel("score")
    left.set_ylabel("candidates")
    left.set_title("scores by the candidate's Rouge-L")
    left.legend()
    right.scatter(rouge, scores, s=6, alpha=0.4)
    right.set_xlabel("Rouge-L against the references")
    right.set_ylabel("score")
    right.set_title("score vs Rouge-L")
    _save(fig, path)
