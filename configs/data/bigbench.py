"""BIG-bench data, as data: `get_config('default'|'lite'|'generation'|'all')`.

The tasks come from `python -m cappy_jax.data.fetch bigbench --dest data/bigbench` (the JSON
tasks of the bigbench 1.0.0 sdist) and are read by `cappy_jax.data.sources.bigbench.read_tasks`.
Variants:
- default: a handful of small tasks of each kind, for smoke runs and tests of the pipeline;
- lite: BIG-bench Lite (the 24 JSON tasks of bigbench/bbseqio/bigbench_lite.py);
- generation: the 46 JSON tasks of 1.0.0 whose examples are all generation (`task_kind`), the
  kind of task Cappy's BIG-bench adaptation scores;
- all: every JSON task (an empty task list means all).
- downstream: adapting a scorer to one task, as the reference's BIG-bench experiment: give the task
  (`--config.tasks="('word_sorting',)"`) and an LLM (`--config.llm.name=hf
  --config.llm.hf.model_dir=...`); references 1.0, one other example's reference 0.0, the LLM's 17
  samples labelled by Rouge-L; a fifth of the examples go to `validation`, the task's test examples
  (`python -m cappy_jax.evaluate --config configs/evaluate.py:bigbench_generation --config.split=validation`
  finds the same ones).
Override on the command line as usual, e.g. `--config.tasks='("navigate","word_sorting")'`.
"""

from __future__ import annotations

import ml_collections

from configs.data import common

# A task name is a directory under `dir` (`task`) or one subtask (`task:subtask`).
DEFAULT_TASKS = (
    "date_understanding",            # choice
    "logical_deduction",             # choice, 3 subtasks
    "strategyqa",                    # choice (also has explanation targets)
    "object_counting",               # generation
    "word_sorting",                  # generation
    "linguistics_puzzles",           # generation
)
DEFAULT_HELDOUT = (
    "navigate",                      # choice
    "repeat_copy_logic",             # generation
)

LITE_TASKS = (
    "auto_debugging", "bbq_lite_json", "code_line_description", "conceptual_combinations",
    "conlang_translation", "emoji_movie", "formal_fallacies_syllogisms_negation", "hindu_knowledge",
    "known_unknowns", "language_identification", "linguistics_puzzles", "logic_grid_puzzle",
    "logical_deduction", "misconceptions_russian", "novel_concepts", "operators",
    "parsinlu_reading_comprehension", "play_dialog_same_or_different", "repeat_copy_logic",
    "strange_stories", "strategyqa", "symbol_interpretation", "vitaminc_fact_verification", "winowhy",
)

GENERATION_TASKS = (
    "ascii_word_recognition", "auto_categorization", "auto_debugging", "bridging_anaphora_resolution_barqa",
    "chess_state_tracking", "chinese_remainder_theorem", "codenames", "conlang_translation", "cryptonite",
    "disfl_qa", "few_shot_nlg", "gem", "gender_inclusive_sentences_german", "hindi_question_answering",
    "international_phonetic_alphabet_transliterate", "language_games", "linguistic_mappings",
    "linguistics_puzzles", "list_functions", "matrixshapes", "modified_arithmetic", "mult_data_wrangling",
    "natural_instructions", "object_counting", "operators", "paragraph_segmentation",
    "parsinlu_reading_comprehension", "physics_questions", "polish_sequence_labeling", "qa_wikidata",
    "repeat_copy_logic", "rephrase", "scientific_press_release", "semantic_parsing_in_context_sparc",
    "semantic_parsing_spider", "simp_turing_concept", "simple_arithmetic_json", "simple_arithmetic_json_subtasks",
    "simple_arithmetic_multiple_targets_json", "simple_text_editing", "sufficient_information", "tense",
    "topical_chat", "unnatural_in_context_learning", "word_sorting", "word_unscrambling",
)

VARIANTS = {
    "default": dict(tasks=DEFAULT_TASKS, heldout_tasks=DEFAULT_HELDOUT),
    "lite": dict(tasks=LITE_TASKS, heldout_tasks=()),
    "generation": dict(tasks=GENERATION_TASKS, heldout_tasks=()),
    "all": dict(tasks=(), heldout_tasks=()),
    "downstream": dict(tasks=(), heldout_tasks=(), validation_fraction=0.2, llm_name="hf"),
}


def get_config(variant: str = "default") -> ml_collections.ConfigDict:
    if variant not in VARIANTS:
        raise ValueError(f"unknown bigbench data variant {variant!r}; choose one of {sorted(VARIANTS)}")
    v = VARIANTS[variant]
    config = ml_collections.ConfigDict(dict(
        source="bigbench",
        dir="data/bigbench",               # fetch DEST: <dir>/<task>/task.json, <dir>/<task>/<subtask>/task.json
        tasks=tuple(v["tasks"]),           # tasks to build training data from; () = every JSON task under dir
        heldout_tasks=tuple(v["heldout_tasks"]),  # evaluation-only: removed from the training tasks (also when tasks=())
        max_examples_per_task=0,           # 0 = all; else the first N (split evenly over subtasks, as BIG-bench)
        choice_order="bigbench",           # order of appended choices: "bigbench" (its seeded shuffle) | "sorted" | "file"
        # 1.0.0 has ~100 examples Cappy cannot use (empty prompts in cause_and_effect:one_sentence_no_prompt
        # and misconceptions_russian, a few empty targets, one task with no correct choice): skip and count them.
        skip_bad=True,
        candidates=common.candidates(),
        llm=common.llm(),
        output=common.output(),
        beam=common.beam(),
    ))
    if "validation_fraction" in v:
        config.output.validation_fraction = v["validation_fraction"]
    if "llm_name" in v:
        config.llm.name = v["llm_name"]
    config.lock()
    return config
