"""Sources -> Examples: BIG-bench JSON tasks, PromptSource templates, plain JSONL, and the data configs.

Every fixture is written here; nothing is downloaded.
"""

from __future__ import annotations

import json
import pickle
import textwrap

import numpy as np
import pytest
import yaml

from cappy_jax.data.sources import bigbench as bb
from cappy_jax.data.sources import jsonl as jl
from cappy_jax.data.sources import promptsource as ps


def write_json(path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


def task(examples, **fields):
    return dict(name="t", canary="c", description="d", keywords=["k"], metrics=["exact_str_match"],
                preferred_score="exact_str_match", examples=examples, **fields)


# ---------------------------------------------------------------------------------------------
# BIG-bench

@pytest.fixture
def bb_root(tmp_path):
    root = tmp_path / "tasks"
    write_json(root / "gen" / "task.json", task(
        [{"input": "1 + 1 =", "target": "2"},
         {"input": "2 + 2 =", "target": ["4", "four"]}],
        task_prefix="Do the sums. "))
    write_json(root / "mc" / "task.json", task(
        [{"input": "Pick a fruit.", "target_scores": {"carrot": 0, "apple": 1, "pear": 1, "fig": 0}},
         {"input": "Sky colour?", "target_scores": {"blue": 1.0, "green": 0.0}}]))
    write_json(root / "custom" / "task.json", task(
        [{"input": "The cat sat.", "target_scores": {"b": 0, "a": 1, "c": 0}}],
        example_input_prefix="\nSentence: ", example_output_prefix="\nLabel: ", choice_prefix="\n- ",
        task_prefix="Classify.\n"))
    write_json(root / "hidden" / "task.json", task(
        [{"input": "Choose.", "target_scores": {"x": 1, "y": 0}}], append_choices_to_input=False))
    write_json(root / "multi" / "task.json", {k: v for k, v in task([]).items() if k != "examples"})
    write_json(root / "multi" / "sub_a" / "task.json", task([{"input": "a1", "target": "A1"},
                                                             {"input": "a2", "target": "A2"}]))
    write_json(root / "multi" / "sub_b" / "task.json", task(
        [{"input": "b1", "target_scores": {"yes": 1, "no": 0}}],
        example_input_prefix="", example_output_prefix=" ->"))
    (root / "multi" / "notes").mkdir()  # a directory without task.json is not a subtask
    (root / "prog").mkdir()
    (root / "prog" / "task.py").write_text("# a programmatic task\n")
    return root


def test_generation_prompt_targets_and_ids(bb_root):
    examples = list(bb.read_task(bb_root / "gen"))
    assert [e.instruction for e in examples] == ["Do the sums. \nQ: 1 + 1 =\nA:", "Do the sums. \nQ: 2 + 2 =\nA:"]
    assert [e.references for e in examples] == [("2",), ("4", "four")]
    assert [(e.task, e.example_id, e.choices) for e in examples] == [("gen", "gen-0", ()), ("gen", "gen-1", ())]


def test_multiple_choice_uses_bigbench_choice_shuffle(bb_root):
    first, second = bb.read_task(bb_root / "mc")
    # BIG-bench: RandomState(42).permutation(sorted choices): [apple, carrot, fig, pear] -> [1, 3, 0, 2].
    assert first.instruction == ("Q: Pick a fruit.\n  choice: carrot\n  choice: pear\n  choice: apple\n"
                                 "  choice: fig\nA:")
    assert first.choices == ("carrot", "pear", "apple", "fig")
    assert first.references == ("apple", "pear")  # every choice with the maximum score
    assert second.instruction == "Q: Sky colour?\n  choice: green\n  choice: blue\nA:"
    assert second.references == ("blue",) and second.is_classification


def test_choice_order_options(bb_root):
    (ex,) = bb.read_task(bb_root / "mc", max_examples=1, choice_order="sorted")
    assert ex.choices == ("apple", "carrot", "fig", "pear")
    (ex,) = bb.read_task(bb_root / "mc", max_examples=1, choice_order="file")
    assert ex.choices == ("carrot", "apple", "pear", "fig")
    with pytest.raises(ValueError, match="choice_order"):
        list(bb.read_task(bb_root / "mc", choice_order="random"))


@pytest.mark.parametrize("n", range(1, 9))
def test_choice_shuffle_matches_permuting_the_sorted_strings(n):
    # json_task.default_format_fn permutes the array of sorted strings; we permute indices.
    keys = [f"choice {i}" for i in range(n)]
    expected = [str(k) for k in np.random.RandomState(seed=42).permutation(sorted(keys))]
    assert bb._ordered_choices(keys[::-1], "bigbench") == expected


def test_task_prefixes_from_the_task_file(bb_root):
    (ex,) = bb.read_task(bb_root / "custom")
    # sorted [a, b, c] with permutation(3) = [0, 1, 2]
    assert ex.instruction == "Classify.\n\nSentence: The cat sat.\n- a\n- b\n- c\nLabel:"
    (ex,) = bb.read_task(bb_root / "hidden")
    assert ex.instruction == "Q: Choose.\nA:"
    assert ex.choices == ("y", "x") and ex.references == ("x",)  # choice_order applies even when not shown


def test_subtasks(bb_root):
    examples = list(bb.read_task(bb_root / "multi"))
    assert [(e.task, e.example_id, e.instruction) for e in examples] == [
        ("multi:sub_a", "sub_a-0", "Q: a1\nA:"), ("multi:sub_a", "sub_a-1", "Q: a2\nA:"),
        ("multi:sub_b", "sub_b-0", "b1\n  choice: yes\n  choice: no ->")]
    assert bb.list_subtasks(bb_root, "multi") == ["multi:sub_a", "multi:sub_b"]
    assert bb.list_subtasks(bb_root, "gen") == []
    (only_b,) = bb.read_tasks(bb_root, ["multi:sub_b"])
    assert only_b.task == "multi:sub_b" and only_b.example_id == "sub_b-0"
    # max_examples is split evenly over subtasks, as BIG-bench does
    assert [e.example_id for e in bb.read_task(bb_root / "multi", max_examples=2)] == ["sub_a-0", "sub_b-0"]
    with pytest.raises(ValueError, match="number of subtasks"):
        list(bb.read_task(bb_root / "multi", max_examples=1))


def test_list_and_read_tasks(bb_root):
    assert bb.list_tasks(bb_root) == ["custom", "gen", "hidden", "mc", "multi"]  # prog has no task.json
    assert [e.group_id for e in bb.read_tasks(bb_root, ["gen", "hidden"])] == ["gen/gen-0", "gen/gen-1",
                                                                               "hidden/hidden-0"]
    assert len(list(bb.read_tasks(bb_root))) == 2 + 2 + 1 + 1 + 3
    with pytest.raises(ValueError, match="unknown BIG-bench task 'gne'.*close matches: gen"):
        list(bb.read_tasks(bb_root, ["gne"]))
    with pytest.raises(ValueError, match="no subtask 'sub_c'"):
        list(bb.read_tasks(bb_root, ["multi:sub_c"]))
    with pytest.raises(FileNotFoundError, match="programmatic"):
        list(bb.read_task(bb_root / "prog"))


def test_task_kind(bb_root, tmp_path):
    assert bb.task_kind(bb_root / "gen") == "generation"
    assert bb.task_kind(bb_root / "mc") == "choice"
    assert bb.task_kind(bb_root / "multi") == "mixed"
    assert bb.task_kind(bb_root / "multi" / "sub_b" / "task.json") == "choice"


def test_malformed_json_names_the_file(tmp_path):
    path = tmp_path / "broken" / "task.json"
    path.parent.mkdir()
    # A missing comma: Python 3.11 and 3.13 place it alike (a trailing comma they place differently).
    path.write_text('{"name": "broken", "examples": [\n  {"input": "x", "target": "y"}\n  {"input": "z"}\n]}')
    with pytest.raises(bb.BigBenchError, match=r"broken/task.json: malformed JSON at line 3"):
        list(bb.read_task(path.parent))
    with pytest.raises(bb.BigBenchError, match="malformed JSON"):  # skip_bad is for examples, not files
        list(bb.read_task(path.parent, skip_bad=True))


def test_bad_examples_raise_or_are_counted(tmp_path):
    root = tmp_path / "bad"
    write_json(root / "task.json", task([
        {"input": "ok", "target": "fine"},
        {"input": "no target"},
        {"input": "zero", "target_scores": {"a": 0, "b": 0}},
        {"input": "empty", "target": ""},
        {"input": 3, "target": "x"},
        {"input": "ok again", "target": "fine"},
        {"input": "ok", "target": "fine"},  # an exact duplicate of example 0
    ]))
    with pytest.raises(bb.BigBenchError) as err:
        list(bb.read_task(root))
    assert str(err.value) == f"{root / 'task.json'}: example 1: example has neither 'target' nor 'target_scores'"
    stats = bb.ReadStats()
    examples = list(bb.read_task(root, skip_bad=True, stats=stats))
    assert [e.example_id for e in examples] == ["bad-0", "bad-5"]
    assert (stats.examples, stats.skipped_bad, stats.duplicates) == (2, 4, 1)
    assert [p.split(": ", 1)[1].split(":")[0] for p in stats.problems] == [
        "example 1", "example 2", "example 3", "example 4"]
    assert "maximum score 0 is not > 0" in stats.problems[1]


def test_empty_prompt_is_a_bad_example(tmp_path):
    # BIG-bench 1.0.0 has such tasks (cause_and_effect:one_sentence_no_prompt): nothing to condition on.
    write_json(tmp_path / "np" / "task.json", task(
        [{"input": "", "target_scores": {"a": 1, "b": 0}}], example_input_prefix="", example_output_prefix="",
        append_choices_to_input=False))
    with pytest.raises(bb.BigBenchError, match="example 0: .*empty instruction"):
        list(bb.read_task(tmp_path / "np"))


# ---------------------------------------------------------------------------------------------
# PromptSource

TEMPLATES_YAML = textwrap.dedent("""\
    dataset: super_glue
    subset: rte
    templates:
      2b52a83c-0021-41fe-b44c-5aaa076d71a2: !Template
        answer_choices: Yes ||| No
        id: 2b52a83c-0021-41fe-b44c-5aaa076d71a2
        jinja: '{{premise}} Is "{{hypothesis}}" true? Yes or no? ||| {% if label !=
          -1 %}{{ answer_choices[label] }}{% endif %}'
        metadata: !TemplateMetadata
          choices_in_prompt: true
          metrics:
          - Accuracy
          original_task: true
        name: MNLI crowdsource
        reference: Webson & Pavlick 2021
      open-1: !Template
        answer_choices: null
        id: open-1
        jinja: "Premise: {{ premise }}\\n{% for a, b in zip(names, values) %}{{ a }}={{ b }};{% endfor %}\\n|||\\n{{ hypothesis }}"
        metadata: !TemplateMetadata
          choices_in_prompt: false
          metrics:
          - ROUGE
          original_task: false
        name: write the hypothesis
        reference: ''
      pick-1: !Template
        answer_choices: '{{ options | join(" ||| ") }}'
        id: pick-1
        jinja: "{{ question }} Options: {{ answer_choices | join(\\", \\") }} ||| {{ answer }}"
        metadata: !TemplateMetadata
          choices_in_prompt: true
          metrics:
          - Accuracy
          original_task: true
        name: pick
        reference: ''
      helpers-1: !Template
        id: helpers-1
        jinja: "Any of: {{ options | choice }}. Most: {{ (votes | most_frequent) | join(\\",\\") }} ||| {{ sentence_1 }}"
        metadata: !TemplateMetadata
          original_task: false
        name: helpers
        reference: ''
      broken-1: !Template
        id: broken-1
        jinja: "{{ premise.text.upper() }} ||| x"
        name: broken
        reference: ''
    """)


@pytest.fixture
def templates(tmp_path):
    path = tmp_path / "super_glue" / "rte" / "templates.yaml"
    path.parent.mkdir(parents=True)
    path.write_text(TEMPLATES_YAML)
    return {t.id: t for t in ps.load_templates(path)}


def test_load_templates(templates, tmp_path):
    rte = templates["2b52a83c-0021-41fe-b44c-5aaa076d71a2"]
    assert list(templates) == ["2b52a83c-0021-41fe-b44c-5aaa076d71a2", "open-1", "pick-1", "helpers-1", "broken-1"]
    assert (rte.name, rte.answer_choices, rte.dataset, rte.subset) == ("MNLI crowdsource", "Yes ||| No", "super_glue",
                                                                        "rte")
    assert rte.metadata == ps.TemplateMetadata(original_task=True, choices_in_prompt=True, metrics=("Accuracy",))
    assert templates["open-1"].answer_choices is None
    assert templates["broken-1"].metadata == ps.TemplateMetadata()
    # The tags live on a private loader: the global SafeLoader does not know them.
    assert "!Template" not in yaml.SafeLoader.yaml_constructors
    with pytest.raises(yaml.YAMLError):
        yaml.safe_load(TEMPLATES_YAML)
    assert ps.load_collection(tmp_path) == {"super_glue/rte": list(templates.values())}


def test_load_rejects_python_tags_and_bad_yaml(tmp_path):
    evil = tmp_path / "evil.yaml"
    evil.write_text("templates:\n  x: !!python/object/apply:os.system ['echo hi']\n")
    with pytest.raises(ps.TemplateError, match="evil.yaml: malformed YAML"):
        ps.load_templates(evil)
    missing = tmp_path / "missing.yaml"
    missing.write_text("templates:\n  x: !Template\n    name: n\n")
    with pytest.raises(ps.TemplateError, match="missing.yaml: template 'x': missing or non-string 'jinja'"):
        ps.load_templates(missing)


def test_apply_classification_template(templates):
    rte = templates["2b52a83c-0021-41fe-b44c-5aaa076d71a2"]
    row = {"premise": "A cat sat on the mat.", "hypothesis": "A cat sat.", "label": 0, "idx": 7}
    ex = ps.apply(rte, row, task="rte", example_id="7")
    assert ex.instruction == 'A cat sat on the mat. Is "A cat sat." true? Yes or no?'
    assert (ex.references, ex.choices, ex.task, ex.example_id) == (("Yes",), ("Yes", "No"), "rte", "7")
    # label -1 renders an empty target: promptsource's "skip this row"
    assert ps.apply(rte, dict(row, label=-1), task="rte", example_id="8") is None


def test_apply_all_counts_skips_and_names_tasks_like_t0(templates):
    rte = templates["2b52a83c-0021-41fe-b44c-5aaa076d71a2"]
    rows = [{"premise": f"p{i}", "hypothesis": "h", "label": [0, 1, -1][i % 3]} for i in range(6)]
    stats = ps.ApplyStats()
    examples = list(ps.apply_all(rte, rows, stats=stats, id_prefix="train-"))
    assert [e.example_id for e in examples] == ["train-0", "train-1", "train-3", "train-4"]
    assert [e.references for e in examples] == [("Yes",), ("No",), ("Yes",), ("No",)]
    assert (stats.examples, stats.skipped_empty, stats.skipped_bad) == (4, 2, 0)
    assert {e.task for e in examples} == {"super_glue_rte_MNLI_crowdsource"}
    assert ps.task_name("cnn_dailymail", "3.0.0", "2 or 3 sentences") == "cnn_dailymail_3.0.0_2_or_3_sentences"


def test_apply_generation_template_with_zip(templates):
    row = {"premise": "P.", "hypothesis": "H.", "names": ["a", "b"], "values": [1, 2]}
    ex = ps.apply(templates["open-1"], row, task="t", example_id="0")
    assert (ex.instruction, ex.references, ex.choices) == ("Premise: P.\na=1;b=2;", ("H.",), ())


def test_answer_choices_from_the_row(templates):
    pick = templates["pick-1"]
    row = {"question": "Which is red?", "options": ["sky", "rose"], "answer": "rose"}
    ex = ps.apply(pick, row, task="t", example_id="0")
    assert ex.instruction == "Which is red? Options: sky, rose"
    assert (ex.references, ex.choices) == (("rose",), ("sky", "rose"))
    assert ps.answer_choices(pick, row) == ["sky", "rose"]
    with pytest.raises(ps.TemplateError, match=r"template 'pick' \(id pick-1\).*row 3: the target 'tulip' is not "
                                               r"among the answer choices"):
        ps.apply(pick, dict(row, answer="tulip"), task="t", example_id="3")


def test_pipes_in_row_values_do_not_split(templates):
    row = {"premise": "a ||| b", "hypothesis": "c ||| d", "label": 1}
    ex = ps.apply(templates["2b52a83c-0021-41fe-b44c-5aaa076d71a2"], row, task="t", example_id="0")
    assert ex.instruction == 'a ||| b Is "c ||| d" true? Yes or no?' and ex.references == ("No",)
    ex = ps.apply(templates["open-1"], {**row, "names": [], "values": []}, task="t", example_id="0")
    assert ex.references == ("c ||| d",)


def test_helper_filters_hyphen_keys_and_seeded_choice(templates):
    helpers = templates["helpers-1"]
    row = {"options": ["x", "y", "z"], "votes": ["a", "b", "b", "a", "c"], "sentence-1": "S."}
    ex = ps.apply(helpers, row, task="t", example_id="5")
    assert ex.references == ("S.",)  # `sentence-1` is read as sentence_1, as promptsource does
    assert ex.instruction.startswith("Any of: ") and ex.instruction.endswith(". Most: a,b")
    picks = {ps.apply(helpers, row, task="t", example_id=str(i)).instruction for i in range(30)}
    assert len(picks) > 1  # choice draws differ across rows ...
    again = [ps.apply(helpers, row, task="t", example_id=str(i)).instruction for i in range(30)]
    assert again == [ps.apply(helpers, row, task="t", example_id=str(i)).instruction for i in range(30)]  # ... reproducibly


def test_truncation_like_promptsource(templates):
    long = " ".join(["word"] * 1000)  # 4999 characters
    row = {"premise": "P.", "hypothesis": long, "names": [], "values": []}
    ex = ps.apply(templates["open-1"], row, task="t", example_id="0")
    assert ex.references[0].endswith("...") and len(ex.references[0]) <= ps.TEXT_VAR_LENGTH
    assert ps.apply(templates["open-1"], row, task="t", example_id="0", truncate=None).references == (long,)


def test_render_errors_name_template_and_row(templates):
    broken = templates["broken-1"]
    rows = [{"premise": {"text": "fine"}}, {"premise": "a string has no .text"}]
    with pytest.raises(ps.TemplateError) as err:
        list(ps.apply_all(broken, rows, task="t"))
    assert "template 'broken' (id broken-1) of super_glue/rte failed to render row 1" in str(err.value)
    stats = ps.ApplyStats()
    assert [e.instruction for e in ps.apply_all(broken, rows, task="t", skip_bad=True, stats=stats)] == ["FINE"]
    assert (stats.examples, stats.skipped_bad, len(stats.problems)) == (1, 1, 1)
    with pytest.raises(ps.TemplateError, match="reserved key 'answer_choices'"):
        ps.apply(broken, {"premise": {"text": "x"}, "answer_choices": 1}, task="t", example_id="0")


def test_template_shape_errors():
    three = ps.Template(name="three", id="3", jinja="a ||| b ||| c")
    with pytest.raises(ps.TemplateError, match=r"row 0: the render splits into 3 parts"):
        ps.apply(three, {}, task="t", example_id="0")
    no_sep = ps.Template(name="nosep", id="n", jinja="just text")
    with pytest.raises(ps.TemplateError, match="no '\\|\\|\\|'"):
        ps.apply(no_sep, {}, task="t", example_id="0")
    empty_input = ps.Template(name="ei", id="e", jinja="{{ x }} ||| target")
    with pytest.raises(ps.TemplateError, match="row 0: empty input"):
        ps.apply(empty_input, {"x": ""}, task="t", example_id="0")
    assert ps.apply(ps.Template(name="all", id="a", jinja="{% if x %}q ||| a{% endif %}"), {"x": 0},
                    task="t", example_id="0") is None
    syntax = ps.Template(name="syntax", id="s", jinja="{% if %} ||| x")
    with pytest.raises(ps.TemplateError, match="template 'syntax' .*Jinja syntax error"):
        ps.apply(syntax, {}, task="t", example_id="0")


def test_sandbox_blocks_python_internals():
    sneaky = ps.Template(name="sneaky", id="s", jinja="{{ ''.__class__.__mro__ }} ||| x")
    with pytest.raises(ps.TemplateError, match="SecurityError"):
        ps.apply(sneaky, {}, task="t", example_id="0")


def test_templates_pickle_after_use(templates):
    rte = templates["2b52a83c-0021-41fe-b44c-5aaa076d71a2"]
    row = {"premise": "p", "hypothesis": "h", "label": 1}
    before = ps.apply(rte, row, task="t", example_id="0")
    copy = pickle.loads(pickle.dumps(rte))  # e.g. shipped to Beam workers
    assert copy == rte and ps.apply(copy, row, task="t", example_id="0") == before


def test_rows_from_jsonl(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text('{"a": 1}\n\n{"a": 2}\n[1, 2]\n')
    rows = ps.rows_from_jsonl(path)
    assert [next(rows), next(rows)] == [{"a": 1}, {"a": 2}]
    with pytest.raises(ValueError, match=r"rows.jsonl:4: a row must be a JSON object"):
        next(rows)
    path.write_text('{"a": 1}\n{"a": \n')
    with pytest.raises(ValueError, match=r"rows.jsonl:2: malformed JSON"):
        list(ps.rows_from_jsonl(path))


# ---------------------------------------------------------------------------------------------
# JSONL

GOOD_LINES = [
    {"instruction": "Translate 'chat'.", "references": ["cat", "a cat"]},
    {"instruction": "Say hi.", "response": "hi", "task": "greet", "id": 17},
    {"instruction": "Which is red?", "choices": ["sky", "rose"], "label": 1},
    {"instruction": "Which are even?", "choices": ["1", "2", "4"], "label": [1, 2]},
    {"instruction": "Capital of France?", "choices": ["Paris", "Rome"], "label": "Paris", "extra": "ignored"},
    {"instruction": "Pick b.", "choices": ["a", "b"], "references": ["b"]},
]


def write_lines(path, lines) -> None:
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))


