"""The encoder against transformers' PyTorch models, packing, shapes and logical axes."""

from __future__ import annotations

import functools
import json
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from transformers import AutoModelForSequenceClassification, RobertaConfig, RobertaForSequenceClassification

from cappy_jax import checkpoint, convert, packing
from cappy_jax import model as model_lib
from configs import model as model_configs
from conftest import make_hf_model, random_pairs

LENGTHS = [5, 17, 3, 40, 12, 9, 64, 2, 30, 21]


def hf_logits(model, ids, types, pad_id):
    """One pair per row, right-padded, through the PyTorch model."""
    width = max(len(x) for x in ids)
    x = np.full((len(ids), width), pad_id, np.int64)
    mask = np.zeros_like(x)
    tt = np.zeros_like(x)
    for i, (a, t) in enumerate(zip(ids, types)):
        x[i, : len(a)], mask[i, : len(a)], tt[i, : len(a)] = a, 1, t
    with torch.no_grad():
        out = model(input_ids=torch.tensor(x), attention_mask=torch.tensor(mask), token_type_ids=torch.tensor(tt))
    return out.logits[:, 0].numpy()


def our_scores(config, params, ids, types, *, max_len, max_segments):
    lengths = [len(x) for x in ids]
    rows = packing.pack_lengths(lengths, max_len, max_segments) if max_segments > 1 else [[i] for i in range(len(ids))]
    batch = packing.make_batch(ids, types, rows, max_len=max_len, max_segments=max_segments,
                               pad_id=config.pad_token_id)
    scores = jax.jit(model_lib.score, static_argnums=0)(config, params, batch)
    return packing.unpack_scores(np.asarray(scores), batch["pair_index"], len(ids))


@pytest.mark.parametrize("family", ["roberta", "bert"])
def test_matches_transformers_through_from_hf_and_to_hf(family, tmp_path, minilm_dir):
    hf_dir = tmp_path / "hf"
    hf = make_hf_model(family, hf_dir, minilm_dir)
    ids, types = random_pairs(np.random.default_rng(1), LENGTHS, 96, family)
    ref = hf_logits(hf, ids, types, hf.config.pad_token_id)
    assert ref.std() > 0.01, "logits barely vary: the comparison would prove little"

    convert.from_hf(str(hf_dir), str(tmp_path / "ckpt"), head_activation="identity")
    loaded = checkpoint.load_scorer(tmp_path / "ckpt", dtype="float32")
    assert loaded.config.family == family and loaded.config.head_activation == "identity"
    one_per_row = our_scores(loaded.config, loaded.params, ids, types, max_len=64, max_segments=1)
    packed = our_scores(loaded.config, loaded.params, ids, types, max_len=64, max_segments=4)
    np.testing.assert_allclose(one_per_row, ref, atol=1e-4, rtol=0)
    np.testing.assert_allclose(packed, ref, atol=1e-4, rtol=0)

    # Back to HF: transformers loads it as the right class and gives the same logits.
    convert.to_hf(str(tmp_path / "ckpt"), str(tmp_path / "back"))
    back = AutoModelForSequenceClassification.from_pretrained(tmp_path / "back").eval()
    assert type(back).__name__ == type(hf).__name__
    np.testing.assert_allclose(hf_logits(back, ids, types, hf.config.pad_token_id), ref, atol=1e-5, rtol=0)
    assert json.loads((tmp_path / "back" / "config.json").read_text())["cappy_head_activation"] == "identity"
    assert (tmp_path / "back" / "tokenizer.json").exists()


def test_sigmoid_head_is_default_and_stored(tmp_path, minilm_dir):
    hf = make_hf_model("roberta", tmp_path / "hf", minilm_dir)
    ids, types = random_pairs(np.random.default_rng(2), LENGTHS, 96, "roberta")
    convert.from_hf(str(tmp_path / "hf"), str(tmp_path / "ckpt"))
    loaded = checkpoint.load_scorer(tmp_path / "ckpt", dtype="float32")
    assert loaded.config.head_activation == "sigmoid"
    scores = our_scores(loaded.config, loaded.params, ids, types, max_len=64, max_segments=3)
    expected = 1 / (1 + np.exp(-hf_logits(hf, ids, types, 1)))
    np.testing.assert_allclose(scores, expected, atol=1e-5)
    assert np.all((scores > 0) & (scores < 1))
    # to-hf -> from-hf keeps the activation without being told.
    convert.to_hf(str(tmp_path / "ckpt"), str(tmp_path / "back"))
    convert.from_hf(str(tmp_path / "back"), str(tmp_path / "again"))
    assert checkpoint.load_config(tmp_path / "again").head_activation == "sigmoid"


