"""The scoring API: load a scorer, score (instruction, response) pairs, pick the best candidate.

    from cappy_jax.scoring import Scorer
    scorer = Scorer.from_checkpoint("runs/cappy")         # scorer dir or training workdir (Orbax)
    scorer = Scorer.from_hf("cappy-large")                # an HF directory, e.g. btan2/cappy-large
    scores = scorer.score([("Is 7 prime?", "yes"), ("Is 7 prime?", "no")])
    best, scores = scorer.select("Is 7 prime?", ["yes", "no"])

How a workload is run (`plan_batches`, pure): pairs are tokenized a chunk at a time, packed
longest first into rows of `row_len` tokens (a longer pair gets its own row), rows are sorted by
fill and cut into batches of at most `batch_tokens` token slots, each narrowed to the smallest
allowed width that holds its fullest row. The batches then run in a seeded random order: sorted by
fill, a workload's single-pair rows (its longest pairs) came first, so a progress line's pairs/s
started several times too low and its ETA too long. Rows are split over every local device; parameters
are replicated. Batch shapes come from a small set (widths x row counts rounded to powers of two),
so compilations are few and cached. Batches are dispatched asynchronously: the host packs the
next batch while the devices run the current one.

Ties: `select` returns the lowest index among equal top scores (`np.argmax`).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import jax
import numpy as np

from cappy_jax import checkpoint, packing, sharding
from cappy_jax import model as model_lib
from cappy_jax.tokenization import PairTokenizer

log = logging.getLogger("cappy_jax.scoring")
# A batch shape's first dispatch that takes longer is logged: roberta-large compiles for tens of seconds a
# shape on a GPU, while the progress line stands still.
SLOW_FIRST_DISPATCH_S = 5.0

Pair = tuple[str, str]
Progress = Callable[[int], None]  # called with the number of pairs just scored


@dataclasses.dataclass(frozen=True)
class ScoringOptions:
    """How pairs become batches; the values live in `configs/score.py` (see its docstring)."""

    max_len: int
    row_len: int
    max_segments: int
    batch_tokens: int
    widths: tuple[int, ...]
    chunk_pairs: int
    dtype: str
    attention: str
    quantize: str
    compilation_cache_dir: str  # read by the CLIs (cli.enable_compilation_cache), not by the Scorer

    def __post_init__(self) -> None:
        object.__setattr__(self, "widths", tuple(int(w) for w in self.widths))
        problems = [f"{name}={getattr(self, name)!r} must be a positive int"
                    for name in ("max_len", "row_len", "max_segments", "batch_tokens", "chunk_pairs")
                    if isinstance(getattr(self, name), bool) or not isinstance(getattr(self, name), int)
                    or getattr(self, name) <= 0]
        if not self.widths or list(self.widths) != sorted(set(self.widths)) or self.widths[0] <= 0:
            problems.append(f"widths={self.widths} must be positive and strictly increasing")
        elif self.widths[-1] < max(self.max_len, self.row_len):
            problems.append(f"the widest row ({self.widths[-1]}) must hold max_len={self.max_len} and "
                            f"row_len={self.row_len}: add a width")
        elif self.batch_tokens < self.widths[-1]:
            problems.append(f"batch_tokens={self.batch_tokens} must hold one row of the widest width "
                            f"({self.widths[-1]})")
        if self.dtype not in model_lib.DTYPES:
            problems.append(f"dtype={self.dtype!r} is not one of {model_lib.DTYPES}")
        if self.attention not in model_lib.ATTENTION_IMPLS:
            problems.append(f"attention={self.attention!r} is not one of {model_lib.ATTENTION_IMPLS}")
        if self.quantize not in model_lib.QUANTIZE:
            problems.append(f"quantize={self.quantize!r} is not one of {model_lib.QUANTIZE}")
        if problems:
            raise ValueError("bad scoring options: " + "; ".join(problems))

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> ScoringOptions:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        missing = sorted(names - set(values))
        if unknown or missing:
            raise ValueError(f"scoring options: unknown {unknown}, missing {missing}; the knobs are {sorted(names)} "
                             f"(configs/score.py)")
        return cls(**{k: (tuple(v) if k == "widths" else v) for k, v in values.items()})


def options(variant: str = "default", **overrides: Any) -> ScoringOptions:
    """`configs/score.py`'s variant with `overrides`; a misspelt knob is an error, not ignored."""
    from configs import score as score_configs

    if variant not in score_configs.VARIANTS:
        raise ValueError(f"unknown score variant {variant!r}; choose one of {sorted(score_configs.VARIANTS)}")
    base = dict(score_configs.VARIANTS[variant])
    unknown = sorted(set(overrides) - set(base))
    if unknown:
        raise ValueError(f"unknown scoring options {unknown}; the knobs are {sorted(base)} (configs/score.py)")
    return ScoringOptions.from_mapping({**base, **overrides})


