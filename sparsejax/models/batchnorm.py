"""BatchNorm layers of the CNN models: the standard one, and L0 BatchNorm.

**L0 BatchNorm** (Gallego-Posada et al., 2022; reference notes, section 3.2)
follows a conv whose output channels carry hard-concrete gates
(:mod:`sparsejax.objectives.hard_concrete`). It normalises, and updates the
running statistics of, the **active** channels only; an inactive channel
passes through as the zeros its gate made. A plain BatchNorm would map a dead
channel's zeros to its offset :math:`\\beta` (and drag its running statistics
towards 0), so the channel could never be purged.

A channel is active when its input is not identically zero over the batch
and the spatial positions. The gates multiply the conv's kernel and bias
(:func:`~sparsejax.objectives.hard_concrete.gate_params`), so a channel whose
gate (sampled in training, deterministic in evaluation) is 0 has an exactly
zero input, and an open gate gives a nonzero one almost surely: the test reads
the gate mask off the activations, and no mask has to be passed along.

Both layers share Flax's ``BatchNorm`` variables (``params``: ``scale``,
``bias``; ``batch_stats``: ``mean``, ``var``), so checkpoints and unit covers
are the same.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

#: The BatchNorm kinds the CNN models take.
BATCHNORMS = ("standard", "l0")


class L0BatchNorm(nn.Module):
  """BatchNorm over the active channels only (module docstring).

  Attributes:
    use_running_average: normalise with the running statistics (evaluation).
    momentum: the running statistics' decay (Flax's convention).
    epsilon: added to the variance.
    dtype, param_dtype: computation and parameter dtypes.
  """
  use_running_average: bool = False
  momentum: float = 0.99
  epsilon: float = 1e-5
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    channels = x.shape[-1]
    axes = tuple(range(x.ndim - 1))
    scale = self.param("scale", nn.initializers.ones, (channels,), self.param_dtype)
    bias = self.param("bias", nn.initializers.zeros, (channels,), self.param_dtype)
    ra_mean = self.variable("batch_stats", "mean", jnp.zeros, (channels,), jnp.float32)
    ra_var = self.variable("batch_stats", "var", jnp.ones, (channels,), jnp.float32)
    active = jnp.any(x != 0, axis=axes)
    if self.use_running_average:
      mean, var = ra_mean.value, ra_var.value
    else:
      mean = jnp.mean(x, axis=axes)
      var = jnp.mean(jnp.square(x - mean), axis=axes)
      if not self.is_initializing():
        decay = lambda old, new: jnp.where(  # noqa: E731
            active, self.momentum * old + (1 - self.momentum) * new, old)
        ra_mean.value = decay(ra_mean.value, mean)
        ra_var.value = decay(ra_var.value, var)
    y = (x - mean) * jax.lax.rsqrt(var + self.epsilon) * scale + bias
    return jnp.where(active, y, x).astype(self.dtype)


def batch_norm(kind: str, **kwargs) -> nn.Module:
  """A BatchNorm of ``kind`` (one of :data:`BATCHNORMS`) with Flax's keyword arguments."""
  if kind == "standard":
    return nn.BatchNorm(**kwargs)
  if kind == "l0":
    return L0BatchNorm(**kwargs)
  raise ValueError(f"batchnorm must be one of {BATCHNORMS}, got {kind!r}")
