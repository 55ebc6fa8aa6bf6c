"""The train-compile check: a config's step compiled for a slice that is not here (TPU via libtpu), or
for this host's devices, with layout errors and a step over a chip's memory caught before any run."""

from __future__ import annotations

import importlib.metadata
import json
import os
import pathlib
import subprocess
import sys

import pytest

from cappy_jax import train_compile
from configs import pretrain
from conftest import tiny_config

ROOT = pathlib.Path(__file__).resolve().parent.parent


def test_slice_names_give_cloud_tpu_layouts() -> None:
    expected = {"v4-8": "v4:2x2x1", "v4-16": "v4:2x2x2", "v4-32": "v4:2x2x4", "v4-64": "v4:2x4x4",
                "v4-128": "v4:4x4x4", "v4-512": "v4:4x8x8", "v4-4096": "v4:8x16x16", "v5p-8": "v5:2x2x1",
                "v5e-1": "v5e:1x1", "v5e-8": "v5e:2x4", "v5e-16": "v5e:4x4", "v5e-128": "v5e:8x16",
                "v6e-256": "v6e:16x16"}
    for name, topology in expected.items():
        args = train_compile.tpu_topology(name)
        assert args["topology_name"] == topology, name
        assert args["chip_config_name"] == ("megacore" if name[:3] in ("v4-", "v5p") else "default")
    assert train_compile.tpu_topology("v5e-8")["chips_per_host_bounds"] == (2, 4, 1)  # one host, 8 chips
    assert train_compile.tpu_topology("v5e-16")["chips_per_host_bounds"] == (2, 2, 1)  # four hosts
    for bad in ("v3-8", "v4", "v4-x", "tpu"):
        with pytest.raises(ValueError, match="unknown TPU slice"):
            train_compile.tpu_topology(bad)
    with pytest.raises(ValueError, match="power-of-two"):
        train_compile.tpu_topology("v5e-12")


def test_gpu_names_give_hosts_of_eight() -> None:
    for name, (kind, hosts, per_host) in {"h100": ("h100", 1, 1), "h100x2": ("h100", 1, 2), "h200x8": ("h200", 1, 8),
                                           "h100x16": ("h100", 2, 8), "h200x64": ("h200", 8, 8)}.items():
        got = train_compile.gpu_topology(name)
        assert (got[0], got[1], got[2]) == (train_compile.GPU_KINDS[kind], hosts, per_host), name
    for bad in ("a100", "h100x", "h100x0", "h100x12", "h100-8"):
        with pytest.raises(ValueError, match="unknown GPU target"):
            train_compile.gpu_topology(bad)
    text = train_compile.gpu_target_config(train_compile.GPU_KINDS["h200"])
    assert 'device_description_str: "NVIDIA H200"' in text and "device_memory_size: 150754820096" in text


def test_auto_knobs_resolve_as_on_the_target_not_here() -> None:
    """Compiling on a CPU for a TPU: `dtype='auto'` must be the TPU's bfloat16, not this host's float32."""
    from cappy_jax.model import ModelConfig

    auto = ModelConfig.from_dict(dict(pretrain.VARIANTS["tiny"]["model"], dtype="auto", attention="auto"))
    assert (auto.for_platform("tpu").dtype, auto.for_platform("tpu").attention) == ("bfloat16", "xla")
    assert auto.for_platform("cpu").dtype == "float32" and auto.for_platform("gpu").attention == "cudnn"
    assert auto.replace(dtype="float32").for_platform("gpu").attention == "xla"  # cuDNN's kernel is 16-bit only
    fixed = auto.replace(dtype="float32", attention="cudnn")
    assert fixed.for_platform("tpu") == fixed


def test_flag_value_reads_both_spellings() -> None:
    assert train_compile._flag_value(["x", "--topology=cpu:4"], "--topology") == "cpu:4"
    assert train_compile._flag_value(["x", "--topology", "v4-8"], "--topology") == "v4-8"
    assert train_compile._flag_value(["x", "--topologyx=1"], "--topology") == ""
    argv = ["--config", "c.py", "--largest", "8", "--output=o.json", "--largestx=1", "--topology=v4-8"]
    assert train_compile._without_flags(argv, ("--largest", "--output")) == [
        "--config", "c.py", "--largestx=1", "--topology=v4-8"]


