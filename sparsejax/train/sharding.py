"""Data parallelism over a ``jax.sharding.Mesh`` with one ``data`` axis.

The batch is split over the ``data`` axis and parameters, optimiser and
objective state are replicated. One device is the same code path with a mesh
of size one; several CPU devices can be faked for tests with
``XLA_FLAGS=--xla_force_host_platform_device_count=N``.
"""

from __future__ import annotations

from typing import Any, Sequence

import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = "data"


def data_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A one-axis mesh named ``data`` over ``devices`` (default all devices)."""
  devices = list(jax.devices() if devices is None else devices)
  return jax.make_mesh((len(devices),), (DATA_AXIS,), devices=devices,
                       axis_types=(jax.sharding.AxisType.Auto,))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharded(mesh: Mesh) -> NamedSharding:
  """Leading (batch) axis split over ``data``, the rest replicated."""
  return NamedSharding(mesh, P(DATA_AXIS))


def replicate(tree: Any, mesh: Mesh) -> Any:
  """Places every array of ``tree`` on all devices of the mesh."""
  return jax.device_put(tree, replicated(mesh))


def shard_batch(batch: Any, mesh: Mesh) -> Any:
  """Splits each array's leading axis across the ``data`` axis."""
  check_divisible(jax.tree.leaves(batch)[0].shape[0], mesh)
  return jax.device_put(batch, batch_sharded(mesh))


def batch_constraint(mesh: Mesh):
  """Inside jit: constrains a batch to be split over ``data``."""
  sharding = batch_sharded(mesh)
  return lambda batch: jax.lax.with_sharding_constraint(batch, sharding)


def check_divisible(batch_size: int, mesh: Mesh) -> None:
  n = mesh.shape[DATA_AXIS]
  if batch_size % n:
    raise ValueError(
        f"batch_size {batch_size} is not divisible by the {n} devices of the "
        f"'{DATA_AXIS}' mesh axis; choose a multiple of {n}")
