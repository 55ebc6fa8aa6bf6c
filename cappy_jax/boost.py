"""Boosting an LLM without touching its weights: sample candidates, let the scorer pick the best.

    python -m cappy_jax.boost --checkpoint CKPT --llm hf --llm_model LLM_DIR \\
        --input tasks.jsonl --output out.jsonl [--config.llm.hf.device=cuda ...]
    python -m cappy_jax.boost --hf cappy-large --llm openai --llm_base_url http://host:8000/v1 \\
        --llm_model NAME --input tasks.jsonl --output out.jsonl

`rerank(scorer, backend, instructions)` is the core (pure apart from the backend's sampling):
the backend samples the decoding recipe's responses (beam search + samples, `cappy_jax.data.llm`),
the scorer scores every non-empty one, and each selection method picks one candidate:

- `cappy`: the highest scorer score (ties: lowest index);
- `beam`: the beam-search output (the first candidate of a beam mode);
- `first_<mode>`: the first sample of each sampling mode (what plain decoding would return);
- `ll_sum` / `ll_mean`: the LLM's own log-likelihood of the response, summed or per token
  (only with a backend that has `log_likelihood`, such as `hf`).

Every method chooses among the same candidates of the same run, so they compare fairly. Samples
are stripped of surrounding whitespace (as the training data's LLM candidates are); `cappy` and the
self-scoring methods never pick an empty response (the first-of-mode baselines return what decoding
returned, empty or not).

`boost_file` runs this over a JSONL file (the CLI): input records hold `instruction` (a non-empty
string), optionally `references` (a string or a list of non-empty strings) and any other fields,
which pass through. The whole input is validated before any sampling, then processed
`batch_instructions` at a time; records stream into `OUT.partial`, renamed to `OUT` at the end, so
`OUT` is never half-written. Each output record is the input plus `Reranked.to_json()`
(`candidates`, `best`, `response`, `baselines`); with references, every candidate and every
method's pick also get `rouge_l`, and the record `oracle_rouge_l` (its best candidate's). The
summary (printed, and written to `OUT` with the suffix `.summary.json`) has each method's mean
Rouge-L over the records with references (a method that picked nothing counts 0) and the oracle's,
an upper bound for any reranker of these candidates.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import logging
import math
import os
import pathlib
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from cappy_jax import cli
from cappy_jax.data import llm as llm_lib
from cappy_jax.data.rouge import rouge_l_batch

log = logging.getLogger("cappy_jax.boost")

CAPPY = "cappy"
LL_SUM = "ll_sum"
LL_MEAN = "ll_mean"
ORACLE = "oracle"

# Recipes by the name data configs use (`config.llm.recipe`).


@dataclasses.dataclass(frozen=True)
class Reranked:
    """One instruction: its candidates (recipe order) and each method's pick (an index, or None)."""

    instruction: str
    texts: tuple[str, ...]
    modes: tuple[str, ...]
    scores: np.ndarray                 # float32 [K]; NaN for empty responses (never picked)
    ll_sum: np.ndarray | None          # float64 [K] (NaN for empty responses), or None without self-scoring
    ll_mean: np.ndarray | None
    picks: dict[str, int | None]

    def to_json(self) -> dict[str, Any]:
        """Plain JSON: the candidates with their numbers, and each method's pick and text."""
        def num(x: Any) -> float | None:
            return None if x is None or not math.isfinite(float(x)) else float(x)

        candidates = [{"text": t, "mode": m, "score": num(self.scores[k]),
                       **({"ll_sum": num(self.ll_sum[k]), "ll_mean": num(self.ll_mean[k])}
                          if self.ll_sum is not None else {})}
                      for k, (t, m) in enumerate(zip(self.texts, self.modes))]
        return {"candidates": candidates, "best": self.picks[CAPPY],
                "response": self.texts[self.picks[CAPPY]] if self.picks[CAPPY] is not None else None,
                "baselines": {name: {"index": i, "response": None if i is None else self.texts[i]}
                              for name, i in self.picks.items() if name != CAPPY}}


def methods(recipe: Sequence[llm_lib.DecodingMode], *, self_score: bool) -> list[str]:
    """The selection methods a run reports, in report order."""
    names = [CAPPY]
    names += ["beam" if m.is_beam else f"first_{m.name}" for m in recipe]
    if self_score:
        names += [LL_SUM, LL_MEAN]
    return list(dict.fromkeys(names))


def _argmax(values: np.ndarray) -> int | None:
    """Lowest index of the largest finite value; None when no value is finite."""
    finite = np.isfinite(values)
    if not finite.any():
        return None
    return int(np.argmax(np.where(finite, values, -np.inf)))


