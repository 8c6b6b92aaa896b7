"""Per-example data losses and metrics, grouped into tasks.

Losses are per-example so that a full-data evaluation over padded batches can
weight each example exactly once; the train step takes their mean.
"""

from __future__ import annotations

from typing import Callable, Mapping, NamedTuple

import jax
import jax.numpy as jnp
import optax

PerExample = Callable[[jax.Array, jax.Array], jax.Array]


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Softmax cross-entropy with integer labels, one value per example (at least
  float32: bfloat16 logits of a mixed-precision model are widened first)."""
  return optax.softmax_cross_entropy_with_integer_labels(_widened(logits), labels)


def correct(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """1.0 where the arg-max class equals the label, else 0.0 (at least float32)."""
  return (jnp.argmax(logits, axis=-1) == labels).astype(_widened(logits).dtype)


def _widened(x: jax.Array) -> jax.Array:
  return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def squared_error(outputs: jax.Array, targets: jax.Array) -> jax.Array:
  """Squared error averaged over the output dimensions, one value per example.

  Its mean over examples is the MSE of the efficient-compression reference.
  """
  err = jnp.square(outputs - targets.reshape(outputs.shape))
  return jnp.mean(err.reshape(err.shape[0], -1), axis=-1)


class Task(NamedTuple):
  """A supervised task: the per-example loss and named per-example metrics."""
  loss: PerExample
  metrics: Mapping[str, PerExample]


CLASSIFICATION = Task(loss=cross_entropy, metrics={"accuracy": correct})
#: The ``mse`` metric stays the mean squared error when an objective transforms the
#: loss (the Gaussian code length of :mod:`sparsejax.objectives.gauss`).
REGRESSION = Task(loss=squared_error, metrics={"mse": squared_error})