def tiny_config(**overrides) -> model_lib.ModelConfig:
    values = model_configs.get_config("tiny").to_dict()
    values.update(dtype="float32", **overrides)
    return model_lib.ModelConfig.from_dict(values)


def test_packed_rows_give_the_scores_of_one_pair_per_row():
    config = tiny_config(type_vocab_size=2)
    params = model_lib.init_params(config, jax.random.key(3))
    rng = np.random.default_rng(4)
    lengths = rng.integers(2, 60, 40)
    ids, _ = random_pairs(rng, lengths, config.vocab_size, "roberta")
    types = [rng.integers(0, 2, len(x)).astype(np.int32) for x in ids]
    single = our_scores(config, params, ids, types, max_len=64, max_segments=1)
    packed = our_scores(config, params, ids, types, max_len=128, max_segments=8)
    assert single.std() > 1e-3
    np.testing.assert_allclose(packed, single, atol=2e-5, rtol=0)


def test_roberta_large_parameter_count_matches_transformers():
    config = model_lib.ModelConfig.from_dict(model_configs.get_config("large").to_dict())
    ours = model_lib.count_params(model_lib.abstract_params(config))  # eval_shape: nothing allocated
    hf_config = RobertaConfig(**{k: v for k, v in config.to_hf().items() if k not in ("architectures",)})
    assert hf_config.num_labels == 1 and hf_config.type_vocab_size == 1
    with torch.device("meta"):
        hf = RobertaForSequenceClassification(hf_config)
    theirs = sum(p.numel() for p in hf.parameters())
    assert ours == theirs
    assert 354e6 < ours < 357e6


def test_every_parameter_has_logical_axis_names():
    config = tiny_config()
    specs = model_lib.param_logical_axes(config)
    shapes = model_lib.abstract_params(config)
    names = {"vocab", "embed", "heads", "kv", "mlp", "position", "token_type", "score"}
    flat_specs = jax.tree_util.tree_leaves(specs, is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec))
    flat_shapes = jax.tree_util.tree_leaves(shapes)
    assert len(flat_specs) == len(flat_shapes) > 0
    for spec, shape in zip(flat_specs, flat_shapes):
        assert len(spec) == len(shape.shape) and set(spec) <= names, (spec, shape)
    assert specs["layer_0"]["attention"]["query"]["kernel"] == jax.sharding.PartitionSpec("embed", "heads", "kv")
    assert specs["layer_0"]["mlp_in"]["kernel"] == jax.sharding.PartitionSpec("embed", "mlp")


def test_dropout_only_in_training_and_remat_keeps_gradients():
    config = tiny_config(dropout_rate=0.3)
    params = model_lib.init_params(config, jax.random.key(5))
    ids, types = random_pairs(np.random.default_rng(6), [10, 20, 30], config.vocab_size, "roberta")
    batch = packing.make_batch(ids, types, [[0, 1], [2]], max_len=64, max_segments=2, pad_id=1)

    def loss(p, cfg, rng):
        logits = model_lib.Scorer(cfg).apply({"params": p}, batch, deterministic=False, rngs={"dropout": rng})
        return jnp.sum(logits * batch["label_mask"])

    eval_a = model_lib.score(config, params, batch)
    eval_b = model_lib.score(config, params, batch)
    np.testing.assert_array_equal(eval_a, eval_b)
    key = jax.random.key(7)
    assert not np.allclose(loss(params, config, key), loss(params, config, jax.random.key(8)))
    g_plain = jax.grad(loss)(params, config, key)
    g_remat = jax.grad(loss)(params, config.replace(remat=True), key)
    for a, b in zip(jax.tree.leaves(g_plain), jax.tree.leaves(g_remat)):
        np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("rate", [0.1, 0.3])
