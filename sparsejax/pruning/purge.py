"""Purging a structured-L0-gated network into a smaller dense one.

After training with structured hard-concrete gates
(:mod:`sparsejax.objectives.hard_concrete`), a group whose test-time gate is
0 contributes nothing, and the network is rebuilt without it (reference
notes, section 3.2). With the gates folded into the weights
(:func:`sparsejax.objectives.hard_concrete.gate_params`), a dead gate leaves a
zero kernel row (a Dense layer's input feature) or a zero filter and bias (a
conv's output channel), and :func:`sparsejax.compaction.compact` removes
exactly what the reference's purge removes: a Dense layer's outputs that the
next layer's input gates drop, a conv's dead channels and the next conv's
inputs, and at the conv-to-dense boundary each flattened feature
``(position, channel)`` whose own gate or channel is dead (the compacted model
gathers the others); the input features whose gates are dead are gathered
from the input. The purged network computes the gated network's test-time
function exactly (``tests/test_constrained_l0.py``, ``tests/test_compact.py``).
:func:`count` gives its parameters and multiply-accumulates
(:mod:`sparsejax.compaction.cost`: convolutions and products; the
reference's ``ptflops`` also counts bias additions, activations and pooling).
"""

from __future__ import annotations

from typing import Mapping

import jax
import numpy as np

from sparsejax.compaction import Compacted, compact, cost
from sparsejax.objectives import hard_concrete as hc


def purge(model, params, alive: Mapping[str, np.ndarray], example) -> Compacted:
  """The purged network of ``params`` under the gates ``alive``.

  Args:
    model: the gated network (a linen module or a model adapter).
    params: its parameters (the test gates may already be folded in).
    alive: ``{layer: bool[n_gates]}``: the structured gates whose test value
      is positive (Dense: per input feature; Conv: per output channel).
    example: an input batch (its shape only).

  Returns:
    The :class:`~sparsejax.compaction.Compacted` network:
    ``purged.apply(purged.variables, x)``.
  """
  layers = hc.gated_layers(params)
  folded = hc.gate_params(layers, params, {l.name: np.asarray(alive[l.name], np.float32)
                                           for l in layers})
  return compact(model, {"params": folded}, example=example)


def count(net: Compacted, example) -> dict[str, int]:
  """Parameters and multiply-accumulates per example of the purged network ``net``
  (``example``: one input, batch axis first)."""
  example = jax.ShapeDtypeStruct((1,) + tuple(np.shape(example)[1:]), np.float32)
  return {"params": cost.parameters(net.variables),
          "macs": cost.macs(net.apply, net.variables, example)}
