"""Cappy's weak supervision: each `Example` becomes labelled `Candidate`s.

Cappy learns to score (instruction, response) pairs with labels in [0, 1]; most
labels are weak, computed rather than annotated. Per example of one task:

- generation examples: every reference is a `REFERENCE` (1.0);
- classification examples (`choices` non-empty): every distinct choice is a
  `CHOICE`, 1.0 if it is a reference else 0.0; the choices are the complete
  candidate set, so nothing else is added (no negatives, corruptions or samples);
- `NEGATIVE` (0.0): references of OTHER examples of the SAME task, never equal
  (whitespace/case-normalized) to one of the example's own references;
  `negatives_per_positive` per reference, as the reference implementation's one
  other-example reference per positive;
- `CORRUPTED`: a reference with token deletions, an adjacent swap, a truncation
  or words replaced by words of other references of the task: cheap near-misses
  without an LLM, labelled with Rouge-L against the references;
- `llm:<mode>`: LLM responses (`samples`, from `cappy_jax.data.llm`), labelled
  with Rouge-L against the references.

Within one example no response text appears twice: the first occurrence wins,
in the order references, negatives, corruptions, LLM samples (so an LLM sample
that repeats a reference is not emitted again, and repeated samples keep the
first one's mode). Empty (whitespace-only) responses are never emitted.

Everything is a pure function of (examples, settings, seed, samples): one
`random.Random(seed ^ stable_hash(task))` drives all draws, in example order.
"""

from __future__ import annotations

import dataclasses
import hashlib
import random
from collections.abc import Callable, Iterator, Mapping, Sequence

from cappy_jax.data.records import CHOICE, CORRUPTED, LLM_PREFIX, NEGATIVE, REFERENCE, Candidate, Example
from cappy_jax.data.rouge import rouge_l_batch

CORRUPTION_OPS = ("delete", "swap", "truncate", "replace")

# Draws per wanted item before falling back to an exhaustive scan (negatives) or
# giving up (corruptions): rejection sampling stays O(1) per draw on big tasks.
_ATTEMPTS_PER_DRAW = 8

# Examples whose candidates `stream_candidates` makes (and labels with Rouge-L) at a time.
STREAM_CHUNK = 1024

Samples = Mapping[str, Sequence[tuple[str, str]]]  # Example.group_id -> [(mode, text)] LLM responses


@dataclasses.dataclass(frozen=True, kw_only=True)
class CandidateSettings:
    """Which candidates to build, and how many.

    `negatives_per_positive`: cross-example negatives per reference (0 disables).
    `corruptions_per_reference`: corrupted copies per reference (0 disables).
    `include_references`: emit generation references as 1.0 candidates (choices
    of classification examples are always emitted).
    `corruption_ops`: which edits `corrupt` may pick from (`CORRUPTION_OPS`).
    `max_edit_fraction`: at most this fraction of a reference's tokens is deleted
    or replaced by one corruption (at least one token).
    """

    negatives_per_positive: int = 1
    corruptions_per_reference: int = 0
    include_references: bool = True
    corruption_ops: tuple[str, ...] = CORRUPTION_OPS
    max_edit_fraction: float = 0.25

    def __post_init__(self) -> None:
        if self.negatives_per_positive < 0 or self.corruptions_per_reference < 0:
            raise ValueError("negatives_per_positive and corruptions_per_reference must be >= 0")
        unknown = set(self.corruption_ops) - set(CORRUPTION_OPS)
        if unknown or not self.corruption_ops:
            raise ValueError(f"corruption_ops must be a non-empty subset of {CORRUPTION_OPS}, got {self.corruption_ops}")
        if not 0.0 < self.max_edit_fraction <= 1.0:
            raise ValueError(f"max_edit_fraction must be in (0, 1], got {self.max_edit_fraction}")


def stable_hash(text: str) -> int:
    """A 64-bit hash that is the same in every process (Python's `hash` is salted per run)."""
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big")


def normalize(text: str) -> str:
    """Whitespace- and case-insensitive form used to decide that two responses are the same answer."""
    return " ".join(text.split()).casefold()