def test_dropout_drops_at_its_rate_independently_and_keeps_the_mean(rate):
    x = jnp.ones((64, 128, 257), jnp.float32)  # an odd last axis: the spare half-word is cut off
    y = np.asarray(model_lib.dropout(x, rate, jax.random.key(0)))
    kept = y != 0
    n = kept.size
    assert abs((1 - kept.mean()) - rate) < 4 * np.sqrt(rate * (1 - rate) / n)  # 4 sigma
    np.testing.assert_allclose(y[kept], 1 / (1 - rate), rtol=1e-6)
    assert abs(y.mean() - 1.0) < 0.01
    # The two elements one 32-bit draw decides are independent, and so are neighbours across rows.
    even, odd = kept[..., 0:256:2].ravel(), kept[..., 1:256:2].ravel()
    assert abs(np.corrcoef(even, odd)[0, 1]) < 0.01
    assert abs(np.corrcoef(kept[:-1].ravel(), kept[1:].ravel())[0, 1]) < 0.01
    same = np.asarray(model_lib.dropout(x, rate, jax.random.key(0)))
    other = np.asarray(model_lib.dropout(x, rate, jax.random.key(1)))
    np.testing.assert_array_equal(same, y)
    assert (other != y).mean() > rate
    assert model_lib.dropout(x, 0.0, jax.random.key(0)) is x
    bf16 = model_lib.dropout(x.astype(jnp.bfloat16), rate, jax.random.key(0))
    assert bf16.dtype == jnp.bfloat16


def test_bfloat16_compute_keeps_float32_parameters_and_close_scores():
    config = tiny_config()
    params = model_lib.init_params(config, jax.random.key(9))
    assert {x.dtype for x in jax.tree.leaves(params)} == {jnp.dtype("float32")}
    ids, types = random_pairs(np.random.default_rng(10), [8, 16, 33], config.vocab_size, "roberta")
    f32 = our_scores(config, params, ids, types, max_len=64, max_segments=2)
    bf16 = our_scores(config.replace(dtype="bfloat16"), params, ids, types, max_len=64, max_segments=2)
    assert bf16.dtype == np.float32
    np.testing.assert_allclose(bf16, f32, atol=2e-2)


def test_config_validation_names_the_problem():
    with pytest.raises(ValueError, match="head_activation"):
        tiny_config(head_activation="softmax")
    with pytest.raises(ValueError, match="divisible"):
        tiny_config(num_heads=5)
    with pytest.raises(ValueError, match="unknown ModelConfig keys"):
        model_lib.ModelConfig.from_dict({"hidden": 3})
    with pytest.raises(ValueError, match="unsupported architecture model_type='gpt2'"):
        model_lib.ModelConfig.from_hf({"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"]})
    with pytest.raises(ValueError, match="unknown model variant"):
        model_configs.get_config("huge")


def test_auto_attention_takes_cudnn_only_where_its_kernel_runs(monkeypatch):
    from configs import model as model_configs

    tiny = model_lib.ModelConfig.from_dict(dict(model_configs.VARIANTS["tiny"]))
    assert tiny.replace(dtype="bfloat16").attention_impl() == "xla"  # this CPU
    monkeypatch.setattr(model_lib.jax, "default_backend", lambda: "gpu")
    assert tiny.replace(dtype="bfloat16").attention_impl() == "cudnn"
    assert tiny.replace(dtype="float16").attention_impl() == "cudnn"
    assert tiny.replace(dtype="float32").attention_impl() == "xla"  # cuDNN's fused kernel is 16-bit only
    wide = tiny.replace(dtype="bfloat16", hidden_size=640, num_heads=4)  # head size 160 > 128
    assert wide.attention_impl() == "xla"
    assert tiny.replace(dtype="float32", attention="cudnn").attention_impl() == "cudnn"  # asked for: obeyed


