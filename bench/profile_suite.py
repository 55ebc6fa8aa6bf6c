"""Suite `profile`: where one training step's time goes, from a `jax.profiler` trace.

    python -m bench.run --suite profile [--cases tiny,large] [--steps N]

The step of `train-shape` (same shapes, same compiled function) runs `steps` times under
`jax.profiler.trace`. The trace's operation events (a GPU's kernels, a CPU's thunks) carry the
optimized HLO instruction they ran (`hlo_op`); the compiled module's text maps each instruction,
and the instructions fused into it, to JAX name stacks (`.../layer_3/attention/query/dot_general`,
`.../optimizer/...`, `transpose(jvp(...))` for the backward pass). Each event's time goes to one
part, first match wins:

- `attention`: the attention core under a layer's `attention/` scope (scores, mask, softmax,
  weighted sum, or cuDNN's fused kernel), not its q/k/v/out projections;
- `matmuls`: every other matrix product (projections, FFN, head);
- `layer norms`, `dropout` (its random bits and masking), `optimizer` (`train.py` names that scope);
- `other`: embeddings gathers, GELU, residual adds, loss, casts, copies.

Per part: milliseconds per step, forward and backward, share of the step. Two more rows:
`idle` (the timed step minus the device's busy time: launch gaps and host waits) and
`host input` (packing one batch of real pair lengths on the host and copying it to the device,
single-threaded; the training loop prefetches it, so it hides behind the step while smaller).
Needs neither TensorFlow nor ml_collections.
"""

from __future__ import annotations

import collections
import gzip
import json
import os
import pathlib
import re
import statistics
import tempfile
import time
from collections.abc import Iterable, Mapping
from typing import Any

import jax
import numpy as np

from bench import train_throughput
from bench.report import Column
from bench.score_suite import load_lengths, random_pairs
from cappy_jax import packing

CASES = train_throughput.CASES
DEFAULT_STEPS = {"tiny": 3, "large": 5, "large-scan": 5, "deep": 2, "deep-scan": 2}
DEFAULT_WARMUP = 2
PARTS = ("attention", "matmuls", "layer norms", "dropout", "optimizer", "other")
CONTROL_OPS = ("while", "conditional", "call", "async-start", "async-done")  # containers, not work

NOTE = ("the train-shape step traced with jax.profiler over `steps` steps; device time of each HLO operation "
        "attributed by its JAX name stack (attention = the attention core, not its projections); ms per step; "
        "share = of the median timed step (on a CPU, ops run on several threads at once and slower under the "
        "profiler, so busy can exceed the step); idle = step minus device-busy time; host input = packing one "
        "batch of real pair lengths and device_put, one host thread (prefetched in training)")

COLUMNS = (
    Column("case", "case"),
    Column("device", "device_kind"),
    Column("part", "part"),
    Column("ms/step", "ms_per_step", ".2f"),
    Column("forward ms", "forward_ms", ".2f"),
    Column("backward ms", "backward_ms", ".2f"),
    Column("share of step", "share_percent", ".1f"),
    Column("ops/step", "ops_per_step", ",.0f"),
)

_INSTR = re.compile(r"^\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=\s*[^=]*?\s([a-z][\w\-]*)\(")
_CALLS = re.compile(r"(?:calls|to_apply|body|condition)=%?([\w.\-]+)")
_OP_NAME = re.compile(r'op_name="([^"]*)"')
_COMPUTATION = re.compile(r"^(?:ENTRY\s+)?%?([\w.\-]+)\s.*\{\s*$")
_COMMENT = re.compile(r"/\*.*?\*/")  # e.g. /*index=5*/ inside tuple shapes, whose '=' would end a match


def hlo_instructions(hlo_text: str) -> dict[str, dict[str, Any]]:
    """Instruction name -> {opcode, op_names (its own and those of what it calls)}. Pure."""
    instructions: dict[str, dict[str, Any]] = {}
    by_computation: dict[str, list[str]] = collections.defaultdict(list)
    calls: dict[str, list[str]] = {}
    computation = ""
    for line in hlo_text.splitlines():
        if not line.startswith(" "):
            m = _COMPUTATION.match(line)
            if m:
                computation = m.group(1)
            continue
        m = _INSTR.match(_COMMENT.sub("", line))
        if not m:
            continue
        name, opcode = m.group(1), m.group(2)
        names = _OP_NAME.findall(line)
        instructions[name] = {"opcode": opcode, "op_names": names}
        by_computation[computation] += names
        calls[name] = _CALLS.findall(line)
    for name, callees in calls.items():
        if instructions[name]["opcode"] in CONTROL_OPS:
            continue  # a loop's time is its body's events; do not fold the body into it
        for callee in callees:
            instructions[name]["op_names"] = instructions[name]["op_names"] + by_computation.get(callee, [])
    return instructions