@dataclasses.dataclass(frozen=True)
class BatchPlan:
    """One batch: the pair indices of each row, the row width and the padded row count."""

    rows: list[list[int]]
    width: int
    num_rows: int


def _round_rows(n: int, cap: int, multiple_of: int) -> int:
    """Rows of a partial batch: the next power of two (few shapes), a multiple of the devices."""
    n = 1 << max(0, math.ceil(math.log2(max(n, 1))))
    n = -(-n // multiple_of) * multiple_of
    return min(n, cap)


def plan_batches(lengths: Sequence[int] | np.ndarray, opts: ScoringOptions, *,
                 multiple_of: int = 1) -> list[BatchPlan]:
    """Packs pairs of the given token lengths into batches (see the module docstring). Pure."""
    lengths = np.asarray(lengths, dtype=np.int64)
    if lengths.size == 0:
        return []
    if lengths.max() > opts.widths[-1]:
        raise ValueError(f"a pair has {int(lengths.max())} tokens, wider than the widest row "
                         f"({opts.widths[-1]}); tokenize with max_len <= {opts.widths[-1]}")
    short = np.flatnonzero(lengths <= opts.row_len)
    rows = [[int(short[i]) for i in row] for row in packing.pack_lengths(lengths[short], opts.row_len,
                                                                          opts.max_segments)]
    rows += [[int(i)] for i in np.flatnonzero(lengths > opts.row_len)]
    fill = np.array([int(lengths[r].sum()) for r in rows])
    order = np.argsort(-fill, kind="stable")
    widths = np.asarray(opts.widths)
    row_width = widths[np.searchsorted(widths, fill[order])]
    plans: list[BatchPlan] = []
    k = 0
    while k < len(order):
        width = int(row_width[k])
        cap = max(multiple_of, (opts.batch_tokens // width) // multiple_of * multiple_of)
        end = k + 1
        while end < len(order) and end - k < cap and row_width[end] == width:
            end += 1
        n = end - k
        plans.append(BatchPlan(rows=[rows[r] for r in order[k:end]], width=width,
                               num_rows=cap if n == cap else _round_rows(n, cap, multiple_of)))
        k = end
    return [plans[i] for i in np.random.default_rng(0).permutation(len(plans))]  # see the module docstring


def _unpack(values: list[np.ndarray], pair_index: list[np.ndarray], n: int) -> np.ndarray:
    """Per-slot outputs `[B, S, ...]` of several batches back in input order, `[n, ...]`."""
    if not values:
        return np.zeros((n,), np.float32)
    trailing = values[0].shape[2:]
    flat = np.concatenate([v.reshape(-1, *trailing) for v in values])
    index = np.concatenate([i.reshape(-1) for i in pair_index])
    keep = index >= 0
    if np.bincount(index[keep], minlength=n).tolist() != [1] * n:
        raise RuntimeError("internal: a pair was scored zero or several times")
    out = np.empty((n, *trailing), np.float32)
    out[index[keep]] = flat[keep]
    return out


def fp8_speed_note(device: jax.Device) -> str | None:
    """Why float8 matmuls will not be faster on `device`, or None where they can be (fp8 tensor cores:
    CUDA compute capability 8.9 and up). Elsewhere XLA computes them in higher precision: same scores."""
    if device.platform != "gpu":
        return (f"{device.platform} has no float8 matmul units: the scores are a GPU's, but it runs slower than "
                f"quantize='none'")
    capability = getattr(device, "compute_capability", None)
    try:
        major, minor = (int(x) for x in str(capability).split(".")[:2])
    except ValueError:
        return None  # not CUDA's numbering (e.g. ROCm): let the benchmark tell
    if (major, minor) < (8, 9):
        return (f"{device.device_kind} (compute capability {capability}) has no fp8 tensor cores: scores as on "
                f"an H100, but no faster than 'none'")
    return None


def check_source(*, checkpoint: str | None, hf: str | None, step: int | None = None,
                 head_activation: str | None = None) -> None:
    """The CLIs' `--checkpoint | --hf` choice; a ValueError names the flag to change."""
    if bool(checkpoint) == bool(hf):
        raise ValueError("give exactly one of --checkpoint (a scorer directory or training workdir) and "
                         "--hf (an HF sequence-classification directory)")
    if step is not None and hf:
        raise ValueError("--step picks a checkpoint of a training workdir: use it with --checkpoint, not --hf")
    if head_activation is not None and checkpoint:
        raise ValueError("--head_activation only applies to --hf; a scorer directory stores its own "
                         "(set it when converting: convert from-hf --head_activation)")


def load(*, checkpoint: str | None = None, hf: str | None = None, step: int | None = None,
         head_activation: str | None = None, **overrides: Any) -> Scorer:
    """`Scorer.from_checkpoint` or `Scorer.from_hf`, whichever one is given (see `check_source`)."""
    check_source(checkpoint=checkpoint, hf=hf, step=step, head_activation=head_activation)
    if checkpoint:
        return Scorer.from_checkpoint(checkpoint, step=step, **overrides)
    return Scorer.from_hf(hf, head_activation=head_activation, **overrides)


class Scorer:
    """A loaded scorer, ready to score pairs on every local device.

    `tokenizer=None` gives a scorer of pre-encoded pairs only (`score_tokens`), e.g. for benchmarks.
    """

    def __init__(self, config: model_lib.ModelConfig, params: Any, tokenizer: PairTokenizer | None,
                 opts: ScoringOptions | None = None, *, devices: Sequence[jax.Device] | None = None) -> None:
        self.opts = opts or options()
        self.config = config.replace(dtype=self.opts.dtype, attention=self.opts.attention, quantize=self.opts.quantize)
        self.tokenizer = tokenizer
        if self.opts.max_len > self.config.max_len:
            raise ValueError(f"max_len={self.opts.max_len} exceeds the model's {self.config.max_len} positions: "
                             f"pass max_len={self.config.max_len}")
        if tokenizer is not None and tokenizer.vocab_size > self.config.vocab_size:
            raise ValueError(f"the tokenizer has {tokenizer.vocab_size} tokens but the model's vocabulary "
                             f"{self.config.vocab_size}: tokenizer and weights come from different models")
        checkpoint.check_params(params, self.config)
        self.devices = list(devices or jax.local_devices())
        if self.config.quantize == "fp8" and (note := fp8_speed_note(self.devices[0])):
            log.warning("quantize='fp8': %s", note)
        self.mesh = sharding.make_mesh({"data": -1}, self.devices)
        self._rows_sharding = sharding.batch_sharding(self.mesh)
        self.params = jax.device_put(model_lib.inference_params(self.config, params), sharding.replicated(self.mesh))
        shardings = dict(in_shardings=(sharding.replicated(self.mesh), self._rows_sharding),
                         out_shardings=self._rows_sharding)
        layout = sharding.layout(self.mesh, ())  # parameters whole on every device; rows split
        self._score = jax.jit(functools.partial(model_lib.score, self.config, layout=layout), **shardings)
        self._embed = jax.jit(functools.partial(model_lib.mean_embeddings, self.config, layout=layout), **shardings)
        self._shapes_seen: set[tuple[Callable, int, int]] = set()  # (function, rows, width) dispatched before

    # ----------------------------------------------------------------------------- loading
    @classmethod
    def from_checkpoint(cls, path: str, *, step: int | None = None, variant: str = "default",
                        devices: Sequence[jax.Device] | None = None, **overrides: Any) -> Scorer:
        """A scorer directory (`convert from-hf`) or a training workdir (latest or `step`)."""
        loaded = checkpoint.load_scorer(path, step=step)
        return cls(loaded.config, loaded.params, PairTokenizer.from_dir(loaded.tokenizer_dir),
                   options(variant, **overrides), devices=devices)

    @classmethod
    def from_hf(cls, path: str, *, head_activation: str | None = None, variant: str = "default",
                devices: Sequence[jax.Device] | None = None, **overrides: Any) -> Scorer:
        """An HF BERT/RoBERTa sequence-classification directory, converted in memory."""
        from cappy_jax import convert

        config, params, notes = convert.load_hf(path, head_activation=head_activation)
        fresh = [n for n in notes if "freshly initialised" in n]
        if fresh:
            raise ValueError(f"{path} has no trained score head ({'; '.join(fresh)}); scoring with a random "
                             f"head is meaningless. Fine-tune it first (convert from-hf --fresh_head)")
        return cls(config, params, PairTokenizer.from_dir(path), options(variant, **overrides), devices=devices)

    # ----------------------------------------------------------------------------- scoring
    def score(self, pairs: Iterable[Pair], *, progress: Progress | None = None) -> np.ndarray:
        """Scores, float32 `[N]`, in the order of `pairs`, in the checkpoint's range ([0, 1] for sigmoid)."""
        pairs = list(pairs)
        for i, pair in enumerate(pairs):
            if not (isinstance(pair, (tuple, list)) and len(pair) == 2):
                raise TypeError(f"pair {i} must be an (instruction, response) tuple, got {type(pair).__name__}")
        out = np.empty(len(pairs), np.float32)
        for start in range(0, len(pairs), self.opts.chunk_pairs):
            chunk = pairs[start:start + self.opts.chunk_pairs]
            try:
                out[start:start + len(chunk)] = self._score_chunk(chunk, progress)
            except (TypeError, ValueError) as e:
                if start and str(e).startswith("pair "):  # place the tokenizer's pair number; same error type
                    e.args = (f"{e} (of the chunk starting at pair {start})",)
                raise
        return out

    def select(self, instruction: str, candidates: Sequence[str]) -> tuple[int, np.ndarray]:
        """(index of the best candidate, all scores); ties go to the lowest index."""
        return self.select_many([(instruction, candidates)])[0]

    def select_many(self, items: Sequence[tuple[str, Sequence[str]]], *,
                    progress: Progress | None = None) -> list[tuple[int, np.ndarray]]:
        """`select` for many (instruction, candidates) at once, scored in one packed workload."""
        pairs: list[Pair] = []
        for i, (instruction, candidates) in enumerate(items):
            if isinstance(candidates, str) or not len(candidates):
                raise ValueError(f"item {i}: candidates must be a non-empty list of strings")
            pairs += [(instruction, c) for c in candidates]
        scores = self.score(pairs, progress=progress)
        out, k = [], 0
        for _, candidates in items:
            s = scores[k:k + len(candidates)]
            out.append((int(np.argmax(s)), s))
            k += len(candidates)
        return out

    def score_tokens(self, input_ids: Sequence[np.ndarray], token_type_ids: Sequence[np.ndarray], *,
                     progress: Progress | None = None) -> np.ndarray:
        """Scores pairs already encoded (`PairTokenizer.encode_pairs`), in order; at most `max_len` each."""
        return self._run(self._score, input_ids, token_type_ids, progress)

    def embed(self, texts: Sequence[str], *, progress: Progress | None = None) -> np.ndarray:
        """Mean-pooled final hidden states of single texts, float32 `[N, H]`, in order.

        What sentence encoders such as all-MiniLM-L6-v2 were trained for; the zero-shot cosine
        baseline of `cappy_jax.baselines` compares instruction and candidate embeddings with it.
        """
        if self.tokenizer is None:
            raise ValueError("this Scorer has no tokenizer to encode texts with")
        out = np.empty((len(texts), self.config.hidden_size), np.float32)
        for start in range(0, len(texts), self.opts.chunk_pairs):
            enc = self.tokenizer.encode_texts(texts[start:start + self.opts.chunk_pairs], self.opts.max_len)
            out[start:start + len(enc)] = self._run(self._embed, enc.input_ids, enc.token_type_ids, progress)
        return out

    def _run(self, fn: Callable, input_ids: Sequence[np.ndarray], token_type_ids: Sequence[np.ndarray],
             progress: Progress | None) -> np.ndarray:
        """Packs, batches and runs `fn(params, batch) -> [B, S, ...]`; returns `[N, ...]` in input order."""
        if len(input_ids) != len(token_type_ids):
            raise ValueError(f"{len(input_ids)} input_ids for {len(token_type_ids)} token_type_ids")
        lengths = np.array([len(x) for x in input_ids], np.int64)
        if lengths.size and (lengths.max() > self.opts.max_len or lengths.min() < 1):
            raise ValueError(f"pair lengths must be within 1..max_len={self.opts.max_len}, got "
                             f"{int(lengths.min())}..{int(lengths.max())}")
        in_flight: list[tuple[jax.Array, np.ndarray]] = []
        done: list[tuple[np.ndarray, np.ndarray]] = []

        def collect() -> None:
            values, pair_index = in_flight.pop(0)
            done.append((np.asarray(values, np.float32), pair_index))
            if progress is not None:
                progress(int((pair_index >= 0).sum()))

        for plan in plan_batches(lengths, self.opts, multiple_of=len(self.devices)):
            batch = packing.make_batch(input_ids, token_type_ids, plan.rows, max_len=plan.width,
                                       max_segments=self.opts.max_segments, pad_id=self.config.pad_token_id,
                                       num_rows=plan.num_rows)
            pair_index = batch.pop("pair_index")
            del batch["labels"], batch["label_mask"]
            shape = (fn, plan.num_rows, plan.width)
            t = time.perf_counter()
            # Dispatch is asynchronous: the host packs the next batch while this one runs. A new shape's
            # first dispatch waits for its compilation.
            in_flight.append((fn(self.params, jax.device_put(batch, self._rows_sharding)), pair_index))
            if shape not in self._shapes_seen:
                self._shapes_seen.add(shape)
                if (took := time.perf_counter() - t) >= SLOW_FIRST_DISPATCH_S:
                    log.info("compiled batch shape %d rows x %d tokens in %.1f s (once per shape and process; the "
                             "CLIs keep compiled programs in compilation_cache_dir)", plan.num_rows, plan.width, took)
            if len(in_flight) > 2:
                collect()
        while in_flight:
            collect()
        return _unpack([v for v, _ in done], [i for _, i in done], len(lengths))

    def _score_chunk(self, pairs: Sequence[Pair], progress: Progress | None) -> np.ndarray:
        if self.tokenizer is None:
            raise ValueError("this Scorer has no tokenizer: score pre-encoded pairs with score_tokens")
        enc = self.tokenizer.encode_pairs([p[0] for p in pairs], [p[1] for p in pairs], self.opts.max_len)
        return self.score_tokens(enc.input_ids, enc.token_type_ids, progress=progress)
