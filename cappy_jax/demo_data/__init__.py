"""Package data of the demo: a curated subset of BIG-bench (see README.md here and `make_demo_data.py`)."""

from __future__ import annotations

from pathlib import Path


def bigbench_dir() -> Path:
    """The curated BIG-bench tasks, laid out as `cappy_jax.data.fetch` writes them (<task>/task.json)."""
    return Path(__file__).resolve().parent / "bigbench"
