"""The Cappy scorer: a RoBERTa/BERT encoder with a one-output regression head.

One Flax module family covers both checkpoint families, because they differ
only in data (position offset, token-type vocabulary, epsilon), not in shape:
learned absolute positions, post-LayerNorm blocks, exact GELU, and the HF
sequence-classification head (dense, tanh, out_proj with one output).

The model reads the packed batch format (see `cappy_jax/packing.py`): a row of
`L` tokens holds up to `S` pairs, told apart by `segment_ids`; attention stays
inside a segment and each segment's score is read at its first token
(`cls_index`). One pair per row is the special case `S = 1`. The last layer is
computed at those positions only (`last_layer_queries`), the one place its
outputs are read.

Every parameter carries logical axis names (`vocab`, `embed`, `heads`, `kv`,
`mlp`, `position`, `token_type`, `score`) so training can shard it with a rules
table (`nn.logical_to_mesh_sharding`).
"""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Literal

import flax.linen as nn
import jax
import jax.numpy as jnp

if TYPE_CHECKING:
    from cappy_jax.sharding import Layout

Array = jax.Array

FAMILIES = ("roberta", "bert")
HEAD_ACTIVATIONS = ("sigmoid", "identity")
ATTENTION_IMPLS = ("auto", "xla", "cudnn", "cudnn-ragged", "splash")
DTYPES = ("auto", "float32", "bfloat16", "float16")
# `fp8`: the layers' matmuls in float8 (e4m3), forward passes only (`fp8_dot_general`).
QUANTIZE = ("none", "fp8")
# HF `hidden_act` names and whether they use the tanh approximation of GELU.
ACTIVATIONS = {
    "gelu": False,
    "gelu_python": False,
    "gelu_new": True,
    "gelu_fast": True,
    "gelu_pytorch_tanh": True,
    "relu": None,
}
# HF `model_type` -> our family; these share the BERT/RoBERTa weight layout.
HF_MODEL_TYPES = {"roberta": "roberta", "xlm-roberta": "roberta", "camembert": "roberta", "bert": "bert"}


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Architecture plus the run-time knobs that change how it is computed.

    Stored as JSON with every checkpoint, so a checkpoint alone says how to
    rebuild its model and how to read its output (`head_activation`).
    """

    family: Literal["roberta", "bert"] = "roberta"
    vocab_size: int = 50265
    hidden_size: int = 1024
    num_layers: int = 24
    num_heads: int = 16
    intermediate_size: int = 4096
    max_position_embeddings: int = 514
    type_vocab_size: int = 1
    layer_norm_eps: float = 1e-5
    hidden_act: str = "gelu"
    pad_token_id: int = 1
    # Position id of a segment's first token: RoBERTa counts from padding_idx + 1, BERT from 0.
    position_offset: int = 2
    # `sigmoid` gives a score in [0, 1]; `identity` reproduces raw-logit checkpoints (btan2/cappy-large).
    head_activation: Literal["sigmoid", "identity"] = "sigmoid"
    dropout_rate: float = 0.1
    # `auto`: bfloat16 on accelerators, float32 on CPU. Parameters are always float32.
    dtype: str = "auto"
    remat: bool = False
    # One layer compiled and run 24 times by `nn.scan` instead of 24 copies: compile time stops growing
    # with depth. Parameters are then stacked (`layers/layer/...`, a leading layer axis); `relayout`
    # converts, and scorer directories and HF exports hold the unrolled `layer_i` layout either way.
    scan_layers: bool = False
    # `auto`: the cuDNN fused kernel on GPU, XLA elsewhere. `cudnn` hands it the segment mask as a
    # dense bias; `cudnn-ragged` (Hopper or newer) gives it each segment's start and length instead,
    # so no bias is read or differentiated and no score is computed across segments (`attend`).
    # `splash`: Pallas's TPU kernel, told each token's segment (off a TPU, Pallas's slow interpreter).
    attention: str = "auto"
    # `fp8`: the six matmuls of every layer in float8 with per-token and per-output-channel scales
    # (`fp8_dot_general`), for scoring on GPUs with fp8 tensor cores; forward passes only.
    quantize: str = "none"
    initializer_range: float = 0.02

    def __post_init__(self) -> None:
        problems = []
        if self.family not in FAMILIES:
            problems.append(f"family={self.family!r} is not one of {FAMILIES}")
        if self.head_activation not in HEAD_ACTIVATIONS:
            problems.append(f"head_activation={self.head_activation!r} is not one of {HEAD_ACTIVATIONS}")
        if self.hidden_act not in ACTIVATIONS:
            problems.append(f"hidden_act={self.hidden_act!r} is not one of {sorted(ACTIVATIONS)}")
        if self.attention not in ATTENTION_IMPLS:
            problems.append(f"attention={self.attention!r} is not one of {ATTENTION_IMPLS}")
        if self.dtype not in DTYPES:
            problems.append(f"dtype={self.dtype!r} is not one of {DTYPES}")
        if self.quantize not in QUANTIZE:
            problems.append(f"quantize={self.quantize!r} is not one of {QUANTIZE}")
        if self.num_heads <= 0 or self.hidden_size % self.num_heads:
            problems.append(f"hidden_size={self.hidden_size} is not divisible by num_heads={self.num_heads}")
        if not 0.0 <= self.dropout_rate < 1.0:
            problems.append(f"dropout_rate={self.dropout_rate} is not in [0, 1)")
        for name in ("vocab_size", "hidden_size", "num_layers", "intermediate_size", "max_position_embeddings"):
            if getattr(self, name) <= 0:
                problems.append(f"{name}={getattr(self, name)} must be positive")
        if self.type_vocab_size < 0 or self.position_offset < 0:
            problems.append("type_vocab_size and position_offset must be >= 0")
        if problems:
            raise ValueError("invalid ModelConfig: " + "; ".join(problems))

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def last_layer_at_heads(self) -> bool:
        """Whether the last layer runs only where the head reads (`last_layer_queries`); a scanned
        stack runs its layers alike, so it computes the last one in full."""
        return not self.scan_layers

    @property
    def max_len(self) -> int:
        """Longest row the position table allows."""
        return self.max_position_embeddings - self.position_offset

    def compute_dtype(self) -> jnp.dtype:
        return jnp.dtype(self._dtype_on(jax.default_backend()))

    def _dtype_on(self, platform: str) -> str:
        """`dtype='auto'`: float32 on a CPU, bfloat16 on accelerators."""
        return self.dtype if self.dtype != "auto" else ("float32" if platform == "cpu" else "bfloat16")

    def for_platform(self, platform: str) -> ModelConfig:
        """The `auto` knobs (`dtype`, `attention`) resolved as they are on `platform`: for compiling on one
        machine for another (`train_compile`)."""
        return self.replace(dtype=self._dtype_on(platform), attention=self._attention_on(platform))

    def attention_impl(self) -> str:
        """`auto`: cuDNN's fused kernel where it runs (a GPU, 16-bit compute, head size a multiple of 8
        up to 128), XLA's attention elsewhere, so float32 runs on a GPU work too."""
        return self._attention_on(jax.default_backend())

    def _attention_on(self, platform: str) -> str:
        if self.attention != "auto":
            return self.attention
        fused_ok = (platform == "gpu" and self._dtype_on(platform) in ("bfloat16", "float16")
                    and self.head_dim % 8 == 0 and self.head_dim <= 128)
        return "cudnn" if fused_ok else "xla"

    def replace(self, **changes: Any) -> ModelConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ModelConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown ModelConfig keys {unknown}; known keys are {sorted(known)}")
        return cls(**d)

    @classmethod
    def from_hf(cls, hf: Mapping[str, Any], **overrides: Any) -> ModelConfig:
        """Reads an HF `config.json` dict of a BERT or RoBERTa model."""
        model_type = hf.get("model_type")
        if model_type not in HF_MODEL_TYPES:
            raise ValueError(
                f"unsupported architecture model_type={model_type!r} (architectures={hf.get('architectures')}); "
                f"cappy_jax reads {sorted(HF_MODEL_TYPES)} checkpoints"
            )
        if hf.get("position_embedding_type", "absolute") != "absolute":
            raise ValueError(
                f"position_embedding_type={hf['position_embedding_type']!r} is not supported; only 'absolute'"
            )
        family = HF_MODEL_TYPES[model_type]
        pad = int(hf.get("pad_token_id", 1 if family == "roberta" else 0))
        values = dict(
            family=family,
            vocab_size=int(hf["vocab_size"]),
            hidden_size=int(hf["hidden_size"]),
            num_layers=int(hf["num_hidden_layers"]),
            num_heads=int(hf["num_attention_heads"]),
            intermediate_size=int(hf["intermediate_size"]),
            max_position_embeddings=int(hf["max_position_embeddings"]),
            type_vocab_size=int(hf.get("type_vocab_size", 2)),
            layer_norm_eps=float(hf.get("layer_norm_eps", 1e-12)),
            hidden_act=str(hf.get("hidden_act", "gelu")),
            pad_token_id=pad,
            position_offset=pad + 1 if family == "roberta" else 0,
            dropout_rate=float(hf.get("hidden_dropout_prob", 0.1)),
            initializer_range=float(hf.get("initializer_range", 0.02)),
        )
        if hf.get("cappy_head_activation") is not None:
            values["head_activation"] = hf["cappy_head_activation"]
        values.update(overrides)
        return cls(**values)

    def to_hf(self) -> dict[str, Any]:
        """The HF `config.json` of a one-output sequence classifier with these weights."""
        arch = "RobertaForSequenceClassification" if self.family == "roberta" else "BertForSequenceClassification"
        return {
            "architectures": [arch],
            "model_type": self.family,
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "num_hidden_layers": self.num_layers,
            "num_attention_heads": self.num_heads,
            "intermediate_size": self.intermediate_size,
            "max_position_embeddings": self.max_position_embeddings,
            "type_vocab_size": self.type_vocab_size,
            "layer_norm_eps": self.layer_norm_eps,
            "hidden_act": self.hidden_act,
            "pad_token_id": self.pad_token_id,
            "hidden_dropout_prob": self.dropout_rate,
            "attention_probs_dropout_prob": self.dropout_rate,
            "initializer_range": self.initializer_range,
            "position_embedding_type": "absolute",
            "num_labels": 1,
            "id2label": {"0": "score"},
            "label2id": {"score": 0},
            "problem_type": "regression",
            # Not read by transformers: tells `from-hf` (and users) how to turn the logit into a score.
            "cappy_head_activation": self.head_activation,
        }


