"""Rouge-L F-measure, bit-identical to rouge-score's, without rouge-score or nltk at runtime.

Cappy labels corrupted references and LLM samples with Rouge-L against the
references, for hundreds of thousands of candidates, so this has to be fast
and must agree exactly with the oracle the paper used:

    rouge_score.rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
        .score_multi(references, prediction)["rougeL"].fmeasure

What rouge-score 0.1.2 does, reproduced here:

* tokenization: ``text.lower()``, every run of ``[^a-z0-9]`` becomes one space,
  split on whitespace, drop empty tokens; tokens longer than 3 characters are
  Porter-stemmed with ``nltk.stem.porter.PorterStemmer()``: the DEFAULT mode,
  ``NLTK_EXTENSIONS`` (not ``ORIGINAL_ALGORITHM``), ported below;
* LCS-based score: 0 when either side has no tokens, else
  ``p = lcs / len(pred)``, ``r = lcs / len(ref)``, ``f = 2 * p * r / (p + r)``
  (0.0 when ``p + r == 0``), same operations in the same order so the floats
  are identical;
* ``score_multi``: the Score of the reference with the largest f-measure
  (``np.argmax``, first on ties; only f is returned here, so ties do not
  matter); an empty reference list raises ValueError there and here.

Speed comes from a per-word stem cache, a bit-parallel LCS (Hyyrö's bit-vector
recurrence on Python ints over the prediction's match masks: O(len(reference))
big-int operations per reference) and, in `rouge_l_batch`, tokenizing each
distinct reference string once.
"""

from __future__ import annotations

import functools
import re
from typing import Hashable, Mapping, Sequence

__all__ = ["tokenize", "rouge_l", "rouge_l_batch", "porter_stem", "lcs_length"]

# rouge-score replaces runs of [^a-z0-9] by a space and splits on whitespace: that yields
# exactly the maximal [a-z0-9] runs, which findall returns about twice as fast.
_ALNUM_RUNS = re.compile(r"[a-z0-9]+").findall

# --------------------------------------------------------------------------------------
# Porter stemmer, NLTK_EXTENSIONS mode (nltk 3.x `PorterStemmer()` default), ported rule
# for rule. Characters other than a, e, i, o, u and y are consonants (digits included).
# --------------------------------------------------------------------------------------

_VOWELS = frozenset("aeiou")

# nltk's table of irregular forms (checked before any rule).
_IRREGULAR = {
    "sky": "sky", "skies": "sky", "dying": "die", "lying": "lie", "tying": "tie",
    "news": "news", "innings": "inning", "inning": "inning", "outings": "outing",
    "outing": "outing", "cannings": "canning", "canning": "canning", "howe": "howe",
    "proceed": "proceed", "exceed": "exceed", "succeed": "succeed",
}


def _is_cons(word: str, i: int) -> bool:
    """Porter's consonant test; a run of y's is resolved iteratively (no recursion limit)."""
    ch = word[i]
    if ch in _VOWELS:
        return False
    if ch != "y":
        return True
    negate = False
    while i > 0 and word[i] == "y":
        negate = not negate
        i -= 1
    return (word[i] not in _VOWELS) != negate


def _measure(stem: str) -> int:
    """m in [C](VC){m}[V]: the number of vowel->consonant transitions."""
    m = 0
    prev_vowel = False
    for i, ch in enumerate(stem):
        # y is a vowel exactly when it follows a consonant.
        if ch in _VOWELS or (ch == "y" and i > 0 and not prev_vowel):
            prev_vowel = True
        else:
            if prev_vowel:
                m += 1
            prev_vowel = False
    return m


def _contains_vowel(stem: str) -> bool:
    prev_vowel = False
    for i, ch in enumerate(stem):
        if ch in _VOWELS or (ch == "y" and i > 0 and not prev_vowel):
            return True
        prev_vowel = False
    return False


def _ends_double_consonant(word: str) -> bool:
    return len(word) >= 2 and word[-1] == word[-2] and _is_cons(word, len(word) - 1)


def _ends_cvc(word: str) -> bool:
    n = len(word)
    if n >= 3:
        return (_is_cons(word, n - 3) and not _is_cons(word, n - 2) and _is_cons(word, n - 1)
                and word[-1] not in "wxy")
    # NLTK extension: a two-letter vc word counts too.
    return n == 2 and not _is_cons(word, 0) and _is_cons(word, 1)


def _m_gt_0(stem: str) -> bool:
    return _measure(stem) > 0


def _m_gt_1(stem: str) -> bool:
    return _measure(stem) > 1


def _apply_rules(word: str, rules) -> str:
    """First rule whose suffix matches decides: replace if its condition holds, else stop."""
    for suffix, replacement, condition in rules:
        if word.endswith(suffix):
            stem = word[: -len(suffix)]
            return stem + replacement if condition(stem) else word
    return word


