"""`python -m cappy_jax.train_compile`: compile a training config's step for a slice you do not have.

    python -m cappy_jax.train_compile --config configs/pretrain.py:large --topology v4-32
    python -m cappy_jax.train_compile --config configs/pretrain.py:large --topology v5e-16 \
        --config.mesh.data=4 --config.mesh.fsdp=4 --config.model.remat=True
    python -m cappy_jax.train_compile --config configs/pretrain.py:large --topology h100x8
    python -m cappy_jax.train_compile --config configs/pretrain.py:tiny --topology cpu:8

Builds the train step exactly as `python -m cappy_jax.train` does (`train.build`: state shardings from
`eval_shape`, the config's mesh and logical rules, donation, gradient accumulation), and the eval
step, over the target's devices, and compiles both from shapes alone: nothing is allocated. A mesh
that does not divide the slice, batch sizes that do not split over its hosts and devices, or a step
that does not fit a chip's memory fail here, on a laptop, instead of after the slice is
provisioned and the data is read (roberta-large for a TPU: two to three minutes and up to 15 GB of
memory on a 2-core machine). The TPU compiler refuses a program larger than a chip's HBM, so a TPU
target that compiles fits (the whole step, its temporaries included). TPU targets need libtpu, the compiler (no TPU): `pip install 'jax[tpu]'`;
off a TPU VM it prints warnings that it cannot find one, harmless here. GPU targets (`h100`, `h200x8`,
...) need JAX's CUDA plugin and no GPU (`pip install --no-deps jax-cuda12-plugin==V jax-cuda12-pjrt==V`,
V = jax's version; it warns that it finds no CUDA, harmless here); XLA's GPU compiler does not refuse a
program over a device's memory, so this module compares its estimate with the device's, and compiles
without autotuning (there is nothing to time kernels on). `cpu:N` compiles for N host devices (layout
checks; no memory limit). Prints per-device memory and FLOPs per step; `--output` writes them as JSON.
`--largest N` searches the most rows per device that fit a TPU or GPU target instead.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import pathlib
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import Any

import jax
import numpy as np

from cappy_jax import packing, train
from cappy_jax import sharding as sharding_lib

GIB = 2 ** 30
# TPU generations: topology-name prefix, axes of the chip grid, chip configuration. v4 and v5p name a
# slice by its TensorCores (two per chip, one megacore device), v5e and v6e by their chips.
TPU_FAMILIES = {"v4": ("v4", 3, "megacore"), "v5p": ("v5", 3, "megacore"),
                "v5e": ("v5e", 2, "default"), "v6e": ("v6e", 2, "default")}


@dataclasses.dataclass(frozen=True)
class GpuKind:
    """What XLA's GPU compiler reads of a GPU it compiles for (its TargetConfig), from NVIDIA's figures for
    the SXM parts; `memory` is what the driver reports as usable."""

    description: str
    memory: int
    bandwidth: int
    capability: tuple[int, int] = (9, 0)  # Hopper
    cudnn: tuple[int, int] = (9, 8)


# Hopper parts: 132 SMs, 50 MiB of L2, 1.98 GHz.
GPU_KINDS = {
    "h100": GpuKind("NVIDIA H100 80GB HBM3", memory=84_929_347_584, bandwidth=3_352_320_000_000),
    "h200": GpuKind("NVIDIA H200", memory=150_754_820_096, bandwidth=4_800_000_000_000),
}
GPUS_PER_HOST = 8


def gpu_topology(name: str) -> tuple[GpuKind, int, int]:
    """`h100` (one GPU), `h100x8` (a host of 8), `h200x16` (two hosts of 8) -> (kind, hosts, GPUs a host). Pure."""
    kind, times, count = name.partition("x")
    n = int(count) if count.isdigit() else (0 if times else 1)
    if kind not in GPU_KINDS or n < 1 or (n > GPUS_PER_HOST and n % GPUS_PER_HOST):
        raise ValueError(f"unknown GPU target {name!r}: {' or '.join(GPU_KINDS)}, alone or xN (N GPUs, up to "
                         f"{GPUS_PER_HOST} a host, beyond that a multiple of {GPUS_PER_HOST})")
    hosts = max(1, n // GPUS_PER_HOST)
    return GPU_KINDS[kind], hosts, n // hosts


def gpu_target_config(kind: GpuKind) -> str:
    """The GpuTargetConfigProto text `get_topology_desc(platform='cuda', target_config=...)` takes. Pure."""
    return f"""gpu_device_info {{
  threads_per_block_limit: 1024 threads_per_warp: 32 shared_memory_per_block: 49152
  shared_memory_per_core: 233472 threads_per_core_limit: 2048 core_count: 132 fpus_per_core: 128
  block_dim_limit_x: 2147483647 block_dim_limit_y: 65535 block_dim_limit_z: 65535
  memory_bandwidth: {kind.bandwidth} l2_cache_size: 52428800 clock_rate_ghz: 1.98
  device_memory_size: {kind.memory} shared_memory_per_block_optin: 232448
  cuda_compute_capability {{ major: {kind.capability[0]} minor: {kind.capability[1]} }}
  registers_per_core_limit: 65536 registers_per_block_limit: 65536
}}
platform_name: "CUDA"
dnn_version_info {{ major: {kind.cudnn[0]} minor: {kind.cudnn[1]} }}
runtime_version {{ major: 12 minor: 8 }}
device_description_str: "{kind.description}"
"""


@dataclasses.dataclass(frozen=True)
class Target:
    """The devices a step is compiled for, and the hosts they belong to."""

    name: str
    platform: str
    devices: list
    hosts: int
    gpu: GpuKind | None = None  # a GPU target's description: its memory, which XLA does not check itself


def chip_grid(chips: int, axes: int) -> tuple[int, ...]:
    """The slice's chip grid as Cloud TPU lays it out (v4-128: 4x4x4, v5e-32: 4x8). Pure.

    From 2x2(x1), each doubling doubles the smallest side, the last such side first.
    """
    if chips < 1 or chips & (chips - 1):
        raise ValueError(f"a TPU slice has a power-of-two number of chips, not {chips}")
    if chips == 1:
        return (1,) * axes
    grid = [2, 2] + [1] * (axes - 2) if chips >= 4 else [chips] + [1] * (axes - 1)
    while int(np.prod(grid)) < chips:
        low = min(grid)
        i = max(j for j, n in enumerate(grid) if n == low)
        grid[i] *= 2
    return tuple(grid)


def tpu_topology(name: str) -> dict[str, Any]:
    """`get_topology_desc`'s arguments for a slice name such as v4-32, v5p-8, v5e-16 or v6e-256. Pure."""
    family, _, size = name.partition("-")
    if family not in TPU_FAMILIES or not size.isdigit():
        raise ValueError(f"unknown TPU slice {name!r}: use NAME-SIZE with NAME in {sorted(TPU_FAMILIES)} "
                         f"(e.g. v4-32, v5e-16), or cpu:N")
    prefix, axes, chip_config = TPU_FAMILIES[family]
    chips = int(size) // 2 if chip_config == "megacore" else int(size)
    grid = chip_grid(chips, axes)
    # Chips a host holds: four (2x2) on v4/v5p and on multi-host v5e/v6e slices; single-host v5e/v6e
    # slices hold all of theirs.
    host = (2, 2, 1) if axes == 3 or chips >= 16 else (*grid, 1)
    return dict(platform="tpu", topology_name=f"{prefix}:{'x'.join(map(str, grid))}",
                chip_config_name=chip_config, chips_per_host_bounds=host, num_slices=1)