def test_jsonl_good_records(tmp_path):
    path = tmp_path / "mine.jsonl"
    write_lines(path, GOOD_LINES[:2] + [""] + GOOD_LINES[2:])
    examples = list(jl.read_jsonl(path))
    assert [(e.task, e.example_id) for e in examples] == [
        ("mine", "mine-1"), ("greet", "17"), ("mine", "mine-4"), ("mine", "mine-5"), ("mine", "mine-6"),
        ("mine", "mine-7")]
    assert [(e.references, e.choices) for e in examples] == [
        (("cat", "a cat"), ()), (("hi",), ()), (("rose",), ("sky", "rose")), (("2", "4"), ("1", "2", "4")),
        (("Paris",), ("Paris", "Rome")), (("b",), ("a", "b"))]
    assert examples[0].instruction == "Translate 'chat'."
    assert [e.task for e in jl.read_jsonl(path, default_task="custom", max_examples=2)] == ["custom", "greet"]


BAD_LINES = [
    ('{"instruction": "x", "response": "y"', "malformed JSON"),
    ({"response": "y"}, "missing or empty 'instruction'"),
    ({"instruction": "x"}, "no 'references' or 'response'"),
    ({"instruction": "x", "references": ["a"], "response": "b"}, "not both"),
    ({"instruction": "x", "references": []}, "non-empty list of strings"),
    ({"instruction": "x", "choices": ["a", "b"], "label": 2}, "label 2 is out of range for 2 choices"),
    ({"instruction": "x", "choices": ["a", "b"], "label": "c"}, "label 'c' is not one of the choices"),
    ({"instruction": "x", "choices": ["a", "b"], "label": True}, "choice index or a choice string"),
    ({"instruction": "x", "choices": ["a", "b"]}, "'choices' without 'label'"),
    ({"instruction": "x", "response": "y", "label": 0}, "'label' without 'choices'"),
    ({"instruction": "x", "choices": ["a", "b"], "label": 0, "references": ["b"]}, "'label' gives ['a']"),
    ({"instruction": "x", "choices": ["a", "a"], "label": 0}, "'choices' has duplicates"),
    ({"instruction": "x", "response": "y", "id": "dup"}, None),  # good: the first of a duplicate pair
    ({"instruction": "z", "response": "w", "id": "dup"}, "id 'dup' of task 'data' repeats line 14"),
]