_STEP2_RULES = (
    ("ational", "ate", _m_gt_0),
    ("tional", "tion", _m_gt_0),
    ("enci", "ence", _m_gt_0),
    ("anci", "ance", _m_gt_0),
    ("izer", "ize", _m_gt_0),
    ("bli", "ble", _m_gt_0),
    ("alli", "al", _m_gt_0),
    ("entli", "ent", _m_gt_0),
    ("eli", "e", _m_gt_0),
    ("ousli", "ous", _m_gt_0),
    ("ization", "ize", _m_gt_0),
    ("ation", "ate", _m_gt_0),
    ("ator", "ate", _m_gt_0),
    ("alism", "al", _m_gt_0),
    ("iveness", "ive", _m_gt_0),
    ("fulness", "ful", _m_gt_0),
    ("ousness", "ous", _m_gt_0),
    ("aliti", "al", _m_gt_0),
    ("iviti", "ive", _m_gt_0),
    ("biliti", "ble", _m_gt_0),
    ("fulli", "ful", _m_gt_0),
    # nltk tests the measure of word[:-3], i.e. the stem with its 'l'.
    ("logi", "log", lambda stem: _measure(stem + "l") > 0),
)

_STEP3_RULES = (
    ("icate", "ic", _m_gt_0),
    ("ative", "", _m_gt_0),
    ("alize", "al", _m_gt_0),
    ("iciti", "ic", _m_gt_0),
    ("ical", "ic", _m_gt_0),
    ("ful", "", _m_gt_0),
    ("ness", "", _m_gt_0),
)

_STEP4_RULES = (
    ("al", "", _m_gt_1),
    ("ance", "", _m_gt_1),
    ("ence", "", _m_gt_1),
    ("er", "", _m_gt_1),
    ("ic", "", _m_gt_1),
    ("able", "", _m_gt_1),
    ("ible", "", _m_gt_1),
    ("ant", "", _m_gt_1),
    ("ement", "", _m_gt_1),
    ("ment", "", _m_gt_1),
    ("ent", "", _m_gt_1),
    ("ion", "", lambda stem: _measure(stem) > 1 and stem[-1] in ("s", "t")),
    ("ou", "", _m_gt_1),
    ("ism", "", _m_gt_1),
    ("ate", "", _m_gt_1),
    ("iti", "", _m_gt_1),
    ("ous", "", _m_gt_1),
    ("ive", "", _m_gt_1),
    ("ize", "", _m_gt_1),
)


def _step1a(w: str) -> str:
    if w.endswith("ies") and len(w) == 4:  # NLTK: 'dies' -> 'die', but 'flies' -> 'fli'
        return w[:-3] + "ie"
    if w.endswith("sses"):
        return w[:-2]
    if w.endswith("ies"):
        return w[:-2]
    if w.endswith("ss"):
        return w
    if w.endswith("s"):
        return w[:-1]
    return w


def _step1b(w: str) -> str:
    if w.endswith("ied"):  # NLTK: 'died' -> 'die', 'spied' -> 'spi'
        return w[:-3] + ("ie" if len(w) == 4 else "i")
    if w.endswith("eed"):
        stem = w[:-3]
        return stem + "ee" if _measure(stem) > 0 else w
    if w.endswith("ed") and _contains_vowel(w[:-2]):
        s = w[:-2]
    elif w.endswith("ing") and _contains_vowel(w[:-3]):
        s = w[:-3]
    else:
        return w
    if s.endswith(("at", "bl", "iz")):
        return s + "e"
    if _ends_double_consonant(s):
        # nltk stops here either way: no '(m=1 and *o) -> E' after a double consonant.
        return s if s[-1] in ("l", "s", "z") else s[:-1]
    if _measure(s) == 1 and _ends_cvc(s):
        return s + "e"
    return s


def _step1c(w: str) -> str:
    if w.endswith("y"):
        s = w[:-1]
        if len(s) > 1 and _is_cons(s, len(s) - 1):  # NLTK: (*c and not c) Y -> I
            return s + "i"
    return w


def _step2(w: str) -> str:
    # NLTK applies ALLI -> AL first and, if it fires, runs step 2 again.
    if w.endswith("alli") and _measure(w[:-4]) > 0:
        return _step2(w[:-4] + "al")
    return _apply_rules(w, _STEP2_RULES)


def _step5a(w: str) -> str:
    if w.endswith("e"):
        s = w[:-1]
        m = _measure(s)
        if m > 1 or (m == 1 and not _ends_cvc(s)):
            return s
    return w


def _step5b(w: str) -> str:
    if w.endswith("ll") and _measure(w[:-1]) > 1:
        return w[:-1]
    return w


