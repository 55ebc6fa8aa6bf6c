"""Materialize a regression data set: sources -> labelled candidates -> tokenized TFRecord shards.

    python -m cappy_jax.data.build --config configs/data/bigbench.py --output DIR [--config.seed=1]
        [--runner DirectRunner|DataflowRunner|FlinkRunner|SparkRunner ...Beam pipeline options]

Runs on Apache Beam: in-process DirectRunner by default; any flag this module
does not define goes to Beam's `PipelineOptions`, so the same build runs on
Dataflow, Flink or Spark. Output:

    DIR/{train,validation,heldout}-NNNNN-of-MMMMM.tfrecord   (see cappy_jax/data/shards.py)
    DIR/tokenizer/                                           the tokenizer the ids come from
    DIR/manifest.json                                        counts, label histogram, checksums

Determinism: each record's shard and its place inside the shard come from a
hash of (seed, group, kind, response), so the same config and seed give
byte-identical shards however Beam schedules the work. Crash safety: shards
are written whole (temp file + rename) and the manifest last; a re-run
removes temp files and a stale manifest, rewrites every shard, and deletes
shards a different shard count left behind, so nothing is lost or doubled.
"""

from __future__ import annotations

import collections
import hashlib
import json
import logging
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import apache_beam as beam
import tensorflow as tf

from cappy_jax.data import candidates as candidates_lib
from cappy_jax.data import records, shards

log = logging.getLogger("cappy_jax.data.build")

SPLITS = ("train", "validation", "heldout")
MANIFEST = "manifest.json"
HISTOGRAM_BINS = 10


def _hash(*parts: Any) -> int:
    """A stable 64-bit hash (Python's own `hash` is salted per process)."""
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big")


def split_of(candidate: records.Candidate, *, heldout_tasks: frozenset[str], validation_fraction: float,
             seed: int) -> str:
    """Held-out tasks go whole to `heldout`; of the others, whole example groups go to `validation`."""
    if candidate.task in heldout_tasks:
        return "heldout"
    bucket = _hash(seed, "split", candidate.group_id) % 1_000_000
    return "validation" if bucket < validation_fraction * 1_000_000 else "train"


class _Tokenize(beam.DoFn):
    """Pair-encodes batches of candidates; the tokenizer is loaded once per worker."""

    def __init__(self, tokenizer_dir: str, max_len: int):
        self.tokenizer_dir = tokenizer_dir
        self.max_len = max_len

    def setup(self) -> None:
        from cappy_jax.tokenization import PairTokenizer

        self.tokenizer = PairTokenizer.from_dir(self.tokenizer_dir)

    def process(self, batch: Sequence[tuple[str, records.Candidate]]) -> Iterator[tuple[str, dict[str, Any]]]:
        enc = self.tokenizer.encode_pairs([c.instruction for _, c in batch], [c.response for _, c in batch],
                                          max_len=self.max_len)
        for (split, c), ids, types, cut in zip(batch, enc.input_ids, enc.token_type_ids, enc.truncated):
            yield split, {
                "input_ids": ids.tolist(), "token_type_ids": types.tolist(), "label": float(c.label),
                "task": c.task, "group_id": c.group_id, "kind": c.kind, "instruction": c.instruction,
                "response": c.response, "truncated": bool(cut),
            }


def _record_key(seed: int, record: Mapping[str, Any]) -> int:
    return _hash(seed, "record", record["group_id"], record["kind"], record["response"])


def _write_one_shard(item: tuple[tuple[str, int], Iterable[Any]], *, output: str, num_shards: Mapping[str, int],
                     seed: int) -> dict[str, Any]:
    (split, index), values = item
    recs = sorted((r for r in values if r is not None),
                  key=lambda r: (_record_key(seed, r), r["group_id"], r["kind"], r["response"]))
    path = os.path.join(output, shards.shard_name(split, index, num_shards[split]))
    stats = shards.write_shard(path, (shards.serialize(r) for r in recs))
    stats.update(split=split, **_counts(split, recs))
    return stats


