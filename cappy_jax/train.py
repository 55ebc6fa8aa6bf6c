"""Training: `python -m cappy_jax.train --config configs/pretrain.py:tiny --workdir DIR [--config.x=y]`.

The same command runs on every host. Parameters and optimizer state are created
already sharded over the mesh (`jax.jit(init, out_shardings=...)` over
`jax.eval_shape`); the step is one `jax.jit` with explicit shardings and the
state donated; each host feeds its own shards and the batch becomes one global
array. Gradient accumulation happens inside the step (a `lax.scan` over
micro-batches), so one step is one optimizer update and the schedule counts
updates. Checkpoints (Orbax `CheckpointManager`) carry the state; the tf.data
iterator position of each host is saved beside them, so a re-run of the same
command resumes on exactly the next batch.

Workdir layout (the workdir is itself a scorer directory, see cappy_jax/checkpoint.py):
    DIR/model.json, DIR/tokenizer/   what scoring needs besides parameters
    DIR/checkpoints/<step>/state     Orbax TrainState (step, params, opt_state)
    DIR/data_state/<step>/reader_<r>.*    tf.data iterator of reader r at that step (any host count)
    DIR/metrics.jsonl, DIR/tensorboard/   metrics (process 0 only)
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import signal
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from etils import epath

from cappy_jax import checkpoint as ckpt_lib
from cappy_jax import metrics as metrics_lib
from cappy_jax import model as model_lib
from cappy_jax import packing
from cappy_jax import sharding as sharding_lib

log = logging.getLogger("cappy_jax.train")


class NonFiniteLossError(RuntimeError):
    pass


class SetupError(ValueError):
    """The run cannot start as configured (batch layout, shards, resumed checkpoint); the message says what
    to change. Raised before the first step only, so the CLI can print it without a traceback."""


@flax.struct.dataclass
class TrainState:
    step: jax.Array
    params: Any
    opt_state: Any


# ---------------------------------------------------------------------------- the maths


def learning_rate_schedule(optim: Mapping[str, Any], num_steps: int) -> optax.Schedule:
    """Warmup then decay, over optimizer updates (never micro-batches)."""
    peak = float(optim["learning_rate"])
    warmup = int(round(float(optim["warmup_fraction"]) * num_steps))
    decay_steps = max(num_steps - warmup, 1)
    kind = optim["schedule"]
    if kind == "linear":
        decay = optax.linear_schedule(peak, peak * float(optim["end_fraction"]), decay_steps)
    elif kind == "cosine":
        decay = optax.cosine_decay_schedule(peak, decay_steps, alpha=float(optim["end_fraction"]))
    elif kind == "constant":
        decay = optax.constant_schedule(peak)
    else:
        raise ValueError(f"optim.schedule={kind!r} is not one of linear, cosine, constant")
    if warmup == 0:
        return decay
    return optax.join_schedules([optax.linear_schedule(0.0, peak, warmup), decay], [warmup])


def make_optimizer(optim: Mapping[str, Any], num_steps: int) -> optax.GradientTransformation:
    parts = []
    if float(optim["clip_norm"]) > 0:
        parts.append(optax.clip_by_global_norm(float(optim["clip_norm"])))
    parts.append(optax.adamw(learning_rate_schedule(optim, num_steps), b1=float(optim["b1"]),
                             b2=float(optim["b2"]), eps=float(optim["eps"]),
                             weight_decay=float(optim["weight_decay"])))
    return optax.chain(*parts)


def pair_losses(logits: jax.Array, labels: jax.Array, loss: str, head_activation: str) -> jax.Array:
    """Per-slot loss. `bce` on soft labels works on logits (stable); `mse` on the scores."""
    logits = logits.astype(jnp.float32)
    if loss == "bce":
        if head_activation != "sigmoid":
            raise ValueError("loss=bce needs head_activation=sigmoid; use loss=mse for identity heads")
        return optax.sigmoid_binary_cross_entropy(logits, labels)
    if loss == "mse":
        return jnp.square(model_lib.apply_head_activation(logits, head_activation) - labels)
    raise ValueError(f"loss={loss!r} is not one of bce, mse")


def train_step(state: TrainState, batch: Mapping[str, jax.Array], rng: jax.Array, *, model: nn.Module,
               tx: optax.GradientTransformation, loss: str) -> tuple[TrainState, dict[str, jax.Array]]:
    """One optimizer update over `batch[key][accum, rows, ...]`; the loss is the mean over all real pairs."""
    config: model_lib.ModelConfig = model.config
    total = jnp.maximum(jnp.sum(batch["label_mask"]), 1.0)
    rng = jax.random.fold_in(rng, state.step)

    def micro(grads_and_loss, inputs):
        grads, loss_sum = grads_and_loss
        mb, i = inputs

        def objective(params):
            logits = model.apply({"params": params}, mb, deterministic=False,
                                 rngs={"dropout": jax.random.fold_in(rng, i)})
            per = pair_losses(logits, mb["labels"], loss, config.head_activation)
            return jnp.sum(per * mb["label_mask"]) / total

        value, g = jax.value_and_grad(objective)(state.params)
        return (jax.tree.map(jnp.add, grads, g), loss_sum + value), None

    accum = batch["label_mask"].shape[0]
    zeros = jax.tree.map(jnp.zeros_like, state.params)
    (grads, loss_value), _ = jax.lax.scan(micro, (zeros, jnp.zeros((), jnp.float32)),
                                          (dict(batch), jnp.arange(accum)))
    with jax.named_scope("optimizer"):  # names the update in profiles (bench/profile_suite.py)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
    out = {"loss": loss_value, "grad_norm": optax.tree.norm(grads), "pairs": jnp.sum(batch["label_mask"]),
           "tokens": jnp.sum(batch["segment_ids"] > 0)}
    return TrainState(step=state.step + 1, params=params, opt_state=opt_state), out


def eval_scores(params: Any, batch: Mapping[str, jax.Array], *, model: nn.Module) -> jax.Array:
    logits = model.apply({"params": params}, batch)
    return model_lib.apply_head_activation(logits, model.config.head_activation)


# ---------------------------------------------------------------------------- state on the mesh


def model_config(config: Any) -> model_lib.ModelConfig:
    """From init_from's model.json if given (keeping this run's run-time knobs), else from config.model."""
    knobs = dict(config.model)
    if config.init_from:
        run_time = {k: knobs[k] for k in ("dtype", "remat", "scan_layers", "attention", "dropout_rate")}
        return ckpt_lib.load_config(config.init_from).replace(**run_time)
    return model_lib.ModelConfig.from_dict(knobs)


def model_flops_per_token(config: Any, mcfg: model_lib.ModelConfig) -> float:
    """The model FLOPs one trained token slot costs (MFU's numerator; `train_compile` sets XLA's count beside it)."""
    return metrics_lib.encoder_flops_per_token(
        num_layers=mcfg.num_layers, hidden_size=mcfg.hidden_size, intermediate_size=mcfg.intermediate_size,
        seq_len=int(config.data.max_len), training=True,
        head_positions=int(config.data.max_segments) if mcfg.last_layer_at_heads else None)


@dataclasses.dataclass
class Setup:
    """Everything the loop needs, built once."""

    mesh: jax.sharding.Mesh
    model: nn.Module
    tx: optax.GradientTransformation
    state_shardings: Any
    abstract_state: Any
    step_fn: Callable
    eval_fn: Callable


def build(config: Any, mesh: jax.sharding.Mesh, mcfg: model_lib.ModelConfig) -> Setup:
    model = model_lib.Scorer(mcfg, layout=sharding_lib.layout(mesh, config.rules))
    tx = make_optimizer(config.optim, int(config.num_steps))

    def boxed_state(rng: jax.Array) -> TrainState:
        params = model.init(rng, model_lib.dummy_batch())["params"]
        return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params))

    boxed = jax.eval_shape(boxed_state, jax.random.key(0))
    specs = nn.get_partition_spec(boxed)
    shardings = sharding_lib.logical_shardings(specs, mesh, config.rules)
    abstract = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                            nn.unbox(boxed), shardings)
    batch_sh = sharding_lib.accum_batch_sharding(mesh)
    def step(state: TrainState, batch: Mapping[str, jax.Array], rng: jax.Array):
        return train_step(state, batch, rng, model=model, tx=tx, loss=config.loss)

    step_fn = jax.jit(
        step,
        in_shardings=(shardings, batch_sh, sharding_lib.replicated(mesh)),
        out_shardings=(shardings, sharding_lib.replicated(mesh)),
        donate_argnums=(0,))
    eval_fn = jax.jit(lambda params, batch: eval_scores(params, batch, model=model),
                      in_shardings=(shardings.params, sharding_lib.batch_sharding(mesh)),
                      out_shardings=sharding_lib.batch_sharding(mesh))
    return Setup(mesh=mesh, model=model, tx=tx, state_shardings=shardings, abstract_state=abstract,
                 step_fn=step_fn, eval_fn=eval_fn)


def initial_state(config: Any, setup: Setup) -> TrainState:
    """Sharded from birth: random init compiled with out_shardings, or init_from's params placed on the mesh."""
    if config.init_from:
        loaded = ckpt_lib.load_scorer(config.init_from, scan_layers=setup.model.config.scan_layers)
        params = jax.device_put(loaded.params, setup.state_shardings.params)
        opt_state = jax.jit(setup.tx.init, out_shardings=setup.state_shardings.opt_state)(params)
        return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=opt_state)
    model, tx = setup.model, setup.tx

    def init(rng: jax.Array) -> TrainState:
        params = nn.unbox(model.init(rng, model_lib.dummy_batch())["params"])
        return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params))

    return jax.jit(init, out_shardings=setup.state_shardings)(jax.random.key(int(config.seed)))