def porter_stem(word: str) -> str:
    """Porter stem of `word`, equal to nltk's `PorterStemmer().stem(word)` (NLTK_EXTENSIONS)."""
    w = word.lower()
    if w in _IRREGULAR:
        return _IRREGULAR[w]
    if len(word) <= 2:
        return w
    w = _step1a(w)
    w = _step1b(w)
    w = _step1c(w)
    w = _step2(w)
    w = _apply_rules(w, _STEP3_RULES)
    w = _apply_rules(w, _STEP4_RULES)
    w = _step5a(w)
    return _step5b(w)


# A cache on a pure function (str -> str): it only saves work, never changes an answer.
# Bounded so an open-ended vocabulary cannot grow it without limit.
@functools.lru_cache(maxsize=1 << 18)
def _stem_token(token: str) -> str:
    """rouge-score stems only tokens longer than 3 characters."""
    return porter_stem(token) if len(token) > 3 else token


def tokenize(text: str) -> list[str]:
    """rouge-score's tokens (lowercase, [a-z0-9] runs, Porter-stemmed when longer than 3).

    rouge-score finally drops tokens not matching ^[a-z0-9]+$; no filter is needed
    here because every token is a non-empty [a-z0-9] run and stemming never
    empties a token longer than 3 characters nor adds other characters.
    """
    return list(map(_stem_token, _ALNUM_RUNS(text.lower())))


# --------------------------------------------------------------------------------------
# Bit-parallel LCS length.
# --------------------------------------------------------------------------------------

def _match_masks(tokens: Sequence[Hashable]) -> dict:
    """token -> int with bit i set where tokens[i] is that token."""
    masks: dict = {}
    bit = 1
    for t in tokens:
        masks[t] = masks.get(t, 0) | bit
        bit <<= 1
    return masks


def _lcs_from_masks(masks: Mapping, m: int, seq: Sequence[Hashable]) -> int:
    """LCS length of the m-token sequence behind `masks` and `seq` (Hyyrö 2004).

    V starts all ones over m bits; for each element with match mask M:
    U = V & M; V = (V + U) | (V - U). The LCS length is the number of zero bits
    among V's low m bits. Carries out of bit m-1 only touch higher bits and never
    flow back down, so V is masked once at the end instead of every step.
    """
    full = (1 << m) - 1
    v = full
    get = masks.get
    for t in seq:
        mt = get(t)
        if mt is not None:  # an element absent from the other side leaves V unchanged
            u = v & mt
            v = (v + u) | (v - u)
    return m - (v & full).bit_count()


def lcs_length(a: Sequence[Hashable], b: Sequence[Hashable]) -> int:
    """Length of the longest common subsequence of `a` and `b`."""
    if not a or not b:
        return 0
    return _lcs_from_masks(_match_masks(a), len(a), b)


# --------------------------------------------------------------------------------------
# Rouge-L.
# --------------------------------------------------------------------------------------

def _best_f(pred: Sequence[str], refs: Sequence[Sequence[str]]) -> float:
    """max over references of rouge-score's LCS f-measure, with the same float operations.

    LCS is symmetric, so the match masks are built once over the prediction and
    each reference is streamed through them.
    """
    n = len(pred)
    if not n:
        return 0.0  # rouge-score scores an empty side as 0
    masks = _match_masks(pred)
    best = 0.0
    for ref in refs:
        m = len(ref)
        if not m:
            continue
        lcs = _lcs_from_masks(masks, n, ref)
        if not lcs:
            continue
        precision = lcs / n
        recall = lcs / m
        f = 2 * precision * recall / (precision + recall)
        if f > best:
            best = f
    return best


def _check_references(references: Sequence[str]) -> None:
    if isinstance(references, str):
        raise TypeError("references must be a sequence of strings, not one string")
    if len(references) == 0:
        # rouge-score's score_multi fails too (np.argmax of an empty list).
        raise ValueError("rouge_l needs at least one reference")


def rouge_l(references: Sequence[str], prediction: str) -> float:
    """Rouge-L F of `prediction` against its best reference, as rouge-score's score_multi."""
    _check_references(references)
    return _best_f(tokenize(prediction), [tokenize(r) for r in references])


def rouge_l_batch(references: Sequence[Sequence[str]], predictions: Sequence[str]) -> list[float]:
    """`rouge_l` per item; each distinct reference string is tokenized once per call."""
    if len(references) != len(predictions):
        raise ValueError(f"{len(references)} reference lists for {len(predictions)} predictions")
    ref_tokens: dict[str, list[str]] = {}  # local to this call: no state leaks out
    out: list[float] = []
    for refs, prediction in zip(references, predictions):
        _check_references(refs)
        toks = []
        for r in refs:
            t = ref_tokens.get(r)
            if t is None:
                t = ref_tokens[r] = tokenize(r)
            toks.append(t)
        out.append(_best_f(tokenize(prediction), toks))
    return out
