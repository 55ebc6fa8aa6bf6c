"""HF <-> cappy_jax scorer directories.

    python -m cappy_jax.convert from-hf SRC_DIR DST [--head_activation=identity] [--fresh_head]
    python -m cappy_jax.convert to-hf CKPT DST_DIR

`from-hf` reads `config.json`, the weights (`model.safetensors`, sharded
safetensors, or `pytorch_model.bin` read with `torch.load(weights_only=True)`:
never arbitrary pickled code) and `tokenizer.json` of a BERT or RoBERTa model.
A base model without a head (BertModel, RobertaModel) gets a fresh head; BERT's
pooler becomes the head's dense layer, as in BertForSequenceClassification.

`to-hf` writes `config.json`, `model.safetensors` and the tokenizer, so that
`AutoModelForSequenceClassification.from_pretrained(DST_DIR)` gives the logits
of the scorer (apply `config.cappy_head_activation`, sigmoid by default, to
get the scores).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from typing import Any

import jax
import numpy as np
from etils import epath

from cappy_jax import checkpoint as ckpt_lib
from cappy_jax import model as model_lib

log = logging.getLogger("cappy_jax.convert")  # not __name__: that is __main__ under -m

Transform = Callable[[np.ndarray], np.ndarray]
# (HF name without the encoder prefix, our parameter path, HF -> ours, ours -> HF)
Entry = tuple[str, tuple[str, ...], Transform, Transform]


def _same(x: np.ndarray) -> np.ndarray:
    return x


def _t(x: np.ndarray) -> np.ndarray:
    return x.T


def _dense(hf: str, ours: tuple[str, ...]) -> list[Entry]:
    return [(f"{hf}.weight", (*ours, "kernel"), _t, _t), (f"{hf}.bias", (*ours, "bias"), _same, _same)]


def _norm(hf: str, ours: tuple[str, ...]) -> list[Entry]:
    return [(f"{hf}.weight", (*ours, "scale"), _same, _same), (f"{hf}.bias", (*ours, "bias"), _same, _same)]


def encoder_entries(config: model_lib.ModelConfig) -> list[Entry]:
    """The name and layout map of the encoder, HF names relative to `roberta.`/`bert.`."""
    h, n, d = config.hidden_size, config.num_heads, config.head_dim
    entries: list[Entry] = [
        ("embeddings.word_embeddings.weight", ("embeddings", "word_embeddings", "embedding"), _same, _same),
        ("embeddings.position_embeddings.weight", ("embeddings", "position_embeddings", "embedding"), _same, _same),
        *_norm("embeddings.LayerNorm", ("embeddings", "layer_norm")),
    ]
    if config.type_vocab_size:
        entries.append(("embeddings.token_type_embeddings.weight",
                        ("embeddings", "token_type_embeddings", "embedding"), _same, _same))
    for i in range(config.num_layers):
        hf, ours = f"encoder.layer.{i}", f"layer_{i}"
        for proj in ("query", "key", "value"):
            entries += [
                (f"{hf}.attention.self.{proj}.weight", (ours, "attention", proj, "kernel"),
                 lambda w: w.T.reshape(h, n, d), lambda k: k.reshape(h, h).T),
                (f"{hf}.attention.self.{proj}.bias", (ours, "attention", proj, "bias"),
                 lambda b: b.reshape(n, d), lambda b: b.reshape(h)),
            ]
        entries += [
            (f"{hf}.attention.output.dense.weight", (ours, "attention", "out", "kernel"),
             lambda w: w.T.reshape(n, d, h), lambda k: k.reshape(h, h).T),
            (f"{hf}.attention.output.dense.bias", (ours, "attention", "out", "bias"), _same, _same),
            *_norm(f"{hf}.attention.output.LayerNorm", (ours, "attention_norm")),
            *_dense(f"{hf}.intermediate.dense", (ours, "mlp_in")),
            *_dense(f"{hf}.output.dense", (ours, "mlp_out")),
            *_norm(f"{hf}.output.LayerNorm", (ours, "mlp_norm")),
        ]
    return entries


def head_entries(config: model_lib.ModelConfig, prefix: str) -> tuple[list[Entry], list[Entry]]:
    """(dense layer, output layer) of the HF head, full HF names; `prefix` is the encoder's."""
    if config.family == "roberta":
        return _dense("classifier.dense", ("head", "dense")), _dense("classifier.out_proj", ("head", "out_proj"))
    # BERT's head reads the pooler (part of BertModel, so under the encoder prefix).
    return _dense(f"{prefix}pooler.dense", ("head", "dense")), _dense("classifier", ("head", "out_proj"))


# ---------------------------------------------------------------------------- reading HF


