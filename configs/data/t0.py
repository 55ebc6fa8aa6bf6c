"""T0's prompted mixture, the data Cappy pretrains on, as data: `get_config('train'|'heldout'|'bias')`.

Templates come from `python -m cappy_jax.data.fetch promptsource --dest data/promptsource`
(promptsource 0.2.3) and are applied by `cappy_jax.data.sources.promptsource`; rows come from
Hugging Face datasets (T0 read them with `datasets.load_dataset(name, subset)`, and the templates
use HF field names), from TFDS where its fields agree, or from JSONL files laid out as
`<rows.jsonl_dir>/<dataset>[/<subset>]/<split>.jsonl`.

The lists follow bigscience-workshop/t-zero `t0/datasets.csv` (`do_train == BASE` is T0's
training mixture `d4_train`; `do_eval == BASE` its held-out evaluation; `BIAS_FAIRNESS` its bias
evaluation) and `t0/seqio_tasks/tasks.py` (every template of a training dataset is used; a
dataset with more than 500k training rows gives each of its templates 500k / #templates rows;
the task blacklist). Two names differ from the T0 paper's table: its "CommonsenseQA" is
`cos_e/v1.11` and its closed-book "Hotpot QA" is `kilt_tasks/hotpotqa`.
Variants:
- train: the 38 training datasets, all templates, split "train";
- heldout: the 11 held-out tasks of T0 and Cappy (ANLI R1/R2/R3, CB, RTE, COPA, HellaSwag,
  StoryCloze, WSC, WiC, Winogrande), original-task templates only, split "validation";
- bias: T0's bias and fairness sets (CrowS-Pairs, WinoGender = super_glue/axg, WinoBias).
  jigsaw_toxicity_pred is left out: promptsource 0.2.3 has no templates for it.
"""

from __future__ import annotations

import ml_collections

from configs.data import common

# (promptsource dataset[/subset], train rows per T0's datasets.csv): the training mixture.
TRAIN = (
    # multiple-choice QA
    ("cos_e/v1.11", 9741), ("cosmos_qa", 25262), ("dream", 6116), ("qasc", 8134), ("quail", 10246),
    ("quarel", 1941), ("quartz", 2696), ("sciq", 11679), ("social_i_qa", 33410), ("wiki_hop/original", 43738),
    ("wiqa", 29808),
    # extractive QA
    ("adversarial_qa/dbidaf", 10000), ("adversarial_qa/dbert", 10000), ("adversarial_qa/droberta", 10000),
    ("duorc/SelfRC", 60721), ("duorc/ParaphraseRC", 69524), ("ropes", 10924), ("quoref", 19399),
    # closed-book QA
    ("kilt_tasks/hotpotqa", 88869), ("wiki_qa", 20360),
    # sentiment
    ("amazon_polarity", 3600000), ("app_reviews", 288065), ("imdb", 25000), ("rotten_tomatoes", 8530),
    ("yelp_review_full", 650000),
    # structure to text
    ("common_gen", 67389), ("wiki_bio", 582659),
    # summarization
    ("cnn_dailymail/3.0.0", 287113), ("gigaword", 3803957), ("multi_news", 44972), ("samsum", 14732),
    ("xsum", 204045),
    # topic classification
    ("ag_news", 120000), ("dbpedia_14", 560000), ("trec", 5452),
    # paraphrase identification
    ("glue/mrpc", 3668), ("glue/qqp", 363846), ("paws/labeled_final", 49401),
)

# The 11 held-out tasks (ANLI counts once per round; see split_names).
HELDOUT = (
    ("anli", 162865), ("super_glue/cb", 250), ("super_glue/rte", 2490),                       # NLI
    ("super_glue/copa", 400), ("hellaswag", 39905), ("story_cloze/2016", 0),                  # sentence completion
    ("super_glue/wsc.fixed", 554), ("winogrande/winogrande_xl", 40398),                      # coreference
    ("super_glue/wic", 5428),                                                                 # word sense
)

BIAS = (
    ("crows_pairs", 0), ("super_glue/axg", 0),
    ("wino_bias/type1_anti", 0), ("wino_bias/type2_anti", 0), ("wino_bias/type1_pro", 0), ("wino_bias/type2_pro", 0),
)

# Split names that are not train/validation/test, by dataset: each listed split is its own task,
# named with the round as T0 did (`<task>_r1`, ...). CrowS-Pairs and AX-g only have a test split.
SPLIT_NAMES = {
    "anli": dict(train=("train_r1", "train_r2", "train_r3"), validation=("dev_r1", "dev_r2", "dev_r3"),
                 test=("test_r1", "test_r2", "test_r3")),
    "crows_pairs": dict(validation=("test",)),
    "super_glue/axg": dict(validation=("test",)),
}

# T0's TASK_BLACKLIST entries (by `promptsource.task_name`) that touch these datasets.
EXCLUDE_TEMPLATES = ("gigaword_summarize_",)

VARIANTS = {
    "train": dict(datasets=TRAIN, split="train", templates="all"),
    "heldout": dict(datasets=HELDOUT, split="validation", templates="original_task"),
    "bias": dict(datasets=BIAS, split="validation", templates="all"),
}


def _names(pairs: tuple[tuple[str, int], ...]) -> tuple[str, ...]:
    return tuple(name for name, _ in pairs)


def get_config(variant: str = "train") -> ml_collections.ConfigDict:
    if variant not in VARIANTS:
        raise ValueError(f"unknown t0 data variant {variant!r}; choose one of {sorted(VARIANTS)}")
    v = VARIANTS[variant]
    config = ml_collections.ConfigDict(dict(
        source="promptsource",
        templates_dir="data/promptsource",   # fetch DEST: <templates_dir>/<dataset>[/<subset>]/templates.yaml
        # (dataset[/subset], T0's train-set size): what to build; `dict(config.datasets)` for sizes.
        datasets=tuple(v["datasets"]),
        # Never built into training data: the evaluation and bias sets. The build refuses an overlap.
        heldout=_names(HELDOUT) + _names(BIAS),
        split=v["split"],                    # "train" | "validation" | "test", mapped by split_names where listed
        split_names=SPLIT_NAMES,
        templates=v["templates"],            # "all" (T0 training) | "original_task" (T0 evaluation prompts)
        exclude_templates=EXCLUDE_TEMPLATES,
        # T0's mixing cap: a dataset with more train rows than this gives each template cap // #templates
        # rows (the first ones after a seeded shuffle); smaller datasets are used whole by every template.
        max_examples_per_dataset=500_000,
        truncate=2048,                       # promptsource truncates every {{ field }} to this many characters; 0 = off
        skip_bad=True,                       # rows a template cannot render into an Example: skip and count
        rows=dict(
            backend="hf",                    # "hf" (datasets.load_dataset) | "tfds" | "jsonl"
            jsonl_dir="",                    # for "jsonl": <jsonl_dir>/<dataset>[/<subset>]/<split>.jsonl
            tfds_data_dir="",                # for "tfds": its data_dir ("" = TFDS default)
            story_cloze_data_dir="",         # HF story_cloze needs the manually downloaded CSVs (data_dir)
        ),
        candidates=common.candidates(),
        llm=common.llm(),
        output=common.output(),
        beam=common.beam(),
    ))
    config.lock()
    return config