# ---------------------------------------------------------------------------- checkpoints


def checkpoint_manager(workdir: epath.Path, config: Any):
    import orbax.checkpoint as ocp
    from orbax.checkpoint.checkpoint_managers import preservation_policy as pp

    sign = 1.0 if config.best_mode == "max" else -1.0
    policy = pp.AnyPreservationPolicy([
        pp.LatestN(int(config.keep_last)),
        pp.BestN(get_metric_fn=lambda m: sign * float(m.get(config.best_metric, -math.inf * sign)),
                 reverse=False, n=int(config.keep_best), keep_checkpoints_without_metrics=False),
    ])
    options = ocp.CheckpointManagerOptions(preservation_policy=policy, create=True,
                                           enable_async_checkpointing=True)
    return ocp.CheckpointManager(workdir / "checkpoints", options=options)


def data_state_prefix(workdir: epath.Path, step: int, reader: int) -> str:
    return str(workdir / "data_state" / str(step) / f"reader_{reader}")


def prune_data_state(workdir: epath.Path, keep: set[int], readers: Sequence[int]) -> None:
    """Drops this host's readers' iterator states of checkpoints Orbax has deleted."""
    root = workdir / "data_state"
    if not root.exists():
        return
    for d in root.iterdir():
        if d.name.isdigit() and int(d.name) not in keep:
            for r in readers:
                for f in d.glob(f"reader_{r}.*"):
                    f.unlink()
            if not any(d.iterdir()):
                d.rmdir()


