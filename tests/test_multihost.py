"""Several processes on this machine form one JAX cluster over 127.0.0.1 (gloo collectives): they
train `tiny` on the data build's shards with the same losses as one process on the same global
batch (also with fsdp across processes), save cooperatively, resume with another process count and
mesh, and evaluate over the whole split."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from cappy_jax import checkpoint, distributed
from cappy_jax.data import pipeline, shards
from conftest import losses

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIMEOUT = 300


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def train_cli(data_dir: str, workdir, num_steps: int, *, processes: int, devices_per_process: int,
              stop_after: int | None = None, flags: tuple[str, ...] = ()) -> None:
    """Runs `python -m cappy_jax.train` as `processes` processes of one cluster; fails with their logs."""
    port = free_port()
    args = ["--config", "configs/pretrain.py:tiny", "--workdir", str(workdir), f"--config.data.dir={data_dir}",
            "--config.data.max_len=64", "--config.data.eval_rows=8", "--config.model.dropout_rate=0.0",
            f"--config.num_steps={num_steps}", "--config.eval_every=0", "--config.checkpoint_every=2",
            "--config.log_every=1", *([f"--stop_after={stop_after}"] if stop_after else []), *flags]
    env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices_per_process}"}
    cluster = [] if processes == 1 else ["--coordinator_address", f"127.0.0.1:{port}",
                                         "--num_processes", str(processes)]
    procs = [subprocess.Popen([sys.executable, "-m", "cappy_jax.train", *args, *cluster,
                               *([] if processes == 1 else ["--process_id", str(i)])],
                              cwd=ROOT, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
             for i in range(processes)]
    outs = []
    try:
        for p in procs:
            outs.append(p.communicate(timeout=TIMEOUT)[0])
    finally:
        for p in procs:
            p.kill()
    for i, (p, out) in enumerate(zip(procs, outs)):
        assert p.returncode == 0, f"process {i} of {processes} failed:\n{out[-3000:]}"


def start_cluster(args: list[str], processes: int, devices_per_process: int) -> list[subprocess.Popen]:
    port = free_port()
    env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices_per_process}"}
    return [subprocess.Popen([sys.executable, "-m", "cappy_jax.train", *args, "--coordinator_address",
                              f"127.0.0.1:{port}", "--num_processes", str(processes), "--process_id", str(i)],
                             cwd=ROOT, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            for i in range(processes)]


def eval_metrics(workdir) -> dict[str, float]:
    rows = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
    return [r for r in rows if "eval/mean_over_tasks/loss" in r][-1]


def test_processes_train_like_one_and_resume_on_another_count(data_dir, tmp_path):
    one = tmp_path / "one"
    train_cli(data_dir, one, 6, processes=1, devices_per_process=4)
    many = tmp_path / "many"
    # 2 processes x 2 devices, parameters and Adam moments sharded over fsdp across the processes
    train_cli(data_dir, many, 6, processes=2, devices_per_process=2, stop_after=4, flags=("--config.mesh.fsdp=2",))
    assert checkpoint.training_steps(many) == [2, 4]
    # Every reader's iterator state was saved, by whichever process ran it.
    assert sorted(p.name.split(".")[0] for p in (many / "data_state" / "4").iterdir()
                  if p.suffix == ".index") == [f"reader_{r}" for r in range(4)]
    train_cli(data_dir, many, 6, processes=4, devices_per_process=1)   # resumed by 4 processes, data parallel
    ref, got = losses(one), losses(many)
    assert sorted(got) == sorted(ref) == list(range(1, 7))
    np.testing.assert_allclose([got[s] for s in range(1, 7)], [ref[s] for s in range(1, 7)], rtol=2e-5)
    # The final evaluation covers the whole split on every process count, and agrees.
    a, b = eval_metrics(one), eval_metrics(many)
    for key in ("eval/mean_over_tasks/loss", "eval/mean_over_tasks/pearson", "eval/mean_over_tasks/selection_accuracy"):
        assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-6), key


def test_sigterm_to_one_host_stops_every_host_at_the_same_step(data_dir, tmp_path):
    workdir = tmp_path / "w"
    args = ["--config", "configs/pretrain.py:tiny", "--workdir", str(workdir), f"--config.data.dir={data_dir}",
            "--config.data.max_len=64", "--config.data.eval_rows=8", "--config.num_steps=100000",
            "--config.log_every=1", "--config.eval_every=0", "--config.checkpoint_every=100000"]
    procs = start_cluster(args, 2, 2)
    try:
        deadline = time.time() + TIMEOUT
        while time.time() < deadline and not (workdir / "metrics.jsonl").exists():
            time.sleep(0.5)
        assert (workdir / "metrics.jsonl").exists(), "training never started"
        procs[1].send_signal(signal.SIGTERM)  # only the second host is preempted
        outs = [p.communicate(timeout=TIMEOUT)[0] for p in procs]
    finally:
        for p in procs:
            p.kill()
    assert [p.returncode for p in procs] == [0, 0], outs[1][-2000:]
    stops = [re.findall(r"stopping at step (\d+)", out) for out in outs]
    (step,) = checkpoint.training_steps(workdir)
    assert stops == [[str(step)], [str(step)]]
    # One process resumes the two-process run (readers restored by name) and finishes it.
    train_cli(data_dir, workdir, step + 2, processes=1, devices_per_process=2)
    assert checkpoint.training_steps(workdir)[-1] == step + 2
    assert sorted(losses(workdir))[-1] == step + 2


def test_reader_groups_concatenate_the_same_rows_on_any_host_count(data_dir):
    files = shards.shard_files(data_dir, "train")
    config = pipeline.PipelineConfig(rows=4, max_len=64, max_segments=4, shuffle_buffer=20, seed=5)
    whole = pipeline.ReaderGroup(files, range(4), 4, config, pad_id=0, accum=2)
    halves = [pipeline.ReaderGroup(files, pipeline.host_readers(4, i, 2), 4, config, pad_id=0, accum=2)
              for i in range(2)]
    for _ in range(3):
        batch = next(whole)
        parts = [next(h) for h in halves]
        for k in batch:
            # micro-batch m of the whole = micro-batch m of host 0, then of host 1
            split = [p[k].reshape(2, -1, *p[k].shape[1:]) for p in parts]
            np.testing.assert_array_equal(batch[k].reshape(2, -1, *batch[k].shape[1:]), np.concatenate(split, 1))
    with pytest.raises(ValueError, match="multiple of the 3 processes"):
        pipeline.host_readers(4, 0, 3)
    # Fewer files than readers: every reader reads all files and keeps its own records.
    assert pipeline.reader_files(files, 1, 8) == (list(files), (8, 1))
    assert pipeline.reader_files(files, 1, 2) == (list(files[1::2]), (1, 0))


def test_cluster_settings_from_flags_or_environment():
    env = {"CAPPY_COORDINATOR_ADDRESS": "10.0.0.1:1234", "CAPPY_NUM_PROCESSES": "4", "CAPPY_PROCESS_ID": "2"}
    assert distributed.resolve(env=env) == distributed.Settings("10.0.0.1:1234", 4, 2)
    assert distributed.resolve("h:1", 2, 1, env=env) == distributed.Settings("h:1", 2, 1)  # flags win
    assert distributed.resolve(env={}) == distributed.Settings() and not distributed.Settings().explicit
    with pytest.raises(ValueError, match="--process_id"):
        distributed.resolve("h:1", 2, env={})
    with pytest.raises(ValueError, match="outside 0..1"):
        distributed.resolve("h:1", 2, 5, env={})
    with pytest.raises(ValueError, match="HOST:PORT"):
        distributed.resolve("h", 2, 0, env={})
    # No cluster given or detected: a single process, nothing initialized.
    assert distributed.initialize(distributed.Settings(), "auto", env={}) is False
    assert distributed.initialize(distributed.Settings(), "off", env={"SLURM_JOB_ID": "1"}) is False
