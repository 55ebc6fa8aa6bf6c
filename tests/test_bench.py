"""The benchmark runner: the encoder-cpu suite in reduced form, and what it writes down."""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path

import numpy as np
import pytest

from bench import encoder_cpu, report
from bench import run as bench_run

RECORD_KEYS = {
    "suite", "command", "env", "case", "family", "params", "rows", "seq_len", "steps", "warmup",
    "ours_step_s", "theirs_step_s", "ours_tokens_per_s", "theirs_tokens_per_s", "ours_pairs_per_s",
    "theirs_pairs_per_s", "ratio", "ours_compile_s", "torch_threads", "max_abs_logit_diff", "other_load",
}
ENV_KEYS = {"date", "device_kind", "jax_backend", "cpu_model", "cores", "versions", "git"}
THROUGHPUT_KEYS = ("ours_step_s", "theirs_step_s", "ours_tokens_per_s", "theirs_tokens_per_s",
                   "ours_pairs_per_s", "theirs_pairs_per_s", "ratio", "ours_compile_s")


def test_encoder_cpu_reduced_writes_json_lines_and_a_markdown_table(tmp_path):
    out, md = tmp_path / "results.jsonl", tmp_path / "BENCHMARKS.md"
    out.write_text('{"earlier": 1}\n')  # appended to, never replaced
    md.write_text("# Benchmarks\n\nearlier text\n")
    argv = ["--suite", "encoder-cpu", "--steps", "2", "--warmup", "1", "--cases", "tiny",
            "--output", str(out), "--markdown", str(md)]
    returned = bench_run.main(argv)

    lines = out.read_text().splitlines()
    assert json.loads(lines[0]) == {"earlier": 1}
    records = [json.loads(line) for line in lines[1:]]
    assert records == json.loads(json.dumps(returned)) and len(records) == 1
    r = records[0]
    assert RECORD_KEYS <= set(r), RECORD_KEYS - set(r)
    assert ENV_KEYS <= set(r["env"]), ENV_KEYS - set(r["env"])
    assert {"python", "jax", "jaxlib", "flax", "torch", "transformers"} <= set(r["env"]["versions"])
    assert (r["suite"], r["case"], r["family"], r["steps"], r["warmup"]) == ("encoder-cpu", "tiny", "roberta", 2, 1)
    assert (r["rows"], r["seq_len"]) == (16, 128)
    for key in THROUGHPUT_KEYS:
        assert report.is_finite_positive(r[key]), (key, r[key])
    assert math.isclose(r["ratio"], r["ours_tokens_per_s"] / r["theirs_tokens_per_s"], rel_tol=1e-12)
    assert math.isclose(r["ours_tokens_per_s"], 16 * 128 / r["ours_step_s"], rel_tol=1e-12)
    assert math.isclose(r["theirs_pairs_per_s"], 16 / r["theirs_step_s"], rel_tol=1e-12)
    # Same function on both sides: what makes the timing a comparison.
    assert r["max_abs_logit_diff"] < 1e-5
    assert math.isclose(r["ours_loss"], r["theirs_loss"], rel_tol=1e-4, abs_tol=1e-6)
    assert r["command"] == "python -m bench.run " + " ".join(argv)
    # In-process, other test modules may have loaded TensorFlow already; the fresh-process check
    # (test_only_the_input_suite_imports_tensorflow) is the one that proves suites stay free of it.
    assert r["other_load"] is None or 0 <= r["other_load"] <= 1.5

    text = md.read_text()
    assert text.startswith("# Benchmarks\n\nearlier text\n\n## encoder-cpu — ")
    assert f"- Command: `{r['command']}`" in text
    assert f"- Device: {r['env']['device_kind']} " in text and r["env"]["cpu_model"] in text
    assert f"torch {r['env']['versions']['torch']}" in text
    table = [line for line in text.splitlines() if line.startswith("| tiny |")]
    assert len(table) == 1
    cells = [c.strip() for c in table[0].strip("|").split("|")]
    headers = [c.header for c in encoder_cpu.COLUMNS]
    assert cells[headers.index("ours/theirs")] == f"{r['ratio']:.2f}"
    assert cells[headers.index("params")] == f"{r['params']:,d}"


def test_summarize_arithmetic():
    record = encoder_cpu.summarize("x", [0.5, 0.1, 0.2], [0.4, 0.4, 1.0], rows=4, seq_len=10, extra=1)
    assert record["ours_step_s"] == 0.2 and record["theirs_step_s"] == 0.4
    assert record["ours_tokens_per_s"] == 200 and record["theirs_pairs_per_s"] == 10
    assert record["ratio"] == 2.0 and record["extra"] == 1 and record["steps"] == 3


def test_machine_busy_counts_all_but_idle_and_iowait():
    stat = "cpu  100 5 20 1000 50 1 2 3 0 0\ncpu0 1 2 3 4 5 6 7 8 0 0\n"
    assert math.isclose(report.machine_busy_s(stat) * os.sysconf("SC_CLK_TCK"), 131)
    assert report.machine_busy_s("garbage") is None


