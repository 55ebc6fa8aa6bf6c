"""tf.data: packing correctness, every pair once, per-host disjoint shards, resumable iterator."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from cappy_jax.data import pipeline, shards


def write_fake_shards(directory, *, num_shards=4, per_shard=60, max_len=64, seed=0, split="train"):
    """Records whose label encodes their index (label = index / total) and whose tokens are all index + 3."""
    rng = np.random.default_rng(seed)
    total = num_shards * per_shard
    lengths = np.minimum(rng.geometric(1 / 15, total) + 2, max_len)
    for s in range(num_shards):
        recs = []
        for i in range(s * per_shard, (s + 1) * per_shard):
            n = int(lengths[i])
            recs.append(shards.serialize(dict(input_ids=np.full(n, i + 3), token_type_ids=np.zeros(n, int),
                                              label=i / total, task=f"task{i % 3}", group_id=f"g{i // 4}",
                                              kind="reference", instruction=f"q{i}", response=f"r{i}")))
        shards.write_shard(str(directory / shards.shard_name(split, s, num_shards)), recs)
    return lengths


def check_rows(batch, max_len):
    """Segments are contiguous, positions restart, cls_index points at each segment's first token."""
    for r in range(batch["segment_ids"].shape[0]):
        seg = batch["segment_ids"][r]
        used = int((seg > 0).sum())
        assert np.all(seg[:used] > 0) and np.all(seg[used:] == 0), "segments must be a contiguous prefix"
        for s in range(batch["cls_index"].shape[1]):
            if batch["label_mask"][r, s] == 0:
                assert batch["pair_index"][r, s] == -1
                continue
            cols = np.flatnonzero(seg == s + 1)
            assert cols.size and cols[0] == batch["cls_index"][r, s] and np.all(np.diff(cols) == 1)
            np.testing.assert_array_equal(batch["position_ids"][r, cols], np.arange(cols.size))
            assert len(set(batch["input_ids"][r, cols].tolist())) == 1  # one record's tokens, whole
        assert np.all(batch["input_ids"][r, used:] == 1)  # pad id


def test_eval_stream_holds_every_pair_once_and_pads_the_last_batch(tmp_path):
    lengths = write_fake_shards(tmp_path)
    files = shards.shard_files(str(tmp_path), "train")
    config = pipeline.PipelineConfig(rows=8, max_len=64, max_segments=6, repeat=False)
    batches = list(pipeline.InputPipeline(files, config, pad_id=1))
    assert all(b["segment_ids"].shape == (8, 64) for b in batches)
    for b in batches:
        check_rows(b, 64)
    slots = np.concatenate([b["pair_index"].ravel() for b in batches])
    slots = slots[slots >= 0]
    assert sorted(slots.tolist()) == list(range(240)), "every record exactly once"
    meta = shards.read_records(files)
    # pair_index joins a slot with its record: same length, same label.
    for b in batches:
        for r, s in zip(*np.nonzero(b["label_mask"])):
            i = b["pair_index"][r, s]
            assert (b["segment_ids"][r] == s + 1).sum() == meta["length"][i] == lengths[i]
            assert b["labels"][r, s] == pytest.approx(meta["label"][i])
    assert batches[-1]["label_mask"][-1].sum() == 0, "last batch padded with empty rows"
    assert pipeline.packing_efficiency(batches[:-1]) > 0.8


def test_streams_are_autotuned_only_when_training_asks(tmp_path):
    # Deleting an autotuned iterator can stall for up to a minute; training deletes its evaluation
    # stream after every pass (mid-pass on a preemption notice, before it saves).
    write_fake_shards(tmp_path)
    files = shards.shard_files(str(tmp_path), "train")
    tuned = {(repeat, autotune): pipeline.make_dataset(files, pipeline.PipelineConfig(
        rows=4, max_len=64, repeat=repeat, autotune=autotune), pad_id=1).options().autotune.enabled
        for repeat in (True, False) for autotune in (True, False)}
    assert tuned == {(True, True): None, (True, False): False, (False, True): False, (False, False): False}


def test_state_of_another_pipeline_is_refused_with_what_to_set(tmp_path):
    write_fake_shards(tmp_path)
    files = shards.shard_files(str(tmp_path), "train")
    config = pipeline.PipelineConfig(rows=4, max_len=64, max_segments=4, shuffle_buffer=30, autotune=True)
    a = pipeline.InputPipeline(files, config, pad_id=1)
    next(a)
    a.save(str(tmp_path / "iter" / "state"))
    b = pipeline.InputPipeline(files, dataclasses.replace(config, autotune=False), pad_id=1)
    with pytest.raises(ValueError, match="--config.data.autotune=True"):
        b.restore(str(tmp_path / "iter" / "state"))
    c = pipeline.InputPipeline(files, config, pad_id=1)
    c.restore(str(tmp_path / "iter" / "state"))
    np.testing.assert_array_equal(next(c)["input_ids"], next(a)["input_ids"])


