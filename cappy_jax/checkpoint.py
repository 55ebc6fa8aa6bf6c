"""A scorer on disk: Orbax parameters, the model config and the tokenizer, side by side.

Layout of a scorer directory (local path or `gs://` URL):

    DIR/model.json     ModelConfig as JSON (architecture + head activation)
    DIR/tokenizer/     tokenizer.json and the HF tokenizer files beside it
    DIR/params/        Orbax StandardCheckpointer tree of float32 parameters (convert from-hf)
or, for a training workdir, instead of params/:
    DIR/checkpoints/<step>/state   Orbax TrainState; its `params` are read (latest step by default)

A scorer directory carries everything needed to score, so `convert`, training
and the scoring API all hand each other this one thing.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import jax
import numpy as np
from etils import epath

from cappy_jax import model as model_lib

MODEL_JSON = "model.json"
TOKENIZER_DIR = "tokenizer"
PARAMS_DIR = "params"
# Tokenizer files copied along when present; tokenizer.json is required.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "vocab.txt", "vocab.json", "merges.txt")

@dataclasses.dataclass(frozen=True)
class LoadedScorer:
    config: model_lib.ModelConfig
    params: Any
    tokenizer_dir: epath.Path

def _absolute(path: str | epath.PathLike) -> epath.Path:
    p = epath.Path(path)
    # Orbax wants absolute local paths; URLs such as gs:// are absolute already.
    return p if "://" in str(p) else epath.Path(p.expanduser().resolve())

def copy_tokenizer(src_dir: str | epath.PathLike, dst_dir: str | epath.PathLike) -> None:
    src, dst = epath.Path(src_dir), epath.Path(dst_dir)
    if not (src / "tokenizer.json").exists():
        raise FileNotFoundError(
            f"{src} has no tokenizer.json; cappy_jax reads fast tokenizers only: save one with "
            f"`AutoTokenizer.from_pretrained(...).save_pretrained('{src}')`")
    dst.mkdir(parents=True, exist_ok=True)
    for name in TOKENIZER_FILES:
        if (src / name).exists():
            (src / name).copy(dst / name, overwrite=True)

def save_scorer(directory: str | epath.PathLike, params: Any, config: model_lib.ModelConfig,
                tokenizer_src: str | epath.PathLike, *, overwrite: bool = False) -> epath.Path:
    """Writes a scorer directory; refuses to replace an existing one unless `overwrite`."""
    directory = _absolute(directory)
    if directory.exists() and any(directory.iterdir()):
        if not overwrite:
            raise FileExistsError(f"{directory} exists and is not empty; pick a new directory or pass overwrite=True "
                                  "(--overwrite on the command line)")
        directory.rmtree()
    directory.mkdir(parents=True, exist_ok=True)
    check_params(params, config)
    copy_tokenizer(tokenizer_src, directory / TOKENIZER_DIR)
    import orbax.checkpoint as ocp  # heavy import, only where checkpoints are written

    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(directory / PARAMS_DIR, jax.tree.map(np.asarray, params))
    checkpointer.wait_until_finished()
    (directory / MODEL_JSON).write_text(config.to_json())
    return directory

def load_config(directory: str | epath.PathLike) -> model_lib.ModelConfig:
    path = epath.Path(directory) / MODEL_JSON
    if not path.exists():
        raise FileNotFoundError(
            f"{directory} is not a cappy_jax scorer directory (no {MODEL_JSON}); "
            f"make one with `python -m cappy_jax.convert from-hf HF_DIR {directory}`")
    return model_lib.ModelConfig.from_dict(json.loads(path.read_text()))

def training_steps(directory: str | epath.PathLike) -> list[int]:
    """Finished checkpoint steps of a training workdir (Orbax renames a step dir only once complete)."""
    root = epath.Path(directory) / "checkpoints"
    if not root.exists():
        return []
    return sorted(int(d.name) for d in root.iterdir() if d.name.isdigit() and (d / "state").exists())


def load_scorer(directory: str | epath.PathLike, *, step: int | None = None,
                **config_overrides: Any) -> LoadedScorer:
    """Reads a scorer directory or a training workdir onto the default device.

    `step` picks a training checkpoint (default: the latest); `config_overrides` change run-time
    knobs such as `dtype`, `remat` or `scan_layers` (the parameters come back in its layout).
    """
    directory = _absolute(directory)
    stored_config = load_config(directory)
    config = stored_config.replace(**config_overrides)
    import orbax.checkpoint as ocp

    checkpointer = ocp.StandardCheckpointer()
    if (directory / PARAMS_DIR).exists() and step is None:
        path, in_state = directory / PARAMS_DIR, False
    else:
        steps = training_steps(directory)
        if not steps or (step is not None and step not in steps):
            raise FileNotFoundError(f"{directory} has no {PARAMS_DIR}/ and no training checkpoint"
                                    f"{f' at step {step}' if step is not None else ''} (steps: {steps})")
        path, in_state = directory / "checkpoints" / str(step if step is not None else steps[-1]) / "state", True
    # The handler's own metadata: the checkpointer's would also look for a step-level metadata file inside
    # a training state's item directory and warn that there is none.
    stored = ocp.StandardCheckpointHandler().metadata(path).tree
    # Orbax restores into a mismatched target without complaint, so compare shapes first.
    check_params(stored["params"] if in_state else stored, stored_config, what=f"checkpoint {path}")
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    # A training state was saved sharded over some mesh; restore every leaf onto one device.
    abstract = jax.tree.map(lambda m: jax.ShapeDtypeStruct(tuple(m.shape), m.dtype, sharding=device), stored)
    restored = checkpointer.restore(path, abstract)
    params = model_lib.relayout(restored["params"] if in_state else restored, stored_config, config)
    return LoadedScorer(config=config, params=params, tokenizer_dir=directory / TOKENIZER_DIR)

def check_params(params: Any, config: model_lib.ModelConfig, *, what: str = "parameters") -> None:
    """Raises a ValueError listing every parameter whose presence or shape disagrees with `config`."""
    expected = _flat_shapes(model_lib.abstract_params(config))
    found = _flat_shapes(params)
    problems = [f"missing {k}" for k in sorted(set(expected) - set(found))]
    problems += [f"unexpected {k}" for k in sorted(set(found) - set(expected))]
    problems += [f"{k}: config wants {expected[k]}, found {found[k]}"
                 for k in sorted(set(expected) & set(found)) if expected[k] != found[k]]
    if problems:
        shown = "; ".join(problems[:8]) + (f"; and {len(problems) - 8} more" if len(problems) > 8 else "")
        raise ValueError(f"{what} do not match the model config ({config.family}, hidden {config.hidden_size}, "
                         f"{config.num_layers} layers): {shown}")

def _flat_shapes(tree: Any) -> dict[str, tuple[int, ...]]:
    flat = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {"/".join(str(getattr(k, "key", k)) for k in path): tuple(leaf.shape) for path, leaf in flat}