def apply_head_activation(logits: Array, activation: str) -> Array:
    """Turns head logits into scores the way the checkpoint was trained to be read."""
    if activation == "sigmoid":
        return jax.nn.sigmoid(logits)
    if activation == "identity":
        return logits
    raise ValueError(f"head activation {activation!r} is not one of {HEAD_ACTIVATIONS}")


def _init(config: ModelConfig, names: tuple[str | None, ...]) -> nn.initializers.Initializer:
    return nn.with_logical_partitioning(nn.initializers.normal(config.initializer_range), names)


def _zeros(names: tuple[str | None, ...]) -> nn.initializers.Initializer:
    return nn.with_logical_partitioning(nn.initializers.zeros_init(), names)


def _layer_norm(config: ModelConfig, dtype: jnp.dtype, name: str) -> nn.LayerNorm:
    return nn.LayerNorm(
        epsilon=config.layer_norm_eps,
        dtype=dtype,
        scale_init=nn.with_logical_partitioning(nn.initializers.ones_init(), ("embed",)),
        bias_init=_zeros(("embed",)),
        name=name,
    )


FP8 = jnp.float8_e4m3fn


def _fp8_quantize(x: Array, axes: tuple[int, ...]) -> tuple[Array, Array]:
    """`x` in float8 scaled so each slice over `axes` spans e4m3's range; the scale keeps those axes at 1."""
    amax = jnp.max(jnp.abs(x.astype(jnp.float32)), axis=axes, keepdims=True)
    # Floored at the smallest normal float32: a smaller scale flushes to zero, and an all-zero row
    # (padding) would divide 0 by 0.
    scale = jnp.maximum(amax / float(jnp.finfo(FP8).max), jnp.finfo(jnp.float32).tiny)
    return (x.astype(jnp.float32) / scale).astype(FP8), scale