def test_compiles_for_host_devices_and_fsdp_shards_the_state() -> None:
    data_parallel = train_compile.compile_for(tiny_config(""), train_compile.target("cpu:8"))
    assert data_parallel["devices"] == 8 and data_parallel["mesh"] == {"data": 8, "fsdp": 1, "tensor": 1}
    assert data_parallel["rows_per_device"] == 1 and data_parallel["platform"] == "cpu"
    step = data_parallel["train_step"]
    assert step["arguments"] >= data_parallel["state_bytes"] > 0 and step["total"] > step["arguments"] - step["aliased"]
    assert data_parallel["eval_step"]["total"] > 0 and data_parallel["flops_per_step"] > 0
    fsdp = train_compile.compile_for(tiny_config("", **{"mesh.data": 2, "mesh.fsdp": 4}),
                                     train_compile.target("cpu:8"))
    assert fsdp["mesh"] == {"data": 2, "fsdp": 4, "tensor": 1} and fsdp["rows_per_device"] == 1  # rows split 8 ways too
    assert fsdp["state_bytes"] < 0.6 * data_parallel["state_bytes"]  # parameters and Adam moments split 4 ways
    assert "8 x cpu on 1 host(s)" in train_compile.summary(data_parallel)
    # Every device computes an equal share: the model's FLOPs a device do not depend on the mesh.
    assert fsdp["model_flops_per_step"] == data_parallel["model_flops_per_step"] > 0
    assert "the model" in train_compile.summary(fsdp)


def test_flops_line_says_why_xla_counts_differ_from_the_model() -> None:
    """XLA's cost analysis counts a loop's body once: the v4-32 fsdp=16 roberta-base step's collective
    matmuls (BENCHMARKS.md) counted 3.41 TFLOP a device against the model's 4.32."""
    report = {"flops_per_step": 3.41e12, "model_flops_per_step": 4.32e12, "grad_accum": 1}
    assert "collective matmul" in train_compile.flops_line(report)
    assert "micro-batch loop" in train_compile.flops_line(dict(report, grad_accum=2))
    assert train_compile.flops_line(dict(report, flops_per_step=4.39e12)) == (
        "XLA counts 4.39 TFLOP per step per device, the model 4.32 TFLOP (metrics.encoder_flops_per_token)")
    assert "recomputed" in train_compile.flops_line(dict(report, flops_per_step=6e12))
    assert train_compile.flops_line({"flops_per_step": 2e7, "grad_accum": 1}) == (
        "XLA counts 0.02 GFLOP per step per device")
    assert train_compile.flops_line(dict(report, flops_per_step=0.0)) == (  # XLA's GPU compiler counts none
        "XLA gives no FLOP count for this target; the model counts 4.32 TFLOP per step per device "
        "(metrics.encoder_flops_per_token)")


def test_search_for_the_largest_batch_doubles_halves_and_bisects() -> None:
    def search(cap: int, start: int, step: int) -> tuple[tuple[int, int], list[int]]:
        tried: list[int] = []
        found = train_compile.search_largest(lambda rows: tried.append(rows) or rows <= cap, start, step, limit=4096)
        return found, tried

    assert search(44, 64, 8) == ((40, 48), [64, 32, 48, 40])       # too many to start with: halve, then bisect
    assert search(200, 64, 8) == ((200, 208), [64, 128, 256, 192, 224, 208, 200])
    assert search(3, 8, 8) == ((0, 8), [8])                        # not even one step fits
    assert search(10**9, 64, 64)[0] == (4096, 4096)                # nothing up to the limit failed
    with pytest.raises(ValueError, match="needs a TPU or GPU target"):
        train_compile.largest(tiny_config(""), "cpu:8", 8, [])


def test_recomputation_is_read_from_flops_or_else_from_temporaries() -> None:
    def fit(rows: int, flops_a_row: float, temps_a_row: int) -> dict:
        return {"flops_per_step": flops_a_row * rows, "train_step": {"temporaries": temps_a_row * rows}}

    tpu = {8: fit(8, 100.0, 10), 16: fit(16, 100.0, 10), 32: fit(32, 120.0, 9), 64: None}
    got = train_compile.recomputation(tpu, 32)
    assert abs(got["extra_flops_per_row"] - 0.2) < 1e-9 and got["compared_with_rows_per_device"] == 8
    gpu = {64: fit(64, 0.0, 10), 128: fit(128, 0.0, 7), 256: fit(256, 0.0, 3), 512: None}  # no FLOP count
    got = train_compile.recomputation(gpu, 256)
    assert got["extra_flops_per_row"] is None and abs(got["temporaries_per_row_ratio"] - 0.3) < 1e-9
    assert train_compile.recomputation({8: None}, 0)["extra_flops_per_row"] == 0.0  # nothing fit