def self_scoring(backend: Any, requested: bool) -> tuple[bool, str | None]:
    """Whether self-scoring can run on `backend`, and a note when it was requested but cannot.

    Backends reached over HTTP only return text, so their baselines are the ones without
    log-likelihoods; the run goes on instead of failing, and the note says why they are missing.
    """
    if not requested:
        return False, None
    if hasattr(backend, "log_likelihood"):
        return True, None
    return False, (f"self-scoring (ll_sum, ll_mean) is off: {backend!r} has no log_likelihood; "
                   f"use the hf backend for these baselines")


def rerank(scorer: Any, backend: llm_lib.Backend, instructions: Sequence[str], *,
           recipe: Sequence[llm_lib.DecodingMode] = llm_lib.REFERENCE_RECIPE, self_score: bool = True,
           progress: Any = None) -> list[Reranked]:
    """Samples, scores and picks for every instruction (see the module docstring).

    `scorer` is a `cappy_jax.scoring.Scorer` (anything with `score(pairs, progress=)`); `self_score`
    needs `backend.log_likelihood` (see `self_scoring`). `progress(n)` is called as candidates are
    done: n over all calls adds up to every candidate (the recipe's count per instruction).
    """
    instructions = list(instructions)
    if self_score and not hasattr(backend, "log_likelihood"):
        raise ValueError(f"{backend!r} cannot score its own samples (no log_likelihood): "
                         f"pass self_score=False (--noself_score) or use the hf backend")
    samples = backend.generate(instructions, recipe)
    if len(samples) != len(instructions):
        raise ValueError(f"{backend!r} returned {len(samples)} candidate lists for {len(instructions)} instructions")
    for inst, cands in zip(instructions, samples):
        if not cands:
            raise ValueError(f"{backend!r} returned no candidates for instruction {inst[:60]!r}")
    # Stripped as the training data's LLM candidates are (candidates.py): what the scorer learnt on.
    texts = [tuple(t.strip() for _, t in cands) for cands in samples]
    # Empty responses are scored by no method: they are no answer, and a scorer (or an LLM's
    # likelihood, which favours stopping at once) may still rate them highly. Sampling repeats
    # itself (short answers most), so each distinct pair is scored once.
    pairs = list(dict.fromkeys((inst, t) for inst, ts in zip(instructions, texts) for t in ts if t))
    position = {pair: i for i, pair in enumerate(pairs)}
    flat_scores = np.asarray(scorer.score(pairs, progress=progress), np.float32)
    if flat_scores.shape != (len(pairs),):
        raise ValueError(f"the scorer returned {flat_scores.shape} scores for {len(pairs)} pairs")
    if progress is not None:  # the empty and repeated candidates, done without scoring: totals add up
        progress(sum(len(ts) for ts in texts) - len(pairs))
    flat_ll = np.full((len(pairs), 2), np.nan)
    if self_score and pairs:
        sums, means = backend.log_likelihood([p[0] for p in pairs], [p[1] for p in pairs])
        flat_ll = np.stack([np.asarray(sums, np.float64), np.asarray(means, np.float64)], axis=1)
    out = []
    for inst, cands, ts in zip(instructions, samples, texts):
        modes = tuple(m for m, _ in cands)
        where = [position.get((inst, t)) for t in ts]  # None for empty responses
        scores = np.array([np.nan if i is None else flat_scores[i] for i in where], np.float32)
        picks: dict[str, int | None] = {CAPPY: _argmax(scores)}
        for mode in recipe:
            name = "beam" if mode.is_beam else f"first_{mode.name}"
            picks.setdefault(name, modes.index(mode.name) if mode.name in modes else None)
        ll_sum = ll_mean = None
        if self_score:
            ll_sum = np.array([np.nan if i is None else flat_ll[i, 0] for i in where], np.float64)
            ll_mean = np.array([np.nan if i is None else flat_ll[i, 1] for i in where], np.float64)
            picks[LL_SUM] = _argmax(ll_sum)
            picks[LL_MEAN] = _argmax(ll_mean)
        out.append(Reranked(inst, ts, modes, scores, ll_sum, ll_mean, picks))
    return out


# ------------------------------------------------------------------------------------------
# Files: JSONL tasks in, JSONL records + summary out.
# ------------------------------------------------------------------------------------------

# Fields boost writes into each output record (an input field of the same name is replaced).
OUTPUT_FIELDS = ("candidates", "best", "response", "baselines", "rouge_l", "oracle_rouge_l")


class InputError(ValueError):
    """A bad input record; the message names the file and line."""


