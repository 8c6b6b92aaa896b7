"""Magnitude pruning to a target density, one-shot or on Zhu & Gupta's schedule.

* :func:`magnitude_masks`: keep the ``round(density * n)`` largest ``|w|``
  over all prunable leaves together (``scope="global"``) or within each leaf
  (``scope="layer"``), ties broken by index; entries already pruned are never
  revived. The density may be a traced value, so one compiled function
  serves every step of a gradual schedule. It equals
  :func:`sparsejax.masks.global_magnitude_density` and
  :func:`sparsejax.masks.per_leaf_fraction` at a static density.
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

SCOPES = ("global", "layer")


def gradual_density(step, steps: int, final_density) -> jax.Array:
  """Density after step ``step`` of ``steps`` (Zhu & Gupta's cubic schedule; 0: dense)."""
  progress = jnp.clip(jnp.asarray(step) / steps, 0.0, 1.0)
  return 1.0 - (1.0 - final_density) * (1.0 - (1.0 - progress) ** 3)


def _top_k(magnitudes: jax.Array, density) -> jax.Array:
  """``True`` for the ``round(density * n)`` largest entries (index order breaks ties);
  negative entries (already pruned) are never kept."""
  n = magnitudes.size
  n_keep = jnp.round(density * n).astype(jnp.int32)
  order = jnp.argsort(-magnitudes, stable=True)
  rank = jnp.zeros(n, jnp.int32).at[order].set(jnp.arange(n, dtype=jnp.int32))
  return (rank < n_keep) & (magnitudes >= 0)


def magnitude_masks(params, masks, density, scope: str = "global"):
  """The masks keeping the largest-magnitude ``density`` of the prunable entries.

  Args:
    params: the parameters.
    masks: the current masks (``None`` leaves are never pruned).
    density: kept fraction of the prunable entries, in (0, 1] (may be traced).
    scope: ``"global"`` (one ranking over all leaves) or ``"layer"`` (each leaf).
  """
  if scope not in SCOPES:
    raise ValueError(f"scope must be one of {SCOPES}, got {scope!r}")
  def magnitude(m, p):
    return jnp.where(m, jnp.abs(p), -1.0)
  if scope == "layer":
    return masks_lib.map_masked(
        lambda m, p: None if m is None else _top_k(magnitude(m, p).ravel(), density).reshape(
            p.shape), masks, params)
  magnitudes = masks_lib.map_masked(lambda m, p: None if m is None else magnitude(m, p),
                                    masks, params)
  leaves, treedef = jax.tree_util.tree_flatten(magnitudes)
  keep = _top_k(jnp.concatenate([leaf.ravel() for leaf in leaves]), density)
  out, offset = [], 0
  for leaf in leaves:
    out.append(keep[offset:offset + leaf.size].reshape(leaf.shape))
    offset += leaf.size
  return jax.tree_util.tree_unflatten(treedef, out)