@pytest.mark.parametrize("remat", [False, True])
def test_scan_layers_computes_the_same_function_with_stacked_parameters(remat):
    """Also the check of `last_layer_queries`: the scanned stack computes its last layer at every
    position, the unrolled one at the head's positions only, on rows with an empty slot and an empty row."""
    from configs import model as model_configs

    cfg = model_lib.ModelConfig.from_dict(dict(model_configs.VARIANTS["tiny"], dtype="float32", num_layers=3))
    scan = cfg.replace(scan_layers=True, remat=remat)
    params = model_lib.init_params(cfg, jax.random.key(1))
    stacked = model_lib.relayout(params, cfg, scan)
    assert jax.tree.map(np.shape, stacked) == jax.tree.map(np.shape, model_lib.abstract_params(scan))
    assert stacked["layers"]["layer"]["mlp_in"]["kernel"].shape == (3, 64, 128)
    assert model_lib.param_logical_axes(scan)["layers"]["layer"]["mlp_in"]["kernel"] == \
        jax.sharding.PartitionSpec("layers", "embed", "mlp")
    rng = np.random.default_rng(0)
    ids = [rng.integers(5, 500, n).astype(np.int32) for n in (9, 14, 30, 5)]
    batch = packing.make_batch(ids, [np.zeros_like(x) for x in ids], [[0, 1, 3], [2]], max_len=48,
                               max_segments=3, pad_id=1, num_rows=3)
    slots = jnp.asarray(batch["label_mask"])
    batch = {k: jnp.asarray(v) for k, v in batch.items() if k in model_lib.dummy_batch()}
    assert cfg.last_layer_at_heads and not scan.last_layer_at_heads
    np.testing.assert_allclose(model_lib.score(scan, stacked, batch), model_lib.score(cfg, params, batch),
                               rtol=1e-6, atol=1e-6)

    def loss(c, p):  # every slot, empty ones included: their values must agree too
        return jnp.sum(model_lib.Scorer(c).apply({"params": p}, batch) * (1.0 + slots))

    g = jax.grad(lambda p: loss(cfg, p))(params)
    g_scan = model_lib.relayout(jax.grad(lambda p: loss(scan, p))(stacked), scan, cfg)
    for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(g_scan)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    back = model_lib.relayout(stacked, scan, cfg)
    assert jax.tree.structure(back) == jax.tree.structure(params)
    assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(back), jax.tree.leaves(params)))


def ragged_mask(lengths: np.ndarray, starts: np.ndarray, width: int) -> np.ndarray:
    """The attention mask cuDNN's ragged layout stands for: query and key in the same listed segment."""
    seg = np.zeros((lengths.shape[0], width), np.int64)
    for b in range(lengths.shape[0]):
        for s, (n, start) in enumerate(zip(lengths[b], starts[b, :-1])):
            assert (n < 0) == (start < 0)  # empty slots are -1 in both
            if n > 0:
                assert (seg[b, start:start + n] == 0).all()  # segments do not overlap
                seg[b, start:start + n] = s + 1
    return (seg[:, :, None] == seg[:, None, :]) & (seg[:, :, None] > 0)


def test_ragged_attention_layout_stands_for_the_segment_mask():
    ids, types = random_pairs(np.random.default_rng(1), [5, 17, 3, 40, 12, 9, 64, 2, 30, 21], 100, "roberta")
    rows = packing.pack_lengths([len(x) for x in ids], 96, 4)
    batch = packing.make_batch(ids, types, rows, max_len=96, max_segments=4, pad_id=1, num_rows=len(rows) + 1)
    seg = batch["segment_ids"]
    got = jax.tree.map(np.asarray, model_lib.attention_inputs("cudnn-ragged", jnp.asarray(seg), 4))
    assert got["lengths"].shape == (len(rows) + 1, 4) and got["starts"].shape == (len(rows) + 1, 5)
    assert (got["lengths"][-1] == -1).all() and (got["starts"][-1] == -1).all()  # an empty row
    np.testing.assert_array_equal(got["valid"], seg > 0)
    dense = np.asarray(model_lib.attention_inputs("xla", jnp.asarray(seg), 4)["mask"])[:, 0]
    real = (seg > 0)[:, :, None]
    np.testing.assert_array_equal(ragged_mask(got["lengths"], got["starts"], 96), dense & real)
    # One pair per row: the pair's length, for cuDNN's padding mask.
    one = packing.make_batch(ids, types, [[i] for i in range(len(ids))], max_len=64, max_segments=1, pad_id=1)
    single = model_lib.attention_inputs("cudnn-ragged", jnp.asarray(one["segment_ids"]), 1)
    np.testing.assert_array_equal(np.asarray(single["lengths"])[:, 0], [len(x) for x in ids])


