"""Metrics: correlations against scipy (or hand values), selection on handmade groups, FLOPs and MFU."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from cappy_jax import metrics as M

try:
    import scipy.stats as st
except ImportError:  # scipy is optional: hand-computed values below cover the same ground
    st = None

needs_scipy = pytest.mark.skipif(st is None, reason="scipy not installed")


# --- correlations ------------------------------------------------------------------------------

def test_pearson_known_values():
    # xc = [-1, 0, 1], yc = [-4/3, -1/3, 5/3]: r = 3 / sqrt(2 * 42/9) = 9 / sqrt(84)
    assert M.pearson([1, 2, 3], [1, 2, 4]) == pytest.approx(9 / math.sqrt(84), abs=1e-12)
    assert M.pearson([1, 2, 3], [2, 4, 6]) == pytest.approx(1.0)
    assert M.pearson([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert isinstance(M.pearson(np.arange(4), np.arange(4) ** 2), float)


def test_pearson_undefined_is_nan():
    assert math.isnan(M.pearson([0.1, 0.1, 0.1], [1, 2, 3]))  # constant, and not exactly centred
    assert math.isnan(M.pearson([1, 2, 3], [5, 5, 5]))
    assert math.isnan(M.pearson([1.0], [2.0]))
    assert math.isnan(M.pearson([], []))
    assert math.isnan(M.pearson([1, 2, np.nan], [1, 2, 3]))
    with pytest.raises(ValueError):
        M.pearson([1, 2, 3], [1, 2])


def test_spearman_known_values_with_ties():
    # scipy.stats.spearmanr docs example: y has a tie (7, 7).
    assert M.spearman([1, 2, 3, 4, 5], [5, 6, 7, 8, 7]) == pytest.approx(0.8207826816681233, abs=1e-12)
    # Ranks x = [1, 2.5, 2.5, 4], y = [1, 3, 2, 4]: pearson of those by hand = 4.5 / sqrt(4.5 * 5).
    assert M.spearman([1, 2, 2, 3], [1, 3, 2, 4]) == pytest.approx(4.5 / math.sqrt(4.5 * 5), abs=1e-12)
    # Monotone transforms do not change ranks.
    x = np.array([0.3, 0.1, 0.9, 0.5])
    assert M.spearman(x, np.exp(5 * x)) == pytest.approx(1.0)
    assert M.spearman(x, -x ** 3) == pytest.approx(-1.0)


def test_average_ranks_hand():
    np.testing.assert_allclose(M._average_ranks(np.array([3.0, 1.0, 3.0, 2.0, 3.0])), [4, 1, 4, 2, 4])
    np.testing.assert_allclose(M._average_ranks(np.array([0.5, 0.5])), [1.5, 1.5])


def test_spearman_undefined_is_nan():
    assert math.isnan(M.spearman([2, 2, 2], [1, 2, 3]))
    assert math.isnan(M.spearman([1], [1]))
    assert math.isnan(M.spearman([1, 2, np.nan], [1, 2, 3]))


@needs_scipy
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_correlations_match_scipy(seed):
    rng = np.random.default_rng(seed)
    n = 200
    x = rng.random(n)
    y = 0.5 * x + 0.5 * rng.random(n)
    assert M.pearson(x, y) == pytest.approx(st.pearsonr(x, y)[0], abs=1e-12)
    assert M.spearman(x, y) == pytest.approx(st.spearmanr(x, y)[0], abs=1e-12)
    # Heavy ties on both sides (labels like Rouge-L are often repeated).
    xt, yt = np.round(x, 1), np.round(y * 3) / 3
    assert M.spearman(xt, yt) == pytest.approx(st.spearmanr(xt, yt)[0], abs=1e-12)
    assert M.pearson(xt, yt) == pytest.approx(st.pearsonr(xt, yt)[0], abs=1e-12)
    np.testing.assert_allclose(M._average_ranks(xt), st.rankdata(xt))


# --- selection ---------------------------------------------------------------------------------

def test_selection_accuracy_handmade():
    scores = [0.9, 0.1, 0.2,   0.5, 0.8,   0.3, 0.3, 0.1,   0.4, 0.6]
    labels = [1.0, 0.0, 0.0,   1.0, 0.0,   0.0, 1.0, 0.0,   0.0, 0.0]
    groups = [0, 0, 0,         1, 1,       2, 2, 2,         3, 3]
    # g0 right; g1 wrong; g2 tie 0.3/0.3 -> first (label 0) taken: wrong; g3 has no correct: skipped.
    assert M.selection_accuracy(scores, labels, groups) == pytest.approx(1 / 3)
    # Swap the tied pair: the first tied candidate is now the correct one.
    labels2 = labels[:5] + [1.0, 0.0, 0.0] + labels[8:]
    assert M.selection_accuracy(scores, labels2, groups) == pytest.approx(2 / 3)


def test_selection_accuracy_soft_labels_and_multiple_correct():
    # Generation group: the best available candidate (Rouge-L 0.7) is the correct one.
    assert M.selection_accuracy([0.2, 0.9, 0.4], [0.3, 0.7, 0.5], ["a", "a", "a"]) == 1.0
    assert M.selection_accuracy([0.2, 0.4, 0.9], [0.3, 0.7, 0.5], ["a", "a", "a"]) == 0.0
    # Two correct choices: picking either counts.
    assert M.selection_accuracy([0.1, 0.9, 0.5], [1.0, 1.0, 0.0], [7, 7, 7]) == 1.0


def test_selection_accuracy_group_order_and_ids_do_not_matter():
    rng = np.random.default_rng(0)
    scores = [0.9, 0.1, 0.5, 0.8, 0.2, 0.7]
    labels = [1.0, 0.0, 1.0, 0.0, 0.0, 1.0]
    groups = ["x", "x", "y", "y", "z", "z"]
    perm = rng.permutation(6)
    base = M.selection_accuracy(scores, labels, groups)
    assert base == pytest.approx(2 / 3)
    assert M.selection_accuracy(np.array(scores)[perm], np.array(labels)[perm], np.array(groups)[perm]) == base


def test_selection_accuracy_nan_cases():
    assert math.isnan(M.selection_accuracy([0.1, 0.2], [0.0, 0.0], [0, 0]))
    assert math.isnan(M.selection_accuracy([], [], []))
    # A NaN score never wins over a real one.
    assert M.selection_accuracy([np.nan, 0.1], [0.0, 1.0], [0, 0]) == 1.0
    with pytest.raises(ValueError):
        M.selection_accuracy([0.1, 0.2], [1.0, 0.0], [0])


def test_expected_chance_accuracy():
    labels = [1.0, 0.0, 0.0, 0.0,   1.0, 1.0, 0.0,   0.2, 0.6, 0.6,   0.0, 0.0]
    groups = [0, 0, 0, 0,           1, 1, 1,         2, 2, 2,         3, 3]
    # 1/4, 2/3, 2/3 (two share the max soft label); group 3 has no correct candidate: skipped.
    assert M.expected_chance_accuracy(labels, groups) == pytest.approx((1 / 4 + 2 / 3 + 2 / 3) / 3)
    assert math.isnan(M.expected_chance_accuracy([0.0], [0]))


def test_chance_is_mean_selection_accuracy_of_random_scores():
    rng = np.random.default_rng(1)
    groups = np.repeat(np.arange(50), 4)
    labels = (rng.random(200) < 0.3).astype(float)
    chance = M.expected_chance_accuracy(labels, groups)
    sims = [M.selection_accuracy(rng.random(200), labels, groups) for _ in range(400)]
    assert np.mean(sims) == pytest.approx(chance, abs=0.02)


# --- regression_metrics ------------------------------------------------------------------------

def _toy():
    tasks = ["t1"] * 5 + ["t2"] * 4
    groups = [0, 0, 0, 1, 1] + [0, 0, 1, 1]  # ids restart per task
    scores = [0.9, 0.2, 0.1, 0.3, 0.6] + [0.5, 0.5, 0.5, 0.5]
    labels = [1.0, 0.0, 0.0, 1.0, 0.0] + [1.0, 0.0, 0.0, 1.0]
    loss = [1.0, 1.0, 1.0, 1.0, 1.0] + [3.0, 3.0, 3.0, 3.0]
    return scores, labels, tasks, groups, loss


def test_regression_metrics_per_task_and_means():
    scores, labels, tasks, groups, loss = _toy()
    r = M.regression_metrics(scores, labels, tasks, groups, loss=loss)
    assert set(r) == {"all", "tasks", "mean_over_tasks"}
    assert list(r["tasks"]) == ["t1", "t2"] and all(type(k) is str for k in r["tasks"])

    t1, t2 = r["tasks"]["t1"], r["tasks"]["t2"]
    assert t1["count"] == 5 and t1["groups"] == 2
    assert t1["selection_accuracy"] == pytest.approx(0.5)
    assert t1["chance_accuracy"] == pytest.approx((1 / 3 + 1 / 2) / 2)
    assert t1["pearson"] == pytest.approx(M.pearson(scores[:5], labels[:5]))
    assert t1["loss"] == pytest.approx(1.0)
    # t2: constant scores -> correlations nan; ties take the first candidate.
    assert math.isnan(t2["pearson"]) and math.isnan(t2["spearman"])
    assert t2["selection_accuracy"] == pytest.approx(0.5)
    assert t2["loss"] == pytest.approx(3.0)

    a = r["all"]
    assert a["count"] == 9 and a["groups"] == 4  # group 0 of t1 and of t2 stay apart
    assert a["selection_accuracy"] == pytest.approx(2 / 4)
    assert a["pearson"] == pytest.approx(M.pearson(scores, labels))
    assert a["loss"] == pytest.approx(17 / 9)

    m = r["mean_over_tasks"]
    assert m["pearson"] == pytest.approx(t1["pearson"])  # t2's nan ignored
    assert m["selection_accuracy"] == pytest.approx(0.5)
    assert m["chance_accuracy"] == pytest.approx((t1["chance_accuracy"] + t2["chance_accuracy"]) / 2)
    assert m["loss"] == pytest.approx(2.0)  # tasks weigh equally, unlike all["loss"]
    assert m["count"] == 9 and m["groups"] == 4 and m["tasks"] == 2
    json.dumps(r)  # plain python types throughout


def test_regression_metrics_without_loss_and_all_nan_task_mean():
    r = M.regression_metrics([0.5, 0.5], [0.0, 0.0], ["only", "only"], [3, 3])
    assert "loss" not in r["all"] and "loss" not in r["tasks"]["only"] and "loss" not in r["mean_over_tasks"]
    for key in M.METRIC_KEYS:
        assert math.isnan(r["mean_over_tasks"][key])


def test_regression_metrics_empty_and_mismatch():
    r = M.regression_metrics([], [], [], [], loss=[])
    assert r["tasks"] == {} and r["all"]["count"] == 0 and math.isnan(r["all"]["selection_accuracy"])
    assert math.isnan(r["mean_over_tasks"]["pearson"]) and r["mean_over_tasks"]["tasks"] == 0
    with pytest.raises(ValueError):
        M.regression_metrics([0.1, 0.2], [1.0, 0.0], ["a", "a"], [0, 0], loss=[1.0])


# --- FLOPs and MFU -----------------------------------------------------------------------------

def test_flops_hand_count_tiny():
    # L=2, h=4, i=8, n=3. Weights per layer: q,k,v,o 4*16 + ffn 2*32 = 128 -> 256 FLOPs/token;
    # attention 2*2*n*h = 48. Forward 2*(256+48) = 608; training x3.
    kw = dict(num_layers=2, hidden_size=4, intermediate_size=8, seq_len=3)
    assert M.encoder_flops_per_token(training=False, **kw) == 608
    assert M.encoder_flops_per_token(**kw) == 3 * 608
    assert M.encoder_flops_per_token(training=False, vocab_size=10, **kw) == 608 + 2 * 4 * 10
    with pytest.raises(ValueError):
        M.encoder_flops_per_token(num_layers=0, hidden_size=4, intermediate_size=8, seq_len=3)


def test_flops_roberta_large_rule_of_thumb():
    f = M.encoder_flops_per_token(num_layers=24, hidden_size=1024, intermediate_size=4096, seq_len=512)
    six_n = 6 * 355e6  # roberta-large has ~355M parameters (incl. ~52M embeddings)
    assert six_n / 1.5 < f < six_n * 1.5
    # Longer rows cost more attention FLOPs; the matmul part is independent of the row length.
    g = M.encoder_flops_per_token(num_layers=24, hidden_size=1024, intermediate_size=4096, seq_len=256)
    assert f - g == pytest.approx(3 * 24 * 4 * 256 * 1024)


def test_mfu_and_peak_flops():
    assert M.mfu(1e5, 2e9, 1e15) == pytest.approx(0.2)
    assert math.isnan(M.mfu(1e5, 2e9, None))
    assert math.isnan(M.mfu(1e5, 2e9, 0.0))
    assert M.peak_flops("NVIDIA H100 80GB HBM3") == 989e12
    assert M.peak_flops("nvidia h200") == 989e12
    assert M.peak_flops("NVIDIA H100 PCIe") == 756e12
    assert M.peak_flops("NVIDIA H100 SXM5 94GB") == 989e12  # family fallback by prefix
    assert M.peak_flops("NVIDIA A100-SXM4-40GB") == 312e12
    assert M.peak_flops("TPU v4") == 275e12
    assert M.peak_flops("TPU v5 lite") == 197e12
    assert M.peak_flops("TPU v5p") == 459e12
    assert M.peak_flops("TPU v5") == 459e12
    assert M.peak_flops("NVIDIA H1000") is None  # prefix must end at a word boundary
    assert M.peak_flops("cpu") is None and M.peak_flops("") is None
    f = M.encoder_flops_per_token(num_layers=24, hidden_size=1024, intermediate_size=4096, seq_len=512)
    assert 0 < M.mfu(100_000, f, M.peak_flops("NVIDIA H100 80GB HBM3")) < 1
