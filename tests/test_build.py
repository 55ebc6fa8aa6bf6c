"""The Beam build: manifest counts add up, same config and seed give the same bytes, a crash re-run
loses and doubles nothing, and the CLI builds from BIG-bench task files."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import sys
import tempfile

import numpy as np
import pytest

from cappy_jax.data import build, read, shards
from cappy_jax.data.rouge import rouge_l_batch
from configs.data import jsonl as jsonl_config
from conftest import WORDS, write_jsonl

@pytest.fixture
def data_config(tmp_path, minilm_dir):
    write_jsonl(tmp_path / "gen.jsonl", task="reverse", n=40, seed=0)
    write_jsonl(tmp_path / "cls.jsonl", task="longness", n=30, seed=1, classification=True)
    write_jsonl(tmp_path / "held.jsonl", task="heldout_task", n=12, seed=2)
    config = jsonl_config.get_config(",".join(str(tmp_path / f) for f in ("gen.jsonl", "cls.jsonl", "held.jsonl")))
    config.heldout_tasks = ("heldout_task",)
    config.candidates.corruptions_per_reference = 1
    config.output.scorer_dir = str(minilm_dir)
    config.output.max_len = 48
    config.output.num_shards = 3
    config.output.eval_shards = 2
    config.output.validation_fraction = 0.2
    return config


def shard_bytes(directory):
    return {f: open(os.path.join(directory, f), "rb").read() for f in sorted(os.listdir(directory))
            if f.endswith(".tfrecord")}


def test_manifest_counts_add_up_and_splits_are_separate(tmp_path, data_config, monkeypatch, caplog):
    monkeypatch.setattr(build, "PROGRESS_SECONDS", 0.0)  # a progress line for every batch
    with caplog.at_level(logging.INFO, logger="cappy_jax.data.build"):
        manifest = build.build(data_config, str(tmp_path / "out"))
    progress = [r.getMessage() for r in caplog.records]
    assert any(m.startswith("tokenized ") for m in progress), progress
    assert sorted(m.split()[1].rstrip(":") for m in progress if m.startswith("wrote ")) == sorted(
        s["file"] for sp in manifest["splits"].values() for s in sp["shards"])
    splits = manifest["splits"]
    assert set(splits) == {"train", "validation", "heldout"}
    assert manifest["sources"]["examples"] == 82
    seen_groups = {}
    for split, sp in splits.items():
        files = shards.shard_files(str(tmp_path / "out"), split)
        assert [os.path.basename(f) for f in files] == [s["file"] for s in sp["shards"]]
        recs = shards.read_records(files)
        n = len(recs["label"])
        assert n == sp["records"] == sum(s["records"] for s in sp["shards"]) > 0
        assert sum(sp["tasks"].values()) == sum(sp["kinds"].values()) == sum(sp["label_histogram"]) == n
        assert sp["groups"] == len(set(recs["group_id"]))
        assert sp["tokens"] == int(recs["length"].sum()) and recs["length"].max() <= 48
        assert np.all((recs["label"] >= 0) & (recs["label"] <= 1))
        seen_groups[split] = set(recs["group_id"])
        if split == "heldout":
            assert set(recs["task"]) == {"heldout_task"}
        else:
            assert "heldout_task" not in recs["task"]
    assert not seen_groups["train"] & seen_groups["validation"], "example groups never straddle splits"
    kinds = splits["train"]["kinds"]
    assert {"reference", "negative", "choice", "corrupted"} <= set(kinds)
    assert (tmp_path / "out" / "tokenizer" / "tokenizer.json").exists()


def test_same_config_and_seed_give_identical_bytes_and_a_crash_rerun_heals(tmp_path, data_config):
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    manifest = build.build(data_config, a)
    build.build(data_config, b)
    reference = shard_bytes(a)
    assert reference == shard_bytes(b)
    # What a crash leaves behind: some shards missing, a half-written temp file, no manifest,
    # and a shard of an earlier build with another shard count.
    os.remove(os.path.join(a, "manifest.json"))
    os.remove(os.path.join(a, "train-00001-of-00003.tfrecord"))
    open(os.path.join(a, "train-00000-of-00003.tfrecord.tmp-dead"), "wb").write(b"partial")
    open(os.path.join(a, "train-00004-of-00005.tfrecord"), "wb").write(b"stale")
    os.makedirs(os.path.join(a, build.SPILL_DIR))
    open(os.path.join(a, build.SPILL_DIR, "train-00000-dead"), "wb").write(b"spilled by a crashed run")
    again = build.build(data_config, a)
    assert shard_bytes(a) == reference
    assert not os.path.exists(os.path.join(a, build.SPILL_DIR))
    assert again["splits"] == manifest["splits"]
    assert not [f for f in os.listdir(a) if ".tmp" in f]

    data_config.output.seed = 1
    build.build(data_config, str(tmp_path / "c"))
    assert shard_bytes(str(tmp_path / "c")) != reference


RECORD = {"input_ids": [0, 31414, 2, 2, 1437, 2], "token_type_ids": [0] * 6, "label": 0.25, "task": "task",
          "group_id": "task/3", "kind": "llm_sample", "instruction": "Say hello.", "response": "hello"}


def test_records_serialize_to_the_same_bytes_in_every_process():
    # A tf.train.Example's features are a protobuf map, whose serialized order is not fixed from one process
    # to the next: shards built by another run, or by another Beam worker, would differ in their bytes.
    code = ("import hashlib, json, sys; from cappy_jax.data import shards; "
            "sys.stdout.write(hashlib.sha256(shards.serialize(json.loads(sys.argv[1]))).hexdigest())")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    digests = {hashlib.sha256(shards.serialize(RECORD)).hexdigest()}
    for _ in range(2):
        done = subprocess.run([sys.executable, "-c", code, json.dumps(RECORD)], capture_output=True, text=True,
                              timeout=120, cwd=root)
        assert done.returncode == 0, done.stderr[-2000:]
        digests.add(done.stdout)
    assert len(digests) == 1, digests


def test_default_runner_runs_in_process_and_leaves_nothing_in_tmp(tmp_path, data_config, monkeypatch):
    # Beam's DirectRunner first tries Prism, which it downloads from GitHub; offline the try fails and leaves
    # a beam-temp directory in the temp dir. The config's runner (FnApiRunner) never starts it.
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    assert data_config.beam.runner == "FnApiRunner"
    build.build(data_config, str(tmp_path / "out"))
    assert not list(scratch.iterdir())
    options = build.beam_options(data_config.beam, ["--runner=DataflowRunner", "--project=p"])
    assert "--runner=FnApiRunner" in options and options[-2:] == ["--runner=DataflowRunner", "--project=p"]


def bigbench_tasks(root):
    """Two training tasks (one with subtasks) and a held-out one, as BIG-bench JSON task directories."""
    tasks = {
        "gen_task": [{"input": f"Spell {w}", "target": " ".join(w)} for w in WORDS],
        "mc_task": [{"input": f"Is {w} a Greek letter?", "target_scores": {"yes": 1, "no": 0}} for w in WORDS],
        "held_task": [{"input": f"Upper-case {w}", "target": w.upper()} for w in WORDS[:6]],
    }
    for name, examples in tasks.items():
        (root / name).mkdir(parents=True)
        (root / name / "task.json").write_text(json.dumps({"name": name, "examples": examples}))
    for sub, fmt in (("lower", str.lower), ("title", str.title)):
        (root / "two_ways" / sub).mkdir(parents=True)
        (root / "two_ways" / sub / "task.json").write_text(json.dumps({"name": sub, "examples": [
            {"input": f"Write {w} in {sub} case", "target": fmt(w)} for w in WORDS]}))
    (root / "two_ways" / "task.json").write_text(json.dumps({"name": "two_ways", "subtasks": ["lower", "title"]}))


def bigbench_config(tmp_path, minilm_dir):
    from configs.data import bigbench as bigbench_config

    bigbench_tasks(tmp_path / "bigbench")
    config = bigbench_config.get_config("default")
    config.dir = str(tmp_path / "bigbench")
    config.tasks = ("gen_task", "mc_task", "two_ways")
    config.heldout_tasks = ("held_task",)
    config.output.scorer_dir = str(minilm_dir)
    config.output.update(max_len=48, num_shards=3, eval_shards=2, validation_fraction=0.2)
    return config


def test_unit_by_unit_candidates_and_spilled_shuffles_give_the_same_shards(tmp_path, minilm_dir, monkeypatch):
    # BIG-bench tasks lie whole in one work unit, so the reader makes their candidates and no shuffle holds the
    # examples; records go to spill files, so no shuffle holds them either. Neither changes a byte: against
    # examples sent to their task through spilled buckets (what JSONL sources take), and with a spill after
    # every batch of records and every example.
    config = bigbench_config(tmp_path, minilm_dir)
    config.candidates.corruptions_per_reference = 1
    flushed = []
    real_flush = build._Spill.flush
    monkeypatch.setattr(build._Spill, "flush", lambda self: (flushed.extend(self.buffers), real_flush(self)))
    manifest = build.build(config, str(tmp_path / "by_unit"))
    assert {key[0] for key in flushed} == {"train", "validation", "heldout"}
    assert len(flushed) == 3 + 2 + 2  # 256 MB is never reached: each shard's records spilled once, at the end
    assert not os.path.exists(tmp_path / "by_unit" / build.SPILL_DIR)
    reference = shard_bytes(str(tmp_path / "by_unit"))
    assert set(manifest["splits"]["train"]["tasks"]) >= {"gen_task", "mc_task", "two_ways:lower", "two_ways:title"}

    config.output.spill_mb = 0.0
    flushed.clear()
    assert build.build(config, str(tmp_path / "tiny_spills"))["splits"] == manifest["splits"]
    assert len(flushed) > 3 + 2 + 2  # some shards' records spilled more than once
    assert shard_bytes(str(tmp_path / "tiny_spills")) == reference

    monkeypatch.setattr(read, "tasks_within_units", lambda config: False)
    for spill_mb, buckets in ((256.0, 64), (0.0, 2)):
        config.output.update(spill_mb=spill_mb, task_buckets=buckets)
        flushed.clear()
        out = str(tmp_path / f"grouped_{buckets}")
        assert build.build(config, out)["splits"] == manifest["splits"]
        assert shard_bytes(out) == reference and not os.path.exists(os.path.join(out, build.SPILL_DIR))
        spilled_buckets = [key for key in flushed if key[0] == "tasks"]
        assert {b for _, b in spilled_buckets} <= set(range(buckets))
        # 256 MB: each bucket spilled once; 0 MB: a spill after every example
        assert len(spilled_buckets) == (manifest["sources"]["examples"] if spill_mb == 0 else len(set(spilled_buckets)))

    config.output.task_buckets = 0
    with pytest.raises(ValueError, match="task_buckets >= 1"):
        build.build(config, str(tmp_path / "no_buckets"))


class EchoLLM:
    """An LLM backend that answers each instruction with its own words, recording each `generate` call."""

    def __init__(self):
        self.calls: list[list[str]] = []

    def generate(self, instructions, recipe):
        self.calls.append(list(instructions))
        return [[(m.name, f"{inst.split()[-1]} {m.name} {k}") for m in recipe for k in range(m.num_return)]
                for inst in instructions]


def test_llm_samples_come_from_fixed_chunks_of_each_task_whatever_path_the_build_takes(tmp_path, minilm_dir,
                                                                                      monkeypatch):
    # Beam's BatchElements sizes batches by timing, and an LLM's samples depend on which instructions share a
    # batch (HFBackend seeds each batch), so the LLM is given each task's examples in example order, a fixed
    # chunk at a time: the same samples, and the same bytes, in the reader and after the GroupByKey.
    from cappy_jax.data import candidates as candidates_lib, llm

    config = bigbench_config(tmp_path, minilm_dir)
    config.llm.name = "hf"
    config.llm.hf.model_dir = "unused: the backend is EchoLLM"
    monkeypatch.setattr(candidates_lib, "STREAM_CHUNK", 5)
    backends = []
    monkeypatch.setattr(llm, "backend_from_config", lambda cfg: backends.append(EchoLLM()) or backends[-1])
    manifest = build.build(config, str(tmp_path / "by_unit"))
    calls = [c for b in backends for c in b.calls]
    expected = []  # each generation task's instructions by example id, cut into chunks of 5
    for unit in read.work_units(config.to_dict()):
        examples, _ = read.read_unit(config.to_dict(), unit)
        for task in sorted({ex.task for ex in examples}):
            ordered = sorted((ex for ex in examples if ex.task == task), key=lambda ex: ex.example_id)
            expected += [[ex.instruction for ex in ordered[i:i + 5] if not ex.is_classification]
                         for i in range(0, len(ordered), 5)]
    expected = [c for c in expected if c]  # no LLM call for choices, which are a complete candidate set
    assert sorted(calls) == sorted(expected)
    assert max(len(c) for c in calls) == 5 and not any("Greek letter" in i for c in calls for i in c)
    train = manifest["splits"]["train"]
    assert {f"llm:{m.name}" for m in llm.REFERENCE_RECIPE} <= set(train["kinds"])
    assert train["kinds"]["llm:sample"] == 4 * train["kinds"]["reference"]  # choice tasks get no samples
    got = shards.read_records(shards.shard_files(str(tmp_path / "by_unit"), "train"))
    recs = [dict(zip(got, values)) for values in zip(*got.values())]
    references = {r["group_id"]: [r["response"]] for r in recs if r["kind"] == "reference"}
    sampled = [r for r in recs if r["kind"].startswith("llm:")]
    assert np.allclose([r["label"] for r in sampled],  # labelled with Rouge-L against the example's references
                       rouge_l_batch([references[r["group_id"]] for r in sampled], [r["response"] for r in sampled]))
    reference = shard_bytes(str(tmp_path / "by_unit"))

    backends.clear()
    monkeypatch.setattr(read, "tasks_within_units", lambda config: False)
    assert build.build(config, str(tmp_path / "grouped"))["splits"] == manifest["splits"]
    assert sorted(c for b in backends for c in b.calls) == sorted(expected)
    assert shard_bytes(str(tmp_path / "grouped")) == reference

    config.llm.hf.model_dir = ""  # what the backend needs is checked before the output directory is touched
    with pytest.raises(ValueError, match="--llm_model"):
        build.build(config, str(tmp_path / "no_model"))
    assert not (tmp_path / "no_model").exists()


def test_a_build_with_an_hf_cache_resumes_without_asking_the_model_again(tmp_path, minilm_dir, causal_dir,
                                                                        monkeypatch):
    # The LLM gets the same batches on every run, so a re-run (after a crash, hours into sampling) finds every
    # batch in the cache and gives the same bytes.
    from cappy_jax.data import llm

    config = bigbench_config(tmp_path, minilm_dir)
    config.tasks, config.heldout_tasks = ("gen_task",), ()
    config.llm.name = "hf"
    config.llm.hf.update(model_dir=str(causal_dir), batch_size=4, cache_dir=str(tmp_path / "llm_cache"))
    manifest = build.build(config, str(tmp_path / "first"))
    assert manifest["splits"]["train"]["kinds"]["llm:sample"] > 0

    def no_model(self, texts):
        raise AssertionError("the model was asked again")

    monkeypatch.setattr(llm.HFBackend, "_encode", no_model)
    assert build.build(config, str(tmp_path / "again"))["splits"] == manifest["splits"]
    assert shard_bytes(str(tmp_path / "again")) == shard_bytes(str(tmp_path / "first"))


def test_a_task_split_over_units_stops_the_build_before_its_manifest(tmp_path, data_config, monkeypatch):
    # Unit by unit, a task in two units would get its negatives drawn apart. JSONL files can share a task, so
    # JSONL takes the GroupByKey; were a source to promise otherwise wrongly, the build fails, manifest unwritten.
    write_jsonl(tmp_path / "more.jsonl", task="reverse", n=5, seed=3)
    data_config.paths = (*data_config.paths, str(tmp_path / "more.jsonl"))
    monkeypatch.setattr(read, "tasks_within_units", lambda config: True)
    with pytest.raises(Exception, match="task 'reverse' has examples in two work units"):
        build.build(data_config, str(tmp_path / "out"))
    assert not (tmp_path / "out" / build.MANIFEST).exists()
    monkeypatch.undo()
    assert build.build(data_config, str(tmp_path / "out"))["splits"]["train"]["tasks"]["reverse"] > 0


def test_pairs_the_tokenizer_keeps_nothing_of_are_left_out_and_counted(tmp_path, data_config, caplog):
    # A zero-width space is a character, so the candidate is not blank, but MiniLM's normalizer drops it: no
    # response to score. The build leaves the pair out and counts it, rather than failing (at BIG-bench's
    # full scale, 22 minutes into a build).
    with open(tmp_path / "cls.jsonl", "a") as f:
        f.write(json.dumps({"task": "longness", "instruction": "Is 'x' long?", "choices": ["yes", "\u200b"],
                            "label": 0}) + "\n")
    with caplog.at_level(logging.WARNING, logger="cappy_jax.data.build"):
        manifest = build.build(data_config, str(tmp_path / "out"))
    split = next(s for s, sp in manifest["splits"].items() if sp["no_tokens"])
    assert manifest["splits"][split]["no_tokens"] == 1
    assert sum(sp["no_tokens"] for sp in manifest["splits"].values()) == 1
    recs = shards.read_records(shards.shard_files(str(tmp_path / "out"), split))
    assert "\u200b" not in set(recs["response"]) and "yes" in set(recs["response"])
    assert any("longness/" in r.getMessage() and "has no tokens" in r.getMessage() for r in caplog.records)


def test_bad_records_fail_with_file_and_line_or_are_counted(tmp_path, data_config):
    with open(tmp_path / "gen.jsonl", "a") as f:
        f.write(json.dumps({"task": "reverse", "instruction": "", "references": ["x"]}) + "\n")
    with pytest.raises(Exception, match=r"gen\.jsonl:41"):
        build.build(data_config, str(tmp_path / "out"))
    data_config.skip_bad = True
    manifest = build.build(data_config, str(tmp_path / "out"))
    assert manifest["sources"]["skipped_bad"] == 1


def test_cli_builds_bigbench_tasks(tmp_path, minilm_dir):
    root = tmp_path / "bigbench"
    bigbench_tasks(root)
    out = tmp_path / "shards"
    cmd = [sys.executable, "-m", "cappy_jax.data.build", "--config", "configs/data/bigbench.py:default",
           "--output", str(out), f"--config.dir={root}", "--config.tasks=('gen_task','mc_task')",
           "--config.heldout_tasks=('held_task',)", f"--config.output.scorer_dir={minilm_dir}",
           "--config.output.num_shards=2", "--config.output.eval_shards=1",
           "--direct_num_workers=2", "--direct_running_mode=multi_processing"]  # Beam flags pass through
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                          cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert done.returncode == 0, done.stderr[-3000:]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["splits"]["heldout"]["tasks"] == {"held_task": 6 * 2}  # reference + one negative each
    assert set(manifest["splits"]["train"]["tasks"]) == {"gen_task", "mc_task"}
    assert "wrote" in done.stderr

    cmd[cmd.index(f"--config.dir={root}")] = f"--config.dir={tmp_path / 'not_fetched'}"
    missing = subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                             cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert missing.returncode == 1 and "Traceback" not in missing.stderr, missing.stderr[-3000:]
    assert "python -m cappy_jax.data.fetch bigbench --dest" in missing.stderr  # what to run about it


def test_what_shards_depend_on_leaves_out_only_how_a_build_runs():
    from configs.data import bigbench, demo, t0

    for config in (bigbench.get_config("default"), t0.get_config("train"), jsonl_config.get_config("a.jsonl"),
                   demo.get_config("default")):
        cfg = config.to_dict()
        kept = build.what_shards_depend_on(cfg)
        assert "beam" not in kept and {"spill_mb", "task_buckets"}.isdisjoint(kept["output"])
        assert "cache_dir" not in kept["llm"]["hf"] and "cache_dir" not in kept["llm"]["openai"]
        assert kept["output"]["seed"] == cfg["output"]["seed"] and kept["candidates"] == cfg["candidates"]
        assert "beam" in cfg and "spill_mb" in cfg["output"]  # the config itself is left as it was


def test_spill_files_are_read_once_and_a_second_read_says_to_rerun(tmp_path):
    spill = build._Spill(str(tmp_path), limit_bytes=10)
    spill.add(("train", 1), ("a", 1), 6)
    assert not spill.full()
    spill.add(("train", 1), ("b", 2), 6)
    spill.add(("tasks", 0), ("c", 3), 1)
    assert spill.full()
    written = [value.value for value in spill.finish()]
    assert [key for key, _ in written] == [("tasks", 0), ("train", 1)] and not spill.buffers
    paths = [path for _, path in written]
    assert list(build._read_spill(paths)) == [("c", 3), ("a", 1), ("b", 2)]
    assert not list(tmp_path.iterdir())  # gone once read: the disk holds an item about once
    with pytest.raises(FileNotFoundError, match="re-run the build"):
        list(build._read_spill(paths))
