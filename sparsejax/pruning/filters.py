"""Filter scores and filter deletion for :class:`sparsejax.models.BasicCNN`.

**Scores** of the EEE 198 filter criteria (reference notes
``jax_ecosystem_and_annealing.md``, section 2.4), one per output filter of
every conv, from the kernels ``(kh, kw, in, out)``
(:mod:`sparsejax.pruning.saliency` has the formulas):

* ``magnitude``: the mean :math:`|w|` of the filter after training;
* ``magsign``: :math:`\\mathrm{sign}(\\bar w_{init}) \\cdot \\bar w_{final}` with
  :math:`\\bar w` the filter's *signed* mean weight (a structured "large
  final, same sign").

**Deletion** (section 2.5) builds the smaller dense CNN of the kept
filters: :func:`delete_filters` masks the deleted filters' units (the conv's
filter and bias, the BatchNorm's scale and offset after it) and
:func:`sparsejax.compaction.compact` removes them along their groups: each conv
keeps ``W[:, :, kept_in, kept_out]`` and ``b[kept_out]``, each BatchNorm its
scale, offset, running mean and variance at the kept channels, and the head the
rows of the kept channels of the last conv (row ``p C + c`` for position ``p``
and channel ``c`` of the ``(H, W, C)`` flatten). In evaluation mode the smaller
network computes the masked one's function (``tests/test_anneal_recipe.py``),
and its variables fit the same model built with the kept widths.
"""

from __future__ import annotations

from typing import Mapping

import jax.numpy as jnp
import numpy as np

from sparsejax import masks as masks_lib
from sparsejax.compaction import Compacted, compact

FILTER_CRITERIA = ("magnitude", "magsign")


def conv_names(params) -> list[str]:
  """``Conv_0 ... Conv_K`` in order."""
  return sorted((k for k in params if k.startswith("Conv_")), key=lambda k: int(k.split("_")[1]))


def filter_scores(criterion: str, trained, initial) -> dict[str, jnp.ndarray]:
  """``{conv: (out,)}`` scores of ``criterion`` (module docstring); larger is kept."""
  scores = {}
  for name in conv_names(trained):
    final, init = trained[name]["kernel"], initial[name]["kernel"]
    axes = tuple(range(final.ndim - 1))
    if criterion == "magnitude":
      scores[name] = jnp.mean(jnp.abs(final), axis=axes)
    elif criterion == "magsign":
      scores[name] = jnp.sign(jnp.mean(init, axis=axes)) * jnp.mean(final, axis=axes)
    else:
      raise ValueError(f"criterion must be one of {FILTER_CRITERIA}, got {criterion!r}")
  return scores


def delete_filters(model, variables, kept: Mapping[str, np.ndarray], example) -> Compacted:
  """The dense CNN of the ``kept`` filters (``{conv: bool[out]}``, one per gate site of
  ``model``, a model adapter or a zoo module with ``unit_covers()``), for inputs shaped
  like ``example``; ``variables`` is ``{"params": ..., "batch_stats": ...}``."""
  masks = masks_lib.unit_masks(variables["params"], kept, model.unit_covers())
  return compact(model, variables, masks, example=example, gather=False)


def kept_channels(deleted: Compacted, params) -> tuple[int, ...]:
  """The number of filters each conv keeps, in network order."""
  return tuple(deleted.variables["params"][name]["kernel"].shape[-1]
               for name in conv_names(params))
