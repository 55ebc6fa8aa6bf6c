"""The README's downstream adaptation recipe end to end, at toy scale: data build with LLM samples,
fine-tuning from a scorer, and the generation suite on exactly the build's validation examples."""

from __future__ import annotations

import json

import numpy as np

from cappy_jax import checkpoint, evaluate, train
from cappy_jax.data import build, shards
from cappy_jax.scoring import Scorer
from conftest import WORDS
from configs import evaluate as evaluate_configs
from configs import finetune
from configs.data import bigbench as bigbench_configs

TINY_SCORING = dict(max_len=128, row_len=128, widths=(16, 32, 64, 128), batch_tokens=512)


def test_downstream_recipe(tmp_path, tiny_scorer_dir, seq2seq_dir):
    root = tmp_path / "bigbench"
    (root / "reverse").mkdir(parents=True)
    rng = np.random.default_rng(0)
    examples = []
    for i in range(30):
        words = list(rng.choice(WORDS, 3))
        examples.append({"input": f"Reverse: {' '.join(words)} ({i})", "target": " ".join(reversed(words))})
    (root / "reverse" / "task.json").write_text(json.dumps({"name": "reverse", "examples": examples}))

    # 1. data: references 1.0, one negative each, the LLM's 17 samples labelled by Rouge-L
    data = bigbench_configs.get_config("downstream")
    data.dir, data.tasks = str(root), ("reverse",)
    data.llm.hf.model_dir = str(seq2seq_dir)
    data.output.scorer_dir, data.output.max_len = str(tiny_scorer_dir), 128
    data.output.num_shards, data.output.eval_shards = 2, 1
    manifest = build.build(data, str(tmp_path / "shards"))
    train_kinds = manifest["splits"]["train"]["kinds"]
    assert train_kinds["reference"] > 0 and train_kinds["negative"] > 0
    assert sum(v for k, v in train_kinds.items() if k.startswith("llm:")) > 0

    # 2. fine-tune from the scorer
    config = finetune.get_config()
    config.init_from = str(tiny_scorer_dir)
    config.data.dir = str(tmp_path / "shards")
    config.data.max_len, config.data.eval_rows, config.data.readers = 128, 8, 2
    config.global_rows, config.num_steps, config.eval_every, config.checkpoint_every = 8, 3, 0, 3
    train.train_and_evaluate(config, str(tmp_path / "ft"))
    assert checkpoint.training_steps(tmp_path / "ft") == [3]

    # 3. generation suite on the build's validation examples, same LLM
    ev = evaluate_configs.get_config("bigbench_downstream")
    ev.data.dir, ev.data.tasks = str(root), ("reverse",)
    ev.llm.name, ev.llm.hf.model_dir = "hf", str(seq2seq_dir)
    scorer = Scorer.from_checkpoint(str(tmp_path / "ft"), **TINY_SCORING)
    result = evaluate.evaluate_config(ev, tmp_path / "report", scorer)
    built = set(shards.read_records(shards.shard_files(str(tmp_path / "shards"), "validation"))["group_id"])
    evaluated = {f"{p['task']}/{p['id']}" for p in result.predictions}
    assert evaluated == built and 0 < len(evaluated) < 30
    averages = result.results["average"]
    assert {"cappy", "beam", "ll_sum", "ll_mean", "oracle"} <= set(averages)
    assert all(0.0 <= averages[m] <= averages["oracle"] <= 1.0 for m in averages if m != "oracle")
    assert (tmp_path / "report" / "report.md").exists()