def target(name: str) -> Target:
    """`cpu` / `cpu:N` (this host's devices) or a TPU slice name, compiled for without the hardware."""
    if name == "cpu" or name.startswith("cpu:"):
        want = int(name.partition(":")[2] or 0)
        devices = jax.devices("cpu")
        if want > len(devices):
            raise ValueError(f"{name} needs {want} CPU devices but this process has {len(devices)}: start it with "
                             f"XLA_FLAGS=--xla_force_host_platform_device_count={want} (the CLI does this itself)")
        return Target(name, "cpu", devices[:want or len(devices)], 1)
    from jax.experimental import topologies

    if name.partition("x")[0] in GPU_KINDS:
        kind, hosts, per_host = gpu_topology(name)
        try:
            devices = list(topologies.get_topology_desc(platform="cuda", target_config=gpu_target_config(kind),
                                                        topology=f"1x{hosts}x{per_host}").devices)
        except Exception as e:  # no CUDA plugin: jax says so in its own words
            raise RuntimeError(
                f"cannot describe {name}: compiling for a GPU needs JAX's CUDA plugin, not a GPU (pip install "
                f"--no-deps jax-cuda12-plugin=={jax.__version__} jax-cuda12-pjrt=={jax.__version__}). "
                f"{type(e).__name__}: {e}") from e
        return Target(name, "gpu", devices, hosts, kind)
    args = tpu_topology(name)

    try:
        devices = list(topologies.get_topology_desc(**args).devices)
    except Exception as e:  # libtpu missing or too old: jax says so in its own words
        raise RuntimeError(f"cannot describe {name} ({args['topology_name']}): compiling for a TPU needs libtpu "
                           f"(pip install 'jax[tpu]'). {type(e).__name__}: {e}") from e
    return Target(name, "tpu", devices, len({d.process_index for d in devices}))


