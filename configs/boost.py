"""Boosting an LLM by reranking its samples (`python -m cappy_jax.boost`), as data: `get_config()`.

`llm` is the data configs' backend description (`configs/data/common.py:llm()`: `name` plus one
dict of constructor arguments per backend; "" means None). `scoring`
is `configs/score.py`'s variant (the scorer's batching knobs). `get_config('cpu')` takes the score
config's `cpu` variant (smaller batches).
"""

from __future__ import annotations

import ml_collections

from configs import score as score_configs
from configs.data import common


def get_config(variant: str = "default") -> ml_collections.ConfigDict:
    if variant not in score_configs.VARIANTS:
        raise ValueError(f"unknown boost variant {variant!r}; choose one of {sorted(score_configs.VARIANTS)}")
    config = ml_collections.ConfigDict(dict(
        llm=common.llm(),
        self_score=True,                   # ll_sum/ll_mean baselines (hf backend only; off with a note otherwise)
        scoring=dict(score_configs.VARIANTS[variant]),
        batch_instructions=64,             # instructions sampled + scored per chunk: output streams, memory bounded
    ))
    config.lock()
    return config
