"""Suite `train-shape`: training tokens/s and MFU of the real train step at a fixed shape.

    python -m bench.run --suite train-shape [--cases large]

The step is `cappy_jax.train.train_step` as training compiles it (`train.build`: state sharded over a
data-parallel mesh of every local device, donated, AdamW + clipping, bfloat16 compute, dropout on),
fed synthetic full rows (one pair of `seq_len` tokens per row, so tokens/s counts no padding). Cases:
`large` is the issue's figure (roberta-large, length 512, batch 32 per device, bfloat16); `large-scan`
the same with `scan_layers` (compile time against step time); `deep`/`deep-scan` show that trade on a
CPU (24 layers, 768 wide, 2 x 128 tokens); `tiny` is the reduced form CI runs on CPU. Needs neither TensorFlow nor ml_collections (the GPU machine has
neither): the config is a plain namespace built from `configs/pretrain.py`'s data.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
import types
from collections.abc import Iterator
from typing import Any

import jax
import numpy as np

from bench import report
from bench.report import Column
from cappy_jax import metrics as metrics_lib
from cappy_jax import model as model_lib
from cappy_jax import sharding as sharding_lib
from cappy_jax import train
from configs import model as model_configs
from configs import pretrain

CASES = ("tiny", "large", "large-scan", "deep", "deep-scan")
DEFAULT_STEPS = {"tiny": 5, "large": 20, "large-scan": 20, "deep": 3, "deep-scan": 3}
DEFAULT_WARMUP = 2
BASELINE_MODES = "eager,compile"  # hf_baseline.py --suite train: PyTorch eager and torch.compile
SHAPES = {
    # rows per device, tokens per row, compute dtype
    "tiny": dict(model="tiny", rows_per_device=4, seq_len=128, dtype="float32"),
    "large": dict(model="large", rows_per_device=32, seq_len=512, dtype="bfloat16"),
    # The same with the layers under nn.scan: compiles one layer instead of 24 (ModelConfig.scan_layers).
    "large-scan": dict(model="large", rows_per_device=32, seq_len=512, dtype="bfloat16", scan_layers=True),
    # CPU-sized: 24 layers 768 wide, where compile time against step time shows on a CPU.
    "deep": dict(model="base", num_layers=24, rows_per_device=2, seq_len=128, dtype="float32"),
    "deep-scan": dict(model="base", num_layers=24, rows_per_device=2, seq_len=128, dtype="float32", scan_layers=True),
}

NOTE = ("train step of cappy_jax.train (AdamW, clip 1.0, dropout 0.1, bce loss) on a data-parallel mesh over "
        "all local devices, synthetic full rows (no padding); median step seconds after compile and warm-up; "
        "tokens/s over all devices; MFU = tokens/s/device x analytic training FLOPs per token "
        "(cappy_jax.metrics.encoder_flops_per_token: the FLOPs the step computes, its last layer at the head's "
        "positions only unless scanned) / the device's dense bf16 peak")

COLUMNS = (
    Column("case", "case"),
    Column("impl", "impl"),
    Column("device", "device_kind"),
    Column("devices", "devices", "d"),
    Column("params", "params", ",d"),
    Column("rows×tokens", "batch"),
    Column("dtype", "dtype"),
    Column("remat", "remat"),
    Column("scan", "scan_layers"),
    Column("attention", "attention"),
    Column("compile (s)", "compile_s", ".1f"),
    Column("step (s)", "step_s", ".4f"),
    Column("tokens/s", "tokens_per_s", ",.0f"),
    Column("pairs/s", "pairs_per_s", ",.1f"),
    Column("MFU", "mfu_percent", ".1f"),
    Column("steps", "steps", "d"),
    Column("ours ÷ this", "ratio", ".2f"),
)


def step_config(seq_len: int) -> Any:
    """What `train.build` reads, as a plain namespace (no ml_collections on the GPU machine)."""
    return types.SimpleNamespace(
        optim=dict(learning_rate=1e-5, warmup_fraction=0.06, schedule="linear", end_fraction=0.0,
                   weight_decay=0.01, b1=0.9, b2=0.98, eps=1e-6, clip_norm=1.0),
        num_steps=100_000, loss="bce", rules=pretrain.RULES, init_from="", seed=0,
        data=types.SimpleNamespace(max_len=seq_len))


def synthetic_batch(rows: int, seq_len: int, vocab: int, seed: int = 0) -> dict[str, np.ndarray]:
    """`[1, rows, seq_len]` (one micro-batch): every row one full pair, labels in [0, 1]."""
    rng = np.random.default_rng(seed)
    batch = {
        "input_ids": rng.integers(5, vocab, (rows, seq_len)).astype(np.int32),
        "segment_ids": np.ones((rows, seq_len), np.int32),
        "position_ids": np.broadcast_to(np.arange(seq_len, dtype=np.int32), (rows, seq_len)).copy(),
        "token_type_ids": np.zeros((rows, seq_len), np.int32),
        "cls_index": np.zeros((rows, 1), np.int32),
        "labels": rng.random((rows, 1)).astype(np.float32),
        "label_mask": np.ones((rows, 1), np.float32),
    }
    return {k: v[None] for k, v in batch.items()}


@dataclasses.dataclass
class Prepared:
    """A compiled train step with its state and one device batch, ready to time or trace."""

    mcfg: model_lib.ModelConfig
    devices: list
    state: Any
    batch: dict
    compiled: Any
    compile_s: float
    rows: int
    seq_len: int
    dtype: str


def prepare(case: str, *, remat: bool = False, attention: str | None = None) -> Prepared:
    shape = SHAPES[case]
    mcfg = model_lib.ModelConfig.from_dict(dict(model_configs.VARIANTS[shape["model"]], dtype=shape["dtype"],
                                                remat=remat, dropout_rate=0.1,
                                                scan_layers=shape.get("scan_layers", False)))
    if "num_layers" in shape:
        mcfg = mcfg.replace(num_layers=shape["num_layers"])
    if attention:
        mcfg = mcfg.replace(attention=attention)
    seq_len = min(shape["seq_len"], mcfg.max_len)
    devices = jax.local_devices()
    mesh = sharding_lib.make_mesh({"data": -1}, devices=devices)
    config = step_config(seq_len)
    setup = train.build(config, mesh, mcfg)
    state = train.initial_state(config, setup)
    rows = shape["rows_per_device"] * len(devices)
    batch_sh = sharding_lib.accum_batch_sharding(mesh)
    batch = {k: jax.device_put(v, batch_sh) for k, v in synthetic_batch(rows, seq_len, mcfg.vocab_size).items()}
    t0 = time.perf_counter()
    compiled = setup.step_fn.lower(state, batch, jax.random.key(0)).compile()
    return Prepared(mcfg=mcfg, devices=devices, state=state, batch=batch, compiled=compiled,
                    compile_s=time.perf_counter() - t0, rows=rows, seq_len=seq_len, dtype=shape["dtype"])


def flops_per_token(p: Prepared) -> float:
    heads = int(p.batch["cls_index"].shape[-1])
    return metrics_lib.encoder_flops_per_token(num_layers=p.mcfg.num_layers, hidden_size=p.mcfg.hidden_size,
                                               intermediate_size=p.mcfg.intermediate_size, seq_len=p.seq_len,
                                               head_positions=heads if p.mcfg.last_layer_at_heads else None)


def mfu_percent(p: Prepared, step_s: float) -> float | None:
    """MFU of a step of `step_s` seconds at `p`'s shape; None where the device's peak is unknown (a CPU)."""
    tokens_per_device_s = p.rows * p.seq_len / step_s / len(p.devices)
    mfu = metrics_lib.mfu(tokens_per_device_s, flops_per_token(p), metrics_lib.peak_flops(p.devices[0].device_kind))
    return 100 * mfu if np.isfinite(mfu) else None


def timed_steps(p: Prepared, *, steps: int, warmup: int) -> tuple[Any, dict[str, Any], float]:
    """Runs `warmup` then `steps` steps from `p.state`; (state, last outputs, median step seconds)."""
    state, rng = p.state, jax.random.key(0)
    for _ in range(warmup):
        state, out = p.compiled(state, p.batch, rng)
        jax.block_until_ready(out["loss"])
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        state, out = p.compiled(state, p.batch, rng)
        jax.block_until_ready(out["loss"])
        times.append(time.perf_counter() - t)
    return state, out, statistics.median(times)


def measure(case: str, *, steps: int, warmup: int, remat: bool = False,
            attention: str | None = None) -> dict[str, Any]:
    p = prepare(case, remat=remat, attention=attention)
    state, out, step_s = timed_steps(p, steps=steps, warmup=warmup)
    loss = float(out["loss"])
    if not np.isfinite(loss):
        raise RuntimeError(f"{case}: the benchmarked step gave loss {loss}")
    tokens_per_s = p.rows * p.seq_len / step_s
    kind = p.devices[0].device_kind
    return {
        "case": case, "impl": "cappy_jax", "device_kind": kind, "devices": len(p.devices),
        "params": model_lib.count_params(state.params), "batch": f"{p.rows}×{p.seq_len}", "rows": p.rows,
        "seq_len": p.seq_len, "dtype": p.dtype, "remat": remat, "attention": p.mcfg.attention_impl(),
        "scan_layers": p.mcfg.scan_layers,
        "compile_s": p.compile_s, "step_s": step_s, "tokens_per_s": tokens_per_s, "pairs_per_s": p.rows / step_s,
        "mfu_percent": mfu_percent(p, step_s), "flops_per_token": flops_per_token(p), "loss": loss, "steps": steps, "warmup": warmup, "ratio": None,
    }


def baseline_records(ours: dict[str, Any], baseline: str) -> list[dict[str, Any]]:
    """hf_baseline.py's train suite at our shape (eager and torch.compile); ratio = ours / theirs."""
    peak = metrics_lib.peak_flops(ours["device_kind"])
    args = ["--suite", "train", "--model", ours["case"], "--seq", str(ours["seq_len"]),
            "--batch", str(ours["rows"]), "--modes", BASELINE_MODES]
    if peak:
        args += ["--peak_tflops", str(peak / 1e12)]
    out = []
    for t in report.run_baseline(baseline, args):
        mfu = t.get("mfu_vs_peak")
        out.append({"case": ours["case"], "impl": t["impl"], "device_kind": t.get("device"), "batch": ours["batch"],
                    "dtype": "bfloat16 autocast" if t.get("device") != "cpu" else "float32",
                    "step_s": t["seconds"] / max(1, t["steps"]), "tokens_per_s": t["tokens_per_s"],
                    "pairs_per_s": t["pairs_per_s"], "mfu_percent": None if mfu is None else 100 * mfu,
                    "steps": t["steps"], "theirs": t, "ratio": ours["tokens_per_s"] / t["tokens_per_s"]})
    return out


def run(*, steps: int | None = None, warmup: int | None = None, cases: list[str] | None = None,
        baseline: str | None = None, attention: str | None = None) -> Iterator[dict]:
    if cases is None:  # roberta-large at batch 32 x 512 is for accelerators; a CPU runs the reduced case
        cases = ["tiny"] if jax.default_backend() == "cpu" else ["large", "large-scan"]
    compared = set()  # the baseline runs once per shape (large and large-scan share one)
    for c in cases:
        ours = measure(c, steps=steps or DEFAULT_STEPS[c], warmup=DEFAULT_WARMUP if warmup is None else warmup,
                       attention=attention)
        yield ours
        shape = (SHAPES[c]["model"], ours["rows"], ours["seq_len"])
        if baseline and shape not in compared:
            compared.add(shape)
            yield from baseline_records(ours, baseline)
