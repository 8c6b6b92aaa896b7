"""Spreading a program over the local devices: a ``jax.sharding.Mesh`` with one ``data`` axis.

Two layouts (:class:`Layout`):

* ``"data"`` (data parallelism): every batch is split over the ``data``
  axis, and parameters, optimiser and objective state are replicated; the
  gradient is the global batch's (XLA inserts the all-reduce), BatchNorm
  statistics are over the global batch. The batch size must be a multiple of
  the device count.
* ``"seeds"``: the leading seed axis of every state and per-seed data array
  is split over the ``data`` axis, so a sweep of 256 seeds on 8 devices runs
  32 per device; each seed's computation stays on one device. The mesh uses
  the largest device count that divides the number of seeds.

One device is the same code path with a mesh of size one; several CPU
devices can be faked for tests with
``XLA_FLAGS=--xla_force_host_platform_device_count=N``.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Sequence

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


def put(tree: Any, sharding: NamedSharding) -> Any:
  """``jax.device_put`` that also works when the mesh spans several processes.

  Each process passes its own copy of the same values; typed PRNG keys travel
  as their key data (``device_put`` takes only the devices of this process
  for them).
  """
  def one(x):
    if isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
      return jax.random.wrap_key_data(jax.device_put(jax.random.key_data(x), sharding),
                                      impl=jax.random.key_impl(x))
    return jax.device_put(x, sharding)
  return jax.tree.map(one, tree)


def replicate(tree: Any, mesh: Mesh) -> Any:
  """Places every array of ``tree`` on all devices of the mesh."""
  return put(tree, replicated(mesh))


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


def argument_axes(in_axes, n_args: int) -> tuple:
  """``in_axes`` as ``jax.vmap`` takes it (0 or ``None`` per positional argument, or
  one for all), one per argument of ``n_args``.

  Raises:
    ValueError: an axis other than 0 or ``None``.
  """
  axes = tuple(in_axes) if isinstance(in_axes, (tuple, list)) else (in_axes,) * n_args
  if any(axis not in (0, None) for axis in axes):
    raise ValueError(f"in_axes must be 0 or None per argument, got {in_axes!r}")
  return axes


def split_seeds(fn: Callable, in_axes, mesh: Mesh) -> Callable:
  """``fn`` run by every device of ``mesh`` on its share of a leading seed axis.

  ``in_axes`` as ``jax.vmap`` takes it, 0 or ``None`` per positional argument
  (or one for all): an argument with the seed axis is split over ``data``,
  a shared one (``None``) replicated; every output has the seed axis, split.
  ``fn`` sees its device's seeds only (``jax.shard_map``).
  """
  def split(*args):
    specs = tuple(P() if axis is None else P(DATA_AXIS)
                  for axis in argument_axes(in_axes, len(args)))
    return jax.shard_map(fn, mesh=mesh, in_specs=specs, out_specs=P(DATA_AXIS),
                         check_vma=False)(*args)
  return split


LAYOUTS = ("data", "seeds")


class Layout(NamedTuple):
  """Where a program's arrays live (module docstring).

  Attributes:
    kind: ``"data"`` or ``"seeds"``.
    mesh: the one-axis ``data`` mesh.
  """
  kind: str
  mesh: Mesh

  @property
  def devices(self) -> int:
    return self.mesh.shape[DATA_AXIS]

  def place(self, tree: Any) -> Any:
    """Puts a tree with a leading seed axis where the layout wants it."""
    if self.kind == "data":
      return replicate(tree, self.mesh)
    return put(tree, batch_sharded(self.mesh))

  def place_data(self, data: Any, data_axis: int | None) -> Any:
    """The data: replicated, or split with the seeds when they are per seed."""
    if self.kind == "seeds" and data_axis == 0:
      return put(data, batch_sharded(self.mesh))
    return replicate(data, self.mesh)

  def batch_constraint(self):
    """The constraint that splits a batch over the devices (``None`` for ``"seeds"``)."""
    return batch_constraint(self.mesh) if self.kind == "data" else None


def layout_for(kind: str, n_seeds: int, devices: Sequence[jax.Device] | None = None) -> Layout:
  """The layout ``kind`` over ``devices`` (default all): for ``"seeds"``, over the
  largest number of them that divides ``n_seeds``."""
  if kind not in LAYOUTS:
    raise ValueError(f"layout must be one of {LAYOUTS}, got {kind!r}")
  devices = list(jax.devices() if devices is None else devices)
  if kind == "seeds":
    count = max(d for d in range(1, len(devices) + 1) if n_seeds % d == 0)
    devices = devices[:count]
  return Layout(kind, data_mesh(devices))
