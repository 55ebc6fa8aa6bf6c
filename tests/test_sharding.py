"""Mesh construction and logical-axis placement on 8 simulated CPU devices."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from cappy_jax import model as model_lib
from cappy_jax import sharding
from configs import model as model_configs
from configs import pretrain


def test_eight_simulated_devices():
    assert jax.device_count() == 8


def test_mesh_fills_one_axis_and_refuses_what_does_not_fit():
    assert sharding.mesh_shape({"data": -1, "fsdp": 2, "tensor": 2}, 8) == (2, 2, 2)
    assert sharding.make_mesh({"data": -1}).shape == {"data": 8, "fsdp": 1, "tensor": 1}
    with pytest.raises(ValueError, match="does not divide the 8 devices"):
        sharding.mesh_shape({"data": -1, "fsdp": 3}, 8)
    with pytest.raises(ValueError, match="needs 12 devices but 8 are present"):
        sharding.mesh_shape({"data": 3, "fsdp": 2, "tensor": 2}, 8)
    with pytest.raises(ValueError, match="unknown mesh axes"):
        sharding.mesh_shape({"model": 8}, 8)


def test_rules_place_parameters_by_logical_axis():
    mesh = sharding.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
    config = model_lib.ModelConfig.from_dict(dict(model_configs.get_config("tiny").to_dict(), dtype="float32"))
    shardings = sharding.logical_shardings(model_lib.param_logical_axes(config), mesh, pretrain.RULES)
    assert shardings["layer_0"]["attention"]["query"]["kernel"].spec == P("fsdp", "tensor", None)
    assert shardings["layer_0"]["mlp_out"]["kernel"].spec == P("tensor", "fsdp")
    assert shardings["embeddings"]["word_embeddings"]["embedding"].spec == P("tensor", "fsdp")
    assert shardings["head"]["out_proj"]["bias"].spec == P(None)


def test_layout_pins_and_splits_by_logical_names():
    """How `model.Embed` gathers its table over fsdp before a lookup (`constrain`), and how splash
    attention runs on each device's rows and heads (`per_shard`): names map through the rules."""
    mesh = sharding.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
    layout = sharding.layout(mesh, [list(r) for r in pretrain.RULES])  # lists, as from a JSON config, work too
    assert hash(layout) == hash(sharding.layout(mesh, pretrain.RULES))  # a flax module attribute: hashable
    assert layout.spec(("batch", None, "heads", None)) == P(("data", "fsdp"), None, "tensor", None)
    table = jax.device_put(np.arange(32.0).reshape(8, 4), sharding.logical_shardings(P("vocab", "embed"), mesh,
                                                                                      pretrain.RULES))
    assert {s.data.shape for s in table.addressable_shards} == {(4, 2)}  # vocab over tensor, hidden over fsdp
    gathered = jax.jit(lambda t: layout.constrain(t, ("vocab", None)))(table)
    assert {s.data.shape for s in gathered.addressable_shards} == {(4, 4)}  # whole hidden axis, vocab still split
    np.testing.assert_array_equal(np.asarray(gathered), np.arange(32.0).reshape(8, 4))
    x = np.arange(8 * 2 * 4 * 3, dtype=np.float32).reshape(8, 2, 4, 3)
    seen = jax.jit(layout.per_shard(lambda a: a * 0 + np.float32(a.shape[0] * 10 + a.shape[2]),
                                    [("batch", None, "heads", None)], ("batch", None, "heads", None)))(x)
    np.testing.assert_array_equal(np.asarray(seen), np.full(x.shape, 2 * 10 + 2))  # 2 rows, 2 heads a device


def test_global_batch_splits_rows_over_data_and_fsdp():
    mesh = sharding.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
    batch = sharding.global_batch({"x": np.arange(16).reshape(8, 2)}, mesh)
    assert batch["x"].shape == (8, 2)
    assert batch["x"].sharding.spec == P(("data", "fsdp"))
    assert {tuple(s.data.shape) for s in batch["x"].addressable_shards} == {(2, 2)}