def corrupt(reference: str, op: str, rng: random.Random, vocabulary: Sequence[str] = (),
            max_edit_fraction: float = 0.25) -> str | None:
    """One corruption of `reference` by `op` on whitespace tokens; None when `op` cannot apply.

    delete: drop 1..k tokens; swap: exchange two adjacent tokens; truncate: keep a
    strict prefix; replace: put 1..k words drawn from `vocabulary` in place of tokens.
    k = max(1, floor(max_edit_fraction * n)). Deleting, swapping or truncating a
    single token would empty it or change nothing, so those need two tokens.
    """
    tokens = reference.split()
    n = len(tokens)
    k = max(1, int(max_edit_fraction * n))
    if op == "delete":
        if n < 2:
            return None
        drop = set(rng.sample(range(n), rng.randint(1, min(k, n - 1))))
        return " ".join(t for i, t in enumerate(tokens) if i not in drop)
    if op == "swap":
        if n < 2:
            return None
        i = rng.randrange(n - 1)
        tokens[i], tokens[i + 1] = tokens[i + 1], tokens[i]
        return " ".join(tokens)
    if op == "truncate":
        if n < 2:
            return None
        return " ".join(tokens[: rng.randint(1, n - 1)])
    if op == "replace":
        if n < 1 or not vocabulary:
            return None
        for i in rng.sample(range(n), rng.randint(1, min(k, n))):
            tokens[i] = vocabulary[rng.randrange(len(vocabulary))]
        return " ".join(tokens)
    raise ValueError(f"unknown corruption op {op!r}; expected one of {CORRUPTION_OPS}")


@dataclasses.dataclass
class _Group:
    """The candidates of one example while they are built: dedup by exact (stripped) text."""

    example: Example
    seen: set[str] = dataclasses.field(default_factory=set)
    items: list[tuple[str, str, float | None]] = dataclasses.field(default_factory=list)  # response, kind, label

    def add(self, response: str, kind: str, label: float | None) -> bool:
        """Append unless empty or already present; label None means 'Rouge-L later'."""
        text = response.strip()
        if not text or text in self.seen:
            return False
        self.seen.add(text)
        self.items.append((response, kind, label))
        return True


def _draw_negatives(i: int, own: set[str], pool: Sequence[tuple[int, str, str]], count: int,
                    rng: random.Random, taken: set[str]) -> list[str]:
    """`count` references of other examples, none normalizing to `own` or to one already `taken`.

    Rejection sampling over the task's (example index, reference, normalized) pool
    weights a reference by how often it occurs, as drawing a random other example
    does. When a small or repetitive task makes rejections pile up, a shuffled
    scan finds the remaining valid ones (or proves there are none).
    """
    out: list[str] = []

    def ok(entry: tuple[int, str, str]) -> bool:
        j, _, norm = entry
        return j != i and norm and norm not in own and norm not in taken

    for _ in range(_ATTEMPTS_PER_DRAW * count):
        if len(out) == count:
            return out
        entry = pool[rng.randrange(len(pool))]
        if ok(entry):
            out.append(entry[1])
            taken.add(entry[2])
    if len(out) < count:
        order = list(range(len(pool)))
        rng.shuffle(order)
        for idx in order:
            if len(out) == count:
                break
            if ok(pool[idx]):
                out.append(pool[idx][1])
                taken.add(pool[idx][2])
    return out


def candidates_for_task(examples: Sequence[Example], *, settings: CandidateSettings, seed: int,
                        samples: Samples | None = None) -> list[Candidate]:
    """The labelled candidates of all `examples` of one task, in example order.

    `samples` maps `Example.group_id` -> [(mode, text)] LLM responses; it may hold
    other tasks' groups too. Same inputs and seed give the identical list.
    """
    return list(stream_candidates(examples, settings=settings, seed=seed, samples=samples))


def stream_candidates(examples: Sequence[Example], *, settings: CandidateSettings, seed: int,
                      samples: Samples | None = None,
                      sampler: Callable[[Sequence[Example]], Samples] | None = None,
                      chunk: int = STREAM_CHUNK) -> Iterator[Candidate]:
    """`candidates_for_task` as it is made, `chunk` examples at a time: a big task's candidates need not be
    held at once (BIG-bench's intersect_geometry: 250,000 examples of 41 choices each). The inputs are
    checked before the first candidate; the candidates do not depend on `chunk`.

    `sampler` (instead of `samples`): called with each chunk's generation examples (classification examples
    take no samples), in order, just before their candidates are made, so a task's LLM samples are held a
    chunk at a time too. The samples then come from fixed chunks of the task's examples, whatever runs the
    build (an LLM backend's output may depend on which instructions share a batch: `llm.HFBackend` seeds
    each batch)."""
    if samples is not None and sampler is not None:
        raise ValueError("pass samples or a sampler, not both")
    if not examples:
        return iter(())
    task = examples[0].task
    group_ids: set[str] = set()
    for ex in examples:
        if ex.task != task:
            raise ValueError(f"candidates_for_task takes one task; got {task!r} and {ex.task!r}")
        if ex.group_id in group_ids:
            raise ValueError(f"duplicate example {ex.group_id!r}")
        group_ids.add(ex.group_id)
    fixed = samples or {}
    return _stream(examples, task, settings, seed, sampler or (lambda _: fixed), chunk)