@pytest.mark.parametrize("lineno", [i for i, (_, message) in enumerate(BAD_LINES) if message])
def test_jsonl_errors_name_file_and_line(tmp_path, lineno):
    message = BAD_LINES[lineno][1]
    path = tmp_path / "data.jsonl"
    write_lines(path, [GOOD_LINES[0]] + [b for b, _ in BAD_LINES])
    stats = jl.ReadStats()
    list(jl.read_jsonl(path, skip_bad=True, stats=stats))
    # line 1 is good, BAD_LINES[i] is on line i + 2
    matching = [p for p in stats.problems if p.startswith(f"{path}:{lineno + 2}: ")]
    assert len(matching) == 1 and message in matching[0], stats.problems


def test_jsonl_first_bad_line_raises_and_skip_bad_counts(tmp_path):
    path = tmp_path / "data.jsonl"
    write_lines(path, [GOOD_LINES[0]] + [b for b, _ in BAD_LINES] + [GOOD_LINES[1]])
    with pytest.raises(jl.RecordError, match=rf"^{path}:2: malformed JSON"):
        list(jl.read_jsonl(path))
    stats = jl.ReadStats()
    examples = list(jl.read_jsonl(path, skip_bad=True, stats=stats))
    assert [e.example_id for e in examples] == ["data-1", "dup", "17"]
    assert (stats.examples, stats.skipped_bad) == (3, len(BAD_LINES) - 1)


