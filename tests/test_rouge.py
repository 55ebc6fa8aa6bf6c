"""Rouge-L: equal to rouge-score (the oracle, test-only) on generated pairs, and much faster."""

from __future__ import annotations

import random
import time

import pytest

from cappy_jax.data import rouge

rouge_scorer = pytest.importorskip("rouge_score.rouge_scorer")
porter = pytest.importorskip("nltk.stem.porter")

# Words whose stems matter (suffix rules, nltk's irregular forms, short words left unstemmed).
STEM_WORDS = """running runs ran run runner generalization generalize general caresses caress ponies
pony ties tie dies died spied flies flying skies sky dying lying tying news innings inning outings
canning howe proceed exceed succeed agreed feed bled plastered motoring sing hopping tanned falling
hissing fizzed failing filing conflated troubled sized happy enjoy relational conditional rational
valenci hesitanci digitizer conformabli radicalli differentli vileli analogousli vietnamization
predication operator feudalism decisiveness hopefulness callousness formaliti sensitiviti
sensibiliti triplicate formative formalize electriciti electrical hopeful goodness revival allowance
inference airliner gyroscopic adjustable defensible irritant replacement adjustment dependent
adoption homologou communism activate angulariti homologous effective bowdlerize probate rate cease
controll roll archaeology geology fully yyyy syzygy toy trees ivy oaten orrery the a an is of to
and in it was for on with as be at by this that from or""".split()
UNICODE_WORDS = ["café", "naïve", "Ångström", "日本語", "中文 字", "😀", "👍🏽ok", "İstanbul",
                 "\u212aelvin", "straße", "ﬁne", "１２３", "Ωmega", "e\u0301t\u00e9", "naïveté's"]
PUNCT = [",", ".", "!", "?", ";", ":", "'", '"', "-", "--", "(", ")", "/", "_", "@", "#", "$%", "..."]
SEPARATORS = [" ", " ", " ", " ", "  ", "\t", "\n", " - ", ", ", "_", "/", "\u00a0"]


def _word(rng: random.Random) -> str:
    r = rng.random()
    if r < 0.45:
        w = rng.choice(STEM_WORDS)
    elif r < 0.6:
        w = "".join(rng.choice("abcdefghilmnoprstuy") for _ in range(rng.randint(1, 9)))
    elif r < 0.7:
        w = str(rng.randint(0, 10 ** rng.randint(1, 6)))
    elif r < 0.8:
        w = rng.choice(UNICODE_WORDS)
    elif r < 0.88:
        w = rng.choice(PUNCT)
    else:
        w = rng.choice(STEM_WORDS) + rng.choice(PUNCT) + rng.choice(STEM_WORDS)
    if rng.random() < 0.15:
        w = w.upper() if rng.random() < 0.5 else w.capitalize()
    return w


def _text(rng: random.Random, n: int) -> str:
    out = []
    for _ in range(n):
        out.append(_word(rng))
        out.append(rng.choice(SEPARATORS))
    return "".join(out).strip() if rng.random() < 0.8 else "".join(out)


def _mutate(rng: random.Random, text: str) -> str:
    """A corrupted copy: drops, swaps, insertions and repeats, so LCS is neither 0 nor full."""
    words = text.split()
    out = []
    for w in words:
        r = rng.random()
        if r < 0.2:
            continue
        out.append(w)
        if r > 0.9:
            out.append(_word(rng))
        elif r > 0.85:
            out.append(w)
    if len(out) > 2 and rng.random() < 0.5:
        i, j = rng.randrange(len(out)), rng.randrange(len(out))
        out[i], out[j] = out[j], out[i]
    return " ".join(out)


