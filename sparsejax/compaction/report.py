"""A finished run's sizes before and after compaction, for its result row."""

from __future__ import annotations

import jax

from sparsejax import masks as masks_lib
from sparsejax.compaction.compact import compact
from sparsejax.compaction import cost


def compaction_fields(model, params, model_state, masks) -> dict[str, float]:
  """``masked_*``: the masked model as it runs (every parameter, all its products);
  ``compact_*``: the compacted one; per example: ``*_params`` (the ``params``
  collection), ``*_macs`` (:func:`cost.macs`) and ``*_flops`` (XLA's cost analysis);
  ``nonzero_macs``: the masked model's MACs whose weight is not zero
  (:func:`cost.nonzero_macs`, the unstructured sparse network's theoretical cost).

  ``model`` is a model adapter; the masked parameters are compacted
  (:func:`sparsejax.compaction.compact`).
  """
  example = jax.ShapeDtypeStruct((1, *model.input_shape),
                                 jax.tree.leaves(params)[0].dtype)
  variables = {"params": masks_lib.apply(masks, params), **model_state}
  compacted = compact(model, variables, example=example)
  fields = {}
  for name, fn, v in (("masked", compacted.forward, variables),
                      ("compact", compacted.apply, compacted.variables)):
    fields[f"{name}_params"] = cost.parameters(v["params"])
    fields[f"{name}_macs"] = cost.macs(fn, v, example)
    fields[f"{name}_flops"] = cost.flops(fn, v, example)
  fields["nonzero_macs"] = cost.nonzero_macs(compacted.forward, variables, example)
  fields["compact_removed_units"] = int(sum(g.removed for g in compacted.groups))
  return fields

