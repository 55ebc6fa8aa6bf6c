"""Data-construction configs: `get_config(arg)` in bigbench.py, t0.py and jsonl.py; shared knobs in common.py."""
