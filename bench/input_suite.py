"""Suite `input`: how many pairs a second the host's tf.data pipeline turns from shards into packed batches.

Why: a training step on an accelerator eats pairs at a fixed rate; if the host
pipeline (read shards, parse, shuffle, pack in the tf.data graph, batch,
convert to numpy) is slower, the accelerator waits. This suite writes
synthetic shards (`shards.serialize` / `write_shard`, in a temporary
directory) whose pair lengths follow the BIG-bench pairs of the reference
(ANCHORS: mean 101 tokens, median 60, 90th percentile 256, 3.5% at the 512
cap): a lognormal with median 60 and sigma 1.1, cut to [6, 512]; the texts
stored beside the tokens are about 4.4 bytes a token, as real records carry
them. Then it runs `InputPipeline` in training mode (repeat, reshuffled
epochs, 10,000-record shuffle buffer) for each case and times whole batches,
numpy conversion included, after the first batch and `warmup` more.

Cases (rows 32, max_len 512):

* `packed`: up to 16 pairs a row, `open_rows` 8 (the pipeline's default);
* `packed-open1`: the same with `open_rows` 1 (next fit: cheaper, looser);
* `unpacked`: one pair a row padded to 512, the reference recipe
  (`open_rows` 1: with one pair a row more open rows cannot pack tighter);
* `packed-bigbench`: as `packed`, on the pair lengths that `train-real` and `score` use
  (`bench/data/bigbench_lengths.json`, 24 BIG-bench Lite tasks, mean 159 tokens) instead of the
  synthetic ones, so its rate meets the accelerator's on the same workload.

Against the accelerator: each case's useful tokens/s is divided by the fastest rate at which a
training step on an accelerator consumed useful tokens in `bench/results.jsonl` (the `train-real`
suite's `large` case, `packed` recipe for packed cases and `pad512` for `unpacked`), which names that
device and date: the fastest step is the hardest one to feed. A ratio above 1 means this host keeps
up. The accelerator's rate cannot be measured here (no TensorFlow on the GPU machine, no GPU on this
one), hence the join of two measurements.

This is the one suite that imports TensorFlow (the data pipeline is tf.data),
and only inside `run`, so choosing another suite never loads it.
"""

from __future__ import annotations

import json
import math
import os
import pathlib
import tempfile
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from bench import report
from bench.report import Column

CASES = ("packed", "packed-open1", "unpacked", "packed-bigbench")
CASE_CONFIG = {  # max_segments, open_rows
    "packed": (16, 8),
    "packed-open1": (16, 1),
    "unpacked": (1, 1),
    "packed-bigbench": (16, 8),
}
CASE_LENGTHS = {"packed-bigbench": "bigbench"}  # the others: "synthetic"
BIGBENCH_LENGTHS = pathlib.Path(__file__).resolve().parent / "data" / "bigbench_lengths.json"
RESULTS = pathlib.Path(__file__).resolve().parent / "results.jsonl"  # where accelerator rates are read from
ROWS, MAX_LEN = 32, 512
# Timed batches per case when `--steps` is not given: a few seconds each on 2 cores.
DEFAULT_STEPS = {"packed": 200, "packed-open1": 200, "unpacked": 800, "packed-bigbench": 200}
DEFAULT_WARMUP = 5          # untimed batches after the first
DEFAULT_RECORDS = 32_000    # pairs written in all
DEFAULT_SHARDS = 8
DEFAULT_SHUFFLE_BUFFER = 10_000
LENGTH_MEDIAN, LENGTH_SIGMA, LENGTH_MIN = 60, 1.1, 6
BYTES_PER_TOKEN = 4.4       # instruction + response text stored in each record
VOCAB = 50265               # roberta-large
PAD_ID = 1
SEED = 0

NOTE = (f"InputPipeline in training mode (repeat, shuffle buffer {DEFAULT_SHUFFLE_BUFFER:,} unless noted) from "
        "shards of random ids (pair lengths: synthetic = lognormal, median 60 tokens, sigma 1.1, cut to [6, 512]; "
        "bigbench = the first `records` of bench/data/bigbench_lengths.json, train-real's and score's; texts "
        "stored as real records store them) to numpy batches of rows × 512 tokens; throughput over the timed "
        "batches after the first batch and the warm-up; pairs/s = pairs delivered ÷ seconds; useful tokens = "
        "non-padding tokens; efficiency = useful ÷ all token slots; first batch = seconds to the first "
        "batch (fills the shuffle buffer); cores used = this process's CPU seconds ÷ wall seconds while "
        "timing; other load = share of the cores other processes used meanwhile; accelerator = the fastest "
        "useful tokens/s of a train step on an accelerator in bench/results.jsonl (train-real, large, packed "
        "recipe for packed cases, pad512 for unpacked; device and date in `accelerator_source`); host ÷ "
        "accelerator = useful tokens/s ÷ that (above 1: this host keeps up)")

