"""Knobs every data config shares: candidate construction, LLM sampling, tokenization and sharding.

Each data config embeds `candidates()` as `config.candidates` (the fields of
`cappy_jax.data.candidates.CandidateSettings`: `CandidateSettings(**config.candidates)`),
`llm()` as `config.llm` (`cappy_jax.data.llm.make_backend({"name": config.llm.name,
**config.llm[config.llm.name]})` unless the name is "none"), `output()` as `config.output` and
`beam()` as `config.beam`, so the build CLI reads them the same way whatever the source.
"""

from __future__ import annotations

from typing import Any


def candidates() -> dict[str, Any]:
    """Which labelled candidates each Example gets (classification examples: their choices only)."""
    return dict(
        negatives_per_positive=1,      # references of other examples of the same task, label 0.0 (0 = none)
        corruptions_per_reference=0,   # edited copies of a reference, label Rouge-L (0 = none, as the paper)
        include_references=True,       # generation references as 1.0 candidates
        corruption_ops=("delete", "swap", "truncate", "replace"),
        max_edit_fraction=0.25,        # at most this share of a reference's tokens edited per corruption
    )


def llm() -> dict[str, Any]:
    """LLM samples labelled with Rouge-L against the references; none by default (no model offline)."""
    return dict(
        name="none",                   # "none" | "hf" (local transformers dir) | "openai" (compatible server)
        recipe="reference",            # llm.REFERENCE_RECIPE: beam-4 + 4 x 4 samples = 17 responses
        hf=dict(model_dir="", batch_size=8, device="cpu", max_input_tokens=512,
                seed=0,                    # sampling seed (results depend on it only)
                dtype="",                  # "" = the checkpoint's dtype; e.g. "bfloat16" on a GPU
                cache_dir=""),             # "" = no cache; else each batch's samples kept there: a re-run resumes
        openai=dict(base_url="", model="", api_key_env="OPENAI_API_KEY", chat=False, max_concurrency=8,
                    cache_dir="",          # "" = None for make_backend (no on-disk cache)
                    seed=0,                # sent with every request (servers that honour it repeat)
                    server_extensions=True,  # vLLM's top_k/min_tokens/beam search; False for hosted APIs
                    max_retries=5,
                    timeout=60.0),
    )


def output() -> dict[str, Any]:
    """Tokenization and shard layout of the built data."""
    return dict(
        scorer_dir="",                 # scorer directory whose tokenizer/ tokenizes pairs ("" = give it on the CLI)
        max_len=512,                   # tokens per (instruction, response) pair after truncation
        num_shards=64,                 # train shards (at least one per host that reads them)
        eval_shards=4,                 # shards of the validation and heldout splits
        validation_fraction=0.02,      # share of the training tasks' example groups kept for validation
        seed=0,                        # negatives, corruptions, LLM sampling, shuffling, T0's per-dataset caps
        spill_mb=256.0,                # records a build worker holds before writing them to spill files (MB);
                                       # the shards do not depend on it, a build's memory does
        task_buckets=64,               # where tasks may span work units (JSONL), examples reach their task through
                                       # this many spilled buckets; a worker holds one (the shards do not depend on it)
    )


def beam() -> dict[str, Any]:
    """The Beam options a build starts from; Beam flags on the build's command line override them.

    FnApiRunner is Beam's in-process batch runner. `DirectRunner` first tries Prism, a Go runner it
    downloads from GitHub: offline that try fails after leaving a directory in /tmp, online the build runs
    on another runner than the one tested here. A local build's memory is bounded by its largest task and
    shard (examples and records reach their task and shard through spill files, `output.spill_mb`); a
    distributed runner (`--runner=DataflowRunner ...`) spreads the work over machines.
    """
    return dict(
        runner="FnApiRunner",
        direct_num_workers=1,            # 0 = one worker per core (with direct_running_mode="multi_processing")
        direct_running_mode="in_memory",  # "in_memory" | "multi_threading" | "multi_processing"
    )
