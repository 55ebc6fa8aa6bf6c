"""Materialize a regression data set: sources -> labelled candidates -> tokenized TFRecord shards.

    python -m cappy_jax.data.build --config configs/data/bigbench.py --output DIR [--config.seed=1]
        [--runner FnApiRunner|DataflowRunner|FlinkRunner|SparkRunner ...Beam pipeline options]

Runs on Apache Beam: Beam's in-process batch runner (FnApiRunner) on one core by
default (`config.beam`, `configs/data/common.py`); any flag this module does not
define goes to Beam's `PipelineOptions` after those, so the same build runs on
Dataflow, Flink or Spark, or on every local core with
`--direct_num_workers=0 --direct_running_mode=multi_processing`. Output:

    DIR/{train,validation,heldout}-NNNNN-of-MMMMM.tfrecord   (see cappy_jax/data/shards.py)
    DIR/tokenizer/                                           the tokenizer the ids come from
    DIR/manifest.json                                        counts, label histogram, checksums

Memory: bounded by the largest task and the largest shard, not by the build. Where each task
lies whole in one work unit (BIG-bench, PromptSource), a unit's reader makes its tasks' candidates
(LLM samples included), so no shuffle holds the examples; else (JSONL) examples go to spill files,
one set per bucket of tasks (`output.task_buckets`), and a worker makes one bucket's tasks at a
time. Records go to per-shard spill files (DIR/_spill, removed at the end), so Beam's shuffles
carry file names, not examples or records.

Determinism: each record's shard and its place inside the shard come from a
hash of (seed, group, kind, response), so the same config and seed give
byte-identical shards however Beam schedules the work. Crash safety: shards
are written whole (temp file + rename) and the manifest last; a re-run
removes temp files and a stale manifest, rewrites every shard, and deletes
shards a different shard count left behind, so nothing is lost or doubled.
"""

from __future__ import annotations

import collections
import copy
import hashlib
import json
import logging
import os
import pickle
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, NamedTuple

import apache_beam as beam
import tensorflow as tf

from cappy_jax.data import candidates as candidates_lib
from cappy_jax.data import records, shards
from cappy_jax.data.records import split_of, stable_hash64 as _hash

log = logging.getLogger("cappy_jax.data.build")

SPLITS = records.SPLITS
MANIFEST = "manifest.json"
HISTOGRAM_BINS = 10
PROGRESS_SECONDS = 30.0  # a progress line from each tokenizing worker at most this often
SPILL_DIR = "_spill"  # under the output directory while a build runs
_RECORD_OVERHEAD = 512  # bytes a buffered record costs beyond its serialized example (Python objects)
_DROPS_LOGGED = 5  # pairs without tokens a worker names in the log; the manifest counts all