COLUMNS = (
    Column("case", "case"),
    Column("lengths", "lengths"),
    Column("pairs/row ≤", "max_segments", "d"),
    Column("open rows", "open_rows", "d"),
    Column("rows×tokens", "batch"),
    Column("pairs/s", "pairs_per_s", ",.0f"),
    Column("rows/s", "rows_per_s", ",.0f"),
    Column("useful tokens/s", "useful_tokens_per_s", ",.0f"),
    Column("efficiency", "packing_efficiency", ".1%"),
    Column("pairs/row", "pairs_per_row", ".2f"),
    Column("batches", "steps", "d"),
    Column("first batch (s)", "first_batch_s", ".2f"),
    Column("cores used", "cores_used", ".2f"),
    Column("other load", "other_load", ".0%"),
    Column("accelerator useful tokens/s", "accelerator_useful_tokens_per_s", ",.0f"),
    Column("host ÷ accelerator", "host_over_accelerator", ".1f"),
)


def pair_lengths(n: int, seed: int = SEED, max_len: int = MAX_LEN) -> np.ndarray:
    """Token counts of `n` pairs, distributed like the BIG-bench pairs (see the module docstring)."""
    rng = np.random.default_rng(seed)
    x = np.exp(math.log(LENGTH_MEDIAN) + LENGTH_SIGMA * rng.standard_normal(n))
    return np.clip(np.round(x), LENGTH_MIN, max_len).astype(np.int64)


def bigbench_lengths(n: int, max_len: int = MAX_LEN) -> np.ndarray:
    """The first `n` real pair lengths (all of them if fewer), as `train-real` and `score` read them."""
    lengths = np.asarray(json.loads(BIGBENCH_LENGTHS.read_text())[:n], np.int64)
    return np.minimum(lengths, max_len)


def accelerator_rate(recipe: str, results: pathlib.Path) -> dict[str, Any] | None:
    """The fastest `train-real` step on an accelerator for `recipe` in `results`, or None if there is none.

    Useful tokens/s, because the synthetic cases' pairs are shorter than train-real's; where the step's
    cost per useful token differs between length distributions, `packed-bigbench` is the exact comparison.
    """
    best = None
    if results.exists():
        for line in results.read_text().splitlines():
            r = json.loads(line) if line.strip() else {}
            if (r.get("suite"), r.get("case"), r.get("recipe")) != ("train-real", "large", recipe):
                continue
            rate = r.get("useful_tokens_per_s")
            if r.get("device_kind", "cpu") == "cpu" or not report.is_finite_positive(rate):
                continue
            if best is None or rate > best["useful_tokens_per_s"]:
                best = {"useful_tokens_per_s": rate,
                        "source": f"{r['device_kind']}, {r.get('env', {}).get('date', '?')}, train-real {recipe}"}
    return best


def against_accelerator(record: dict[str, Any], results: pathlib.Path) -> dict[str, Any]:
    """The comparison fields of one case's record (None where no accelerator rate is recorded)."""
    accel = accelerator_rate("packed" if record["max_segments"] > 1 else "pad512", results)
    if accel is None:
        return {"accelerator_useful_tokens_per_s": None, "host_over_accelerator": None, "accelerator_source": None}
    return {"accelerator_useful_tokens_per_s": accel["useful_tokens_per_s"],
            "host_over_accelerator": record["useful_tokens_per_s"] / accel["useful_tokens_per_s"],
            "accelerator_source": accel["source"]}


def length_stats(lengths: np.ndarray, max_len: int = MAX_LEN) -> dict[str, float]:
    return {"length_mean": float(lengths.mean()), "length_median": float(np.median(lengths)),
            "length_p90": float(np.percentile(lengths, 90)), "share_at_cap": float(np.mean(lengths >= max_len))}


def write_shards(directory: pathlib.Path, lengths: np.ndarray, num_shards: int, seed: int = SEED) -> list[str]:
    """Shards `train-NNNNN-of-MMMMM.tfrecord` of records with the given lengths (record i in shard i % count)."""
    from cappy_jax.data import shards

    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed + 1)
    letters = np.frombuffer(b"abcdefghijklmnopqrstuvwxyz     ", np.uint8)
    text = letters[rng.integers(0, letters.size, int(BYTES_PER_TOKEN * lengths.max()) + 1)].tobytes().decode()
    for s in range(num_shards):
        records = []
        for i in range(s, lengths.size, num_shards):
            n = int(lengths[i])
            ids = rng.integers(5, VOCAB, n)
            ids[0] = 0
            types = np.zeros(n, np.int64)
            chars = int(BYTES_PER_TOKEN * n)
            cut = int(0.7 * chars)
            records.append(shards.serialize(dict(
                input_ids=ids, token_type_ids=types, label=float(rng.random()), task=f"task_{i % 45}",
                group_id=f"task_{i % 45}/{i // 17}", kind="sample", instruction=text[:cut], response=text[cut:chars])))
        shards.write_shard(str(directory / shards.shard_name("train", s, num_shards)), records)
    return shards.shard_files(str(directory), "train")


