"""The scoring API: batch planning, packing invariance, selection, loading and option errors."""

from __future__ import annotations

import re

import jax
import numpy as np
import pytest

from cappy_jax import convert, scoring
from cappy_jax.scoring import Scorer
from conftest import WORDS

# The tiny scorer (BERT) has 130 positions; 128-token pairs keep the widths powers of two.
TINY = dict(max_len=128, row_len=128, widths=(16, 32, 64, 128), batch_tokens=512)


def _pairs(n: int, seed: int = 0) -> list[tuple[str, str]]:
    rng = np.random.default_rng(seed)
    return [(" ".join(rng.choice(WORDS, rng.integers(1, 40))), " ".join(rng.choice(WORDS, rng.integers(1, 12))))
            for _ in range(n)]


@pytest.fixture(scope="module")
def scorer(tiny_scorer_dir) -> Scorer:
    return Scorer.from_checkpoint(str(tiny_scorer_dir), **TINY)


def test_a_pair_without_tokens_is_named_by_its_place_in_the_whole_call(tiny_scorer_dir) -> None:
    from cappy_jax.tokenization import NoTokensError

    small_chunks = Scorer.from_checkpoint(str(tiny_scorer_dir), **{**TINY, "chunk_pairs": 4})
    pairs = [("q", f"answer {i}") for i in range(9)] + [("q", "\ufffd \ufffd")]  # BERT's normalizer drops U+FFFD
    with pytest.raises(NoTokensError, match=r"pair 1: response '\ufffd \ufffd' has no tokens .*\(of the chunk "
                                            r"starting at pair 8\)"):
        small_chunks.score(pairs)


def test_plan_covers_every_pair_once_within_limits() -> None:
    opts = scoring.options(**TINY, max_segments=4)
    lengths = np.random.default_rng(1).integers(3, 129, 300)
    plans = scoring.plan_batches(lengths, opts, multiple_of=8)
    seen = sorted(i for p in plans for row in p.rows for i in row)
    assert seen == list(range(len(lengths)))
    for p in plans:
        assert p.width in opts.widths and p.num_rows % 8 == 0 and len(p.rows) <= p.num_rows
        assert p.num_rows * p.width <= max(opts.batch_tokens, 8 * p.width)
        for row in p.rows:
            assert 1 <= len(row) <= 4 and lengths[row].sum() <= p.width
            # The width is the smallest allowed one for the batch's fullest row.
        fullest = max(lengths[row].sum() for row in p.rows)
        assert p.width == min(w for w in opts.widths if w >= fullest)


def test_plan_narrows_batches_of_short_pairs_and_isolates_long_ones() -> None:
    opts = scoring.options(**{**TINY, "row_len": 64})
    plans = scoring.plan_batches([5, 6, 7, 100, 8], opts)
    widths = {tuple(sorted(i for row in p.rows for i in row)): p.width for p in plans}
    assert widths == {(3,): 128, (0, 1, 2, 4): 32}  # 26 tokens packed into one 32-wide row
    assert scoring.plan_batches([], opts) == []
    with pytest.raises(ValueError, match="wider than the widest row"):
        scoring.plan_batches([129], opts)


def test_scores_do_not_depend_on_packing_or_batch_size(scorer, tiny_scorer_dir) -> None:
    pairs = _pairs(120)
    packed = scorer.score(pairs)
    one_by_one = np.array([scorer.score([p])[0] for p in pairs[:25]])
    np.testing.assert_allclose(packed[:25], one_by_one, atol=1e-5)
    for overrides in (dict(batch_tokens=128, max_segments=1, chunk_pairs=7), dict(batch_tokens=4096, row_len=32)):
        other = Scorer.from_checkpoint(str(tiny_scorer_dir), **{**TINY, **overrides})
        np.testing.assert_allclose(other.score(pairs), packed, atol=1e-5)
    assert packed.dtype == np.float32 and np.all((packed > 0) & (packed < 1))


def test_scoring_uses_every_local_device(scorer) -> None:
    assert len(scorer.devices) == len(jax.local_devices()) == 8
    assert scorer.mesh.shape["data"] == 8
    leaf = jax.tree.leaves(scorer.params)[0]
    assert leaf.sharding.is_fully_replicated and len(leaf.sharding.device_set) == 8