@dataclasses.dataclass(frozen=True)
class Task:
    """One input record: its line number, the record as read, and the fields boost uses."""

    line: int
    record: dict[str, Any]
    instruction: str
    references: tuple[str, ...] | None


def parse_task(text: str, *, line: int, source: str = "<input>") -> Task:
    """One JSONL line -> Task, or an InputError that says where and what to fix."""
    where = f"{source}:{line}"
    try:
        record = json.loads(text)
    except json.JSONDecodeError as e:
        raise InputError(f"{where}: not valid JSON ({e.msg} at column {e.colno}); "
                         f"each line must be one JSON object") from None
    if not isinstance(record, dict):
        raise InputError(f"{where}: expected a JSON object with an 'instruction', got {type(record).__name__}")
    instruction = record.get("instruction")
    if not isinstance(instruction, str) or not instruction.strip():
        what = "is missing" if "instruction" not in record else f"must be a non-empty string, got {instruction!r:.60}"
        raise InputError(f"{where}: 'instruction' {what}")
    references = record.get("references")
    if references is not None:
        if isinstance(references, str):
            references = [references]
        if not isinstance(references, list) or not references:
            raise InputError(f"{where}: 'references' must be a string or a non-empty list of strings, "
                             f"got {references!r:.60}; drop the field when there is none")
        bad = [r for r in references if not isinstance(r, str) or not r.strip()]
        if bad:
            raise InputError(f"{where}: every reference must be a non-empty string, got {bad[0]!r:.60}")
        references = tuple(references)
    return Task(line, record, instruction, references)


def read_tasks(path: str | os.PathLike) -> Iterator[Task]:
    """The tasks of a JSONL file in order, lazily; blank lines are skipped (they still count as lines)."""
    source = str(path)
    line = 0
    try:
        with open(path, encoding="utf-8") as f:
            for line, text in enumerate(f, start=1):
                if text.strip():
                    yield parse_task(text, line=line, source=source)
    except UnicodeDecodeError as e:
        # Text files decode a block at a time: the bad byte is somewhere after the last line read.
        raise InputError(f"{source}: not UTF-8 at line {line + 1} or later ({e.reason}); save it as UTF-8") from None


def summary_path(output: str | os.PathLike) -> pathlib.Path:
    """Where the summary of `output` goes: out.jsonl -> out.summary.json."""
    return pathlib.Path(output).with_suffix(".summary.json")


def partial_path(output: str | os.PathLike) -> pathlib.Path:
    """Where records stream while a run is going (renamed to `output` at the end)."""
    out = pathlib.Path(output)
    return out.with_name(out.name + ".partial")


def output_record(task: Task, reranked: Reranked, rouge: Sequence[float] | None = None) -> dict[str, Any]:
    """The input record plus the reranking; with `rouge` (one per candidate) the Rouge-L fields too."""
    result = reranked.to_json()
    if rouge is not None:
        def of(index: int | None) -> float:
            return 0.0 if index is None else float(rouge[index])  # no pick: no answer, 0

        for cand, value in zip(result["candidates"], rouge):
            cand["rouge_l"] = float(value)
        for name, base in result["baselines"].items():
            base["rouge_l"] = of(base["index"])
        result["rouge_l"] = of(result["best"])
        result["oracle_rouge_l"] = max(float(v) for v in rouge)
    return {**task.record, **result}


@dataclasses.dataclass
class _Tally:
    """Running sums of each method's Rouge-L over the records with references."""

    names: list[str]
    records: int = 0
    with_references: int = 0
    empty: int = 0
    sums: dict[str, float] = dataclasses.field(default_factory=dict)

    def add(self, reranked: Reranked, rouge: Sequence[float] | None) -> None:
        self.records += 1
        self.empty += sum(not t for t in reranked.texts)
        if rouge is None:
            return
        self.with_references += 1
        for name in self.names:
            index = reranked.picks.get(name)
            self.sums[name] = self.sums.get(name, 0.0) + (0.0 if index is None else float(rouge[index]))
        self.sums[ORACLE] = self.sums.get(ORACLE, 0.0) + max(float(v) for v in rouge)

    def means(self) -> dict[str, float | None]:
        n = self.with_references
        return {name: (self.sums[name] / n if n else None) for name in [*self.names, ORACLE]}


