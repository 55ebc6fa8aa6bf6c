"""Suite `train-real`: training throughput on the real length distribution, three batching recipes.

    python -m bench.run --suite train-real [--cases tiny,large] [--baseline ../shared/bench/hf_baseline.py]

Workload: the first `PAIRS[case]` pair lengths of `bench/data/bigbench_lengths.json` (24 BIG-bench
Lite tasks, `bench/make_lengths.py`), as random token ids and labels. Every recipe trains on the
same pairs with the real train step (`train.build`: AdamW, clipping, dropout, donation, data
parallel over every local device) and is timed over one pass of all of them after a pass that
compiles every shape:
- `packed` (cappy_jax): pairs packed longest-first into 512-token rows of up to 16 pairs
  (`packing.pack_lengths`), `ROWS` rows a step; `packedN` (on request, e.g. `packed8`): the same
  with at most N pairs a row, fewer slots (cuDNN's ragged layout gives every slot a sequence, used
  or not) for slightly emptier rows;
- `pad512` (the reference recipe): one pair per row padded to 512, `ROWS` pairs a step;
- `dynamic`: one pair per row, length-sorted windows of 100 batches padded to a multiple of
  `DYNAMIC_MULTIPLE` (128: four shapes, four compilations; hf_baseline.py's `dynamic` mode pads
  to a multiple of 64, which suits PyTorch, where a new shape costs nothing), `ROWS` pairs a step.
useful tokens/s counts pair tokens only. With `--baseline`, `hf_baseline.py --suite train-real
--lengths <the same lengths> --batch ROWS --modes pad512,dynamic` runs in the same command. Needs
neither TensorFlow nor ml_collections.
"""

from __future__ import annotations

import json
import pathlib
import re
import sys
import tempfile
import time
from collections.abc import Iterator
from typing import Any

import jax
import numpy as np

from bench import report
from bench.report import Column
from bench.score_suite import load_lengths, model_config
from bench.train_throughput import step_config
from cappy_jax import packing, train
from cappy_jax import sharding as sharding_lib

CASES = ("tiny", "large")
PAIRS = {"tiny": 256, "large": 2048}
ROWS = {"tiny": 8, "large": 32}         # rows (packed) or pairs (padded) per step, all devices
DTYPE = {"tiny": "float32", "large": "bfloat16"}
MAX_LEN, MAX_SEGMENTS = 512, 16
DYNAMIC_MULTIPLE = 128
RECIPES = ("packed", "pad512", "dynamic")  # the default run, in this order; packedN on request
DEFAULT_STEPS = {"tiny": 1, "large": 1}  # timed passes over all pairs
DEFAULT_WARMUP = 1

NOTE = ("real train step on random ids with the real pair lengths of bench/data/bigbench_lengths.json (24 "
        "BIG-bench Lite tasks); packed = cappy_jax (512-token rows, up to 16 pairs; packedN: up to N), "
        "pad512 = the reference recipe, dynamic = length-sorted windows padded to a multiple of 128 (hf: 64); each recipe times one pass over the "
        "same pairs after a compile pass; useful tokens/s counts pair tokens only; theirs = "
        "hf_baseline.py --suite train-real in the same command; ratio = packed pairs/s / that recipe's")

COLUMNS = (
    Column("case", "case"),
    Column("recipe", "recipe"),
    Column("device", "device_kind"),
    Column("pairs", "pairs", ",d"),
    Column("steps", "train_steps", "d"),
    Column("padding", "padding_percent", ".1f"),
    Column("pass (s)", "pass_s", ".2f"),
    Column("pairs/s", "pairs_per_s", ",.1f"),
    Column("useful tokens/s", "useful_tokens_per_s", ",.0f"),
    Column("theirs pairs/s", "theirs_pairs_per_s", ",.1f"),
    Column("packed ÷ this", "packed_ratio", ".2f"),
)


def segments(recipe: str) -> int:
    """Pairs a row at most: `packed` 16, `packedN` N, the padded recipes 1."""
    if recipe == "packed":
        return MAX_SEGMENTS
    if recipe in RECIPES:
        return 1
    m = re.fullmatch(r"packed([1-9][0-9]*)", recipe)
    if not m:
        raise ValueError(f"unknown recipe {recipe!r}: choose from {RECIPES} or packedN (N pairs a row at most)")
    return int(m[1])


def batches(lengths: list[int], recipe: str, rows: int, seed: int = 0) -> list[list[list[int]]]:
    """Per step, the pair indices of each row. Pure."""
    if recipe.startswith("packed"):
        packed = packing.pack_lengths(lengths, MAX_LEN, segments(recipe))
        return [packed[i:i + rows] for i in range(0, len(packed), rows)]
    order = list(range(len(lengths)))
    rng = np.random.default_rng(seed)
    rng.shuffle(order)
    if recipe == "pad512":
        return [[[i] for i in order[k:k + rows]] for k in range(0, len(order), rows)]
    if recipe != "dynamic":
        raise ValueError(f"unknown recipe {recipe!r}")
    steps = []
    window = rows * 100
    for w in range(0, len(order), window):
        chunk = sorted(order[w:w + window], key=lambda i: lengths[i])
        steps += [[[i] for i in chunk[k:k + rows]] for k in range(0, len(chunk), rows)]
    rng.shuffle(steps)
    return steps


