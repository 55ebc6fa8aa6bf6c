"""The demo's training run (README's first command): `get_config('default'|'test')`.

    python -m cappy_jax.demo --workdir runs/demo          # builds data, trains with this, evaluates

Fine-tunes the all-MiniLM-L6-v2 encoder (22M parameters, converted with a fresh score head) on
the demo's BIG-bench tasks (`configs/data/demo.py`), sized so the whole command fits about 15
minutes on 2 CPU cores including the install. `init_from` and `data.dir` are filled in by the demo
from its workdir. `test` is a few steps on the two-task data variant, for the test suite.
"""

from __future__ import annotations

from configs import pretrain

VARIANTS = {
    # num_steps x global_rows x ~3 pairs a row (128-token rows, mean pair 41 tokens) ~ 2 epochs of 11.9k pairs
    "default": dict(num_steps=500, global_rows=16, eval_every=250, checkpoint_every=100, log_every=25),
    "test": dict(num_steps=6, global_rows=8, eval_every=3, checkpoint_every=3, log_every=3),
}


def get_config(variant: str = "default") -> "ml_collections.ConfigDict":
    if variant not in VARIANTS:
        raise ValueError(f"unknown demo variant {variant!r}; choose one of {sorted(VARIANTS)}")
    v = VARIANTS[variant]
    config = pretrain.get_config("base")   # the model comes from init_from; only run-time knobs apply
    config.unlock()
    config.init_from = ""                  # the demo's converted MiniLM scorer directory
    config.model.dtype = "auto"            # float32 on a CPU
    config.data.dir = ""                   # the demo's shards
    config.data.max_len = 128              # tokens per packed row (pairs are at most 128 tokens)
    config.data.max_segments = 8
    config.data.readers = 2                # the demo data has 2 training shards
    config.data.shuffle_buffer = 4096
    config.data.eval_rows = 32
    config.global_rows = v["global_rows"]
    config.num_steps = v["num_steps"]
    config.optim.learning_rate = 1e-4      # a fresh head on a small encoder: faster than roberta-large's 1e-5
    config.optim.warmup_fraction = 0.1
    config.optim.weight_decay = 0.01
    config.log_every = v["log_every"]
    config.eval_every = v["eval_every"]
    config.checkpoint_every = v["checkpoint_every"]
    config.keep_last = 2
    config.keep_best = 1
    config.lock()
    return config