def fp8_dot_general(lhs: Array, rhs: Array, dimension_numbers: Any, precision: Any = None,
                    preferred_element_type: Any = None) -> Array:
    """`lax.dot_general` with both operands in float8 (e4m3): one scale per row of `lhs` (each token)
    and per output column of `rhs` (each output channel). Both factor out of the sum, so they are
    applied to the product afterwards and the product itself is a plain float8 matmul, which XLA hands
    to the fp8 tensor cores of Hopper-class GPUs (elsewhere it computes it in higher precision). The
    quantized activation costs no extra memory traffic: it is written at half bfloat16's bytes and the
    matmul reads half as much. `precision` is ignored; no batch dimensions (Dense has none)."""
    (lhs_contract, rhs_contract), (lhs_batch, rhs_batch) = dimension_numbers
    if lhs_batch or rhs_batch:
        raise ValueError("fp8_dot_general takes no batch dimensions")
    lhs_contract = tuple(a % lhs.ndim for a in lhs_contract)
    rhs_contract = tuple(a % rhs.ndim for a in rhs_contract)
    q_lhs, lhs_scale = _fp8_quantize(lhs, lhs_contract)
    q_rhs, rhs_scale = _fp8_quantize(rhs, rhs_contract)
    out_dtype = preferred_element_type or jnp.result_type(lhs, rhs)
    y = jax.lax.dot_general(q_lhs, q_rhs, dimension_numbers, preferred_element_type=out_dtype)
    # y's axes: lhs's free axes, then rhs's; each scale is 1 along its operand's contracted axes.
    lhs_free = [d for a, d in enumerate(lhs.shape) if a not in lhs_contract]
    rhs_free = [d for a, d in enumerate(rhs.shape) if a not in rhs_contract]
    lhs_scale = lhs_scale.reshape(*lhs_free, *[1] * len(rhs_free))
    rhs_scale = rhs_scale.reshape(rhs_free)
    return (y.astype(jnp.float32) * lhs_scale * rhs_scale).astype(out_dtype)


