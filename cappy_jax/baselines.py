"""Zero-shot baselines that pick among candidates without a trained score head.

`cosine_choice`: the untrained encoder as a sentence embedder (mean-pooled final hidden states, as
all-MiniLM-L6-v2 was trained), picking the candidate whose embedding is closest in cosine to the
instruction's. It is what the pretrained encoder knows before any Cappy training, so a trained
scorer should beat it. Ties go to the lowest index, as everywhere in cappy_jax.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def cosine_picks(instruction_vecs: np.ndarray, candidate_vecs: Sequence[np.ndarray]) -> list[int]:
    """Per item, the index of the candidate vector closest in cosine to the instruction vector. Pure."""
    picks = []
    for q, cands in zip(instruction_vecs, candidate_vecs):
        q = q / max(float(np.linalg.norm(q)), 1e-12)
        c = cands / np.maximum(np.linalg.norm(cands, axis=1, keepdims=True), 1e-12)
        picks.append(int(np.argmax(c @ q)))
    return picks


def cosine_choice(encoder: Any, items: Sequence[tuple[str, Sequence[str]]]) -> list[int]:
    """Cosine picks for (instruction, candidates) items; `encoder` is a `scoring.Scorer` (its `embed`).

    Each distinct text is embedded once.
    """
    texts = list(dict.fromkeys([q for q, _ in items] + [c for _, cands in items for c in cands]))
    index = {t: i for i, t in enumerate(texts)}
    vecs = encoder.embed(texts)
    return cosine_picks(vecs[[index[q] for q, _ in items]],
                        [vecs[[index[c] for c in cands]] for _, cands in items])
