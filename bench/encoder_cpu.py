"""Suite `encoder-cpu`: a training step of our encoder against transformers' PyTorch model on CPU.

Why: before any accelerator number means anything, the Flax encoder must not be
slower than the reference implementation on the same work. Both sides get the
same architecture, the same weights (converted with `convert.params_from_hf`),
the same float32 batch of full-length rows (no padding, so no side can skip
work) and dropout off; each step is forward + backward of the summed logits.
Ours is one `jax.jit(jax.value_and_grad(loss))` call, timed to
`block_until_ready`; theirs is eager `loss.backward()` with the model in eval
mode and gradients on. Compilation and warm-up are timed apart from the steps.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from bench import report
from bench.report import Column

if TYPE_CHECKING:  # heavy imports happen inside the functions that need them
    import torch

    from cappy_jax.model import ModelConfig

CASES = ("tiny", "minilm")
# Timed steps per case when `--steps` is not given: about a minute in all on 2 cores.
DEFAULT_STEPS = {"tiny": 20, "minilm": 10}
DEFAULT_WARMUP = 3
ROWS, SEQ_LEN = 16, 128
# First token of a row: RoBERTa's <s>, BERT's [CLS] (all-MiniLM-L6-v2 vocabulary).
CLS_ID = {"roberta": 0, "bert": 101}

NOTE = (f"forward + backward of sum(logits), float32, {ROWS} rows x {SEQ_LEN} tokens, one pair per row "
        "without padding, dropout off, same weights both sides; median seconds per step after compile "
        "and warm-up, the two sides taking turns; other load = share of the cores other processes used "
        "while timing; ours/theirs = ours tokens/s ÷ theirs tokens/s (>1: ours faster)")

COLUMNS = (
    Column("shape", "case"),
    Column("params", "params", ",d"),
    Column("rows×tokens", "batch"),
    Column("ours step (s)", "ours_step_s", ".4f"),
    Column("theirs step (s)", "theirs_step_s", ".4f"),
    Column("ours tokens/s", "ours_tokens_per_s", ",.0f"),
    Column("theirs tokens/s", "theirs_tokens_per_s", ",.0f"),
    Column("ours pairs/s", "ours_pairs_per_s", ",.1f"),
    Column("theirs pairs/s", "theirs_pairs_per_s", ",.1f"),
    Column("ours/theirs", "ratio", ".2f"),
    Column("our compile (s)", "ours_compile_s", ".2f"),
    Column("steps", "steps", "d"),
    Column("torch threads", "torch_threads", "d"),
    Column("other load", "other_load", ".0%"),
    Column("max abs logit diff", "max_abs_logit_diff", ".1e"),
)


def model_config(case: str) -> ModelConfig:
    """Float32, XLA attention: the CPU computation whatever the default backend is."""
    from cappy_jax import model as model_lib
    from configs import model as model_configs

    if case == "tiny":
        values = model_configs.get_config("tiny").to_dict()
    elif case == "minilm":
        # The shape of sentence-transformers/all-MiniLM-L6-v2 (a BertModel).
        values = dict(family="bert", vocab_size=30522, hidden_size=384, num_layers=6, num_heads=12,
                      intermediate_size=1536, max_position_embeddings=512, type_vocab_size=2,
                      layer_norm_eps=1e-12, hidden_act="gelu", pad_token_id=0, position_offset=0)
    else:
        raise ValueError(f"unknown encoder-cpu case {case!r}; choose from {CASES}")
    values.update(dtype="float32", attention="xla")
    return model_lib.ModelConfig.from_dict(values)


def make_rows(config: ModelConfig, rows: int, seq_len: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Full-length token and type ids. Ids from 5 up are never padding, so HF RoBERTa's
    position ids (counted over non-padding tokens) equal ours."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(5, config.vocab_size, (rows, seq_len)).astype(np.int32)
    ids[:, 0] = CLS_ID[config.family]
    types = np.zeros_like(ids)
    if config.type_vocab_size > 1:
        types[:, seq_len // 2:] = 1  # shaped like a (instruction, response) pair
    return ids, types


def build_hf_model(config: ModelConfig, seed: int = 0) -> torch.nn.Module:
    """transformers' sequence classifier with one output, in eval mode (dropout off)."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification, RobertaConfig, RobertaForSequenceClassification

    hf = {k: v for k, v in config.to_hf().items() if k != "architectures"}
    torch.manual_seed(seed)
    if config.family == "roberta":
        model = RobertaForSequenceClassification(RobertaConfig(**hf))
    else:
        model = BertForSequenceClassification(BertConfig(**hf))
    return model.eval()


