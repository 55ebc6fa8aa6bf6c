"""Weak-supervision labels: kinds, labels, negatives, corruptions, LLM samples, determinism."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from cappy_jax.data.candidates import (CORRUPTION_OPS, CandidateSettings, candidates_for_task, corrupt, normalize,
                                       stable_hash, stream_candidates)
from cappy_jax.data.records import CHOICE, CORRUPTED, NEGATIVE, REFERENCE, Candidate, Example
from cappy_jax.data.rouge import rouge_l


def gen(task: str, i: int, *refs: str) -> Example:
    return Example(task=task, example_id=str(i), instruction=f"{task} instruction {i}", references=tuple(refs))


def gen_task(n: int = 12, task: str = "summ") -> list[Example]:
    return [gen(task, i, f"the answer number {i} is about topic {i % 3}", f"alternative answer {i}")
            for i in range(n)]


def test_generation_references_and_negatives() -> None:
    examples = gen_task()
    cands = candidates_for_task(examples, settings=CandidateSettings(negatives_per_positive=2), seed=0)
    by_group: dict[str, list[Candidate]] = {}
    for c in cands:
        by_group.setdefault(c.group_id, []).append(c)
    assert list(by_group) == [ex.group_id for ex in examples]  # example order kept
    all_refs = {r for ex in examples for r in ex.references}
    for ex in examples:
        group = by_group[ex.group_id]
        assert all(c.task == ex.task and c.instruction == ex.instruction for c in group)
        refs = [c for c in group if c.kind == REFERENCE]
        assert [c.response for c in refs] == list(ex.references) and all(c.label == 1.0 for c in refs)
        negs = [c for c in group if c.kind == NEGATIVE]
        assert len(negs) == 2 * len(ex.references)  # 2 per positive: the pool is big enough
        own = {normalize(r) for r in ex.references}
        for c in negs:
            assert c.label == 0.0
            assert c.response in all_refs and normalize(c.response) not in own
        assert len({normalize(c.response) for c in negs}) == len(negs)  # deduplicated


def test_negatives_respect_normalization_and_tasks() -> None:
    # Example 1's reference equals example 0's up to case/whitespace: never its negative.
    examples = [gen("t", 0, "Paris is the capital"), gen("t", 1, "  paris IS the   capital "),
                gen("t", 2, "Berlin"), gen("t", 3, "Berlin")]
    other_task = [gen("u", 0, "from another task")]
    settings = CandidateSettings(negatives_per_positive=3)
    for seed in range(20):
        cands = candidates_for_task(examples, settings=settings, seed=seed)
        negs = {c.group_id: [n.response for n in cands if n.kind == NEGATIVE and n.group_id == c.group_id]
                for c in cands}
        assert negs["t/0"] == ["Berlin"] and negs["t/1"] == ["Berlin"]  # deduplicated, only valid one
        for g in ("t/2", "t/3"):  # the two Paris spellings are one negative after normalization
            assert [normalize(r) for r in negs[g]] == ["paris is the capital"]
    cands = candidates_for_task(other_task, settings=settings, seed=0)
    assert [c.kind for c in cands] == [REFERENCE]  # a lone example has no negative to draw
    with pytest.raises(ValueError, match="one task"):
        candidates_for_task(examples + other_task, settings=settings, seed=0)


def test_classification_choices_only() -> None:
    examples = [Example("nli", str(i), f"premise {i}; hypothesis?", references=("yes",),
                        choices=("yes", "no", "maybe", "no", ""))
                for i in range(4)]
    cands = candidates_for_task(examples, settings=CandidateSettings(negatives_per_positive=2,
                                                                     corruptions_per_reference=2),
                                seed=3, samples={"nli/0": [("beam", "yes it is")]})
    assert len(cands) == 4 * 3
    for ex in examples:
        group = [(c.response, c.label, c.kind) for c in cands if c.group_id == ex.group_id]
        assert group == [("yes", 1.0, CHOICE), ("no", 0.0, CHOICE), ("maybe", 0.0, CHOICE)]


def test_mixed_multi_answer_classification() -> None:
    ex = Example("mc", "0", "pick the primes", references=("2", "3"), choices=("2", "3", "4"))
    cands = candidates_for_task([ex], settings=CandidateSettings(), seed=0)
    assert [(c.response, c.label) for c in cands] == [("2", 1.0), ("3", 1.0), ("4", 0.0)]


def test_deterministic_and_seed_dependent() -> None:
    examples = gen_task(40)
    settings = CandidateSettings(negatives_per_positive=1, corruptions_per_reference=2)
    a = candidates_for_task(examples, settings=settings, seed=7)
    b = candidates_for_task(list(examples), settings=settings, seed=7)
    assert a == b
    c = candidates_for_task(examples, settings=settings, seed=8)
    negs = lambda cs: [x.response for x in cs if x.kind == NEGATIVE]  # noqa: E731
    assert negs(a) != negs(c)
    # The task name is mixed into the seed: the same examples under another task name draw differently.
    renamed = [Example("other", ex.example_id, ex.instruction, ex.references) for ex in examples]
    d = candidates_for_task(renamed, settings=settings, seed=7)
    assert negs(a) != negs(d)


def test_streamed_in_chunks_gives_the_same_candidates() -> None:
    # The build streams a task's candidates a chunk of examples at a time (Rouge-L per chunk); the draws run
    # in example order whatever the chunk, so every chunk size gives the same list.
    examples = gen_task(25)
    samples = {ex.group_id: [("beam", f"answer number {i}"), ("sample", "topic")] for i, ex in enumerate(examples)}
    settings = CandidateSettings(negatives_per_positive=2, corruptions_per_reference=2)
    whole = candidates_for_task(examples, settings=settings, seed=3, samples=samples)
    assert any(c.kind == CORRUPTED for c in whole) and any(c.kind.startswith("llm:") for c in whole)
    for chunk in (1, 4, 25, 100):
        assert list(stream_candidates(examples, settings=settings, seed=3, samples=samples, chunk=chunk)) == whole
    with pytest.raises(ValueError, match="duplicate example"):  # checked before the first candidate
        stream_candidates(examples + examples[:1], settings=settings, seed=3)


def test_a_sampler_is_asked_chunk_by_chunk_for_generation_examples_only() -> None:
    examples = gen_task(10) + [Example(task="summ", example_id=f"c{i}", instruction=f"pick {i}",
                                       references=("yes",), choices=("yes", "no")) for i in range(3)]
    samples = {ex.group_id: [("sample", f"sampled answer {i}")] for i, ex in enumerate(examples)}
    calls: list[list[str]] = []

    def sampler(chunk):
        calls.append([ex.example_id for ex in chunk])
        return {ex.group_id: samples[ex.group_id] for ex in chunk}

    settings = CandidateSettings(corruptions_per_reference=1)
    whole = candidates_for_task(examples, settings=settings, seed=3, samples=samples)
    assert list(stream_candidates(examples, settings=settings, seed=3, sampler=sampler, chunk=4)) == whole
    assert calls == [["0", "1", "2", "3"], ["4", "5", "6", "7"], ["8", "9"]]  # the last chunk's choices: none
    with pytest.raises(ValueError, match="not both"):
        stream_candidates(examples, settings=settings, seed=3, samples=samples, sampler=sampler)


def test_stable_hash_is_process_independent() -> None:
    import subprocess
    import sys

    code = "from cappy_jax.data.candidates import stable_hash; print(stable_hash('summ'))"
    out = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          env={"PYTHONHASHSEED": str(s), "PATH": ""}).stdout.strip() for s in (1, 2)}
    assert out == {str(stable_hash("summ"))}


def test_corruptions_labelled_with_rouge() -> None:
    examples = gen_task(10)
    settings = CandidateSettings(negatives_per_positive=0, corruptions_per_reference=3)
    cands = candidates_for_task(examples, settings=settings, seed=1)
    corrupted = [c for c in cands if c.kind == CORRUPTED]
    assert corrupted
    refs = {ex.group_id: ex.references for ex in examples}
    for c in corrupted:
        assert c.label == rouge_l(refs[c.group_id], c.response)
        assert c.response.strip()
        assert normalize(c.response) not in {normalize(r) for r in refs[c.group_id]}
        assert c.label < 1.0 or c.response.split() != refs[c.group_id][0].split()
    per_group = Counter(c.group_id for c in corrupted)
    assert all(n <= 3 * 2 for n in per_group.values())
    assert sum(per_group.values()) >= 10 * 2 * 2  # multi-token references rarely fail to corrupt


def test_corrupt_ops() -> None:
    rng = random.Random(0)
    ref = "one two three four five six seven eight"
    for _ in range(50):
        d = corrupt(ref, "delete", rng).split()
        assert 6 <= len(d) < 8 and all(t in ref.split() for t in d)
        s = corrupt(ref, "swap", rng).split()
        assert sorted(s) == sorted(ref.split()) and s != ref.split()
        t = corrupt(ref, "truncate", rng)
        assert ref.startswith(t) and t != ref and t
        r = corrupt(ref, "replace", rng, vocabulary=["zebra"]).split()
        assert len(r) == 8 and 1 <= r.count("zebra") <= 2
    for op in ("delete", "swap", "truncate"):
        assert corrupt("single", op, rng) is None
    assert corrupt("single", "replace", rng) is None  # no vocabulary
    assert corrupt("single", "replace", rng, ["other"]) == "other"
    with pytest.raises(ValueError):
        corrupt(ref, "shuffle", rng)
    assert set(CORRUPTION_OPS) == {"delete", "swap", "truncate", "replace"}


def test_single_token_references_only_replace() -> None:
    examples = [gen("cls", i, w) for i, w in enumerate(["alpha", "beta", "gamma"])]
    cands = candidates_for_task(examples, settings=CandidateSettings(negatives_per_positive=0, corruptions_per_reference=2), seed=0)
    for c in cands:
        if c.kind == CORRUPTED:
            assert c.response in {"alpha", "beta", "gamma"} and c.label == 0.0


def test_llm_samples() -> None:
    examples = gen_task(3)
    ex = examples[0]
    samples = {
        ex.group_id: [("beam", "the answer number 0 is about topic 0"),     # equals a reference: dropped
                      ("top_p", "  the answer is about topic 0  "),
                      ("sample", "the answer is about topic 0"),           # same text as top_p's: dropped
                      ("top_k", "   "), ("temperature", ""),               # empty: never emitted
                      ("top_k", "something else entirely")],
        "elsewhere/9": [("beam", "ignored: another task's group")],
    }
    cands = candidates_for_task(examples, settings=CandidateSettings(negatives_per_positive=0), seed=0,
                                samples=samples)
    llm = [c for c in cands if c.kind.startswith("llm:")]
    assert [(c.kind, c.response) for c in llm] == [("llm:top_p", "the answer is about topic 0"),
                                                   ("llm:top_k", "something else entirely")]
    for c in llm:
        assert c.label == rouge_l(ex.references, c.response)
    assert llm[0].label > 0.5 and llm[1].label == 0.0
    with pytest.raises(ValueError, match="mode"):
        candidates_for_task(examples, settings=CandidateSettings(), seed=0, samples={ex.group_id: [("", "x")]})


def test_no_empty_response_ever() -> None:
    examples = [gen("t", 0, "  ", "real answer here"), gen("t", 1, "\t"), gen("t", 2, "a b")]
    cands = candidates_for_task(examples, settings=CandidateSettings(negatives_per_positive=2, corruptions_per_reference=3), seed=0,
                                samples={"t/1": [("beam", " ")]})
    assert cands and all(c.response.strip() for c in cands)


def test_include_references_false() -> None:
    cands = candidates_for_task(gen_task(5), settings=CandidateSettings(include_references=False), seed=0)
    assert {c.kind for c in cands} == {NEGATIVE}


def test_invalid_inputs_raise() -> None:
    with pytest.raises(ValueError, match="outside"):
        Candidate("t", "t/0", "i", "r", 1.5, REFERENCE)
    with pytest.raises(ValueError, match="outside"):
        Candidate("t", "t/0", "i", "r", float("nan"), REFERENCE)
    with pytest.raises(ValueError, match="kind"):
        Candidate("t", "t/0", "i", "r", 0.5, "made-up")
    with pytest.raises(ValueError):
        CandidateSettings(negatives_per_positive=-1)
    with pytest.raises(ValueError):
        CandidateSettings(corruption_ops=("explode",))
    with pytest.raises(ValueError, match="duplicate"):
        candidates_for_task([gen("t", 0, "a"), gen("t", 0, "b")], settings=CandidateSettings(), seed=0)
    assert candidates_for_task([], settings=CandidateSettings(), seed=0) == []
