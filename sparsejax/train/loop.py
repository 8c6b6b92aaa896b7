"""Compiled epochs: a ``lax.scan`` of train steps over on-device data.

The data of a phase live on the device; an epoch draws a permutation,
gathers each batch inside the scan and never returns to the host. With a
mesh, each gathered batch is constrained to be split over the ``data`` axis.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
from jax.sharding import Mesh

from sparsejax.train import sharding
from sparsejax.train.state import TrainState

EpochFn = Callable[[TrainState, tuple[jax.Array, jax.Array], jax.Array],
                   tuple[TrainState, dict]]


def steps_per_epoch(n: int, batch_size: int) -> int:
  """The updates in an epoch of ``n`` examples (:func:`epoch_batches`' batch count)."""
  return max(1, n // batch_size) if batch_size else 1


def epoch_batches(key: jax.Array, n: int, batch_size: int, shuffle: bool = True) -> jax.Array:
  """Indices of shape ``(n // batch_size, batch_size)`` for one epoch.

  With ``shuffle`` a fresh permutation is drawn from ``key`` (the reference
  reshuffles each epoch); the last ``n % batch_size`` examples of the
  permutation are dropped, so every step sees a full batch. A batch size of
  ``n`` or more is full-batch training in a fixed order.
  """
  if batch_size >= n:
    return jnp.arange(n)[None]
  order = jax.random.permutation(key, n) if shuffle else jnp.arange(n)
  n_batches = steps_per_epoch(n, batch_size)
  return order[:n_batches * batch_size].reshape(n_batches, batch_size)


def make_epoch_fn(train_step, batch_size: int, *, shuffle: bool = True,
                  mesh: Mesh | None = None, jit: bool = True,
                  update_steps: Callable[[jax.Array], jax.Array] | None = None) -> EpochFn:
  """Builds ``epoch(state, (x, y), key[, index]) -> (state, mean metrics)``.

  With ``index`` (the epoch's number in its phase, the same for every seed)
  each step also receives its clock, ``index * steps + i`` for the epoch's
  ``i``-th step: the steps of a sparse-training algorithm need it
  (:func:`~sparsejax.train.step.make_train_step` with ``sparse``).

  Args:
    train_step: an *unjitted* step from :func:`~sparsejax.train.step.make_train_step`
      (built with ``batch_constraint=sharding.batch_constraint(mesh)`` when
      ``mesh`` is given).
    batch_size: examples per step; must divide by the mesh's device count.
    shuffle: reshuffle every epoch.
    mesh: the data-parallel mesh, or ``None`` for the default device.
    jit: compile the epoch.
    update_steps: ``clock -> bool``, the steps that change the masks
      (:func:`~sparsejax.train.step.updates_masks`): the epoch then runs the
      steps between two updates in a loop whose body has no condition, and each
      update step on its own (``train_step(..., update=True)``), instead of a
      ``lax.cond`` in every step (about 10 % of a LeNet-300-100 step on the
      CPU); the states are the same.
  """
  if mesh is not None:
    sharding.check_divisible(batch_size, mesh)

  def epoch(state: TrainState, data, key: jax.Array, index=None):
    x, y = data
    perm_key, step_key = jax.random.split(key)
    batches = epoch_batches(perm_key, x.shape[0], batch_size, shuffle)
    keys = jax.random.split(step_key, batches.shape[0])
    if index is None:
      def body(state, inputs):
        idx, k = inputs
        return train_step(state, (x[idx], y[idx]), k)
      state, metrics = jax.lax.scan(body, state, (batches, keys))
      return state, jax.tree.map(jnp.mean, metrics)
    clocks = index * batches.shape[0] + jnp.arange(batches.shape[0])
    if update_steps is None:
      def clocked(state, inputs):
        idx, k, clock = inputs
        return train_step(state, (x[idx], y[idx]), k, clock)
      state, metrics = jax.lax.scan(clocked, state, (batches, keys, clocks))
      return state, jax.tree.map(jnp.mean, metrics)
    return _segmented(train_step, state, (x, y), batches, keys, clocks, update_steps)

  return jax.jit(epoch) if jit else epoch


def _segmented(train_step, state, data, batches, keys, clocks, update_steps):
  """The epoch's steps as runs of plain steps between update steps (metric means)."""
  x, y = data
  n = batches.shape[0]
  updating = jnp.broadcast_to(update_steps(clocks), clocks.shape)

  def one(carry, update: bool):
    i, state, sums = carry
    idx = batches[i]
    state, metrics = train_step(state, (x[idx], y[idx]), keys[i], clocks[i], update=update)
    return i + 1, state, jax.tree.map(jnp.add, sums, metrics)

  def plain_run(carry):
    return jax.lax.while_loop(lambda c: (c[0] < n) & ~updating[jnp.minimum(c[0], n - 1)],
                              lambda c: one(c, False), carry)

  def segment(carry):
    carry = plain_run(carry)
    return jax.lax.cond(carry[0] < n, lambda c: one(c, True), lambda c: c, carry)

  shapes = jax.eval_shape(lambda: train_step(state, (x[batches[0]], y[batches[0]]), keys[0],
                                             clocks[0], update=False)[1])
  sums = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
  _, state, sums = jax.lax.while_loop(lambda c: c[0] < n, segment,
                                      (jnp.zeros((), jnp.int32), state, sums))
  return state, jax.tree.map(lambda total: total / n, sums)


def make_epochs_fn(epoch_fn: EpochFn, n_epochs: int, *, jit: bool = True):
  """``epochs(state, data, key) -> (state, per-epoch metrics)``: a scan of epochs.

  Compiles ``n_epochs`` epochs into one program (for full-batch problems such
  as teacher-student, where an epoch is a single step).
  """
  def epochs(state, data, key):
    def body(state, k):
      return epoch_fn(state, data, k)
    return jax.lax.scan(body, state, jax.random.split(key, n_epochs))
  return jax.jit(epochs) if jit else epochs