def time_interleaved(steps: Mapping[str, Callable[[], Any]], n: int, warmup: int) -> dict[str, list[float]]:
    """Seconds of `n` calls of each step, after `warmup` untimed ones.

    The sides take turns, and who goes first alternates, so a burst of other work
    on the machine slows both alike instead of skewing the ratio.
    """
    for _ in range(warmup):
        for step in steps.values():
            step()
    times: dict[str, list[float]] = {name: [] for name in steps}
    order = list(steps.items())
    for i in range(n):
        for name, step in order if i % 2 == 0 else order[::-1]:
            start = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - start)
    return times


def summarize(case: str, ours_times: Sequence[float], theirs_times: Sequence[float], *, rows: int,
              seq_len: int, **extra: Any) -> dict[str, Any]:
    """One measurement record from the step times; pure, so the arithmetic is testable."""
    ours, theirs = statistics.median(ours_times), statistics.median(theirs_times)
    tokens = rows * seq_len
    record = {
        "case": case,
        "rows": rows,
        "seq_len": seq_len,
        "batch": f"{rows}×{seq_len}",
        "steps": len(ours_times),
        "ours_step_s": ours,
        "ours_step_s_min": min(ours_times),
        "theirs_step_s": theirs,
        "theirs_step_s_min": min(theirs_times),
        "ours_tokens_per_s": tokens / ours,
        "theirs_tokens_per_s": tokens / theirs,
        "ours_pairs_per_s": rows / ours,
        "theirs_pairs_per_s": rows / theirs,
    }
    record["ratio"] = record["ours_tokens_per_s"] / record["theirs_tokens_per_s"]
    return {**record, **extra}


def _agree(ours: np.ndarray | float, theirs: np.ndarray | float) -> tuple[float, bool]:
    """Max abs difference, and whether it is float32 rounding (relative to the values' size).

    Ours and theirs must compute the same function, or the timing compares different work.
    """
    ours, theirs = np.asarray(ours, np.float64), np.asarray(theirs, np.float64)
    diff = float(np.max(np.abs(ours - theirs)))
    return diff, diff <= 1e-6 + 1e-3 * float(np.max(np.abs(theirs)))