def test_select_picks_the_argmax_and_breaks_ties_to_the_lowest_index(scorer) -> None:
    instruction = "Which word comes first in the alphabet?"
    candidates = ["gamma", "alpha beta", "gamma", "alpha beta"]
    best, scores = scorer.select(instruction, candidates)
    assert scores[0] == scores[2] and scores[1] == scores[3]
    assert best == (0 if scores[0] >= scores[1] else 1)
    many = scorer.select_many([(instruction, candidates), ("Say yes.", ["yes"])])
    assert many[0][0] == best and many[1][0] == 0
    np.testing.assert_allclose(many[0][1], scores, atol=1e-6)
    with pytest.raises(ValueError, match="non-empty list"):
        scorer.select(instruction, [])


def test_batches_run_in_an_order_whose_pair_rate_holds_from_the_start() -> None:
    # Long pairs get rows of their own and full rows sort first: in that order the first half of the work
    # scored 15% of the pairs, so a progress line's ETA started 3x too long. After each batch of the plan's
    # order, the share of pairs done now stays near the share of token slots done.
    opts = scoring.options(**TINY, max_segments=16)
    lengths = np.r_[np.full(200, 120), np.random.default_rng(2).integers(4, 12, 2000)]
    plans = scoring.plan_batches(lengths, opts)
    pairs = np.cumsum([sum(len(row) for row in p.rows) for p in plans])
    slots = np.cumsum([p.num_rows * p.width for p in plans])
    assert pairs[-1] == len(lengths) and len(plans) > 50
    assert np.abs(pairs / pairs[-1] - slots / slots[-1]).max() < 0.2  # 0.45 sorted by fill
    assert [p.rows for p in scoring.plan_batches(lengths, opts)] == [p.rows for p in plans]  # seeded


def test_progress_counts_every_pair(scorer) -> None:
    seen: list[int] = []
    scorer.score(_pairs(50), progress=seen.append)
    assert sum(seen) == 50 and len(seen) >= 1


def test_bad_input_is_named(scorer) -> None:
    with pytest.raises(ValueError, match="pair 1: response is empty"):
        scorer.score([("a question", "an answer"), ("another", "  ")])
    with pytest.raises(TypeError, match="pair 0 must be an"):
        scorer.score(["not a pair"])
    assert scorer.score([]).shape == (0,)


def test_options_are_validated() -> None:
    with pytest.raises(ValueError, match="unknown scoring options"):
        scoring.options(batch_size=3)
    with pytest.raises(ValueError, match="widest row"):
        scoring.options(widths=(16, 32))
    with pytest.raises(ValueError, match="strictly increasing"):
        scoring.options(widths=(64, 32, 512))
    with pytest.raises(ValueError, match="unknown score variant"):
        scoring.options("huge")
    with pytest.raises(ValueError, match="quantize='int8' is not one of"):
        scoring.options(quantize="int8")


def test_max_len_beyond_the_position_table_is_refused(tiny_scorer_dir) -> None:
    with pytest.raises(ValueError, match="exceeds the model's 130 positions"):
        Scorer.from_checkpoint(str(tiny_scorer_dir), **{**TINY, "max_len": 256, "widths": (128, 256)})


def test_from_hf_equals_from_checkpoint(scorer, tiny_scorer_dir, tmp_path) -> None:
    hf = convert.to_hf(str(tiny_scorer_dir), str(tmp_path / "hf"))
    pairs = _pairs(30, seed=2)
    np.testing.assert_allclose(Scorer.from_hf(str(hf), **TINY).score(pairs), scorer.score(pairs), atol=1e-6)


def test_from_hf_refuses_a_model_without_a_score_head(minilm_dir) -> None:
    with pytest.raises(ValueError, match="no trained score head"):
        Scorer.from_hf(str(minilm_dir))