def memory(compiled: Any) -> dict[str, int]:
    """XLA's memory analysis of a compiled program, per device: what it holds at its peak."""
    m = compiled.memory_analysis()
    total = m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes - m.alias_size_in_bytes
    return {"total": int(total), "arguments": int(m.argument_size_in_bytes), "temporaries": int(m.temp_size_in_bytes),
            "outputs": int(m.output_size_in_bytes), "aliased": int(m.alias_size_in_bytes)}


def per_device_bytes(tree: Any) -> int:
    """Bytes one device holds of a tree of sharded abstract arrays (the fullest shard)."""
    return sum(int(np.prod(x.sharding.shard_shape(x.shape))) * np.dtype(x.dtype).itemsize
               for x in jax.tree.leaves(tree))


def abstract_batches(config: Any, mesh: jax.sharding.Mesh) -> tuple[dict, dict]:
    """Shapes of a training batch `[grad_accum, rows, ...]` and an eval batch, in the packed format."""
    data = config.data
    template = packing.make_batch([], [], [], max_len=int(data.max_len), max_segments=int(data.max_segments),
                                  pad_id=0, num_rows=1)
    accum = int(config.grad_accum)
    rows = int(config.global_rows) // accum
    train_sh, eval_sh = sharding_lib.accum_batch_sharding(mesh), sharding_lib.batch_sharding(mesh)
    train_batch = {k: jax.ShapeDtypeStruct((accum, rows, *v.shape[1:]), v.dtype, sharding=train_sh)
                   for k, v in template.items() if k != "pair_index"}
    eval_batch = {k: jax.ShapeDtypeStruct((int(data.eval_rows), *template[k].shape[1:]), template[k].dtype,
                                          sharding=eval_sh)
                  for k in packing.MODEL_INPUTS}
    return train_batch, eval_batch