class _Candidates(beam.DoFn):
    """Makes each task's labelled candidates, tagged with their split. `by_unit`: the element is a work unit,
    read here, whose tasks lie whole in it (`read.tasks_within_units`), so no shuffle holds the examples;
    else it is (bucket, spill files) from `_SpillTasks`, and the bucket's tasks are put together here. An
    LLM backend (config `llm`) is built once per worker and samples each task's examples a chunk at a time,
    in example order, so the samples do not depend on how Beam batches or schedules the work."""

    def __init__(self, cfg: Mapping[str, Any], *, by_unit: bool):
        self.cfg = dict(cfg)
        self.by_unit = by_unit

    def setup(self) -> None:
        from cappy_jax.data import llm

        cfg = self.cfg
        self.settings = candidates_lib.CandidateSettings(
            **{k: tuple(v) if isinstance(v, list) else v for k, v in cfg["candidates"].items()})
        self.seed = int(cfg["output"]["seed"])
        self.validation_fraction = float(cfg["output"]["validation_fraction"])
        self.backend = None
        if cfg["llm"]["name"] != "none":
            self.backend = llm.backend_from_config(cfg["llm"])
            self.recipe = llm.recipe_named(cfg["llm"]["recipe"])
        self.sampled, self.start = 0, time.monotonic()
        self.last_log = self.start

    def process(self, element: Any) -> Iterator[Any]:
        from cappy_jax.data import read

        if self.by_unit:
            examples, stats = read.read_unit(self.cfg, element)
            yield beam.pvalue.TaggedOutput("stats", stats)
            items: Iterable[tuple[str, Any]] = ((ex.task, (element.heldout, ex)) for ex in examples)
        else:
            items = _read_spill(sorted(element[1]))
        by_task: dict[str, list] = collections.defaultdict(list)
        for task, value in items:
            by_task[task].append(value)
        for task in sorted(by_task):
            if self.by_unit:
                yield beam.pvalue.TaggedOutput("task_units", (task, element.name))
            yield from self._task(task, by_task.pop(task))

    def _task(self, task: str, values: Iterable[tuple[bool, records.Example]]) -> Iterator[Any]:
        # Sorted: GroupByKey gives no order, and the candidates (their random draws) must be reproducible.
        values = sorted(values, key=lambda v: v[1].example_id)
        heldout = {ex.group_id: h for h, ex in values}
        groups: collections.Counter = collections.Counter()
        last = None
        for c in candidates_lib.stream_candidates([ex for _, ex in values], settings=self.settings, seed=self.seed,
                                                  sampler=self._sample if self.backend else None,
                                                  chunk=candidates_lib.STREAM_CHUNK):
            split = split_of(c.group_id, heldout=heldout[c.group_id], validation_fraction=self.validation_fraction,
                             seed=self.seed)
            if c.group_id != last:  # candidates come example by example
                groups[split] += 1
                last = c.group_id
            yield split, c
        yield beam.pvalue.TaggedOutput("groups", dict(groups))

    def _sample(self, examples: Sequence[records.Example]) -> dict[str, list[tuple[str, str]]]:
        generations = self.backend.generate([ex.instruction for ex in examples], self.recipe)
        self.sampled += len(examples)
        now = time.monotonic()
        if now - self.last_log >= PROGRESS_SECONDS:  # an LLM samples far slower than anything else here
            self.last_log = now
            log.info("sampled %d instructions with the LLM (%.2f/s in this worker)", self.sampled,
                     self.sampled / (now - self.start))
        return {ex.group_id: list(samples) for ex, samples in zip(examples, generations)}


class _SpillTasks(beam.DoFn):
    """Sends (task, (heldout, example)) to one of `buckets` by the task's hash, through spill files (`_Spill`),
    so the GroupByKey after it carries file names: a worker then holds one bucket's examples (about
    1/`buckets` of them, and at least its largest task), not the whole data set."""

    def __init__(self, spill_dir: str, spill_mb: float, buckets: int):
        self.spill_dir = spill_dir
        self.spill_bytes = int(spill_mb * 2**20)
        self.buckets = buckets

    def start_bundle(self) -> None:
        self.spill = _Spill(self.spill_dir, self.spill_bytes)

    def process(self, item: tuple[str, tuple[bool, records.Example]]) -> Iterable[Any]:
        task, (_, ex) = item
        size = len(ex.instruction) + sum(map(len, ex.references)) + sum(map(len, ex.choices)) + _RECORD_OVERHEAD
        self.spill.add(("tasks", _hash("task bucket", task) % self.buckets), item, size)
        if self.spill.full():
            self.spill.flush()
        return ()  # its output comes from finish_bundle; Beam 2.78 refuses a process hinted to return None

    def finish_bundle(self) -> Iterator[Any]:
        yield from self.spill.finish()


def _examples_by_task(unit: Any, cfg: Mapping[str, Any]) -> Iterator[Any]:
    """A unit's examples keyed by task, for `_SpillTasks` (a source whose tasks may span units: JSONL)."""
    from cappy_jax.data import read

    examples, stats = read.read_unit(cfg, unit)
    yield beam.pvalue.TaggedOutput("stats", stats)
    for ex in examples:
        yield ex.task, (unit.heldout, ex)


