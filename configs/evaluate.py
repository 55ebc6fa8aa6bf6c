"""The evaluation harness (`python -m cappy_jax.evaluate`), as data: `get_config(variant)`.

Variants (the data config, and which of its units are evaluated):
- bigbench_choice: `configs/data/bigbench.py:default`'s held-out tasks, multiple-choice examples
  (`navigate` by default; set `--config.data.heldout_tasks`);
- bigbench_generation: the same held-out tasks, generation examples (`repeat_copy_logic`), each
  scored by Rouge-L of the candidate the scorer picks among an LLM's samples (`llm` below);
- bigbench_downstream: after adapting a scorer to a task with `configs/data/bigbench.py:downstream`,
  the task's test examples: the build's `validation` split (same seed and fraction), generation
  suite (set `--config.data.tasks` as for the build, and the LLM);
- demo: the demo's held-out BIG-bench tasks (`configs/data/demo.py`; `data.dir` is set by the demo);
- t0: `configs/data/t0.py:heldout`, T0's held-out tasks (ANLI R1/R2/R3, CB, RTE, COPA,
  HellaSwag, StoryCloze, WSC, WiC, Winogrande; original-task templates, validation splits);
- t0_cappy: the Cappy paper's table of 11 held-out tasks (ANLI R1/R2/R3, CB, RTE, StoryCloze, WSC,
  WiC, Winogrande, WinoGender = super_glue/axg, CrowS-Pairs) with every template: CrowS-Pairs has
  no original-task template in PromptSource 0.2.3, and the choice suite keeps only the examples
  with answer choices, so generation templates drop out;
- jsonl: JSONL files (`data.paths`, or `--data DIR` for DIR/*.jsonl); all units, since a JSONL
  config holds nothing out unless `data.heldout_tasks` is set.

`data` is the data config the builder uses, less its build-only blocks (`candidates`, `llm`, `beam`,
`output` but for `output.seed`, which seeds PromptSource's random filters, and
`output.validation_fraction`, which with the seed finds the build's validation examples). Override anything on
the command line, e.g. `--config.suite=generation --config.units=all --config.scoring.batch_tokens=4096`.
"""

from __future__ import annotations

from typing import Any

import ml_collections

from configs import score as score_configs
from configs.data import bigbench as bigbench_configs
from configs.data import common
from configs.data import demo as demo_configs
from configs.data import jsonl as jsonl_configs
from configs.data import t0 as t0_configs

SUITES = ("choice", "generation")
UNITS = ("heldout", "validation", "all")

# The Cappy paper's 11 held-out PromptSource tasks (ANLI counts once per round: split_names).
CAPPY_HELDOUT = (
    ("anli", 162865), ("super_glue/cb", 250), ("super_glue/rte", 2490), ("story_cloze/2016", 0),
    ("super_glue/wsc.fixed", 554), ("super_glue/wic", 5428), ("winogrande/winogrande_xl", 40398),
    ("super_glue/axg", 0), ("crows_pairs", 0),
)

VARIANTS: dict[str, dict[str, Any]] = {
    "bigbench_choice": dict(suite="choice", data=("bigbench", "default"), units="heldout"),
    "bigbench_generation": dict(suite="generation", data=("bigbench", "default"), units="heldout"),
    "demo": dict(suite="choice", data=("demo", "default"), units="heldout"),
    "bigbench_downstream": dict(suite="generation", data=("bigbench", "downstream"), units="validation"),
    "t0": dict(suite="choice", data=("t0", "heldout"), units="heldout"),
    "t0_cappy": dict(suite="choice", data=("t0", "heldout"), units="heldout",
                     data_overrides=dict(datasets=CAPPY_HELDOUT, templates="all")),
    "jsonl": dict(suite="choice", data=("jsonl", ""), units="all"),
}
DATA_MODULES = {"demo": demo_configs, "bigbench": bigbench_configs, "t0": t0_configs, "jsonl": jsonl_configs}
BUILD_ONLY = ("candidates", "llm", "output", "beam")


def data_config(module: str, arg: str, **overrides: Any) -> dict[str, Any]:
    """A data config as a plain dict, without the build-only blocks (see the module docstring)."""
    data = DATA_MODULES[module].get_config(arg).to_dict()
    output = {k: data["output"][k] for k in ("seed", "validation_fraction")}
    for key in BUILD_ONLY:
        data.pop(key)
    unknown = sorted(set(overrides) - set(data))
    if unknown:
        raise ValueError(f"data config {module}:{arg} has no {unknown}")
    data.update(overrides)
    data["output"] = output
    return data


def get_config(variant: str = "bigbench_choice") -> ml_collections.ConfigDict:
    if variant not in VARIANTS:
        raise ValueError(f"unknown evaluate variant {variant!r}; choose one of {sorted(VARIANTS)}")
    v = VARIANTS[variant]
    config = ml_collections.ConfigDict(dict(
        suite=v["suite"],                  # "choice" | "generation"
        data=data_config(*v["data"], **v.get("data_overrides", {})),
        # "heldout": the data config's held-out units only (an error if none) | "validation": the build's
        # validation examples of the other units (a downstream task's test set) | "all"
        units=v["units"],
        max_examples_per_task=0,           # 0 = all; else the first N examples of the suite's kind per task
        scoring=dict(score_configs.VARIANTS["default"]),  # the scorer's batching knobs (configs/score.py)
        llm=common.llm(),                         # generation: the LLM whose samples are reranked ("none" = an error)
        self_score=True,                   # generation: ll_sum/ll_mean baselines when the backend has log_likelihood
        plots=True,                        # PNG plots next to report.md
    ))
    config.lock()
    return config
