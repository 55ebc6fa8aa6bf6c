"""Suite `memory`: peak memory of the training step at several batch sizes, with and without remat.

    python -m bench.run --suite memory [--cases tiny,large]

For each batch size (rows of 512 tokens per device) and `remat` off/on, the real train step
(`train.build`, as `train-shape` runs it) is compiled from abstract shapes and XLA's memory
analysis gives its footprint per device: arguments (parameters, optimizer state, batch) +
outputs + temporaries - donated aliases (the four compile at once, in threads). On an
accelerator the step also runs once and the device's own `peak_bytes_in_use` is reported. A row `largest` per remat setting gives the biggest
batch whose estimate fits the device's `bytes_limit` (`largest_fitting`: where the line through known
sizes meets the limit, checked by compiling it and its neighbour; each size compiled once).
A CPU has no limit: no `largest` rows there. Needs neither TensorFlow nor ml_collections.
"""

from __future__ import annotations

import concurrent.futures
import math
from collections.abc import Callable, Iterator
from typing import Any

import jax
import numpy as np

from bench.report import Column
from bench.train_throughput import step_config, synthetic_batch
from cappy_jax import model as model_lib
from cappy_jax import sharding as sharding_lib
from cappy_jax import train, train_compile
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
        "(accelerators only); rows `largest` = the biggest rows per device whose estimate fits bytes_limit "
        "(accelerators only)")

COLUMNS = (
    Column("case", "case"),
    Column("device", "device_kind"),
    Column("batch", "batch"),
    Column("rows/device", "rows_per_device", "d"),
    Column("tokens/row", "seq_len", "d"),
    Column("remat", "remat"),
    Column("estimate (GiB)", "estimate_gib", ".3f"),
    Column("temporaries (GiB)", "temp_gib", ".3f"),
    Column("measured (GiB)", "measured_gib", ".3f"),
)


def _model(case: str, remat: bool, attention: str | None = None) -> model_lib.ModelConfig:
    return model_lib.ModelConfig.from_dict(dict(model_configs.VARIANTS[case], dtype=DTYPE[case], remat=remat,
                                                dropout_rate=0.1, attention=attention or "auto"))


def estimate(setup: train.Setup, mesh: jax.sharding.Mesh, rows: int, seq_len: int) -> dict[str, int]:
    """XLA's memory analysis of the step at `rows` rows per device, from shapes only (nothing allocated)."""
    sh = sharding_lib.accum_batch_sharding(mesh)
    n = rows * mesh.devices.size
    batch = {k: jax.ShapeDtypeStruct((1, n, *v.shape[2:]), v.dtype, sharding=sh)
             for k, v in synthetic_batch(1, seq_len, 8).items()}
    m = train_compile.memory(setup.step_fn.lower(setup.abstract_state, batch, jax.random.key(0)).compile())
    return {"estimate": m["total"], "temp": m["temporaries"]}


def bytes_limit(device: jax.Device) -> int | None:
    """What the device's allocator may hold; None where there is no limit (a CPU)."""
    return (device.memory_stats() or {}).get("bytes_limit")


