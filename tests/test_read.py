"""Data config -> work units -> Examples (`cappy_jax.data.read`): the units the Beam build reads in parallel.

Every fixture is written here; nothing is downloaded. "Reading directly" below means calling the
source modules the way their own tests do; read_unit over all units must give exactly that.
"""

from __future__ import annotations

import json
import pickle
import re
import textwrap

import pytest
from fakes import ANLI_YAML

from cappy_jax.data import read
from cappy_jax.data.read import Unit
from cappy_jax.data.sources import bigbench as bb
from cappy_jax.data.sources import jsonl as jl
from cappy_jax.data.sources import promptsource as ps
from configs.data import bigbench as bb_config
from configs.data import jsonl as jsonl_config
from configs.data import t0 as t0_config


def write_json(path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


def write_lines(path, lines) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))


def task(examples, **fields):
    return dict(name="t", description="d", keywords=["k"], metrics=["exact_str_match"], examples=examples, **fields)


def read_all(config, units):
    """(training examples, held-out examples, per-unit stats) of reading every unit."""
    train, heldout, stats = [], [], []
    for unit in units:
        examples, unit_stats = read.read_unit(config, unit)
        (heldout if unit.heldout else train).extend(examples)
        stats.append(unit_stats)
    return train, heldout, stats


# ---------------------------------------------------------------------------------------------
# BIG-bench

@pytest.fixture
def bb_root(tmp_path):
    root = tmp_path / "bigbench"
    write_json(root / "gen" / "task.json", task([{"input": "1 + 1 =", "target": "2"},
                                                {"input": "2 + 2 =", "target": ["4", "four"]}]))
    write_json(root / "mc" / "task.json", task(
        [{"input": "Pick a fruit.", "target_scores": {"carrot": 0, "apple": 1}},
         {"input": "Sky colour?", "target_scores": {"blue": 1, "green": 0}},
         {"input": "Grass colour?", "target_scores": {"blue": 0, "green": 1}}]))
    write_json(root / "multi" / "task.json", {k: v for k, v in task([]).items() if k != "examples"})
    write_json(root / "multi" / "sub_a" / "task.json", task([{"input": "a1", "target": "A1"},
                                                             {"input": "a2", "target": "A2"}]))
    write_json(root / "multi" / "sub_b" / "task.json", task([{"input": "b1", "target_scores": {"yes": 1, "no": 0}},
                                                             {"input": "b2", "target": "B2"}]))
    write_json(root / "held" / "task.json", task([{"input": "secret", "target": "s"}]))
    write_json(root / "bad" / "task.json", task([
        {"input": "ok", "target": "fine"},
        {"input": "no target"},
        {"input": "zero", "target_scores": {"a": 0, "b": 0}},
        {"input": "ok", "target": "fine"},  # a duplicate of example 0
        {"input": "ok again", "target": "fine"},
    ]))
    (root / "prog").mkdir()
    (root / "prog" / "task.py").write_text("# a programmatic task\n")
    return root


def bb_conf(root, **overrides):
    config = bb_config.get_config("default").to_dict()
    config.update({"dir": str(root), "tasks": (), "heldout_tasks": (), "skip_bad": False, **overrides})
    return config


def test_bigbench_units_hold_out_tasks_and_carve_subtasks(bb_root):
    config = bb_conf(bb_root, tasks=("mc", "multi", "gen", "held"), heldout_tasks=("held", "multi:sub_a"))
    units = read.work_units(config)
    assert units == [
        Unit("bigbench", "mc", False),
        Unit("bigbench", "multi", False, (("subtasks", ("multi:sub_b",)), ("of", 2))),
        Unit("bigbench", "gen", False),
        Unit("bigbench", "held", True),
        Unit("bigbench", "multi:sub_a", True),
    ]
    train, heldout, _ = read_all(config, units)
    assert train == list(bb.read_tasks(bb_root, ["mc", "multi:sub_b", "gen"]))
    assert heldout == list(bb.read_tasks(bb_root, ["held", "multi:sub_a"]))
    assert {e.task for e in heldout} == {"held", "multi:sub_a"} and not {e.task for e in train} & {"held",
                                                                                                   "multi:sub_a"}