def width(recipe: str, lengths: list[int], step: list[list[int]]) -> int:
    if recipe != "dynamic":
        return MAX_LEN
    longest = max(sum(lengths[i] for i in row) for row in step)
    return min(MAX_LEN, -(-longest // DYNAMIC_MULTIPLE) * DYNAMIC_MULTIPLE)


def measure(case: str, *, steps: int, warmup: int, baseline_path: str | None,
            attention: str | None = None, recipes: list[str] | None = None) -> Iterator[dict[str, Any]]:
    """Yields each recipe's record as soon as it is timed (packed first: the others' ratios need it),
    and hf_baseline's right after packed's."""
    recipes = list(dict.fromkeys(recipes or RECIPES))
    if "packed" not in recipes:
        raise ValueError(f"recipes must include packed (every ratio is packed's), got {recipes}")
    for r in recipes:
        segments(r)  # an unknown recipe fails before anything compiles
    recipes = ["packed", *(r for r in recipes if r != "packed")]
    mcfg = model_config(case).replace(dtype=DTYPE[case], dropout_rate=0.1, attention=attention or "auto")
    lengths = [min(n, MAX_LEN) for n in load_lengths(PAIRS[case])]
    rng = np.random.default_rng(0)
    ids = [np.concatenate([[0], rng.integers(5, mcfg.vocab_size, n - 1)]).astype(np.int32) for n in lengths]
    types_ = [np.zeros(n, np.int32) for n in lengths]
    labels = rng.random(len(lengths)).astype(np.float32)
    devices = jax.local_devices()
    mesh = sharding_lib.make_mesh({"data": -1}, devices=devices)
    setup = train.build(step_config(MAX_LEN), mesh, mcfg)
    batch_sh = sharding_lib.accum_batch_sharding(mesh)
    rows = max(ROWS[case], len(devices)) // len(devices) * len(devices)
    key = jax.random.key(0)
    packed = None
    for recipe in recipes:
        t_recipe = time.perf_counter()
        plan = batches(lengths, recipe, rows)
        prepared = []
        for step in plan:
            b = packing.make_batch(ids, types_, step, max_len=width(recipe, lengths, step),
                                   max_segments=segments(recipe), pad_id=mcfg.pad_token_id, labels=labels,
                                   num_rows=rows)
            b.pop("pair_index")
            prepared.append({k: jax.device_put(v[None], batch_sh) for k, v in b.items()})
        state = train.initial_state(step_config(MAX_LEN), setup)
        slots = sum(b["segment_ids"].size for b in prepared)
        for _ in range(max(warmup, 1)):  # compiles every shape
            for b in prepared:
                state, out = setup.step_fn(state, b, key)
            jax.block_until_ready(out["loss"])
        print(f"train-real {case}/{recipe}: {len(prepared)} steps, compile pass done in "
              f"{time.perf_counter() - t_recipe:.1f} s", file=sys.stderr, flush=True)
        times = []
        for _ in range(steps):
            t = time.perf_counter()
            for b in prepared:
                state, out = setup.step_fn(state, b, key)
            jax.block_until_ready(out["loss"])
            times.append(time.perf_counter() - t)
        if not np.isfinite(float(out["loss"])):
            raise RuntimeError(f"{case}/{recipe}: non-finite loss")
        pass_s = float(np.median(times))
        print(f"train-real {case}/{recipe}: {len(lengths) / pass_s:,.1f} pairs/s", file=sys.stderr, flush=True)
        packed = packed or len(lengths) / pass_s
        yield {
            "case": case, "recipe": recipe, "device_kind": devices[0].device_kind, "devices": len(devices),
            "attention": mcfg.attention_impl(), "max_segments": segments(recipe),
            "pairs": len(lengths), "train_steps": len(prepared), "rows_per_step": rows, "dtype": DTYPE[case],
            "padding_percent": 100 * (1 - sum(lengths) / slots), "pass_s": pass_s,
            "pairs_per_s": len(lengths) / pass_s, "useful_tokens_per_s": sum(lengths) / pass_s,
            "theirs_pairs_per_s": None, "packed_ratio": packed / (len(lengths) / pass_s), "steps": steps,
        }
        if recipe == "packed" and baseline_path:  # the ratio first, before our other recipes compile
            yield from baseline_records(baseline_path, case, lengths, rows, packed, steps)


def baseline_records(baseline_path: str, case: str, lengths: list[int], rows: int, packed: float,
                     steps: int) -> Iterator[dict[str, Any]]:
    """hf_baseline.py's train-real on the same lengths, as rows of our table."""
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(lengths, f)
    try:
        theirs = report.run_baseline(baseline_path, ["--suite", "train-real", "--model", case, "--lengths",
                                                     f.name, "--batch", str(rows), "--modes", "pad512,dynamic"])
    finally:
        pathlib.Path(f.name).unlink(missing_ok=True)
    for t in theirs:
        mode = t["impl"].rsplit("-", 1)[-1]
        yield {"case": case, "recipe": f"hf {mode}", "device_kind": t.get("device"),
               "pairs": len(lengths), "pairs_per_s": None, "useful_tokens_per_s": t.get("useful_tokens_per_s"),
               "theirs_pairs_per_s": t["pairs_per_s"], "packed_ratio": packed / t["pairs_per_s"],
               "theirs": t, "steps": steps}


def run(*, steps: int | None = None, warmup: int | None = None, cases: list[str] | None = None,
        baseline: str | None = None, attention: str | None = None,
        recipes: list[str] | None = None) -> Iterator[dict]:
    if cases is None:  # roberta-large over 2k pairs is for accelerators; a CPU runs the reduced case
        cases = ["tiny"] if jax.default_backend() == "cpu" else list(CASES)
    for c in cases:
        yield from measure(c, steps=steps or DEFAULT_STEPS[c], warmup=DEFAULT_WARMUP if warmup is None else warmup,
                           baseline_path=baseline, attention=attention, recipes=recipes)
