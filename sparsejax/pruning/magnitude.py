"""Magnitude pruning to a target density, one-shot or on Zhu & Gupta's schedule.

* :func:`magnitude_masks`: keep the ``round(density * n)`` largest ``|w|``
  over all prunable leaves together (``scope="global"``,
  :func:`sparsejax.masks.global_magnitude_density`) or within each leaf
  (``scope="layer"``, :func:`sparsejax.masks.per_leaf_fraction`), ties
  broken by index; entries already pruned are never revived. The density
  may be a traced value, so one compiled function serves every step of a
  gradual schedule.
* :func:`gradual_density`: the cubic sparsity schedule of Zhu & Gupta
  ("To prune, or not to prune", ICLR workshop 2018, Eq. 1),

  .. math::  s_j = s_f + (s_i - s_f)\\,(1 - j/k)^3,\\qquad j = 0, 1, \\dots, k,

  from :math:`s_i = 0` to the final sparsity :math:`s_f = 1 - d` in ``k``
  steps; the density after step ``j`` is :math:`1 - s_j`. It prunes fast
  early, while there are many redundant weights, and slowly near the end.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from sparsejax import masks as masks_lib
from sparsejax.sparsity.schedules import PruningSchedule, density_at


def gradual_density(step, steps: int, final_density) -> jax.Array:
  """Density after step ``step`` of ``steps`` (Zhu & Gupta's cubic schedule; 0: dense):
  :func:`sparsejax.sparsity.schedules.density_at` of the cubic schedule from density 1
  at step 0 to ``final_density`` at ``steps``."""
  schedule = PruningSchedule(start=0, end=steps, frequency=1, initial_density=1.0,
                             final_density=final_density, power=3.0)
  return density_at(schedule, step)


def magnitude_masks(params, masks, density, scope: str = "global"):
  """The masks keeping the largest-magnitude ``density`` of the prunable entries.

  Args:
    params: the parameters.
    masks: the current masks (``None`` leaves are never pruned).
    density: kept fraction of the prunable entries, in (0, 1] (may be traced).
    scope: ``"global"`` (one ranking over all leaves) or ``"layer"`` (each leaf).
  """
  return masks_lib.top_density(jax.tree.map(jnp.abs, params), masks, density, scope)
