"""Shard files: the tf.train.Example schema of one candidate, naming, atomic writes, reading back.

A shard is `DIR/{split}-NNNNN-of-MMMMM.tfrecord`; each record is one labelled
(instruction, response) pair, tokenized for the target checkpoint.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import tensorflow as tf

FEATURES = {
    "input_ids": tf.io.RaggedFeature(tf.int64),
    "token_type_ids": tf.io.RaggedFeature(tf.int64),
    "label": tf.io.FixedLenFeature([], tf.float32),
    "task": tf.io.FixedLenFeature([], tf.string),
    "group_id": tf.io.FixedLenFeature([], tf.string),
    "kind": tf.io.FixedLenFeature([], tf.string),
    "instruction": tf.io.FixedLenFeature([], tf.string),
    "response": tf.io.FixedLenFeature([], tf.string),
}
TEXT_FIELDS = ("task", "group_id", "kind", "instruction", "response")


def shard_name(split: str, index: int, count: int) -> str:
    return f"{split}-{index:05d}-of-{count:05d}.tfrecord"


def serialize(record: Mapping[str, Any]) -> bytes:
    """One record (token ids, label, texts) as a serialized tf.train.Example."""
    ints = lambda v: tf.train.Feature(int64_list=tf.train.Int64List(value=[int(x) for x in v]))
    text = lambda v: tf.train.Feature(bytes_list=tf.train.BytesList(value=[v.encode("utf-8")]))
    feature = {
        "input_ids": ints(record["input_ids"]),
        "token_type_ids": ints(record["token_type_ids"]),
        "label": tf.train.Feature(float_list=tf.train.FloatList(value=[float(record["label"])])),
        **{k: text(record[k]) for k in TEXT_FIELDS},
    }
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString(deterministic=True)


def write_shard(path: str, records: Iterable[bytes]) -> dict[str, Any]:
    """Writes a shard atomically (temp file + rename): a crash leaves the old file or none, never half.

    Returns the shard's record count and sha256, for the manifest.
    """
    tmp = f"{path}.tmp-{uuid.uuid4().hex}"
    digest, count = hashlib.sha256(), 0
    with tf.io.TFRecordWriter(tmp) as writer:
        for rec in records:
            writer.write(rec)
            count += 1
    with tf.io.gfile.GFile(tmp, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    tf.io.gfile.rename(tmp, path, overwrite=True)
    return {"file": os.path.basename(path), "records": count, "sha256": digest.hexdigest()}


def shard_files(data_dir: str, split: str) -> list[str]:
    """The split's shard files, sorted, checked against their `-of-MMMMM` count."""
    files = sorted(tf.io.gfile.glob(os.path.join(data_dir, f"{split}-*-of-*.tfrecord")))
    if not files:
        present = sorted({os.path.basename(f).split("-")[0]
                          for f in tf.io.gfile.glob(os.path.join(data_dir, "*.tfrecord"))})
        raise FileNotFoundError(f"no {split} shards in {data_dir} (splits present: {present or 'none'}); "
                                "build them with `python -m cappy_jax.data.build`")
    expected = int(files[0].rsplit("-of-", 1)[1].split(".")[0])
    if len(files) != expected:
        raise FileNotFoundError(f"{data_dir} holds {len(files)} of the {expected} {split} shards: "
                                "an interrupted build? re-run `python -m cappy_jax.data.build`")
    return files


RECORD_FIELDS = ("label", "length", *TEXT_FIELDS)
_PARSE_BATCH = 4096  # records parsed at a time: one parse call a batch, not a Python step a record


def read_records(files: Sequence[str], fields: Sequence[str] = RECORD_FIELDS) -> dict[str, Any]:
    """Every record's `fields` (label, length, texts) in file order (what the pipeline's `pair_index` points
    at). Training's evaluation reads only label, task and group_id: the texts of a big validation split
    (BIG-bench's, 403k pairs) cost more time and memory than all the rest.

    A corrupt or truncated shard raises an error naming the file.
    """
    unknown = set(fields) - set(RECORD_FIELDS)
    if unknown:
        raise ValueError(f"unknown record fields {sorted(unknown)}; choose from {RECORD_FIELDS}")
    spec = {k: FEATURES[k] for k in fields if k != "length"}
    if "length" in fields:
        spec["input_ids"] = FEATURES["input_ids"]

    def parse(serialized: tf.Tensor) -> dict[str, tf.Tensor]:
        parsed = tf.io.parse_example(serialized, spec)
        if "length" in fields:
            parsed["length"] = parsed.pop("input_ids").row_lengths()
        return parsed

    out: dict[str, list] = {k: [] for k in fields}
    for path in files:
        ds = tf.data.TFRecordDataset([path]).batch(_PARSE_BATCH).map(parse)
        try:
            for batch in ds.as_numpy_iterator():
                for k in fields:
                    out[k].extend(batch[k].tolist() if k in ("label", "length")
                                  else (v.decode("utf-8") for v in batch[k]))
        except (tf.errors.DataLossError, tf.errors.InvalidArgumentError) as e:
            raise ValueError(f"{path} is unreadable after {len(out[fields[0]])} records in all "
                             f"({type(e).__name__}: {e.message.splitlines()[0]}); rebuild the shards") from e
    return {k: np.asarray(v) if k in ("label", "length") else v for k, v in out.items()}
