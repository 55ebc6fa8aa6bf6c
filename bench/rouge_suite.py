"""Suite `rouge`: our exact Rouge-L against rouge-score on the same Cappy-style pairs.

Why: Cappy labels every sampled candidate with Rouge-L against its example's
references, hundreds of thousands of them, so the labeller's speed matters,
and it must give exactly the oracle's numbers. The oracle is the paper's
`rouge_score.rouge_scorer.RougeScorer(['rougeL'], use_stemmer=True)
.score_multi(references, prediction)['rougeL'].fmeasure`; ours is
`cappy_jax.data.rouge.rouge_l_batch` (case `batch`: one call for all pairs,
each distinct reference tokenized once) and `rouge_l` (case `single`: one call
per pair). Every value is checked equal to rouge-score's (|diff| <= 1e-12) and
the suite fails if one is not.

The workload (`make_pairs`) is generated from a seed: examples with 1-3
references whose lengths in words are drawn like BIG-bench generation targets
(lognormal, median 10 words, capped at 200), and several predictions each,
shaped like the FLAN-T5 samples Cappy labels: exact copies, corrupted copies
(words dropped, inserted, replaced, swapped, re-inflected, re-cased, punctuated),
truncated or run-on copies, and unrelated text. Words come from a vocabulary of
English lemmas and their inflections, Zipf-weighted, with numbers and punctuation.

Our stem cache (`rouge._stem_token`, an lru_cache) is warm after the first
pass; `ours cold` is one pass after clearing it, the rest are warm, as in a
long labelling job. This suite imports rouge-score, never TensorFlow.
"""

from __future__ import annotations

import math
import random
import statistics
import time
from collections.abc import Sequence
from typing import Any

from bench import report
from bench.encoder_cpu import time_interleaved
from bench.report import Column

CASES = ("batch", "single")
DEFAULT_PAIRS = 5000
DEFAULT_STEPS = 5          # timed passes over all pairs, per side
DEFAULT_WARMUP = 1
# rouge-score is timed on at most this many pairs (the first ones); None = all pairs.
DEFAULT_THEIRS_PAIRS: int | None = None
PREDICTIONS_PER_EXAMPLE = (1, 17)  # uniform range; Cappy samples 17 candidates an example
TOLERANCE = 1e-12
SEED = 0

NOTE = ("Rouge-L F (rougeL, use_stemmer=True, best of 1-3 references) on generated Cappy-style pairs "
        "(references lognormal, median 10 words, capped at 200; predictions copies, corrupted or truncated "
        "copies and unrelated text); pairs/s = pairs ÷ median seconds per pass over all of them after "
        "warm-up, the sides taking turns; ours cold = first pass with our stem cache cleared; "
        "theirs = rouge_score RougeScorer.score_multi, one call per pair; ours/theirs = ratio of pairs/s "
        "(>1: ours faster); every value checked equal (max abs diff); other load = share of the cores "
        "other processes used while timing")

COLUMNS = (
    Column("case", "case"),
    Column("ours", "ours_function"),
    Column("pairs", "pairs", ",d"),
    Column("refs", "references", ",d"),
    Column("words/pair", "mean_words_per_pair", ".1f"),
    Column("ours pairs/s", "ours_pairs_per_s", ",.0f"),
    Column("ours cold pairs/s", "ours_cold_pairs_per_s", ",.0f"),
    Column("theirs pairs/s", "theirs_pairs_per_s", ",.0f"),
    Column("theirs pairs timed", "theirs_pairs", ",d"),
    Column("ours/theirs", "ratio", ".1f"),
    Column("max abs diff", "max_abs_diff", ".1e"),
    Column("steps", "steps", "d"),
    Column("other load", "other_load", ".0%"),
)

# --------------------------------------------------------------------------------------
# The workload.
# --------------------------------------------------------------------------------------

FUNCTION_WORDS = """the of and to a in is that it for on was with as be by at this are from or an
not have has had but his her they we you he she which their there were been one all would can will
what when who if so no more about up out into than then them some its only other also just over
after how do does did any these those may such most very where why each both""".split()