def test_ragged_attention_lowers_for_cuda_without_a_bias(monkeypatch):
    """Lowered for CUDA on this CPU (cuDNN's version checks stubbed): the ragged call carries segment
    starts and lengths and no bias; the dense `cudnn` call reads a bias (and before jax 0.11 returns its
    unused gradient)."""
    import re

    from jax import export
    from jax._src.cudnn import fused_attention_stablehlo as cudnn

    monkeypatch.setattr(cudnn, "check_cudnn_version", lambda: 91000)
    monkeypatch.setattr(cudnn, "check_compute_capability", lambda capability: True)
    base = tiny_config().replace(dtype="bfloat16")
    params = model_lib.init_params(base, jax.random.key(0))
    ids, types = random_pairs(np.random.default_rng(2), [5, 17, 3, 40, 12, 9], 100, "roberta")
    kernels = [f"__cudnn$fmha{k}" for k in ("Softmax", "SoftmaxBackward", "ScaleBiasSoftmax", "ScaleBiasSoftmaxBackward")]
    checks = [export.DisabledSafetyCheck.custom_call(k) for k in kernels]

    def lowered(impl: str, max_segments: int, **knobs) -> list[tuple[str, str]]:
        rows = packing.pack_lengths([len(x) for x in ids], 64, max_segments)
        batch = packing.make_batch(ids, types, rows, max_len=64, max_segments=max_segments, pad_id=1)
        batch.pop("pair_index")
        scorer = model_lib.Scorer(base.replace(attention=impl, **knobs))
        p = model_lib.relayout(params, base, scorer.config)

        def loss(p, b):  # training: dropout on
            out = scorer.apply({"params": p}, b, deterministic=False, rngs={"dropout": jax.random.key(1)})
            return jnp.sum(out * b["label_mask"])

        text = export.export(jax.jit(jax.grad(loss)), platforms=["cuda"], disabled_checks=checks)(p, batch).mlir_module()
        return re.findall(r'custom_call @__cudnn\$(\w+)\(.*?max_seg_per_batch\\22: (\d+).*?\) -> \(([^)]*)\)', text)

    ragged = lowered("cudnn-ragged", 4)
    # Every layer but the last, whose few queries (the head's positions) go through XLA's attention.
    assert sorted(k for k, _, _ in ragged) == sorted(["fmhaSoftmax", "fmhaSoftmaxBackward"] * (base.num_layers - 1))
    assert all(m == "4" for _, m, _ in ragged)
    assert all(out.count("x64x64x") == 0 for _, _, out in ragged)  # no [B, 1, L, L] bias gradient
    assert {k for k, m, _ in lowered("cudnn-ragged", 1)} == {"fmhaSoftmax", "fmhaSoftmaxBackward"}
    scanned = lowered("cudnn-ragged", 4, scan_layers=True, remat=True)  # one layer body, re-run for remat
    assert sorted(k for k, _, _ in scanned) == ["fmhaSoftmax", "fmhaSoftmax", "fmhaSoftmaxBackward"]
    dense = lowered("cudnn", 4)
    assert len(dense) == 2 * (base.num_layers - 1)
    assert {k for k, _, _ in dense} == {"fmhaScaleBiasSoftmax", "fmhaScaleBiasSoftmaxBackward"}
    # jax 0.10's wrapper also returns the mask's [B, 1, L, L] bias gradient, which nothing reads; jax 0.11
    # (the lent GPUs') skips it for a boolean mask (run under 0.11.2 by tests/newer_jax.sh).
    wasted = jax.__version_info__ < (0, 11)
    assert all(("x1x64x64x" in out) == wasted for k, _, out in dense if k.endswith("Backward"))