def _counts(split: str, recs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    by_task: collections.Counter = collections.Counter(r["task"] for r in recs)
    by_kind: collections.Counter = collections.Counter(r["kind"] for r in recs)
    hist = [0] * HISTOGRAM_BINS
    for r in recs:
        hist[min(int(r["label"] * HISTOGRAM_BINS), HISTOGRAM_BINS - 1)] += 1
    return {"tasks": dict(by_task), "kinds": dict(by_kind), "label_histogram": hist,
            "groups": sorted({r["group_id"] for r in recs}), "truncated": sum(bool(r["truncated"]) for r in recs),
            "tokens": sum(len(r["input_ids"]) for r in recs)}


def merge_manifest(shard_stats: Sequence[Mapping[str, Any]], *, meta: Mapping[str, Any]) -> dict[str, Any]:
    """Adds per-shard counts up into the manifest; group counts are exact (unions, not sums)."""
    splits: dict[str, Any] = {}
    for st in sorted(shard_stats, key=lambda s: s["file"]):
        sp = splits.setdefault(st["split"], {"records": 0, "tokens": 0, "truncated": 0, "tasks": {}, "kinds": {},
                                             "label_histogram": [0] * HISTOGRAM_BINS, "groups": set(),
                                             "shards": []})
        sp["records"] += st["records"]
        sp["tokens"] += st["tokens"]
        sp["truncated"] += st["truncated"]
        for field in ("tasks", "kinds"):
            for k, v in st[field].items():
                sp[field][k] = sp[field].get(k, 0) + v
        sp["label_histogram"] = [a + b for a, b in zip(sp["label_histogram"], st["label_histogram"])]
        sp["groups"] |= set(st["groups"])
        sp["shards"].append({"file": st["file"], "records": st["records"], "sha256": st["sha256"]})
    for sp in splits.values():
        sp["groups"] = len(sp["groups"])
        sp["tasks"] = dict(sorted(sp["tasks"].items()))
        sp["kinds"] = dict(sorted(sp["kinds"].items()))
    return {**meta, "splits": {s: splits[s] for s in SPLITS if s in splits}}


def _write_manifest(manifest: Mapping[str, Any], output: str) -> None:
    path = os.path.join(output, MANIFEST)
    tmp = path + ".tmp"
    with tf.io.gfile.GFile(tmp, "w") as f:
        f.write(json.dumps(manifest, indent=2, sort_keys=False))
    tf.io.gfile.rename(tmp, path, overwrite=True)


def _prepare_output(output: str, num_shards: Mapping[str, int]) -> None:
    """Clears what an interrupted run may have left: temp files, the manifest, shards of other counts."""
    tf.io.gfile.makedirs(output)
    wanted = {shards.shard_name(s, i, n) for s, n in num_shards.items() for i in range(n)}
    for path in tf.io.gfile.glob(os.path.join(output, "*")):
        name = os.path.basename(path)
        if ".tmp" in name or name == MANIFEST or (name.endswith(".tfrecord") and name not in wanted):
            tf.io.gfile.remove(path)


def build(config: Any, output: str, *, examples_by_task: Mapping[str, Sequence[records.Example]],
          source_stats: Mapping[str, Any] | None = None, sampler: Any = None,
          pipeline_options: Sequence[str] = ()) -> dict[str, Any]:
    """Runs the Beam pipeline over examples already grouped by task; returns the manifest.

    `source_stats` (e.g. skipped records per source) goes into the manifest as is.
    `sampler(examples) -> {group_id: [(mode, text), ...]}` adds LLM samples (None: no LLM).
    """
    source_stats = source_stats or {}
    from apache_beam.options.pipeline_options import PipelineOptions

    num_shards = {s: int(config.shards[s]) for s in SPLITS}
    heldout = frozenset(config.heldout_tasks)
    present = {s for s in SPLITS if s != "heldout"} | ({"heldout"} if heldout & set(examples_by_task) else set())
    num_shards = {s: n for s, n in num_shards.items() if s in present}
    _prepare_output(output, num_shards)
    settings = candidates_lib.CandidateSettings(**dict(config.candidates))
    seed, max_len = int(config.seed), int(config.max_len)
    tokenizer_out = os.path.join(output, "tokenizer")
    from cappy_jax.checkpoint import copy_tokenizer

    copy_tokenizer(config.tokenizer_dir, tokenizer_out)

    def task_candidates(item: tuple[str, Sequence[records.Example]]) -> list[records.Candidate]:
        task, examples = item
        samples = sampler(examples) if sampler is not None else None
        return candidates_lib.candidates_for_task(examples, settings=settings, seed=seed, samples=samples)

    def assign(c: records.Candidate) -> tuple[str, records.Candidate]:
        return split_of(c, heldout_tasks=heldout, validation_fraction=float(config.validation_fraction),
                        seed=seed), c

    def key(item: tuple[str, dict[str, Any]]) -> tuple[tuple[str, int], dict[str, Any]]:
        split, rec = item
        return (split, _record_key(seed, rec) % num_shards[split]), rec

    options = PipelineOptions(list(pipeline_options) or ["--runner=DirectRunner", "--direct_num_workers=1",
                                                         "--direct_running_mode=in_memory"])
    slots = [((s, i), None) for s, n in num_shards.items() for i in range(n)]
    with beam.Pipeline(options=options) as p:
        recs = (p
                | "Tasks" >> beam.Create(sorted(examples_by_task.items()))
                | "Candidates" >> beam.FlatMap(task_candidates)
                | "Split" >> beam.Map(assign)
                | "Batch" >> beam.BatchElements(min_batch_size=64, max_batch_size=1024)
                | "Tokenize" >> beam.ParDo(_Tokenize(tokenizer_out, max_len))
                | "Key" >> beam.Map(key))
        # Every shard slot gets an entry, so an empty shard is still written.
        empty = p | "Slots" >> beam.Create(slots)
        stats = ((recs, empty)
                 | beam.Flatten()
                 | "GroupShards" >> beam.GroupByKey()
                 | "Write" >> beam.Map(_write_one_shard, output=output, num_shards=num_shards, seed=seed)
                 | beam.combiners.ToList())
        meta = _meta(config, output, num_shards, source_stats)
        _ = stats | "Manifest" >> beam.Map(lambda st: _write_manifest(merge_manifest(st, meta=meta), output))
    manifest_path = os.path.join(output, MANIFEST)
    with tf.io.gfile.GFile(manifest_path) as f:
        return json.load(f)


def _meta(config: Any, output: str, num_shards: Mapping[str, int],
          source_stats: Mapping[str, Any]) -> dict[str, Any]:
    with tf.io.gfile.GFile(os.path.join(output, "tokenizer", "tokenizer.json"), "rb") as f:
        tok_sha = hashlib.sha256(f.read()).hexdigest()
    return {
        "format": "cappy_jax.shards/1",
        "config": json.loads(config.to_json()) if hasattr(config, "to_json") else dict(config),
        "tokenizer": {"dir": "tokenizer", "sha256": tok_sha},
        "max_len": int(config.max_len),
        "seed": int(config.seed),
        "num_shards": dict(num_shards),
        "sources": dict(source_stats),
    }