def compile_for(config: Any, where: Target) -> dict[str, Any]:
    """Compiles the train and eval steps of `config` for `where`; the report `main` prints. Raises
    ValueError for a layout that does not fit the target, RuntimeError for a step over a chip's memory."""
    mesh = sharding_lib.make_mesh(dict(config.mesh), devices=where.devices)
    train.check_batch_layout(config, mesh, where.hosts)
    mcfg = train.model_config(config).for_platform(where.platform)  # 'auto' as the target resolves it, not here
    train_batch, eval_batch = abstract_batches(config, mesh)
    t = time.perf_counter()
    try:
        key = jax.ShapeDtypeStruct((), jax.random.key(0).dtype, sharding=sharding_lib.replicated(mesh))
        with _cudnn_described_by(where):  # the model is traced in build (eval_shape) and in lower
            setup = train.build(config, mesh, mcfg)
            step = setup.step_fn.lower(setup.abstract_state, train_batch, key).compile()
            evaluate = setup.eval_fn.lower(setup.abstract_state.params, eval_batch).compile()
        # XLA's GPU compiler does not refuse a program over the device's memory, as the TPU compiler does.
        if where.gpu and memory(step)["total"] > where.gpu.memory:
            raise RuntimeError(f"RESOURCE_EXHAUSTED: the train step needs {memory(step)['total'] / GIB:.2f} GiB "
                               f"of the device's {where.gpu.memory / GIB:.2f} GiB.")
    except Exception as e:
        if "RESOURCE_EXHAUSTED" not in str(e):
            raise
        splash = (", keep no attention scores for the backward pass (--config.model.attention=splash)"
                  if where.platform == "tpu" and mcfg.attention != "splash" else "")
        raise RuntimeError(f"the step does not fit a {where.devices[0].device_kind} device: {str(e).strip()} "
                           "Lower the rows per device (global_rows, or raise grad_accum), recompute activations "
                           f"(--config.model.remat=True){splash}, or shard parameters and optimizer state over "
                           "more devices (--config.mesh.fsdp=N)") from None
    compile_s = time.perf_counter() - t
    cost = step.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return {
        "target": where.name, "platform": where.platform, "device_kind": where.devices[0].device_kind,
        "devices": len(where.devices), "hosts": where.hosts, "mesh": dict(mesh.shape),
        "model": {"layers": mcfg.num_layers, "hidden": mcfg.hidden_size, "dtype": mcfg.dtype,
                  "remat": mcfg.remat, "scan_layers": mcfg.scan_layers, "attention": mcfg.attention},
        "global_rows": int(config.global_rows), "grad_accum": int(config.grad_accum),
        "max_len": int(config.data.max_len),
        "rows_per_device": int(config.global_rows) // sharding_lib.data_parallel_size(mesh),
        "state_bytes": per_device_bytes(setup.abstract_state), "train_step": memory(step),
        "eval_step": memory(evaluate), "flops_per_step": float((cost or {}).get("flops", 0.0)),
        # Every device computes an equal share of the update, whatever the mesh.
        "model_flops_per_step": train.model_flops_per_token(config, mcfg) * int(config.global_rows)
        * int(config.data.max_len) / len(where.devices),
        "compile_s": compile_s,
    }


@contextlib.contextmanager
def _cudnn_described_by(where: Target) -> Iterator[None]:
    """jax's cuDNN attention asks the local cuDNN library and GPU for their versions while it traces; a GPU
    target has neither here, so its description (`GpuKind`) answers. Only the tracing asks: XLA compiles
    the fused-attention calls without the library."""
    if where.gpu is None:
        yield
        return
    from jax._src.cudnn import fused_attention_stablehlo as cudnn

    saved = cudnn.check_cudnn_version, cudnn.check_compute_capability
    (major, minor), at_least = where.gpu.cudnn, where.gpu.capability
    cudnn.check_cudnn_version = lambda: major * 10000 + minor * 100
    cudnn.check_compute_capability = lambda capability: tuple(int(x) for x in capability.split(".")) <= at_least
    try:
        yield
    finally:
        cudnn.check_cudnn_version, cudnn.check_compute_capability = saved