@pytest.mark.parametrize("scan_layers", [False, True])
def test_inference_params_store_what_the_matmuls_read_and_score_bitwise_the_same(scan_layers):
    config = tiny_config(scan_layers=scan_layers).replace(dtype="bfloat16")
    params = model_lib.init_params(config, jax.random.key(9))
    ids, types = random_pairs(np.random.default_rng(10), [5, 17, 3, 40, 12], config.vocab_size, "roberta")
    batch = packing.make_batch(ids, types, packing.pack_lengths([len(x) for x in ids], 64, 4), max_len=64,
                               max_segments=4, pad_id=1)
    cast = model_lib.inference_params(config, params)
    dtypes = {"/".join(str(k.key) for k in path): leaf.dtype for path, leaf in jax.tree_util.tree_leaves_with_path(cast)}
    assert {n for n, d in dtypes.items() if d == jnp.bfloat16} == {
        n for n in dtypes if n.rsplit("/", 2)[-2] in ("query", "key", "value", "out", "mlp_in", "mlp_out")}
    assert sum(d == jnp.bfloat16 for d in dtypes.values()) == (12 if scan_layers else 12 * config.num_layers)
    score = jax.jit(model_lib.score, static_argnums=0)
    np.testing.assert_array_equal(np.asarray(score(config, cast, batch)), np.asarray(score(config, params, batch)))
    assert model_lib.inference_params(config.replace(dtype="float32"), params) is params


def test_last_layer_runs_at_the_head_positions_only():
    """Its MLP and queries see `[B, S]` positions, the other layers' `[B, L]`; mean pooling (which reads
    every position) and the scanned stack keep the full last layer. FLOPs count it the same way."""
    from cappy_jax import metrics

    cfg = tiny_config()
    params = model_lib.init_params(cfg, jax.random.key(0))
    batch = model_lib.dummy_batch(batch_size=3, max_len=48, max_segments=5)

    def mlp_in_outputs(config, p, **kw) -> list[str]:
        text = jax.jit(lambda p, b: model_lib.Scorer(config).apply({"params": p}, b, **kw)).lower(p, batch).as_text()
        return re.findall(rf"dot_general.*-> tensor<3x(\d+)x{cfg.intermediate_size}xf32>", text)

    assert mlp_in_outputs(cfg, params) == ["48"] * (cfg.num_layers - 1) + ["5"]
    assert mlp_in_outputs(cfg, params, mean_pool=True) == ["48"] * cfg.num_layers
    scan = cfg.replace(scan_layers=True)
    assert set(mlp_in_outputs(scan, model_lib.relayout(params, cfg, scan))) == {"48"}
    kw = dict(num_layers=24, hidden_size=1024, intermediate_size=4096, seq_len=512)
    full, pruned = metrics.encoder_flops_per_token(**kw), metrics.encoder_flops_per_token(head_positions=1, **kw)
    assert pruned / full == pytest.approx(1 - 0.846 / 24, abs=2e-3)  # ~85% of one of 24 layers
    assert metrics.encoder_flops_per_token(head_positions=512, **kw) == pytest.approx(full)
    with pytest.raises(ValueError, match="head_positions"):
        metrics.encoder_flops_per_token(head_positions=513, **kw)


def test_splash_attention_computes_the_segment_masked_attention():
    """`attention='splash'` (Pallas's TPU kernel, here in its interpreter) against XLA's attention: scores
    and gradients, on packed rows with an empty slot and an empty row, on one device and split over a
    data x fsdp x tensor mesh (per device through `Layout.per_shard`). Rows narrower than 128 tokens
    take XLA's attention."""
    from cappy_jax import sharding
    from configs import pretrain

    cfg = model_lib.ModelConfig.from_dict(dict(model_configs.VARIANTS["tiny"], dtype="float32", num_layers=3))
    splash = cfg.replace(attention="splash")
    params = model_lib.init_params(cfg, jax.random.key(1))
    rng = np.random.default_rng(0)
    lengths = rng.integers(3, 60, 20)
    ids = [rng.integers(5, 500, n).astype(np.int32) for n in lengths]
    rows = packing.pack_lengths(lengths, 128, 4)
    assert len(rows) < 8 and any(len(r) < 4 for r in rows)
    full = packing.make_batch(ids, [np.zeros_like(x) for x in ids], rows, max_len=128, max_segments=4, pad_id=1,
                              num_rows=8)
    slots = jnp.asarray(full["label_mask"])
    batch = {k: jnp.asarray(v) for k, v in full.items() if k in model_lib.dummy_batch()}

    def grads(config, layout=None):
        def loss(p):  # every slot, empty ones included: their values must agree too
            return jnp.sum(model_lib.Scorer(config, layout).apply({"params": p}, batch) * (1.0 + slots))
        return jax.jit(jax.grad(loss))(params)

    reference = model_lib.score(cfg, params, batch)
    np.testing.assert_allclose(model_lib.score(splash, params, batch), reference, rtol=1e-5, atol=1e-6)
    expected = grads(cfg)
    mesh = sharding.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
    layout = sharding.layout(mesh, pretrain.RULES)
    text = jax.jit(lambda p: model_lib.score(splash, p, batch, layout)).lower(params).as_text()
    assert text.count("sdy.manual_computation") == cfg.num_layers - 1  # the last layer's few queries use XLA's
    for got in (grads(splash), grads(splash, layout)):
        for a, b in zip(jax.tree.leaves(expected), jax.tree.leaves(got)):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)  # gradients up to about 10
    narrow = {k: v[:, :64] if v.shape[1] == 128 else v for k, v in batch.items()}
    text = jax.jit(lambda p: model_lib.score(splash, p, narrow)).lower(params).as_text()
    assert "pallas" not in text.lower()