def _pairs(seed: int, count: int) -> list[tuple[list[str], str]]:
    rng = random.Random(seed)
    blanks = ["", " ", "\n\t ", "...", "!!! ???", "日本語", "😀😀"]
    pairs = []
    for _ in range(count):
        refs = [_text(rng, rng.randint(0, 25)) for _ in range(rng.randint(1, 5))]
        r = rng.random()
        if r < 0.4:
            pred = _mutate(rng, rng.choice(refs))
        elif r < 0.55:
            pred = _text(rng, rng.randint(0, 25))
        elif r < 0.65:
            pred = rng.choice(refs)  # identical strings
        elif r < 0.72:
            pred = rng.choice(blanks)
        elif r < 0.78:
            refs[rng.randrange(len(refs))] = rng.choice(blanks)
            pred = _mutate(rng, rng.choice(refs))
        elif r < 0.85:
            w = rng.choice(STEM_WORDS)
            pred = " ".join([w] * rng.randint(1, 8))  # repeated tokens
            refs.append(" ".join(rng.choice([w, rng.choice(STEM_WORDS)]) for _ in range(rng.randint(1, 10))))
        else:
            pred = _mutate(rng, " ".join(refs))
        pairs.append((refs, pred))
    return pairs


@pytest.fixture(scope="module")
def scorer():
    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)


def _theirs(scorer, refs, pred) -> float:
    return scorer.score_multi(refs, pred)["rougeL"].fmeasure


def test_porter_stem_matches_nltk_default_mode():
    """rouge-score uses nltk's PorterStemmer() default mode, NLTK_EXTENSIONS."""
    nltk_stem = porter.PorterStemmer().stem
    rng = random.Random(0)
    suffixes = ("ational tional enci anci izer bli abli alli entli eli ousli ization ation ator alism "
                "iveness fulness ousness aliti iviti biliti fulli logi icate ative alize iciti ical ful ness "
                "al ance ence er ic able ible ant ement ment ent ion sion tion ou ism ate iti ous ive ize e ll "
                "s ss sses ies ied eed ed ing y at bl iz ly yy ying").split()
    words = set(STEM_WORDS) | {"y", "ys", "yies", "ab", "yyyyyyyy", "y" * 3000, "a1b2", "2000s", "1990ies"}
    while len(words) < 8000:
        stem = "".join(rng.choice("aeiouybcdfghjklmnprstvwxzlsz0123") for _ in range(rng.randint(1, 6)))
        words.add(stem + "".join(rng.choice(suffixes) for _ in range(rng.randint(0, 3))))
    bad = [(w, nltk_stem(w), rouge.porter_stem(w)) for w in words if nltk_stem(w) != rouge.porter_stem(w)]
    assert not bad, bad[:10]


def test_tokenize_matches_rouge_score(scorer):
    tok = scorer._tokenizer.tokenize
    rng = random.Random(1)
    texts = [_text(rng, rng.randint(0, 40)) for _ in range(500)]
    texts += ["", "   ", "İİ \u212a K", "ﬁ ﬂ", "a_b-c.d/e", "don't won't", "x\u00a0y\u2003z", "ÀÉÎ õ ü"]
    for t in texts:
        assert rouge.tokenize(t) == tok(t), t


def test_rouge_l_matches_rouge_score(scorer):
    worst = 0.0
    for refs, pred in _pairs(seed=2, count=2500):
        ours, theirs = rouge.rouge_l(refs, pred), _theirs(scorer, refs, pred)
        assert abs(ours - theirs) <= 1e-12, (refs, pred, ours, theirs)
        worst = max(worst, abs(ours - theirs))
    assert worst == 0.0  # bit-identical, not merely close


def test_rouge_l_matches_rouge_score_long_texts(scorer):
    rng = random.Random(3)
    for _ in range(8):
        refs = [_text(rng, rng.randint(250, 320)) for _ in range(rng.randint(1, 2))]
        pred = _mutate(rng, refs[0]) if rng.random() < 0.75 else _text(rng, 300)
        assert rouge.rouge_l(refs, pred) == _theirs(scorer, refs, pred)