# ---------------------------------------------------------------------------- the loop


class _Stop:
    """Set by SIGTERM (preemptible VMs send it before they go): save and leave cleanly."""

    def __init__(self) -> None:
        self.requested = False
        self._previous = None

    def __enter__(self) -> _Stop:
        try:
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        except ValueError:  # not the main thread (e.g. inside some test runners): no handler
            self._previous = None
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        del signum, frame
        log.warning("SIGTERM: saving a checkpoint at the next step (or evaluation batch) and stopping")
        self.requested = True

    def __exit__(self, *exc: Any) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)


def check_batch_layout(config: Any, mesh: jax.sharding.Mesh, hosts: int) -> None:
    """The batch sizes must split evenly over micro-batches, data-parallel devices, readers and hosts;
    a ValueError names the knob (`train_compile` runs this for a slice before it exists)."""
    dp = sharding_lib.data_parallel_size(mesh)
    rows, accum = int(config.global_rows), int(config.grad_accum)
    readers, eval_rows = int(config.data.readers), int(config.data.eval_rows)
    if rows % (accum * dp) or rows % (accum * readers):
        raise ValueError(f"global_rows={rows} must divide into grad_accum={accum} micro-batches whose rows "
                         f"split over {dp} data-parallel devices and data.readers={readers} readers")
    if readers % hosts:
        raise ValueError(f"data.readers={readers} must be a multiple of the {hosts} hosts "
                         f"(each host runs the same number of readers)")
    if eval_rows % hosts or eval_rows % dp:
        raise ValueError(f"data.eval_rows={eval_rows} must split evenly over {hosts} hosts and {dp} "
                         f"data-parallel devices")