def largest_fitting(size: Callable[[int], int], limit: int, measured: dict[int, int], start: int) -> int:
    """Biggest n >= 1 with size(n) < limit, for a size that grows with n (0 when 1 does not fit); `measured`
    holds sizes already known. Pure but for `size`.

    Each size is a compilation (tens of seconds for roberta-large on a GPU), and a step's memory grows
    almost linearly with its rows: the next probe is where the line through two known sizes meets the
    limit (between the nearest sizes either side once both are known), then its neighbour, which settles
    a right guess in two compilations. A bisection step after a line that did not halve the interval,
    doubling where the known sizes do not rise.
    """
    sizes = dict(measured)

    def fits(n: int) -> bool:
        if n not in sizes:
            sizes[n] = size(n)
        return sizes[n] < limit

    width = None
    while True:
        lo = max((n for n, s in sizes.items() if s < limit), default=0)
        hi = min((n for n, s in sizes.items() if s >= limit), default=None)
        if hi is not None and hi - lo <= 1:
            return lo
        # A line that did not halve the interval (a curve, a kink where the compiler recomputes): bisect once.
        bisect = hi is not None and width is not None and 2 * (hi - lo) > width
        width = None if hi is None else hi - lo
        if bisect:
            fits((lo + hi) // 2)
            continue
        guess = _line_guess(sizes, lo, hi, limit, start)
        guess = max(lo + 1, guess if hi is None else min(guess, hi - 1))
        if fits(guess):
            if hi is None or guess + 1 < hi:
                fits(guess + 1)
        elif guess - 1 > lo:
            fits(guess - 1)


def _line_guess(sizes: dict[int, int], lo: int, hi: int | None, limit: int, start: int) -> int:
    """Where the line through the sizes nearest the limit reaches it: the fitting `lo` and failing `hi`
    when both are known, else two on the known side (at most 16x the largest fitting). Pure."""
    if lo and hi is not None:
        a, b = lo, hi
    else:
        side = sorted(n for n in sizes if (sizes[n] < limit) == (hi is None))
        if len(side) < 2:
            return max(2 * lo, start) if hi is None else hi // 2
        # The slope nearest the limit, over a span wide enough that XLA's row-to-row jitter does not rule it.
        a, b = (max([n for n in side if n <= side[-1] * 3 // 4] or side[:1]), side[-1]) if hi is None else side[:2]
    per_row = (sizes[b] - sizes[a]) / (b - a)
    if per_row <= 0:
        return max(2 * lo, start) if hi is None else (lo + hi) // 2
    base = b if sizes[b] < limit else a
    guess = base + math.floor((limit - sizes[base]) / per_row)
    return guess if hi is not None else min(guess, 16 * max(lo, 1))


def measure(case: str, attention: str | None = None) -> Iterator[dict[str, Any]]:
    """Yields the fixed batches' records, then (on an accelerator) one `largest` record per remat setting:
    each search is several compilations, so what came before is written even if the search is cut short."""
    devices = jax.local_devices()
    mesh = sharding_lib.make_mesh({"data": -1}, devices=devices)
    limit = bytes_limit(devices[0])
    seq_len = SEQ_LEN[case]
    setups = {}
    for remat in (False, True):
        mcfg = _model(case, remat, attention)
        setups[remat] = train.build(step_config(min(seq_len, mcfg.max_len)), mesh, mcfg)
    jobs = [(remat, rows) for remat in setups for rows in BATCHES]
    # Compilations are independent and mostly host work: all at once (each is tens of seconds on a GPU).
    with concurrent.futures.ThreadPoolExecutor(len(jobs)) as pool:
        estimates = list(pool.map(lambda job: estimate(setups[job[0]], mesh, job[1], seq_len), jobs))
    # Every size is compiled once: the search below probes the largest size before it reports it.
    known = dict(zip(jobs, estimates))

    def sized(remat: bool, rows: int) -> dict[str, int]:
        if (remat, rows) not in known:
            known[remat, rows] = estimate(setups[remat], mesh, rows, seq_len)
        return known[remat, rows]

    records = [_record(case, devices, setups[remat].model.config, rows, seq_len, est, batch=str(rows))
               for (remat, rows), est in zip(jobs, estimates)]
    if limit:
        # The device's peak only grows, so run the smallest first: each step that raises it gives its own peak;
        # one that does not (its peak is under an earlier one's) is left unmeasured rather than misreported.
        for r in sorted(records, key=lambda r: r["estimate"]):
            if r["estimate"] >= limit:
                continue
            setup = setups[r["remat"]]
            before = (devices[0].memory_stats() or {}).get("peak_bytes_in_use", 0)
            state = train.initial_state(step_config(seq_len), setup)
            sh = sharding_lib.accum_batch_sharding(mesh)
            batch = {k: jax.device_put(v, sh) for k, v in
                     synthetic_batch(r["rows_per_device"] * len(devices), seq_len, setup.model.config.vocab_size).items()}
            state, out = setup.step_fn(state, batch, jax.random.key(0))
            jax.block_until_ready(out["loss"])
            after = (devices[0].memory_stats() or {}).get("peak_bytes_in_use", 0)
            r["measured_gib"] = after / GIB if after > before else None
            del state, batch, out
    if not all(np.isfinite(r["estimate_gib"]) and r["estimate_gib"] > 0 for r in records):
        raise RuntimeError(f"{case}: memory analysis gave no size")
    yield from records
    if not limit:
        return
    for remat, setup in setups.items():
        sizes = {r["rows_per_device"]: r["estimate"] for r in records if r["remat"] == remat}
        largest = largest_fitting(lambda n: sized(remat, n)["estimate"], limit, sizes, BATCHES[-1])
        if largest:
            yield _record(case, devices, setup.model.config, largest, seq_len, sized(remat, largest),
                          batch="largest")


def _record(case: str, devices: list, mcfg: model_lib.ModelConfig, rows: int, seq_len: int,
            est: dict[str, int], *, batch: str) -> dict[str, Any]:
    return {"case": case, "device_kind": devices[0].device_kind, "devices": len(devices), "batch": batch,
            "rows_per_device": rows, "seq_len": seq_len, "remat": mcfg.remat, "dtype": DTYPE[case],
            "attention": mcfg.attention_impl(), "estimate": est["estimate"], "estimate_gib": est["estimate"] / GIB,
            "temp_gib": est["temp"] / GIB, "measured_gib": None}


def run(*, steps: int | None = None, warmup: int | None = None, cases: list[str] | None = None,
        attention: str | None = None) -> Iterator[dict]:
    del steps, warmup  # compiled, not timed
    if cases is None:
        cases = ["tiny"] if jax.default_backend() == "cpu" else list(CASES)
    for c in cases:
        yield from measure(c, attention)