VERBS = """run walk talk die tie sing make take give find think tell become leave feel bring begin keep hold write
stand hear mean set meet pay sit speak lie lead read grow lose fall send build understand draw break
spend cut rise drive buy wear choose seek throw catch deal win forget apply carry move play believe
happen provide create consider appear serve expect suggest produce develop allow agree describe
remember offer remain increase reduce follow explain contain compute solve sort count translate
answer predict measure observe generate connect replace arrange repeat convert describe classify
identify generalize organize emphasize relate operate differ depend adjust hope try study cry
stop plan drop control refer occur prefer admit commit""".split()

NOUNS = """time year people way day man thing woman life child world school state family student group
country problem hand part place case week company system program question work government number
night point home water room mother area money story fact month lot right study book eye job word
business issue side kind head house service friend father power hour game line end member law car
city community name president team minute idea kid body information back parent face others level
office door health person art war history party result change morning reason research girl guy
moment air teacher force education answer sentence puzzle function matrix shape chess move board
element list string object arithmetic equation language translation relation generation condition
definition operation activity ability property category theory city box fox baby story""".split()

ADJECTIVES = """good new first last long great own other old right big high different small large
next early young important few public bad same able late hard major clear full special easy
strong certain free real whole low close sure short simple quick slow happy dark bright warm cold
careful useful hopeful effective formal general rational conditional relational natural national
final possible available similar sensitive""".split()

PUNCTUATION = [",", ".", "!", "?", ";", ":", "-", "(", ")", "'s", "\"", "--", "/"]


# Past tense and participle of the irregular verbs above (regular rules would write "buyed").
IRREGULAR_VERBS = {
    "run": ["ran"], "make": ["made"], "take": ["took", "taken"], "give": ["gave", "given"],
    "find": ["found"], "think": ["thought"], "tell": ["told"], "become": ["became"], "leave": ["left"],
    "feel": ["felt"], "bring": ["brought"], "begin": ["began", "begun"], "keep": ["kept"], "hold": ["held"],
    "write": ["wrote", "written"], "stand": ["stood"], "hear": ["heard"], "mean": ["meant"], "set": ["set"],
    "meet": ["met"], "pay": ["paid"], "sit": ["sat"], "speak": ["spoke", "spoken"], "lie": ["lay", "lain"],
    "lead": ["led"], "read": ["read"], "grow": ["grew", "grown"], "lose": ["lost"], "fall": ["fell", "fallen"],
    "send": ["sent"], "build": ["built"], "understand": ["understood"], "draw": ["drew", "drawn"],
    "break": ["broke", "broken"], "spend": ["spent"], "cut": ["cut"], "rise": ["rose", "risen"],
    "drive": ["drove", "driven"], "buy": ["bought"], "wear": ["wore", "worn"], "choose": ["chose", "chosen"],
    "seek": ["sought"], "throw": ["threw", "thrown"], "catch": ["caught"], "deal": ["dealt"], "win": ["won"],
    "forget": ["forgot", "forgotten"], "die": ["died"], "tie": ["tied"], "sing": ["sang", "sung"],
}
IRREGULAR_ING = {"lie": "lying", "die": "dying", "tie": "tying"}
GRADABLE = """long great old big high small large late hard clear full easy strong low close short
simple quick slow happy dark bright warm cold young early""".split()
IRREGULAR_GRADES = {"good": ["better", "best"], "bad": ["worse", "worst"]}


# Verbs that double their last consonant before -ed, -ing and -er (stress on the last syllable).
DOUBLING = frozenset("stop plan drop control refer prefer admit commit begin occur run sit win cut set forget".split())


def _doubles(v: str) -> bool:
    return v in DOUBLING or (len(v) <= 4 and v[-1] not in "aeiouwxy" and v[-2] in "aeiou"
                             and v[-3] not in "aeiou")


def _agent(v: str) -> str:
    if v.endswith("e"):
        return v + "r"
    if v.endswith("y") and v[-2] not in "aeiou":
        return v[:-1] + "ier"
    if _doubles(v):
        return v + v[-1] + "er"  # run -> runner
    return v + "er"