def summarize(case: str, batches: Sequence[dict[str, np.ndarray]], seconds: float, **extra: Any) -> dict[str, Any]:
    """One record from the timed batches; pure (no TensorFlow), so the arithmetic is testable.

    Efficiency is `pipeline.packing_efficiency` of the batches: non-padding tokens ÷ token slots.
    """
    rows = sum(b["segment_ids"].shape[0] for b in batches)
    pairs = sum(int(b["label_mask"].sum()) for b in batches)
    useful = sum(int((b["segment_ids"] > 0).sum()) for b in batches)
    rows_per_batch, max_len = batches[0]["segment_ids"].shape
    return {
        "case": case,
        "rows": rows_per_batch,
        "max_len": max_len,
        "batch": f"{rows_per_batch}×{max_len}",
        "steps": len(batches),
        "seconds": seconds,
        "pairs": pairs,
        "pairs_per_s": pairs / seconds,
        "rows_per_s": rows / seconds,
        "useful_tokens_per_s": useful / seconds,
        "token_slots_per_s": rows * max_len / seconds,
        "packing_efficiency": useful / (rows * max_len),
        "pairs_per_row": pairs / rows,
        "mean_pair_tokens": useful / pairs,
        **extra,
    }


def measure_case(case: str, files: Sequence[str], *, steps: int, warmup: int, rows: int, max_len: int,
                 shuffle_buffer: int, seed: int = SEED) -> dict[str, Any]:
    from cappy_jax.data import pipeline

    max_segments, open_rows = CASE_CONFIG[case]
    config = pipeline.PipelineConfig(rows=rows, max_len=max_len, max_segments=max_segments, open_rows=open_rows,
                                     shuffle_buffer=shuffle_buffer, repeat=True, seed=seed)
    start = time.perf_counter()
    stream = pipeline.InputPipeline(files, config, pad_id=PAD_ID)
    next(stream)
    first_batch_s = time.perf_counter() - start
    for _ in range(warmup):
        next(stream)
    with report.OtherLoad() as other:
        cpu0, start = time.process_time(), time.perf_counter()
        batches = [next(stream) for _ in range(steps)]
        seconds = time.perf_counter() - start
        cpu = time.process_time() - cpu0
    del stream
    return summarize(case, batches, seconds, max_segments=max_segments, open_rows=open_rows, warmup=warmup,
                     shuffle_buffer=shuffle_buffer, first_batch_s=first_batch_s, cores_used=cpu / seconds,
                     other_load=other.share)


def run(*, steps: int | None = None, warmup: int | None = None, cases: Sequence[str] | None = None,
        records: int | None = None, num_shards: int | None = None, rows: int | None = None,
        shuffle_buffer: int | None = None, max_len: int = MAX_LEN, seed: int = SEED) -> list[dict[str, Any]]:
    """Writes the shards once, then times each case; one record per case. `None` = the module defaults."""
    cases = CASES if cases is None else tuple(cases)
    unknown = sorted(set(cases) - set(CASES))
    if unknown:
        raise ValueError(f"unknown input cases {unknown}; choose from {CASES}")
    warmup = DEFAULT_WARMUP if warmup is None else warmup
    records = DEFAULT_RECORDS if records is None else records
    num_shards = DEFAULT_SHARDS if num_shards is None else num_shards
    rows = ROWS if rows is None else rows
    shuffle_buffer = DEFAULT_SHUFFLE_BUFFER if shuffle_buffer is None else shuffle_buffer
    if min(records, num_shards, rows, max_len) < 1 or records < num_shards:
        raise ValueError("records, shards, rows and max_len must be positive, with a record for every shard")

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's start-up chatter
    import tensorflow as tf

    out = []
    with tempfile.TemporaryDirectory(prefix="bench-input-") as tmp:
        written: dict[str, tuple[np.ndarray, list[str], float, int]] = {}
        for case in cases:
            source = CASE_LENGTHS.get(case, "synthetic")
            if source not in written:  # shards once per length source
                lengths = (bigbench_lengths(records, max_len) if source == "bigbench"
                           else pair_lengths(records, seed, max_len))
                start = time.perf_counter()
                files = write_shards(pathlib.Path(tmp) / source, lengths, min(num_shards, lengths.size), seed)
                written[source] = (lengths, files, time.perf_counter() - start, sum(os.path.getsize(f) for f in files))
            lengths, files, write_s, shard_bytes = written[source]
            record = measure_case(case, files, steps=DEFAULT_STEPS[case] if steps is None else steps,
                                  warmup=warmup, rows=rows, max_len=max_len, shuffle_buffer=shuffle_buffer, seed=seed)
            out.append({**record, "lengths": source, "records": int(lengths.size), "shards": len(files),
                        "shard_bytes": shard_bytes, "shard_write_s": write_s, **length_stats(lengths, max_len),
                        **against_accelerator(record, RESULTS), "needs_tensorflow": True,
                        "tensorflow_version": tf.__version__})
    return out