def test_bigbench_all_tasks_and_whole_containers(bb_root):
    # tasks=() is every JSON task (prog has none)
    config = bb_conf(bb_root, heldout_tasks=("held", "bad"), skip_bad=True)
    units = read.work_units(config)
    assert [(u.name, u.heldout, u.args) for u in units] == [
        ("gen", False, ()), ("mc", False, ()), ("multi", False, ()), ("held", True, ()), ("bad", True, ())]
    train, heldout, _ = read_all(config, units)
    assert train == list(bb.read_tasks(bb_root, ["gen", "mc", "multi"]))
    assert heldout == list(bb.read_tasks(bb_root, ["held", "bad"], skip_bad=True))
    # a held-out container takes its listed subtasks with it
    config = bb_conf(bb_root, tasks=("gen", "multi:sub_b"), heldout_tasks=("multi",))
    assert [(u.name, u.heldout) for u in read.work_units(config)] == [("gen", False), ("multi", True)]


def test_bigbench_caps_carved_subtasks_like_their_container(bb_root):
    config = bb_conf(bb_root, tasks=("mc", "multi"), heldout_tasks=("multi:sub_a",), max_examples_per_task=2)
    train, heldout, _ = read_all(config, read.work_units(config))
    container = list(bb.read_task(bb_root / "multi", max_examples=2))  # 1 per subtask, as BIG-bench splits it
    assert train == list(bb.read_task(bb_root / "mc", max_examples=2)) + [e for e in container
                                                                          if e.task == "multi:sub_b"]
    assert heldout == list(bb.read_tasks(bb_root, ["multi:sub_a"], max_examples=2))
    with pytest.raises(ValueError, match=r"bigbench unit 'multi': max_examples_per_task \(1\) must be >= the "
                                         r"number of subtasks \(2\)"):
        read.read_unit(dict(config, max_examples_per_task=1), read.work_units(config)[1])


def test_bigbench_stats_with_skip_bad(bb_root):
    config = bb_conf(bb_root, tasks=("bad", "gen"), skip_bad=True)
    examples, stats = read.read_unit(config, Unit("bigbench", "bad", False))
    assert [e.example_id for e in examples] == ["bad-0", "bad-4"]
    assert stats == {"examples": 2, "skipped_bad": 2, "duplicates": 1, "skipped_empty": 0}
    _, _, all_stats = read_all(config, read.work_units(config))
    assert read.merge_stats(all_stats) == {"examples": 4, "skipped_bad": 2, "duplicates": 1, "skipped_empty": 0}
    with pytest.raises(bb.BigBenchError, match=r"^bigbench unit 'bad': .*bad/task.json: example 1: example has "
                                               r"neither 'target' nor 'target_scores'"):
        read.read_unit(dict(config, skip_bad=False), Unit("bigbench", "bad", False))


