"""Suite `score`: pairs/s of the scoring API on the real length distribution, next to transformers.

    python -m bench.run --suite score [--cases tiny,large,large-fp8] [--baseline ../shared/bench/hf_baseline.py]

Workload: the first `pairs` lengths of `bench/data/bigbench_lengths.json` (pair-encoded lengths of
candidates built from the 24 BIG-bench Lite tasks; `bench/make_lengths.py`), as random token ids:
the device path is timed, not the tokenizer. Ours: `cappy_jax.scoring.Scorer.score_tokens` with
random weights (packing, length-sorted batches, every local device, `dtype='auto'`), one untimed
pass to compile every batch shape, then the median of `steps` passes over all pairs. Two batch
sizes, in pairs per batch on average: ours gets `batch_tokens = pairs_per_batch x mean length`.
With `--baseline`, `hf_baseline.py --suite score --lengths <the same lengths> --batch <pairs per
batch> --model <case>` runs in the same command, one subprocess per batch size, and the ratio is
ours / theirs. A case `SIZE-fp8` scores with `quantize='fp8'` (the layers' matmuls in float8; the
baseline stays bf16, so its ratio compares different arithmetic) and the row records how far its scores
are from the case's own bf16 scores; the cases of one command share each baseline run. Needs neither
TensorFlow nor ml_collections (the GPU machine has neither).
"""

from __future__ import annotations

import dataclasses
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
SIZES = ("tiny", "base", "large")  # the shapes of hf_baseline.py's SIZES: roberta, vocabulary 50265, 514 positions
CASES = SIZES + tuple(f"{size}-fp8" for size in SIZES)
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
        "pairs_per_batch pairs a batch); ratio = ours/theirs pairs/s; a `-fp8` case scores with the layers' "
        "matmuls in float8 (theirs stays bf16); max score diff = its largest distance from the same size's "
        "unquantized scores in this command (random weights)")

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
    Column("max score diff", "max_score_diff", ".1e"),
)


def split_case(case: str) -> tuple[str, str]:
    """`large-fp8` -> ("large", "fp8"); `large` -> ("large", "none")."""
    size, _, quantize = case.partition("-")
    return size, quantize or "none"


def model_config(case: str) -> model_lib.ModelConfig:
    size, _ = split_case(case)
    return model_lib.ModelConfig.from_dict(dict(model_configs.VARIANTS[size], vocab_size=50265,
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


@dataclasses.dataclass
class Workload:
    """One size's model and pairs, built once and shared by its cases and batch sizes."""

    config: model_lib.ModelConfig
    params: Any
    lengths: list[int]
    ids: list[np.ndarray]
    types: list[np.ndarray]
    lengths_file: str  # the lengths as JSON, for hf_baseline

    @classmethod
    def build(cls, size: str, directory: str) -> Workload:
        config = model_config(size)
        lengths = load_lengths(PAIRS[size])
        ids, types = random_pairs(lengths, config.vocab_size)
        params = jax.jit(model_lib.init_params, static_argnums=0)(config, jax.random.key(0))
        path = pathlib.Path(directory) / f"{size}_lengths.json"
        path.write_text(json.dumps(lengths))
        return cls(config, params, lengths, ids, types, str(path))


def measure(case: str, work: Workload, per_batch: int, *, steps: int, warmup: int,
            attention: str | None) -> tuple[dict[str, Any], np.ndarray]:
    """One row: `case` scoring `work`'s pairs at about `per_batch` pairs a batch; and its scores."""
    _, quantize = split_case(case)
    lengths = work.lengths
    mean_len = sum(lengths) / len(lengths)
    batch_tokens = max(512, int(math.ceil(per_batch * mean_len)))
    opts = scoring.options(batch_tokens=batch_tokens, attention=attention or "auto", quantize=quantize)
    scorer = scoring.Scorer(work.config, work.params, None, opts)
    t = time.perf_counter()
    for _ in range(max(1, warmup)):
        scorer.score_tokens(work.ids, work.types)
    print(f"score {case}: {per_batch} pairs/batch: compile pass done in {time.perf_counter() - t:.1f} s",
          file=sys.stderr, flush=True)
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        scores = scorer.score_tokens(work.ids, work.types)
        times.append(time.perf_counter() - t)
    if not np.all(np.isfinite(scores)):
        raise RuntimeError(f"{case}: non-finite scores")
    pass_s = statistics.median(times)
    print(f"score {case}: {per_batch} pairs/batch: {len(lengths) / pass_s:,.1f} pairs/s", file=sys.stderr, flush=True)
    return {
        "case": case, "device_kind": scorer.devices[0].device_kind, "devices": len(scorer.devices),
        "pairs": len(lengths), "pairs_per_batch": per_batch, "batch_tokens": batch_tokens,
        "mean_length": mean_len, "padding_percent": 100 * padding_share(lengths, opts, len(scorer.devices)),
        "pass_s": pass_s, "pairs_per_s": len(lengths) / pass_s,
        "useful_tokens_per_s": sum(lengths) / pass_s, "dtype": np.dtype(scorer.config.compute_dtype()).name,
        "attention": scorer.config.attention_impl(), "quantize": quantize,
        "steps": steps, "theirs_pairs_per_s": None, "ratio": None, "max_score_diff": None,
    }, scores


def run(*, steps: int | None = None, warmup: int | None = None, cases: list[str] | None = None,
        baseline: str | None = None, attention: str | None = None) -> Iterator[dict]:
    """Batch sizes outer, cases inner: a run cut short keeps the throughput setting of every case. Cases of
    one size share their workload and each baseline run; a quantized case's scores are compared with its
    size's unquantized scores when that case ran before it."""
    if cases is None:  # roberta-large over 16k pairs is for accelerators; a CPU runs the reduced case
        cases = ["tiny"] if jax.default_backend() == "cpu" else ["tiny", "large"]
    warmup = DEFAULT_WARMUP if warmup is None else warmup
    with tempfile.TemporaryDirectory() as tmp:
        works: dict[str, Workload] = {}
        theirs: dict[tuple[str, int], dict[str, Any]] = {}
        plain: dict[tuple[str, int], np.ndarray] = {}
        for per_batch in PAIRS_PER_BATCH:
            for case in cases:
                size, quantize = split_case(case)
                if size not in works:
                    works[size] = Workload.build(size, tmp)
                record, scores = measure(case, works[size], per_batch, steps=steps or DEFAULT_STEPS[size],
                                         warmup=warmup, attention=attention)
                if quantize == "none":
                    plain[size, per_batch] = scores
                elif (size, per_batch) in plain:
                    record["max_score_diff"] = float(np.abs(scores - plain[size, per_batch]).max())
                if baseline:
                    if (size, per_batch) not in theirs:
                        theirs[size, per_batch] = report.run_baseline(baseline, [
                            "--suite", "score", "--model", size, "--lengths", works[size].lengths_file,
                            "--batch", str(per_batch)])[-1]
                    base = theirs[size, per_batch]
                    record.update(theirs_pairs_per_s=base["pairs_per_s"], theirs=base,
                                  ratio=record["pairs_per_s"] / base["pairs_per_s"])
                yield record