def _matmul(config: ModelConfig, deterministic: bool) -> Callable[..., Array] | None:
    """The layers' Dense `dot_general`: XLA's, or float8 for scoring (`ModelConfig.quantize`)."""
    if config.quantize == "none":
        return None
    if not deterministic:
        raise ValueError(f"quantize={config.quantize!r} is for forward passes (scoring); train with "
                         f"quantize='none'")
    return fp8_dot_general


def _activation(name: str, x: Array) -> Array:
    approximate = ACTIVATIONS[name]
    if approximate is None:
        return jax.nn.relu(x)
    return jax.nn.gelu(x, approximate=approximate)


def dropout(x: Array, rate: float, rng: Array) -> Array:
    """Inverted dropout that spends 16 random bits per element, where `jax.random.bernoulli` spends a
    whole threefry evaluation (20 rounds of integer arithmetic): one 32-bit draw decides two elements,
    halving the hashing and the random words kept for the backward pass. An element is dropped when
    its 16 bits fall below round(rate x 2^16), a drop rate within 2^-17 of `rate`."""
    if rate == 0.0:
        return x
    n = x.shape[-1]
    words = jax.random.bits(rng, x.shape[:-1] + ((n + 1) // 2,), jnp.uint32)
    halves = jnp.stack([words & 0xFFFF, words >> 16], axis=-1).reshape(x.shape[:-1] + (2 * words.shape[-1],))
    keep = halves[..., :n] >= jnp.uint32(round(rate * 65536))
    return jnp.where(keep, x / jnp.asarray(1.0 - rate, x.dtype), jnp.zeros((), x.dtype))


class Dropout(nn.Module):
    """`dropout` on the `dropout` RNG stream when not deterministic (the stream nn.Dropout uses)."""

    rate: float
    deterministic: bool

    @nn.compact
    def __call__(self, x: Array) -> Array:
        if self.deterministic or self.rate == 0.0:
            return x
        return dropout(x, self.rate, self.make_rng("dropout"))


class Embed(nn.Embed):
    """`nn.Embed` (same parameter) whose table can be pinned before its lookup. Training passes a
    `layout` that gathers the table whole over the fsdp axis, as the partitioner gathers every other
    weight before its use. Looked up from the table as sharded (hidden over fsdp), the embeddings and
    their `[rows, tokens, hidden]` gradient came out split by hidden and were resharded by rows through
    a full copy on every device ("involuntary full rematerialization"): roberta-large with fsdp=16 on a
    v4-32 needed 54.75 GiB of temporaries a chip, 17.2 GiB with the gather (BENCHMARKS.md)."""

    rows_axis: str | None = None  # the table's first logical axis, kept as the rules shard it
    layout: Layout | None = None

    def __call__(self, inputs: Array) -> Array:
        if self.layout is None or self.num_embeddings == 1:
            return super().__call__(inputs)
        return jnp.take(self.layout.constrain(self.embedding, (self.rows_axis, None)), inputs, axis=0)


class Embeddings(nn.Module):
    config: ModelConfig
    deterministic: bool
    layout: Layout | None = None

    @nn.compact
    def __call__(self, input_ids: Array, position_ids: Array, token_type_ids: Array) -> Array:
        cfg = self.config

        def lookup(name: str, axis: str, rows: int, ids: Array) -> Array:
            return Embed(rows, cfg.hidden_size, embedding_init=_init(cfg, (axis, "embed")), rows_axis=axis,
                         layout=self.layout, name=name)(ids)

        x = lookup("word_embeddings", "vocab", cfg.vocab_size, input_ids)
        x = x + lookup("position_embeddings", "position", cfg.max_position_embeddings,
                       position_ids + cfg.position_offset)
        if cfg.type_vocab_size:
            x = x + lookup("token_type_embeddings", "token_type", cfg.type_vocab_size, token_type_ids)
        x = _layer_norm(cfg, cfg.compute_dtype(), "layer_norm")(x)
        return Dropout(cfg.dropout_rate, deterministic=self.deterministic)(x)


def attention_inputs(impl: str, segment_ids: Array, num_segments: int) -> dict[str, Array]:
    """What `attend` needs to keep attention inside segments, computed once for all layers.

    XLA and `cudnn` take a dense mask `[B, 1, L, L]`: tokens attend within their own segment, and
    padding (segment 0) attends to padding only, so no row is fully masked. `cudnn-ragged` takes
    cuDNN's ragged layout: `lengths[B, S]` and `starts[B, S + 1]` of the segments, -1 for empty slots
    (segments are contiguous runs of tokens, as `packing.make_batch` lays them out), and `valid[B, L]`.
    """
    if impl != "cudnn-ragged":
        mask = segment_ids[:, None, :, None] == segment_ids[:, None, None, :]
        return {"mask": mask, "segment_ids": segment_ids} if impl == "splash" else {"mask": mask}
    slots = jnp.arange(1, num_segments + 1, dtype=segment_ids.dtype)
    member = segment_ids[:, None, :] == slots[None, :, None]  # [B, S, L]
    lengths = member.sum(-1, dtype=jnp.int32)
    starts = jnp.argmax(member, axis=-1).astype(jnp.int32)
    lengths, starts = jnp.where(lengths > 0, lengths, -1), jnp.where(lengths > 0, starts, -1)
    starts = jnp.concatenate([starts, jnp.full((starts.shape[0], 1), -1, jnp.int32)], axis=1)
    return {"lengths": lengths, "starts": starts, "valid": segment_ids > 0}


def last_layer_queries(segment_ids: Array, cls_index: Array) -> dict[str, Array]:
    """The head reads one position per segment, so the last layer's outputs are needed there only: its
    queries, LayerNorms and MLP then run on `[B, S]` positions instead of `[B, L]` (keys and values still
    cover the row), about 85% of one layer's FLOPs saved. `mask[B, 1, S, L]`: each query attends to its own
    token's segment, exactly its row of the full mask, so outputs are those of the full layer there."""
    own = jnp.take_along_axis(segment_ids, cls_index, axis=1)  # [B, S]
    return {"index": cls_index, "mask": (own[:, :, None] == segment_ids[:, None, :])[:, None]}


def attend(q: Array, k: Array, v: Array, inputs: Mapping[str, Array], impl: str,
           layout: Layout | None = None) -> Array:
    """Scaled dot-product attention `[B, L, N, H]` within segments.

    With `cudnn-ragged` each segment is its own sequence to cuDNN (one pair per row: its padding mask
    from the pair's length). Positions outside every segment are zeroed on the way in and out, so
    whatever the kernel leaves there reaches neither the output nor the gradients. `splash`: see
    `splash_attention`.
    """
    if impl == "splash":
        return splash_attention(q, k, v, inputs, layout)
    if impl != "cudnn-ragged":
        return jax.nn.dot_product_attention(q, k, v, mask=inputs["mask"], implementation=impl)
    from jax._src.cudnn import fused_attention_stablehlo as cudnn  # the only way to reach the ragged layout

    valid = inputs["valid"][:, :, None, None]
    q, k, v = (jnp.where(valid, t, jnp.zeros((), t.dtype)) for t in (q, k, v))
    lengths, starts = inputs["lengths"], inputs["starts"]
    scale = q.shape[-1] ** -0.5
    if lengths.shape[1] == 1:  # one pair per row: a padding mask (the packed layout needs 2+ slots)
        n = jnp.maximum(lengths[:, 0], 0)
        y = cudnn.dot_product_attention(q, k, v, q_seqlen=n, kv_seqlen=n, scale=scale,
                                        mask_type=cudnn.MaskType.PADDING)
    else:
        y = cudnn.dot_product_attention(q, k, v, q_seqlen=lengths, kv_seqlen=lengths, q_offsets=starts,
                                        kv_offsets=starts, scale=scale, mask_type=cudnn.MaskType.NO_MASK)
    return jnp.where(valid, y, jnp.zeros((), y.dtype))


SPLASH_BLOCK = 512  # splash's query and key blocks: whole rows up to 512 tokens (its default), at most


def _splash_kernel(heads: int, length: int, interpret: bool) -> Callable:
    from jax.experimental.pallas.ops.tpu import splash_attention as splash

    block = min(length, SPLASH_BLOCK)
    sizes = splash.BlockSizes(block_q=block, block_kv=block, block_kv_compute=block, block_q_dkv=block,
                              block_kv_dkv=block, block_kv_dkv_compute=block, block_q_dq=block, block_kv_dq=block)
    mask = splash.MultiHeadMask([splash.FullMask((length, length)) for _ in range(heads)])
    kernel = splash.make_splash_mha(mask, block_sizes=sizes, head_shards=1, q_seq_shards=1, interpret=interpret)
    return jax.vmap(lambda q, k, v, s: kernel(q, k, v, segment_ids=splash.SegmentIds(q=s, kv=s)))


def splash_attention(q: Array, k: Array, v: Array, inputs: Mapping[str, Array], layout: Layout | None) -> Array:
    """Pallas's splash attention (TPU): a fused kernel told each token's segment id, so no `[B, N, L, L]`
    scores are kept for the backward pass, as XLA's attention keeps them. Padding (segment 0) attends to
    padding, as in the dense mask. The partitioner cannot split a Pallas kernel, so on a mesh
    (`layout`) it runs per device, on its rows and heads. Rows not a multiple of 128 tokens (scoring's
    narrow batches) take XLA's attention. Off a TPU it runs in Pallas's interpreter: slow, for tests."""
    length = q.shape[1]
    if length % 128:
        return jax.nn.dot_product_attention(q, k, v, mask=inputs["mask"], implementation="xla")
    platform = layout.platform if layout is not None else jax.default_backend()
    if platform == "gpu":
        raise ValueError("attention='splash' is a TPU kernel (on a GPU it would run in Pallas's interpreter): "
                         "use 'auto', 'cudnn' or 'cudnn-ragged'")

    def run(q: Array, k: Array, v: Array, segment_ids: Array) -> Array:
        kernel = _splash_kernel(q.shape[2], length, platform != "tpu")
        q = q * jnp.asarray(q.shape[-1] ** -0.5, q.dtype)  # splash does not scale
        y = kernel(*(t.transpose(0, 2, 1, 3) for t in (q, k, v)), segment_ids)  # it takes [B, N, L, H]
        return y.transpose(0, 2, 1, 3)

    if layout is None:
        return run(q, k, v, inputs["segment_ids"])
    heads = ("batch", None, "heads", None)
    return layout.per_shard(run, (heads, heads, heads, ("batch", None)), heads)(q, k, v, inputs["segment_ids"])


class SelfAttention(nn.Module):
    config: ModelConfig
    deterministic: bool
    layout: Layout | None = None

    @nn.compact
    def __call__(self, x: Array, attn: Mapping[str, Array], queries: Mapping[str, Array] | None = None) -> Array:
        """Outputs at every position, or with `queries` (`last_layer_queries`) at those positions only."""
        cfg = self.config
        dtype = cfg.compute_dtype()
        matmul = _matmul(cfg, self.deterministic)

        def project(name: str, h: Array) -> Array:
            return nn.DenseGeneral((cfg.num_heads, cfg.head_dim), dtype=dtype, dot_general=matmul,
                                   kernel_init=_init(cfg, ("embed", "heads", "kv")),
                                   bias_init=_zeros(("heads", "kv")), name=name)(h)

        k, v = project("key", x), project("value", x)
        # Attention probabilities get no dropout: jax's fused attention offers none (its private cuDNN
        # wrapper fixes the seed at compile time, so the mask would repeat every step).
        if queries is None:
            y = attend(project("query", x), k, v, attn, cfg.attention_impl(), self.layout)
        else:  # a few queries a row: XLA's attention over a [B, 1, S, L] mask is cheap, whatever the kernel
            q = project("query", jnp.take_along_axis(x, queries["index"][..., None], axis=1))
            y = jax.nn.dot_product_attention(q, k, v, mask=queries["mask"], implementation="xla")
        return nn.DenseGeneral(cfg.hidden_size, axis=(-2, -1), dtype=dtype, dot_general=matmul,
                               kernel_init=_init(cfg, ("heads", "kv", "embed")),
                               bias_init=_zeros(("embed",)), name="out")(y)


class Layer(nn.Module):
    """One post-LayerNorm transformer block, as in BERT and RoBERTa."""

    config: ModelConfig
    deterministic: bool
    layout: Layout | None = None

    @nn.compact
    def __call__(self, x: Array, attn: Mapping[str, Array], queries: Mapping[str, Array] | None = None) -> Array:
        """`[B, L, H]`, or with `queries` the outputs at their positions only, `[B, S, H]`."""
        cfg = self.config
        dtype = cfg.compute_dtype()
        drop = Dropout(cfg.dropout_rate, deterministic=self.deterministic)
        h = SelfAttention(cfg, self.deterministic, self.layout, name="attention")(x, attn, queries)
        if queries is not None:
            x = jnp.take_along_axis(x, queries["index"][..., None], axis=1)
        x = _layer_norm(cfg, dtype, "attention_norm")(x + drop(h))
        matmul = _matmul(cfg, self.deterministic)
        h = nn.Dense(cfg.intermediate_size, dtype=dtype, dot_general=matmul, kernel_init=_init(cfg, ("embed", "mlp")),
                     bias_init=_zeros(("mlp",)), name="mlp_in")(x)
        # GELU's erf terms are recomputed in the backward pass rather than kept: two fewer [B, L, 4H]
        # tensors a layer written and read back (same values; BENCHMARKS.md, "memory for one H100").
        h = jax.checkpoint(functools.partial(_activation, cfg.hidden_act))(h)
        h = nn.Dense(cfg.hidden_size, dtype=dtype, dot_general=matmul, kernel_init=_init(cfg, ("mlp", "embed")),
                     bias_init=_zeros(("embed",)), name="mlp_out")(h)
        return _layer_norm(cfg, dtype, "mlp_norm")(x + drop(h))


class _ScanStep(nn.Module):
    """`Layer` in the (carry, output) form `nn.scan` wants."""

    config: ModelConfig
    deterministic: bool
    layout: Layout | None = None

    @nn.compact
    def __call__(self, x: Array, attn: Mapping[str, Array]) -> tuple[Array, None]:
        return Layer(self.config, self.deterministic, self.layout, name="layer")(x, attn), None


class ScoreHead(nn.Module):
    """HF's classification head: dense, tanh, out_proj with one output."""

    config: ModelConfig
    deterministic: bool

    @nn.compact
    def __call__(self, cls: Array) -> Array:
        cfg = self.config
        drop = Dropout(cfg.dropout_rate, deterministic=self.deterministic)
        h = nn.Dense(cfg.hidden_size, dtype=jnp.float32, kernel_init=_init(cfg, ("embed", "mlp")),
                     bias_init=_zeros(("mlp",)), name="dense")(drop(cls.astype(jnp.float32)))
        h = jnp.tanh(h)
        out = nn.Dense(1, dtype=jnp.float32, kernel_init=_init(cfg, ("mlp", "score")),
                       bias_init=_zeros(("score",)), name="out_proj")(drop(h))
        return out[..., 0]


class Scorer(nn.Module):
    """Encoder + head. `__call__(batch)` returns one logit per segment slot, `[B, S]`.

    `batch` holds `input_ids`, `segment_ids`, `position_ids` (0-based within each
    segment), `cls_index` and, where the checkpoint has token types,
    `token_type_ids`. Logits of empty slots are meaningless; mask them.
    """

    config: ModelConfig
    layout: Layout | None = None  # the mesh it runs on, when placements matter (`Embed`, `attend`'s splash)

    @nn.compact
    def __call__(self, batch: Mapping[str, Array], *, deterministic: bool = True,
                 mean_pool: bool = False) -> Array:
        """Logits `[B, S]`; with `mean_pool`, each segment's mean final hidden state `[B, S, H]` instead
        (the sentence embedding of encoders such as all-MiniLM-L6-v2; the head is not run)."""
        cfg = self.config
        input_ids = batch["input_ids"]
        segment_ids = batch["segment_ids"]
        token_type_ids = batch.get("token_type_ids")
        if token_type_ids is None:
            token_type_ids = jnp.zeros_like(input_ids)
        x = Embeddings(cfg, deterministic, self.layout, name="embeddings")(
            input_ids, batch["position_ids"], token_type_ids)
        attn = attention_inputs(cfg.attention_impl(), segment_ids, batch["cls_index"].shape[1])
        if cfg.scan_layers:
            step = nn.remat(_ScanStep, prevent_cse=False) if cfg.remat else _ScanStep
            x, _ = nn.scan(step, variable_axes={"params": 0}, split_rngs={"params": True, "dropout": True},
                           in_axes=(nn.broadcast,), length=cfg.num_layers,
                           metadata_params={nn.PARTITION_NAME: "layers"})(cfg, deterministic, self.layout,
                                                                          name="layers")(x, attn)
        else:
            layer_cls = nn.remat(Layer, prevent_cse=True) if cfg.remat else Layer
            for i in range(cfg.num_layers):
                last = i == cfg.num_layers - 1 and not mean_pool
                queries = last_layer_queries(segment_ids, batch["cls_index"]) if last else None
                x = layer_cls(cfg, deterministic, self.layout, name=f"layer_{i}")(x, attn, queries)
        if mean_pool:
            slots = jnp.arange(1, batch["cls_index"].shape[1] + 1, dtype=segment_ids.dtype)
            member = (segment_ids[:, :, None] == slots).astype(jnp.float32)  # [B, L, S]
            sums = jnp.einsum("bls,blh->bsh", member, x.astype(jnp.float32))
            return sums / jnp.maximum(member.sum(1), 1.0)[..., None]
        if not cfg.last_layer_at_heads:  # else the last layer ran at the segments' first tokens only
            x = jnp.take_along_axis(x, batch["cls_index"][..., None], axis=1)
        return ScoreHead(cfg, deterministic, name="head")(x)  # x: [B, S, H]


def dummy_batch(batch_size: int = 1, max_len: int = 8, max_segments: int = 1) -> dict[str, jnp.ndarray]:
    """A minimal batch of the right shapes and dtypes, for `init` and `eval_shape`."""
    shape = (batch_size, max_len)
    return {
        "input_ids": jnp.zeros(shape, jnp.int32),
        "segment_ids": jnp.ones(shape, jnp.int32),
        "position_ids": jnp.zeros(shape, jnp.int32),
        "token_type_ids": jnp.zeros(shape, jnp.int32),
        "cls_index": jnp.zeros((batch_size, max_segments), jnp.int32),
    }


def init_params(config: ModelConfig, rng: Array) -> dict[str, Any]:
    """Float32 parameters, unboxed (plain arrays); logical names come from `param_logical_axes`."""
    variables = Scorer(config).init(rng, dummy_batch())
    return nn.unbox(variables["params"])


def abstract_params(config: ModelConfig) -> dict[str, Any]:
    """Shapes and dtypes of the parameters, without allocating them."""
    return jax.eval_shape(lambda: init_params(config, jax.random.key(0)))


def param_logical_axes(config: ModelConfig) -> dict[str, Any]:
    """A tree of `PartitionSpec`s of logical axis names, matching the parameter tree."""
    boxed = jax.eval_shape(lambda: Scorer(config).init(jax.random.key(0), dummy_batch()))
    return nn.get_partition_spec(boxed)["params"]


def relayout(params: Mapping[str, Any], src: ModelConfig, dst: ModelConfig) -> dict[str, Any]:
    """Parameters of a `src`-configured model in `dst`'s layer layout (stacked for `scan_layers`). Pure."""
    out = dict(params)
    if src.scan_layers and not dst.scan_layers:
        stacked = out.pop("layers")["layer"]
        for i in range(src.num_layers):
            out[f"layer_{i}"] = jax.tree.map(lambda a, i=i: a[i], stacked)
    elif dst.scan_layers and not src.scan_layers:
        layers = [out.pop(f"layer_{i}") for i in range(src.num_layers)]
        out["layers"] = {"layer": jax.tree.map(lambda *a: jnp.stack(a), *layers)}
    return out


def count_params(tree: Any) -> int:
    return sum(int(x.size) for x in jax.tree.leaves(tree))


def mean_embeddings(config: ModelConfig, params: Any, batch: Mapping[str, Array],
                    layout: Layout | None = None) -> Array:
    """Per-segment mean-pooled final hidden states `[B, S, H]`, float32; a pure function to jit."""
    return Scorer(config, layout).apply({"params": params}, batch, mean_pool=True)


def score(config: ModelConfig, params: Any, batch: Mapping[str, Array], layout: Layout | None = None) -> Array:
    """Scores `[B, S]` in the checkpoint's output range; a pure function to jit."""
    logits = Scorer(config, layout).apply({"params": params}, batch)
    return apply_head_activation(logits, config.head_activation)


# The encoder layers' Dense modules: they cast their kernel and bias to the compute dtype on every call.
_MATMULS = ("query", "key", "value", "out", "mlp_in", "mlp_out")


def inference_params(config: ModelConfig, params: Any) -> Any:
    """Parameters for forward passes only: the layers' matmul kernels and biases stored in the compute
    dtype, the cast their Dense modules make on every call done once, at half their memory. Outputs are
    bitwise those of the float32 parameters; embeddings, LayerNorms and the head stay float32."""
    dtype = config.compute_dtype()
    if dtype == jnp.float32:
        return params

    def cast(path: tuple[Any, ...], leaf: Any) -> Any:
        names = [getattr(p, "key", None) for p in path]
        return leaf.astype(dtype) if len(names) >= 2 and names[-2] in _MATMULS else leaf

    return jax.tree_util.tree_map_with_path(cast, params)
