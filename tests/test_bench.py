"""The benchmark runner: the encoder-cpu suite in reduced form, and what it writes down."""

from __future__ import annotations

import json
import math
import os
import sys

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
    assert "tensorflow" not in sys.modules
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
