"""Suite `score`: pairs/s of the scoring API on the real length distribution, next to transformers.

    python -m bench.run --suite score [--cases tiny,large] [--baseline ../shared/bench/hf_baseline.py]

Workload: the first `pairs` lengths of `bench/data/bigbench_lengths.json` (pair-encoded lengths of
candidates built from the 24 BIG-bench Lite tasks; `bench/make_lengths.py`), as random token ids:
the device path is timed, not the tokenizer. Ours: `cappy_jax.scoring.Scorer.score_tokens` with
random weights (packing, length-sorted batches, every local device, `dtype='auto'`), one untimed
pass to compile every batch shape, then the median of `steps` passes over all pairs. Two batch
sizes, in pairs per batch on average: ours gets `batch_tokens = pairs_per_batch x mean length`.
With `--baseline`, `hf_baseline.py --suite score --lengths <the same lengths> --batch <pairs per
batch> --model <case>` runs in the same command, one subprocess per batch size, and the ratio is
ours / theirs. Needs neither TensorFlow nor ml_collections (the GPU machine has neither).
"""

from __future__ import annotations

import json
import math
import pathlib
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from typing import Any

import jax
import numpy as np

from bench import report
from bench.report import Column
from cappy_jax import model as model_lib
from cappy_jax import scoring
from configs import model as model_configs

LENGTHS = pathlib.Path(__file__).resolve().parent / "data" / "bigbench_lengths.json"
CASES = ("tiny", "base", "large")
# The shapes of hf_baseline.py's SIZES: roberta, vocabulary 50265, 514 positions.
PAIRS = {"tiny": 2000, "base": 300, "large": 16781}  # base: a CPU-sized sample
PAIRS_PER_BATCH = (256, 64)  # the throughput setting first: its row lands even if time runs out
DEFAULT_STEPS = {"tiny": 3, "base": 2, "large": 2}
DEFAULT_WARMUP = 1

NOTE = ("pairs/s of Scorer.score_tokens (packing into 512-token rows, length-sorted batches narrowed to "
        "32/64/128/256/512 tokens, all local devices, bf16 on accelerators) on the first `pairs` real "
        "pair lengths of bench/data/bigbench_lengths.json (24 BIG-bench Lite tasks), random weights and ids; "
        "median of passes over all pairs after a compile pass; useful tokens/s counts pair tokens only; "
        "padding = share of computed token slots holding no pair; theirs = ../shared/bench/hf_baseline.py "
        "--suite score on the same lengths in the same command (dynamic padding to a multiple of 64, "
        "pairs_per_batch pairs a batch); ratio = ours/theirs pairs/s")

COLUMNS = (
    Column("case", "case"),
    Column("device", "device_kind"),
    Column("devices", "devices", "d"),
    Column("pairs", "pairs", ",d"),
    Column("pairs/batch", "pairs_per_batch", "d"),
    Column("batch tokens", "batch_tokens", ",d"),
    Column("padding", "padding_percent", ".1f"),
    Column("pass (s)", "pass_s", ".3f"),
    Column("pairs/s", "pairs_per_s", ",.1f"),
    Column("useful tokens/s", "useful_tokens_per_s", ",.0f"),
    Column("theirs pairs/s", "theirs_pairs_per_s", ",.1f"),
    Column("ratio", "ratio", ".2f"),
)


def model_config(case: str) -> model_lib.ModelConfig:
    return model_lib.ModelConfig.from_dict(dict(model_configs.VARIANTS[case], vocab_size=50265,
                                                max_position_embeddings=514, dropout_rate=0.0))


def load_lengths(pairs: int) -> list[int]:
    lengths = json.loads(LENGTHS.read_text())
    return [int(n) for n in lengths[:pairs]]


def random_pairs(lengths: list[int], vocab: int, seed: int = 0) -> tuple[list[np.ndarray], list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    ids = []
    for n in lengths:
        x = rng.integers(5, vocab, n).astype(np.int32)
        x[0] = 0
        ids.append(x)
    return ids, [np.zeros(n, np.int32) for n in lengths]


def padding_share(lengths: list[int], opts: scoring.ScoringOptions, devices: int) -> float:
    plans = scoring.plan_batches(lengths, opts, multiple_of=devices)
    slots = sum(p.num_rows * p.width for p in plans)
    return 1.0 - sum(lengths) / slots


def measure(case: str, *, steps: int, warmup: int, baseline_path: str | None,
            attention: str | None = None) -> Iterator[dict[str, Any]]:
    config = model_config(case)
    lengths = load_lengths(PAIRS[case])
    ids, types = random_pairs(lengths, config.vocab_size)
    params = jax.jit(model_lib.init_params, static_argnums=0)(config, jax.random.key(0))
    mean_len = sum(lengths) / len(lengths)
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(lengths, f)
        lengths_file = f.name
    try:
        for per_batch in PAIRS_PER_BATCH:
            batch_tokens = max(512, int(math.ceil(per_batch * mean_len)))
            opts = scoring.options(batch_tokens=batch_tokens, attention=attention or "auto")
            scorer = scoring.Scorer(config, params, None, opts)
            t = time.perf_counter()
            for _ in range(max(1, warmup)):
                scorer.score_tokens(ids, types)
            print(f"score {case}: {per_batch} pairs/batch: compile pass done in {time.perf_counter() - t:.1f} s",
                  file=sys.stderr, flush=True)
            times = []
            for _ in range(steps):
                t = time.perf_counter()
                scores = scorer.score_tokens(ids, types)
                times.append(time.perf_counter() - t)
            if not np.all(np.isfinite(scores)):
                raise RuntimeError(f"{case}: non-finite scores")
            pass_s = statistics.median(times)
            record = {
                "case": case, "device_kind": scorer.devices[0].device_kind, "devices": len(scorer.devices),
                "pairs": len(lengths), "pairs_per_batch": per_batch, "batch_tokens": batch_tokens,
                "mean_length": mean_len, "padding_percent": 100 * padding_share(lengths, opts, len(scorer.devices)),
                "pass_s": pass_s, "pairs_per_s": len(lengths) / pass_s,
                "useful_tokens_per_s": sum(lengths) / pass_s, "dtype": np.dtype(scorer.config.compute_dtype()).name,
                "attention": scorer.config.attention_impl(),
                "steps": steps, "theirs_pairs_per_s": None, "ratio": None,
            }
            print(f"score {case}: {per_batch} pairs/batch: {len(lengths) / pass_s:,.1f} pairs/s",
                  file=sys.stderr, flush=True)
            if baseline_path:
                theirs = report.run_baseline(baseline_path, ["--suite", "score", "--model", case, "--lengths",
                                                             lengths_file, "--batch", str(per_batch)])[-1]
                record.update(theirs_pairs_per_s=theirs["pairs_per_s"], theirs=theirs,
                              ratio=record["pairs_per_s"] / theirs["pairs_per_s"])
            yield record
    finally:
        pathlib.Path(lengths_file).unlink(missing_ok=True)


def run(*, steps: int | None = None, warmup: int | None = None, cases: list[str] | None = None,
        baseline: str | None = None, attention: str | None = None) -> Iterator[dict]:
    if cases is None:  # roberta-large over 16k pairs is for accelerators; a CPU runs the reduced case
        cases = ["tiny"] if jax.default_backend() == "cpu" else ["tiny", "large"]
    for c in cases:
        yield from measure(c, steps=steps or DEFAULT_STEPS[c], warmup=DEFAULT_WARMUP if warmup is None else warmup,
                           baseline_path=baseline, attention=attention)