def measure_case(case: str, *, steps: int, warmup: int, threads: int, rows: int = ROWS,
                 seq_len: int = SEQ_LEN) -> dict[str, Any]:
    """Builds both models at one shape with the same weights, checks they agree, times both."""
    import jax
    import jax.numpy as jnp
    import torch

    from cappy_jax import convert, packing
    from cappy_jax import model as model_lib

    config = model_config(case)
    if seq_len > config.max_len:
        raise ValueError(f"{case}: {seq_len} tokens exceed the position table ({config.max_len})")
    ids, types = make_rows(config, rows, seq_len)

    hf_model = build_hf_model(config)
    state = {k: v.detach().numpy().copy() for k, v in hf_model.state_dict().items()}
    params, notes = convert.params_from_hf(state, config)
    if any("fresh" in n for n in notes):
        raise AssertionError(f"{case}: weights are not the same on both sides: {notes}")
    ours_count = model_lib.count_params(params)
    theirs_count = sum(p.numel() for p in hf_model.parameters())
    if ours_count != theirs_count:
        raise AssertionError(f"{case}: {ours_count} parameters here, {theirs_count} in transformers")

    cpu = jax.devices("cpu")[0]
    params = jax.device_put(jax.tree.map(jnp.asarray, params), cpu)
    batch = packing.make_batch(list(ids), list(types), [[i] for i in range(rows)], max_len=seq_len,
                               max_segments=1, pad_id=config.pad_token_id)
    if packing.padding_fraction(batch) != 0.0:  # padding would let one side skip work
        raise AssertionError(f"{case}: the batch has padding")
    batch = jax.device_put({k: batch[k] for k in ("input_ids", "segment_ids", "position_ids",
                                                  "token_type_ids", "cls_index")}, cpu)
    scorer = model_lib.Scorer(config)

    def loss(p: Any, b: Mapping[str, jax.Array]) -> jax.Array:
        return jnp.sum(scorer.apply({"params": p}, b, deterministic=True))

    start = time.perf_counter()
    ours_step = jax.jit(jax.value_and_grad(loss)).lower(params, batch).compile()
    compile_s = time.perf_counter() - start

    inputs = dict(input_ids=torch.from_numpy(ids.astype(np.int64)),
                  attention_mask=torch.ones(rows, seq_len, dtype=torch.int64),
                  token_type_ids=torch.from_numpy(types.astype(np.int64)))

    def theirs_step() -> torch.Tensor:
        hf_model.zero_grad(set_to_none=True)
        out = hf_model(**inputs).logits.sum()
        out.backward()
        return out

    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        ours_logits = np.asarray(jax.jit(scorer.apply)({"params": params}, batch))[:, 0]
        with torch.no_grad():
            theirs_logits = hf_model(**inputs).logits[:, 0].numpy()
        diff, same = _agree(ours_logits, theirs_logits)
        if not same:
            raise AssertionError(f"{case}: logits differ by up to {diff}: not the same model")
        with report.OtherLoad() as other:
            times = time_interleaved({"ours": lambda: jax.block_until_ready(ours_step(params, batch)),
                                      "theirs": theirs_step}, steps, warmup)
        # The timed steps compute the same loss: a last check that they did the same work.
        ours_loss = float(ours_step(params, batch)[0])
        theirs_loss = float(theirs_step().detach())
    finally:
        torch.set_num_threads(previous_threads)
    if not _agree(ours_loss, theirs_loss)[1]:
        raise AssertionError(f"{case}: the timed steps computed different losses: {ours_loss} vs {theirs_loss}")

    return summarize(
        case, times["ours"], times["theirs"], rows=rows, seq_len=seq_len, other_load=other.share,
        family=config.family, hidden_size=config.hidden_size, num_layers=config.num_layers,
        params=ours_count, dtype="float32", warmup=warmup, torch_threads=threads,
        hf_attn_implementation=getattr(hf_model.config, "_attn_implementation", None),
        jax_device=cpu.device_kind, ours_compile_s=compile_s, max_abs_logit_diff=diff,
        ours_loss=ours_loss, theirs_loss=theirs_loss,
    )


def run(*, steps: int | None = None, warmup: int | None = None, cases: Sequence[str] | None = None,
        threads: int | None = None) -> list[dict[str, Any]]:
    """All (or the named) cases. `steps=None` uses each case's default; torch gets as many
    threads as this process has cores, because XLA's CPU client uses all of them."""
    cases = CASES if cases is None else tuple(cases)
    unknown = sorted(set(cases) - set(CASES))
    if unknown:
        raise ValueError(f"unknown encoder-cpu cases {unknown}; choose from {CASES}")
    threads = report.usable_cores() if threads is None else threads
    warmup = DEFAULT_WARMUP if warmup is None else warmup
    return [measure_case(c, steps=DEFAULT_STEPS[c] if steps is None else steps, warmup=warmup,
                         threads=threads) for c in cases]