def _pipelines(config: Any, mcfg: model_lib.ModelConfig, mesh: jax.sharding.Mesh):
    """This host's training and evaluation streams (TensorFlow is imported only here)."""
    from cappy_jax.data import pipeline, shards

    data = config.data
    if not data.dir:
        raise ValueError("--config.data.dir is empty: point it at shards built by `python -m cappy_jax.data.build`")
    manifest_path = epath.Path(data.dir, "manifest.json")
    if not manifest_path.exists():  # the build writes it last: a build that did not finish has none
        raise FileNotFoundError(f"{manifest_path} does not exist: point --config.data.dir at the --output of a "
                                "finished `python -m cappy_jax.data.build`")
    manifest = json.loads(manifest_path.read_text())
    if manifest["max_len"] > data.max_len:
        raise ValueError(f"the shards hold pairs of up to {manifest['max_len']} tokens but data.max_len is "
                         f"{data.max_len}: raise data.max_len or rebuild the shards")
    from cappy_jax.tokenization import PairTokenizer

    tok = PairTokenizer.from_dir(os.path.join(data.dir, "tokenizer"))
    if tok.vocab_size > mcfg.vocab_size:
        raise ValueError(f"the shards' tokenizer has {tok.vocab_size} tokens, the model's vocabulary "
                         f"{mcfg.vocab_size}: use a model config that matches the data's tokenizer")
    hosts, index = jax.process_count(), jax.process_index()
    check_batch_layout(config, mesh, hosts)
    rows, accum, readers = int(config.global_rows), int(config.grad_accum), int(data.readers)
    mine = pipeline.host_readers(readers, index, hosts)
    train = pipeline.ReaderGroup(shards.shard_files(data.dir, data.train_split), mine, readers,
                                 pipeline.PipelineConfig(
                                     rows=rows // readers, max_len=data.max_len, max_segments=data.max_segments,
                                     open_rows=data.open_rows, shuffle_buffer=data.shuffle_buffer,
                                     autotune=bool(data.autotune), seed=int(config.seed)),
                                 pad_id=tok.pad_token_id, accum=accum)
    all_eval_files = shards.shard_files(data.dir, data.eval_split)
    # With fewer eval files than hosts some hosts score none and feed empty rows (see `evaluate`).
    eval_files = pipeline.host_files(all_eval_files, index, hosts, allow_empty=True)
    eval_rows = int(data.eval_rows) // hosts
    empty = packing.make_batch([], [], [], max_len=data.max_len, max_segments=data.max_segments,
                               pad_id=tok.pad_token_id, num_rows=eval_rows)
    make_eval = lambda: (pipeline.InputPipeline(eval_files, pipeline.PipelineConfig(
        rows=eval_rows, max_len=data.max_len, max_segments=data.max_segments, open_rows=data.open_rows,
        repeat=False), pad_id=tok.pad_token_id) if eval_files else iter(()), empty)
    return train, make_eval, (all_eval_files, eval_files), tok


