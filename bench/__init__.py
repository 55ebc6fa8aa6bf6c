"""Benchmarks of cappy_jax, run through one entry point: `python -m bench.run --suite NAME`.

Each suite lives in its own module, imported only when it runs, so a suite's heavy
dependencies (torch, transformers) load only for the suites that need them.
Results go to a JSON-lines file and, as a dated table, to `BENCHMARKS.md`.
"""