def _inflect_verb(v: str) -> list[str]:
    if v in IRREGULAR_VERBS:
        s = v + "es" if v.endswith(("s", "sh", "ch", "x", "z")) else v + "s"
        ing = IRREGULAR_ING.get(v, v[:-1] + "ing" if v.endswith("e") else v + v[-1] + "ing" if _doubles(v) else v + "ing")
        return [v, s, ing, *IRREGULAR_VERBS[v], _agent(v)]
    if v.endswith("e"):
        ing, ed = (v + "ing" if v.endswith("ee") else v[:-1] + "ing"), v + "d"
    elif v.endswith("y") and v[-2] not in "aeiou":
        ing, ed = v + "ing", v[:-1] + "ied"
    elif _doubles(v):
        ing, ed = v + v[-1] + "ing", v + v[-1] + "ed"  # stop -> stopping, stopped
    else:
        ing, ed = v + "ing", v + "ed"
    s = v[:-1] + "ies" if v.endswith("y") and v[-2] not in "aeiou" else \
        v + "es" if v.endswith(("s", "sh", "ch", "x", "z")) else v + "s"
    out = [v, s, ing, ed]
    if v.endswith("ize"):
        out.append(v[:-1] + "ation")
    elif v.endswith("ate"):
        out.append(v[:-1] + "ion")
    else:
        out.append(_agent(v))
    return out


def _inflect_noun(n: str) -> list[str]:
    if n.endswith("y") and n[-2] not in "aeiou":
        return [n, n[:-1] + "ies"]
    if n.endswith(("s", "sh", "ch", "x", "z")):
        return [n, n + "es"]
    return [n, n + "s", n + "'s"]


def _inflect_adjective(a: str) -> list[str]:
    y_stem = a[:-1] + "i" if a.endswith("y") else a
    adverb = a[:-1] + "y" if a.endswith("le") else a + "y" if a.endswith("ll") else y_stem + "ly"
    out = [a, adverb, y_stem + "ness"]
    if a in IRREGULAR_GRADES:
        out += IRREGULAR_GRADES[a]
    elif a in GRADABLE:
        stem = a[:-1] if a.endswith("e") else y_stem
        if len(a) <= 4 and a[-1] not in "aeiouwy" and a[-2] in "aeiou" and a[-3] not in "aeiou":
            stem = a + a[-1]  # big -> bigger
        out += [stem + "er", stem + "est"]
    return out


def vocabulary() -> tuple[list[str], list[float]]:
    """Words and Zipf weights: function words first (most frequent), then lemmas and inflections."""
    words: list[str] = list(FUNCTION_WORDS)
    for v in VERBS:
        words += _inflect_verb(v)
    for n in NOUNS:
        words += _inflect_noun(n)
    for a in ADJECTIVES:
        words += _inflect_adjective(a)
    seen: set[str] = set()
    words = [w for w in words if not (w in seen or seen.add(w))]
    # Shuffle the content words (deterministically) so Zipf rank is not alphabetical by lemma.
    head, tail = words[:len(FUNCTION_WORDS)], words[len(FUNCTION_WORDS):]
    random.Random(1234).shuffle(tail)
    words = head + tail
    weights = [1.0 / (rank + 2) ** 1.05 for rank in range(len(words))]
    return words, weights


