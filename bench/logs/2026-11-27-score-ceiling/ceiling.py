"""The most packing can gain over hf_baseline's scoring at equal speed per token slot (run from the repo root).

    python bench/logs/2026-11-27-score-ceiling/ceiling.py ../shared/bench/hf_baseline.py

Token slots a pair costs: hf_baseline's dynamic padding (its own `batches_from_lengths`, batches of N pairs
sorted within windows, padded to a multiple of 64) against `scoring.plan_batches` at the score suite's
`batch_tokens`, on the score suite's 16,781 real pair lengths.
"""
import importlib.util
import math
import sys

sys.path.insert(0, ".")
from bench import score_suite  # noqa: E402
from cappy_jax import scoring  # noqa: E402

spec = importlib.util.spec_from_file_location("hf_baseline", sys.argv[1])
hf = importlib.util.module_from_spec(spec)
spec.loader.exec_module(hf)
lengths = score_suite.load_lengths(score_suite.PAIRS["large"])
mean = sum(lengths) / len(lengths)
for per_batch in score_suite.PAIRS_PER_BATCH:
    batches = list(hf.batches_from_lengths(lengths, per_batch, "dynamic"))
    pairs = sum(rows for rows, _, _ in batches)
    theirs = sum(rows * width for rows, width, _ in batches) / pairs
    plans = scoring.plan_batches(lengths, scoring.options(batch_tokens=max(512, math.ceil(per_batch * mean))))
    ours = sum(p.num_rows * p.width for p in plans) / len(lengths)
    print(f"{per_batch} pairs a batch: theirs {theirs:.1f} token slots a pair ({pairs} pairs), ours {ours:.1f}; "
          f"ceiling {theirs / ours:.3f}x")
