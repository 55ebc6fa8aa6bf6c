"""Evaluation metrics and throughput accounting for Cappy-style scorers. Pure numpy.

A scorer gives each (instruction, candidate) pair a score in [0, 1]. Candidates of
one example share a group id; labels are in [0, 1] (1.0 a correct reference or
choice, 0.0 a wrong one, in between the Rouge-L of an LLM sample). Two views matter:

- regression quality (how well scores track labels): `pearson`, `spearman`;
- selection quality (what Cappy is used for: pick the best candidate of a group):
  `selection_accuracy`, against the chance baseline `expected_chance_accuracy`.

`regression_metrics` reports all of them overall, per task and averaged over tasks.
`encoder_flops_per_token`, `mfu` and `PEAK_FLOPS` turn a training or scoring
throughput into model FLOPs utilisation.

Every function takes array-likes and returns python floats / ints / dicts, so the
results can go straight into JSON or a logger.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

__all__ = [
    "PEAK_FLOPS",
    "encoder_flops_per_token",
    "expected_chance_accuracy",
    "mfu",
    "peak_flops",
    "pearson",
    "regression_metrics",
    "selection_accuracy",
    "spearman",
]

METRIC_KEYS = ("pearson", "spearman", "selection_accuracy", "chance_accuracy")


# ---------------------------------------------------------------------------
# Input handling
# ---------------------------------------------------------------------------

def _vector(a: Any, name: str, dtype: Any = np.float64) -> np.ndarray:
    """A 1-D copy-free view of `a`, so callers may pass lists, jax arrays or numpy arrays."""
    arr = np.asarray(a) if dtype is None else np.asarray(a, dtype=dtype)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    return arr


def _same_length(**arrays: np.ndarray) -> int:
    """Mismatched lengths are always a bug upstream (pairs lost or duplicated): fail loudly."""
    lengths = {k: len(v) for k, v in arrays.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"length mismatch: {lengths}")
    return next(iter(lengths.values()), 0)


def _group_codes(groups: Any) -> tuple[np.ndarray, int]:
    """Dense codes 0..G-1 for arbitrary (int or str) group ids."""
    g = _vector(groups, "groups", dtype=None)
    if len(g) == 0:
        return np.zeros(0, np.int64), 0
    uniq, inv = np.unique(g, return_inverse=True)
    return inv.reshape(-1).astype(np.int64), len(uniq)


def _py(x: Any) -> Any:
    """numpy scalar -> python scalar, for dict keys that JSON and loggers accept."""
    return x.item() if isinstance(x, np.generic) else x


# ---------------------------------------------------------------------------
# Correlations
# ---------------------------------------------------------------------------

def _is_constant(a: np.ndarray) -> bool:
    # Exact comparison rather than std == 0: the mean of e.g. [0.1, 0.1, 0.1] is not
    # exactly 0.1, so a centred constant vector has tiny non-zero entries.
    return bool(np.all(a == a[0]))


def pearson(x: Any, y: Any) -> float:
    """Pearson correlation; nan (not an error or a warning) when it is undefined.

    Undefined means fewer than two items or a constant side, which happens for tiny
    tasks or a collapsed model; evaluation must keep going and report nan.
    NaNs in the input propagate to the result.
    """
    x = _vector(x, "x")
    y = _vector(y, "y")
    n = _same_length(x=x, y=y)
    if n < 2 or _is_constant(x) or _is_constant(y):
        return math.nan
    xc = x - x.mean()
    yc = y - y.mean()
    denom = math.sqrt(float(np.dot(xc, xc)) * float(np.dot(yc, yc)))
    if not denom > 0:  # also catches nan
        return math.nan
    r = float(np.dot(xc, yc)) / denom
    return max(-1.0, min(1.0, r)) if not math.isnan(r) else math.nan


def _average_ranks(a: np.ndarray) -> np.ndarray:
    """1-based ranks with ties given their average rank (scipy.stats.rankdata 'average')."""
    n = len(a)
    order = np.argsort(a, kind="mergesort")
    sorted_a = a[order]
    new = np.ones(n, dtype=bool)
    new[1:] = sorted_a[1:] != sorted_a[:-1]
    starts = np.flatnonzero(new)
    counts = np.diff(np.append(starts, n))
    avg = starts + (counts + 1) / 2.0
    ranks = np.empty(n, dtype=np.float64)
    ranks[order] = avg[np.cumsum(new) - 1]
    return ranks


def spearman(x: Any, y: Any) -> float:
    """Spearman rank correlation: Pearson of average ranks, as scipy.stats.spearmanr.

    Rank correlation is what matters for selection (only the order within a group
    is used), and it ignores any monotone miscalibration of the scores.
    nan when undefined (see `pearson`) or when any input is nan (scipy's default).
    """
    x = _vector(x, "x")
    y = _vector(y, "y")
    n = _same_length(x=x, y=y)
    if n < 2 or np.isnan(x).any() or np.isnan(y).any():
        return math.nan
    return pearson(_average_ranks(x), _average_ranks(y))


# ---------------------------------------------------------------------------
# Selection
# ---------------------------------------------------------------------------

def _group_max(values: np.ndarray, codes: np.ndarray, num_groups: int) -> np.ndarray:
    out = np.full(num_groups, -np.inf)
    np.maximum.at(out, codes, values)
    return out


def _top_index(scores: np.ndarray, codes: np.ndarray, num_groups: int) -> np.ndarray:
    """Index of each group's top-scored candidate, for groups 0..G-1.

    Ties go to the first (lowest index) candidate, so results do not depend on sort
    stability or hardware; NaN scores rank below every real score.
    """
    idx = np.arange(len(scores))
    # lexsort: last key is primary. NaN sorts last, so -nan is never preferred.
    order = np.lexsort((idx, -scores, codes))
    sorted_codes = codes[order]
    first = np.ones(len(order), dtype=bool)
    first[1:] = sorted_codes[1:] != sorted_codes[:-1]
    top = order[first]
    assert len(top) == num_groups
    return top


def _correct_groups(y: np.ndarray, codes: np.ndarray, num_groups: int) -> tuple[np.ndarray, np.ndarray | None]:
    """Each group's best label and which groups count (best > 0); (.., None) when none does."""
    if num_groups == 0:
        return np.zeros(0), None
    best = _group_max(y, codes, num_groups)
    counted = best > 0
    return best, counted if counted.any() else None


def selection_accuracy(scores: Any, labels: Any, groups: Any) -> float:
    """Fraction of groups whose top-scored candidate is a correct one.

    Correct means a label equal to the group's max label (exact comparison): the
    correct choice(s) of a classification group, the best available candidate of a
    generation group with soft Rouge-L labels. Groups whose max label is <= 0 have no
    correct candidate and are skipped, since no scorer could get them right.
    Score ties: the first (lowest index) top-scored candidate is taken, as np.argmax
    does, so the result is deterministic; a constant scorer thus picks each group's
    first candidate. NaN scores rank below real ones. nan if no group counts.
    """
    s = _vector(scores, "scores")
    y = _vector(labels, "labels")
    codes, num_groups = _group_codes(groups)
    _same_length(scores=s, labels=y, groups=codes)
    best, counted = _correct_groups(y, codes, num_groups)
    if counted is None:
        return math.nan
    top = _top_index(s, codes, num_groups)
    hit = y[top] == best
    return float(np.mean(hit[counted]))


def expected_chance_accuracy(labels: Any, groups: Any) -> float:
    """Mean over groups of (#correct / #candidates): selection accuracy of a random pick.

    Uses the same notion of correct and the same skipped groups (max label <= 0) as
    `selection_accuracy`, so the two are directly comparable. nan if no group counts.
    """
    y = _vector(labels, "labels")
    codes, num_groups = _group_codes(groups)
    _same_length(labels=y, groups=codes)
    best, counted = _correct_groups(y, codes, num_groups)
    if counted is None:
        return math.nan
    size = np.bincount(codes, minlength=num_groups)
    correct = np.bincount(codes, weights=(y == best[codes]).astype(np.float64), minlength=num_groups)
    return float(np.mean(correct[counted] / size[counted]))


# ---------------------------------------------------------------------------
# Everything at once
# ---------------------------------------------------------------------------

def _nanmean(values: list[float]) -> float:
    """Mean ignoring nans; nan (without numpy's RuntimeWarning) if nothing is left."""
    kept = [v for v in values if not math.isnan(v)]
    return float(sum(kept) / len(kept)) if kept else math.nan


def _block(s: np.ndarray, y: np.ndarray, codes: np.ndarray, loss: np.ndarray | None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "pearson": pearson(s, y),
        "spearman": spearman(s, y),
        "selection_accuracy": selection_accuracy(s, y, codes),
        "chance_accuracy": expected_chance_accuracy(y, codes),
        "count": int(len(s)),
        "groups": int(len(np.unique(codes))),
    }
    if loss is not None:
        out["loss"] = float(np.mean(loss)) if len(loss) else math.nan
    return out


def regression_metrics(scores: Any, labels: Any, tasks: Any, groups: Any, *,
                       loss: Any = None) -> dict[str, Any]:
    """All metrics overall, per task, and averaged over tasks.

    Returns `{"all": m, "tasks": {task: m}, "mean_over_tasks": m}` where each `m` has
    pearson, spearman, selection_accuracy, chance_accuracy, count (pairs), groups and,
    if a per-pair `loss` array is given, loss (its mean).

    Groups are taken within tasks: a group id need only be unique inside its task
    (datasets often restart ids at 0), and a group never spans two tasks.
    `mean_over_tasks` gives every task equal weight (the usual way a multi-task
    benchmark is summarised, so big tasks do not dominate): each metric is the mean
    over tasks ignoring nans; its count and groups are the totals, and `tasks` the
    number of tasks.
    """
    s = _vector(scores, "scores")
    y = _vector(labels, "labels")
    t = _vector(tasks, "tasks", dtype=None)
    g = _vector(groups, "groups", dtype=None)
    lo = None if loss is None else _vector(loss, "loss")
    lengths = dict(scores=s, labels=y, tasks=t, groups=g)
    if lo is not None:
        lengths["loss"] = lo
    n = _same_length(**lengths)

    if n:
        task_names, task_codes = np.unique(t, return_inverse=True)
        task_codes = task_codes.reshape(-1).astype(np.int64)
    else:
        task_names, task_codes = np.zeros(0), np.zeros(0, np.int64)
    group_codes, num_groups = _group_codes(g)
    # (task, group) -> one code, so equal ids in different tasks stay different groups.
    codes = task_codes * max(num_groups, 1) + group_codes

    result: dict[str, Any] = {"all": _block(s, y, codes, lo), "tasks": {}}
    for k, name in enumerate(task_names):
        m = task_codes == k
        result["tasks"][_py(name)] = _block(s[m], y[m], codes[m], None if lo is None else lo[m])

    per_task: list[Mapping[str, Any]] = list(result["tasks"].values())
    mean: dict[str, Any] = {key: _nanmean([p[key] for p in per_task]) for key in METRIC_KEYS}
    mean["count"] = result["all"]["count"]
    mean["groups"] = result["all"]["groups"]
    if lo is not None:
        mean["loss"] = _nanmean([p["loss"] for p in per_task])
    mean["tasks"] = len(per_task)
    result["mean_over_tasks"] = mean
    return result


# ---------------------------------------------------------------------------
# FLOPs and MFU
# ---------------------------------------------------------------------------

def encoder_flops_per_token(*, num_layers: int, hidden_size: int, intermediate_size: int,
                            seq_len: int, vocab_size: int | None = None,
                            training: bool = True, head_positions: int | None = None) -> float:
    """Analytic model FLOPs per token of a BERT/RoBERTa encoder.

    With L layers, hidden h, FFN width i and sequence (row) length n, a forward pass
    costs per token:

        per layer   2 * (4*h*h + 2*h*i)     q, k, v, o projections and FFN in/out
                                            (2 FLOPs per multiply-add per weight)
                  + 2 * 2 * n * h           attention scores Q.K^T and weights.V
        total       L * (per layer) [+ 2 * h * vocab_size if a vocab output head is counted]

    and training costs 3x that (forward + backward, the backward being ~2x the
    forward). Embedding lookups, biases, LayerNorms, softmax and the per-pair
    regression head are negligible and not counted: this is the usual "model FLOPs"
    for MFU, close to 6 * params per token when n << 6h. For packed rows pass the
    row length as `seq_len`: the attention kernel computes the full masked row,
    not just each pair's own block. With `head_positions` p (the scorer's last layer
    runs only at the p positions per row the head reads, `model.last_layer_queries`)
    the last layer costs per token 2 * 2*h*h for keys and values plus p/n of the rest.
    """
    for name, v in (("num_layers", num_layers), ("hidden_size", hidden_size),
                    ("intermediate_size", intermediate_size), ("seq_len", seq_len)):
        if v <= 0:
            raise ValueError(f"{name} must be positive, got {v}")
    h, i, n = float(hidden_size), float(intermediate_size), float(seq_len)
    per_layer = 2.0 * (4.0 * h * h + 2.0 * h * i) + 2.0 * 2.0 * n * h
    forward = num_layers * per_layer
    if head_positions is not None:
        if not 0 < head_positions <= seq_len:
            raise ValueError(f"head_positions must be in 1..seq_len={seq_len}, got {head_positions}")
        key_value = 2.0 * 2.0 * h * h
        forward -= (per_layer - key_value) * (1.0 - head_positions / n)
    if vocab_size is not None:
        if vocab_size <= 0:
            raise ValueError(f"vocab_size must be positive, got {vocab_size}")
        forward += 2.0 * h * float(vocab_size)
    return forward * (3.0 if training else 1.0)


def mfu(tokens_per_second: float, flops_per_token: float, peak_flops: float | None) -> float:
    """Model FLOPs utilisation: achieved model FLOP/s over the device's peak.

    nan when the peak is unknown (None, e.g. from `peak_flops` on an unlisted device)
    or not positive, so a report can still be written on any hardware.
    """
    if peak_flops is None or not peak_flops > 0:
        return math.nan
    return float(tokens_per_second) * float(flops_per_token) / float(peak_flops)


# Dense (no sparsity) bf16 peak FLOP/s per chip, keyed by jax `Device.device_kind`.
# Shorter keys act as family fallbacks through prefix matching in `peak_flops`.
PEAK_FLOPS: dict[str, float] = {
    "NVIDIA H100 80GB HBM3": 989e12,   # SXM
    "NVIDIA H100 PCIe": 756e12,
    "NVIDIA H100 NVL": 835e12,
    "NVIDIA H100": 989e12,
    "NVIDIA H200": 989e12,
    "NVIDIA GH200": 989e12,
    "NVIDIA A100-SXM4-80GB": 312e12,
    "NVIDIA A100-SXM4-40GB": 312e12,
    "NVIDIA A100": 312e12,
    "TPU v2": 45e12,
    "TPU v3": 123e12,
    "TPU v4": 275e12,
    "TPU v5 lite": 197e12,             # v5e
    "TPU v5e": 197e12,
    "TPU v5p": 459e12,
    "TPU v5": 459e12,                  # jax reports v5p as "TPU v5"
    "TPU v6 lite": 918e12,             # v6e (Trillium)
    "TPU v6e": 918e12,
}


def _norm(kind: str) -> str:
    return " ".join(kind.split()).lower()


def peak_flops(device_kind: str) -> float | None:
    """Dense bf16 peak FLOP/s for a jax device kind; None if unknown.

    Case-insensitive; an exact key wins, otherwise the longest key that is a prefix
    of `device_kind` ending at a word boundary (so "NVIDIA H100 SXM5 96GB" falls back
    to "NVIDIA H100", while "TPU v5 lite" does not fall back to "TPU v5" and
    "NVIDIA H1000" matches nothing).
    """
    kind = _norm(device_kind or "")
    if not kind:
        return None
    table = {_norm(k): v for k, v in PEAK_FLOPS.items()}
    if kind in table:
        return table[kind]
    best = None
    for key in table:
        if not kind.startswith(key) or (len(kind) > len(key) and kind[len(key)].isalnum()):
            continue
        if best is None or len(key) > len(best):
            best = key
    return None if best is None else table[best]
