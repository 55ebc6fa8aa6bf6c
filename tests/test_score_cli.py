"""`python -m cappy_jax.score`: the file format, bad records, streaming, atomic output, --hf, the CLI.

Most tests run `score_file` in-process with one loaded tiny scorer; one subprocess runs the real CLI.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from cappy_jax import convert, scoring
from cappy_jax import score as score_cli

# The tiny model has 130 positions: narrow rows, small batches.
TINY = dict(max_len=128, row_len=128, widths=(16, 32, 64, 128), batch_tokens=512)
LONG = " ".join(["a long instruction about the quick brown fox and the lazy dog"] * 8)

RECORDS = [
    {"id": 0, "instruction": "Is 7 prime?", "response": "yes", "meta": {"src": "x", "tags": [1, 2]}},
    {"id": 1, "instruction": "Is 7 prime?", "candidates": ["yes", "no", "maybe", "it is prime"]},
    {"instruction": LONG, "response": "The fox jumps over the dog. " * 6, "id": 2},
    {"id": 3, "instruction": "Translate to French: good morning", "candidates": ["bonjour"]},
    {"id": 4, "instruction": "What is 12 + 30?", "response": "The answer is 42, héllo ✓."},
    {"id": 5, "instruction": LONG, "candidates": ["short", "a somewhat longer answer " * 5, "mid answer"]},
    {"id": 6, "instruction": "Summarize: cats sleep a lot.", "response": "Cats sleep."},
]


def write_lines(path, lines) -> None:
    """Writes dicts as JSON lines and strings/bytes as they are."""
    with open(path, "wb") as f:
        for line in lines:
            if isinstance(line, dict):
                line = json.dumps(line, ensure_ascii=False)
            f.write((line.encode("utf-8") if isinstance(line, str) else line) + b"\n")


def read_jsonl(path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def scores_of(out: list[dict]) -> list[list[float]]:
    return [r["scores"] if "candidates" in r else [r["score"]] for r in out]


@pytest.fixture(scope="module")
def scorer(tiny_scorer_dir) -> scoring.Scorer:
    return scoring.Scorer.from_checkpoint(str(tiny_scorer_dir), **TINY)


def run_file(scorer, tmp_path, lines, **kw):
    write_lines(tmp_path / "in.jsonl", lines)
    kw.setdefault("progress", False)
    stats = score_cli.score_file(scorer, str(tmp_path / "in.jsonl"), str(tmp_path / "out.jsonl"), **kw)
    return stats, read_jsonl(tmp_path / "out.jsonl")


def test_order_fields_and_scores_match_single_pairs(scorer, tmp_path):
    lines = [RECORDS[0], "", RECORDS[1], "   ", *RECORDS[2:]]
    stats, out = run_file(scorer, tmp_path, lines, chunk_pairs=5)
    assert (stats["records"], stats["pairs"], stats["rejected"]) == (7, 12, 0)
    assert [r["id"] for r in out] == list(range(7))
    for rec, got in zip(RECORDS, out):
        added = {"scores", "best"} if "candidates" in rec else {"score"}
        assert set(got) == set(rec) | added
        assert list(got)[:len(rec)] == list(rec)  # the input's fields, in their order, unchanged
        assert {k: got[k] for k in rec} == rec
        single = [float(scorer.score([(rec["instruction"], t)])[0])
                  for t in rec.get("candidates", [rec.get("response")])]
        np.testing.assert_allclose(scores_of([got])[0], single, atol=1e-5)
        if "candidates" in rec:
            assert got["best"] == int(np.argmax(single))
    assert np.std([s for r in scores_of(out) for s in r]) > 1e-4  # the scores really differ


def test_scores_do_not_depend_on_packing(scorer, tmp_path):
    other = scoring.Scorer(scorer.config, scorer.params, scorer.tokenizer,
                           scoring.options(**{**TINY, "batch_tokens": 128, "chunk_pairs": 2}))
    _, a = run_file(scorer, tmp_path, RECORDS)  # one chunk, batches of 512 token slots
    _, b = run_file(other, tmp_path, RECORDS, chunk_pairs=3)
    assert [r["id"] for r in a] == [r["id"] for r in b]
    for x, y in zip(scores_of(a), scores_of(b)):
        np.testing.assert_allclose(x, y, atol=1e-5)
    assert [r.get("best") for r in a] == [r.get("best") for r in b]


def test_streams_chunks_of_at_most_chunk_pairs(scorer, tmp_path, monkeypatch):
    calls = []
    real = scorer.score
    monkeypatch.setattr(scorer, "score", lambda pairs, **kw: calls.append(len(pairs)) or real(pairs, **kw))
    sizes = [1, 3, 2, 5, 1, 1]  # pairs per record; duplicates are scored once
    lines = [{"instruction": f"q{i}", "candidates": [f"c{j}" for j in range(n)] + ["c0"]} for i, n in enumerate(sizes)]
    stats, out = run_file(scorer, tmp_path, lines, chunk_pairs=4)
    assert calls == [4, 2, 5, 2]  # a record bigger than a chunk gets its own
    assert stats["pairs"] == sum(sizes) + len(sizes)
    assert [len(r["scores"]) for r in out] == [n + 1 for n in sizes]
    assert all(r["scores"][0] == r["scores"][-1] for r in out)


def test_best_ties_go_to_the_lowest_index(scorer, tmp_path):
    q = "Which answer is right?"
    lo, hi = sorted(["yes", "no"], key=lambda t: float(scorer.score([(q, t)])[0]))
    lines = [{"instruction": q, "candidates": c} for c in ([lo, hi, hi], [hi, hi], [hi, lo, hi], [lo, lo, lo])]
    _, out = run_file(scorer, tmp_path, lines)
    assert [r["best"] for r in out] == [1, 0, 0, 0]
    assert out[0]["scores"][1] == out[0]["scores"][2] > out[0]["scores"][0]


@pytest.mark.parametrize("line, problem", [
    ('{"instruction": "q", "response": "a"', "not valid JSON"),
    ('["q", "a"]', "expected a JSON object, got an array"),
    ('"just text"', "expected a JSON object, got a string"),
    ('{"response": "a"}', 'missing "instruction"'),
    ('{"instruction": 3, "response": "a"}', '"instruction" must be a string, got a number'),
    ('{"instruction": "q", "response": null}', '"response" must be a string, got null'),
    ('{"instruction": " \\t ", "response": "a"}', '"instruction" is empty (whitespace only)'),
    ('{"instruction": "q", "response": ""}', '"response" is empty: give it text'),
    ('{"instruction": "q", "response": "a", "candidates": ["b"]}', 'has both "response" and "candidates"'),
    ('{"instruction": "q", "answer": "a"}', 'has neither "response" nor "candidates"'),
    ('{"instruction": "q", "candidates": "ab"}', '"candidates" must be a non-empty list of strings, got a string'),
    ('{"instruction": "q", "candidates": []}', '"candidates" is an empty list'),
    ('{"instruction": "q", "candidates": ["a", 2]}', '"candidates"[1] must be a string, got a number'),
    ('{"instruction": "q", "candidates": ["a", "\\n"]}', '"candidates"[1] is empty (whitespace only)'),
    ('{"instruction": "q", "response": "\\ud83d"}', "unpaired surrogate"),
])
def test_parse_record_names_the_line_and_the_fix(line, problem):
    with pytest.raises(score_cli.BadRecord) as e:
        score_cli.parse_record(line, 7)
    assert str(e.value).startswith("line 7: ") and problem in str(e.value), str(e.value)
    assert e.value.line_no == 7


def test_parse_record_accepts_both_kinds():
    r = score_cli.parse_record('{"instruction": "q", "candidates": ["a", "b", "a"], "x": 1}', 3)
    assert (r.line_no, r.instruction, r.texts, r.candidates, r.unique_texts()) == (3, "q", ("a", "b", "a"), True,
                                                                                  ("a", "b"))
    r = score_cli.parse_record('{"instruction": "q", "response": "\\ud83d\\ude00"}', 4)
    assert (r.texts, r.candidates) == (("\U0001F600",), False)


BAD = ['{"instruction": "q", "response": }', b'{"instruction": "q", "response": "caf\xe9"}', {"instruction": "q"},
       {"instruction": "q", "response": "\u200b"}]  # \u200b: not blank, but no tokens after tokenization


def test_bad_input_names_every_bad_line_and_writes_nothing(scorer, tmp_path):
    (tmp_path / "out.jsonl").write_text("old\n")
    with pytest.raises(score_cli.BadInput) as e:
        run_file(scorer, tmp_path, [RECORDS[0], BAD[0], "", BAD[1], RECORDS[1], BAD[2]])
    msg = str(e.value)
    assert "3 bad records" in msg and "--skip_bad" in msg
    for line, what in ((2, "not valid JSON"), (4, "not valid UTF-8"), (6, "has neither")):
        assert f"line {line}: {what}" in msg
    assert (tmp_path / "out.jsonl").read_text() == "old\n"
    assert sorted(os.listdir(tmp_path)) == ["in.jsonl", "out.jsonl"]  # no temp file left


def test_untokenizable_text_is_a_bad_record(scorer, tmp_path):
    with pytest.raises(score_cli.BadRecord, match=r'line 3: "response" has no tokens after tokenization'):
        run_file(scorer, tmp_path, [RECORDS[0], RECORDS[1], BAD[3], RECORDS[3]])
    assert sorted(os.listdir(tmp_path)) == ["in.jsonl"]


def test_skip_bad_writes_rejects_and_scores_the_rest_in_order(scorer, tmp_path):
    _, clean = run_file(scorer, tmp_path, RECORDS)
    lines = [BAD[0], RECORDS[0], RECORDS[1], BAD[1], "", RECORDS[2], BAD[3], *RECORDS[3:], BAD[2]]
    seen = []
    stats, out = run_file(scorer, tmp_path, lines, skip_bad=True, chunk_pairs=6, progress=seen.append)
    assert (stats["records"], stats["rejected"]) == (7, 4)
    assert sum(seen) == 11  # every non-blank line, rejected ones included
    strip = lambda rs: [{k: v for k, v in r.items() if k not in ("score", "scores")} for r in rs]  # noqa: E731
    assert strip(out) == strip(clean)  # the good records, in order, scored as without the bad ones
    for x, y in zip(scores_of(out), scores_of(clean)):
        np.testing.assert_allclose(x, y, atol=1e-5)
    assert stats["rejects"] == str(tmp_path / "out.jsonl") + ".rejects.jsonl"
    rejects = read_jsonl(stats["rejects"])
    assert [r["line"] for r in rejects] == [1, 4, 7, 12]
    assert set(rejects[0]) == {"line", "error", "text"}
    assert rejects[0]["text"] == BAD[0] and "not valid JSON" in rejects[0]["error"]
    assert rejects[1]["text"] == '{"instruction": "q", "response": "caf\ufffd"}' and "UTF-8" in rejects[1]["error"]
    assert "no tokens after tokenization" in rejects[2]["error"] and json.loads(rejects[2]["text"]) == BAD[3]
    assert "neither" in rejects[3]["error"]

    stats, _ = run_file(scorer, tmp_path, RECORDS, skip_bad=True, rejects_path=str(tmp_path / "r.jsonl"))
    assert stats["rejected"] == 0 and (tmp_path / "r.jsonl").read_text() == ""  # no stale rejects file


def test_a_crash_leaves_the_old_output_untouched(scorer, tmp_path, monkeypatch):
    real, calls = scorer.score, []

    def crash_on_second_chunk(pairs, **kw):
        calls.append(len(pairs))
        if len(calls) == 2:
            raise RuntimeError("device lost")
        return real(pairs, **kw)

    monkeypatch.setattr(scorer, "score", crash_on_second_chunk)
    (tmp_path / "out.jsonl").write_text("old\n")
    with pytest.raises(RuntimeError, match="device lost"):
        run_file(scorer, tmp_path, RECORDS, chunk_pairs=2, skip_bad=True)
    assert (tmp_path / "out.jsonl").read_text() == "old\n"
    assert sorted(os.listdir(tmp_path)) == ["in.jsonl", "out.jsonl"]


def test_hf_directory_scores_like_the_checkpoint(scorer, tiny_scorer_dir, tmp_path):
    convert.to_hf(str(tiny_scorer_dir), str(tmp_path / "hf"))
    hf = scoring.Scorer.from_hf(str(tmp_path / "hf"), **TINY)
    _, a = run_file(scorer, tmp_path, RECORDS)
    _, b = run_file(hf, tmp_path, RECORDS)
    for x, y in zip(scores_of(a), scores_of(b)):
        np.testing.assert_allclose(x, y, atol=1e-5)


@pytest.mark.parametrize("flags, problem", [
    (dict(), "exactly one of --checkpoint"),
    (dict(checkpoint="c", hf="h"), "exactly one of --checkpoint"),
    (dict(hf="h", step=3), "--step"),
    (dict(checkpoint="c", head_activation="identity"), "--head_activation only applies to --hf"),
    (dict(checkpoint="c", rejects="r.jsonl"), "pass --skip_bad too"),
])
def test_flag_combinations(flags, problem):
    kw = dict(checkpoint=None, hf=None, step=None, head_activation=None, skip_bad=False, rejects=None)
    with pytest.raises(ValueError, match=problem):
        score_cli.check_flags(**{**kw, **flags})
    score_cli.check_flags(**{**kw, "hf": "h", "head_activation": "identity"})
    score_cli.check_flags(**{**kw, "checkpoint": "c", "step": 3, "skip_bad": True, "rejects": "r"})


def test_cli_end_to_end(scorer, tiny_scorer_dir, tmp_path):
    write_lines(tmp_path / "in.jsonl", [RECORDS[0], BAD[2], RECORDS[1]])
    cmd = [sys.executable, "-m", "cappy_jax.score", f"--checkpoint={tiny_scorer_dir}", "--skip_bad",
           f"--input={tmp_path / 'in.jsonl'}", f"--output={tmp_path / 'out' / 'out.jsonl'}",
           "--config.max_len=128", "--config.row_len=128", "--config.widths=(16,32,64,128)",
           "--config.batch_tokens=256", "--config.chunk_pairs=3", f"--config.compilation_cache_dir={tmp_path / 'xla'}"]
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2", "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "scored 2 records (5 pairs), rejected 1" in proc.stderr, proc.stderr
    assert any((tmp_path / "xla").iterdir()), "compiled batch shapes were not kept for the next run"
    out = read_jsonl(tmp_path / "out" / "out.jsonl")
    expected = [[float(s) for s in scorer.score([(r["instruction"], t) for t in r.get("candidates", [r.get("response")])])]
                for r in (RECORDS[0], RECORDS[1])]
    for x, y in zip(scores_of(out), expected):
        np.testing.assert_allclose(x, y, atol=1e-5)
    assert [r["line"] for r in read_jsonl(tmp_path / "out" / "out.jsonl.rejects.jsonl")] == [2]

    missing = [c if not c.startswith("--checkpoint=") else f"--checkpoint={tmp_path / 'nothing'}" for c in cmd]
    proc = subprocess.run(missing, capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert f"error: {tmp_path / 'nothing'} is not a cappy_jax scorer directory" in proc.stderr
    assert "convert from-hf" in proc.stderr  # what to do about it
