"""Boosting: rerank on tiny local LLMs with the tiny scorer, an OpenAI-compatible server, a scorer
that is right by construction, the file pipeline and the CLI end to end."""

from __future__ import annotations

import json
import logging
import os
import pathlib
import subprocess
import sys

import fakes
import numpy as np
import pytest

from cappy_jax import boost
from cappy_jax.data import llm as llm_lib
from cappy_jax.data.llm import REFERENCE_RECIPE, HFBackend, OpenAIBackend, responses_per_instruction
from cappy_jax.data.rouge import rouge_l

REPO = pathlib.Path(__file__).resolve().parents[1]
# The tiny scorer has 130 positions: narrower rows than the default config's.
TINY_SCORING = dict(max_len=128, row_len=128, widths=(16, 32, 64, 128), batch_tokens=512)
RECIPE_MODES = [m.name for m in REFERENCE_RECIPE for _ in range(m.num_return)]
INSTRUCTIONS = ["the cat sat on the mat", "why", "who ran to the big red tree because of the dog"]
FIRST = {"beam": 0, "first_sample": 1, "first_temperature": 5, "first_top_k": 9, "first_top_p": 13}




@pytest.fixture(scope="module")
def scorer(tiny_scorer_dir):
    from cappy_jax.scoring import Scorer

    return Scorer.from_checkpoint(str(tiny_scorer_dir), **TINY_SCORING)


@pytest.fixture
def boost_log(caplog):
    """Records of the boost logger even if some other test turned off propagation on 'cappy_jax'."""
    log = logging.getLogger("cappy_jax.boost")
    log.addHandler(caplog.handler)
    caplog.set_level(logging.INFO, logger="cappy_jax.boost")
    yield caplog
    log.removeHandler(caplog.handler)


def _write_jsonl(path: pathlib.Path, records) -> pathlib.Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))
    return path