# ---------------------------------------------------------------------------------------------
# Configs

def test_data_configs_are_locked_and_consistent():
    from configs.data import bigbench as bb_config
    from configs.data import jsonl as jsonl_config
    from configs.data import t0 as t0_config

    for variant in bb_config.VARIANTS:
        c = bb_config.get_config(variant)
        assert c.source == "bigbench" and not set(c.tasks) & set(c.heldout_tasks)
        llm = "hf" if variant == "downstream" else "none"  # adapting to a task means reranking an LLM's samples
        assert (c.output.max_len, c.llm.name, c.candidates.negatives_per_positive) == (512, llm, 1)
    assert bb_config.get_config("downstream").output.validation_fraction == 0.2
    assert len(bb_config.get_config("default").tasks) >= 4 and bb_config.get_config("all").tasks == ()
    for variant in t0_config.VARIANTS:
        c = t0_config.get_config(variant)
        assert c.source == "promptsource" and c.truncate == ps.TEXT_VAR_LENGTH
    train, heldout = t0_config.get_config("train"), t0_config.get_config("heldout")
    names = [n for n, _ in train.datasets]
    assert len(names) == len(set(names)) == 38 and not set(names) & set(train.heldout)
    assert {"super_glue/rte", "anli", "story_cloze/2016", "super_glue/axg", "crows_pairs"} <= set(train.heldout)
    assert dict(train.datasets)["glue/qqp"] == 363846 and train.templates == "all"
    assert (heldout.split, heldout.templates, len(heldout.datasets)) == ("validation", "original_task", 9)
    assert heldout.split_names.anli.validation == ("dev_r1", "dev_r2", "dev_r3")
    c = jsonl_config.get_config("a.jsonl, b.jsonl")
    assert c.paths == ("a.jsonl", "b.jsonl") and jsonl_config.get_config().paths == ()
    with pytest.raises(AttributeError):
        c.unknown_knob = 1  # locked
    with pytest.raises(ValueError, match="unknown t0 data variant"):
        t0_config.get_config("t0pp")


@pytest.mark.parametrize("module, call", [
    ("tensorflow_datasets", lambda: next(ps.rows_from_tfds("super_glue/rte", "train"))),
    ("datasets", lambda: next(ps.rows_from_hf("super_glue", "rte", "train"))),
])
def test_optional_row_loaders_explain_a_missing_library(module, call):
    import importlib.util

    if importlib.util.find_spec(module) is not None:
        pytest.skip(f"{module} is installed; this test is about its absence (loading would need the network)")
    with pytest.raises(ImportError, match="pip install"):
        call()
