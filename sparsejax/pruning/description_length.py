"""The description-length cut: the global magnitude threshold of the shortest two-part code.

TAMADE (:mod:`sparsejax.pruning.tamade`) keeps the loss within a relative
tolerance of the unpruned loss, so how much it removes is set by the
tolerance, not by what a parameter is worth. The description-length cut
instead prices a parameter: with :math:`f(k)` the mean data loss on the
:math:`N` coded points of the parameters that keep the :math:`k` largest
prunable magnitudes (every other prunable entry set to 0) and
:math:`\\ell(f)` that loss as bits per point, it keeps

.. math::  k^\\star = \\arg\\min_k \\; N\\,\\ell\\big(f(k)\\big) + b\\,k,

the two-part code length of the data (Rissanen 1978, "Modeling by shortest
data description"): :math:`N\\ell` bits for the points given the model, and
:math:`b` bits for each kept parameter. :math:`b = s\\cdot\\tfrac12\\log_2 N`
is the asymptotic price of a parameter estimated from :math:`N` points;
:math:`s = 1` is Schwarz's BIC.

The bits per point of the two tasks' losses (:data:`CODES`):

* squared error (the mean over :math:`d` outputs): a Gaussian code with the
  noise variance at its optimum, :math:`\\sigma^2 = \\mathrm{MSE}`, costs
  :math:`\\tfrac d2 \\log_2(2\\pi e\\,\\mathrm{MSE})` bits per point; the
  constant does not move the minimum and is dropped;
* cross-entropy in nats: :math:`\\mathrm{CE} / \\ln 2` bits per point.

The candidates are every kept count :math:`0, \\dots, K` (:math:`K` the
entries kept before the cut) when the prunable entries number at most
``max_candidates``, else a geometric grid of counts plus :math:`K` itself.
Each candidate is one full pass over the coded data, in one ``lax.map``:
no host round trip, and traceable under ``jax.vmap`` over seeds.
"""

from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from sparsejax import masks as masks_lib
from sparsejax.train import losses

Params = Any
Masks = Any
LossFn = Callable[[Params], jax.Array]


def gaussian_bits(outputs: int) -> Callable[[jax.Array], jax.Array]:
  """Bits per point of a mean squared error over ``outputs`` dimensions (constant dropped)."""
  return lambda mse: 0.5 * outputs * jnp.log2(mse)


def categorical_bits(cross_entropy: jax.Array) -> jax.Array:
  """Bits per point of a mean cross-entropy in nats."""
  return cross_entropy / math.log(2)


#: The per-example losses the cut can read as a code length, by name.
CODES = {"squared_error": losses.squared_error, "cross_entropy": losses.cross_entropy}


def bits_per_point(task_loss: Callable, outputs: int) -> Callable[[jax.Array], jax.Array]:
  """The code of a task's loss: ``mean loss -> bits per point``.

  Raises:
    ValueError: the loss is not one of :data:`CODES`.
  """
  if task_loss is losses.squared_error:
    return gaussian_bits(outputs)
  if task_loss is losses.cross_entropy:
    return categorical_bits
  raise ValueError(
      f"pruning.criterion 'description_length' reads the task's loss as a code length, which "
      f"needs one of the losses {sorted(CODES)}; this task's loss is "
      f"{getattr(task_loss, '__name__', task_loss)!r}")


def bits_per_parameter(n_points: int, bits_scale: float = 1.0) -> float:
  """:math:`b = s\\cdot\\tfrac12\\log_2 N`: BIC's price of a parameter at ``bits_scale = 1``."""
  return bits_scale * 0.5 * math.log2(n_points)


class DescriptionLengthResult(NamedTuple):
  """What :func:`description_length_cut` chose.

  Attributes:
    masks: the input masks AND ``|theta| >= threshold``.
    threshold: the chosen global magnitude threshold (0: nothing cut).
    kept: prunable entries kept at the threshold.
    code_length: :math:`N\\ell(f(k^\\star)) + b k^\\star` in bits (up to the dropped constant).
    dense_code_length: the same at :math:`K`, before the cut.
  """
  masks: Masks
  threshold: jax.Array
  kept: jax.Array
  code_length: jax.Array
  dense_code_length: jax.Array


def candidate_counts(n: int, max_candidates: int = 1024) -> np.ndarray:
  """The static kept counts tried: all of ``0..n`` if that is at most ``max_candidates``
  counts, else 0 and a geometric grid from 1 to ``n`` (distinct integers)."""
  if n + 1 <= max_candidates:
    return np.arange(n + 1)
  grid = np.unique(np.round(np.geomspace(1, n, max_candidates - 1)).astype(np.int64))
  return np.concatenate([[0], grid])


def description_length_cut(loss_fn: LossFn, params: Params, masks: Masks, *, n_points: int,
                           bits_per_point: Callable[[jax.Array], jax.Array],
                           bits_per_parameter: float, max_candidates: int = 1024,
                           ) -> DescriptionLengthResult:
  """The kept count of the shortest two-part code, as a global magnitude threshold.

  Args:
    loss_fn: ``params -> scalar`` mean data loss on the coded points, traceable.
    params: the parameter tree (the masks are applied first).
    masks: the mask tree; ``None`` leaves are never cut and not counted.
    n_points: :math:`N`, the number of coded points.
    bits_per_point: the code of the loss (:func:`bits_per_point`).
    bits_per_parameter: :math:`b` (:func:`bits_per_parameter`).
    max_candidates: the most kept counts evaluated (:func:`candidate_counts`).

  Returns:
    A :class:`DescriptionLengthResult`.
  """
  params = masks_lib.apply(masks, params)
  magnitudes = jnp.abs(masks_lib.flatten_prunable(params, masks))
  magnitudes = magnitudes.astype(jnp.promote_types(magnitudes.dtype, jnp.float32))
  ascending = jnp.sort(magnitudes)
  n = ascending.shape[0]
  dense = jnp.sum(magnitudes > 0)
  counts = jnp.minimum(jnp.asarray(candidate_counts(n, max_candidates)), dense)
  counts = jnp.concatenate([counts, dense[None]])
  # Keeping the k largest: the threshold is the k-th largest magnitude; k = 0 keeps nothing.
  thresholds = jnp.where(counts > 0, ascending[jnp.clip(n - counts, 0, n - 1)], jnp.inf)

  def loss_at(threshold):
    return loss_fn(masks_lib.apply(masks_lib.global_magnitude_threshold(params, masks, threshold),
                                   params))

  data_bits = n_points * bits_per_point(jax.lax.map(loss_at, thresholds))
  kept = n - jnp.searchsorted(ascending, thresholds, side="left")
  kept = jnp.where(thresholds > 0, kept, dense)  # threshold 0 keeps what the masks keep
  total = data_bits + bits_per_parameter * kept
  best = jnp.argmin(total)
  threshold = jnp.where(counts[best] == dense, 0.0, thresholds[best]).astype(ascending.dtype)
  return DescriptionLengthResult(
      masks=masks_lib.global_magnitude_threshold(params, masks, threshold),
      threshold=threshold, kept=jnp.where(threshold > 0, kept[best], dense),
      code_length=total[best], dense_code_length=total[-1])