def evaluate(setup: Setup, params: Any, make_eval: Callable, eval_files: tuple[list[str], list[str]],
             config: Any, mesh: jax.sharding.Mesh, stop: _Stop | None = None) -> dict[str, Any] | None:
    """Scores the whole eval split (no pair lost) and computes the regression and selection metrics.

    `eval_files` is (all files, this host's files). Each host scores its own files; hosts step
    together (a host whose stream has ended feeds empty rows until every host's has), and the
    scores are gathered so that every host computes the same metrics over the whole split. A
    preemption notice (`stop`) on any host abandons the pass at the next batch on every host: None,
    so the step is saved at once (a whole split can take longer than a VM's notice).
    """
    from jax.experimental import multihost_utils

    from cappy_jax.cli import Progress
    from cappy_jax.data import shards

    all_files, own_files = eval_files
    per_file = [shards.read_records([f], fields=("label", "task", "group_id")) for f in all_files]
    offsets = dict(zip(all_files, np.cumsum([0] + [len(r["label"]) for r in per_file])[:-1].tolist()))
    records = {k: (np.concatenate([r[k] for r in per_file]) if k == "label"
                   else [x for r in per_file for x in r[k]]) for k in per_file[0]}
    # This host's stream indexes the concatenation of its own files: map that to the global order.
    local_to_global = np.concatenate([np.zeros(0, np.int64)] + [
        offsets[f] + np.arange(len(per_file[all_files.index(f)]["label"])) for f in own_files]).astype(np.int64)
    scores = np.full(len(records["label"]), np.nan, np.float32)
    hosts = jax.process_count()
    # A whole split takes minutes on small hardware: process 0 shows its own pairs' progress.
    progress = Progress(len(local_to_global), "eval pairs") if jax.process_index() == 0 else None
    stream, empty = make_eval()
    stream, i = iter(stream), 0
    while not (config.data.eval_max_batches and i >= config.data.eval_max_batches):
        batch = next(stream, None)
        finished, stopped = batch is None, bool(stop and stop.requested)
        if hosts > 1:
            flags = np.asarray(multihost_utils.process_allgather(np.array([finished, stopped])))
            finished, stopped = bool(flags[:, 0].all()), bool(flags[:, 1].any())
        if stopped:
            if progress is not None:
                progress.close()
            log.warning("preemption notice: evaluation abandoned after %d batches", i)
            return None
        if finished:
            break
        if batch is None:  # this host is done, others are not: empty rows keep the collectives in step
            batch = empty
        model_batch = {k: batch[k] for k in packing.MODEL_INPUTS}
        out = setup.eval_fn(params, sharding_lib.global_batch(model_batch, mesh))
        # This host's rows, in its local order: its addressable shards sorted by their row offset.
        parts = sorted(out.addressable_shards, key=lambda sh: sh.index[0].start or 0)
        out = np.concatenate([np.asarray(sh.data) for sh in _unique_rows(parts)])
        keep = batch["pair_index"] >= 0
        scores[local_to_global[batch["pair_index"][keep]]] = out[keep]
        if progress is not None:
            progress(int(keep.sum()))
        i += 1
    if progress is not None:
        progress.close()
    if hosts > 1:
        gathered = np.asarray(multihost_utils.process_allgather(scores))  # [hosts, N]; one host filled each
        scores = np.where(np.isnan(gathered), -np.inf, gathered).max(0)
        scores[np.isinf(scores)] = np.nan
    seen = ~np.isnan(scores)
    labels = records["label"][seen]
    if config.loss == "mse":
        per_pair = np.square(scores[seen] - labels)
    else:
        per_pair = -(labels * np.log(np.clip(scores[seen], 1e-7, 1)) +
                     (1 - labels) * np.log(np.clip(1 - scores[seen], 1e-7, 1)))
    tasks = np.asarray(records["task"])[seen]
    groups = np.asarray(records["group_id"])[seen]
    return metrics_lib.regression_metrics(scores[seen], labels, tasks, groups, loss=per_pair)


