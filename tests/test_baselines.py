"""Zero-shot baselines: the cosine pick, and the encoder embeddings it rests on."""

from __future__ import annotations

import numpy as np
import torch
from transformers import AutoModel, AutoTokenizer

from cappy_jax import baselines, convert
from cappy_jax.scoring import Scorer


def test_cosine_picks_by_hand() -> None:
    q = np.array([[1.0, 0.0], [0.0, 2.0]])
    cands = [np.array([[0.0, 1.0], [3.0, 0.1], [1.0, 0.0]]), np.array([[5.0, 5.0], [1.0, 1.0]])]
    assert baselines.cosine_picks(q, cands) == [2, 0]  # [1,0] beats [3,0.1]; a tie goes to index 0


def test_embeddings_equal_sentence_transformers_mean_pooling(minilm_dir, tmp_path) -> None:
    scorer_dir = convert.from_hf(str(minilm_dir), str(tmp_path / "s"))
    encoder = Scorer.from_checkpoint(str(scorer_dir), dtype="float32", max_len=128, row_len=128,
                                     widths=(32, 64, 128), batch_tokens=256, max_segments=3)
    texts = ["A man is eating food.", "A man is eating a piece of bread.", "The girl is carrying a baby.",
             "A man is riding a horse.", "Two men pushed carts through the woods."]
    ours = encoder.embed(texts)
    model, tok = AutoModel.from_pretrained(minilm_dir), AutoTokenizer.from_pretrained(minilm_dir)
    x = tok(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        h = model(**x).last_hidden_state
    mask = x["attention_mask"][..., None]
    np.testing.assert_allclose(ours, ((h * mask).sum(1) / mask.sum(1)).numpy(), atol=1e-5)
    picks = baselines.cosine_choice(encoder, [("A man eats something.", [texts[2], texts[0], texts[3]]),
                                              ("Someone rides an animal.", [texts[1], texts[3]])])
    assert picks == [1, 1]