class _Writer:
    """Draws words and texts; one instance per workload so the output depends on the seed only."""

    def __init__(self, seed: int):
        self.rng = random.Random(seed)
        self.words, weights = vocabulary()
        self.cum = list(_accumulate(weights))

    def word(self) -> str:
        r = self.rng.random()
        if r < 0.04:
            return str(self.rng.randint(0, 10 ** self.rng.randint(1, 5)))
        w = self.rng.choices(self.words, cum_weights=self.cum)[0]
        if r > 0.95:
            w = w.capitalize()
        elif r > 0.945:
            w = w.upper()
        return w

    def length(self, median: float = 10.0, sigma: float = 1.0, cap: int = 200) -> int:
        """Words in a BIG-bench-like generation target: mostly short, long tail."""
        return max(1, min(cap, round(math.exp(math.log(median) + sigma * self.rng.gauss(0.0, 1.0)))))

    def words_list(self, n: int) -> list[str]:
        return [self.word() for _ in range(n)]

    def render(self, words: Sequence[str]) -> str:
        """Joins words with spaces and occasional punctuation attached, sentence-style."""
        out = []
        for i, w in enumerate(words):
            out.append(w)
            r = self.rng.random()
            if r < 0.08:
                out[-1] += self.rng.choice(PUNCTUATION)
            elif r < 0.1 and i + 1 < len(words):
                out[-1] += "-"  # hyphenated compound: rouge splits it into two tokens
                continue
            out.append(" ")
        text = "".join(out).strip()
        if text and self.rng.random() < 0.5:
            text = text[0].upper() + text[1:]
        if text and self.rng.random() < 0.4:
            text += self.rng.choice([".", ".", "!", "?"])
        return text

    def corrupt(self, words: list[str]) -> list[str]:
        """A sampled-looking variant: a few edits proportional to the length."""
        w = list(words)
        edits = max(1, round(len(w) * self.rng.uniform(0.05, 0.6)))
        for _ in range(edits):
            op = self.rng.random()
            i = self.rng.randrange(len(w)) if w else 0
            if not w or op < 0.2:
                w.insert(i, self.word())
            elif op < 0.4:
                del w[i]
            elif op < 0.6:
                w[i] = self.word()
            elif op < 0.75 and len(w) > 1:
                j = min(len(w) - 1, i + 1)
                w[i], w[j] = w[j], w[i]
            elif op < 0.9:  # another inflection of the same lemma, or the same word re-cased
                base = w[i].lower().rstrip("'s")
                forms = [x for x in self.words if x.startswith(base[:max(3, len(base) - 3)])]
                w[i] = self.rng.choice(forms) if forms else w[i].capitalize()
            else:
                w[i] = w[i].upper() if self.rng.random() < 0.5 else w[i].lower()
        return w


def _accumulate(xs: Sequence[float]):
    total = 0.0
    for x in xs:
        total += x
        yield total


def make_pairs(n: int, seed: int = SEED,
               predictions_per_example: tuple[int, int] = PREDICTIONS_PER_EXAMPLE) -> tuple[list[list[str]], list[str]]:
    """`n` (references, prediction) pairs, grouped by example as Cappy labels them; same seed, same pairs."""
    wr = _Writer(seed)
    references: list[list[str]] = []
    predictions: list[str] = []
    while len(predictions) < n:
        ref_words = [wr.words_list(wr.length()) for _ in range(wr.rng.choice((1, 1, 1, 2, 3)))]
        refs = [wr.render(r) for r in ref_words]
        for _ in range(min(wr.rng.randint(*predictions_per_example), n - len(predictions))):
            base = wr.rng.choice(ref_words)
            kind = wr.rng.random()
            if kind < 0.05:  # the model reproduced a reference exactly
                pred = wr.rng.choice(refs)
            elif kind < 0.4:
                pred = wr.render(wr.corrupt(base))
            elif kind < 0.53:  # stopped early, or ran on (FLAN-T5 samples stop at 64 tokens)
                cut = wr.rng.randint(1, max(1, len(base)))
                pred = wr.render(base[:cut] if wr.rng.random() < 0.6 else
                                 (base + wr.words_list(wr.length(median=6)))[:64])
            elif kind < 0.98:  # unrelated text
                pred = wr.render(wr.words_list(min(64, wr.length())))
            else:  # degenerate samples: punctuation only, or empty
                pred = wr.rng.choice(["", ".", "?!", "--", " "])
            references.append(refs)
            predictions.append(pred)
    return references, predictions


# --------------------------------------------------------------------------------------
# The measurement.
# --------------------------------------------------------------------------------------

def max_abs_diff(ours: Sequence[float], theirs: Sequence[float]) -> float:
    return max((abs(a - b) for a, b in zip(ours, theirs, strict=True)), default=0.0)


def check_equal(ours: Sequence[float], theirs: Sequence[float], references: Sequence[Sequence[str]],
                predictions: Sequence[str], what: str) -> float:
    """Max abs difference; raises, naming the first offending pair, if any exceeds TOLERANCE."""
    diff = max_abs_diff(ours, theirs)
    if not diff <= TOLERANCE:  # also catches NaN
        i = next(i for i, (a, b) in enumerate(zip(ours, theirs)) if not abs(a - b) <= TOLERANCE)
        raise AssertionError(f"rouge suite: {what} differs from rouge-score by up to {diff!r}; first at pair {i}: "
                             f"ours {ours[i]!r}, rouge-score {theirs[i]!r}, references {list(references[i])!r}, "
                             f"prediction {predictions[i]!r}")
    return diff