def _unique_rows(shards: list[Any]) -> list[Any]:
    """Devices that differ only in non-batch axes (tensor parallelism) hold the same rows: keep one each."""
    seen, out = set(), []
    for sh in shards:
        start = sh.index[0].start or 0
        if start not in seen:
            seen.add(start)
            out.append(sh)
    return out


def _flatten(prefix: str, tree: Mapping[str, Any]) -> dict[str, float]:
    out = {}
    for k, v in tree.items():
        key = f"{prefix}/{k}"
        if isinstance(v, Mapping):
            out.update(_flatten(key, v))
        elif isinstance(v, (int, float, np.floating, np.integer)):
            out[key] = float(v)
    return out


def train_and_evaluate(config: Any, workdir: str, *, stop_after: int | None = None) -> dict[str, Any]:
    """Trains until `config.num_steps`, resuming from the latest checkpoint in `workdir`.

    `stop_after` ends this run after that many steps with a checkpoint, exactly as a preemption
    notice would (for schedulers with time slices, and for tests of resumption).
    """
    from jax.experimental import multihost_utils

    from cappy_jax import metric_writers

    workdir_path = epath.Path(workdir)
    try:
        mesh = sharding_lib.make_mesh(dict(config.mesh))
        mcfg = model_config(config)
        train_iter, make_eval, eval_files, tok = _pipelines(config, mcfg, mesh)
        setup = build(config, mesh, mcfg)
    except ValueError as e:
        raise SetupError(str(e)) from e
    lead = jax.process_index() == 0
    if lead:
        workdir_path.mkdir(parents=True, exist_ok=True)
        (workdir_path / ckpt_lib.MODEL_JSON).write_text(mcfg.to_json())
        ckpt_lib.copy_tokenizer(os.path.join(config.data.dir, "tokenizer"), workdir_path / ckpt_lib.TOKENIZER_DIR)
    manager = checkpoint_manager(workdir_path, config)
    import orbax.checkpoint as ocp

    latest = manager.latest_step()
    if latest is not None:
        try:
            state = manager.restore(latest, args=ocp.args.Composite(
                state=ocp.args.StandardRestore(setup.abstract_state))).state
        except ValueError as e:
            raise SetupError(f"the checkpoint at step {latest} in {workdir_path / 'checkpoints'} does not match "
                             "this config's model or optimizer (changed optim.clip_norm, the model, ...?); "
                             f"resume with the config it was written with or use a new workdir. Orbax: {e}") from e
        try:
            train_iter.restore(lambda r: data_state_prefix(workdir_path, latest, r))
        except ValueError as e:
            raise SetupError(f"cannot resume the data readers at step {latest}: {e}") from e
        log.info("resumed from step %d", latest)
    else:
        state = initial_state(config, setup)
    fresh_start = latest is None
    writer = metric_writers.MetricWriter(workdir_path, enabled=lead)
    schedule = learning_rate_schedule(config.optim, int(config.num_steps))
    accum = int(config.grad_accum)
    accum_sh = sharding_lib.accum_batch_sharding(mesh)
    rng = jax.random.key(int(config.seed) + 1)
    flops_per_token = model_flops_per_token(config, mcfg)
    peak = float(config.peak_flops) or (metrics_lib.peak_flops(jax.devices()[0].device_kind) or 0.0)
    step = int(jax.device_get(state.step))
    num_steps = int(config.num_steps)
    last: dict[str, Any] = {}
    t_window, tokens_window, steps_window = time.time(), 0, 0
    t_start = time.time()
    profiling = False

    def save(at: int, metrics: Mapping[str, float] | None = None) -> None:
        # Before Orbax: a finished step dir implies its data state.
        train_iter.save(lambda r: data_state_prefix(workdir_path, at, r))
        manager.save(at, args=ocp.args.Composite(state=ocp.args.StandardSave(state)), metrics=metrics,
                     force=True)
        prune_data_state(workdir_path, keep={at, *manager.all_steps()}, readers=train_iter.readers)

    def run_eval(at: int, stop: _Stop) -> dict[str, float] | None:
        result = evaluate(setup, state.params, make_eval, eval_files, config, mesh, stop)
        if result is None:
            return None
        flat = _flatten("eval", result)
        writer.write(at, flat)
        mean = result["mean_over_tasks"]
        log.info("eval step %d: loss %.4f pearson %.3f spearman %.3f selection %.3f (chance %.3f)", at,
                 mean.get("loss", float("nan")), mean["pearson"], mean["spearman"], mean["selection_accuracy"],
                 mean["chance_accuracy"])
        return flat

    def read(at: int, out_device: Mapping[str, jax.Array]) -> None:
        """The host's look at finished step `at`: wait for it, check its loss, log on schedule. Done one
        step late, after the next step is dispatched, so the device never waits for the host."""
        nonlocal t_window, tokens_window, steps_window
        out = jax.device_get(out_device)
        if not np.isfinite(out["loss"]):
            manager.wait_until_finished()
            raise NonFiniteLossError(
                f"loss is {out['loss']} at step {at}; stopped without saving, the last good checkpoint "
                f"is step {manager.latest_step()} in {workdir_path / 'checkpoints'}. Lower "
                "optim.learning_rate or check the data labels")
        tokens_window += int(out["tokens"])
        steps_window += 1
        if at % int(config.log_every) == 0 or at == num_steps:
            dt = time.time() - t_window
            tps = tokens_window / dt
            train_metrics = {
                "train/loss": float(out["loss"]), "train/grad_norm": float(out["grad_norm"]),
                "train/learning_rate": float(schedule(at - 1)), "train/steps_per_s": steps_window / dt,
                "train/tokens_per_s": tps,
                "train/mfu": metrics_lib.mfu(tps / jax.device_count(), flops_per_token, peak) if peak else 0.0}
            writer.write(at, train_metrics)
            last.update(train_metrics)
            eta = (num_steps - at) * dt / steps_window
            mfu_text = f"{100 * train_metrics['train/mfu']:.1f}%" if peak else "n/a (unknown peak)"
            log.info("step %d/%d loss %.4f lr %.2e %.2f steps/s %.0f tokens/s mfu %s eta %.0fs", at,
                     num_steps, train_metrics["train/loss"], train_metrics["train/learning_rate"],
                     train_metrics["train/steps_per_s"], tps, mfu_text, eta)
            t_window, tokens_window, steps_window = time.time(), 0, 0

    steps_this_run = 0
    pending: tuple[int, Mapping[str, jax.Array]] | None = None  # the last dispatched step, not yet read
    with _Stop() as stop:
        initial = run_eval(0, stop) if fresh_start and config.eval_every else {}
        if initial is None:  # every host abandoned it together (`evaluate`): nothing trained, nothing to save
            log.warning("stopping before the first step after a preemption notice; re-run the command to start")
        last.update({f"initial_{k}": v for k, v in (initial or {}).items()})
        while step < num_steps and initial is not None:
            if config.profile_start and step == config.profile_start and lead:
                jax.profiler.start_trace(str(workdir_path / "profile"))
                profiling = True
            local = next(train_iter)
            local = {k: v.reshape(accum, v.shape[0] // accum, *v.shape[1:]) for k, v in local.items()
                     if k != "pair_index"}
            batch = {k: jax.make_array_from_process_local_data(accum_sh, v) for k, v in local.items()}
            state, out = setup.step_fn(state, batch, rng)
            step += 1
            if pending is not None:
                read(*pending)
            pending = (step, out)
            steps_this_run += 1
            requested = stop.requested
            if jax.process_count() > 1:  # SIGTERM reaches hosts at different steps: stop together
                requested = bool(np.any(multihost_utils.process_allgather(np.array(requested))))
            preempted = (requested or manager.reached_preemption(step)
                         or (stop_after is not None and steps_this_run >= stop_after))
            eval_now = (config.eval_every and step % int(config.eval_every) == 0) or step == num_steps
            ends_trace = profiling and step >= config.profile_start + config.profile_steps
            # Evaluated steps are saved too, so the best-by-metric checkpoint can be kept.
            save_now = eval_now or preempted or step % int(config.checkpoint_every) == 0
            if save_now or ends_trace:  # read the step before its state is evaluated, saved or traced whole
                read(*pending)
                pending = None
            if ends_trace:
                jax.profiler.stop_trace()
                profiling = False
            eval_metrics = run_eval(step, stop) if eval_now else None
            if eval_now and eval_metrics is None:  # a preemption notice came during the evaluation
                save_now = preempted = True
            if eval_metrics:
                last.update(eval_metrics)
            if save_now:
                save(step, eval_metrics)
            if preempted:
                log.warning("stopping at step %d after a preemption notice; re-run the command to resume", step)
                break
    if pending is not None:
        read(*pending)
    manager.wait_until_finished()
    manager.close()
    writer.close()
    last["steps"] = step
    last["seconds"] = time.time() - t_start
    return last


def main(argv: list[str]) -> None:
    from absl import flags

    from cappy_jax import distributed
    from cappy_jax.cli import compilation_cache_path, enable_compilation_cache, quiet_logging

    del argv
    quiet_logging()
    f = flags.FLAGS
    try:
        settings = distributed.resolve(f.coordinator_address, f.num_processes, f.process_id)
    except ValueError as e:
        raise SystemExit(f"error: {e}") from None
    distributed.initialize(settings, f.distributed)
    enable_compilation_cache(compilation_cache_path(f.config.compilation_cache_dir, f.workdir))
    try:
        train_and_evaluate(f.config, f.workdir, stop_after=f.stop_after)
    except (FileNotFoundError, SetupError) as e:  # missing shards, a batch that does not split, ...: the
        raise SystemExit(f"error: {e}") from None   # message says what to change; a bug keeps its traceback


def run() -> None:
    from absl import app, flags
    from ml_collections import config_flags

    config_flags.DEFINE_config_file("config", None, "A training config, e.g. configs/pretrain.py:tiny.",
                                    lock_config=True)
    flags.DEFINE_string("workdir", None, "Checkpoints, metrics and the scorer files (local or gs://).")
    flags.DEFINE_integer("stop_after", None, "End this run after N steps with a checkpoint, as a preemption "
                         "would (time-sliced schedulers); re-running resumes.")
    flags.DEFINE_string("coordinator_address", "", "HOST:PORT of process 0, for GPU/CPU clusters "
                        "(env CAPPY_COORDINATOR_ADDRESS); TPU VMs need none.")
    flags.DEFINE_integer("num_processes", 0, "Processes in the cluster (env CAPPY_NUM_PROCESSES).")
    flags.DEFINE_integer("process_id", -1, "This process's index (env CAPPY_PROCESS_ID).")
    flags.DEFINE_enum("distributed", "auto", ["auto", "on", "off"],
                      "auto: join a cluster given by the flags/env or detected (TPU VM, Slurm, Open MPI); "
                      "on: always call jax.distributed.initialize(); off: one process.")
    flags.mark_flags_as_required(["config", "workdir"])
    app.run(main)


if __name__ == "__main__":
    run()
