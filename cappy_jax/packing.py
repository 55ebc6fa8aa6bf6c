"""Packing pairs into rows, and the one batch format model, pipeline and scorer share.

Real (instruction, response) pairs are far shorter than 512 tokens, so several
share one row. A packed batch of `B` rows of `L` tokens with at most `S` pairs a row:

- `input_ids[B, L]` int32, the tokenizer's padding id where empty;
- `segment_ids[B, L]` int32, 1..S for the pairs of the row, 0 for padding;
- `position_ids[B, L]` int32, 0-based and restarting at each segment (the model
  adds its checkpoint's offset: 2 for RoBERTa, 0 for BERT);
- `token_type_ids[B, L]` int32;
- `cls_index[B, S]` int32, where each segment starts (its score is read there);
- `labels[B, S]` float32 and `label_mask[B, S]` float32 (0 for empty slots);
- `pair_index[B, S]` int32, the input position of each slot's pair, -1 if empty.

One pair per row is the special case `S = 1`. Everything here is pure numpy.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence

import numpy as np

BATCH_KEYS = ("input_ids", "segment_ids", "position_ids", "token_type_ids", "cls_index",
              "labels", "label_mask", "pair_index")
MODEL_INPUTS = BATCH_KEYS[:5]  # what the model reads (evaluation feeds only these)


def pack_lengths(lengths: Sequence[int] | np.ndarray, max_len: int, max_segments: int,
                 *, sort: bool = True) -> list[list[int]]:
    """Groups pair indices into rows of at most `max_len` tokens and `max_segments` pairs.

    Best-fit: each pair goes to the open row whose free space fits it most tightly.
    With `sort` the pairs are placed longest first (best-fit decreasing, the
    tightest packing); without it they are placed in order, for streams.
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    if max_len <= 0 or max_segments <= 0:
        raise ValueError(f"max_len ({max_len}) and max_segments ({max_segments}) must be positive")
    too_long = np.flatnonzero(lengths > max_len)
    if too_long.size:
        i = int(too_long[0])
        raise ValueError(f"pair {i} has {lengths[i]} tokens, more than max_len={max_len}; "
                         f"{too_long.size} pairs are too long: tokenize with max_len={max_len}")
    if np.any(lengths <= 0):
        raise ValueError(f"pair {int(np.flatnonzero(lengths <= 0)[0])} is empty")
    order = np.argsort(-lengths, kind="stable") if sort else np.arange(len(lengths))
    rows: list[list[int]] = []
    # Open rows as (free tokens, row id), kept sorted so bisect finds the tightest fit.
    open_rows: list[tuple[int, int]] = []
    for i in order.tolist():
        n = int(lengths[i])
        k = bisect.bisect_left(open_rows, (n, -1))
        if k < len(open_rows):
            free, r = open_rows.pop(k)
        else:
            free, r = max_len, len(rows)
            rows.append([])
        rows[r].append(i)
        free -= n
        if free > 0 and len(rows[r]) < max_segments:
            bisect.insort(open_rows, (free, r))
    return rows


def make_batch(input_ids: Sequence[np.ndarray], token_type_ids: Sequence[np.ndarray],
               rows: Sequence[Sequence[int]], *, max_len: int, max_segments: int, pad_id: int,
               labels: Sequence[float] | np.ndarray | None = None,
               num_rows: int | None = None) -> dict[str, np.ndarray]:
    """Lays out the pairs of `rows` in the packed batch format (see the module docstring).

    `num_rows` pads the batch with empty rows so that every batch has one shape
    (one compilation); it defaults to `len(rows)`.
    """
    num_rows = len(rows) if num_rows is None else num_rows
    if len(rows) > num_rows:
        raise ValueError(f"{len(rows)} rows do not fit a batch of {num_rows}")
    batch = {
        "input_ids": np.full((num_rows, max_len), pad_id, np.int32),
        "segment_ids": np.zeros((num_rows, max_len), np.int32),
        "position_ids": np.zeros((num_rows, max_len), np.int32),
        "token_type_ids": np.zeros((num_rows, max_len), np.int32),
        "cls_index": np.zeros((num_rows, max_segments), np.int32),
        "labels": np.zeros((num_rows, max_segments), np.float32),
        "label_mask": np.zeros((num_rows, max_segments), np.float32),
        "pair_index": np.full((num_rows, max_segments), -1, np.int32),
    }
    for r, row in enumerate(rows):
        if len(row) > max_segments:
            raise ValueError(f"row {r} holds {len(row)} pairs, more than max_segments={max_segments}")
        start = 0
        for s, i in enumerate(row):
            ids = input_ids[i]
            end = start + len(ids)
            if end > max_len:
                raise ValueError(f"row {r} needs {end} tokens, more than max_len={max_len}")
            batch["input_ids"][r, start:end] = ids
            batch["token_type_ids"][r, start:end] = token_type_ids[i]
            batch["segment_ids"][r, start:end] = s + 1
            batch["position_ids"][r, start:end] = np.arange(len(ids))
            batch["cls_index"][r, s] = start
            batch["label_mask"][r, s] = 1.0
            batch["pair_index"][r, s] = i
            if labels is not None:
                batch["labels"][r, s] = labels[i]
            start = end
    return batch


def unpack_scores(scores: np.ndarray, pair_index: np.ndarray, num_pairs: int) -> np.ndarray:
    """Puts the per-slot scores of packed batches back in input order."""
    out = np.full(num_pairs, np.nan, np.float32)
    scores, pair_index = np.asarray(scores).reshape(-1), np.asarray(pair_index).reshape(-1)
    keep = pair_index >= 0
    out[pair_index[keep]] = scores[keep]
    missing = np.isnan(out)
    if missing.any():
        raise ValueError(f"{int(missing.sum())} pairs got no score (first: pair {int(np.flatnonzero(missing)[0])})")
    return out


def padding_fraction(batch: dict[str, np.ndarray]) -> float:
    """Share of the batch's token slots that hold no pair."""
    return float(np.mean(batch["segment_ids"] == 0))