def _attention_core(name: str) -> bool:
    parts = name.split("/")
    for i, p in enumerate(parts[:-1]):
        if p == "attention":
            return parts[i + 1] not in ("query", "key", "value", "out")
    return False


def classify(op_names: Iterable[str], opcode: str = "", event_name: str = "") -> str:
    """The part of the step an operation belongs to (module docstring), from its name stacks. Pure."""
    names = list(op_names)
    text = " ".join(names).lower()
    if "/optimizer/" in text or text.startswith("optimizer/"):
        return "optimizer"
    kernel = event_name.lower()
    if any(_attention_core(n) for n in names) or "fmha" in kernel or "flash" in kernel:
        return "attention"
    if ("dot_general" in text or opcode in ("dot", "convolution") or "gemm" in kernel or "cublas" in kernel
            or "cutlass" in kernel or "nvjet" in kernel or "xmma" in kernel):
        return "matmuls"
    if "_norm/" in text or "layer_norm" in text or "layernorm" in text:
        return "layer norms"
    if "dropout" in text:
        return "dropout"
    return "other"


def backward(op_names: Iterable[str]) -> bool:
    return any("transpose(" in n for n in op_names)


def trace_events(trace_dir: str | pathlib.Path) -> list[dict[str, Any]]:
    """The complete ("X") events of the perfetto trace `jax.profiler.trace` wrote, with process names."""
    files = sorted(pathlib.Path(trace_dir).rglob("perfetto_trace.json.gz"))
    if not files:
        raise RuntimeError(f"jax.profiler wrote no perfetto_trace.json.gz under {trace_dir}")
    with gzip.open(files[-1], "rt") as f:
        data = json.load(f)
    events = data["traceEvents"] if isinstance(data, dict) else data
    procs = {e["pid"]: e.get("args", {}).get("name", "") for e in events
             if e.get("ph") == "M" and e.get("name") == "process_name"}
    out = []
    for e in events:
        if e.get("ph") == "X" and "dur" in e:
            out.append({**e, "process": procs.get(e.get("pid"), "")})
    return out


def op_events(events: list[dict[str, Any]], module: str) -> list[dict[str, Any]]:
    """Events of `module`'s operations: on an accelerator its device's, on a CPU the host's thunks.

    Kernels an accelerator ran without an `hlo_op` annotation (e.g. replayed from a CUDA graph)
    come back too, with `hlo_op` empty: `classify` then goes by the kernel's name alone.
    """
    mine = [e for e in events if e.get("args", {}).get("hlo_module") == module and e.get("args", {}).get("hlo_op")]
    device = [e for e in mine if _on_device(e)]
    if device:
        return _first_device(device)
    kernels = [{**e, "args": {**e.get("args", {}), "hlo_op": ""}} for e in events
               if _on_device(e) and not e.get("args", {}).get("hlo_op") and "memcpy" not in e.get("name", "").lower()]
    return _first_device(kernels or mine)


def _on_device(e: Mapping[str, Any]) -> bool:
    return "/device:" in e["process"] and "/host:" not in e["process"]