def test_training_stream_covers_an_epoch_without_duplicates(tmp_path):
    write_fake_shards(tmp_path)
    files = shards.shard_files(str(tmp_path), "train")
    config = pipeline.PipelineConfig(rows=4, max_len=64, max_segments=4, shuffle_buffer=50, seed=3)
    it = pipeline.InputPipeline(files, config, pad_id=1)
    first = [next(it) for _ in range(10)]
    ids = np.concatenate([b["input_ids"][b["segment_ids"] > 0] for b in first])
    # Tokens are record index + 3, so each record shows up as a run of identical ids: collect record indices.
    seen = [int(b["labels"][r, s] * 240 + 0.5) for b in first for r, s in zip(*np.nonzero(b["label_mask"]))]
    assert len(seen) == len(set(seen)), "no record twice within the first epoch"
    assert ids.size > 0
    for b in first:
        check_rows(b, 64)
    # Shuffled: not in file order.
    assert seen != sorted(seen)


def test_iterator_resumes_on_exactly_the_next_batch(tmp_path):
    write_fake_shards(tmp_path)
    files = shards.shard_files(str(tmp_path), "train")
    config = pipeline.PipelineConfig(rows=4, max_len=64, max_segments=4, shuffle_buffer=30, seed=1)
    a = pipeline.InputPipeline(files, config, pad_id=1)
    for _ in range(5):
        next(a)
    a.save(str(tmp_path / "iter" / "state"))
    expected = [next(a) for _ in range(6)]
    b = pipeline.InputPipeline(files, config, pad_id=1)
    b.restore(str(tmp_path / "iter" / "state"))
    for want in expected:
        got = next(b)
        for k in want:
            np.testing.assert_array_equal(got[k], want[k])


def test_reader_group_resumes_every_reader_and_names_a_bad_state(tmp_path):
    write_fake_shards(tmp_path, num_shards=4, per_shard=60)
    files = shards.shard_files(str(tmp_path), "train")
    config = pipeline.PipelineConfig(rows=2, max_len=64, max_segments=4, shuffle_buffer=20, seed=5)
    prefix = lambda r: str(tmp_path / "state" / f"reader_{r}")
    a = pipeline.ReaderGroup(files, range(4), 4, config, pad_id=1)
    for _ in range(3):
        next(a)
    a.save(prefix)  # the readers write side by side
    expected = [next(a) for _ in range(4)]
    b = pipeline.ReaderGroup(files, range(4), 4, config, pad_id=1)
    b.restore(prefix)
    for want in expected:
        got = next(b)
        for k in want:
            np.testing.assert_array_equal(got[k], want[k])
    other = pipeline.ReaderGroup(files, range(4), 4, dataclasses.replace(config, autotune=True), pad_id=1)
    with pytest.raises(ValueError, match="saved by another pipeline"):
        other.restore(prefix)


@pytest.mark.parametrize("hosts", [2, 4])
def test_hosts_read_disjoint_shards(tmp_path, hosts):
    write_fake_shards(tmp_path, num_shards=8, per_shard=10)
    files = shards.shard_files(str(tmp_path), "train")
    parts = [pipeline.host_files(files, i, hosts) for i in range(hosts)]
    assert sorted(f for p in parts for f in p) == files
    assert all(set(p).isdisjoint(q) for i, p in enumerate(parts) for q in parts[i + 1:])
    config = pipeline.PipelineConfig(rows=4, max_len=64, max_segments=4, repeat=False)
    labels = [set(np.round(np.concatenate([b["labels"][b["label_mask"] > 0]
                                           for b in pipeline.InputPipeline(p, config, pad_id=1)]) * 80).astype(int))
              for p in parts]
    assert sum(len(x) for x in labels) == 80 and set().union(*labels) == set(range(80))
    with pytest.raises(ValueError, match="8 shards cannot feed 16 hosts"):
        pipeline.host_files(files, 0, 16)
    assert pipeline.host_files(files, 9, 16, allow_empty=True) == []


def test_bad_shards_and_records_are_named(tmp_path):
    write_fake_shards(tmp_path, num_shards=2, per_shard=20, max_len=64)
    files = shards.shard_files(str(tmp_path), "train")
    config = pipeline.PipelineConfig(rows=4, max_len=16, max_segments=2, repeat=False)
    with pytest.raises(Exception, match="more than the pipeline max_len=16"):
        list(pipeline.InputPipeline(files, config, pad_id=1))
    data = open(files[1], "rb").read()
    with open(files[1], "wb") as f:
        f.write(data[: len(data) // 2])
    with pytest.raises(ValueError, match="train-00001-of-00002.tfrecord is unreadable"):
        shards.read_records(files)
    (tmp_path / "train-00001-of-00002.tfrecord").unlink()
    with pytest.raises(FileNotFoundError, match="holds 1 of the 2 train shards"):
        shards.shard_files(str(tmp_path), "train")
    with pytest.raises(FileNotFoundError, match="no validation shards"):
        shards.shard_files(str(tmp_path), "validation")
