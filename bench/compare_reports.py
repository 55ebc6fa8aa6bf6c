"""How far two evaluation reports of the same examples are apart: a check for a numerics change.

    python -m bench.compare_reports REPORT_A REPORT_B [--method cappy]

REPORT_A and REPORT_B are `python -m cappy_jax.evaluate --output` directories of one choice suite run
twice, e.g. with `--config.scoring.quantize=none` and `=fp8`. Prints one JSON line: each report's
accuracy (mean over tasks, as report.md), the share of examples whose pick is the same, the largest and
mean distance between the two scores of a candidate, their Spearman correlation over all candidates,
and the largest gap between an example's best and second-best score in A among the examples whose pick
changed (a change where A's own scores nearly tie is rounding; a large gap is a different ranking).
"""

from __future__ import annotations

import argparse
import json
import pathlib
from collections.abc import Sequence
from typing import Any

import numpy as np

from cappy_jax import metrics

def read(report: pathlib.Path) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """(results.json, predictions by example id)."""
    results = json.loads((report / "results.json").read_text())
    lines = (report / "predictions.jsonl").read_text().splitlines()
    predictions = {p["id"]: p for p in map(json.loads, lines)}
    return results, predictions


def compare(a: pathlib.Path, b: pathlib.Path, method: str = "cappy") -> dict[str, Any]:
    results_a, pred_a = read(a)
    results_b, pred_b = read(b)
    if results_a["suite"] != "choice" or results_b["suite"] != "choice":
        raise ValueError("compare_reports reads choice-suite reports (picks among candidates)")
    if pred_a.keys() != pred_b.keys():
        raise ValueError(f"the reports hold different examples ({len(pred_a)} and {len(pred_b)}); "
                         "run the same evaluate config twice")
    same = 0
    changed_gaps = []
    sa, sb = [], []
    for key, p in pred_a.items():
        q = pred_b[key]
        if p["candidates"] != q["candidates"]:
            raise ValueError(f"example {key}: the candidates differ between the reports")
        sa += p["scores"]
        sb += q["scores"]
        if p["picks"][method] == q["picks"][method]:
            same += 1
        else:
            top = np.sort(np.asarray(p["scores"]))[::-1]
            changed_gaps.append(float(top[0] - top[1]))
    sa, sb = np.asarray(sa), np.asarray(sb)
    diff = np.abs(sa - sb)
    return {
        "examples": len(pred_a), "candidates": int(sa.size), "method": method,
        "accuracy_a": results_a["average"][method], "accuracy_b": results_b["average"][method],
        "same_pick": same / len(pred_a), "max_score_diff": float(diff.max()), "mean_score_diff": float(diff.mean()),
        "score_spread_a": float(sa.std()),
        "spearman": metrics.spearman(sa, sb),
        "max_gap_where_pick_changed": max(changed_gaps) if changed_gaps else None,
    }


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("report_a", type=pathlib.Path)
    parser.add_argument("report_b", type=pathlib.Path)
    parser.add_argument("--method", default="cappy", help="the pick to compare (a method of the reports)")
    args = parser.parse_args(argv)
    out = compare(args.report_a, args.report_b, args.method)
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
