"""tf.data from materialized shards to packed numpy batches (the format of `cappy_jax/packing.py`).

Training reads through a fixed number of *readers* (`data.readers` of the training config), each
an independent stream with its own shards (`files[r::readers]`; with fewer files than readers,
every reader reads all files and keeps every readers-th record), its own shuffle and its own
saved position. A host runs `readers / process_count` of them and concatenates their batches, so
the global batch is the same whatever the number of hosts, and a run resumes on another number
of hosts (each reader's state is saved under its own name). Per reader: interleave
and shuffle records, pack them greedily into `[rows, max_len]` rows inside the
tf.data graph, batch, prefetch. Packing is a `Dataset.scan` over `open_rows`
open rows (first fit; when nothing fits, the fullest row is emitted), so the
whole pipeline, shuffle buffer and half-filled rows included, is a tf.data
iterator that `tf.train.Checkpoint` saves and restores: training resumes on
exactly the next batch. Streams are not autotuned unless asked (`_without_autotune`): deleting
one is then instant.

Evaluation streams (`repeat=False`) lose nothing: the open rows are flushed at
the end and the last batch is padded with empty rows (`label_mask` 0).
`pair_index` holds the position of each record in the host's (unshuffled)
stream, so evaluation can join scores with `shards.read_records` of the same files.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import tensorflow as tf

from cappy_jax.data import shards

@dataclasses.dataclass(frozen=True)
class PipelineConfig:
    """How one host turns shards into batches."""

    rows: int                 # rows per batch on this host
    max_len: int              # tokens per row
    max_segments: int = 1     # pairs per row at most (1 = no packing)
    open_rows: int = 8        # rows filled at once; more packs tighter, each step costs a little more
    shuffle_buffer: int = 10_000
    repeat: bool = True       # training streams repeat (epochs reshuffled); evaluation streams end
    seed: int = 0
    prefetch: int = 2
    autotune: bool = False    # tf.data autotuning of a training stream (never an evaluation stream's)
    record_shard: tuple[int, int] = (1, 0)  # (count, index): keep every count-th record from index

    def __post_init__(self) -> None:
        if min(self.rows, self.max_len, self.max_segments, self.open_rows) <= 0:
            raise ValueError(f"rows, max_len, max_segments and open_rows must be positive: {self}")
        count, index = self.record_shard
        if not 0 <= index < count:
            raise ValueError(f"record_shard {self.record_shard}: need 0 <= index < count")


def host_files(files: Sequence[str], process_index: int, process_count: int, *,
               allow_empty: bool = False) -> list[str]:
    """Disjoint shards per host, round-robin; every host gets at least one unless `allow_empty`
    (evaluation: a host without files feeds empty rows while the others score theirs)."""
    if len(files) < process_count and not allow_empty:
        raise ValueError(f"{len(files)} shards cannot feed {process_count} hosts: "
                         f"rebuild with at least {process_count} shards per split")
    return list(files[process_index::process_count])


def reader_files(files: Sequence[str], reader: int, readers: int) -> tuple[list[str], tuple[int, int]]:
    """(files, record_shard) of one reader: its own files, or all files and every readers-th record."""
    if not 0 <= reader < readers:
        raise ValueError(f"reader {reader} is outside 0..{readers - 1}")
    if len(files) >= readers:
        return list(files[reader::readers]), (1, 0)
    return list(files), (readers, reader)


def host_readers(readers: int, process_index: int, process_count: int) -> list[int]:
    """The readers a host runs: a contiguous block, so hosts in order hold readers in order."""
    if readers % process_count:
        raise ValueError(f"data.readers={readers} must be a multiple of the {process_count} processes "
                         f"(each host runs the same number of readers)")
    per_host = readers // process_count
    return list(range(process_index * per_host, (process_index + 1) * per_host))


def _parse(serialized: tf.Tensor) -> dict[str, tf.Tensor]:
    ex = tf.io.parse_single_example(serialized, shards.FEATURES)
    return {
        "input_ids": tf.cast(ex["input_ids"], tf.int32),
        "token_type_ids": tf.cast(ex["token_type_ids"], tf.int32),
        "label": ex["label"],
    }


def _empty_state(k: int, length: int, segments: int) -> dict[str, tf.Tensor]:
    zi = lambda *s: tf.zeros(s, tf.int32)
    return {
        "input_ids": zi(k, length), "token_type_ids": zi(k, length), "segment_ids": zi(k, length),
        "position_ids": zi(k, length), "cls_index": zi(k, segments),
        "labels": tf.zeros((k, segments), tf.float32), "label_mask": tf.zeros((k, segments), tf.float32),
        "pair_index": tf.fill((k, segments), -1), "ntok": zi(k), "nseg": zi(k),
    }


def pack(ds: tf.data.Dataset, *, max_len: int, max_segments: int, open_rows: int, pad_id: int,
         flush: bool) -> tf.data.Dataset:
    """Packs `{input_ids, token_type_ids, label, pair_index}` records into rows, inside the graph.

    With `flush`, `open_rows` sentinel records appended to the stream push the
    last open rows out, so a finite stream loses nothing.
    """
    k, length, segments = open_rows, max_len, max_segments
    sentinel = {"input_ids": tf.zeros([length + 1], tf.int32), "token_type_ids": tf.zeros([length + 1], tf.int32),
                "label": tf.constant(0.0), "pair_index": tf.constant(-1)}
    if flush:
        ds = ds.concatenate(tf.data.Dataset.from_tensors(sentinel).repeat(k))

    def step(state: dict[str, tf.Tensor], rec: dict[str, tf.Tensor]):
        n = tf.shape(rec["input_ids"])[0]
        is_sentinel = rec["pair_index"] < 0
        check = tf.debugging.Assert(is_sentinel | (n <= length),
                                    ["a record has", n, f"tokens, more than the pipeline max_len={length}: build "
                                     f"shards with max_len <= {length} or raise the pipeline max_len"])
        with tf.control_dependencies([check]):
            n = tf.identity(n)
        fits = (state["ntok"] + n <= length) & (state["nseg"] < segments)
        any_fit = tf.reduce_any(fits)
        row = tf.where(any_fit, tf.argmax(tf.cast(fits, tf.int32), output_type=tf.int32),
                       tf.argmax(state["ntok"], output_type=tf.int32))
        emit = tf.logical_not(any_fit)
        out = {key: value[row] for key, value in state.items()}
        empty = _empty_state(1, length, segments)
        # Reset the emitted row, then (unless a sentinel) append the record to the chosen row.
        state = {key: tf.tensor_scatter_nd_update(value, [[row]], tf.where(emit, empty[key], value[row:row + 1]))
                 for key, value in state.items()}

        def append(st: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
            start, seg = st["ntok"][row], st["nseg"][row]
            cols = start + tf.range(n)
            idx = tf.stack([tf.fill([n], row), cols], axis=1)
            slot = [[row, seg]]
            st = dict(st)
            st["input_ids"] = tf.tensor_scatter_nd_update(st["input_ids"], idx, rec["input_ids"])
            st["token_type_ids"] = tf.tensor_scatter_nd_update(st["token_type_ids"], idx, rec["token_type_ids"])
            st["segment_ids"] = tf.tensor_scatter_nd_update(st["segment_ids"], idx, tf.fill([n], seg + 1))
            st["position_ids"] = tf.tensor_scatter_nd_update(st["position_ids"], idx, tf.range(n))
            st["cls_index"] = tf.tensor_scatter_nd_update(st["cls_index"], slot, [start])
            st["labels"] = tf.tensor_scatter_nd_update(st["labels"], slot, [rec["label"]])
            st["label_mask"] = tf.tensor_scatter_nd_update(st["label_mask"], slot, [1.0])
            st["pair_index"] = tf.tensor_scatter_nd_update(st["pair_index"], slot, [rec["pair_index"]])
            st["ntok"] = tf.tensor_scatter_nd_add(st["ntok"], [[row]], [n])
            st["nseg"] = tf.tensor_scatter_nd_add(st["nseg"], [[row]], [1])
            return st

        state = tf.cond(is_sentinel, lambda: state, lambda: append(state))
        return state, (out, emit & (out["ntok"] > 0))

    packed = ds.scan(_empty_state(k, length, segments), step).filter(lambda row, emit: emit)

    def finish(row: dict[str, tf.Tensor], emit: tf.Tensor) -> dict[str, tf.Tensor]:
        del emit
        row = {key: v for key, v in row.items() if key not in ("ntok", "nseg")}
        # Padding tokens carry the tokenizer's pad id (segment 0 marks them either way).
        row["input_ids"] = tf.where(row["segment_ids"] > 0, row["input_ids"], pad_id)
        return row

    return packed.map(finish, num_parallel_calls=tf.data.AUTOTUNE)


def make_dataset(files: Sequence[str], config: PipelineConfig, *, pad_id: int) -> tf.data.Dataset:
    """Packed batches from `files` (already this host's share)."""
    if not files:
        raise ValueError("make_dataset got no files")
    if config.repeat:
        ds = tf.data.Dataset.from_tensor_slices(list(files))
        ds = ds.shuffle(len(files), seed=config.seed, reshuffle_each_iteration=True).repeat()
        ds = ds.interleave(tf.data.TFRecordDataset, cycle_length=min(len(files), 8), block_length=16,
                           num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    else:
        # File order, so that pair_index matches `shards.read_records(files)`.
        ds = tf.data.TFRecordDataset(list(files))
    count, index = config.record_shard
    if count > 1:  # every reader sees the same file order (same seed), then keeps its own records
        ds = ds.shard(count, index)
    ds = ds.map(_parse, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.enumerate().map(lambda i, r: {**r, "pair_index": tf.cast(i, tf.int32)})
    if config.repeat and config.shuffle_buffer > 1:
        ds = ds.shuffle(config.shuffle_buffer, seed=config.seed + index, reshuffle_each_iteration=True)
    ds = pack(ds, max_len=config.max_len, max_segments=config.max_segments, open_rows=config.open_rows,
              pad_id=pad_id, flush=not config.repeat)
    ds = ds.batch(config.rows, drop_remainder=config.repeat)
    if not config.repeat:
        ds = ds.map(lambda b: _pad_rows(b, config.rows, pad_id))
    ds = ds.prefetch(config.prefetch)
    return ds if config.repeat and config.autotune else ds.with_options(_without_autotune())


def _without_autotune() -> tf.data.Options:
    """Streams run without tf.data's autotuning by default, because deleting an autotuned iterator
    can stall for up to a minute: it waits for its tuning thread, which now and then takes that long
    to end (TF 2.21, measured with and without signals). Training deletes its evaluation stream after
    every pass (mid-pass on a preemption notice, just before the checkpoint must be written) and its
    readers when it ends. Without it each parallel step runs min(16, cores) calls, and a stream is as fast: the
    packing scan, which no knob parallelizes, bounds it (BENCHMARKS.md, "Deleting a tf.data iterator").
    """
    options = tf.data.Options()
    options.autotune.enabled = False
    return options


def _pad_rows(batch: dict[str, tf.Tensor], rows: int, pad_id: int) -> dict[str, tf.Tensor]:
    """Pads a short last batch with empty rows so every batch has one shape."""
    missing = rows - tf.shape(batch["segment_ids"])[0]
    fill = {"input_ids": pad_id, "pair_index": -1}
    return {k: tf.pad(v, [[0, missing]] + [[0, 0]] * (len(v.shape) - 1), constant_values=fill.get(k, 0))
            for k, v in batch.items()}


class InputPipeline:
    """A host's iterator of numpy batches whose position can be saved and restored."""

    def __init__(self, files: Sequence[str], config: PipelineConfig, *, pad_id: int):
        self.files = list(files)
        self.config = config
        self._dataset = make_dataset(self.files, config, pad_id=pad_id)
        self._iterator = iter(self._dataset)
        self._checkpoint = tf.train.Checkpoint(iterator=self._iterator)

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        try:
            batch = next(self._iterator)
        except (tf.errors.DataLossError, tf.errors.InvalidArgumentError) as e:
            raise ValueError(f"reading shards failed ({type(e).__name__}: {e.message.splitlines()[0]}); "
                             f"this host reads {self.files}: `shards.read_records` names the bad file") from e
        return {k: v.numpy() for k, v in batch.items()}

    def save(self, path: str) -> None:
        """Writes the iterator state (shuffle buffer, open rows, file positions) to `path` (a prefix)."""
        self._checkpoint.write(path)

    def restore(self, path: str) -> None:
        try:
            self._checkpoint.read(path).assert_consumed()
        except tf.errors.NotFoundError as e:  # TF names the saved iterator's layout: it differs from this one's
            raise ValueError(
                f"the data state {path} was saved by another pipeline: its max_len, max_segments, "
                f"open_rows, shuffle_buffer and autotune must be the ones of the run that wrote it (now "
                f"{self.config}); runs saved before data.autotune existed (2026-11-28) resume with "
                "--config.data.autotune=True") from e


class ReaderGroup:
    """The readers one host runs, as one iterator of host batches.

    Each reader yields `[rows_per_reader, ...]`; a host batch concatenates them so that
    micro-batch m of a `grad_accum`-way step (the loop reshapes to `[accum, rows / accum, ...]`)
    holds the m-th slice of every reader: the composition of each micro-batch does not depend
    on how readers are spread over hosts.
    """

    def __init__(self, files: Sequence[str], readers: Sequence[int], num_readers: int, config: PipelineConfig,
                 *, pad_id: int, accum: int = 1) -> None:
        if config.rows % accum:
            raise ValueError(f"{config.rows} rows per reader do not split into {accum} micro-batches")
        self.readers = list(readers)
        self.accum = accum
        self._streams = []
        for r in self.readers:
            own, record_shard = reader_files(files, r, num_readers)
            # Own files: own seed. Shared files: one file order for all, so the record shards are disjoint.
            seed = config.seed + (r if record_shard[0] == 1 else 0)
            self._streams.append(InputPipeline(own, dataclasses.replace(config, record_shard=record_shard,
                                                                        seed=seed), pad_id=pad_id))

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        parts = [next(s) for s in self._streams]
        a = self.accum
        return {k: np.concatenate([p[k].reshape(a, -1, *p[k].shape[1:]) for p in parts], axis=1).reshape(
            -1, *parts[0][k].shape[1:]) for k in parts[0]}

    def save(self, prefix: Callable[[int], str]) -> None:
        """Each reader's state under `prefix(reader)`, all at once: a preemption notice leaves seconds,
        and 16 readers' shuffle buffers took 3.0 s one after another, 2.0 s side by side on 2 cores."""
        self._each(lambda r, s: s.save(prefix(r)))

    def restore(self, prefix: Callable[[int], str]) -> None:
        self._each(lambda r, s: s.restore(prefix(r)))

    def _each(self, fn: Callable[[int, InputPipeline], None]) -> None:
        with concurrent.futures.ThreadPoolExecutor(max(len(self.readers), 1)) as pool:
            for done in [pool.submit(fn, r, s) for r, s in zip(self.readers, self._streams)]:
                done.result()  # a reader's error, raised here


def packing_efficiency(batches: Sequence[dict[str, np.ndarray]]) -> float:
    """Share of token slots that hold a pair (1.0 = no padding)."""
    used = sum(int((b["segment_ids"] > 0).sum()) for b in batches)
    total = sum(b["segment_ids"].size for b in batches)
    return used / total if total else 0.0