def test_edge_cases(scorer):
    for refs, pred in [([""], ""), (["a b"], ""), ([""], "a b"), (["  "], "!!"), (["日本"], "日本"),
                       (["the cat"], "the cat"), (["running fast"], "runs fast"), (["x", "x"], "x"),
                       (["a b c", "c b a"], "a b"), (["b a", "a b"], "a b")]:
        assert rouge.rouge_l(refs, pred) == _theirs(scorer, refs, pred), (refs, pred)
    assert rouge.rouge_l([""], "") == 0.0
    assert rouge.rouge_l(["Running, fast!"], "run fast") == 1.0
    with pytest.raises(ValueError):
        rouge.rouge_l([], "a")
    with pytest.raises(TypeError):
        rouge.rouge_l("a reference", "a")


def _dp_lcs(a, b) -> int:
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


def test_bit_parallel_lcs_matches_dp():
    rng = random.Random(4)
    for _ in range(1500):
        alphabet = rng.choice([1, 2, 3, 5, 20, 100])
        a = [rng.randrange(alphabet) for _ in range(rng.choice([0, 1, 2, rng.randint(0, 40), rng.randint(60, 150)]))]
        b = [rng.randrange(alphabet) for _ in range(rng.choice([0, 1, 2, rng.randint(0, 40), rng.randint(60, 150)]))]
        assert rouge.lcs_length(a, b) == _dp_lcs(a, b), (a, b)
        assert rouge.lcs_length(b, a) == rouge.lcs_length(a, b)


def test_batch_equals_per_item():
    pairs = _pairs(seed=5, count=600)
    rng = random.Random(5)
    # Reference lists that repeat (shared objects and equal copies), as candidates of one example do.
    shared = [refs for refs, _ in pairs[:50]]
    refs_list = [rng.choice(shared) if rng.random() < 0.5 else list(refs) for refs, _ in pairs]
    preds = [pred for _, pred in pairs]
    assert rouge.rouge_l_batch(refs_list, preds) == [rouge.rouge_l(r, p) for r, p in zip(refs_list, preds)]
    assert rouge.rouge_l_batch([], []) == []
    with pytest.raises(ValueError):
        rouge.rouge_l_batch([["a"]], [])


def _speed_pairs(count: int) -> list[tuple[list[str], str]]:
    rng = random.Random(6)
    vocab = sorted({"".join(rng.choice("bcdfghlmnprst") + rng.choice("aeiou") for _ in range(rng.randint(1, 4)))
                    + rng.choice(["", "", "s", "ed", "ing", "ly", "ation", "er", "ness"]) for _ in range(3000)})
    weights = [1 / (i + 1) for i in range(len(vocab))]

    def sent() -> str:
        return " ".join(rng.choices(vocab, weights, k=rng.randint(30, 60))).capitalize() + "."

    pairs = []
    for _ in range(count):
        refs = [sent() for _ in range(rng.randint(1, 3))]
        pairs.append((refs, _mutate(rng, refs[0]) if rng.random() < 0.7 else sent()))
    return pairs


def test_at_least_10x_faster_than_rouge_score(scorer):
    """Robust on a loaded machine: the target is ~20x+, the bar 10x, and ours takes its best of 3 cold runs.

    rouge-score is timed on every 5th pair only (2-4 ms a pair), ours on all 2000.
    """
    pairs = _speed_pairs(2000)
    subset = pairs[::5]
    t0 = time.perf_counter()
    for refs, pred in subset:
        scorer.score_multi(refs, pred)
    theirs = (time.perf_counter() - t0) / len(subset)
    ours = float("inf")
    for _ in range(3):
        rouge._stem_token.cache_clear()  # no head start from earlier tests' stems
        t0 = time.perf_counter()
        for refs, pred in pairs:
            rouge.rouge_l(refs, pred)
        ours = min(ours, (time.perf_counter() - t0) / len(pairs))
    assert theirs / ours >= 10, f"only {theirs / ours:.1f}x faster ({1 / ours:.0f} vs {1 / theirs:.0f} pairs/s)"
