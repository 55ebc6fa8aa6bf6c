"""Score a JSONL file: `python -m cappy_jax.score --checkpoint CKPT --input IN.jsonl --output OUT.jsonl`.

Why: scoring a dataset (rank an LLM's samples, filter pairs, pick answers among choices) should be
one command that takes a file of any size, keeps every field the user had, and never leaves a
half-written output behind.

Each input line is one JSON object:
    {"instruction": "...", "response": "..."}            gets "score"
    {"instruction": "...", "candidates": ["...", ...]}   gets "scores" (one per candidate) and "best",
                                                         the index of the best (ties: the lowest index)
Other fields pass through unchanged, output order is input order, blank lines are skipped.

    python -m cappy_jax.score --checkpoint runs/cappy --input in.jsonl --output out.jsonl
    python -m cappy_jax.score --hf path/to/cappy-large --head_activation=identity --input ... --output ...
    ... --step 2000                    a training workdir's checkpoint at that step (default: latest)
    ... --skip_bad [--rejects R]       bad records go to R (default OUT.rejects.jsonl), the rest is scored
    ... --config configs/score.py:cpu --config.batch_tokens=4096 --config.widths='(32,64,128)'

How: the input is read twice. The first pass counts the records for the progress line and, without
--skip_bad, checks every record, so a bad line fails in seconds (all bad lines listed) instead of after
hours of scoring. The second pass streams: records are gathered until they hold `chunk_pairs` pairs
(a candidates record holds one pair per distinct candidate; duplicates are scored once, so they tie
exactly), the chunk is scored in one packed call (`Scorer.score`), its records are written, and the
next chunk is read, so memory stays bounded by the chunk. The output (and rejects file) is written to
a temporary file beside it and renamed at the end. Scoring knobs come from `configs/score.py`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator
from typing import IO, TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from cappy_jax.scoring import Scorer

log = logging.getLogger("cappy_jax.score")

HOW_TO_FIX = "fix these lines, or pass --skip_bad to write bad records to a rejects file and score the rest"
_MAX_LISTED = 10  # bad lines named in one error message
_JSON_TYPES = {type(None): "null", bool: "a boolean", int: "a number", float: "a number", str: "a string",
               list: "an array", dict: "an object"}


class BadRecord(ValueError):
    """One input line that cannot be scored; `problem` says what to fix."""

    def __init__(self, line_no: int, problem: str) -> None:
        super().__init__(f"line {line_no}: {problem}")
        self.line_no = line_no
        self.problem = problem


class BadInput(ValueError):
    """An input file with bad records (without --skip_bad): names the first ones."""

    def __init__(self, path: str, errors: list[BadRecord], count: int) -> None:
        listed = "\n".join(f"  {e}" for e in errors)
        more = f"\n  ... and {count - len(errors)} more" if count > len(errors) else ""
        super().__init__(f"{path} has {count} bad record{'s' * (count != 1)} ({HOW_TO_FIX}):\n{listed}{more}")
        self.errors = errors
        self.count = count


@dataclasses.dataclass
class Record:
    """A parsed input line: `texts` is `(response,)` or the candidates; `fields` is the whole object."""

    line_no: int
    fields: dict[str, Any]
    instruction: str
    texts: tuple[str, ...]
    candidates: bool

    def unique_texts(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(self.texts))


# ---------------------------------------------------------------------------------- parsing
def _json_type(value: Any) -> str:
    return _JSON_TYPES.get(type(value), type(value).__name__)


def _check_text(value: Any, what: str, line_no: int) -> str:
    if not isinstance(value, str):
        raise BadRecord(line_no, f"{what} must be a string, got {_json_type(value)}")
    if not value.strip():
        raise BadRecord(line_no, f"{what} is empty{' (whitespace only)' if value else ''}: give it text")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise BadRecord(line_no, f"{what} holds an unpaired surrogate escape (like \\ud83d alone): "
                                 f"write the character itself or its full surrogate pair") from None
    return value


def parse_record(line_text: str, line_no: int) -> Record:
    """Validates one line (1-based `line_no`); raises `BadRecord` saying what to fix. Pure."""
    try:
        fields = json.loads(line_text)
    except json.JSONDecodeError as e:
        raise BadRecord(line_no, f"not valid JSON ({e.msg} at column {e.colno}): each line must be one "
                                 f"JSON object") from None
    if not isinstance(fields, dict):
        raise BadRecord(line_no, f"expected a JSON object, got {_json_type(fields)}: write "
                                 f'{{"instruction": ..., "response": ...}} or {{"instruction": ..., "candidates": [...]}}')
    if "instruction" not in fields:
        raise BadRecord(line_no, 'missing "instruction": add it (a non-empty string)')
    instruction = _check_text(fields["instruction"], '"instruction"', line_no)
    has_response, has_candidates = "response" in fields, "candidates" in fields
    if has_response and has_candidates:
        raise BadRecord(line_no, 'has both "response" and "candidates": keep "response" to score one pair '
                                 'or "candidates" to pick the best of a list')
    if not (has_response or has_candidates):
        raise BadRecord(line_no, 'has neither "response" nor "candidates": add "response" (a string) to score '
                                 'it, or "candidates" (a list of strings) to pick the best')
    if has_response:
        return Record(line_no, fields, instruction, (_check_text(fields["response"], '"response"', line_no),),
                      candidates=False)
    candidates = fields["candidates"]
    if not isinstance(candidates, list):
        raise BadRecord(line_no, f'"candidates" must be a non-empty list of strings, got {_json_type(candidates)}')
    if not candidates:
        raise BadRecord(line_no, '"candidates" is an empty list: give at least one candidate')
    texts = tuple(_check_text(c, f'"candidates"[{i}]', line_no) for i, c in enumerate(candidates))
    return Record(line_no, fields, instruction, texts, candidates=True)


def _read_lines(path: str) -> Iterator[tuple[int, bytes]]:
    """(1-based line number, raw line without its line break), read as bytes so bad UTF-8 is one bad line."""
    with open(path, "rb") as f:
        for line_no, raw in enumerate(f, 1):
            if line_no == 1 and raw.startswith(b"\xef\xbb\xbf"):  # a UTF-8 byte-order mark
                raw = raw[3:]
            yield line_no, raw.rstrip(b"\r\n")


def _decode(raw: bytes, line_no: int) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise BadRecord(line_no, f"not valid UTF-8 (byte {e.start + 1}): save the file as UTF-8") from None


def check_input(path: str, *, validate: bool = True) -> int:
    """The number of records (non-blank lines) in `path`; with `validate`, raises `BadInput` naming bad lines."""
    count, bad, errors = 0, 0, []
    for line_no, raw in _read_lines(path):
        if not raw.strip():
            continue
        count += 1
        if validate:
            try:
                parse_record(_decode(raw, line_no), line_no)
            except BadRecord as e:
                bad += 1
                if len(errors) < _MAX_LISTED:
                    errors.append(e)
    if bad:
        raise BadInput(path, errors, bad)
    return count


# ---------------------------------------------------------------------------------- writing
def _short_float(x: np.float32) -> float:
    """The shortest decimal that reads back as the same float32 (0.3, not 0.30000001192092896)."""
    return float(str(np.float32(x)))


class _ChunkProgress:
    """Turns the scorer's pairs-done callbacks into records done for a records progress line."""

    def __init__(self, progress: Callable[[int], None] | None, records: int, pairs: int) -> None:
        self.progress, self.records, self.pairs = progress, records, max(pairs, 1)
        self.pairs_done = self.reported = 0

    def __call__(self, n: int) -> None:
        self.pairs_done += n
        self._report(min(self.records, self.records * self.pairs_done // self.pairs))

    def finish(self) -> None:
        self._report(self.records)

    def _report(self, done: int) -> None:
        if self.progress is not None and done > self.reported:
            self.progress(done - self.reported)
            self.reported = done


def _untokenizable(scorer: Scorer, record: Record) -> str | None:
    """Why `record` fails to tokenize (e.g. text of control characters only), or None."""
    if getattr(scorer, "tokenizer", None) is None:
        return None
    kept = scorer.tokenizer.has_tokens([record.instruction, *record.texts])
    if kept.all():
        return None
    if not kept[0]:
        what = '"instruction"'
    else:
        what = f'"candidates"[{int(np.argmin(kept[1:]))}]' if record.candidates else '"response"'
    return f"{what} has no tokens after tokenization (e.g. only control characters): give it visible text"


def _score_records(scorer: Scorer, records: list[Record], progress: Callable[[int], None] | None,
                   reject: Callable[[Record, str], None]) -> list[tuple[Record, np.ndarray]]:
    """Scores `records` in one packed call; records that fail to tokenize go to `reject` (which may raise)."""
    bar = _ChunkProgress(progress, len(records), sum(len(r.unique_texts()) for r in records))
    while True:
        uniques = [r.unique_texts() for r in records]
        pairs = [(r.instruction, t) for r, u in zip(records, uniques) for t in u]
        try:
            flat = scorer.score(pairs, progress=bar)
            break
        except (TypeError, ValueError):
            problems = [(r, _untokenizable(scorer, r)) for r in records]
            if not any(p for _, p in problems):
                raise
            for r, p in problems:
                if p:
                    reject(r, p)  # raises without --skip_bad
            records = [r for r, p in problems if not p]
            bar.pairs_done = 0  # progress only moves forward; the retry counts again from zero
    bar.finish()  # rejected records count as finished too
    out, k = [], 0
    for r, u in zip(records, uniques):
        index = {t: i for i, t in enumerate(u)}
        out.append((r, flat[k + np.array([index[t] for t in r.texts], np.int64)]))
        k += len(u)
    return out


def _write_scored(f: IO[str], record: Record, scores: np.ndarray) -> None:
    fields = record.fields
    if record.candidates:
        fields["scores"] = [_short_float(s) for s in scores]
        fields["best"] = int(np.argmax(scores))  # the first of equal maxima: ties go to the lowest index
    else:
        fields["score"] = _short_float(scores[0])
    f.write(json.dumps(fields, ensure_ascii=False) + "\n")


def score_file(scorer: Scorer, input_path: str, output_path: str, *, skip_bad: bool = False,
               rejects_path: str | None = None, chunk_pairs: int | None = None,
               progress: bool | Callable[[int], None] = True, total: int | None = None) -> dict[str, Any]:
    """Scores every record of `input_path` into `output_path` (see the module docstring); returns stats.

    `chunk_pairs` defaults to the scorer's; `progress` is True (a `cli.Progress` line on stderr for
    long inputs), False, or a callable given the number of records just finished. `total` is
    `check_input`'s count when the caller already ran it (then the input is not read twice).
    Without `skip_bad`, a bad record raises `BadInput`/`BadRecord` and no output is written.
    """
    from cappy_jax import cli

    t0 = time.monotonic()
    input_path, output_path = os.fspath(input_path), os.fspath(output_path)
    if skip_bad:
        rejects_path = os.fspath(rejects_path) if rejects_path else output_path + ".rejects.jsonl"
    elif rejects_path:
        raise ValueError("a rejects file is only written with skip_bad (--skip_bad): pass it too")
    paths = [os.path.abspath(p) for p in (input_path, output_path, rejects_path) if p]
    if len(set(paths)) != len(paths):
        raise ValueError(f"input, output and rejects must be different files, got {paths}")
    chunk_pairs = int(chunk_pairs or scorer.opts.chunk_pairs)
    if chunk_pairs <= 0:
        raise ValueError(f"chunk_pairs={chunk_pairs} must be positive")
    if total is None:
        total = check_input(input_path, validate=not skip_bad)
    bar = cli.Progress(total, "records") if progress is True else (progress or None)
    stats: dict[str, Any] = dict(records=0, pairs=0, rejected=0, output=output_path, rejects=rejects_path)

    with contextlib.ExitStack() as stack:
        out = stack.enter_context(cli.atomic_writer(output_path))
        rejects = stack.enter_context(cli.atomic_writer(rejects_path)) if skip_bad else None
        raw_lines: dict[int, str] = {}  # raw text of the chunk's lines, for the rejects file

        def reject(line_no: int, problem: str, text: str) -> None:
            if rejects is None:
                raise BadRecord(line_no, f"{problem} ({HOW_TO_FIX})")
            rejects.write(json.dumps({"line": line_no, "error": problem, "text": text}, ensure_ascii=False) + "\n")
            stats["rejected"] += 1

        def flush(chunk: list[Record]) -> None:
            scored = _score_records(scorer, chunk, bar,
                                    lambda r, p: reject(r.line_no, p, raw_lines[r.line_no]))
            for record, scores in scored:
                _write_scored(out, record, scores)
                stats["records"] += 1
                stats["pairs"] += len(record.texts)
            raw_lines.clear()

        chunk: list[Record] = []
        chunk_size = 0
        for line_no, raw in _read_lines(input_path):
            if not raw.strip():
                continue
            try:
                text = _decode(raw, line_no)
                record = parse_record(text, line_no)
            except BadRecord as e:
                reject(line_no, e.problem, raw.decode("utf-8", errors="replace"))
                if bar is not None:
                    bar(1)
                continue
            size = len(record.unique_texts())
            if chunk and chunk_size + size > chunk_pairs:
                flush(chunk)
                chunk, chunk_size = [], 0
            chunk.append(record)
            raw_lines[line_no] = text
            chunk_size += size
        if chunk:
            flush(chunk)
    if isinstance(bar, cli.Progress):
        bar.close()
    stats["seconds"] = round(time.monotonic() - t0, 3)
    return stats


# ---------------------------------------------------------------------------------- the CLI
def check_flags(*, checkpoint: str | None, hf: str | None, step: int | None, head_activation: str | None,
                skip_bad: bool, rejects: str | None) -> None:
    """The flag combinations that make sense; raises ValueError saying which flag to change."""
    from cappy_jax.scoring import check_source

    check_source(checkpoint=checkpoint, hf=hf, step=step, head_activation=head_activation)
    if rejects is not None and not skip_bad:
        raise ValueError("--rejects names the file for bad records: pass --skip_bad too")


def main(argv: list[str]) -> None:
    from absl import app, flags

    from cappy_jax.cli import enable_compilation_cache, quiet_logging

    quiet_logging()
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}: everything is a flag (--input, --output, ...)")
    f = flags.FLAGS
    try:
        check_flags(checkpoint=f.checkpoint, hf=f.hf, step=f.step, head_activation=f.head_activation,
                    skip_bad=f.skip_bad, rejects=f.rejects)
    except ValueError as e:
        raise app.UsageError(str(e)) from None
    if not os.path.isfile(f.input):
        sys.exit(f"error: --input {f.input} is not a file")
    try:
        total = check_input(f.input, validate=not f.skip_bad)  # before loading the model: bad input fails fast
    except BadInput as e:
        sys.exit(f"error: {e}")

    from cappy_jax import scoring

    overrides = f.config.to_dict()
    try:  # a missing or mismatched scorer is the user's to fix: its message says how, a traceback would bury it
        scorer = scoring.load(checkpoint=f.checkpoint, hf=f.hf, step=f.step, head_activation=f.head_activation,
                              **overrides)
    except (FileNotFoundError, ValueError) as e:
        sys.exit(f"error: {e}")
    enable_compilation_cache(scorer.opts.compilation_cache_dir)
    try:
        stats = score_file(scorer, f.input, f.output, skip_bad=f.skip_bad, rejects_path=f.rejects,
                           chunk_pairs=overrides["chunk_pairs"], total=total)
    except (BadInput, BadRecord) as e:
        sys.exit(f"error: {e}")
    rejected = f", rejected {stats['rejected']} (see {stats['rejects']})" if f.skip_bad else ""
    log.info("scored %d records (%d pairs)%s in %.1fs; wrote %s", stats["records"], stats["pairs"], rejected,
             stats["seconds"], stats["output"])


def run() -> None:
    from absl import app, flags
    from ml_collections import config_flags

    from cappy_jax import model as model_lib
    from configs import score as score_config

    config_flags.DEFINE_config_file("config", score_config.__file__,
                                    "Scoring knobs, e.g. configs/score.py:cpu; override with --config.batch_tokens=...",
                                    lock_config=True)
    flags.DEFINE_string("checkpoint", None, "A scorer directory or a training workdir (latest step unless --step).")
    flags.DEFINE_string("hf", None, "An HF BERT/RoBERTa sequence-classification directory, instead of --checkpoint.")
    flags.DEFINE_integer("step", None, "The training step to load from a workdir (--checkpoint only).")
    flags.DEFINE_enum("head_activation", None, list(model_lib.HEAD_ACTIVATIONS),
                      "How --hf logits become scores (identity for btan2/cappy-large); default: its config.json.")
    flags.DEFINE_string("input", None, "JSONL: instruction + response, or instruction + candidates, per line.")
    flags.DEFINE_string("output", None, "JSONL: the input records with score, or scores and best.")
    flags.DEFINE_bool("skip_bad", False, "Write bad records to the rejects file and score the rest, "
                                         "instead of failing.")
    flags.DEFINE_string("rejects", None, "Where --skip_bad writes bad records (default OUTPUT.rejects.jsonl).")
    flags.mark_flags_as_required(["input", "output"])
    app.run(main)


if __name__ == "__main__":
    run()
