"""HF import/export on real weights, and the errors a user meets with bad input."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from cappy_jax import checkpoint, convert, packing
from cappy_jax import model as model_lib
from cappy_jax.tokenization import PairTokenizer
from conftest import make_hf_model

PAIRS = [
    ("Is the sky blue on a clear day? Answer yes or no.", "yes"),
    ("Translate to French: good morning", "bonjour"),
    ("What is 12 + 30?", "The answer is 42."),
    ("Summarize: The quick brown fox jumps over the lazy dog because it wants to reach the other side.",
     "A fox jumps over a dog."),
]


def test_real_minilm_round_trip_scores_like_transformers(tmp_path, minilm_dir):
    """all-MiniLM-L6-v2 (BertModel): pooler becomes the head's dense layer, out_proj is new."""
    ckpt = convert.from_hf(str(minilm_dir), str(tmp_path / "ckpt"), seed=3)
    loaded = checkpoint.load_scorer(ckpt, dtype="float32")
    assert (loaded.config.family, loaded.config.num_layers, loaded.config.hidden_size) == ("bert", 6, 384)
    from safetensors.numpy import load_file

    pooler = load_file(str(minilm_dir / "model.safetensors"))["pooler.dense.weight"]
    np.testing.assert_array_equal(np.asarray(loaded.params["head"]["dense"]["kernel"]), pooler.T)

    tok = PairTokenizer.from_dir(loaded.tokenizer_dir)
    enc = tok.encode_pairs([a for a, _ in PAIRS], [b for _, b in PAIRS], max_len=128)
    rows = packing.pack_lengths(enc.lengths(), 128, 4)
    batch = packing.make_batch(enc.input_ids, enc.token_type_ids, rows, max_len=128, max_segments=4,
                               pad_id=tok.pad_token_id)
    ours = packing.unpack_scores(np.asarray(model_lib.score(loaded.config, loaded.params, batch)),
                                 batch["pair_index"], len(PAIRS))

    convert.to_hf(str(ckpt), str(tmp_path / "hf"))
    hf = AutoModelForSequenceClassification.from_pretrained(tmp_path / "hf").eval()
    hf_tok = AutoTokenizer.from_pretrained(tmp_path / "hf")
    inputs = hf_tok([a for a, _ in PAIRS], [b for _, b in PAIRS], padding=True, return_tensors="pt")
    with torch.no_grad():
        theirs = torch.sigmoid(hf(**inputs).logits[:, 0]).numpy()
    np.testing.assert_allclose(ours, theirs, atol=1e-5)
    assert ours.std() > 1e-4


def test_pytorch_bin_is_read_without_pickled_code(tmp_path, minilm_dir):
    hf = make_hf_model("bert", tmp_path / "hf", minilm_dir)
    (tmp_path / "hf" / "model.safetensors").unlink()
    torch.save(hf.state_dict(), tmp_path / "hf" / "pytorch_model.bin")
    state = convert.read_hf_weights(checkpoint._absolute(tmp_path / "hf"))
    np.testing.assert_array_equal(state["classifier.weight"], hf.classifier.weight.detach().numpy())


def test_missing_weights_say_what_was_expected(tmp_path, minilm_dir):
    shutil.copy(minilm_dir / "config.json", tmp_path / "config.json")
    with pytest.raises(FileNotFoundError, match="no weights in .*expected model.safetensors"):
        convert.from_hf(str(tmp_path), str(tmp_path / "out"))
    with pytest.raises(FileNotFoundError, match="has no config.json"):
        convert.from_hf(str(tmp_path / "nowhere"), str(tmp_path / "out"))


def test_unknown_architecture_is_refused(tmp_path, minilm_dir):
    make_hf_model("bert", tmp_path, minilm_dir)
    config = json.loads((tmp_path / "config.json").read_text())
    config["model_type"] = "gpt2"
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="unsupported architecture model_type='gpt2'"):
        convert.from_hf(str(tmp_path), str(tmp_path / "out"))


def test_shape_mismatch_between_weights_and_config(tmp_path, minilm_dir):
    make_hf_model("roberta", tmp_path, minilm_dir)
    config = json.loads((tmp_path / "config.json").read_text())
    config["intermediate_size"] = 48
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="shape mismatch between checkpoint and config: .*intermediate.dense"):
        convert.from_hf(str(tmp_path), str(tmp_path / "out"))


def test_multi_output_head_needs_fresh_head(tmp_path, minilm_dir):
    hf = make_hf_model("roberta", tmp_path / "hf", minilm_dir, num_labels=3)
    with pytest.raises(ValueError, match="head has 3 outputs.*--fresh_head"):
        convert.from_hf(str(tmp_path / "hf"), str(tmp_path / "out"))
    convert.from_hf(str(tmp_path / "hf"), str(tmp_path / "out"), fresh_head=True)
    loaded = checkpoint.load_scorer(tmp_path / "out")
    assert loaded.params["head"]["out_proj"]["kernel"].shape == (32, 1)
    # The dense layer of the head is kept.
    np.testing.assert_allclose(loaded.params["head"]["dense"]["kernel"],
                               hf.classifier.dense.weight.detach().numpy().T)


def test_checkpoint_config_mismatch_is_caught_on_load(tmp_path, minilm_dir):
    make_hf_model("roberta", tmp_path / "hf", minilm_dir)
    ckpt = convert.from_hf(str(tmp_path / "hf"), str(tmp_path / "ckpt"))
    config = json.loads((ckpt / "model.json").read_text())
    config["num_layers"] = 3
    (ckpt / "model.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="do not match the model config.*missing layer_2"):
        checkpoint.load_scorer(ckpt)
    with pytest.raises(FileNotFoundError, match="not a cappy_jax scorer directory"):
        checkpoint.load_scorer(tmp_path / "hf")
    with pytest.raises(FileExistsError, match="exists and is not empty"):
        convert.from_hf(str(tmp_path / "hf"), str(tmp_path / "ckpt"))


def test_cli_round_trip(tmp_path, minilm_dir):
    make_hf_model("bert", tmp_path / "hf", minilm_dir)
    run = lambda *args: subprocess.run([sys.executable, "-m", "cappy_jax.convert", *args],
                                       capture_output=True, text=True, timeout=120)
    out = run("from-hf", str(tmp_path / "hf"), str(tmp_path / "ckpt"), "--head_activation=identity")
    assert out.returncode == 0, out.stderr
    assert "wrote scorer" in out.stderr
    out = run("to-hf", str(tmp_path / "ckpt"), str(tmp_path / "back"))
    assert out.returncode == 0, out.stderr
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in (tmp_path / "back").iterdir()}
    bad = run("sideways", "a", "b")
    assert bad.returncode != 0 and "expected `from-hf SRC DST` or `to-hf CKPT DST`" in bad.stderr
    missing = run("to-hf", str(tmp_path / "nothing"), str(tmp_path / "back2"))
    assert missing.returncode == 1 and "Traceback" not in missing.stderr, missing.stderr
    assert f"error: {tmp_path / 'nothing'} is not a cappy_jax scorer directory" in missing.stderr
