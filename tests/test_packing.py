"""Packing is pure: every pair placed once, rows within bounds, and one pinned batch layout."""

from __future__ import annotations

import numpy as np
import pytest

from cappy_jax import packing


@pytest.mark.parametrize("sort", [True, False])
def test_every_pair_lands_once_within_bounds(sort):
    rng = np.random.default_rng(0)
    lengths = np.minimum(rng.geometric(1 / 60, 2000), 128)
    rows = packing.pack_lengths(lengths, max_len=128, max_segments=6, sort=sort)
    placed = sorted(i for row in rows for i in row)
    assert placed == list(range(len(lengths)))
    assert all(sum(lengths[i] for i in row) <= 128 and 1 <= len(row) <= 6 for row in rows)
    if sort:
        # Best-fit decreasing stays close to the bound of total tokens / row size.
        lower_bound = max(int(np.ceil(lengths.sum() / 128)), int(np.ceil(len(lengths) / 6)))
        assert len(rows) <= 1.05 * lower_bound + 1


def test_segment_cap_and_full_rows():
    assert packing.pack_lengths([4, 4, 4, 4], max_len=16, max_segments=2) == [[0, 1], [2, 3]]
    assert packing.pack_lengths([16, 16], max_len=16, max_segments=4) == [[0], [1]]
    # Best fit: the 6 goes where it fills a row exactly.
    assert packing.pack_lengths([10, 12, 6, 4], max_len=16, max_segments=4) == [[1, 3], [0, 2]]


def test_errors_name_the_pair():
    with pytest.raises(ValueError, match="pair 1 has 20 tokens, more than max_len=16"):
        packing.pack_lengths([3, 20], max_len=16, max_segments=2)
    with pytest.raises(ValueError, match="pair 0 is empty"):
        packing.pack_lengths([0, 3], max_len=16, max_segments=2)


def test_batch_format_is_pinned():
    """The one layout model, pipeline and scorer share (see cappy_jax/packing.py)."""
    ids = [np.array([0, 7, 2], np.int32), np.array([0, 8, 9, 2], np.int32), np.array([0, 5, 2], np.int32)]
    types = [np.zeros(3, np.int32), np.array([0, 0, 1, 1], np.int32), np.zeros(3, np.int32)]
    batch = packing.make_batch(ids, types, [[1, 0], [2]], max_len=8, max_segments=2, pad_id=1,
                               labels=[0.25, 1.0, 0.0], num_rows=3)
    assert set(batch) == set(packing.BATCH_KEYS)
    np.testing.assert_array_equal(batch["input_ids"], [[0, 8, 9, 2, 0, 7, 2, 1], [0, 5, 2, 1, 1, 1, 1, 1],
                                                       [1] * 8])
    np.testing.assert_array_equal(batch["segment_ids"], [[1, 1, 1, 1, 2, 2, 2, 0], [1, 1, 1, 0, 0, 0, 0, 0],
                                                         [0] * 8])
    np.testing.assert_array_equal(batch["position_ids"], [[0, 1, 2, 3, 0, 1, 2, 0], [0, 1, 2, 0, 0, 0, 0, 0],
                                                          [0] * 8])
    np.testing.assert_array_equal(batch["token_type_ids"][0], [0, 0, 1, 1, 0, 0, 0, 0])
    np.testing.assert_array_equal(batch["cls_index"], [[0, 4], [0, 0], [0, 0]])
    np.testing.assert_array_equal(batch["labels"], [[1.0, 0.25], [0.0, 0.0], [0.0, 0.0]])
    np.testing.assert_array_equal(batch["label_mask"], [[1, 1], [1, 0], [0, 0]])
    np.testing.assert_array_equal(batch["pair_index"], [[1, 0], [2, -1], [-1, -1]])
    assert {k: v.dtype for k, v in batch.items()} == {
        "input_ids": np.int32, "segment_ids": np.int32, "position_ids": np.int32, "token_type_ids": np.int32,
        "cls_index": np.int32, "labels": np.float32, "label_mask": np.float32, "pair_index": np.int32}
    assert packing.padding_fraction(batch) == pytest.approx(14 / 24)
    scores = np.array([[0.75, 0.25], [0.5, 7.0], [3.0, 3.0]])
    np.testing.assert_array_equal(packing.unpack_scores(scores, batch["pair_index"], 3), [0.25, 0.75, 0.5])


def test_make_batch_rejects_overfull_rows():
    ids = [np.arange(5, dtype=np.int32)] * 2
    types = [np.zeros(5, np.int32)] * 2
    with pytest.raises(ValueError, match="row 0 needs 10 tokens"):
        packing.make_batch(ids, types, [[0, 1]], max_len=8, max_segments=2, pad_id=0)
    with pytest.raises(ValueError, match="more than max_segments=1"):
        packing.make_batch(ids, types, [[0, 1]], max_len=16, max_segments=1, pad_id=0)
    with pytest.raises(ValueError, match="2 rows do not fit a batch of 1"):
        packing.make_batch(ids, types, [[0], [1]], max_len=8, max_segments=1, pad_id=0, num_rows=1)
    with pytest.raises(ValueError, match="1 pairs got no score"):
        packing.unpack_scores(np.zeros((1, 1)), np.array([[0]]), 2)