def boost_file(scorer: Any, backend: llm_lib.Backend, input: str | os.PathLike, output: str | os.PathLike, *,
               recipe: Sequence[llm_lib.DecodingMode] = llm_lib.REFERENCE_RECIPE, self_score: bool = True,
               batch_instructions: int = 64) -> dict[str, Any]:
    """Reranks every task of the JSONL `input` into `output` (see the module docstring); the summary.

    Self-scoring on a backend that cannot do it is turned off with a note (in the summary and the
    log) rather than failing, so one command works for every backend.
    """
    if batch_instructions < 1:
        raise ValueError(f"batch_instructions must be >= 1, got {batch_instructions}")
    start = time.monotonic()
    total = sum(1 for _ in read_tasks(input))  # validate everything before paying for any sampling
    if not total:
        raise InputError(f"{input}: no records; each line must be a JSON object with an 'instruction'")
    self_score, note = self_scoring(backend, self_score)
    notes = [note] if note else []
    if note:
        log.warning("%s", note)
    names = methods(recipe, self_score=self_score)
    tally = _Tally(names)
    output = pathlib.Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    partial = partial_path(output)
    tasks = read_tasks(input)
    with cli.atomic_writer(output, tmp_path=partial, keep_partial=True) as f:
        try:
            _stream(f, tasks, scorer, backend, recipe, self_score, batch_instructions, tally, total, start)
        except BaseException:
            log.warning("stopped after %d of %d records; those are in %s (a re-run starts over)",
                        tally.records, total, partial)
            raise
        if tally.records != total:
            raise InputError(f"{input} changed while it was read ({total} records, then {tally.records}); "
                             f"the records done are in {partial}")
    means = tally.means()
    summary = {
        "output": str(output),
        "records": tally.records,
        "with_references": tally.with_references,
        "candidates_per_instruction": llm_lib.responses_per_instruction(recipe),
        "empty_candidates": tally.empty,
        "methods": names,
        "rouge_l": {name: means[name] for name in names},
        "oracle_rouge_l": means[ORACLE],
        "self_score": self_score,
        "notes": notes,
        "backend": repr(backend),
        "seconds": round(time.monotonic() - start, 3),
    }
    with cli.atomic_writer(summary_path(output)) as f:
        f.write(json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
    return summary


def _stream(f: Any, tasks: Iterator[Task], scorer: Any, backend: llm_lib.Backend,
            recipe: Sequence[llm_lib.DecodingMode], self_score: bool, batch_instructions: int, tally: _Tally,
            total: int, start: float) -> None:
    """The chunk loop of `boost_file`: rerank, label with Rouge-L, write and flush each chunk."""
    replaced: set[str] = set()
    while chunk := list(itertools.islice(tasks, batch_instructions)):
        results = rerank(scorer, backend, [t.instruction for t in chunk], recipe=recipe, self_score=self_score)
        labelled = [(t, r) for t, r in zip(chunk, results) if t.references is not None]
        flat = rouge_l_batch([t.references for t, r in labelled for _ in r.texts],
                             [text for _, r in labelled for text in r.texts])
        rouge: dict[int, list[float]] = {}  # by line
        k = 0
        for t, r in labelled:
            rouge[t.line] = flat[k:k + len(r.texts)]
            k += len(r.texts)
        for t, r in zip(chunk, results):
            new = replaced | (set(t.record) & set(OUTPUT_FIELDS))
            if new != replaced:
                log.warning("input field(s) %s replaced by boost's output of the same name (first at line %d)",
                            sorted(new - replaced), t.line)
                replaced = new
            tally.add(r, rouge.get(t.line))
            f.write(json.dumps(output_record(t, r, rouge.get(t.line)), ensure_ascii=False) + "\n")
        f.flush()  # a big input's records appear in OUT.partial as they are done
        elapsed = time.monotonic() - start
        means = tally.means()
        so_far = (f"; Rouge-L so far: cappy {means[CAPPY]:.4f}, oracle {means[ORACLE]:.4f}"
                  if tally.with_references else "")
        log.info("%d/%d instructions (%.0f%%), %.0fs, ETA %.0fs%s", tally.records, total,
                 100 * tally.records / total, elapsed, elapsed * (total - tally.records) / tally.records, so_far)


def format_summary(summary: Mapping[str, Any]) -> str:
    """The summary as a small table: each method's mean Rouge-L, then the oracle."""
    n, m = summary["records"], summary["with_references"]
    lines = [f"{n} records reranked from {summary['candidates_per_instruction']} candidates each "
             f"({summary['empty_candidates']} empty) -> {summary['output']}"]
    lines += [f"note: {note}" for note in summary["notes"]]
    if not m:
        lines.append("no record has references: no Rouge-L to report")
        return "\n".join(lines)
    lines.append(f"mean Rouge-L over the records with references ({m} of {n}):")
    width = max(len(name) for name in [*summary["rouge_l"], ORACLE])
    lines += [f"  {name:<{width}}  {value:.4f}" for name, value in summary["rouge_l"].items()]
    lines.append(f"  {ORACLE:<{width}}  {summary['oracle_rouge_l']:.4f}  (best candidate: upper bound)")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------
# The command line.
# ------------------------------------------------------------------------------------------

def apply_shorthands(config: Any, *, llm: str | None = None, llm_model: str | None = None,
                     llm_base_url: str | None = None, self_score: bool | None = None) -> None:
    """Writes the CLI's shorthand flags into `config` (they win over `--config.*` when given)."""
    cli.apply_llm_shorthands(config, llm=llm, llm_model=llm_model, llm_base_url=llm_base_url)
    if self_score is not None:
        config.self_score = self_score


def main(argv: list[str]) -> None:
    from absl import app, flags

    from cappy_jax.cli import enable_compilation_cache, quiet_logging

    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}")
    quiet_logging()
    f = flags.FLAGS
    config = f.config
    # Plain messages, not UsageError: that one prints this module's whole docstring before them.
    from cappy_jax import scoring

    try:
        scoring.check_source(checkpoint=f.checkpoint, hf=f.hf, step=f.step)
        apply_shorthands(config, llm=f.llm, llm_model=f.llm_model, llm_base_url=f.llm_base_url,
                         self_score=f.self_score)
        recipe = llm_lib.recipe_named(config.llm.recipe)
        if config.batch_instructions < 1:
            raise ValueError(f"--config.batch_instructions must be >= 1, got {config.batch_instructions}")
        llm_lib.backend_kwargs(config.llm.to_dict())
        count = sum(1 for _ in read_tasks(f.input))  # a bad input fails before minutes of model loading
    except (ValueError, OSError) as e:
        raise SystemExit(f"error: {e}") from None
    log.info("%d tasks in %s", count, f.input)
    if config.llm.name == "hf" and str(config.llm.hf.device).startswith("cuda"):
        # JAX would take 75% of the GPU at start-up and leave the LLM too little: allocate on demand.
        # Before the scorer's import, so JAX reads it when it starts its backend.
        os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    try:
        scorer = scoring.load(checkpoint=f.checkpoint, hf=f.hf, step=f.step, **config.scoring.to_dict())
        enable_compilation_cache(scorer.opts.compilation_cache_dir)
    except ValueError as e:
        raise SystemExit(f"error: {e} (the scoring knobs are --config.scoring.KEY=VALUE)") from None
    try:
        backend = llm_lib.backend_from_config(config.llm.to_dict())
    except ValueError as e:
        raise SystemExit(f"error: {e}") from None
    log.info("scorer %s, LLM %r", f.checkpoint or f.hf, backend)
    try:
        summary = boost_file(scorer, backend, f.input, f.output, recipe=recipe, self_score=config.self_score,
                             batch_instructions=config.batch_instructions)
    except (InputError, OSError) as e:
        raise SystemExit(f"error: {e}") from None
    print(format_summary(summary))
    print(f"summary: {summary_path(f.output)}")