class Written(NamedTuple):
    """A record as the shuffle carries it to its shard: the serialized tf.train.Example and what the manifest
    counts. Bytes, not a dict of two lists of Python ints, which Beam's coder encoded int by int at every
    stage (BIG-bench, every task, 543k records: 135 s -> 118 s, peak memory 6.6 -> 6.1 GB)."""

    key: int          # `_record_key`: the shard and the place inside it
    example: bytes
    task: str
    group_id: str
    kind: str
    label: float
    truncated: bool
    tokens: int


class _Spill:
    """Items buffered per key and written out, one pickled list a key, once `limit_bytes` of them are held
    (one pickled list reads back 30x faster than a TFRecord file). The shuffle after it then carries (key,
    file) pairs, not the items: Beam's local runners hold a shuffle in memory (about 11 KB a record at the
    peak), which capped a local build at a few million records. A DoFn makes one per bundle and emits
    `finish()` when the bundle ends, so a retried bundle's files are never read (they go with the spill
    directory)."""

    def __init__(self, directory: str, limit_bytes: int):
        self.directory = directory
        self.limit_bytes = limit_bytes
        self.buffers: dict[Any, list] = collections.defaultdict(list)
        self.buffered = 0
        self.written: list[tuple[Any, str]] = []

    def add(self, key: Any, item: Any, size: int) -> None:
        self.buffers[key].append(item)
        self.buffered += size

    def full(self) -> bool:
        return self.buffered >= self.limit_bytes

    def flush(self) -> None:
        for key, items in sorted(self.buffers.items()):
            name = "-".join(f"{k:05d}" if isinstance(k, int) else str(k) for k in key)
            path = os.path.join(self.directory, f"{name}-{uuid.uuid4().hex}")
            with tf.io.gfile.GFile(path, "wb") as f:
                pickle.dump(items, f, protocol=pickle.HIGHEST_PROTOCOL)
            self.written.append((key, path))
        self.buffers.clear()
        self.buffered = 0

    def finish(self) -> Iterator[Any]:
        from apache_beam.transforms.window import GlobalWindows

        self.flush()
        for item in self.written:
            yield GlobalWindows.windowed_value(item)


def _read_spill(paths: Sequence[str]) -> Iterator[Any]:
    """The items of spill files, in the order given. Each file goes once read, so the disk holds an item
    about once; should a runner retry the reading step after that, it fails, and a re-run of the build
    rewrites every shard."""
    for path in paths:
        try:
            with tf.io.gfile.GFile(path, "rb") as f:
                items = pickle.load(f)
        except tf.errors.NotFoundError:
            raise FileNotFoundError(f"spill file {path} is gone: the runner retried a step that had read it "
                                    "already; re-run the build, which starts from the sources again") from None
        tf.io.gfile.remove(path)
        yield from items


