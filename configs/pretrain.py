"""Pretraining a Cappy scorer: `get_config('tiny'|'base'|'large')`.

    python -m cappy_jax.train --config configs/pretrain.py:large --workdir gs://BUCKET/run \
        --config.data.dir=gs://BUCKET/shards

Every knob lives here; `cappy_jax/train.py` reads them and nothing else. `large` is the
paper's model (roberta-large, 355M parameters).
"""

from __future__ import annotations

from configs import model as model_configs

# Logical axis (cappy_jax/model.py) -> mesh axis (cappy_jax/sharding.py). Unlisted names are replicated.
RULES = (
    ("vocab", "tensor"),
    ("embed", "fsdp"),
    ("mlp", "tensor"),
    ("heads", "tensor"),
    ("kv", None),
    ("position", None),
    ("token_type", None),
    ("score", None),
    ("layers", None),   # the stacked layer axis of scan_layers
)

VARIANTS = {
    # Seconds on a CPU; BERT family so the MiniLM tokenizer (the only one offline) fits its vocabulary.
    "tiny": dict(model=dict(model_configs.VARIANTS["tiny"], family="bert", vocab_size=30522, type_vocab_size=2,
                            pad_token_id=0, position_offset=0, max_position_embeddings=128, layer_norm_eps=1e-12),
                 max_len=128, max_segments=8, global_rows=8, readers=4, num_steps=60, warmup_fraction=0.1,
                 learning_rate=1e-3, log_every=10, eval_every=30, checkpoint_every=30),
    "base": dict(model=model_configs.VARIANTS["base"], max_len=512, max_segments=16, global_rows=256, readers=16,
                 num_steps=100_000, warmup_fraction=0.06, learning_rate=1e-5, log_every=100,
                 eval_every=2000, checkpoint_every=1000),
    "large": dict(model=model_configs.VARIANTS["large"], max_len=512, max_segments=16, global_rows=256, readers=16,
                  num_steps=100_000, warmup_fraction=0.06, learning_rate=1e-5, log_every=100,
                  eval_every=2000, checkpoint_every=1000),
}


def get_config(variant: str = "large") -> "ml_collections.ConfigDict":
    import ml_collections  # here, so VARIANTS and RULES import where ml_collections is absent (GPU bench)

    if variant not in VARIANTS:
        raise ValueError(f"unknown pretrain variant {variant!r}; choose one of {sorted(VARIANTS)}")
    v = VARIANTS[variant]
    config = ml_collections.ConfigDict(dict(
        seed=0,
        # Architecture and run-time knobs (dtype, remat, scan_layers, dropout, attention). With init_from, the
        # architecture comes from that checkpoint and only dtype/remat/scan_layers/attention/dropout_rate apply.
        model=dict(v["model"]),
        init_from="",                  # scorer dir (convert from-hf / a training workdir) to start from; "" = random
        loss="bce",                    # "bce" on soft labels (sigmoid head) | "mse" (the reference's)
        data=dict(
            dir="",                    # shards + manifest.json + tokenizer/ from `python -m cappy_jax.data.build`
            train_split="train",
            eval_split="validation",
            max_len=v["max_len"],      # tokens per packed row
            max_segments=v["max_segments"],  # pairs per row at most (1 = the reference's one pair per row)
            readers=v["readers"],      # input streams, fixed for a run: a multiple of the hosts (any host count
                                       # dividing it resumes the run; each reader's position is saved)
            open_rows=8,               # rows the packer fills at once
            shuffle_buffer=10_000,
            autotune=False,            # tf.data autotuning of the readers: same rate here, and without it a
                                       # run's end never waits up to a minute to delete them (BENCHMARKS.md)
            eval_rows=v["global_rows"],  # rows per evaluation batch, all hosts together
            eval_max_batches=0,        # 0 = the whole eval split
        ),
        global_rows=v["global_rows"],  # rows per optimizer update, all hosts and accumulation steps together
        grad_accum=1,                  # micro-batches per update; the schedule counts updates, not micro-batches
        num_steps=v["num_steps"],      # optimizer updates
        optim=dict(
            learning_rate=v["learning_rate"],
            warmup_fraction=v["warmup_fraction"],  # of num_steps, linear from 0
            schedule="linear",         # after warmup: "linear" to end_fraction | "cosine" | "constant"
            end_fraction=0.0,          # final learning rate as a fraction of the peak
            weight_decay=0.01,
            b1=0.9, b2=0.98, eps=1e-6,
            clip_norm=1.0,             # global gradient norm; 0 = no clipping
        ),
        mesh=dict(data=-1, fsdp=1, tensor=1),  # one axis may be -1: the rest of the devices
        rules=RULES,
        log_every=v["log_every"],
        eval_every=v["eval_every"],     # 0 = only at the end
        checkpoint_every=v["checkpoint_every"],
        keep_last=3,                   # checkpoints kept besides the best
        keep_best=1,
        best_metric="eval/mean_over_tasks/selection_accuracy",
        best_mode="max",
        profile_start=0,               # > 0: capture a jax.profiler trace of `profile_steps` from this step
        profile_steps=5,
        peak_flops=0.0,                # per device, for MFU; 0 = look the device kind up (cappy_jax/metrics.py)
        # Compiled programs kept on disk, so a restart (preemption) skips compiling: roberta-large's step took
        # 1-2 minutes to compile on an H100 (BENCHMARKS.md). Relative: under the workdir; "" = off. CLI only.
        compilation_cache_dir="xla_cache",
    ))
    config.lock()
    return config
