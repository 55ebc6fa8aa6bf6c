"""Checks an attention kernel against XLA's before any timing uses it.

    python -m bench.attention_check [--attention cudnn] [--model tiny|base|large]

Runs the scorer's forward pass and the gradient of its summed logits on random batches of real pair
lengths (packed 512-token rows, so the segment mask matters, plus an empty row; one pair per row;
packed 32-token rows) with `--attention` and with `xla` in the compute dtype, and with `xla` in
float32 as the reference, and prints one JSON line: the worst relative errors ‖a − b‖ / ‖b‖ of
logits and gradients against the reference, the kernel's and XLA's (`_xla`). Exits 1 when the
kernel's exceeds both the tolerance (bfloat16 compute: 3e-2) and twice XLA's, is not finite, or the
kernel fails to run, so a script can fall back to another kernel. (On an H100 both cuDNN kernels
were 0.033 from bfloat16 XLA in logits, an error a plain bound of 3e-2 rejected.) Needs neither
TensorFlow nor ml_collections.
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


def packed_batch(vocab: int, rows: int = 8, width: int = 512, max_segments: int = 16,
                 seed: int = 0) -> dict[str, np.ndarray]:
    """`rows - 1` rows of real pair lengths and one empty row (a batch's padding rows)."""
    lengths = [min(n, width) for n in load_lengths(400)]
    ids, types_ = random_pairs(lengths, vocab, seed)
    plan = (packing.pack_lengths(lengths, width, max_segments) if max_segments > 1
            else [[i] for i in range(len(lengths))])[:rows - 1]
    b = packing.make_batch(ids, types_, plan, max_len=width, max_segments=max_segments, pad_id=1,
                           labels=np.zeros(len(lengths), np.float32), num_rows=rows)
    b.pop("pair_index")
    return b


def relative_error(a: object, b: object) -> float:
    a, b = (np.concatenate([np.ravel(np.asarray(x, np.float64)) for x in jax.tree.leaves(t)]) for t in (a, b))
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


def compare(attention: str, model: str, dtype: str, layers: int) -> dict[str, object]:
    """Worst relative errors against XLA's attention in float32, of the kernel and of XLA's attention in
    `dtype`, over three batches: packed 512-token rows, one pair per 512-token row (the reference recipe;
    `cudnn-ragged` takes another path there) and packed 32-token rows (scoring narrows rows to 32..512
    tokens); gradients on the first two. Rounding to bfloat16 alone moves random-weight logits by a few
    percent, so the kernel is judged against that, not against XLA's own rounded result."""
    base = model_config(model).replace(dtype=dtype, num_layers=layers)
    params = jax.jit(model_lib.init_params, static_argnums=0)(base, jax.random.key(0))
    batches = {"packed": packed_batch(base.vocab_size), "single": packed_batch(base.vocab_size, max_segments=1),
               "short": packed_batch(base.vocab_size, width=32)}
    impls = {"kernel": base.replace(attention=attention), "xla": base.replace(attention="xla"),
             "reference": base.replace(attention="xla", dtype="float32")}
    errors: dict[str, list[float]] = {f"{q}{s}": [] for q in ("logits", "grads") for s in ("", "_xla")}
    for name, batch in batches.items():
        mask = jnp.asarray(batch["label_mask"])
        out = {}
        for impl, config in impls.items():
            scorer = model_lib.Scorer(config)

            def loss(p, scorer=scorer, batch=batch, mask=mask):
                logits = scorer.apply({"params": p}, batch)
                return jnp.sum(logits.astype(jnp.float32) * mask), logits

            if name == "short":
                logits = jax.jit(lambda p, scorer=scorer, batch=batch: scorer.apply({"params": p}, batch))(params)
                grads = None
            else:  # one compilation for both (a lent GPU's minutes go to compiling)
                grads, logits = jax.jit(jax.grad(loss, has_aux=True))(params)
            out[impl] = (np.asarray(logits, np.float32) * np.asarray(mask), grads)
        for i, q in enumerate(("logits", "grads")):
            if out["reference"][i] is not None:
                errors[q].append(relative_error(out["kernel"][i], out["reference"][i]))
                errors[f"{q}_xla"].append(relative_error(out["xla"][i], out["reference"][i]))
    return {k: float(np.max(v)) for k, v in errors.items()}  # np.max keeps a NaN


def within(record: dict[str, object], tolerance: float) -> bool:
    """The kernel's error is finite and under the tolerance or twice XLA's own in the same dtype. Pure."""
    return all(np.isfinite(record[q]) and record[q] <= max(tolerance, 2 * record[f"{q}_xla"])
               for q in ("logits", "grads"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.attention_check", description=__doc__.split("\n\n")[0])
    parser.add_argument("--attention", default="cudnn", choices=[a for a in model_lib.ATTENTION_IMPLS if a != "auto"])
    parser.add_argument("--model", default="base", choices=("tiny", "base", "large"))
    parser.add_argument("--dtype", default="bfloat16", choices=sorted(TOLERANCE))
    parser.add_argument("--layers", type=int, default=2,
                        help="layers of the model (the kernel runs in all but the last, which attends from the "
                             "head's positions only: 2 keep compilation short)")
    args = parser.parse_args(argv)
    record: dict[str, object] = {"attention": args.attention, "model": args.model, "dtype": args.dtype,
                                 "layers": args.layers, "device": jax.devices()[0].device_kind,
                                 "tolerance": TOLERANCE[args.dtype]}
    try:
        record.update(compare(args.attention, args.model, args.dtype, args.layers))
        record["ok"] = bool(within(record, TOLERANCE[args.dtype]))
    except Exception as e:  # a kernel that does not run here is a result too: the caller falls back
        record.update(ok=False, error=f"{type(e).__name__}: {e}"[:2000])
        traceback.print_exc()
    print(json.dumps(record), flush=True)
    return 0 if record["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