def test_turns_alternate_and_every_step_is_timed():
    calls = []
    times = encoder_cpu.time_interleaved({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, 3, 1)
    assert calls == ["a", "b", "a", "b", "b", "a", "a", "b"]
    assert [len(t) for t in times.values()] == [3, 3] and all(x >= 0 for t in times.values() for x in t)


def test_new_markdown_file_gets_the_header(tmp_path):
    md = tmp_path / "B.md"
    report.append_markdown(md, "## s\n")
    report.append_markdown(md, "## t\n")
    text = md.read_text()
    assert text.startswith(report.HEADER) and text.endswith("## s\n\n## t\n")


def test_unknown_suite_or_case_is_refused(tmp_path):
    with pytest.raises(SystemExit):
        bench_run.main(["--suite", "nope", "--no-markdown", "--output", str(tmp_path / "r.jsonl")])
    with pytest.raises(SystemExit, match="unknown cases"):
        bench_run.main(["--suite", "encoder-cpu", "--cases", "huge", "--no-markdown",
                        "--output", str(tmp_path / "r.jsonl")])
    assert not (tmp_path / "r.jsonl").exists()


# --------------------------------------------------------------------------------------
# Suite `rouge`: ours against rouge-score, reduced to 200 pairs.
# --------------------------------------------------------------------------------------

ROUGE_KEYS = {
    "suite", "command", "env", "case", "ours_function", "pairs", "references", "seed", "steps", "warmup",
    "ours_s", "ours_pairs_per_s", "ours_cold_pairs_per_s", "theirs_pairs", "theirs_s", "theirs_pairs_per_s",
    "ratio", "max_abs_diff", "checked_pairs", "other_load", "needs_tensorflow", "rouge_score_version",
}


def _table_cells(text: str, case: str, columns) -> dict[str, str]:
    rows = [line for line in text.splitlines() if line.startswith(f"| {case} |")]
    assert len(rows) == 1, rows
    return dict(zip([c.header for c in columns], [c.strip() for c in rows[0].strip("|").split("|")]))


def test_rouge_reduced_checks_every_value_and_writes_a_table(tmp_path, monkeypatch):
    pytest.importorskip("rouge_score")
    from bench import rouge_suite

    monkeypatch.setattr(rouge_suite, "DEFAULT_PAIRS", 200)
    tf_before = "tensorflow" in sys.modules
    out, md = tmp_path / "results.jsonl", tmp_path / "BENCHMARKS.md"
    argv = ["--suite", "rouge", "--steps", "2", "--warmup", "0", "--output", str(out), "--markdown", str(md)]
    returned = bench_run.main(argv)

    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert records == json.loads(json.dumps(returned)) and [r["case"] for r in records] == ["batch", "single"]
    for r in records:
        assert ROUGE_KEYS <= set(r), ROUGE_KEYS - set(r)
        assert (r["suite"], r["pairs"], r["theirs_pairs"], r["checked_pairs"], r["steps"]) == ("rouge", 200, 200, 200, 2)
        for key in ("ours_s", "ours_pairs_per_s", "ours_cold_pairs_per_s", "theirs_s", "theirs_pairs_per_s", "ratio"):
            assert report.is_finite_positive(r[key]), (key, r[key])
        assert r["max_abs_diff"] == 0 or r["max_abs_diff"] <= 1e-12
        assert math.isclose(r["ratio"], r["ours_pairs_per_s"] / r["theirs_pairs_per_s"], rel_tol=1e-12)
        assert math.isclose(r["ours_pairs_per_s"], 200 / r["ours_s"], rel_tol=1e-12)
        assert r["needs_tensorflow"] is False and r["command"] == "python -m bench.run " + " ".join(argv)
    assert records[0]["theirs_s"] == records[1]["theirs_s"]  # one rouge-score timing for both cases
    if not tf_before:
        assert "tensorflow" not in sys.modules
    text = md.read_text()
    assert text.startswith(report.HEADER) and "\n## rouge — " in text
    cells = _table_cells(text, "batch", rouge_suite.COLUMNS)
    assert cells["ours/theirs"] == f"{records[0]['ratio']:.1f}" and cells["pairs"] == "200"


def test_rouge_workload_is_deterministic_and_cappy_shaped():
    from bench import rouge_suite

    refs, preds = rouge_suite.make_pairs(300, seed=3)
    assert (refs, preds) == rouge_suite.make_pairs(300, seed=3)
    assert (refs, preds) != rouge_suite.make_pairs(300, seed=4)
    assert len(refs) == len(preds) == 300 and all(1 <= len(r) <= 3 for r in refs)
    assert any(p in r for r, p in zip(refs, preds)), "some predictions copy a reference"
    assert any(p not in r for r, p in zip(refs, preds))
    words = sorted(len(r.split()) for rs in refs for r in rs)
    assert 5 <= words[len(words) // 2] <= 20 and max(words) <= 200
    vocab, _ = rouge_suite.vocabulary()
    assert {"running", "studies", "studied", "bigger", "happily", "took", "lying"} <= set(vocab)


def test_rouge_check_fails_loudly_on_any_difference():
    from bench import rouge_suite

    refs, preds = [["a b"], ["c d"]], ["a", "c"]
    assert rouge_suite.check_equal([0.5, 0.25], [0.5, 0.25], refs, preds, "x") == 0.0
    with pytest.raises(AssertionError, match="first at pair 1"):
        rouge_suite.check_equal([0.5, 0.25 + 1e-9], [0.5, 0.25], refs, preds, "x")
    with pytest.raises(AssertionError, match="first at pair 0"):
        rouge_suite.check_equal([float("nan"), 0.25], [0.5, 0.25], refs, preds, "x")


# --------------------------------------------------------------------------------------
# Suite `input`: the tf.data pipeline, reduced to 2 small shards and a few batches.
# --------------------------------------------------------------------------------------

INPUT_KEYS = {
    "suite", "command", "env", "case", "max_segments", "open_rows", "rows", "max_len", "steps", "warmup",
    "pairs", "pairs_per_s", "rows_per_s", "useful_tokens_per_s", "packing_efficiency", "pairs_per_row",
    "first_batch_s", "cores_used", "other_load", "needs_tensorflow", "tensorflow_version", "records", "shards",
    "length_mean", "length_median", "share_at_cap", "lengths", "accelerator_useful_tokens_per_s",
    "host_over_accelerator", "accelerator_source",
}


def _train_real_row(device: str, recipe: str, tokens: float, date: str) -> str:
    return json.dumps({"suite": "train-real", "case": "large", "recipe": recipe, "device_kind": device,
                       "useful_tokens_per_s": tokens, "pairs_per_s": tokens / 150, "env": {"date": date}})


def test_input_reduced_times_packed_and_unpacked_batches(tmp_path, monkeypatch):
    pytest.importorskip("tensorflow")
    from bench import input_suite

    monkeypatch.setattr(input_suite, "DEFAULT_RECORDS", 240)
    monkeypatch.setattr(input_suite, "DEFAULT_SHARDS", 2)
    monkeypatch.setattr(input_suite, "DEFAULT_SHUFFLE_BUFFER", 64)
    recorded = tmp_path / "recorded.jsonl"  # the accelerator rates the cases are compared with
    recorded.write_text("\n".join([_train_real_row("cpu", "packed", 9e9, "c"),        # not an accelerator
                                   _train_real_row("GPU X", "packed", 100_000.0, "a"),
                                   _train_real_row("GPU Y", "packed", 200_000.0, "b"),  # the fastest: chosen
                                   _train_real_row("GPU X", "pad512", 50_000.0, "a")]) + "\n")
    monkeypatch.setattr(input_suite, "RESULTS", recorded)
    out, md = tmp_path / "results.jsonl", tmp_path / "BENCHMARKS.md"
    argv = ["--suite", "input", "--steps", "3", "--warmup", "1", "--output", str(out), "--markdown", str(md)]
    returned = bench_run.main(argv)

    records = {r["case"]: r for r in map(json.loads, out.read_text().splitlines())}
    assert list(records) == list(input_suite.CASES) and list(records.values()) == json.loads(json.dumps(returned))
    for case, r in records.items():
        assert INPUT_KEYS <= set(r), INPUT_KEYS - set(r)
        assert (r["suite"], r["steps"], r["warmup"], r["rows"], r["max_len"]) == ("input", 3, 1, 32, 512)
        assert (r["records"], r["shards"], r["needs_tensorflow"]) == (240, 2, True)
        assert (r["max_segments"], r["open_rows"]) == input_suite.CASE_CONFIG[case]
        for key in ("pairs_per_s", "rows_per_s", "useful_tokens_per_s", "first_batch_s", "cores_used"):
            assert report.is_finite_positive(r[key]), (case, key, r[key])
        assert 0 < r["packing_efficiency"] <= 1
        assert math.isclose(r["rows_per_s"], 3 * 32 / r["seconds"], rel_tol=1e-12)
        assert math.isclose(r["pairs_per_s"], r["pairs"] / r["seconds"], rel_tol=1e-12)
        assert r["pairs_per_row"] <= r["max_segments"]
        packed = r["max_segments"] > 1
        assert r["accelerator_source"] == ("GPU Y, b, train-real packed" if packed else "GPU X, a, train-real pad512")
        assert r["accelerator_useful_tokens_per_s"] == (200_000.0 if packed else 50_000.0)
        assert math.isclose(r["host_over_accelerator"], r["useful_tokens_per_s"] / r["accelerator_useful_tokens_per_s"])
    real = input_suite.bigbench_lengths(240)
    assert records["packed-bigbench"]["lengths"] == "bigbench" and records["packed"]["lengths"] == "synthetic"
    assert records["packed-bigbench"]["length_mean"] == real.mean() and records["packed-bigbench"]["records"] == 240
    assert records["packed-bigbench"]["length_mean"] > records["packed"]["length_mean"] + 40  # real pairs are longer
    assert records["unpacked"]["pairs_per_row"] == 1.0
    assert records["packed"]["packing_efficiency"] > records["unpacked"]["packing_efficiency"]
    assert records["packed-open1"]["packing_efficiency"] > records["unpacked"]["packing_efficiency"]
    cells = _table_cells(md.read_text(), "packed", input_suite.COLUMNS)
    assert cells["efficiency"] == f"{records['packed']['packing_efficiency']:.1%}"
    assert cells["host ÷ accelerator"] == f"{records['packed']['host_over_accelerator']:.1f}"


def test_input_without_an_accelerator_rate_compares_with_nothing(tmp_path):
    from bench import input_suite

    record = {"max_segments": 16, "useful_tokens_per_s": 5.0}
    assert input_suite.against_accelerator(record, tmp_path / "missing.jsonl") == {
        "accelerator_useful_tokens_per_s": None, "host_over_accelerator": None, "accelerator_source": None}
    only_cpu = tmp_path / "cpu.jsonl"
    only_cpu.write_text(_train_real_row("cpu", "packed", 1e6, "a") + "\n")
    assert input_suite.accelerator_rate("packed", only_cpu) is None


def test_input_summarize_and_lengths():
    import numpy as np

    from bench import input_suite

    seg = np.array([[1, 1, 2, 0], [1, 0, 0, 0]])
    batch = {"segment_ids": seg, "label_mask": np.array([[1.0, 1.0], [1.0, 0.0]])}
    r = input_suite.summarize("x", [batch, batch], 2.0)
    assert (r["pairs"], r["pairs_per_s"], r["rows_per_s"], r["useful_tokens_per_s"]) == (6, 3.0, 2.0, 4.0)
    assert r["packing_efficiency"] == 0.5 and r["pairs_per_row"] == 1.5 and r["batch"] == "2×4"
    lengths = input_suite.pair_lengths(50_000)
    stats = input_suite.length_stats(lengths)
    # ANCHORS' BIG-bench pairs: mean 101, median 60, p90 256, 3.5% at the 512 cap.
    assert 90 <= stats["length_mean"] <= 110 and stats["length_median"] == 60
    assert 220 <= stats["length_p90"] <= 280 and 0.015 <= stats["share_at_cap"] <= 0.05
    assert lengths.min() >= input_suite.LENGTH_MIN and lengths.max() == 512


def test_only_the_input_suite_imports_tensorflow():
    """Loading every suite module, and running rouge, leaves TensorFlow unloaded (checked in a fresh process)."""
    import subprocess

    pytest.importorskip("rouge_score")
    code = ("import sys\n"
            "from bench import run\n"
            "for s in run.SUITES.values(): s.load()\n"
            "from bench import rouge_suite\n"
            "rouge_suite.run(pairs=20, steps=1, warmup=0)\n"
            "assert 'tensorflow' not in sys.modules, 'a suite imported TensorFlow'\n")
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    result = subprocess.run([sys.executable, "-c", code], cwd=repo, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]


def test_train_shape_reduced_times_the_real_train_step(tmp_path):
    out, md = tmp_path / "results.jsonl", tmp_path / "BENCHMARKS.md"
    argv = ["--suite", "train-shape", "--cases", "tiny", "--steps", "2", "--warmup", "1", "--output", str(out),
            "--markdown", str(md)]
    (r,) = bench_run.main(argv)
    devices = r["devices"]
    assert (r["case"], r["rows"], r["seq_len"], r["steps"]) == ("tiny", 4 * devices, 128, 2)
    assert report.is_finite_positive(r["tokens_per_s"]) and report.is_finite_positive(r["compile_s"])
    assert math.isclose(r["tokens_per_s"], r["rows"] * r["seq_len"] / r["step_s"], rel_tol=1e-12)
    assert math.isfinite(r["loss"]) and r["params"] == 112_449
    assert r["mfu_percent"] is None  # a CPU has no listed peak
    assert "train-shape" in md.read_text() and r["command"] == "python -m bench.run " + " ".join(argv)


FAKE_BASELINE = """\
import argparse, json
p = argparse.ArgumentParser()
for a in ("--suite", "--model", "--lengths", "--batch", "--modes", "--seq", "--peak_tflops"):
    p.add_argument(a)
a = p.parse_args()
print("loading...")
if a.suite == "train":
    for mode in a.modes.split(","):
        rows, seq = int(a.batch), int(a.seq)
        print(json.dumps({"suite": "train", "impl": "hf-torch-" + mode, "device": "cpu", "seconds": 2.0,
                          "steps": 4, "tokens_per_s": 2 * rows * seq, "pairs_per_s": 2.0 * rows,
                          "mfu_vs_peak": None, "model": a.model}))
    raise SystemExit
lengths = json.load(open(a.lengths))
assert a.suite in ("score", "train-real") and all(isinstance(n, int) for n in lengths)
for mode in (a.modes.split(",") if a.modes else ["bf16"]):
    print(json.dumps({"suite": a.suite, "impl": "hf-torch-" + mode, "pairs_per_s": 100.0 * int(a.batch),
                      "useful_tokens_per_s": 1000, "n": len(lengths), "model": a.model}))
"""


def test_train_shape_baseline_runs_at_our_shape_and_gives_ratios(tmp_path):
    fake = tmp_path / "hf_baseline.py"
    fake.write_text(FAKE_BASELINE)
    records = bench_run.main(["--suite", "train-shape", "--cases", "tiny", "--steps", "1", "--warmup", "0",
                              "--baseline", str(fake), "--attention", "xla", "--no-markdown",
                              "--output", str(tmp_path / "r.jsonl")])
    ours, *theirs = records
    assert ours["impl"] == "cappy_jax" and ours["attention"] == "xla"
    assert [t["impl"] for t in theirs] == ["hf-torch-eager", "hf-torch-compile"]
    for t in theirs:
        assert t["theirs"]["model"] == "tiny" and t["tokens_per_s"] == 2 * ours["rows"] * ours["seq_len"]
        assert math.isclose(t["ratio"], ours["tokens_per_s"] / t["tokens_per_s"])
    with pytest.raises(SystemExit, match="runs no model"):
        bench_run.main(["--suite", "rouge", "--attention", "xla", "--no-markdown", "--output", str(tmp_path / "x")])


def test_score_reduced_runs_the_scoring_api_and_the_baseline_on_the_same_lengths(tmp_path, monkeypatch):
    from bench import report, score_suite

    monkeypatch.setitem(score_suite.PAIRS, "tiny", 150)
    fake = tmp_path / "hf_baseline.py"
    fake.write_text(FAKE_BASELINE)
    calls = []
    real_baseline = report.run_baseline
    monkeypatch.setattr(report, "run_baseline", lambda *a: calls.append(a) or real_baseline(*a))
    out, md = tmp_path / "results.jsonl", tmp_path / "BENCHMARKS.md"
    argv = ["--suite", "score", "--cases", "tiny,tiny-fp8", "--steps", "1", "--warmup", "0", "--baseline", str(fake),
            "--output", str(out), "--markdown", str(md)]
    records = bench_run.main(argv)
    lengths = score_suite.load_lengths(150)
    # Batch sizes outer (the throughput setting of every case first), cases inner, one baseline run each size.
    assert [(r["pairs_per_batch"], r["case"]) for r in records] == [
        (n, c) for n in score_suite.PAIRS_PER_BATCH for c in ("tiny", "tiny-fp8")]
    assert len(calls) == len(score_suite.PAIRS_PER_BATCH)
    for r in records:
        assert (r["pairs"], r["steps"]) == (150, 1)
        assert r["quantize"] == ("fp8" if r["case"] == "tiny-fp8" else "none")
        assert r["theirs"]["n"] == 150 and r["theirs"]["model"] == "tiny"
        assert r["theirs_pairs_per_s"] == 100.0 * r["pairs_per_batch"]
        assert math.isclose(r["ratio"], r["pairs_per_s"] / r["theirs_pairs_per_s"])
        assert math.isclose(r["useful_tokens_per_s"], sum(lengths) / r["pass_s"])
        assert 0 <= r["padding_percent"] < 50
        if r["quantize"] == "fp8":  # measured against the unquantized scores of the same command
            assert 0 < r["max_score_diff"] < 0.05
        else:
            assert r["max_score_diff"] is None
    assert "| tiny-fp8 |" in md.read_text() and len(out.read_text().splitlines()) == 4
    with pytest.raises(SystemExit, match="no baseline"):
        bench_run.main(["--suite", "rouge", "--baseline", str(fake), "--no-markdown", "--output", str(out)])


def test_score_lengths_file_is_the_documented_real_distribution():
    from bench import score_suite

    lengths = json.loads(score_suite.LENGTHS.read_text())
    meta = json.loads(score_suite.LENGTHS.with_suffix(".meta.json").read_text())
    assert len(lengths) == meta["sampled"] and len(meta["tasks"]) >= 20
    assert min(lengths) >= 3 and max(lengths) <= 512 and meta["max"] == max(lengths)
    assert abs(sum(lengths) / len(lengths) - meta["mean"]) < 0.1


def test_train_real_reduced_compares_three_recipes_and_the_baseline_on_the_same_pairs(tmp_path, monkeypatch):
    from bench import train_real

    monkeypatch.setitem(train_real.PAIRS, "tiny", 48)
    fake = tmp_path / "hf_baseline.py"
    fake.write_text(FAKE_BASELINE)
    out, md = tmp_path / "results.jsonl", tmp_path / "BENCHMARKS.md"
    records = bench_run.main(["--suite", "train-real", "--cases", "tiny", "--steps", "1", "--warmup", "1",
                              "--baseline", str(fake), "--output", str(out), "--markdown", str(md)])
    ours = {r["recipe"]: r for r in records if not r["recipe"].startswith("hf")}
    assert list(ours) == ["packed", "pad512", "dynamic"]
    lengths = train_real.load_lengths(48)
    for r in ours.values():
        assert r["pairs"] == 48 and math.isclose(r["useful_tokens_per_s"], sum(lengths) / r["pass_s"])
        assert math.isclose(r["packed_ratio"], ours["packed"]["pairs_per_s"] / r["pairs_per_s"])
    # Packing computes far fewer token slots than padding every pair to 512 (48 pairs: the last step's
    # empty rows count as padding too).
    assert 3 * ours["packed"]["padding_percent"] < ours["pad512"]["padding_percent"]
    assert ours["packed"]["train_steps"] < ours["pad512"]["train_steps"] == ours["dynamic"]["train_steps"]
    theirs = [r for r in records if r["recipe"].startswith("hf")]
    assert [r["recipe"] for r in theirs] == ["hf pad512", "hf dynamic"]
    assert all(r["theirs"]["n"] == 48 and r["theirs_pairs_per_s"] == 800.0 for r in theirs)


def test_train_real_batches_cover_every_pair_once():
    from bench import train_real

    lengths = train_real.load_lengths(300)
    for recipe in (*train_real.RECIPES, "packed8", "packed1"):
        steps = train_real.batches(lengths, recipe, 8)
        seen = sorted(i for step in steps for row in step for i in row)
        assert seen == list(range(300)), recipe
        assert all(len(step) <= 8 for step in steps)
        most = max(len(row) for step in steps for row in step)
        assert most <= train_real.segments(recipe) == {"packed": 16, "packed8": 8}.get(recipe, 1), recipe
        if recipe in ("packed", "packed8"):
            assert most > 8 if recipe == "packed" else most == 8  # the cap binds on these lengths
        for step in steps:
            w = train_real.width(recipe, lengths, step)
            assert all(sum(lengths[i] for i in row) <= w for row in step)
            if recipe == "dynamic":
                assert w % 64 == 0 or w == train_real.MAX_LEN
    for bad in ("packed0", "packed08", "packedx", "pad256"):
        with pytest.raises(ValueError, match="unknown recipe"):
            train_real.segments(bad)
    with pytest.raises(ValueError, match="unknown recipe"):
        next(train_real.measure("tiny", steps=1, warmup=0, baseline_path=None, recipes=["packed", "packed0"]))



def test_memory_reduced_grows_with_the_batch_and_remat_saves_temporaries(tmp_path):
    out, md = tmp_path / "results.jsonl", tmp_path / "BENCHMARKS.md"
    records = bench_run.main(["--suite", "memory", "--cases", "tiny", "--output", str(out), "--markdown", str(md)])
    by = {(r["rows_per_device"], r["remat"]): r for r in records}
    assert set(by) == {(8, False), (32, False), (8, True), (32, True)}
    for remat in (False, True):
        assert 0 < by[8, remat]["estimate_gib"] < by[32, remat]["estimate_gib"]
    assert by[32, True]["temp_gib"] < by[32, False]["temp_gib"]  # activations recomputed, not kept
    assert "| tiny | cpu | 32 | 32 | 128 | True |" in md.read_text()
    assert all(r["batch"] != "largest" for r in records)  # a CPU has no memory limit to fit


def test_memory_with_a_limit_runs_the_steps_and_finds_the_largest_batch(tmp_path, monkeypatch):
    """The accelerator path on this CPU: a pretend allocator limit between the 32- and 64-row estimates."""
    from bench import memory_suite

    sizes, compiled = {}, []

    def estimate(setup, mesh, rows, seq_len):
        e = real_estimate(setup, mesh, rows, seq_len)
        sizes[rows, setup.model.config.remat] = e["estimate"]
        compiled.append((rows, setup.model.config.remat))
        return e

    real_estimate = memory_suite.estimate
    monkeypatch.setattr(memory_suite, "estimate", estimate)
    limit = {}
    monkeypatch.setattr(memory_suite, "bytes_limit", lambda device: limit.get("bytes"))
    setup = memory_suite.train.build(memory_suite.step_config(128), memory_suite.sharding_lib.make_mesh(
        {"data": -1}), memory_suite._model("tiny", False))
    mesh = setup.mesh
    limit["bytes"] = (real_estimate(setup, mesh, 32, 128)["estimate"] + real_estimate(setup, mesh, 64, 128)["estimate"]) // 2
    records = list(memory_suite.measure("tiny"))
    largest = {r["remat"]: r for r in records if r["batch"] == "largest"}
    assert set(largest) == {False, True}
    n = largest[False]["rows_per_device"]
    assert 32 <= n < 64 and sizes[n, False] < limit["bytes"] <= sizes[n + 1, False]
    assert largest[True]["rows_per_device"] >= n  # recomputing activations fits at least as many rows
    assert len(compiled) == len(set(compiled))  # each size compiled once (tens of seconds each on a GPU)


def test_largest_fitting_finds_the_boundary_in_few_compilations():
    from bench.memory_suite import largest_fitting

    gib = 2 ** 30
    shapes = {
        "linear": lambda n: 10 * gib + n * gib // 4,
        "convex": lambda n: 10 * gib + n * gib // 4 + n * n * gib // 2000,
        "jittery": lambda n: 10 * gib + n * gib // 4 + (n % 3) * gib // 8,   # XLA's sizes are not smooth
        "kink": lambda n: 10 * gib + min(n, 40) * gib // 4 + max(n - 40, 0) * gib // 40,  # the compiler recomputing
    }
    for name, size in shapes.items():
        for limit in (9 * gib, 11 * gib, 17 * gib, 20 * gib, 31 * gib, 74 * gib):
            want = max((n for n in range(1, 5000) if size(n) < limit), default=0)
            for measured in ({}, {8: size(8), 32: size(32)}, {32: size(32)}):
                probes = []

                def counted(n, size=size):
                    probes.append(n)
                    return size(n)

                assert largest_fitting(counted, limit, measured, 32) == want, (name, limit, measured)
                assert len(probes) == len(set(probes)) and not set(probes) & set(measured)
                assert len(probes) <= 16, (name, limit, measured, probes)
                if name == "linear" and len(measured) == 2:
                    assert len(probes) <= 2, probes  # the line is right: the guess and its neighbour
    # Off by a few rows, as roberta-large's step is: a handful of compilations, not a doubling and bisection.
    probes = []
    size = shapes["convex"]
    largest_fitting(lambda n: probes.append(n) or size(n), 40 * gib, {8: size(8), 32: size(32)}, 32)
    assert len(probes) <= 5, probes


def test_profile_reduced_attributes_the_step_to_its_parts(tmp_path):
    records = bench_run.main(["--suite", "profile", "--cases", "tiny", "--steps", "2", "--warmup", "1",
                              "--no-markdown", "--output", str(tmp_path / "r.jsonl")])
    by = {r["part"]: r for r in records}
    from bench import profile_suite

    assert list(by) == [*profile_suite.PARTS, "device busy", "idle", "host input", "step (timed)"]
    for part in ("attention", "matmuls", "layer norms", "dropout", "optimizer"):
        assert by[part]["ms_per_step"] > 0, part  # every part of the step is found in the trace
    assert by["matmuls"]["backward_ms"] > 0 and by["matmuls"]["forward_ms"] > 0
    busy = sum(by[p]["ms_per_step"] for p in profile_suite.PARTS)
    assert math.isclose(by["device busy"]["ms_per_step"], busy)
    assert by["device busy"]["ms_per_step"] <= 1.5 * by["step (timed)"]["ms_per_step"]
    assert by["host input"]["ms_per_step"] > 0 and by["step (timed)"]["attributed"]


HLO = """HloModule jit_step, is_scheduled=true

%fused_computation.1 (param_0: f32[4]) -> f32[4] {
  %param_0 = f32[4]{0} parameter(0)
  ROOT %dot.2 = f32[4]{0} dot(%param_0, %param_0), metadata={op_name="jit(step)/while/body/transpose(jvp(Scorer))/layer_0/mlp_in/dot_general"}
}

%body (p: (s32[])) -> (s32[]) {
  %p = (s32[]) parameter(0)
  ROOT %gemm_fusion.3 = f32[4]{0} fusion(%p), kind=kCustom, calls=%fused_computation.1, metadata={op_name="jit(step)/while/body/transpose(jvp(Scorer))/layer_0/mlp_in/add"}
}

ENTRY %main.9 (a: f32[4]) -> f32[4] {
  %a = f32[4]{0} parameter(0)
  %while.4 = (s32[]) while(%a), condition=%cond, body=%body, metadata={op_name="jit(step)/while"}
  %while.9 = (s32[], f32[], f32[], f32[], f32[], /*index=5*/f32[]) while(%a), condition=%cond, body=%body
  %custom-call.5 = f32[4]{0} custom-call(%a), custom_call_target="__cudnn$fmhaSoftmax", metadata={op_name="jit(step)/while/body/jvp(Scorer)/layer_2/attention/dot_product_attention"}
  %loop_add_fusion = f32[4]{0} fusion(%a), kind=kLoop, calls=%fused_computation.1, metadata={op_name="jit(step)/optimizer/add"}
  ROOT %add_fusion.7 = f32[4]{0} add(%a, %a), metadata={op_name="jit(step)/while/body/jvp(Scorer)/layer_2/mlp_norm/add"}
}
"""


def test_profile_attribution_from_hlo_names():
    from bench import profile_suite as ps

    ins = ps.hlo_instructions(HLO)
    assert ins["while.4"]["opcode"] == "while" and ins["while.4"]["op_names"] == ["jit(step)/while"]
    assert ins["while.9"]["opcode"] == "while"  # a tuple shape with /*index=5*/ inside still parses
    assert ins["gemm_fusion.3"]["opcode"] == "fusion"
    assert any(n.endswith("dot_general") for n in ins["gemm_fusion.3"]["op_names"])  # the fused dot is seen
    assert ps.classify(ins["gemm_fusion.3"]["op_names"]) == "matmuls" and ps.backward(ins["gemm_fusion.3"]["op_names"])
    assert ps.classify(ins["custom-call.5"]["op_names"]) == "attention"
    assert ps.classify(ins["loop_add_fusion"]["op_names"]) == "optimizer"  # named scope wins over the fused dot
    assert ps.classify(ins["add_fusion.7"]["op_names"]) == "layer norms"
    assert ps.classify(["jit(step)/jvp(Scorer)/layer_0/attention/query/dot_general"]) == "matmuls"
    assert ps.classify(["jit(step)/jvp(Scorer)/layer_0/Dropout_0/mul"]) == "dropout"
    assert ps.classify([], event_name="sm90_xmma_gemm_bf16bf16") == "matmuls"  # no annotation: the kernel name
    events = [{"args": {"hlo_op": op}, "dur": dur} for op, dur in
              (("gemm_fusion.3", 3000.0), ("custom-call.5", 1000.0), ("while.4", 9000.0), ("add_fusion.7", 500.0))]
    rows = {r["part"]: r for r in ps.summarize(events, ins, steps=1, step_s=0.005)}
    assert rows["matmuls"]["backward_ms"] == 3.0 and rows["attention"]["forward_ms"] == 1.0
    assert rows["device busy"]["ms_per_step"] == 4.5  # the while loop's own span is not counted twice
    assert math.isclose(rows["idle"]["ms_per_step"], 0.5)


def test_attention_check_compares_kernels_and_fails_loudly(capsys):
    from bench import attention_check

    assert attention_check.main(["--attention", "xla", "--model", "tiny", "--dtype", "float32"]) == 0
    record = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert record["ok"] and record["logits"] == 0.0 and record["grads"] == 0.0
    # cuDNN's kernel does not run on a CPU: a failure the script reports (exit 1) so a caller falls back.
    assert attention_check.main(["--attention", "cudnn", "--model", "tiny"]) == 1
    record = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert not record["ok"] and record["error"]
    assert attention_check.main(["--attention", "cudnn-ragged", "--model", "tiny"]) == 1
    assert not json.loads(capsys.readouterr().out.strip().splitlines()[-1])["ok"]
    # A kernel that runs but returns NaN fails too, whichever error is NaN.
    for bad in ({"logits": float("nan"), "grads": 0.0, "logits_xla": 0.0, "grads_xla": 0.0},
                {"logits": 0.0, "grads": float("nan"), "logits_xla": 0.0, "grads_xla": 0.0}):
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(attention_check, "compare", lambda *a, bad=bad: dict(bad))
            assert attention_check.main(["--attention", "xla", "--model", "tiny"]) == 1
        capsys.readouterr()
    # The bound: the tolerance, or twice XLA's own error in the same dtype where rounding alone is larger.
    ok = {"logits": 0.04, "grads": 0.002, "logits_xla": 0.03, "grads_xla": 0.001}
    assert attention_check.within(ok, 3e-2)
    assert not attention_check.within(dict(ok, logits=0.07), 3e-2)
    assert not attention_check.within(dict(ok, grads=0.031), 3e-2)
    a = {"w": np.ones(4)}
    assert attention_check.relative_error({"w": np.ones(4) * 1.01}, a) == pytest.approx(0.01)


def test_a_stopped_suite_writes_what_it_measured(tmp_path, monkeypatch):
    """SIGTERM (a `timeout`) mid-suite: the measurements made so far land in the JSON lines and the table."""
    import signal as signal_lib

    from bench import rouge_suite

    def run(**kwargs):
        yield {"case": "first", "note": "measured"}
        os.kill(os.getpid(), signal_lib.SIGTERM)
        yield {"case": "never"}

    monkeypatch.setattr(rouge_suite, "run", run)
    out, md = tmp_path / "r.jsonl", tmp_path / "B.md"
    with pytest.raises(SystemExit, match="cut short"):
        bench_run.main(["--suite", "rouge", "--output", str(out), "--markdown", str(md)])
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert [r["case"] for r in lines] == ["first"]
    assert "cut short (Stopped after 1 measurement(s))" in md.read_text()
    assert signal_lib.getsignal(signal_lib.SIGTERM) is not bench_run._stop  # the handler is put back


def test_a_failing_baseline_keeps_our_measurement_in_the_table(tmp_path):
    """hf_baseline failing (torch.compile, say) after our step was timed: our row still lands in the JSON
    lines and the table, the table says why it stops there, and the error still ends the run."""
    fake = tmp_path / "hf_baseline.py"
    fake.write_text("import sys\nprint('Traceback: inductor failed', file=sys.stderr)\nsys.exit(1)\n")
    out, md = tmp_path / "r.jsonl", tmp_path / "B.md"
    with pytest.raises(RuntimeError, match="inductor failed"):
        bench_run.main(["--suite", "train-shape", "--cases", "tiny", "--steps", "1", "--warmup", "0",
                        "--baseline", str(fake), "--attention", "xla", "--output", str(out), "--markdown", str(md)])
    (ours,) = [json.loads(x) for x in out.read_text().splitlines()]
    assert ours["impl"] == "cappy_jax" and report.is_finite_positive(ours["tokens_per_s"])
    table = md.read_text()
    assert "cut short (RuntimeError after 1 measurement(s):" in table and "| tiny |" in table


def test_make_lengths_writes_real_pair_lengths_and_their_padding_ceiling(tmp_path):
    from bench import make_lengths

    # Packed, two rows of 512 slots hold [512] and [256, 256]; padded, three rows: 1.5x the fill.
    assert make_lengths.padding_ceiling([256, 512, 256]) == {"pad512_fill": 0.6667, "packed_fill": 1.0,
                                                             "packing_ceiling": 1.5}
    import cappy_jax

    demo = Path(cappy_jax.__file__).parent / "demo_data" / "bigbench"
    out = tmp_path / "lengths.json"
    make_lengths.main(["--bigbench", str(demo), "--tasks", "all", "--per_task", "5", "--pairs", "50",
                       "--out", str(out)])
    lengths = json.loads(out.read_text())
    meta = json.loads(out.with_suffix(".meta.json").read_text())
    assert len(lengths) == meta["sampled"] == min(50, meta["total_pairs"]) and meta["total_pairs"] > 50
    assert len(meta["tasks"]) == len(list(demo.iterdir())) and all(4 < n <= 512 for n in lengths)
    assert meta["packing_ceiling"] == make_lengths.padding_ceiling(lengths)["packing_ceiling"] > 1


def test_roberta_bpe_tokenizer_encodes_pairs_as_roberta(tmp_path):
    """A toy GPT-2-style vocabulary: byte-level tokens, one merge, roberta's `<s> A </s></s> B </s>`."""
    from bench import make_lengths
    from cappy_jax.tokenization import PairTokenizer

    letters = "abcdefghijklmnopqrstuvwxyz"
    vocab = {c: i for i, c in enumerate(letters + "Ġ")}
    vocab["Ġa"] = len(vocab)
    (tmp_path / "encoder.json").write_text(json.dumps(vocab))
    (tmp_path / "vocab.bpe").write_text("#version: 0.2\nĠ a\n")
    tok = PairTokenizer.from_dir(make_lengths.roberta_bpe_tokenizer(str(tmp_path), str(tmp_path)))
    enc = tok.encode_pairs(["ab a"], ["cd"], 512)
    assert tok.num_special_tokens == 4
    assert enc.lengths().tolist() == [2 + 1 + 2 + 4]  # a b Ġa | c d | <s> </s> </s> </s>


def test_merge_appends_what_a_gpu_run_added_and_refuses_a_moved_tree(tmp_path):
    from bench import merge

    repo, out = tmp_path / "repo", tmp_path / "out"
    (repo / "bench").mkdir(parents=True)
    out.mkdir()
    (repo / "BENCHMARKS.md").write_text("# Benchmarks\n")
    (repo / "bench" / "results.jsonl").write_text('{"a": 1}\n')
    (out / "BENCHMARKS.md").write_text("# Benchmarks\n## train-real (GPU)\n")
    (out / "results.jsonl").write_text('{"a": 1}\n{"b": 2}\n')
    (out / "accelerator.log").write_text("== all done\n")
    assert merge.merge(out, "gpu", repo) == {"BENCHMARKS.md": 20, "bench/results.jsonl": 9}
    assert (repo / "BENCHMARKS.md").read_text() == "# Benchmarks\n## train-real (GPU)\n"
    assert (repo / "bench" / "results.jsonl").read_text() == '{"a": 1}\n{"b": 2}\n'
    assert (repo / "bench" / "logs" / "gpu.log").read_text() == "== all done\n"
    # This checkout's BENCHMARKS.md changed since the copy: nothing is written, the user is told why.
    (out / "results.jsonl").write_text('{"a": 1}\n{"b": 2}\n{"c": 3}\n')
    (repo / "BENCHMARKS.md").write_text("# Benchmarks, edited\n")
    with pytest.raises(ValueError, match="merge by hand"):
        merge.merge(out, "gpu", repo)
    assert (repo / "bench" / "results.jsonl").read_text() == '{"a": 1}\n{"b": 2}\n'
    with pytest.raises(FileNotFoundError, match="OUTDIR"):
        merge.merge(tmp_path / "nowhere", "gpu", repo)


def test_merge_takes_a_second_gpu_command_after_the_first(tmp_path):
    """Two commands copied the same commit; the first is merged, the second's tail goes after it with --base."""
    import subprocess

    from bench import merge

    repo = tmp_path / "repo"
    (repo / "bench").mkdir(parents=True)
    (repo / "BENCHMARKS.md").write_text("# B\n")
    (repo / "bench" / "results.jsonl").write_text("{}\n")
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "base"], check=True)
    for name, table in (("one", "## train-real\n"), ("two", "## profile\n")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "BENCHMARKS.md").write_text("# B\n" + table)
        (tmp_path / name / "results.jsonl").write_text("{}\n{\"" + name + "\": 1}\n")
    merge.merge(tmp_path / "one", "one", repo)
    with pytest.raises(ValueError, match="merge by hand"):
        merge.merge(tmp_path / "two", "two", repo)
    merge.merge(tmp_path / "two", "two", repo, base="HEAD")
    assert (repo / "BENCHMARKS.md").read_text() == "# B\n## train-real\n## profile\n"
    assert (repo / "bench" / "results.jsonl").read_text() == '{}\n{"one": 1}\n{"two": 1}\n'
    (repo / "BENCHMARKS.md").write_text("# edited\n")
    with pytest.raises(ValueError, match="no longer starts"):
        merge.merge(tmp_path / "two", "two", repo, base="HEAD")


