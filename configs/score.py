"""Scoring knobs, as data: `get_config('default'|'cpu')`.

Used by the scoring API (`cappy_jax.scoring.Scorer`; `VARIANTS` is read without ml_collections
so the GPU benchmark can import it), `python -m cappy_jax.score`, `boost` and `evaluate`.
A batch holds at most `batch_tokens` token slots: rows of `row_len` tokens packed with pairs
(longest first), narrowed to the smallest width in `widths` that holds its fullest row, so a
workload of short pairs pays neither for padding nor for 512-token rows.
"""

from __future__ import annotations

from typing import Any

DEFAULT: dict[str, Any] = dict(
    max_len=512,          # tokens per (instruction, response) pair after truncation (Cappy's)
    row_len=512,          # tokens per packed row (long rows: attention grows, padding and shape count shrink)
    max_segments=16,      # pairs per row at most
    batch_tokens=16384,   # token slots per batch on this host (rows x width), split over its devices
    widths=(32, 64, 128, 256, 512),  # row widths a batch may take: one compilation each
    chunk_pairs=65536,    # pairs tokenized and packed at once: bounds host memory on huge inputs
    dtype="auto",         # compute dtype: "auto" = bfloat16 on accelerators, float32 on CPU
    attention="auto",     # "auto" = cuDNN on GPU at 16-bit compute, XLA elsewhere; or xla | cudnn | cudnn-ragged
    # "fp8": the encoder's matmuls in float8 e4m3 (per-token and per-output-channel scales), for GPUs with
    # fp8 tensor cores (H100 and newer); scores move slightly (BENCHMARKS.md, "fp8 scoring"). "none": as trained.
    quantize="none",
    # The CLIs (score, evaluate, boost) keep compiled batch shapes here across runs: one per width and row
    # count, each tens of seconds for roberta-large on a GPU. "" = off. The Scorer API leaves this to its caller.
    compilation_cache_dir="~/.cache/cappy_jax/xla",
)

VARIANTS: dict[str, dict[str, Any]] = {
    "default": DEFAULT,
    # Smaller batches: the first batch returns sooner and memory stays low on a laptop.
    "cpu": dict(DEFAULT, batch_tokens=4096),
}


def get_config(variant: str = "default") -> "ml_collections.ConfigDict":
    import ml_collections  # here, so VARIANTS imports where ml_collections is absent (GPU bench)

    if variant not in VARIANTS:
        raise ValueError(f"unknown score variant {variant!r}; choose one of {sorted(VARIANTS)}")
    config = ml_collections.ConfigDict(VARIANTS[variant])
    config.lock()
    return config