def test_bigbench_errors_name_the_unit_and_the_fix(bb_root, tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        read.work_units(bb_conf(bb_root, tasks=("gen", "mcc")))
    assert str(err.value) == (f"bigbench task 'mcc': no task.json under {bb_root / 'mcc'} (close matches: mc): "
                              f"run `python -m cappy_jax.data.fetch bigbench --dest {bb_root} --tasks mcc`")
    missing = tmp_path / "nowhere"
    hint = f"python -m cappy_jax.data.fetch bigbench --dest {missing}`"
    with pytest.raises(FileNotFoundError, match=re.escape(hint)):
        read.work_units(bb_conf(missing))
    with pytest.raises(ValueError, match="'prog': .* is a programmatic task"):
        read.work_units(bb_conf(bb_root, tasks=("prog",)))
    with pytest.raises(ValueError, match="'multi' has no subtask 'sub_c' \\(subtasks: sub_a, sub_b\\)"):
        read.work_units(bb_conf(bb_root, heldout_tasks=("multi:sub_c",)))
    with pytest.raises(ValueError, match="tasks lists 'gen' more than once"):
        read.work_units(bb_conf(bb_root, tasks=("gen", "mc", "gen")))
    with pytest.raises(ValueError, match="heldout_tasks lists 'multi' and its subtask 'multi:sub_b'"):
        read.work_units(bb_conf(bb_root, heldout_tasks=("multi:sub_b", "multi")))
    # a unit read where the task has gone (another machine, a deleted directory)
    with pytest.raises(FileNotFoundError, match=r"^bigbench unit 'gone': no task.json under .*--tasks gone`"):
        read.read_unit(bb_conf(bb_root), Unit("bigbench", "gone", False))
    with pytest.raises(ValueError, match="jsonl unit 'gen' does not belong to a bigbench data config"):
        read.read_unit(bb_conf(bb_root), Unit("jsonl", "gen", False))
    with pytest.raises(ValueError, match="source 'csv'"):
        read.work_units(dict(bb_conf(bb_root), source="csv"))


# ---------------------------------------------------------------------------------------------
# JSONL

@pytest.fixture
def jsonl_files(tmp_path):
    first, second = tmp_path / "first.jsonl", tmp_path / "second.jsonl"
    write_lines(first, [
        {"instruction": "Say hi.", "response": "hi"},                                    # task "first"
        {"instruction": "Secret?", "response": "yes", "task": "exam"},
        {"instruction": "Which is red?", "choices": ["sky", "rose"], "label": 1, "task": "colours"},
        '{"instruction": "broken", ',                                                   # bad line
        {"instruction": "Exam 2?", "choices": ["a", "b"], "label": "b", "task": "exam", "id": 9},
        {"instruction": "Bye.", "response": "bye"},
    ])
    write_lines(second, [
        {"instruction": "Green?", "choices": ["grass", "sky"], "label": 0, "task": "colours"},
        {"instruction": "Exam 3?", "response": "no", "task": "exam"},
        {"response": "no instruction"},                                                # bad line
    ])
    return [str(first), str(second)]


def test_jsonl_units_split_files_into_training_and_heldout(jsonl_files):
    config = dict(jsonl_config.get_config(",".join(jsonl_files)).to_dict(), heldout_tasks=("exam",), skip_bad=True)
    units = read.work_units(config)
    assert units == [Unit("jsonl", jsonl_files[0], False), Unit("jsonl", jsonl_files[1], False),
                     Unit("jsonl", jsonl_files[0], True), Unit("jsonl", jsonl_files[1], True)]
    train, heldout, stats = read_all(config, units)
    direct = [e for path in jsonl_files for e in jl.read_jsonl(path, skip_bad=True)]
    assert train == [e for e in direct if e.task != "exam"]
    assert heldout == [e for e in direct if e.task == "exam"]
    assert [e.example_id for e in heldout] == ["first-2", "9", "second-2"]
    # each bad line is counted once, by its file's training unit
    assert [s["skipped_bad"] for s in stats] == [1, 1, 0, 0]
    assert read.merge_stats(stats) == {"examples": len(direct), "skipped_bad": 2, "duplicates": 0, "skipped_empty": 0}


def test_jsonl_without_heldout_tasks_and_with_caps(jsonl_files):
    config = jsonl_config.get_config(",".join(jsonl_files))  # a ConfigDict works too
    config.default_task = "mine"
    config.max_examples_per_file = 2
    units = read.work_units(config)
    assert units == [Unit("jsonl", p, False) for p in jsonl_files]
    train, heldout, _ = read_all(config, units)
    assert train == [e for p in jsonl_files for e in jl.read_jsonl(p, default_task="mine", max_examples=2)]
    assert heldout == [] and train[0].task == "mine"
    # the first N examples of a file, whichever unit keeps them
    config.heldout_tasks = ("exam",)
    train, heldout, _ = read_all(config, read.work_units(config))
    assert [e.instruction for e in train + heldout] == ["Say hi.", "Green?", "Secret?", "Exam 3?"]


def test_jsonl_errors(jsonl_files, tmp_path):
    config = jsonl_config.get_config(",".join(jsonl_files)).to_dict()
    with pytest.raises(jl.RecordError, match=rf"^jsonl unit '{re.escape(jsonl_files[0])}': .*first.jsonl:4: "
                                             r"malformed JSON"):
        read.read_unit(config, Unit("jsonl", jsonl_files[0], False))
    with pytest.raises(FileNotFoundError, match=r"jsonl unit '.*missing.jsonl': no such file: check config.paths"):
        read.work_units(dict(config, paths=(jsonl_files[0], str(tmp_path / "missing.jsonl"))))
    with pytest.raises(ValueError, match="no paths"):
        read.work_units(jsonl_config.get_config().to_dict())
    with pytest.raises(ValueError, match=r"held out\): the config has no heldout_tasks"):
        read.read_unit(config, Unit("jsonl", jsonl_files[0], True))


# ---------------------------------------------------------------------------------------------
# PromptSource (T0)

RTE_YAML = textwrap.dedent("""\
    dataset: super_glue
    subset: rte
    templates:
      rte-yes: !Template
        answer_choices: Yes ||| No
        id: rte-yes
        jinja: '{{premise}} Is "{{hypothesis}}" true? ||| {% if label != -1 %}{{ answer_choices[label] }}{% endif %}'
        metadata: !TemplateMetadata
          original_task: true
        name: yes no
        reference: ''
      rte-write: !Template
        id: rte-write
        jinja: 'Premise: {{premise}} Write a hypothesis. ||| {{hypothesis}}'
        metadata: !TemplateMetadata
          original_task: false
        name: write
        reference: ''
      rte-summ: !Template
        id: rte-summ
        jinja: 'Summarize: {{premise}} ||| {{hypothesis}}'
        metadata: !TemplateMetadata
          original_task: true
        name: summarize_
        reference: ''
    """)

IMDB_YAML = textwrap.dedent("""\
    dataset: imdb
    templates:
      imdb-sent: !Template
        answer_choices: negative ||| positive
        id: imdb-sent
        jinja: '{{text}} Positive or negative? ||| {{ answer_choices[label] }}'
        metadata: !TemplateMetadata
          original_task: true
        name: sentiment
        reference: ''
      imdb-echo: !Template
        id: imdb-echo
        jinja: 'Repeat: {{text}} ||| {{ text | upper }} {{ ["!", "?"] | choice }}'
        metadata: !TemplateMetadata
          original_task: false
        name: echo
        reference: ''
    """)



@pytest.fixture
def ps_dirs(tmp_path):
    templates, rows = tmp_path / "promptsource", tmp_path / "rows"
    for key, text in (("super_glue/rte", RTE_YAML), ("imdb", IMDB_YAML), ("anli", ANLI_YAML)):
        (templates / key).mkdir(parents=True)
        (templates / key / "templates.yaml").write_text(text)
    write_lines(rows / "super_glue" / "rte" / "train.jsonl",
                [{"premise": f"P{i}.", "hypothesis": f"H{i}.", "label": [0, 1, -1][i % 3]} for i in range(6)])
    write_lines(rows / "imdb" / "train.jsonl", [{"text": f"review number {i}", "label": i % 2} for i in range(10)])
    for r in (1, 2):
        write_lines(rows / "anli" / f"dev_r{r}.jsonl",
                    [{"premise": f"r{r} p{i}", "hypothesis": f"h{i}", "label": i % 3} for i in range(3)])
    return templates, rows


def ps_conf(ps_dirs, variant="train", **overrides):
    templates, rows = ps_dirs
    config = t0_config.get_config(variant).to_dict()
    config.update({"templates_dir": str(templates), "datasets": (("super_glue/rte", 6), ("imdb", 10)),
                   "heldout": ("anli",), "exclude_templates": ("super_glue_rte_summarize_",), "skip_bad": False,
                   "rows": dict(config["rows"], backend="jsonl", jsonl_dir=str(rows)), **overrides})
    return config


def direct(ps_dirs, key, template_id, split="train", task=None, **kwargs):
    templates, rows = ps_dirs
    (template,) = [t for t in ps.load_templates(templates / key / "templates.yaml") if t.id == template_id]
    return list(ps.apply_all(template, ps.rows_from_jsonl(rows / key / f"{split}.jsonl"), id_prefix=f"{split}-",
                             task=task, **kwargs))


def test_promptsource_units_follow_template_selection(ps_dirs):
    config = ps_conf(ps_dirs)
    units = read.work_units(config)
    assert units == [
        Unit("promptsource", "super_glue/rte:rte-yes", False, (("dataset", "super_glue/rte"), ("template", "rte-yes"),
                                                              ("max_rows", 0))),
        Unit("promptsource", "super_glue/rte:rte-write", False, (("dataset", "super_glue/rte"),
                                                                ("template", "rte-write"), ("max_rows", 0))),
        Unit("promptsource", "imdb:imdb-sent", False, (("dataset", "imdb"), ("template", "imdb-sent"),
                                                      ("max_rows", 0))),
        Unit("promptsource", "imdb:imdb-echo", False, (("dataset", "imdb"), ("template", "imdb-echo"),
                                                      ("max_rows", 0))),
    ]  # rte-summ is T0's blacklisted super_glue_rte_summarize_
    original = read.work_units(dict(config, templates="original_task", exclude_templates=()))
    assert [u.name for u in original] == ["super_glue/rte:rte-yes", "super_glue/rte:rte-summ", "imdb:imdb-sent"]
    by_id = read.work_units(dict(config, exclude_templates=("rte-write", "imdb-echo", "rte-summ")))
    assert [u.name for u in by_id] == ["super_glue/rte:rte-yes", "imdb:imdb-sent"]


def test_promptsource_read_matches_applying_templates_directly(ps_dirs):
    config = ps_conf(ps_dirs)
    config["output"]["seed"] = 3  # also seeds promptsource's choice filter
    units = read.work_units(config)
    train, heldout, stats = read_all(config, units)
    assert heldout == []
    expected = [e for key, tid in (("super_glue/rte", "rte-yes"), ("super_glue/rte", "rte-write"),
                                   ("imdb", "imdb-sent"), ("imdb", "imdb-echo"))
                for e in direct(ps_dirs, key, tid, seed=3)]
    assert train == expected
    assert {e.task for e in train} == {"super_glue_rte_yes_no", "super_glue_rte_write", "imdb_sentiment", "imdb_echo"}
    # rte-yes renders an empty target for label -1: promptsource's skip, counted
    assert stats[0] == {"examples": 4, "skipped_bad": 0, "duplicates": 0, "skipped_empty": 2, "rows": 6,
                        "over_cap": 0}
    assert read.merge_stats(stats) == {"examples": len(expected), "skipped_bad": 0, "duplicates": 0,
                                       "skipped_empty": 2, "over_cap": 0, "rows": 32}
    # truncate applies to every {{ field }}; 0 turns it off
    (first, *_), _ = read.read_unit(dict(config, truncate=5), units[2])
    assert first == direct(ps_dirs, "imdb", "imdb-sent", seed=3, truncate=5)[0]
    assert first.instruction == "re... Positive or negative?"
    (first, *_), _ = read.read_unit(dict(config, truncate=0), units[2])
    assert first == direct(ps_dirs, "imdb", "imdb-sent", seed=3, truncate=None)[0]


def test_t0_cap_splits_over_templates_with_a_seeded_sample(ps_dirs):
    config = ps_conf(ps_dirs, datasets=(("super_glue/rte", 6), ("imdb", 1000)), max_examples_per_dataset=8)
    units = read.work_units(config)
    # imdb's listed size is over the cap: 8 // 2 templates = 4 rows each; rte (6 <= 8) is read whole
    assert [u.arg("max_rows") for u in units] == [0, 0, 4, 4]
    full = {tid: {e.example_id: e for e in direct(ps_dirs, "imdb", tid)} for tid in ("imdb-sent", "imdb-echo")}
    samples = {}
    for unit in units[2:]:
        examples, stats = read.read_unit(config, unit)
        ids = [e.example_id for e in examples]
        assert len(ids) == 4 and ids == sorted(ids, key=lambda i: int(i.split("-")[1]))  # row order, full-split ids
        assert examples == [full[unit.arg("template")][i] for i in ids]  # the same examples as uncapped
        assert (stats["rows"], stats["over_cap"], stats["examples"]) == (10, 6, 4)
        assert read.read_unit(config, unit)[0] == examples  # seeded
        samples[unit.arg("template")] = ids
    assert samples["imdb-sent"] != samples["imdb-echo"]  # each template draws its own sample
    reseeded = dict(config, output=dict(config["output"], seed=1))
    assert [e.example_id for e in read.read_unit(reseeded, units[2])[0]] != samples["imdb-sent"]
    assert read.read_unit(config, units[0])[1]["over_cap"] == 0
    with pytest.raises(ValueError, match=r"'imdb': max_examples_per_dataset \(1\) must be >= its number of "
                                         r"templates \(2\)"):
        read.work_units(dict(config, datasets=(("imdb", 1000),), max_examples_per_dataset=1))
    assert all(u.arg("max_rows") == 0 for u in read.work_units(dict(config, max_examples_per_dataset=0)))


def test_t0_heldout_sets_are_refused_in_training_and_read_as_evaluation(ps_dirs):
    with pytest.raises(ValueError, match=r"include held-out evaluation sets anli next to training sets: remove them "
                                         r"from config.datasets"):
        read.work_units(ps_conf(ps_dirs, datasets=(("imdb", 10), ("anli", 162865))))
    with pytest.raises(ValueError, match="held-out evaluation sets super_glue/rte"):
        read.work_units(ps_conf(ps_dirs, heldout=("super_glue",)))  # a dataset holds out its subsets
    config = ps_conf(ps_dirs, "heldout", datasets=(("anli", 162865),))
    config["split_names"] = {"anli": {"validation": ("dev_r1", "dev_r2")}}
    units = read.work_units(config)
    assert [(u.name, u.heldout) for u in units] == [("anli:anli-gpt3", True)]  # original_task templates only
    train, heldout, _ = read_all(config, units)
    assert train == [] and heldout == (direct(ps_dirs, "anli", "anli-gpt3", "dev_r1", task="anli_GPT_3_style_r1")
                                       + direct(ps_dirs, "anli", "anli-gpt3", "dev_r2", task="anli_GPT_3_style_r2"))
    assert heldout[0].example_id == "dev_r1-0" and len(heldout) == 6


def test_promptsource_skip_bad_and_errors(ps_dirs):
    templates, rows = ps_dirs
    write_lines(rows / "imdb" / "train.jsonl",
                [{"text": "fine", "label": 1}, {"text": "odd", "label": 0, "answer_choices": "x"}])
    config = ps_conf(ps_dirs, datasets=(("imdb", 2),))
    unit = read.work_units(config)[0]
    with pytest.raises(ps.TemplateError, match=r"^promptsource unit 'imdb:imdb-sent': template 'sentiment' .*row "
                                               r"train-1: the row has the reserved key"):
        read.read_unit(config, unit)
    examples, stats = read.read_unit(dict(config, skip_bad=True), unit)
    assert [e.example_id for e in examples] == ["train-0"]
    assert (stats["examples"], stats["skipped_bad"], stats["rows"]) == (1, 1, 2)

    with pytest.raises(FileNotFoundError) as err:
        read.work_units(ps_conf(ps_dirs, datasets=(("imdb", 2), ("glue/mrpc", 3668))))
    assert str(err.value) == (f"promptsource dataset 'glue/mrpc': no templates.yaml for glue/mrpc under {templates}: "
                              f"run `python -m cappy_jax.data.fetch promptsource --dest {templates} --tasks glue/mrpc`")
    (rows / "imdb" / "train.jsonl").unlink()
    with pytest.raises(FileNotFoundError, match=r"'imdb': no rows file .*imdb/train.jsonl \(rows.backend='jsonl'\)"):
        read.work_units(config)
    with pytest.raises(FileNotFoundError, match=r"^promptsource unit 'imdb:imdb-sent': no rows file"):
        read.read_unit(config, unit)
    with pytest.raises(ValueError, match="rows.backend='csv'"):
        read.work_units(dict(config, rows=dict(config["rows"], backend="csv")))
    with pytest.raises(ValueError, match="templates='some'"):
        read.work_units(dict(config, templates="some"))
    with pytest.raises(ValueError, match=r"'imdb': no template left .*remove it from config.datasets"):
        read.work_units(dict(config, exclude_templates=("imdb-sent", "imdb_echo")))
    with pytest.raises(ValueError, match="has no template 'gone'"):
        read.read_unit(config, Unit("promptsource", "imdb:gone", False, (("dataset", "imdb"), ("template", "gone"))))


def test_hf_backend_imports_lazily_and_story_cloze_needs_its_csvs(ps_dirs):
    import importlib.util

    config = ps_conf(ps_dirs, datasets=(("imdb", 10),))
    config["rows"]["backend"] = "hf"
    unit = read.work_units(config)[0]  # listing units needs no datasets library
    if importlib.util.find_spec("datasets") is None:
        with pytest.raises(ImportError, match=r"^promptsource unit 'imdb:imdb-sent': .*pip install datasets"):
            read.read_unit(config, unit)
    story = Unit("promptsource", "story_cloze/2016:x", True, (("dataset", "story_cloze/2016"), ("template", "x")))
    (ps_dirs[0] / "story_cloze" / "2016").mkdir(parents=True)
    (ps_dirs[0] / "story_cloze" / "2016" / "templates.yaml").write_text(
        "dataset: story_cloze\nsubset: '2016'\ntemplates:\n  x: !Template\n    id: x\n    jinja: 'a ||| b'\n"
        "    name: x\n")
    with pytest.raises(ValueError, match="set rows.story_cloze_data_dir"):
        read.read_unit(config, story)


# ---------------------------------------------------------------------------------------------
# Units and stats

def test_units_pickle_and_hash():
    unit = Unit("promptsource", "super_glue/rte:x", False, (("dataset", "super_glue/rte"), ("template", "x"),
                                                           ("max_rows", 3)))
    carved = Unit("bigbench", "multi", False, (("subtasks", ("multi:sub_b",)), ("of", 2)))
    for u in (unit, carved, Unit("jsonl", "a.jsonl", True)):
        copy = pickle.loads(pickle.dumps(u))
        assert copy == u and hash(copy) == hash(u)
    assert len({unit, carved, Unit("jsonl", "a.jsonl", True), Unit("jsonl", "a.jsonl", False)}) == 4
    assert unit.arg("max_rows") == 3 and unit.arg("missing", 7) == 7
    with pytest.raises(AttributeError):
        unit.heldout = True  # frozen


def test_merge_stats():
    assert read.merge_stats([]) == {"examples": 0, "skipped_bad": 0, "duplicates": 0, "skipped_empty": 0}
    merged = read.merge_stats([{"examples": 2, "skipped_bad": 1, "rows": 5}, {"examples": 3, "over_cap": 2}])
    assert merged == {"examples": 5, "skipped_bad": 1, "duplicates": 0, "skipped_empty": 0, "over_cap": 2, "rows": 5}
    assert list(merged) == ["examples", "skipped_bad", "duplicates", "skipped_empty", "over_cap", "rows"]
    with pytest.raises(TypeError, match="'examples' must be an int"):
        read.merge_stats([{"examples": 1.5}])