def test_splash_is_refused_on_a_gpu(monkeypatch):
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    q = jnp.zeros((1, 128, 2, 8))
    with pytest.raises(ValueError, match="TPU kernel.*cudnn-ragged"):
        model_lib.splash_attention(q, q, q, {"segment_ids": jnp.ones((1, 128), jnp.int32)}, None)


@pytest.mark.parametrize("shapes, dims", [
    (((3, 7, 16), (16, 4, 8)), (((2,), (0,)), ((), ()))),          # query/key/value: [B, L, H] x [H, N, D]
    (((3, 7, 4, 8), (4, 8, 16)), (((2, 3), (0, 1)), ((), ()))),    # out: [B, L, N, D] x [N, D, H]
])
def test_fp8_dot_general_is_a_float8_matmul_with_row_and_column_scales(shapes, dims):
    """The product of the two float8 operands, rescaled: equal to the matmul of the operands rounded to
    e4m3 after scaling each row of `lhs` and each output column of `rhs` to e4m3's range."""
    kx, kw = jax.random.split(jax.random.key(3))
    x = jax.random.normal(kx, shapes[0]) * jnp.linspace(0.1, 30.0, shapes[0][1])[:, None].reshape(
        (1, shapes[0][1]) + (1,) * (len(shapes[0]) - 2))  # rows of very different magnitude
    w = jax.random.normal(kw, shapes[1]) * 0.05
    (xc, wc), _ = dims
    got = model_lib.fp8_dot_general(x, w, dims)
    exact = jax.lax.dot_general(x, w, dims)
    assert got.shape == exact.shape and got.dtype == exact.dtype

    def rounded(a, axes):  # each slice over `axes` scaled to amax 448, rounded to e4m3, scaled back
        s = jnp.max(jnp.abs(a), axis=axes, keepdims=True) / 448.0
        return (a / s).astype(jnp.float8_e4m3fn).astype(jnp.float32) * s

    np.testing.assert_allclose(got, jax.lax.dot_general(rounded(x, xc), rounded(w, wc), dims), rtol=1e-4, atol=1e-5)
    rel = float(jnp.linalg.norm(got - exact) / jnp.linalg.norm(exact))
    assert 1e-3 < rel < 0.06  # it does round to 3 mantissa bits, and per-row scales keep small rows precise
    small = exact[:, 0]  # the smallest row keeps the same relative error as the largest
    assert float(jnp.linalg.norm(got[:, 0] - small) / jnp.linalg.norm(small)) < 0.06
    zero = model_lib.fp8_dot_general(jnp.zeros_like(x), w, dims)
    assert not np.any(np.asarray(zero))  # an all-zero row (padding) stays zero, without NaNs