def test_layouts_that_cannot_split_are_named_before_compiling() -> None:
    cpu8 = train_compile.target("cpu:8")
    with pytest.raises(ValueError, match="global_rows=12"):
        train_compile.compile_for(tiny_config("", global_rows=12), cpu8)
    with pytest.raises(ValueError, match=r"data.eval_rows=4 must split evenly over 1 hosts and 8"):
        train_compile.compile_for(tiny_config("", **{"data.eval_rows": 4}), cpu8)
    with pytest.raises(ValueError, match="mesh"):
        train_compile.compile_for(tiny_config("", **{"mesh.data": 3}), cpu8)
    with pytest.raises(ValueError, match="needs 64 CPU devices but this process has 8"):
        train_compile.target("cpu:64")


def test_cli_gives_itself_the_host_devices_it_compiles_for(tmp_path) -> None:
    """Also: with fsdp, the partitioner is not left to reshard the embeddings' `[rows, tokens, hidden]`
    gradient through a full copy on every device (it warns of that on stderr; `model.Embed`)."""
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAX_PLATFORMS")}
    out = tmp_path / "report.json"
    proc = subprocess.run([sys.executable, "-m", "cappy_jax.train_compile", "--config", "configs/pretrain.py:tiny",
                           "--topology", "cpu:4", "--config.mesh.fsdp=2", "--output", str(out)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(out.read_text())
    assert report["devices"] == 4 and report["rows_per_device"] == 2
    assert report["mesh"] == {"data": 2, "fsdp": 2, "tensor": 1}
    assert "train step per device" in proc.stdout
    assert "Involuntary full rematerialization" not in proc.stderr


@pytest.fixture(scope="module")
def tpu_python(tmp_path_factory) -> str:
    """A Python that sees this environment plus libtpu (the TPU compiler; no TPU needed), in the version this
    jax asks for: installed into a throwaway venv, so libtpu stays out of the environment the other tests use."""
    spec = next(r.split(";")[0].strip() for r in importlib.metadata.requires("jax") or ()
                if r.startswith("libtpu") and "tpu" in r.split(";", 1)[-1])
    venv = tmp_path_factory.mktemp("tpu") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True, timeout=300)
    python = str(venv / "bin" / "python")
    subprocess.run([python, "-m", "pip", "install", "-q", "--no-deps", spec], check=True, timeout=900)
    return python


def _compile_on(python: str, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    return subprocess.run([python, "-m", "cappy_jax.train_compile", "--config", "configs/pretrain.py:tiny", *args],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def test_compiles_for_a_tpu_slice_that_is_not_here(tpu_python, tmp_path) -> None:
    out = tmp_path / "v4-16.json"
    proc = _compile_on(tpu_python, "--topology", "v4-16", "--output", str(out))
    assert proc.returncode == 0, proc.stdout[-1000:] + proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["platform"] == "tpu" and report["device_kind"] == "TPU v4"
    assert report["model"]["dtype"] == "bfloat16" and report["model"]["attention"] == "xla"  # as on the TPU
    assert report["devices"] == 8 and report["hosts"] == 2 and report["mesh"]["data"] == 8
    assert 0 < report["state_bytes"] <= report["train_step"]["arguments"]


def test_a_step_over_a_chips_memory_fails_with_what_to_change(tpu_python) -> None:
    # 65,536 rows of 128 tokens per v5e chip: about 43 GiB of temporaries for 16 GiB of HBM (a quarter of
    # that, 14 GiB, compiles).
    proc = _compile_on(tpu_python, "--topology", "v5e-4", "--config.global_rows=262144")
    assert proc.returncode == 1
    assert "the step does not fit a TPU v5 lite device" in proc.stderr and "RESOURCE_EXHAUSTED" in proc.stderr
    assert "--config.model.remat=True" in proc.stderr and "--config.model.attention=splash" in proc.stderr


def test_a_slice_with_more_hosts_than_readers_is_refused(tpu_python) -> None:
    proc = _compile_on(tpu_python, "--topology", "v4-32", "--config.global_rows=32",  # 16 devices on 4 hosts
                       "--config.data.eval_rows=32", "--config.data.readers=2")
    assert proc.returncode == 1 and "data.readers=2 must be a multiple of the 4 hosts" in proc.stderr


def test_splash_attention_compiles_for_a_tpu_per_device(tpu_python, tmp_path) -> None:
    """The Pallas kernel goes through Mosaic (libtpu), once per device's rows and heads (`Layout.per_shard`)."""
    out = tmp_path / "splash.json"
    proc = _compile_on(tpu_python, "--topology", "v5e-4", "--config.model.attention=splash", "--config.mesh.tensor=2",
                       "--output", str(out))
    assert proc.returncode == 0, proc.stdout[-1000:] + proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["model"]["attention"] == "splash" and report["mesh"] == {"data": 2, "fsdp": 1, "tensor": 2}


def test_largest_batch_that_fits_a_tpu_chip(tpu_python, tmp_path) -> None:
    """One process per compilation (the parent never loads libtpu): 16,384 rows of 128 tokens per v5e chip
    fit tiny's step, twice that does not."""
    out = tmp_path / "largest.json"
    proc = _compile_on(tpu_python, "--topology", "v5e-4", "--config.global_rows=65536", "--largest=16384",
                       "--output", str(out))
    assert proc.returncode == 0, proc.stdout[-1000:] + proc.stderr[-3000:]
    assert "largest: 16384 rows per device (--config.global_rows=65536) fit; 32768 did not" in proc.stdout
    report = json.loads(out.read_text())
    assert report["report"]["rows_per_device"] == 16384 and report["tried"]["32768"] is None
    assert report["tried"]["16384"]["train_step"]["total"] < 16 * 2**30
    assert report["extra_flops_per_row"] == 0.0 and report["compared_with_rows_per_device"] == 16384


@pytest.fixture(scope="module")
def cuda_python(tmp_path_factory) -> str:
    """A Python that sees this environment plus JAX's CUDA plugin of this jax's version (XLA's GPU compiler; no
    GPU, no CUDA libraries needed to compile), in a throwaway venv like `tpu_python`'s."""
    import jax

    venv = tmp_path_factory.mktemp("cuda") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True, timeout=300)
    python = str(venv / "bin" / "python")
    subprocess.run([python, "-m", "pip", "install", "-q", "--no-deps", f"jax-cuda12-plugin=={jax.__version__}",
                    f"jax-cuda12-pjrt=={jax.__version__}"], check=True, timeout=900)
    return python


def test_compiles_for_gpus_that_are_not_here(cuda_python, tmp_path) -> None:
    """`auto` attention is cuDNN's on a GPU target (traced without the cuDNN library), and hosts of eight."""
    out = tmp_path / "h100x2.json"
    proc = _compile_on(cuda_python, "--topology", "h100x2", "--config.mesh.fsdp=2", "--output", str(out))
    assert proc.returncode == 0, proc.stdout[-1000:] + proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["platform"] == "gpu" and report["device_kind"] == "NVIDIA H100 80GB HBM3"
    assert report["model"]["dtype"] == "bfloat16" and report["model"]["attention"] == "cudnn"
    assert report["devices"] == 2 and report["hosts"] == 1 and report["mesh"]["fsdp"] == 2
    assert 0 < report["state_bytes"] <= report["train_step"]["arguments"]
    assert "XLA gives no FLOP count for this target" in proc.stdout
    proc = _compile_on(cuda_python, "--topology", "h200x16", "--config.global_rows=32", "--config.data.eval_rows=32",
                       "--config.model.attention=cudnn-ragged", "--output", str(out))
    assert proc.returncode == 0, proc.stdout[-1000:] + proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert (report["devices"], report["hosts"], report["device_kind"]) == (16, 2, "NVIDIA H200")


def test_a_step_over_a_gpus_memory_fails_with_what_to_change(cuda_python) -> None:
    """XLA's GPU compiler does not refuse it; the estimate is compared with the device's memory."""
    proc = _compile_on(cuda_python, "--topology", "h100", "--config.global_rows=1048576", "--config.data.eval_rows=8")
    assert proc.returncode == 1
    assert "the step does not fit a NVIDIA H100 80GB HBM3 device" in proc.stderr
    assert "GiB of the device's 79.10 GiB" in proc.stderr and "--config.model.remat=True" in proc.stderr