class _Tokenize(beam.DoFn):
    """Pair-encodes batches of candidates into `Written` records and spills them to per-shard files (`_Spill`,
    at most `spill_mb` held), so the shuffle carries ((split, shard), spill file) pairs; the tokenizer is
    loaded once per worker."""

    def __init__(self, tokenizer_dir: str, max_len: int, seed: int, num_shards: Mapping[str, int],
                 spill_dir: str, spill_mb: float):
        self.tokenizer_dir = tokenizer_dir
        self.max_len = max_len
        self.seed = seed
        self.num_shards = dict(num_shards)
        self.spill_dir = spill_dir
        self.spill_bytes = int(spill_mb * 2**20)

    def setup(self) -> None:
        from cappy_jax.tokenization import PairTokenizer

        self.tokenizer = PairTokenizer.from_dir(self.tokenizer_dir)
        self.done, self.dropped, self.start = 0, 0, time.monotonic()
        self.last_log = self.start

    def start_bundle(self) -> None:
        self.spill = _Spill(self.spill_dir, self.spill_bytes)

    def process(self, batch: Sequence[tuple[str, records.Candidate]]) -> Iterator[Any]:
        from cappy_jax.tokenization import NoTokensError

        try:
            enc = self._encode(batch)
        except NoTokensError:  # rare: find them, count them, go on (BIG-bench's real_or_fake_text:gpt2 has a
            # response of two U+FFFD characters, which BERT's normalizer drops: the full build stopped on it)
            keep = (self.tokenizer.has_tokens([c.instruction for _, c in batch])
                    & self.tokenizer.has_tokens([c.response for _, c in batch]))
            dropped: collections.Counter = collections.Counter()
            for (split, c), kept in zip(batch, keep):
                if not kept:
                    dropped[split] += 1
                    self.dropped += 1
                    if self.dropped <= _DROPS_LOGGED:
                        log.warning("left out a %s pair of %s whose instruction or response has no tokens: the "
                                    "tokenizer drops every character of %r (counted as no_tokens in the manifest)",
                                    c.kind, c.group_id, c.response[:60])
            for split, n in sorted(dropped.items()):
                yield beam.pvalue.TaggedOutput("no_tokens", (split, n))
            batch = [item for item, kept in zip(batch, keep) if kept]
            enc = self._encode(batch)
        for (split, c), ids, types, cut in zip(batch, enc.input_ids, enc.token_type_ids, enc.truncated):
            rec = {"input_ids": ids.tolist(), "token_type_ids": types.tolist(), "label": float(c.label),
                   "task": c.task, "group_id": c.group_id, "kind": c.kind, "instruction": c.instruction,
                   "response": c.response}
            key = _record_key(self.seed, rec)
            example = shards.serialize(rec)
            self.spill.add((split, key % self.num_shards[split]),
                           (key, example, c.task, c.group_id, c.kind, float(c.label), bool(cut), len(ids)),
                           len(example) + _RECORD_OVERHEAD)
        if self.spill.full():
            self.spill.flush()
        self.done += len(batch)
        now = time.monotonic()
        if now - self.last_log >= PROGRESS_SECONDS:  # the stage between reading and writing takes longest
            self.last_log = now
            log.info("tokenized %d records (%.0f/s in this worker)", self.done, self.done / (now - self.start))

    def _encode(self, batch: Sequence[tuple[str, records.Candidate]]) -> Any:
        return self.tokenizer.encode_pairs([c.instruction for _, c in batch], [c.response for _, c in batch],
                                           max_len=self.max_len, warn=False)

    def finish_bundle(self) -> Iterator[Any]:
        yield from self.spill.finish()


def _record_key(seed: int, record: Mapping[str, Any]) -> int:
    return _hash(seed, "record", record["group_id"], record["kind"], record["response"])


def _write_one_shard(item: tuple[tuple[str, int], Iterable[str | None]], *, output: str,
                     num_shards: Mapping[str, int]) -> dict[str, Any]:
    """Reads a shard's spill files back, puts the records in key order and writes the shard; one shard's
    records are all a worker holds here."""
    (split, index), values = item
    paths = sorted(p for p in values if p is not None)
    recs = [Written(*r) for r in _read_spill(paths)]
    recs.sort(key=lambda r: (r.key, r.example))
    path = os.path.join(output, shards.shard_name(split, index, num_shards[split]))
    stats = shards.write_shard(path, (r.example for r in recs))
    stats.update(split=split, **_counts(recs))
    log.info("wrote %s: %d records", stats["file"], stats["records"])
    return stats


def _counts(recs: Sequence[Written]) -> dict[str, Any]:
    by_task: collections.Counter = collections.Counter(r.task for r in recs)
    by_kind: collections.Counter = collections.Counter(r.kind for r in recs)
    hist = [0] * HISTOGRAM_BINS
    for r in recs:
        hist[min(int(r.label * HISTOGRAM_BINS), HISTOGRAM_BINS - 1)] += 1
    return {"tasks": dict(by_task), "kinds": dict(by_kind), "label_histogram": hist,
            "truncated": sum(r.truncated for r in recs),
            "tokens": sum(r.tokens for r in recs)}