def search_largest(fits: Callable[[int], bool], start: int, step: int, limit: int = 1 << 20) -> tuple[int, int]:
    """The most rows per device, a multiple of `step`, for which `fits` holds, and the fewest found not to
    (0 when `step` rows do not fit; `limit` when nothing up to it failed): doubling or halving from
    `start`, then bisecting. Pure but for `fits`."""
    rows = max(step, start // step * step)
    if fits(rows):
        lo, hi = rows, 2 * rows
        while hi <= limit and fits(hi):
            lo, hi = hi, 2 * hi
        hi = min(hi, limit)
    else:
        lo, hi = 0, rows
        while hi > step:
            half = max(step, hi // 2 // step * step)
            if fits(half):
                lo = half
                break
            hi = half
    while lo and hi - lo > step:
        mid = lo + (hi - lo) // step // 2 * step
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    return lo, hi


def largest(config: Any, topology: str, step: int, argv: list[str]) -> dict[str, Any]:
    """Searches the rows per device that fit a TPU or GPU target, one process per compilation: the TPU
    compiler holds gigabytes of host memory per roberta-large compilation, and gives little of it back.
    This process does not load libtpu (its lock would keep the compiling processes out)."""
    if topology.startswith("cpu"):
        raise ValueError(f"--largest needs a TPU or GPU target, which has a memory limit, not {topology}")
    if topology.partition("x")[0] in GPU_KINDS:
        _, hosts, per_host = gpu_topology(topology)
        devices = hosts * per_host
    else:
        devices = math.prod(int(n) for n in tpu_topology(topology)["topology_name"].partition(":")[2].split("x"))
    sizes = dict(zip(sharding_lib.MESH_AXES, sharding_lib.mesh_shape(dict(config.mesh), devices)))
    dp, accum = math.prod(sizes[a] for a in sharding_lib.BATCH_AXES), int(config.grad_accum)
    unit = math.lcm(dp, int(config.data.readers)) // dp  # rows per device that keep every reader's share whole
    step = math.lcm(unit, max(1, step))
    base = _without_flags(argv, ("--largest", "--output"))
    tried: dict[int, dict[str, Any] | None] = {}

    def fits(rows: int) -> bool:
        with tempfile.TemporaryDirectory() as tmp:
            out = os.path.join(tmp, "report.json")
            cmd = [sys.executable, "-m", "cappy_jax.train_compile", *base,
                   f"--config.global_rows={rows * dp * accum}", f"--output={out}"]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode and "does not fit" not in proc.stderr:
                raise RuntimeError(f"compiling {rows} rows per device failed: {proc.stderr.strip()[-2000:]}")
            tried[rows] = None if proc.returncode else json.loads(pathlib.Path(out).read_text())
        report = tried[rows]
        verdict = "does not fit"
        if report:
            verdict = f"{report['train_step']['total'] / GIB:.2f} GiB" + (
                f", {report['flops_per_step'] / rows / 1e9:,.0f} GFLOP a row" if report["flops_per_step"] else "")
        print(f"{rows} rows per device ({rows * dp * accum} global): {verdict}", flush=True)
        return report is not None

    lo, hi = search_largest(fits, int(config.global_rows) // (dp * accum), step)
    return {"rows_per_device": lo, "global_rows": lo * dp * accum, "refused_rows_per_device": hi, "step": step,
            "report": tried.get(lo), **recomputation(tried, lo),
            "tried": {r: t and {"train_step": t["train_step"], "flops_per_step": t["flops_per_step"]}
                      for r, t in tried.items()}}


def recomputation(tried: dict[int, dict[str, Any] | None], rows: int) -> dict[str, Any]:
    """How far the step at `rows` a device recomputes, against the fewest rows tried that fit. Pure.

    Near its memory limit a compiler recomputes activations on its own (its rematerialization pass): the
    step then counts more FLOPs a row (`extra_flops_per_row`), and keeps fewer temporaries a row
    (`temporaries_per_row_ratio`, well under 1). XLA's GPU compiler gives no FLOP count, so there the
    temporaries are the only sign (it keeps a step under about 75% of the device's memory)."""
    fitted = {r: t for r, t in tried.items() if t}
    least = min(fitted, default=0)
    if not rows or not least:
        return {"extra_flops_per_row": 0.0, "temporaries_per_row_ratio": 1.0, "compared_with_rows_per_device": least}
    a, b = fitted[rows], fitted[least]
    extra = ((a["flops_per_step"] / rows) / (b["flops_per_step"] / least) - 1) if b["flops_per_step"] else None
    temps = (a["train_step"]["temporaries"] / rows) / max(1, b["train_step"]["temporaries"] / least)
    return {"extra_flops_per_row": extra, "temporaries_per_row_ratio": temps, "compared_with_rows_per_device": least}


def summary(report: dict[str, Any]) -> str:
    """The report as a few lines a person reads."""
    gib = lambda n: f"{n / GIB:.2f} GiB"
    step = report["train_step"]
    return "\n".join([
        f"{report['target']}: {report['devices']} x {report['device_kind']} on {report['hosts']} host(s), "
        f"mesh {report['mesh']}",
        f"model: {report['model']['layers']} layers x {report['model']['hidden']}, {report['model']['dtype']}, "
        f"remat={report['model']['remat']}, scan_layers={report['model']['scan_layers']}, "
        f"attention={report['model']['attention']}",
        f"batch: {report['global_rows']} rows x {report['max_len']} tokens per update, "
        f"{report['rows_per_device']} rows per device"
        + (f" in {report['grad_accum']} micro-batches" if report["grad_accum"] > 1 else ""),
        f"train step per device: {gib(step['total'])} at its peak = {gib(step['arguments'])} arguments "
        f"(parameters + optimizer state {gib(report['state_bytes'])}, and the batch) + "
        f"{gib(step['temporaries'])} temporaries + {gib(step['outputs'])} outputs - "
        f"{gib(step['aliased'])} donated",
        f"eval step per device: {gib(report['eval_step']['total'])}",
        f"compiled both in {report['compile_s']:.1f} s; " + flops_line(report),
    ])


def flops_line(report: dict[str, Any]) -> str:
    """XLA's FLOP count beside the model's, and why they may differ. XLA's cost analysis counts a loop's
    body once: gradient accumulation is such a loop, and so, on a TPU under fsdp, is each collective matmul
    the compiler makes of a weight gradient and its reduce-scatter (`windowed_dot_general` in the HLO; at
    fsdp=16 on a v4-32 XLA counts 22% under the model, at fsdp=4 on a v4-8 as much as data parallelism)."""
    xla, model = report["flops_per_step"], report.get("model_flops_per_step", 0.0)
    if not xla:  # XLA's GPU compiler, for one, reports none
        return "XLA gives no FLOP count for this target" + (
            f"; the model counts {_flops(model)} per step per device (metrics.encoder_flops_per_token)" if model else "")
    line = f"XLA counts {_flops(xla)} per step per device"
    if not model:
        return line
    line += f", the model {_flops(model)} (metrics.encoder_flops_per_token)"
    if report["grad_accum"] > 1:
        line += ": XLA counts the micro-batch loop's body once"
    elif xla < 0.97 * model:
        line += (": XLA counts a loop's body once, likely a collective matmul's (a weight gradient fused with its "
                 "reduce-scatter under fsdp); the model's count is the one for MFU")
    elif xla > 1.1 * model:
        line += (": XLA also counts what the model's count leaves out (embeddings, LayerNorms, softmax, the "
                 "optimizer) and activations recomputed (remat, or the compiler's own near a chip's memory)")
    return line


def _flops(n: float) -> str:
    return f"{n / 1e12:.2f} TFLOP" if n >= 1e11 else f"{n / 1e9:.3g} GFLOP"


def main(argv: list[str]) -> None:
    from absl import flags

    from cappy_jax.cli import quiet_logging

    del argv
    quiet_logging()
    f = flags.FLAGS
    try:
        if f.largest:
            report = largest(f.config, f.topology, f.largest, sys.argv[1:])
        else:
            report = compile_for(f.config, target(f.topology))
    except (ValueError, RuntimeError) as e:
        raise SystemExit(f"error: {e}") from None
    if f.largest:
        print(f"largest: {report['rows_per_device']} rows per device (--config.global_rows={report['global_rows']}) "
              f"fit; {report['refused_rows_per_device']} did not (searched in steps of {report['step']})")
        than = f"than at {report['compared_with_rows_per_device']} rows per device"
        if report["extra_flops_per_row"] is not None and report["extra_flops_per_row"] > 0.005:
            print(f"  at that size the compiler recomputes activations to fit: {100 * report['extra_flops_per_row']:.1f}"
                  f"% more FLOPs a row {than}")
        elif report["extra_flops_per_row"] is None and report["temporaries_per_row_ratio"] < 0.8:
            print(f"  at that size the compiler recomputes activations to fit: it keeps "
                  f"{100 * report['temporaries_per_row_ratio']:.0f}% of the temporaries a row it keeps at "
                  f"{report['compared_with_rows_per_device']} rows per device (XLA gives no FLOP count here to say "
                  "how much it recomputes)")
        if report["report"]:
            print(summary(report["report"]), flush=True)
    else:
        print(summary(report), flush=True)
    if f.output:
        with open(f.output, "w") as out:
            json.dump(report, out, indent=1)
        print(f"wrote {f.output}")


def run() -> None:
    from absl import app, flags
    from ml_collections import config_flags

    config_flags.DEFINE_config_file("config", None, "A training config, e.g. configs/pretrain.py:large.",
                                    lock_config=True)
    flags.DEFINE_string("topology", None, "What to compile for: a TPU slice (v4-8 .. v4-4096, v5p-N, v5e-N, "
                        "v6e-N; needs libtpu), NVIDIA GPUs (h100, h200, h100x8, h200x16: 8 a host; needs JAX's "
                        "CUDA plugin) or cpu:N (N host devices).")
    flags.DEFINE_string("output", "", "Also write the report here, as JSON.")
    flags.DEFINE_integer("largest", 0, "N > 0: instead, search the most rows per device that fit (TPU and GPU "
                         "targets), "
                         "to a multiple of N rows, with global_rows varied and all else as given; one process "
                         "per compilation.")
    flags.mark_flags_as_required(["config", "topology"])
    # Compiling for a target needs no local accelerator, and must not take the TPU of a VM that is training
    # (nor try to start a GPU backend: with none, JAX's CUDA plugin then offers only its compiler).
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    jax.config.update("jax_platforms", os.environ["JAX_PLATFORMS"])
    # cpu:N needs N host devices before JAX starts its CPU backend, which no flag parsing does.
    topology = _flag_value(sys.argv, "--topology")
    n = topology.partition("cpu:")[2]
    if n.isdigit() and "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
        os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={n}"
    # A GPU target has no GPU here to time kernels on: XLA takes its default choices instead of autotuning.
    if topology.partition("x")[0] in GPU_KINDS and "xla_gpu_autotune_level" not in os.environ.get("XLA_FLAGS", ""):
        os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} --xla_gpu_autotune_level=0"
    app.run(main)


def _without_flags(argv: list[str], names: tuple[str, ...]) -> list[str]:
    """`argv` less `--name=value` and `--name value` for each name."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a in names:
            skip = True
        elif not a.startswith(tuple(n + "=" for n in names)):
            out.append(a)
    return out


def _flag_value(argv: list[str], name: str) -> str:
    """`--name=value` or `--name value` from a command line, before absl parses it; "" if absent."""
    for i, a in enumerate(argv):
        if a.startswith(name + "="):
            return a.split("=", 1)[1]
        if a == name and i + 1 < len(argv):
            return argv[i + 1]
    return ""


if __name__ == "__main__":
    run()
