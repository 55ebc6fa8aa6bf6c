"""Training on 8 simulated CPU devices: sharded step == single-device step, resume == uninterrupted,
SIGTERM leaves a restorable checkpoint, other meshes, config errors, non-finite loss, learning."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from cappy_jax import checkpoint, sharding, train
from cappy_jax.data import pipeline, shards
from conftest import losses, tiny_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_sharded_step_equals_single_device_step(data_dir):
    config = tiny_config(data_dir, grad_accum=2)
    mcfg = train.model_config(config)
    meshes = {"sharded": sharding.make_mesh({"data": 2, "fsdp": 2, "tensor": 2}),
              "single": sharding.make_mesh({"data": 1}, devices=jax.devices()[:1])}
    files = shards.shard_files(data_dir, "train")
    local = next(pipeline.InputPipeline(files, pipeline.PipelineConfig(rows=8, max_len=64, max_segments=8,
                                                                      seed=0), pad_id=0))
    local = {k: v.reshape(2, 4, *v.shape[1:]) for k, v in local.items() if k != "pair_index"}
    results = {}
    for name, mesh in meshes.items():
        setup = train.build(config, mesh, mcfg)
        state = train.initial_state(config, setup)
        if name == "sharded":
            assert state.params["layer_0"]["mlp_in"]["kernel"].sharding.spec == P("fsdp", "tensor")
            assert state.opt_state[1][0].mu["layer_0"]["mlp_in"]["kernel"].sharding.spec == P("fsdp", "tensor")
        batch = {k: jax.make_array_from_process_local_data(sharding.accum_batch_sharding(mesh), v)
                 for k, v in local.items()}
        new_state, out = setup.step_fn(state, batch, jax.random.key(0))
        results[name] = (float(out["loss"]), jax.tree.map(np.asarray, new_state.params))
    assert results["sharded"][0] == pytest.approx(results["single"][0], abs=1e-6)
    for a, b in zip(jax.tree.leaves(results["sharded"][1]), jax.tree.leaves(results["single"][1])):
        np.testing.assert_allclose(a, b, atol=2e-6, rtol=1e-5)  # float32 reductions in another order


def test_interrupted_run_resumes_with_the_same_losses(data_dir, tmp_path):
    config = tiny_config(data_dir, num_steps=12, log_every=1, eval_every=0, checkpoint_every=4)
    full = train.train_and_evaluate(config, str(tmp_path / "full"))
    first = train.train_and_evaluate(config, str(tmp_path / "cut"), stop_after=5)
    assert first["steps"] == 5 and checkpoint.training_steps(tmp_path / "cut")[-1] == 5
    train.train_and_evaluate(config, str(tmp_path / "cut"))
    assert full["steps"] == 12
    want, got = losses(tmp_path / "full"), losses(tmp_path / "cut")
    assert sorted(got) == list(range(1, 13))
    for step in want:
        assert got[step] == pytest.approx(want[step], abs=1e-6), step


def test_resume_onto_another_mesh_and_score_on_one_device(data_dir, tmp_path, caplog):
    config = tiny_config(data_dir, num_steps=6, eval_every=0, checkpoint_every=3)
    train.train_and_evaluate(config, str(tmp_path / "run"), stop_after=3)
    config.mesh.data, config.mesh.fsdp, config.mesh.tensor = 2, 2, 2
    train.train_and_evaluate(config, str(tmp_path / "run"))
    assert checkpoint.training_steps(tmp_path / "run")[-1] == 6
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        loaded = checkpoint.load_scorer(tmp_path / "run")
    assert not [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]  # e.g. Orbax's metadata noise
    leaf = loaded.params["layer_0"]["mlp_in"]["kernel"]
    assert len(leaf.sharding.device_set) == 1
    assert loaded.config.head_activation == "sigmoid"
    assert (tmp_path / "run" / "tokenizer" / "tokenizer.json").exists()


def test_tiny_learns_validation_loss_falls(data_dir, tmp_path, monkeypatch):
    evals = []  # each evaluation's progress line: (total pairs, pairs reported, closed)

    class Progress:
        def __init__(self, total, what):
            self.total, self.done, self.closed = total, 0, False
            evals.append(self)

        def __call__(self, n):
            self.done += n

        def close(self):
            self.closed = True

    monkeypatch.setattr("cappy_jax.cli.Progress", Progress)
    config = tiny_config(data_dir, num_steps=60, eval_every=60, checkpoint_every=60)
    result = train.train_and_evaluate(config, str(tmp_path / "run"))
    records = sum(len(shards.read_records([f])["label"]) for f in shards.shard_files(data_dir, "validation"))
    assert [(p.total, p.done, p.closed) for p in evals] == [(records, records, True)] * 2  # before and after
    before = result["initial_eval/mean_over_tasks/loss"]
    after = result["eval/mean_over_tasks/loss"]
    assert after < before - 0.02, (before, after)
    assert os.listdir(tmp_path / "run" / "tensorboard")


def test_mesh_that_does_not_divide_the_devices(data_dir, tmp_path):
    config = tiny_config(data_dir, **{"mesh.fsdp": 3})
    with pytest.raises(ValueError, match="does not divide the 8 devices"):
        train.train_and_evaluate(config, str(tmp_path / "run"))


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(data_dir, tmp_path):
    config = tiny_config(data_dir, num_steps=8, eval_every=0, checkpoint_every=2)
    train.train_and_evaluate(config, str(tmp_path / "run"), stop_after=2)
    config.optim.learning_rate = 1e30
    config.optim.warmup_fraction = 0.0
    with pytest.raises(train.NonFiniteLossError, match="last good checkpoint is step 2"):
        train.train_and_evaluate(config, str(tmp_path / "run"))
    assert checkpoint.training_steps(tmp_path / "run") == [2]


def test_resuming_with_another_optimizer_is_explained(data_dir, tmp_path):
    config = tiny_config(data_dir, num_steps=4, eval_every=0, checkpoint_every=2)
    train.train_and_evaluate(config, str(tmp_path / "run"), stop_after=2)
    config.optim.clip_norm = 0.0
    with pytest.raises(ValueError, match="does not match this config"):
        train.train_and_evaluate(config, str(tmp_path / "run"))


def run_cli(*args, **kwargs):
    return subprocess.Popen([sys.executable, "-m", "cappy_jax.train", *args], cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, **kwargs)


def test_misspelt_config_key_is_an_error(data_dir, tmp_path):
    proc = run_cli("--config", "configs/pretrain.py:tiny", "--workdir", str(tmp_path / "w"),
                   "--config.optim.learnin_rate=0.1")
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode != 0 and "learnin_rate" in out


def test_shards_without_a_manifest_are_a_plain_error(tmp_path):
    (tmp_path / "shards").mkdir()  # what an unfinished build leaves: no manifest.json
    proc = run_cli("--config", "configs/pretrain.py:tiny", "--workdir", str(tmp_path / "w"),
                   f"--config.data.dir={tmp_path / 'shards'}")
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 1 and "Traceback" not in out, out
    assert f"error: {tmp_path / 'shards' / 'manifest.json'} does not exist" in out and "cappy_jax.data.build" in out


def test_a_batch_that_does_not_split_is_a_plain_error(data_dir, tmp_path):
    proc = run_cli("--config", "configs/pretrain.py:tiny", "--workdir", str(tmp_path / "w"),
                   f"--config.data.dir={data_dir}", "--config.global_rows=7")
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 1 and "Traceback" not in out, out
    assert "error: global_rows=7 must divide into grad_accum=1 micro-batches" in out


def test_sigterm_leaves_a_restorable_checkpoint(data_dir, tmp_path):
    workdir = tmp_path / "w"
    proc = run_cli("--config", "configs/pretrain.py:tiny", "--workdir", str(workdir), f"--config.data.dir={data_dir}",
                   "--config.data.max_len=64", "--config.num_steps=100000", "--config.log_every=1",
                   "--config.eval_every=0", "--config.checkpoint_every=100000")
    deadline = time.time() + 120
    while time.time() < deadline and not (workdir / "metrics.jsonl").exists():
        time.sleep(0.5)
    assert (workdir / "metrics.jsonl").exists(), "training never started"
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out[-2000:]
    steps = checkpoint.training_steps(workdir)
    assert steps and "stopping at step" in out
    loaded = checkpoint.load_scorer(workdir)
    assert np.isfinite(np.asarray(loaded.params["head"]["out_proj"]["kernel"])).all()
    assert any((workdir / "xla_cache").iterdir()), "the compiled step was not kept for the restart"


def test_a_preemption_notice_during_evaluation_saves_the_step_without_waiting_for_the_pass(data_dir, tmp_path,
                                                                                         monkeypatch):
    # A whole validation split can take longer than a VM's notice (BIG-bench's: hours on a CPU), so SIGTERM
    # abandons the pass at the next batch, saves the step, and a re-run resumes there.
    from cappy_jax import cli

    passes, notice_in = [], {2}
    real_init, real_call = cli.Progress.__init__, cli.Progress.__call__

    def counting_init(self, total, what="pairs", **kw):
        if what == "eval pairs":
            passes.append(0)
        real_init(self, total, what, **kw)

    def notice(self, n):
        if self.what == "eval pairs":
            passes[-1] += 1
            if len(passes) in notice_in and passes[-1] == 1:
                os.kill(os.getpid(), signal.SIGTERM)
        real_call(self, n)

    monkeypatch.setattr(cli.Progress, "__init__", counting_init)
    monkeypatch.setattr(cli.Progress, "__call__", notice)
    config = tiny_config(data_dir, num_steps=4, log_every=1, eval_every=2, checkpoint_every=100)
    out = train.train_and_evaluate(config, str(tmp_path / "w"))
    assert out["steps"] == 2 and passes == [passes[0], 1] and passes[0] > 2  # the step-2 pass: one batch
    assert checkpoint.training_steps(tmp_path / "w") == [2]
    rows = [json.loads(line) for line in open(tmp_path / "w" / "metrics.jsonl")]
    assert sorted(r["step"] for r in rows if "eval/mean_over_tasks/pearson" in r) == [0]
    notice_in.clear()
    assert train.train_and_evaluate(config, str(tmp_path / "w"))["steps"] == 4
    assert sorted(losses(tmp_path / "w")) == [1, 2, 3, 4]

    passes.clear()
    notice_in.add(1)  # during the first evaluation, before any step: nothing to save
    assert train.train_and_evaluate(config, str(tmp_path / "first"))["steps"] == 0
    assert checkpoint.training_steps(tmp_path / "first") == []


def test_compilation_cache_path():
    from cappy_jax.cli import compilation_cache_path

    assert compilation_cache_path("xla_cache", "gs://b/run/") == "gs://b/run/xla_cache"
    assert compilation_cache_path("xla_cache", "/w") == "/w/xla_cache"
    assert compilation_cache_path("/cache", "/w") == "/cache"
    assert compilation_cache_path("gs://c/x", "/w") == "gs://c/x"
    assert compilation_cache_path("", "/w") is None


def test_keeps_the_last_and_the_best_checkpoint(data_dir, tmp_path):
    config = tiny_config(data_dir, num_steps=8, eval_every=2, checkpoint_every=2, keep_last=1, keep_best=1,
                         best_metric="eval/mean_over_tasks/loss", best_mode="min")
    train.train_and_evaluate(config, str(tmp_path / "run"))
    rows = [json.loads(line) for line in open(tmp_path / "run" / "metrics.jsonl")]
    evals = {r["step"]: r["eval/mean_over_tasks/loss"] for r in rows if "eval/mean_over_tasks/loss" in r and r["step"]}
    best = min(evals, key=evals.get)
    assert set(checkpoint.training_steps(tmp_path / "run")) == {best, 8}


def finetune_config(scorer, data_dir: str, *, num_steps: int):
    """`configs/finetune.py` from `scorer` on the test shards, small enough for seconds on a CPU."""
    from configs import finetune

    config = finetune.get_config()
    config.init_from = str(scorer)
    config.data.dir = data_dir
    config.data.max_len = 64
    config.data.eval_rows = 8
    config.global_rows = 8
    config.data.readers = 2
    config.num_steps = num_steps
    config.eval_every = 0
    config.checkpoint_every = num_steps
    return config


def test_finetune_adapts_an_existing_scorer(data_dir, tmp_path, minilm_dir):
    from cappy_jax import convert

    scorer = convert.from_hf(str(minilm_dir), str(tmp_path / "minilm"))
    train.train_and_evaluate(finetune_config(scorer, data_dir, num_steps=3), str(tmp_path / "ft"))
    start = checkpoint.load_scorer(scorer)
    tuned = checkpoint.load_scorer(tmp_path / "ft")
    assert (tuned.config.family, tuned.config.num_layers, tuned.config.hidden_size) == ("bert", 6, 384)
    a = np.asarray(start.params["layer_0"]["mlp_in"]["kernel"])
    b = np.asarray(tuned.params["layer_0"]["mlp_in"]["kernel"])
    # Started from the converted weights (not a fresh init) and moved a little: lr 2e-5 for 3 steps.
    assert 0 < np.abs(a - b).max() < 1e-3


def test_scan_layers_run_starts_from_unrolled_weights_and_exports_them_unrolled(data_dir, tmp_path, minilm_dir):
    """init_from an unrolled scorer into a scan_layers run, train, export to HF: the export scores like the run."""
    from cappy_jax import convert, scoring

    scorer = convert.from_hf(str(minilm_dir), str(tmp_path / "minilm"))
    config = finetune_config(scorer, data_dir, num_steps=2)
    config.model.scan_layers = True
    train.train_and_evaluate(config, str(tmp_path / "ft"))
    tuned = checkpoint.load_scorer(tmp_path / "ft")
    assert tuned.config.scan_layers and tuned.params["layers"]["layer"]["mlp_in"]["kernel"].shape == (6, 384, 1536)
    start = checkpoint.load_scorer(scorer).params["layer_3"]["mlp_in"]["kernel"]
    moved = np.abs(np.asarray(start) - np.asarray(tuned.params["layers"]["layer"]["mlp_in"]["kernel"][3])).max()
    assert 0 < moved < 1e-3  # layer 3 of the stack is layer_3 of the start, moved a little
    convert.to_hf(str(tmp_path / "ft"), str(tmp_path / "hf"))
    pairs = [("Is the sky blue?", "Yes."), ("Two plus two?", "Five, of course, as everyone knows.")]
    ours = scoring.Scorer.from_checkpoint(str(tmp_path / "ft"), max_len=128, row_len=128,
                                          widths=(32, 64, 128)).score(pairs)
    exported = scoring.Scorer.from_hf(str(tmp_path / "hf"), max_len=128, row_len=128,
                                      widths=(32, 64, 128)).score(pairs)
    np.testing.assert_allclose(ours, exported, atol=1e-5)
