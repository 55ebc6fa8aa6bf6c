"""Suite `memory`: peak memory of the training step at several batch sizes, with and without remat.

    python -m bench.run --suite memory [--cases tiny,large]

For each batch size (rows of 512 tokens per device) and `remat` off/on, the real train step
(`train.build`, as `train-shape` runs it) is compiled from abstract shapes and XLA's memory
analysis gives its footprint per device: arguments (parameters, optimizer state, batch) +
outputs + temporaries - donated aliases. On an accelerator the step also runs once and the
device's own `peak_bytes_in_use` is reported, and `largest` is the biggest batch whose estimate
fits the device's `bytes_limit` (doubling, then bisection). A CPU has no limit: `largest` is
skipped there. Needs neither TensorFlow nor ml_collections.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

from bench.report import Column
from bench.train_throughput import step_config, synthetic_batch
from cappy_jax import model as model_lib
from cappy_jax import sharding as sharding_lib
from cappy_jax import train
from configs import model as model_configs

CASES = ("tiny", "large")
SEQ_LEN = {"tiny": 128, "large": 512}
DTYPE = {"tiny": "float32", "large": "bfloat16"}
BATCHES = (8, 32)  # rows per device
DEFAULT_STEPS = {"tiny": 1, "large": 1}
DEFAULT_WARMUP = 0
GIB = 2 ** 30

NOTE = ("per device; estimate = XLA memory analysis of the compiled train step (arguments + outputs + "
        "temporaries - donated aliases); measured = the device's peak_bytes_in_use after one step "
        "(accelerators only); largest = biggest rows per device whose estimate fits bytes_limit (accelerators only)")

COLUMNS = (
    Column("case", "case"),
    Column("device", "device_kind"),
    Column("rows/device", "rows_per_device", "d"),
    Column("tokens/row", "seq_len", "d"),
    Column("remat", "remat"),
    Column("estimate (GiB)", "estimate_gib", ".3f"),
    Column("temporaries (GiB)", "temp_gib", ".3f"),
    Column("measured (GiB)", "measured_gib", ".3f"),
    Column("largest rows/device", "largest", "d"),
)


def _model(case: str, remat: bool) -> model_lib.ModelConfig:
    return model_lib.ModelConfig.from_dict(dict(model_configs.VARIANTS[case], dtype=DTYPE[case], remat=remat,
                                                dropout_rate=0.1))


def estimate(setup: train.Setup, mesh: jax.sharding.Mesh, rows: int, seq_len: int) -> dict[str, int]:
    """XLA's memory analysis of the step at `rows` rows per device, from shapes only (nothing allocated)."""
    sh = sharding_lib.accum_batch_sharding(mesh)
    n = rows * mesh.devices.size
    batch = {k: jax.ShapeDtypeStruct((1, n, *v.shape[2:]), v.dtype, sharding=sh)
             for k, v in synthetic_batch(1, seq_len, 8).items()}
    compiled = setup.step_fn.lower(setup.abstract_state, batch, jax.random.key(0)).compile()
    m = compiled.memory_analysis()
    total = m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes - m.alias_size_in_bytes
    return {"estimate": int(total), "temp": int(m.temp_size_in_bytes)}


def largest_fitting(fits: Any, start: int) -> int:
    """Biggest n >= 1 with fits(n), for a monotone `fits`: doubling from `start`, then bisection. Pure."""
    lo, hi = 0, max(1, start)
    while fits(hi):
        lo, hi = hi, hi * 2
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    return lo


def measure(case: str) -> list[dict[str, Any]]:
    devices = jax.local_devices()
    mesh = sharding_lib.make_mesh({"data": -1}, devices=devices)
    stats = devices[0].memory_stats() or {}
    limit = stats.get("bytes_limit")
    seq_len = SEQ_LEN[case]
    records = []
    for remat in (False, True):
        mcfg = _model(case, remat)
        setup = train.build(step_config(min(seq_len, mcfg.max_len)), mesh, mcfg)
        for rows in BATCHES:
            est = estimate(setup, mesh, rows, seq_len)
            measured = None
            if limit and est["estimate"] < limit:
                state = train.initial_state(step_config(seq_len), setup)
                sh = sharding_lib.accum_batch_sharding(mesh)
                batch = {k: jax.device_put(v, sh) for k, v in
                         synthetic_batch(rows * len(devices), seq_len, mcfg.vocab_size).items()}
                state, out = setup.step_fn(state, batch, jax.random.key(0))
                jax.block_until_ready(out["loss"])
                measured = devices[0].memory_stats().get("peak_bytes_in_use")
                del state, batch
            records.append({
                "case": case, "device_kind": devices[0].device_kind, "devices": len(devices),
                "rows_per_device": rows, "seq_len": seq_len, "remat": remat, "dtype": DTYPE[case],
                "estimate_gib": est["estimate"] / GIB, "temp_gib": est["temp"] / GIB,
                "measured_gib": None if measured is None else measured / GIB, "largest": None,
            })
        if limit:
            largest = largest_fitting(lambda n: estimate(setup, mesh, n, seq_len)["estimate"] < limit, BATCHES[-1])
            for r in records[-len(BATCHES):]:
                r["largest"] = largest
    if not all(np.isfinite(r["estimate_gib"]) and r["estimate_gib"] > 0 for r in records):
        raise RuntimeError(f"{case}: memory analysis gave no size")
    return records


def run(*, steps: int | None = None, warmup: int | None = None, cases: list[str] | None = None) -> list[dict]:
    del steps, warmup  # compiled, not timed
    if cases is None:
        cases = ["tiny"] if jax.default_backend() == "cpu" else list(CASES)
    return [r for c in cases for r in measure(c)]
