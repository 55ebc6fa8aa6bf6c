"""Fine-tuning an existing scorer on a downstream task: the reference's recipe.

    python -m cappy_jax.train --config configs/finetune.py --workdir runs/ft \
        --config.init_from=runs/cappy --config.data.dir=runs/task_shards

AdamW (weight decay 0), learning rate 2e-5, 10% linear warmup then linear decay to 0,
max length 512, labels from the data build (references 1.0, negatives 0.0, samples Rouge-L).
The reference used 8 pairs per device x 16 accumulation steps; here rows are packed, so
`global_rows` rows of 512 tokens hold several pairs each.
"""

from __future__ import annotations

import ml_collections

from configs import pretrain


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    del arg
    config = pretrain.get_config("large")
    config.unlock()
    config.init_from = ""              # required: the scorer to adapt
    config.loss = "bce"
    config.global_rows = 32
    config.grad_accum = 1
    config.num_steps = 1000
    config.optim.learning_rate = 2e-5
    config.optim.warmup_fraction = 0.1
    config.optim.schedule = "linear"
    config.optim.weight_decay = 0.0
    config.optim.b2 = 0.999
    config.optim.eps = 1e-8
    config.data.max_len = 512
    config.eval_every = 200
    config.checkpoint_every = 200
    config.lock()
    return config