def run() -> None:
    from absl import app, flags
    from ml_collections import config_flags

    import configs

    default = os.path.join(os.path.dirname(configs.__file__), "boost.py")
    config_flags.DEFINE_config_file("config", default, "The boost config (default configs/boost.py); override "
                                    "any knob with --config.KEY=VALUE, e.g. --config.llm.hf.device=cuda.",
                                    lock_config=True)
    flags.DEFINE_string("checkpoint", None, "The scorer: a scorer directory or a training workdir (Orbax).")
    flags.DEFINE_integer("step", None, "With a training workdir: this step instead of the latest.")
    flags.DEFINE_string("hf", None, "The scorer as an HF sequence-classification dir (e.g. btan2/cappy-large).")
    flags.DEFINE_enum("llm", None, ["hf", "openai"], "The LLM backend (shorthand for --config.llm.name).")
    flags.DEFINE_string("llm_model", None, "hf: the model directory; openai: the served model's name.")
    flags.DEFINE_string("llm_base_url", None, "openai: the API root, e.g. http://host:8000/v1.")
    flags.DEFINE_boolean("self_score", None, "The LLM log-likelihood baselines (hf only; default: the config's).")
    flags.DEFINE_string("input", None, "JSONL tasks: 'instruction', optional 'references', other fields kept.")
    flags.DEFINE_string("output", None, "JSONL output, one record per input in order; summary beside it.")
    flags.mark_flags_as_required(["input", "output"])
    app.run(main)


if __name__ == "__main__":
    run()