def merge_manifest(shard_stats: Sequence[Mapping[str, Any]], *, meta: Mapping[str, Any],
                   groups: Iterable[Mapping[str, int]], no_tokens: Iterable[tuple[str, int]] = ()) -> dict[str, Any]:
    """Adds per-shard counts up into the manifest. `groups`: each task's example groups per split, counted
    where the candidates are made (a group's records spread over every shard, so per-shard lists of groups
    would cost a build's whole group list once per shard). `no_tokens`: (split, pairs) left out because the
    tokenizer kept nothing of their instruction or response."""
    group_counts: collections.Counter = collections.Counter()
    for one in groups:
        group_counts.update(one)
    dropped: collections.Counter = collections.Counter()
    for split, n in no_tokens:
        dropped[split] += n
    splits: dict[str, Any] = {}
    for st in sorted(shard_stats, key=lambda s: s["file"]):
        sp = splits.setdefault(st["split"], {"records": 0, "tokens": 0, "truncated": 0,
                                             "no_tokens": dropped[st["split"]], "tasks": {}, "kinds": {},
                                             "label_histogram": [0] * HISTOGRAM_BINS,
                                             "groups": group_counts[st["split"]], "shards": []})
        sp["records"] += st["records"]
        sp["tokens"] += st["tokens"]
        sp["truncated"] += st["truncated"]
        for field in ("tasks", "kinds"):
            for k, v in st[field].items():
                sp[field][k] = sp[field].get(k, 0) + v
        sp["label_histogram"] = [a + b for a, b in zip(sp["label_histogram"], st["label_histogram"])]
        sp["shards"].append({"file": st["file"], "records": st["records"], "sha256": st["sha256"]})
    for sp in splits.values():
        sp["tasks"] = dict(sorted(sp["tasks"].items()))
        sp["kinds"] = dict(sorted(sp["kinds"].items()))
    return {**meta, "splits": {s: splits[s] for s in SPLITS if s in splits}}


def check_tasks_within_units(task_units: Iterable[tuple[str, str]]) -> None:
    """A build that makes candidates unit by unit needs each task whole in one unit (negatives come from
    the task's other examples); `read.tasks_within_units` promises it for the source, this checks it."""
    seen: dict[str, str] = {}
    for task, unit in sorted(task_units):
        if seen.setdefault(task, unit) != unit:
            raise ValueError(f"task {task!r} has examples in two work units ({seen[task]!r} and {unit!r}), so its "
                             f"candidates were made apart: a bug in cappy_jax.data.read; no manifest was written")


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
        if name == SPILL_DIR:
            tf.io.gfile.rmtree(path)
        elif ".tmp" in name or name == MANIFEST or (name.endswith(".tfrecord") and name not in wanted):
            tf.io.gfile.remove(path)
    tf.io.gfile.makedirs(os.path.join(output, SPILL_DIR))


def shard_counts(output_config: Mapping[str, Any], *, has_heldout: bool) -> dict[str, int]:
    """Training data gets `num_shards`; the smaller evaluation splits `eval_shards`."""
    counts = {"train": int(output_config["num_shards"]), "validation": int(output_config["eval_shards"])}
    if has_heldout:
        counts["heldout"] = int(output_config["eval_shards"])
    return counts


def tokenizer_source(scorer_dir: str) -> str:
    """A scorer directory's tokenizer/, or any directory holding tokenizer.json (an HF model dir)."""
    if not scorer_dir:
        raise ValueError("no tokenizer: set --config.output.scorer_dir to a scorer directory "
                         "(`python -m cappy_jax.convert from-hf ...`) or an HF directory with tokenizer.json")
    nested = os.path.join(scorer_dir, "tokenizer")
    return nested if tf.io.gfile.exists(os.path.join(nested, "tokenizer.json")) else scorer_dir