def _first_device(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One device's events (data parallel: every device runs the same step), so times are per device."""
    if not events:
        return events
    if _on_device(events[0]):
        first = min(e["process"] for e in events)
        return [e for e in events if e["process"] == first]
    ordinals = {str(e["args"].get("device_ordinal", "")) for e in events}
    first = min(ordinals, key=lambda o: (not o.isdigit(), int(o) if o.isdigit() else 0))
    return [e for e in events if str(e["args"].get("device_ordinal", "")) == first]


def summarize(events: list[dict[str, Any]], instructions: Mapping[str, Mapping[str, Any]], steps: int,
              step_s: float) -> list[dict[str, Any]]:
    """Per part: ms per step, forward/backward split, share of the step. Pure."""
    total = collections.defaultdict(float)
    fwd = collections.defaultdict(float)
    bwd = collections.defaultdict(float)
    count = collections.Counter()
    for e in events:
        op = e["args"].get("hlo_op", "")
        info = instructions.get(op, {"opcode": "", "op_names": []})
        if info["opcode"] in CONTROL_OPS:
            continue
        part = classify(info["op_names"], info["opcode"], e.get("name", ""))
        ms = e["dur"] / 1e3 / steps
        total[part] += ms
        if part != "optimizer":  # the update is neither pass
            (bwd if backward(info["op_names"]) else fwd)[part] += ms
        count[part] += 1
    step_ms = 1e3 * step_s
    rows = [{"part": p, "ms_per_step": total[p], "forward_ms": None if p == "optimizer" else fwd[p],
             "backward_ms": None if p == "optimizer" else bwd[p],
             "share_percent": 100 * total[p] / step_ms, "ops_per_step": count[p] / steps} for p in PARTS]
    busy = sum(total.values())
    rows.append({"part": "device busy", "ms_per_step": busy, "forward_ms": sum(fwd.values()),
                 "backward_ms": sum(bwd.values()), "share_percent": 100 * busy / step_ms,
                 "ops_per_step": sum(count.values()) / steps})
    rows.append({"part": "idle", "ms_per_step": max(0.0, step_ms - busy),
                 "share_percent": 100 * max(0.0, step_ms - busy) / step_ms})
    return rows


def host_input_ms(rows: int, seq_len: int, vocab: int, devices: list, repeats: int = 5) -> float:
    """Packing one batch of real pair lengths into `rows` x `seq_len` and putting it on the devices."""
    from cappy_jax import sharding as sharding_lib

    lengths = [min(n, seq_len) for n in load_lengths(4096)]
    ids, types_ = random_pairs(lengths, vocab)
    packed = packing.pack_lengths(lengths, seq_len, 16)[:rows]
    sh = sharding_lib.accum_batch_sharding(sharding_lib.make_mesh({"data": -1}, devices=devices))
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        b = packing.make_batch(ids, types_, packed, max_len=seq_len, max_segments=16, pad_id=1,
                               labels=np.zeros(len(lengths), np.float32), num_rows=rows)
        b.pop("pair_index")
        jax.block_until_ready({k: jax.device_put(v[None], sh) for k, v in b.items()})
        times.append(time.perf_counter() - t)
    return 1e3 * statistics.median(times)


def measure(case: str, *, steps: int, warmup: int, attention: str | None = None) -> list[dict[str, Any]]:
    p = train_throughput.prepare(case, attention=attention)
    state, out, step_s = train_throughput.timed_steps(p, steps=steps, warmup=warmup)
    rng = jax.random.key(0)
    hlo = p.compiled.as_text()
    module = re.match(r"HloModule\s+([\w.\-]+)", hlo).group(1)
    with tempfile.TemporaryDirectory() as trace_dir:
        with jax.profiler.trace(trace_dir, create_perfetto_trace=True):
            for _ in range(steps):
                state, out = p.compiled(state, p.batch, rng)
            jax.block_until_ready(out["loss"])
        events = op_events(trace_events(trace_dir), module)
    if not events:
        raise RuntimeError(f"the trace holds no operation of {module}: the profiler recorded no device activity")
    rows = summarize(events, hlo_instructions(hlo), steps, step_s)
    kind = p.devices[0].device_kind
    host_ms = host_input_ms(p.rows, p.seq_len, p.mcfg.vocab_size, p.devices)
    rows.append({"part": "host input", "ms_per_step": host_ms, "share_percent": 100 * host_ms / (1e3 * step_s)})
    rows.append({"part": "step (timed)", "ms_per_step": 1e3 * step_s, "share_percent": 100.0,
                 "mfu_percent": train_throughput.mfu_percent(p, step_s)})
    common = {"case": case, "device_kind": kind, "devices": len(p.devices), "batch": f"{p.rows}×{p.seq_len}",
              "dtype": p.dtype, "attention": p.mcfg.attention_impl(), "steps": steps, "step_s": step_s,
              "xla_flags": os.environ.get("XLA_FLAGS", ""), "attributed": bool(events[0]["args"]["hlo_op"])}
    return [{**common, **r} for r in rows]


def run(*, steps: int | None = None, warmup: int | None = None, cases: list[str] | None = None,
        attention: str | None = None) -> list[dict]:
    if cases is None:
        cases = ["tiny"] if jax.default_backend() == "cpu" else ["large"]
    return [r for c in cases for r in measure(c, steps=steps or DEFAULT_STEPS[c],
                                              warmup=DEFAULT_WARMUP if warmup is None else warmup,
                                              attention=attention)]