def test_fp8_scoring_runs_every_layer_matmul_in_float8_and_tracks_the_scores():
    config = tiny_config()
    params = model_lib.init_params(config, jax.random.key(4))
    ids, types = random_pairs(np.random.default_rng(5), [8, 16, 33, 5, 21], config.vocab_size, "roberta")
    f32 = our_scores(config, params, ids, types, max_len=64, max_segments=2)
    fp8 = our_scores(config.replace(quantize="fp8"), params, ids, types, max_len=64, max_segments=2)
    assert not np.array_equal(fp8, f32)
    np.testing.assert_allclose(fp8, f32, atol=2e-2)
    batch = model_lib.dummy_batch(2, 16, 2)
    text = jax.jit(model_lib.score, static_argnums=0).lower(config.replace(quantize="fp8"), params, batch).as_text()
    f8_dots = re.findall(r"stablehlo\.dot_general %\S+, %\S+, [^\n]*: \(tensor<[^>]*xf8E4M3FN>, tensor<[^>]*xf8E4M3FN>\)",
                         text)
    assert len(f8_dots) == 6 * config.num_layers  # query, key, value, out, mlp_in, mlp_out; not the head
    with pytest.raises(ValueError, match="quantize='fp8' is for forward passes"):
        model_lib.Scorer(config.replace(quantize="fp8")).apply(
            {"params": params}, batch, deterministic=False, rngs={"dropout": jax.random.key(0)})
    with pytest.raises(ValueError, match="quantize='int4' is not one of"):
        config.replace(quantize="int4")


def test_scoring_lowers_for_cuda_with_each_fused_kernel_and_fp8(monkeypatch):
    """The scoring path the GPU benchmark runs, lowered for CUDA here (cuDNN's version checks stubbed):
    forward kernels only, one per layer but the last (the head's few queries take XLA's attention), and
    with `quantize='fp8'` six float8 matmuls a layer."""
    from jax import export
    from jax._src.cudnn import fused_attention_stablehlo as cudnn

    monkeypatch.setattr(cudnn, "check_cudnn_version", lambda: 91000)
    monkeypatch.setattr(cudnn, "check_compute_capability", lambda capability: True)
    base = tiny_config().replace(dtype="bfloat16")
    params = model_lib.init_params(base, jax.random.key(0))
    ids, types = random_pairs(np.random.default_rng(2), [5, 17, 3, 40, 12, 9], 100, "roberta")
    batch = packing.make_batch(ids, types, packing.pack_lengths([len(x) for x in ids], 64, 4), max_len=64,
                               max_segments=4, pad_id=1)
    batch = {k: batch[k] for k in packing.MODEL_INPUTS if k in batch}
    checks = [export.DisabledSafetyCheck.custom_call(f"__cudnn$fmha{k}") for k in ("Softmax", "ScaleBiasSoftmax")]
    for impl, kernel in (("cudnn-ragged", "fmhaSoftmax"), ("cudnn", "fmhaScaleBiasSoftmax")):
        for quantize, f8_dots in (("none", 0), ("fp8", 6 * base.num_layers)):
            config = base.replace(attention=impl, quantize=quantize)
            p = model_lib.inference_params(config, params)
            text = export.export(jax.jit(functools.partial(model_lib.score, config)), platforms=["cuda"],
                                 disabled_checks=checks)(p, batch).mlir_module()
            assert re.findall(r"custom_call @__cudnn\$(\w+)", text) == [kernel] * (base.num_layers - 1)
            assert len(re.findall(r"xf8E4M3FN>, tensor<[^>]*xf8E4M3FN>\) ->", text)) == f8_dots


def test_the_mlp_keeps_only_its_activation_input_and_output_for_the_backward_pass():
    """GELU's intermediates (erf terms) are recomputed in the backward pass, not stored: two
    `[B, L, intermediate]` tensors a layer, where storing them took four (for roberta-large at 32 rows on an
    H100, compiled: 17.3 GiB a step instead of 23.0; BENCHMARKS.md)."""
    from jax._src.ad_checkpoint import saved_residuals  # what jax.ad_checkpoint.print_saved_residuals prints

    config = tiny_config(dropout_rate=0.0)
    layer = model_lib.Layer(config, deterministic=True)
    x = jax.random.normal(jax.random.key(0), (2, 8, config.hidden_size))
    attn = model_lib.attention_inputs("xla", jnp.ones((2, 8), jnp.int32), 1)
    params = layer.init(jax.random.key(1), x, attn)
    residuals = saved_residuals(lambda p, x: layer.apply(p, x, attn).sum(), params, x)
    wide = [shape for shape, source in ((r[0].shape, r[1]) for r in residuals)
            if shape[:2] == (2, 8) and shape[-1] == config.intermediate_size]
    assert len(wide) == 2, residuals