def _stream(examples: Sequence[Example], task: str, settings: CandidateSettings, seed: int,
            sampler: Callable[[Sequence[Example]], Samples], chunk: int) -> Iterator[Candidate]:
    rng = random.Random(seed ^ stable_hash(task))

    # Pools over the task: references for negatives, words (with their example) for replacements.
    ref_pool = [(i, r, normalize(r)) for i, ex in enumerate(examples) for r in ex.references]
    word_pool = ([(i, w) for i, ex in enumerate(examples) for r in ex.references for w in r.split()]
                 if settings.corruptions_per_reference else [])

    for start in range(0, len(examples), chunk):
        part = examples[start:start + chunk]
        wanted = [ex for ex in part if not ex.is_classification]  # choices are a complete candidate set
        samples = sampler(wanted) if wanted else {}
        yield from _labelled(task, [_candidates_of(start + k, ex, settings, rng, ref_pool, word_pool, samples)
                                    for k, ex in enumerate(part)])


def _candidates_of(i: int, ex: Example, settings: CandidateSettings, rng: random.Random,
                   ref_pool: Sequence[tuple[int, str, str]], word_pool: Sequence[tuple[int, str]],
                   samples: Samples) -> _Group:
    """One example's candidates; those labelled None wait for Rouge-L (`_labelled`)."""
    group = _Group(ex)
    if ex.is_classification:
        refs = set(ex.references)
        for choice in ex.choices:
            group.add(choice, CHOICE, 1.0 if choice in refs else 0.0)
        return group
    own = {normalize(r) for r in ex.references}
    if settings.include_references:
        for r in ex.references:
            group.add(r, REFERENCE, 1.0)
    if settings.negatives_per_positive:
        taken: set[str] = set()
        for _ in ex.references:
            for neg in _draw_negatives(i, own, ref_pool, settings.negatives_per_positive, rng, taken):
                group.add(neg, NEGATIVE, 0.0)
    if settings.corruptions_per_reference:
        vocabulary = _other_words(i, word_pool, rng)
        for r in ex.references:
            made = 0
            for _ in range(_ATTEMPTS_PER_DRAW * settings.corruptions_per_reference):
                if made == settings.corruptions_per_reference:
                    break
                op = settings.corruption_ops[rng.randrange(len(settings.corruption_ops))]
                text = corrupt(r, op, rng, vocabulary, settings.max_edit_fraction)
                if text is None or normalize(text) in own:
                    continue
                made += group.add(text, CORRUPTED, None)
    for mode, text in samples.get(ex.group_id, ()):
        if not isinstance(mode, str) or not mode:
            raise ValueError(f"{ex.group_id}: LLM sample mode must be a non-empty str, got {mode!r}")
        group.add(text.strip(), LLM_PREFIX + mode, None)
    return group


def _labelled(task: str, groups: Sequence[_Group]) -> Iterator[Candidate]:
    """The groups' candidates, Rouge-L for the corrupted and sampled ones in one batched call."""
    pending = [(g, k) for g in groups for k, (_, _, label) in enumerate(g.items) if label is None]
    scores = rouge_l_batch([g.example.references for g, _ in pending], [g.items[k][0] for g, k in pending])
    for (g, k), score in zip(pending, scores):
        response, kind, _ = g.items[k]
        g.items[k] = (response, kind, float(score))
    for g in groups:
        for response, kind, label in g.items:
            yield Candidate(task=task, group_id=g.example.group_id, instruction=g.example.instruction,
                            response=response, label=label, kind=kind)


def _other_words(i: int, word_pool: Sequence[tuple[int, str]], rng: random.Random,
                 size: int = 16) -> list[str]:
    """Up to `size` words from references of examples other than `i`, for replacement corruptions."""
    words: list[str] = []
    if not word_pool:
        return words
    for _ in range(_ATTEMPTS_PER_DRAW * size):
        if len(words) == size:
            break
        j, w = word_pool[rng.randrange(len(word_pool))]
        if j != i:
            words.append(w)
    return words