def _read_jsonl(path: pathlib.Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _argmax_lowest(values: np.ndarray, keep: np.ndarray) -> int:
    return int(np.argmax(np.where(keep, values, -np.inf)))


@pytest.mark.parametrize("family", ["seq2seq", "causal"])
def test_rerank_hf_picks_match_independent_recomputation(family, seq2seq_dir, causal_dir, scorer) -> None:
    backend = HFBackend(seq2seq_dir if family == "seq2seq" else causal_dir, batch_size=2)
    results = boost.rerank(scorer, backend, INSTRUCTIONS, recipe=REFERENCE_RECIPE, self_score=True)
    names = boost.methods(REFERENCE_RECIPE, self_score=True)
    assert names == ["cappy", *FIRST, "ll_sum", "ll_mean"]
    beam_only = backend.generate(INSTRUCTIONS, REFERENCE_RECIPE[:1])  # deterministic: no sampling
    assert len(results) == len(INSTRUCTIONS)
    for r, inst, beam in zip(results, INSTRUCTIONS, beam_only):
        assert r.instruction == inst and list(r.picks) == names
        assert len(r.texts) == 17 == responses_per_instruction(REFERENCE_RECIPE)
        assert list(r.modes) == RECIPE_MODES
        keep = np.array([bool(t) for t in r.texts])
        assert keep.any()
        # cappy: the argmax of the scorer's own scores, recomputed pair by pair.
        indep = np.full(len(r.texts), np.nan, np.float32)
        indep[keep] = scorer.score([(inst, t) for t in r.texts if t])
        np.testing.assert_allclose(r.scores[keep], indep[keep], rtol=1e-5, atol=1e-6)
        assert np.isnan(r.scores[~keep]).all()
        pick = r.picks["cappy"]
        assert keep[pick] and indep[pick] >= np.nanmax(indep) - 1e-6
        assert pick == _argmax_lowest(r.scores, keep)
        # beam and first-of-mode baselines: fixed positions of the recipe.
        for name, index in FIRST.items():
            assert r.picks[name] == index and r.modes[index] == REFERENCE_RECIPE[list(FIRST).index(name)].name
        assert r.texts[r.picks["beam"]] == beam[0][1].strip()
        # self-scoring: the LLM's log-likelihood, recomputed.
        sums, means = backend.log_likelihood([inst] * int(keep.sum()), [t for t in r.texts if t])
        np.testing.assert_allclose(r.ll_sum[keep], sums, rtol=1e-5)
        np.testing.assert_allclose(r.ll_mean[keep], means, rtol=1e-5)
        assert r.picks["ll_sum"] == _argmax_lowest(np.where(keep, r.ll_sum, 0), keep)
        assert r.picks["ll_mean"] == _argmax_lowest(np.where(keep, r.ll_mean, 0), keep)
        out = json.loads(json.dumps(r.to_json()))  # plain JSON
        assert out["best"] == pick and out["response"] == r.texts[pick]
        assert [c["mode"] for c in out["candidates"]] == RECIPE_MODES
        assert out["baselines"]["ll_sum"]["index"] == r.picks["ll_sum"]
        assert set(out["candidates"][0]) == {"text", "mode", "score", "ll_sum", "ll_mean"}


def test_rerank_openai_server_without_self_scoring(tmp_path, boost_log) -> None:
    # The server answers choice i with "{prompt}|t={temperature}|{i}"; this scorer likes one of them.
    target = "|t=0.9|2"  # the third sample of the temperature mode: index 1 + 4 + 2
    liked = fakes.FunctionScorer(lambda inst, resp: float(resp.endswith(target)))
    with fakes.serving() as server:
        backend = OpenAIBackend(server.url, "tiny-model", api_key_env="NO_SUCH_KEY_ENV")
        with pytest.raises(ValueError, match="noself_score"):
            boost.rerank(liked, backend, ["q"], self_score=True)
        [r] = boost.rerank(liked, backend, ["q"], self_score=False)
        assert list(r.modes) == RECIPE_MODES and r.ll_sum is None and r.ll_mean is None
        assert r.picks == {"cappy": 7, **FIRST}
        assert r.texts[7] == "q" + target and r.texts[0] == "q|t=0.0|0" and r.texts[1] == "q|t=1.0|0"
        out = r.to_json()
        assert "ll_sum" not in out["baselines"] and "ll_sum" not in out["candidates"][0]
        # The file pipeline asked for self-scoring: it goes on without it, and says why.
        tasks = _write_jsonl(tmp_path / "tasks.jsonl", [{"instruction": "q", "references": "q t 0 9 2"}])
        summary = boost.boost_file(liked, backend, tasks, tmp_path / "out.jsonl", self_score=True)
        assert len(server.hits) == 2 * 5  # one request per mode, for rerank and for the file run
    assert summary["self_score"] is False and summary["methods"] == ["cappy", *FIRST]
    [note] = summary["notes"]
    assert "log_likelihood" in note and "hf backend" in note and note in boost_log.text
    [rec] = _read_jsonl(tmp_path / "out.jsonl")
    assert rec["best"] == 7 and set(rec["baselines"]) == set(FIRST)
    assert summary["rouge_l"]["cappy"] == rec["rouge_l"] == 1.0 == summary["oracle_rouge_l"]


def _rouge_scorer(references: dict[str, list[str]]) -> fakes.FunctionScorer:
    """Right by construction: the score IS the Rouge-L against the known references; an empty
    response would get the top score if it were ever scored."""
    return fakes.FunctionScorer(lambda inst, resp: 2.0 if not resp.strip() else rouge_l(references[inst], resp))


def test_right_scorer_reaches_the_oracle_and_never_picks_empty(tmp_path) -> None:
    k = responses_per_instruction(REFERENCE_RECIPE)
    refs = {"a": ["the cat sat on the mat"], "b": ["blue tree", "a red tree"], "c": ["yes"], "d": ["one two"],
            "e": ["no refs used"]}
    responses = {
        # the best candidate is a late sample; beam and the first samples are worse
        "a": ["the dog", "cat", "mat", "the", "on", "  ", "sat on", "the cat sat", "the cat sat on the mat",
              *["dog"] * 8],
        # two references: Rouge-L is against the best one
        "b": ["tree", "", "blue", "a red tree", *["green"] * 13],
        # nothing overlaps: every candidate scores 0, the empty one first must still not be picked
        "c": ["", " ", "no", *["maybe"] * 14],
        # only empty candidates: no pick, Rouge-L 0 (and the oracle 0)
        "d": [""] * k,
        "e": ["anything", *["else"] * 16],
    }
    backend = fakes.ScriptedBackend(responses)
    scorer = _rouge_scorer(refs)
    records = [{"id": 1, "instruction": "a", "references": refs["a"]},
               {"id": 2, "instruction": "b", "references": refs["b"], "task": "t"},
               {"id": 3, "instruction": "c", "references": "yes"},  # a string: one reference
               {"id": 4, "instruction": "d", "references": refs["d"]},
               {"id": 5, "instruction": "e"}]  # no references: no Rouge-L, not in the means
    tasks = _write_jsonl(tmp_path / "tasks.jsonl", records)
    out = tmp_path / "sub" / "out.jsonl"
    summary = boost.boost_file(scorer, backend, tasks, out, self_score=False, batch_instructions=2)
    assert backend.calls == [["a", "b"], ["c", "d"], ["e"]]  # chunks of batch_instructions
    assert all(resp.strip() for _, resp in scorer.seen)  # empty responses never reach the scorer
    assert len(scorer.seen) == len(set(scorer.seen)) < 4 * k  # each distinct pair is scored once
    got = _read_jsonl(out)
    assert [g["id"] for g in got] == [1, 2, 3, 4, 5] and got[1]["task"] == "t"
    assert got[0]["references"] == refs["a"] and got[2]["references"] == "yes"  # passed through as given
    assert (got[0]["best"], got[1]["best"], got[2]["best"], got[3]["best"]) == (8, 3, 2, None)
    assert got[3]["response"] is None and got[3]["rouge_l"] == 0.0 == got[3]["oracle_rouge_l"]
    assert got[2]["response"] == "no" and got[2]["candidates"][0]["score"] is None
    assert {c["score"] for c in got[0]["candidates"][9:]} == {0.0}  # repeats share the one score
    for rec, rec_refs in zip(got[:4], [refs["a"], refs["b"], ["yes"], refs["d"]]):
        rouges = [c["rouge_l"] for c in rec["candidates"]]
        assert rouges == [rouge_l(rec_refs, c["text"]) for c in rec["candidates"]]
        assert rec["rouge_l"] == rec["oracle_rouge_l"] == max(rouges)
        for name, base in rec["baselines"].items():
            assert base["rouge_l"] == rouges[base["index"]]
            assert base["response"] == rec["candidates"][base["index"]]["text"]
    assert "rouge_l" not in got[4] and "rouge_l" not in got[4]["candidates"][0]
    assert summary["records"] == 5 and summary["with_references"] == 4
    assert summary["rouge_l"]["cappy"] == pytest.approx(summary["oracle_rouge_l"])
    assert summary["oracle_rouge_l"] == pytest.approx((1.0 + 1.0 + 0.0 + 0.0) / 4)
    assert summary["rouge_l"]["beam"] < summary["oracle_rouge_l"]
    assert summary["empty_candidates"] == 1 + 1 + 2 + k
    assert json.loads(boost.summary_path(out).read_text()) == summary
    assert sorted(p.name for p in out.parent.iterdir()) == ["out.jsonl", "out.summary.json"]  # no temp left
    text = boost.format_summary(summary)
    assert "cappy" in text and "oracle" in text and "records with references (4 of 5)" in text


class _ShortLovingBackend(fakes.ScriptedBackend):
    """Self-scores like a real LLM often does: the shorter the response, the likelier (empty: best)."""

    def log_likelihood(self, instructions, responses):
        assert all(r.strip() for r in responses)  # empty responses are never asked about
        sums = -np.array([len(r) for r in responses], np.float64)
        return sums, sums / np.array([len(r.split()) for r in responses])


def test_self_scoring_never_picks_empty() -> None:
    texts = ["", "a b c d e f", " ", "abc", *["xxxxxxx"] * 13]
    backend = _ShortLovingBackend({"q": texts})
    done: list[int] = []
    [r] = boost.rerank(fakes.FunctionScorer(lambda i, t: 0.0), backend, ["q"], self_score=True,
                       progress=done.append)
    assert sum(done) == 17  # empty and repeated candidates count as done too
    assert r.picks["ll_sum"] == 3 and r.picks["ll_mean"] == 1  # sums -3 > -7 > -11; means -11/6 > -3 > -7
    assert r.picks["cappy"] == 1 and r.picks["beam"] == 0  # ties: lowest non-empty; beam is what beam gave
    assert np.isnan(r.ll_sum[[0, 2]]).all() and r.to_json()["candidates"][2]["ll_mean"] is None
    assert r.texts[2] == "" and r.to_json()["candidates"][2]["score"] is None


def test_failed_run_keeps_previous_output(tmp_path) -> None:
    responses = {inst: [f"{inst} {i}" for i in range(17)] for inst in "abc"}
    tasks = _write_jsonl(tmp_path / "tasks.jsonl", [{"instruction": i} for i in "abc"])
    out = tmp_path / "out.jsonl"
    out.write_text("previous run\n")
    backend = fakes.ScriptedBackend(responses, fail_on_call=1)
    with pytest.raises(RuntimeError, match="scripted"):
        boost.boost_file(fakes.FunctionScorer(lambda i, r: 0.0), backend, tasks, out, self_score=False,
                         batch_instructions=2)
    assert out.read_text() == "previous run\n"  # never half-written
    assert [r["instruction"] for r in _read_jsonl(boost.partial_path(out))] == ["a", "b"]  # the first chunk


BAD_RECORDS = [
    ("{not json", "not valid JSON"),
    ('["a list"]', "JSON object"),
    ('{"prompt": "x"}', "'instruction' is missing"),
    ('{"instruction": "   "}', "'instruction' must be a non-empty string"),
    ('{"instruction": 7}', "'instruction' must be a non-empty string"),
    ('{"instruction": "x", "references": 3}', "'references' must be a string or a non-empty list"),
    ('{"instruction": "x", "references": []}', "'references' must be a string or a non-empty list"),
    ('{"instruction": "x", "references": ["ok", ""]}', "every reference must be a non-empty string"),
    ('{"instruction": "x", "references": ["ok", 1]}', "every reference must be a non-empty string"),
]


@pytest.mark.parametrize("bad,message", BAD_RECORDS)
def test_bad_record_error_names_the_line(tmp_path, bad, message) -> None:
    # Line 3 (a blank line still counts) after two good records; nothing is sampled before the check.
    tasks = _write_jsonl(tmp_path / "tasks.jsonl", ['{"instruction": "fine"}', "", bad, '{"instruction": "x"}'])
    backend = fakes.ScriptedBackend({})  # would raise KeyError if asked for samples
    with pytest.raises(boost.InputError, match=message) as err:
        boost.boost_file(fakes.FunctionScorer(lambda i, r: 0.0), backend, tasks, tmp_path / "out.jsonl",
                         self_score=False)
    assert str(err.value).startswith(f"{tasks}:3: ")
    assert backend.calls == [] and not list(tmp_path.glob("out*"))


def test_config_and_shorthands() -> None:
    from configs import boost as boost_config
    from configs import score as score_config

    config = boost_config.get_config()
    assert config.llm.name == "none" and config.llm.recipe == "reference" and config.self_score is True
    assert config.scoring.to_dict() == score_config.DEFAULT and config.batch_instructions >= 1
    with pytest.raises(AttributeError):
        config.llm.hf.colour = 1  # locked: a misspelt knob is an error
    with pytest.raises(ValueError, match="--llm hf"):
        llm_lib.backend_kwargs(config.llm.to_dict())
    boost.apply_shorthands(config, llm="openai", llm_model="m", llm_base_url="http://127.0.0.1:9/v1",
                           self_score=False)
    assert (config.llm.openai.model, config.llm.openai.base_url, config.self_score) == \
        ("m", "http://127.0.0.1:9/v1", False)
    backend = llm_lib.backend_from_config(config.llm.to_dict())
    assert isinstance(backend, OpenAIBackend) and backend.cache is None and backend.model == "m"
    boost.apply_shorthands(config, llm="hf")
    with pytest.raises(ValueError, match="--llm_model"):
        llm_lib.backend_kwargs(config.llm.to_dict())
    with pytest.raises(ValueError, match="--llm openai"):
        boost.apply_shorthands(config, llm_base_url="http://x")
    boost.apply_shorthands(config, llm_model="/models/t5")
    assert llm_lib.backend_kwargs(config.llm.to_dict()) == ("hf", {**config.llm.hf.to_dict(), "dtype": None,
                                                                 "cache_dir": None})
    assert boost_config.get_config("cpu").scoring.batch_tokens == score_config.VARIANTS["cpu"]["batch_tokens"]
    with pytest.raises(ValueError, match="unknown decoding recipe"):
        llm_lib.recipe_named("greedy")


def test_cli_end_to_end(tmp_path, seq2seq_dir, tiny_scorer_dir) -> None:
    records = [{"id": "x1", "instruction": INSTRUCTIONS[0], "references": ["the cat sat"], "meta": {"k": 1}},
               {"id": "x2", "instruction": INSTRUCTIONS[1], "references": "because"},
               {"id": "x3", "instruction": INSTRUCTIONS[2]}]
    tasks = _write_jsonl(tmp_path / "tasks.jsonl", records)
    out = tmp_path / "out.jsonl"
    cmd = [sys.executable, "-m", "cappy_jax.boost", f"--checkpoint={tiny_scorer_dir}", "--llm=hf",
           f"--llm_model={seq2seq_dir}", f"--input={tasks}", f"--output={out}", "--config.batch_instructions=2",
           "--config.llm.hf.batch_size=2", *(f"--config.scoring.{k}={v}" for k, v in TINY_SCORING.items())]
    env = dict(os.environ, OMP_NUM_THREADS="1", JAX_PLATFORMS="cpu")
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = _read_jsonl(out)
    assert [g["id"] for g in got] == ["x1", "x2", "x3"] and got[0]["meta"] == {"k": 1}
    assert got[1]["references"] == "because"
    for g in got:
        assert len(g["candidates"]) == 17 and [c["mode"] for c in g["candidates"]] == RECIPE_MODES
        assert set(g["baselines"]) == {*FIRST, "ll_sum", "ll_mean"}
        assert g["response"] == g["candidates"][g["best"]]["text"]
    assert "rouge_l" in got[0]["candidates"][0] and "rouge_l" not in got[2]
    summary = json.loads((tmp_path / "out.summary.json").read_text())
    assert summary["records"] == 3 and summary["with_references"] == 2 and summary["self_score"] is True
    assert set(summary["rouge_l"]) == {"cappy", *FIRST, "ll_sum", "ll_mean"}
    assert summary["rouge_l"]["cappy"] == pytest.approx(np.mean([got[0]["rouge_l"], got[1]["rouge_l"]]))
    assert summary["oracle_rouge_l"] >= max(summary["rouge_l"].values())
    assert "oracle" in proc.stdout and "ll_mean" in proc.stdout
    # A bad record fails before any model loads, naming the line.
    _write_jsonl(tasks, [{"instruction": "ok"}, {"instruction": ""}])
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and f"{tasks}:2: 'instruction' must be a non-empty string" in proc.stderr