def test_accelerator_script_runs_its_suites_and_falls_back_to_xla_attention(tmp_path):
    """bench/accelerator.sh end to end on this CPU (reduced case, two suites): neither cuDNN kernel runs
    here, so every suite gets XLA's attention, and each suite's tables reach OUTDIR."""
    import subprocess

    fake = tmp_path / "hf_baseline.py"
    fake.write_text(FAKE_BASELINE)
    out = tmp_path / "out"
    env = dict(os.environ, BENCH_MARKDOWN=str(tmp_path / "B.md"), BENCH_RESULTS=str(tmp_path / "r.jsonl"),
               JAX_COMPILATION_CACHE_DIR=str(tmp_path / "xla"))
    repo = Path(__file__).resolve().parent.parent
    proc = subprocess.run(["bash", "bench/accelerator.sh", str(fake), str(out), "300", "tiny",
                           "train-real,train-shape"], cwd=repo, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    log = (out / "accelerator.log").read_text()
    assert "attention cudnn-ragged failed" in log and "attention cudnn failed" in log
    assert "== attention kernel for every suite: xla" in log and "== all done" in log
    assert "== score" not in log and "== memory" not in log  # not asked for
    tables = (out / "BENCHMARKS.md").read_text()
    assert "## train-real" in tables and "## train-shape" in tables and "--attention xla" in tables
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert {r["suite"] for r in records} == {"train-real", "train-shape"}
    assert all(r.get("attention") in (None, "xla") for r in records)
    # A second command on a machine that already chose: ATTENTION skips the checks.
    again = tmp_path / "again"
    proc = subprocess.run(["bash", "bench/accelerator.sh", str(fake), str(again), "300", "tiny", "nothing"],
                          cwd=repo, env=dict(env, ATTENTION="xla"), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    log = (again / "accelerator.log").read_text()
    assert "attention cudnn" not in log and "== attention kernel for every suite: xla" in log
    assert "== train-real" not in log and "== all done" in log


def test_compare_reports_measures_how_far_two_choice_reports_are_apart(tmp_path):
    from bench import compare_reports

    def report(name, scores, accuracy):
        d = tmp_path / name
        d.mkdir()
        (d / "results.json").write_text(json.dumps({"suite": "choice", "average": {"cappy": accuracy}}))
        lines = [{"id": f"e{i}", "candidates": ["a", "b", "c"], "scores": s, "picks": {"cappy": int(np.argmax(s))}}
                 for i, s in enumerate(scores)]
        (d / "predictions.jsonl").write_text("".join(json.dumps(p) + "\n" for p in lines))
        return d

    a = report("a", [[0.9, 0.1, 0.2], [0.50, 0.49, 0.1]], 0.5)
    b = report("b", [[0.8, 0.1, 0.2], [0.48, 0.49, 0.1]], 0.0)
    out = compare_reports.compare(a, b)
    assert (out["examples"], out["candidates"], out["accuracy_a"], out["accuracy_b"]) == (2, 6, 0.5, 0.0)
    assert out["same_pick"] == 0.5 and math.isclose(out["max_score_diff"], 0.1)
    assert math.isclose(out["mean_score_diff"], 0.12 / 6)
    assert math.isclose(out["max_gap_where_pick_changed"], 0.01)  # the flipped example nearly tied in A
    assert 0.9 < out["spearman"] <= 1.0
    c = report("c", [[0.9, 0.1, 0.2]], 0.5)
    with pytest.raises(ValueError, match="different examples"):
        compare_reports.compare(a, c)
