"""The device mesh and the logical-axis rules that place parameters, state and batches on it.

Mesh axes: `data` (pure data parallelism), `fsdp` (data parallelism with
parameters and optimizer state sharded over it), `tensor` (model parallelism of
heads, MLP and vocabulary). The rules table (in the config) maps the model's
logical names (`cappy_jax/model.py`) to these axes; batches are split over
`data` and `fsdp` together.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

MESH_AXES = ("data", "fsdp", "tensor")
BATCH_AXES = ("data", "fsdp")
Rules = Sequence[tuple[str, str | tuple[str, ...] | None]]


def mesh_shape(axes: Mapping[str, int], num_devices: int) -> tuple[int, ...]:
    """Resolves one -1 axis and checks that the mesh uses every device exactly."""
    unknown = set(axes) - set(MESH_AXES)
    if unknown:
        raise ValueError(f"unknown mesh axes {sorted(unknown)}; the mesh axes are {MESH_AXES}")
    sizes = [int(axes.get(name, 1)) for name in MESH_AXES]
    fill = [i for i, s in enumerate(sizes) if s == -1]
    if len(fill) > 1 or any(s == 0 or s < -1 for s in sizes):
        raise ValueError(f"mesh {dict(zip(MESH_AXES, sizes))}: sizes must be positive, with at most one -1")
    known = int(np.prod([s for s in sizes if s != -1]))
    if fill:
        if num_devices % known:
            raise ValueError(f"mesh {dict(zip(MESH_AXES, sizes))} does not divide the {num_devices} devices: "
                             f"the fixed axes multiply to {known}")
        sizes[fill[0]] = num_devices // known
    if int(np.prod(sizes)) != num_devices:
        raise ValueError(f"mesh {dict(zip(MESH_AXES, sizes))} needs {int(np.prod(sizes))} devices but "
                         f"{num_devices} are present; set one axis to -1 to fill the rest")
    return tuple(sizes)


def make_mesh(axes: Mapping[str, int], devices: Sequence[Any] | None = None) -> Mesh:
    """A mesh over all (or the given) devices with Auto axes, so jit shardings drive the partitioner."""
    devices = list(jax.devices() if devices is None else devices)
    shape = mesh_shape(axes, len(devices))
    auto = (jax.sharding.AxisType.Auto,) * len(MESH_AXES)
    return jax.make_mesh(shape, MESH_AXES, axis_types=auto, devices=devices)


def logical_shardings(logical_specs: Any, mesh: Mesh, rules: Rules) -> Any:
    """NamedShardings for a tree of logical PartitionSpecs (e.g. from `model.param_logical_axes`)."""
    return nn.logical_to_mesh_sharding(logical_specs, mesh, [tuple(r) for r in rules])


@dataclasses.dataclass(frozen=True)
class Layout:
    """The mesh and rules, for the placements the model makes itself inside a jitted step (its `layout`):
    `constrain` pins a value by logical names (`model.Embed` gathers its table with it), `per_shard` runs
    a kernel the partitioner cannot split (Pallas's splash attention) on each device's rows and heads.
    The logical name `batch` is the rows' axes, `BATCH_AXES`."""

    mesh: Mesh
    rules: tuple[tuple[str, str | tuple[str, ...] | None], ...]

    @property
    def platform(self) -> str:
        return self.mesh.devices.flat[0].platform

    def spec(self, names: Sequence[str | None]) -> PartitionSpec:
        return nn.logical_to_mesh_axes(tuple(names), (("batch", BATCH_AXES), *self.rules))

    def constrain(self, x: jax.Array, names: Sequence[str | None]) -> jax.Array:
        return jax.lax.with_sharding_constraint(x, NamedSharding(self.mesh, self.spec(names)))

    def per_shard(self, fn: Callable, in_names: Sequence[Sequence[str | None]],
                  out_names: Sequence[str | None]) -> Callable:
        return jax.shard_map(fn, mesh=self.mesh, in_specs=tuple(self.spec(n) for n in in_names),
                             out_specs=self.spec(out_names), check_vma=False)


def layout(mesh: Mesh, rules: Rules) -> Layout:
    return Layout(mesh, tuple((name, tuple(axes) if isinstance(axes, list) else axes) for name, axes in rules))


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Rows split over data x fsdp; everything else replicated."""
    return NamedSharding(mesh, PartitionSpec(BATCH_AXES))


def accum_batch_sharding(mesh: Mesh) -> NamedSharding:
    """`[accum, rows, ...]` training batches: micro-batch axis whole, rows split over data x fsdp."""
    return NamedSharding(mesh, PartitionSpec(None, BATCH_AXES))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def global_batch(local: Mapping[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
    """Each host's rows become its part of one global array (`make_array_from_process_local_data`)."""
    sharding = batch_sharding(mesh)
    return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v)) for k, v in local.items()}


def data_parallel_size(mesh: Mesh) -> int:
    return int(np.prod([mesh.shape[a] for a in BATCH_AXES]))