def read_hf_weights(src: epath.Path) -> dict[str, np.ndarray]:
    """All tensors of an HF directory as float32 numpy arrays, without running pickled code."""
    if (src / "model.safetensors").exists():
        return _read_safetensors([src / "model.safetensors"])
    if (src / "model.safetensors.index.json").exists():
        index = json.loads((src / "model.safetensors.index.json").read_text())
        return _read_safetensors([src / f for f in sorted(set(index["weight_map"].values()))])
    if (src / "pytorch_model.bin").exists():
        try:
            import torch
        except ImportError as e:
            raise ImportError(f"{src}/pytorch_model.bin needs torch to read; `pip install torch` "
                              "or save the model with safetensors") from e
        state = torch.load(src / "pytorch_model.bin", map_location="cpu", weights_only=True)
        return {k: v.float().numpy() for k, v in state.items()}
    present = sorted(p.name for p in src.iterdir()) if src.exists() else "the directory does not exist"
    raise FileNotFoundError(f"no weights in {src}: expected model.safetensors, model.safetensors.index.json "
                            f"or pytorch_model.bin; found {present}")


def _read_safetensors(files: list[epath.Path]) -> dict[str, np.ndarray]:
    from safetensors import safe_open

    out = {}
    for f in files:
        # The flax reader understands bfloat16, which numpy alone does not.
        with safe_open(str(f), framework="flax") as st:
            for k in st.keys():
                out[k] = np.asarray(st.get_tensor(k), dtype=np.float32)
    return out