def test_a_slow_first_dispatch_of_a_batch_shape_is_logged_once(tiny_scorer_dir, monkeypatch, caplog) -> None:
    """On a GPU each new batch shape compiles for tens of seconds while the progress line stands still."""
    fresh = Scorer.from_checkpoint(str(tiny_scorer_dir), **TINY)
    monkeypatch.setattr(scoring, "SLOW_FIRST_DISPATCH_S", 0.0)
    workloads = [_pairs(120), [("Is it?", "yes")] * 3, _pairs(120)]  # the third adds no new shape

    def shapes(pairs: list[tuple[str, str]]) -> set[tuple[int, int]]:
        enc = fresh.tokenizer.encode_pairs([a for a, _ in pairs], [b for _, b in pairs], fresh.opts.max_len)
        plans = scoring.plan_batches([len(x) for x in enc.input_ids], fresh.opts, multiple_of=len(fresh.devices))
        return {(p.num_rows, p.width) for p in plans}

    with caplog.at_level("INFO", logger="cappy_jax.scoring"):
        for pairs in workloads:
            fresh.score(pairs)
    logged = [tuple(int(n) for n in m.groups()) for r in caplog.records
              if (m := re.match(r"compiled batch shape (\d+) rows x (\d+) tokens in", r.getMessage()))]
    expected = shapes(workloads[0]) | shapes(workloads[1])
    assert len(expected) >= 2 and sorted(logged) == sorted(expected)  # each shape once
    monkeypatch.setattr(scoring, "SLOW_FIRST_DISPATCH_S", 1e9)
    caplog.clear()
    with caplog.at_level("INFO", logger="cappy_jax.scoring"):
        Scorer.from_checkpoint(str(tiny_scorer_dir), **TINY).score(workloads[0])  # fast first dispatches: quiet
    assert not [r for r in caplog.records if "compiled batch shape" in r.getMessage()]


def test_fp8_keeps_real_encoder_embeddings(minilm_dir, tmp_path) -> None:
    """Real weights (all-MiniLM-L6-v2) with `quantize='fp8'`: each mean-pooled embedding stays within
    cosine 0.99 of float32's, pairwise similarities within 0.03, and the cosine baseline's picks hold."""
    from cappy_jax import baselines

    scorer_dir = convert.from_hf(str(minilm_dir), str(tmp_path / "s"))
    knobs = dict(dtype="float32", max_len=128, row_len=128, widths=(32, 64, 128), batch_tokens=256, max_segments=3)
    exact, fp8 = (Scorer.from_checkpoint(str(scorer_dir), quantize=q, **knobs) for q in ("none", "fp8"))
    texts = ["A man is eating food.", "A man is eating a piece of bread.", "The girl is carrying a baby.",
             "A man is riding a horse.", "Two men pushed carts through the woods.",
             "Q: What is the capital of France? A: Paris", "def f(x): return x * 2  # doubles its input"]
    a, b = exact.embed(texts), fp8.embed(texts)
    assert not np.array_equal(a, b)
    a, b = (x / np.linalg.norm(x, axis=1, keepdims=True) for x in (a, b))
    assert np.all((a * b).sum(1) > 0.99)
    assert np.abs(a @ a.T - b @ b.T).max() < 0.03
    items = [("A man eats something.", [texts[2], texts[0], texts[3]]), ("Someone rides an animal.", texts[:5]),
             ("Where is the Eiffel tower?", texts[4:])]
    assert baselines.cosine_choice(fp8, items) == baselines.cosine_choice(exact, items)


def test_fp8_says_where_it_will_not_be_faster(tiny_scorer_dir, caplog) -> None:
    import types

    with caplog.at_level("WARNING", logger="cappy_jax.scoring"):
        Scorer.from_checkpoint(str(tiny_scorer_dir), quantize="fp8", **TINY)
    assert "cpu has no float8 matmul units" in caplog.text

    def gpu(capability: str):
        return types.SimpleNamespace(platform="gpu", compute_capability=capability, device_kind="NVIDIA X")

    assert "no fp8 tensor cores" in scoring.fp8_speed_note(gpu("8.0"))  # A100
    assert scoring.fp8_speed_note(gpu("8.9")) is None and scoring.fp8_speed_note(gpu("9.0")) is None
