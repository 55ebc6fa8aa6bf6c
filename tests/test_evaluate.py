"""The evaluation harness (`cappy_jax.evaluate`) and its report (`cappy_jax.report`).

Every expected number is computed here from the fixture data itself (which choice is first, how
many are correct), not by the harness's own helpers.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from fakes import ANLI_YAML

from cappy_jax import evaluate, report
from cappy_jax.data import llm as llm_lib
from cappy_jax.data.records import split_of
from cappy_jax.data.rouge import rouge_l
from configs import evaluate as evaluate_configs

WORDS = "red green blue yellow black white orange purple".split()


def write_lines(path, records) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


def choice_records(task, n, seed):
    """Classification records with 2-4 choices and 1-2 correct ones, so chance varies per example."""
    rng = np.random.default_rng(seed)
    records = []
    for i in range(n):
        k = int(rng.integers(2, 5))
        choices = [str(w) for w in rng.choice(WORDS, k, replace=False)]
        label = sorted(int(j) for j in rng.choice(k, int(rng.integers(1, min(k, 2) + 1)), replace=False))
        records.append({"task": task, "id": i, "instruction": f"{task}: which colour? ({i})", "choices": choices,
                        "label": label})
    return records


@pytest.fixture
def choice_dir(tmp_path):
    """Two JSONL files: tasks `alpha` (one generation record among them) and `beta`."""
    alpha, beta = choice_records("alpha", 12, 0), choice_records("beta", 7, 1)
    write_lines(tmp_path / "data" / "a.jsonl",
                alpha[:5] + [{"task": "alpha", "id": "g", "instruction": "Say hi.", "response": "hi"}] + alpha[5:])
    write_lines(tmp_path / "data" / "b.jsonl", beta)
    return tmp_path / "data", {"alpha": alpha, "beta": beta}


def jsonl_config(data_dir, **overrides):
    config = evaluate_configs.get_config("jsonl")
    evaluate.set_data_path(config, data_dir)
    cfg = config.to_dict()
    cfg.update(overrides)
    return cfg


def correct_of(records):
    return {r["instruction"]: {r["choices"][j] for j in r["label"]} for rs in records.values() for r in rs}


def right_scorer(records):
    correct = correct_of(records)
    return evaluate.FunctionScorer(lambda inst, resp: 1.0 if resp in correct[inst] else 0.0)


def test_choice_accuracy_of_right_constant_and_extra_baselines(choice_dir):
    data_dir, records = choice_dir
    cfg = jsonl_config(data_dir)
    loaded = evaluate.load_examples(cfg["data"], suite="choice", units=cfg["units"])
    assert len(loaded.examples) == 19 and loaded.skipped == {"other_kind": 1, "other_split": 0, "over_cap": 0}
    assert loaded.task_groups == {"alpha": "alpha", "beta": "beta"}

    right = evaluate.evaluate_choice(right_scorer(records), loaded.examples, task_groups=loaded.task_groups)
    assert right.results["methods"] == ["cappy", "chance"]
    assert right.results["average"]["cappy"] == 1.0
    assert all(row["cappy"] == 1.0 for row in right.results["tasks"].values())

    seen = []
    last = lambda items: [len(choices) - 1 for _, choices in items]  # noqa: E731
    const = evaluate.evaluate_choice(evaluate.FunctionScorer(lambda i, r: 0.5), loaded.examples,
                                     task_groups=loaded.task_groups, baselines={"last": last},
                                     progress=seen.append)
    assert sum(seen) == sum(len(r["choices"]) for rs in records.values() for r in rs)
    assert const.results["methods"] == ["cappy", "chance", "last"]
    for task, rs in records.items():
        row = const.results["tasks"][task]
        assert row["examples"] == len(rs) and row["group"] == task
        # ties go to the lowest index: a constant scorer is right exactly when the first choice is
        assert row["cappy"] == pytest.approx(np.mean([0 in r["label"] for r in rs]))
        assert row["last"] == pytest.approx(np.mean([len(r["choices"]) - 1 in r["label"] for r in rs]))
        assert row["chance"] == pytest.approx(np.mean([len(r["label"]) / len(r["choices"]) for r in rs]))
        # the chance baseline is the same on the right scorer's run: same examples
        assert right.results["tasks"][task]["chance"] == row["chance"]
    for m in ("cappy", "chance", "last"):  # no grouping: the average is the mean over tasks
        assert const.results["average"][m] == pytest.approx(
            np.mean([const.results["tasks"][t][m] for t in records]))
    assert const.results["counts"] == {"examples": 19, "tasks": 2, "groups": 2, "candidates": sum(seen)}
    first = const.predictions[0]
    assert (first["task"], first["id"], first["picks"]["cappy"], first["scores"]) == (
        "alpha", "0", 0, [0.5] * len(records["alpha"][0]["choices"]))
    assert first["correct"]["cappy"] == (0 in records["alpha"][0]["label"])

    capped = evaluate.load_examples(cfg["data"], suite="choice", units="all", max_examples_per_task=3)
    assert [(e.task, e.example_id) for e in capped.examples] == [
        ("alpha", "0"), ("alpha", "1"), ("alpha", "2"), ("beta", "0"), ("beta", "1"), ("beta", "2")]
    assert capped.skipped == {"other_kind": 1, "other_split": 0, "over_cap": 13}
    # units="validation": exactly the examples the data build puts in its validation split
    data = {**cfg["data"], "output": {"seed": 3, "validation_fraction": 0.5}}
    val = evaluate.load_examples(data, suite="choice", units="validation")
    expected = [e for e in loaded.examples
                if split_of(e.group_id, heldout=False, validation_fraction=0.5, seed=3) == "validation"]
    assert 0 < len(val.examples) < len(loaded.examples)
    assert [e.group_id for e in val.examples] == [e.group_id for e in expected]
    assert val.skipped["other_split"] == len(loaded.examples) - len(expected)
    gen = evaluate.load_examples(cfg["data"], suite="generation", units="all")
    assert [e.example_id for e in gen.examples] == ["g"]

    with pytest.raises(ValueError, match="baseline 'bad' picked 7"):
        evaluate.evaluate_choice(evaluate.FunctionScorer(lambda i, r: 0.0), loaded.examples,
                                 baselines={"bad": lambda items: [7] * len(items)})
    with pytest.raises(ValueError, match="names .'chance'. are taken"):
        evaluate.evaluate_choice(evaluate.FunctionScorer(lambda i, r: 0.0), loaded.examples,
                                 baselines={"chance": last})


def test_averaging_templates_within_datasets_then_datasets():
    per_task = {"rte_a": 1.0, "rte_b": 0.5, "rte_c": 0.0, "cb_a": 0.25, "anli_x_r1": 0.75}
    groups = {"rte_a": "rte", "rte_b": "rte", "rte_c": "rte", "cb_a": "cb", "anli_x_r1": "anli_r1"}
    by_group, overall = evaluate.average_over_groups(per_task, groups)
    assert by_group == {"rte": 0.5, "cb": 0.25, "anli_r1": 0.75}
    assert overall == pytest.approx(0.5)  # (0.5 + 0.25 + 0.75) / 3, not the task mean 0.5 by accident:
    per_task["rte_c"] = 1.0
    by_group, overall = evaluate.average_over_groups(per_task, groups)
    assert by_group["rte"] == pytest.approx(2.5 / 3) and overall == pytest.approx((2.5 / 3 + 1.0) / 3)
    assert np.mean(list(per_task.values())) == pytest.approx(0.7) != overall
    # no grouping: each task is its own group; undefined values are left out
    assert evaluate.average_over_groups({"a": 1.0, "b": 0.0, "c": None}) == ({"a": 1.0, "b": 0.0, "c": None}, 0.5)

    # per example -> per task -> per group, with counts
    values = {"cappy": [1, 0, 1, 1, 0, 0], "chance": [0.5] * 6}
    tasks = ["rte_a", "rte_a", "rte_b", "cb_a", "cb_a", "cb_a"]
    summary = evaluate.summarize(values, tasks, {"rte_a": "rte", "rte_b": "rte", "cb_a": "cb"})
    assert summary["tasks"]["rte_a"] == {"group": "rte", "examples": 2, "cappy": 0.5, "chance": 0.5}
    assert summary["groups"]["rte"] == {"tasks": 2, "examples": 3, "cappy": 0.75, "chance": 0.5}
    assert summary["groups"]["cb"]["cappy"] == pytest.approx(1 / 3)
    assert summary["average"] == {"cappy": pytest.approx((0.75 + 1 / 3) / 2), "chance": 0.5}
    assert evaluate.chance(["a", "b", "c", "d"], ["b", "d"]) == 0.5


RTE_YAML = textwrap.dedent("""\
    dataset: super_glue
    subset: rte
    templates:
      rte-yes: !Template
        answer_choices: Yes ||| No
        id: rte-yes
        jinja: '{{premise}} Is "{{hypothesis}}" true? ||| {{ answer_choices[label] }}'
        metadata: !TemplateMetadata
          original_task: true
        name: yes no
        reference: ''
      rte-tf: !Template
        answer_choices: True ||| False
        id: rte-tf
        jinja: '{{premise}} Then "{{hypothesis}}": true or false? ||| {{ answer_choices[label] }}'
        metadata: !TemplateMetadata
          original_task: true
        name: true false
        reference: ''
    """)



def test_promptsource_tasks_average_over_templates_then_datasets_and_rounds(tmp_path):
    templates, rows = tmp_path / "promptsource", tmp_path / "rows"
    for key, text in (("super_glue/rte", RTE_YAML), ("anli", ANLI_YAML)):
        (templates / key).mkdir(parents=True)
        (templates / key / "templates.yaml").write_text(text)
    write_lines(rows / "super_glue" / "rte" / "validation.jsonl",
                [{"premise": f"P{i}.", "hypothesis": f"H{i}.", "label": i % 2} for i in range(4)])
    for r, n in ((1, 3), (2, 6)):
        write_lines(rows / "anli" / f"dev_r{r}.jsonl",
                    [{"premise": f"r{r} p{i}", "hypothesis": f"h{i}", "label": i % 3} for i in range(n)])
    config = evaluate_configs.get_config("t0")
    config.data.templates_dir = str(templates)
    config.data.rows.backend, config.data.rows.jsonl_dir = "jsonl", str(rows)
    cfg = config.to_dict()
    cfg["data"].update(datasets=(("super_glue/rte", 0), ("anli", 0)),
                       split_names={"anli": {"validation": ("dev_r1", "dev_r2")}})
    loaded = evaluate.load_examples(cfg["data"], suite="choice", units="heldout")
    assert loaded.task_groups == {"super_glue_rte_yes_no": "super_glue/rte", "super_glue_rte_true_false":
                                  "super_glue/rte", "anli_GPT_3_style_r1": "anli_r1",
                                  "anli_GPT_3_style_r2": "anli_r2"}
    # a constant scorer picks the first choice: right where the label is 0
    ev = evaluate.evaluate_choice(evaluate.FunctionScorer(lambda i, r: 0.0), loaded.examples,
                                  task_groups=loaded.task_groups)
    tasks, groups = ev.results["tasks"], ev.results["groups"]
    assert tasks["super_glue_rte_yes_no"]["cappy"] == 0.5 and tasks["anli_GPT_3_style_r2"]["cappy"] == pytest.approx(
        2 / 6)
    assert groups == {"super_glue/rte": {"tasks": 2, "examples": 8, "cappy": 0.5, "chance": 0.5},
                      "anli_r1": {"tasks": 1, "examples": 3, "cappy": pytest.approx(1 / 3),
                                  "chance": pytest.approx(1 / 3)},
                      "anli_r2": {"tasks": 1, "examples": 6, "cappy": pytest.approx(1 / 3),
                                  "chance": pytest.approx(1 / 3)}}
    assert ev.results["average"]["cappy"] == pytest.approx((0.5 + 1 / 3 + 1 / 3) / 3)
    paths = report.write_report(tmp_path / "out", ev, meta={"scorer": "constant"}, plots=True)
    text = paths["report"].read_text()
    assert "## Per group" in text and "| anli_r1 | 1 | 3 | 0.333 | 0.333 |" in text
    assert paths["per group"].read_bytes().startswith(b"\x89PNG\r\n\x1a\n")


def test_units_default_to_heldout_and_fail_without_any(tmp_path):
    root = tmp_path / "bigbench"
    for name, inputs in (("mc", ["Pick a fruit.", "Pick a tool."]), ("held", ["Pick a colour."])):
        (root / name).mkdir(parents=True)
        (root / name / "task.json").write_text(json.dumps(dict(
            name=name, description="d", keywords=["k"], metrics=["multiple_choice_grade"],
            examples=[{"input": x, "target_scores": {"apple": 1, "hammer": 0}} for x in inputs])))
    config = evaluate_configs.get_config("bigbench_choice")
    evaluate.set_data_path(config, root)
    config.data.tasks, config.data.heldout_tasks = ("mc",), ("held",)
    loaded = evaluate.load_examples(config.data, suite="choice", units=config.units)
    assert loaded.units == ["held"] and [e.task for e in loaded.examples] == ["held"]
    assert [e.task for e in evaluate.load_examples(config.data, suite="choice", units="all").examples] == [
        "mc", "mc", "held"]
    config.data.heldout_tasks = ()
    with pytest.raises(ValueError, match=r"no held-out units to evaluate: set its heldout_tasks "
                                         r"\(--config.data.heldout_tasks=...\), or evaluate every unit with "
                                         r"--config.units=all"):
        evaluate.load_examples(config.data, suite="choice")
    with pytest.raises(ValueError, match=r"no examples without answer choices \(generation\) in the 1 all unit"):
        evaluate.load_examples(config.data, suite="generation", units="all")
    with pytest.raises(ValueError, match="units='some'"):
        evaluate.load_examples(config.data, suite="choice", units="some")


RECIPE = (llm_lib.DecodingMode("beam", 1, {"num_beams": 4}),
          llm_lib.DecodingMode("sample", 2, {"do_sample": True}),
          llm_lib.DecodingMode("top_p", 2, {"do_sample": True, "top_p": 0.9}))
GEN = {  # instruction -> (references, candidates in recipe order: beam, sample x2, top_p x2)
    "Describe the cat.": (["the cat sat on the mat"],
                          ["a cat sat", "the cat sat on the mat", "dog ran", "  ", "the cat sat"]),
    "Colour of the sky?": (["blue sky"], ["blue sky today", "green grass", "blue", "sky blue", "blue sky"]),
}
LL = {  # text -> (sum, mean) log-likelihood
    "a cat sat": (-3.0, -1.0), "the cat sat on the mat": (-10.0, -0.5), "dog ran": (-1.0, -2.0),
    "the cat sat": (-4.0, -1.2), "blue sky today": (-6.0, -0.4), "green grass": (-2.0, -1.0),
    "blue": (-1.5, -1.5), "sky blue": (-5.0, -0.3), "blue sky": (-3.0, -0.9),
}


class FakeLLM:
    """Fixed candidates per instruction (`GEN`) and fixed log-likelihoods per text (`LL`)."""

    def generate(self, instructions, recipe):
        out = []
        for inst in instructions:
            texts = iter(GEN[inst][1])
            out.append([(m.name, next(texts)) for m in recipe for _ in range(m.num_return)])
        return out

    def log_likelihood(self, instructions, responses):
        return (np.array([LL[r][0] for r in responses]), np.array([LL[r][1] for r in responses]))


def gen_examples():
    from cappy_jax.data.records import Example

    return [Example("gen", str(i), inst, tuple(refs)) for i, (inst, (refs, _)) in enumerate(GEN.items())]


def test_generation_methods_pick_what_they_should():
    rouge_scorer = evaluate.FunctionScorer(lambda inst, resp: rouge_l(GEN[inst][0], resp))
    ev = evaluate.evaluate_generation(rouge_scorer, FakeLLM(), gen_examples(), recipe=RECIPE, self_score=True)
    res = ev.results
    assert res["methods"] == ["cappy", "beam", "first_sample", "first_top_p", "ll_sum", "ll_mean", "oracle"]
    # picks by hand: beam = 0, first_sample = 1, first_top_p = 3 (the empty one in example 0),
    # ll_sum / ll_mean = the largest log-likelihood among non-empty candidates
    assert [p["picks"] for p in ev.predictions] == [
        {"cappy": 1, "beam": 0, "first_sample": 1, "first_top_p": 3, "ll_sum": 2, "ll_mean": 1, "oracle": 1},
        {"cappy": 4, "beam": 0, "first_sample": 1, "first_top_p": 3, "ll_sum": 2, "ll_mean": 3, "oracle": 4},
    ]
    # a scorer that is Rouge-L itself picks the best candidate: cappy equals the oracle
    assert res["average"]["cappy"] == res["average"]["oracle"] == 1.0
    by_hand = {
        "beam": [rouge_l(["the cat sat on the mat"], "a cat sat"), rouge_l(["blue sky"], "blue sky today")],
        "first_sample": [1.0, 0.0],
        "first_top_p": [0.0, rouge_l(["blue sky"], "sky blue")],
        "ll_sum": [0.0, rouge_l(["blue sky"], "blue")],
        "ll_mean": [1.0, rouge_l(["blue sky"], "sky blue")],
    }
    for m, vs in by_hand.items():
        assert res["tasks"]["gen"][m] == pytest.approx(np.mean(vs)), m
        assert [p["rouge_l"][m] for p in ev.predictions] == pytest.approx(vs)
    assert res["counts"]["candidates"] == 10 and res["counts"]["empty_candidates"] == 1
    assert ev.predictions[0]["candidates"][3] == {"text": "", "mode": "top_p", "score": None, "rouge_l": 0.0,
                                                  "ll_sum": None, "ll_mean": None}
    # without self-scoring the ll baselines are not reported
    plain = evaluate.evaluate_generation(rouge_scorer, FakeLLM(), gen_examples(), recipe=RECIPE, self_score=False)
    assert plain.results["methods"] == ["cappy", "beam", "first_sample", "first_top_p", "oracle"]


class TextOnlyLLM:
    """A backend without log_likelihood (as an OpenAI-compatible server): 'mode i' texts, the reference last."""

    def generate(self, instructions, recipe):
        return [[(m.name, "hi there" if (m.name, i) == ("top_p", m.num_return - 1) else f"{m.name} {i}")
                 for m in recipe for i in range(m.num_return)] for _ in instructions]


def test_evaluate_config_runs_generation_and_turns_self_scoring_off_without_log_likelihood(tmp_path):
    write_lines(tmp_path / "data" / "greet.jsonl",
                [{"instruction": f"Greet person {i}.", "response": "hi there"} for i in range(3)]
                + [{"instruction": "Pick.", "choices": ["a", "b"], "label": 0}])
    config = evaluate_configs.get_config("jsonl")
    evaluate.set_data_path(config, tmp_path / "data")
    config.suite = "generation"
    scorer = evaluate.FunctionScorer(lambda i, r: float(r == "hi there"))
    ev = evaluate.evaluate_config(config, tmp_path / "out", scorer, scorer_name="exact", backend=TextOnlyLLM())
    assert ev.results["methods"] == ["cappy", "beam", "first_sample", "first_temperature", "first_top_k",
                                     "first_top_p", "oracle"]  # the reference recipe, no ll_* baselines
    assert ev.results["average"]["cappy"] == ev.results["average"]["oracle"] == 1.0
    assert ev.results["average"]["beam"] == 0.0 and ev.results["counts"]["candidates"] == 3 * 17
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert saved["meta"]["scorer"] == "exact" and saved["meta"]["skipped"] == {"other_kind": 1, "other_split": 0, "over_cap": 0}
    assert saved["meta"]["config"]["suite"] == "generation"


def test_report_files_hold_the_numbers(tmp_path, choice_dir):
    data_dir, records = choice_dir
    cfg = jsonl_config(data_dir)
    loaded = evaluate.load_examples(cfg["data"], suite="choice", units="all")
    choice = evaluate.evaluate_choice(evaluate.FunctionScorer(lambda i, r: len(r) / 10), loaded.examples,
                                      task_groups=loaded.task_groups)
    paths = report.write_report(tmp_path / "choice", choice, meta={"scorer": "len", "data": "fixture"})
    saved = json.loads(paths["results"].read_text())
    assert saved.pop("meta") == {"scorer": "len", "data": "fixture"}
    assert saved == choice.results
    lines = paths["predictions"].read_text().splitlines()
    assert [json.loads(line) for line in lines] == choice.predictions and len(lines) == 19
    text = paths["report"].read_text()
    for task, row in choice.results["tasks"].items():
        assert f"| {task} | {row['examples']} | {row['cappy']:.3f} | {row['chance']:.3f} |" in text
    assert f"| cappy | {choice.results['average']['cappy']:.3f} |" in text
    assert "## Per group" not in text and "scorer | len" in text
    for name in ("per_task.png", "scores.png"):
        assert (tmp_path / "choice" / name).read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
        assert f"]({name})" in text

    gen = evaluate.evaluate_generation(evaluate.FunctionScorer(lambda i, r: len(r)), FakeLLM(), gen_examples(),
                                       recipe=RECIPE)
    paths = report.write_report(tmp_path / "gen", gen, plots=True)
    saved = json.loads(paths["results"].read_text())
    saved.pop("meta")
    assert saved == gen.results
    text = paths["report"].read_text()
    row = gen.results["tasks"]["gen"]
    assert "| gen | 2 | " + " | ".join(f"{row[m]:.3f}" for m in gen.results["methods"]) + " |" in text
    assert "| oracle | 1.000 |" in text and "1 empty" in text
    assert paths["scores"].read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    report.write_report(tmp_path / "noplots", gen, plots=False)
    assert sorted(os.listdir(tmp_path / "noplots")) == ["predictions.jsonl", "report.md", "results.json"]


def test_examples_the_tokenizer_keeps_nothing_of_are_left_out_and_reported(tmp_path, choice_dir, tiny_scorer_dir):
    # BIG-bench's real_or_fake_text:gpt2 has a choice of two U+FFFD characters, which BERT's normalizer drops:
    # the tokenizer refuses the pair, and the evaluation stopped on it.
    from cappy_jax.scoring import Scorer

    data_dir, records = choice_dir
    odd = {"task": "beta", "id": "odd", "instruction": "beta: which colour? (odd)", "choices": ["red", "\ufffd \ufffd"],
           "label": [0]}
    write_lines(data_dir / "b.jsonl", records["beta"] + [odd])
    cfg = jsonl_config(data_dir, units="all", plots=False)
    ev = evaluate.evaluate_config(cfg, tmp_path / "out", Scorer.from_checkpoint(str(tiny_scorer_dir), max_len=128))
    assert ev.results["counts"]["examples"] == 12 + 7  # the odd one left out (and the generation record)
    assert "odd" not in {p["id"] for p in ev.predictions}
    assert "left out: " in (tmp_path / "out" / "report.md").read_text()
    assert json.loads((tmp_path / "out" / "results.json").read_text())["meta"]["skipped"]["no_tokens"] == 1


def test_config_variants():
    expected = {"bigbench_choice": ("choice", "bigbench", "heldout"), "bigbench_generation": ("generation", "bigbench",
                                                                                            "heldout"),
                "t0": ("choice", "promptsource", "heldout"), "t0_cappy": ("choice", "promptsource", "heldout"),
                "jsonl": ("choice", "jsonl", "all"),
                "bigbench_downstream": ("generation", "bigbench", "validation"),
                "demo": ("choice", "bigbench", "heldout")}
    assert set(evaluate_configs.VARIANTS) == set(expected)
    for variant, (suite, source, units) in expected.items():
        config = evaluate_configs.get_config(variant)
        assert (config.suite, config.data.source, config.units) == (suite, source, units)
        assert not {"candidates", "llm", "beam"} & set(config.data) and config.data.output.to_dict() == {
            "seed": 0, "validation_fraction": {"bigbench_downstream": 0.2, "demo": 0.05}.get(variant, 0.02)}
        assert config.llm.name == "none" and config.max_examples_per_task == 0 and config.plots
        with pytest.raises(AttributeError):
            config.scoring.typo = 1  # locked: a misspelt knob is an error
    cappy = evaluate_configs.get_config("t0_cappy").data
    assert [name for name, _ in cappy.datasets] == ["anli", "super_glue/cb", "super_glue/rte", "story_cloze/2016",
                                                     "super_glue/wsc.fixed", "super_glue/wic",
                                                     "winogrande/winogrande_xl", "super_glue/axg", "crows_pairs"]
    assert cappy.templates == "all" and evaluate_configs.get_config("t0").data.templates == "original_task"
    with pytest.raises(ValueError, match="unknown evaluate variant 'nope'"):
        evaluate_configs.get_config("nope")
    with pytest.raises(ValueError, match="needs an LLM to sample from"):
        llm_lib.backend_from_config(evaluate_configs.get_config("bigbench_generation").llm.to_dict())


def test_cli_end_to_end_with_the_tiny_scorer(tmp_path, choice_dir, tiny_scorer_dir):
    data_dir, records = choice_dir
    out = tmp_path / "report"
    cmd = [sys.executable, "-m", "cappy_jax.evaluate", f"--checkpoint={tiny_scorer_dir}", "--suite=choice",
           f"--data={data_dir}", f"--output={out}", "--config.scoring.max_len=128", "--config.scoring.row_len=128",
           "--config.scoring.widths=(16,32,64,128)", "--config.scoring.batch_tokens=512",
           "--config.max_examples_per_task=5"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert results["meta"]["config"]["data"]["source"] == "jsonl"  # the variant --data implied
    assert results["meta"]["config"]["scoring"]["widths"] == [16, 32, 64, 128]  # overrides replayed onto it
    predictions = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(predictions) == 10 and results["counts"]["examples"] == 10
    for task in ("alpha", "beta"):
        acc = results["tasks"][task]["cappy"]
        assert 0.0 <= acc <= 1.0
        mine = [p for p in predictions if p["task"] == task]
        assert acc == pytest.approx(np.mean([p["correct"]["cappy"] for p in mine]))
        assert all(p["picks"]["cappy"] == int(np.argmax(p["scores"])) for p in mine)
        assert all(0.0 <= s <= 1.0 for p in mine for s in p["scores"])  # sigmoid head
    assert "average accuracy" in done.stdout and "| alpha | 5 |" in (out / "report.md").read_text()
    for name in ("per_task.png", "scores.png"):
        assert (out / name).read_bytes().startswith(b"\x89PNG\r\n\x1a\n")

    # --data that does not fit an explicitly named config: a clear error before anything loads
    config = os.path.join(os.path.dirname(evaluate_configs.__file__), "evaluate.py") + ":bigbench_choice"
    done = subprocess.run([*cmd[:3], f"--config={config}", *cmd[3:6], f"--output={tmp_path / 'x'}"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and "looks like jsonl data but the config reads bigbench: pass --config " \
                                    "configs/evaluate.py:jsonl" in done.stderr, done.stderr[-2000:]