def _legacy_names(state: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Old TF-ported checkpoints call LayerNorm parameters gamma/beta."""
    renamed = {}
    for k, v in state.items():
        if k.endswith("LayerNorm.gamma"):
            k = k[: -len("gamma")] + "weight"
        elif k.endswith("LayerNorm.beta"):
            k = k[: -len("beta")] + "bias"
        renamed[k] = v
    return renamed


def _encoder_prefix(state: Mapping[str, np.ndarray], family: str) -> str:
    for prefix in (f"{family}.", ""):
        if any(k.startswith(prefix + "embeddings.") for k in state):
            return prefix
    sample = sorted(state)[:5]
    raise ValueError(f"no {family} encoder weights found (expected names like "
                     f"'{family}.embeddings.word_embeddings.weight'); the file holds names like {sample}")


def _set(tree: dict, path: tuple[str, ...], value: np.ndarray) -> None:
    for key in path[:-1]:
        tree = tree.setdefault(key, {})
    tree[path[-1]] = value


def _get(tree: Mapping, path: tuple[str, ...]) -> np.ndarray:
    for key in path:
        tree = tree[key]
    return np.asarray(tree, dtype=np.float32)


def params_from_hf(state: Mapping[str, np.ndarray], config: model_lib.ModelConfig, *,
                   fresh_head: bool = False, seed: int = 0) -> tuple[dict[str, Any], list[str]]:
    """Maps an HF state dict onto our parameter tree. Returns (params, notes for the user)."""
    state = _legacy_names(state)
    prefix = _encoder_prefix(state, config.family)
    expected = jax.tree.map(lambda s: s.shape, model_lib.abstract_params(config))
    params: dict[str, Any] = {}
    used, notes = set(), []

    def take(name: str, path: tuple[str, ...], to_ours: Transform) -> None:
        value = to_ours(state[name])
        want = _shape_at(expected, path)
        if tuple(value.shape) != want:
            raise ValueError(f"shape mismatch between checkpoint and config: {name} gives {tuple(value.shape)} "
                             f"for {'/'.join(path)}, the config wants {want}")
        _set(params, path, value)
        used.add(name)

    missing = [prefix + n for n, *_ in encoder_entries(config) if prefix + n not in state]
    if missing:
        raise ValueError(f"{len(missing)} encoder weights are missing, e.g. {missing[:3]}; "
                         "is config.json from the same model as the weights?")
    for name, path, to_ours, _ in encoder_entries(config):
        take(prefix + name, path, to_ours)

    dense, out = head_entries(config, prefix)
    outputs = state[out[0][0]].shape[0] if out[0][0] in state else 1
    if outputs != 1 and not fresh_head:
        raise ValueError(f"the checkpoint's head has {outputs} outputs; a Cappy scorer has one. "
                         "Pass --fresh_head to replace its output layer with a new one-output layer")
    fresh = None
    for part, entries in (("dense", dense), ("out_proj", out)):
        if all(n in state for n, *_ in entries) and not (fresh_head and part == "out_proj"):
            for name, path, to_ours, _ in entries:
                take(name, path, to_ours)
            continue
        if fresh is None:
            fresh = model_lib.init_params(config, jax.random.key(seed))["head"]
        _set(params, ("head", part), jax.tree.map(np.asarray, fresh[part]))
        notes.append(f"head {part}: freshly initialised (seed {seed})")
    ignored = sorted(set(state) - used)
    if ignored:
        notes.append(f"ignored {len(ignored)} tensors not used by a scorer (e.g. {ignored[:3]})")
    return params, notes


def _shape_at(tree: Mapping, path: tuple[str, ...]) -> tuple[int, ...]:
    for key in path:
        tree = tree[key]
    return tuple(tree)


def load_hf(src_dir: str, *, head_activation: str | None = None, fresh_head: bool = False,
            seed: int = 0) -> tuple[model_lib.ModelConfig, dict[str, Any], list[str]]:
    """(config, params, notes) of an HF BERT/RoBERTa directory, in memory (numpy float32)."""
    src = epath.Path(src_dir)
    if not (src / "config.json").exists():
        raise FileNotFoundError(f"{src} has no config.json; point at an HF model directory "
                                "(the folder save_pretrained wrote)")
    hf_config = json.loads((src / "config.json").read_text())
    overrides = {"head_activation": head_activation} if head_activation else {}
    config = model_lib.ModelConfig.from_hf(hf_config, **overrides)
    log.info("reading weights from %s", src)
    params, notes = params_from_hf(read_hf_weights(src), config, fresh_head=fresh_head, seed=seed)
    return config, params, notes


def from_hf(src_dir: str, dst: str, *, head_activation: str | None = None, fresh_head: bool = False,
            seed: int = 0, overwrite: bool = False) -> epath.Path:
    """Converts an HF BERT/RoBERTa directory into a scorer directory."""
    config, params, notes = load_hf(src_dir, head_activation=head_activation, fresh_head=fresh_head, seed=seed)
    for note in notes:
        log.info("%s", note)
    out = ckpt_lib.save_scorer(dst, params, config, src_dir, overwrite=overwrite)
    log.info("wrote scorer %s (%s, %.1fM parameters, head %s)", out, config.family,
             model_lib.count_params(params) / 1e6, config.head_activation)
    return out


# ---------------------------------------------------------------------------- writing HF


def params_to_hf(params: Mapping[str, Any], config: model_lib.ModelConfig) -> dict[str, np.ndarray]:
    params = model_lib.relayout(params, config, config.replace(scan_layers=False))
    prefix = f"{config.family}."
    state = {}
    for name, path, _, to_hf in encoder_entries(config):
        state[prefix + name] = to_hf(_get(params, path))
    dense, out = head_entries(config, prefix)
    for name, path, _, to_hf in dense + out:
        state[name] = to_hf(_get(params, path))
    return {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in state.items()}


def to_hf(ckpt_dir: str, dst_dir: str) -> epath.Path:
    """Writes an HF sequence-classification directory from a scorer directory."""
    from safetensors.numpy import save_file

    loaded = ckpt_lib.load_scorer(ckpt_dir)
    dst = epath.Path(dst_dir)
    dst.mkdir(parents=True, exist_ok=True)
    state = params_to_hf(jax.tree.map(np.asarray, loaded.params), loaded.config)
    save_file(state, str(dst / "model.safetensors"), metadata={"format": "pt"})
    (dst / "config.json").write_text(json.dumps(loaded.config.to_hf(), indent=2, sort_keys=True))
    ckpt_lib.copy_tokenizer(loaded.tokenizer_dir, dst)
    log.info("wrote %s (%d tensors); scores = %s(logits)", dst, len(state), loaded.config.head_activation)
    return dst


def main(argv: list[str]) -> None:
    from absl import app, flags

    from cappy_jax.cli import quiet_logging

    quiet_logging()
    f = flags.FLAGS
    if len(argv) != 4 or argv[1] not in ("from-hf", "to-hf"):
        raise app.UsageError(f"expected `from-hf SRC DST` or `to-hf CKPT DST`, got {argv[1:]}\n{__doc__}")
    command, src, dst = argv[1:]
    try:  # a wrong directory or an unsupported model: the message says what to pass instead
        if command == "from-hf":
            from_hf(src, dst, head_activation=f.head_activation, fresh_head=f.fresh_head, seed=f.seed,
                    overwrite=f.overwrite)
        else:
            to_hf(src, dst)
    except (FileNotFoundError, FileExistsError, ValueError) as e:
        raise SystemExit(f"error: {e}") from None


def run() -> None:
    from absl import app, flags

    flags.DEFINE_enum("head_activation", None, list(model_lib.HEAD_ACTIVATIONS),
                      "Score = activation(logit). Default: the source's cappy_head_activation, else sigmoid. "
                      "Use identity for raw-logit checkpoints such as btan2/cappy-large.")
    flags.DEFINE_bool("fresh_head", False, "Replace the output layer of the checkpoint's head with a new one-output layer (keeps the dense layer / BERT pooler).")
    flags.DEFINE_integer("seed", 0, "Seed of a freshly initialised head.")
    flags.DEFINE_bool("overwrite", False, "Replace DST if it exists.")
    app.run(main)


if __name__ == "__main__":
    run()