def build(config: Any, output: str, *, pipeline_options: Sequence[str] = ()) -> dict[str, Any]:
    """Runs the Beam pipeline for a data config (`configs/data/*.py`); returns the manifest."""
    from apache_beam.options.pipeline_options import PipelineOptions

    from cappy_jax.checkpoint import copy_tokenizer
    from cappy_jax.data import llm, read

    cfg = config.to_dict() if hasattr(config, "to_dict") else dict(config)
    llm.backend_kwargs(cfg["llm"], allow_none=True)  # a backend the config cannot build fails here, not in a worker
    llm.recipe_named(cfg["llm"]["recipe"])
    out_cfg = cfg["output"]
    if float(out_cfg["spill_mb"]) < 0 or int(out_cfg["task_buckets"]) < 1:
        raise ValueError(f"output.spill_mb must be >= 0 (got {out_cfg['spill_mb']}) and output.task_buckets >= 1 "
                         f"(got {out_cfg['task_buckets']}): they bound what a build worker holds in memory")
    seed, max_len = int(out_cfg["seed"]), int(out_cfg["max_len"])
    units = read.work_units(cfg)
    if not units:
        raise ValueError("the data config selects no tasks, files or templates")
    num_shards = shard_counts(out_cfg, has_heldout=any(u.heldout for u in units))
    _prepare_output(output, num_shards)
    tokenizer_out = os.path.join(output, "tokenizer")
    copy_tokenizer(tokenizer_source(out_cfg["scorer_dir"]), tokenizer_out)
    log.info("building %d work units into %s (shards %s)", len(units), output, num_shards)
    # Where every task lies inside one unit, a unit's reader makes (and samples) its candidates: no shuffle
    # holds the examples (2.6 M of them for every BIG-bench task: 11 GB in Beam's local runners).
    by_unit = read.tasks_within_units(cfg)
    options = PipelineOptions(beam_options(cfg["beam"], pipeline_options))
    slots = [((s, i), None) for s, n in num_shards.items() for i in range(n)]
    meta = _meta(cfg, output, num_shards)
    spill_dir = os.path.join(output, SPILL_DIR)
    tokenize = _Tokenize(tokenizer_out, max_len, seed, num_shards, spill_dir, float(out_cfg["spill_mb"]))
    with beam.Pipeline(options=options) as p:
        units_in = p | "Units" >> beam.Create(units) | "Reshuffle" >> beam.Reshuffle()
        if by_unit:
            made = units_in | "Candidates" >> beam.ParDo(_Candidates(cfg, by_unit=True)).with_outputs(
                "stats", "task_units", "groups", main="main")
            stats, task_units = made.stats, made.task_units
        else:
            read_out = units_in | "Read" >> beam.FlatMap(_examples_by_task, cfg=cfg).with_outputs("stats", main="main")
            made = (read_out.main
                    | "SpillTasks" >> beam.ParDo(_SpillTasks(spill_dir, float(out_cfg["spill_mb"]),
                                                             int(out_cfg["task_buckets"])))
                    | "GroupTasks" >> beam.GroupByKey()
                    | "Candidates" >> beam.ParDo(_Candidates(cfg, by_unit=False)).with_outputs("groups", main="main"))
            stats, task_units = read_out.stats, p | "NoTaskUnits" >> beam.Create([])
        tokenized = (made.main
                     | "Batch" >> beam.BatchElements(min_batch_size=64, max_batch_size=1024)
                     | "Tokenize" >> beam.ParDo(tokenize).with_outputs("no_tokens", main="spilled"))
        spilled = tokenized.spilled
        # Every shard slot gets an entry, so an empty shard is still written.
        empty = p | "Slots" >> beam.Create(slots)
        shard_stats = ((spilled, empty)
                       | beam.Flatten()
                       | "GroupShards" >> beam.GroupByKey()
                       | "Write" >> beam.Map(_write_one_shard, output=output, num_shards=num_shards)
                       | "AllShards" >> beam.combiners.ToList())
        source_stats = stats | "AllSources" >> beam.combiners.ToList()
        group_counts = made.groups | "AllGroups" >> beam.combiners.ToList()
        task_units = task_units | "AllTaskUnits" >> beam.combiners.ToList()
        no_tokens = tokenized.no_tokens | "AllNoTokens" >> beam.combiners.ToList()

        def manifest(st: list, src: list, grp: list, tu: list, nt: list) -> None:
            check_tasks_within_units(tu)
            _write_manifest(merge_manifest(st, meta={**meta, "sources": read.merge_stats(src)}, groups=grp,
                                           no_tokens=nt), output)

        _ = (shard_stats
             | "Manifest" >> beam.Map(manifest, src=beam.pvalue.AsSingleton(source_stats),
                                      grp=beam.pvalue.AsSingleton(group_counts),
                                      tu=beam.pvalue.AsSingleton(task_units),
                                      nt=beam.pvalue.AsSingleton(no_tokens)))
    tf.io.gfile.rmtree(spill_dir)  # what retried bundles spilled, if any
    with tf.io.gfile.GFile(os.path.join(output, MANIFEST)) as f:
        return json.load(f)


