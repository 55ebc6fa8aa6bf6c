"""Checks an attention kernel against XLA's before any timing uses it.

    python -m bench.attention_check [--attention cudnn] [--model tiny|base|large]

Runs the scorer's forward pass and the gradient of its summed logits on a random packed batch
(several pairs per row, so the segment mask matters) with `--attention` and with `xla`, in the
same compute dtype, and prints one JSON line: relative errors ‖a − b‖ / ‖b‖ of logits and
gradients (logits: the worse of 512- and 32-token rows). Exits 1 when either exceeds the tolerance (bfloat16 compute: 3e-2) or the kernel fails
to run, so a script can fall back to `--attention xla`. Needs neither TensorFlow nor ml_collections.
"""

from __future__ import annotations

import argparse
import json
import sys
import traceback

import jax
import jax.numpy as jnp
import numpy as np

from bench.score_suite import load_lengths, model_config, random_pairs
from cappy_jax import model as model_lib
from cappy_jax import packing

TOLERANCE = {"bfloat16": 3e-2, "float16": 1e-2, "float32": 1e-4}


def packed_batch(vocab: int, rows: int = 8, width: int = 512, seed: int = 0) -> dict[str, np.ndarray]:
    lengths = [min(n, width) for n in load_lengths(400)]
    ids, types_ = random_pairs(lengths, vocab, seed)
    plan = packing.pack_lengths(lengths, width, 16)[:rows]
    b = packing.make_batch(ids, types_, plan, max_len=width, max_segments=16, pad_id=1,
                           labels=np.zeros(len(lengths), np.float32), num_rows=rows)
    b.pop("pair_index")
    return b


def relative_error(a: object, b: object) -> float:
    a, b = (np.concatenate([np.ravel(np.asarray(x, np.float64)) for x in jax.tree.leaves(t)]) for t in (a, b))
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


def compare(attention: str, model: str, dtype: str, layers: int) -> dict[str, object]:
    base = model_config(model).replace(dtype=dtype, num_layers=layers)
    params = jax.jit(model_lib.init_params, static_argnums=0)(base, jax.random.key(0))
    batch = packed_batch(base.vocab_size)
    mask = jnp.asarray(batch["label_mask"])
    out = {}
    for impl in (attention, "xla"):
        cfg = base.replace(attention=impl)
        scorer = model_lib.Scorer(cfg)

        def loss(p, cfg=cfg, scorer=scorer):
            return jnp.sum(scorer.apply({"params": p}, batch) * mask)

        logits = jax.jit(lambda p, scorer=scorer: scorer.apply({"params": p}, batch))(params)
        grads = jax.jit(jax.grad(loss))(params)
        out[impl] = (np.asarray(logits, np.float32) * np.asarray(mask), grads)
    # Scoring narrows rows to 32..512 tokens: a short row must run and agree too.
    short = packed_batch(base.vocab_size, width=32)
    narrow = [np.asarray(jax.jit(lambda p, s=model_lib.Scorer(base.replace(attention=impl)): s.apply({"params": p}, short))(
        params), np.float32) * short["label_mask"] for impl in (attention, "xla")]
    return {"logits": max(relative_error(out[attention][0], out["xla"][0]), relative_error(*narrow)),
            "grads": relative_error(out[attention][1], out["xla"][1])}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.attention_check", description=__doc__.split("\n\n")[0])
    parser.add_argument("--attention", default="cudnn", choices=("cudnn", "xla"))
    parser.add_argument("--model", default="base", choices=("tiny", "base", "large"))
    parser.add_argument("--dtype", default="bfloat16", choices=sorted(TOLERANCE))
    parser.add_argument("--layers", type=int, default=2,
                        help="layers of the model (the kernel is the same in each: 2 keep compilation short)")
    args = parser.parse_args(argv)
    record: dict[str, object] = {"attention": args.attention, "model": args.model, "dtype": args.dtype,
                                 "layers": args.layers, "device": jax.devices()[0].device_kind,
                                 "tolerance": TOLERANCE[args.dtype]}
    try:
        record.update(compare(args.attention, args.model, args.dtype, args.layers))
        record["ok"] = max(record["logits"], record["grads"]) <= TOLERANCE[args.dtype]
    except Exception as e:  # a kernel that does not run here is a result too: the caller falls back
        record.update(ok=False, error=f"{type(e).__name__}: {e}"[:2000])
        traceback.print_exc()
    print(json.dumps(record), flush=True)
    return 0 if record["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