def run(*, steps: int | None = None, warmup: int | None = None, cases: Sequence[str] | None = None,
        pairs: int | None = None, theirs_pairs: int | None = None, seed: int = SEED) -> list[dict[str, Any]]:
    """Times the chosen cases of ours and rouge-score on the same pairs; one record per case."""
    import importlib.metadata

    from rouge_score import rouge_scorer

    from cappy_jax.data import rouge

    cases = CASES if cases is None else tuple(cases)
    unknown = sorted(set(cases) - set(CASES))
    if unknown:
        raise ValueError(f"unknown rouge cases {unknown}; choose from {CASES}")
    steps = DEFAULT_STEPS if steps is None else steps
    warmup = DEFAULT_WARMUP if warmup is None else warmup
    pairs = DEFAULT_PAIRS if pairs is None else pairs
    theirs_pairs = DEFAULT_THEIRS_PAIRS if theirs_pairs is None else theirs_pairs
    theirs_n = pairs if theirs_pairs is None else min(pairs, theirs_pairs)
    if min(pairs, theirs_n, steps) < 1:
        raise ValueError("pairs, theirs_pairs and steps must be at least 1")

    references, predictions = make_pairs(pairs, seed)
    their_refs, their_preds = references[:theirs_n], predictions[:theirs_n]
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)

    def theirs() -> list[float]:
        return [scorer.score_multi(r, p)["rougeL"].fmeasure for r, p in zip(their_refs, their_preds)]

    sides = {
        "batch": lambda: rouge.rouge_l_batch(references, predictions),
        "single": lambda: [rouge.rouge_l(r, p) for r, p in zip(references, predictions)],
    }

    # Cold pass first (empty stem cache), then equality on every pair rouge-score scores.
    cold_s: dict[str, float] = {}
    values: dict[str, list[float]] = {}
    for case in cases:
        rouge._stem_token.cache_clear()
        start = time.perf_counter()
        values[case] = sides[case]()
        cold_s[case] = time.perf_counter() - start
    oracle = theirs()
    diffs = {case: check_equal(values[case][:theirs_n], oracle, their_refs, their_preds,
                               f"rouge.{'rouge_l_batch' if case == 'batch' else 'rouge_l'}") for case in cases}

    with report.OtherLoad() as other:
        times = time_interleaved({**{c: sides[c] for c in cases}, "theirs": theirs}, steps, warmup)

    theirs_s = statistics.median(times["theirs"])
    ref_count = sum(len(r) for r in references)
    words = sum(len(p.split()) + sum(len(r.split()) for r in refs) for refs, p in zip(references, predictions))
    records = []
    for case in cases:
        ours_s = statistics.median(times[case])
        record = {
            "case": case,
            "ours_function": "rouge_l_batch" if case == "batch" else "rouge_l",
            "pairs": pairs,
            "references": ref_count,
            "distinct_references": len({r for refs in references for r in refs}),
            "mean_words_per_pair": words / pairs,
            "seed": seed,
            "steps": steps,
            "warmup": warmup,
            "ours_s": ours_s,
            "ours_s_min": min(times[case]),
            "ours_pairs_per_s": pairs / ours_s,
            "ours_cold_pairs_per_s": pairs / cold_s[case],
            "theirs_pairs": theirs_n,
            "theirs_s": theirs_s,
            "theirs_s_min": min(times["theirs"]),
            "theirs_pairs_per_s": theirs_n / theirs_s,
            "max_abs_diff": diffs[case],
            "checked_pairs": theirs_n,
            "tolerance": TOLERANCE,
            "other_load": other.share,
            "needs_tensorflow": False,
            "rouge_score_version": importlib.metadata.version("rouge-score"),
            "nltk_version": importlib.metadata.version("nltk"),
        }
        record["ratio"] = record["ours_pairs_per_s"] / record["theirs_pairs_per_s"]
        records.append(record)
    return records