# Knobs of a data config that change how a build runs, not the shards it writes.
HOW_NOT_WHAT = (("beam",), ("output", "spill_mb"), ("output", "task_buckets"), ("llm", "hf", "cache_dir"),
                ("llm", "openai", "cache_dir"))


def what_shards_depend_on(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """A data config (plain dict) without `HOW_NOT_WHAT`: what decides whether shards built before still hold
    (the demo's stage fingerprint)."""
    out = copy.deepcopy(dict(cfg))
    for *parents, name in HOW_NOT_WHAT:
        node = out
        for key in parents:
            node = node[key]
        del node[name]
    return out


def beam_options(defaults: Mapping[str, Any], command_line: Sequence[str] = ()) -> list[str]:
    """The config's Beam options (`configs/data/common.py:beam`), then the command line's, which win."""
    return [f"--{k}={v}" for k, v in defaults.items()] + list(command_line)


def _meta(cfg: Mapping[str, Any], output: str, num_shards: Mapping[str, int]) -> dict[str, Any]:
    with tf.io.gfile.GFile(os.path.join(output, "tokenizer", "tokenizer.json"), "rb") as f:
        tok_sha = hashlib.sha256(f.read()).hexdigest()
    return {
        "format": "cappy_jax.shards/1",
        "config": cfg,
        "tokenizer": {"dir": "tokenizer", "sha256": tok_sha},
        "max_len": int(cfg["output"]["max_len"]),
        "seed": int(cfg["output"]["seed"]),
        "num_shards": dict(num_shards),
    }


def main(argv: Sequence[str]) -> None:
    from absl import flags

    from cappy_jax.cli import quiet_logging

    quiet_logging()
    f = flags.FLAGS
    try:
        manifest = build(f.config, f.output, pipeline_options=list(argv[1:]))
    except FileNotFoundError as e:  # sources or tokenizer not where the config says: the message says what to fetch
        raise SystemExit(f"error: {e}") from None
    for split, sp in manifest["splits"].items():
        log.info("%-10s %8d records, %6d groups, %4d tasks, %d truncated, %d left out without tokens, kinds %s",
                 split, sp["records"], sp["groups"], len(sp["tasks"]), sp["truncated"], sp["no_tokens"], sp["kinds"])
    log.info("sources: %s", manifest["sources"])
    log.info("wrote %s", os.path.join(f.output, MANIFEST))


def run() -> None:
    """absl parses our flags; whatever it does not know is a Beam pipeline option."""
    import sys

    from absl import flags
    from ml_collections import config_flags

    config_flags.DEFINE_config_file("config", None, "A data config, e.g. configs/data/bigbench.py:default.",
                                    lock_config=True)
    flags.DEFINE_string("output", None, "Output directory (local or gs://).")
    flags.mark_flags_as_required(["config", "output"])
    main(flags.FLAGS(sys.argv, known_only=True))


if __name__ == "__main__":
    # Run the module under its import name, not as __main__: Beam pickles records such as `Written` by
    # reference to their module, which worker processes (multi_processing, Dataflow) import by that name.
    from cappy_jax.data import build as build_module

    build_module.run()
