"""TAMADE: the largest global magnitude threshold that keeps the loss in tolerance.

Threshold Adaptive Mask Determination (the efficient-compression reference,
arXiv 2505.17469, ``HelperFunctions/tamade.jl``; notes section 4). With
:math:`f(t)` the unregularised full-data loss of the parameters pruned at
threshold :math:`t` (every prunable entry with :math:`|\\theta_i| < t` set to
0) and the target :math:`L_0 = f(0)`, the loss before pruning, TAMADE finds

.. math::  t^\\star \\approx \\max \\{ t \\in [0, 2 \\max_i |\\theta_i|] :
                                    f(t) \\le (1 + \\delta) L_0 \\}

by binary search, with one global threshold for all prunable leaves
(weights, biases, BatchNorm parameters alike):

* ``low = 0``, ``high = 2 max|theta|``, ``thr = 0``;
* while ``high - low > resolution``: ``mid = (low + high) / 2``; stop if
  ``mid == low`` (floating-point guard); if
  ``f(mid) <= (1 + delta) * target`` then ``thr = low = mid``, else
  ``high = mid``;
* return ``thr``, the largest accepted threshold (0 if none was accepted).

The resolution is an absolute width in weight-magnitude units, so the search
takes about :math:`\\lceil \\log_2(2 \\max|\\theta| / \\mathrm{resolution})\\rceil`
loss evaluations, each a full pass over the calibration data. The loop is a
``jax.lax.while_loop`` whose body calls the compiled full-data loss, so the
whole search is one device program with no host round trip per evaluation.

**Calibration.** :func:`make_tamade_fn` evaluates the loss with the model in
eval mode (BatchNorm running averages, no dropout), as the later reference
code does; the paper-era code evaluated it in train mode. The calibration
data are the caller's choice: the training set (as in the paper) or the
validation set (as in the later code).
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from sparsejax import masks as masks_lib
from sparsejax.objectives.base import Objective
from sparsejax.train.losses import Task
from sparsejax.train.state import TrainState
from sparsejax.train.step import data_loss_fn

Params = Any
Masks = Any
LossFn = Callable[[Params], jax.Array]


class TamadeResult(NamedTuple):
  """What :func:`tamade` found.

  Attributes:
    masks: the input masks AND ``|theta| >= threshold`` (``None`` leaves stay
      ``None``).
    threshold: the largest accepted threshold, 0 if none was accepted.
    evaluations: number of loss evaluations in the search (the target's
      evaluation not counted), int32.
    target_loss: the loss before pruning, :math:`L_0`.
    final_loss: the loss at ``threshold`` (``target_loss`` if it is 0).
  """
  masks: Masks
  threshold: jax.Array
  evaluations: jax.Array
  target_loss: jax.Array
  final_loss: jax.Array


class _Search(NamedTuple):
  """The loop's carry. ``low`` is also the largest accepted threshold so far
  (``thr`` of the reference, which always moves together with ``low``) and
  ``loss`` the loss there."""
  low: jax.Array
  high: jax.Array
  loss: jax.Array
  evaluations: jax.Array


def _max_magnitude(params: Params, masks: Masks) -> jax.Array:
  """``max |theta|`` over the prunable (non-``None``-mask) leaves, 0 if none."""
  maxima = masks_lib.map_masked(
      lambda m, p: None if m is None else jnp.max(jnp.abs(p), initial=0),
      masks, params)
  return jnp.max(jnp.stack([jnp.zeros(()), *jax.tree_util.tree_leaves(maxima)]))


def tamade(loss_fn: LossFn, params: Params, masks: Masks, *, delta: float = 0.01,
           resolution: float = 1e-7, target_loss: jax.Array | None = None,
           ) -> TamadeResult:
  """Binary search of the largest global magnitude threshold within tolerance.

  The search of the module docstring, as one ``jax.lax.while_loop``. The
  masks are applied to ``params`` first: entries already pruned are zero,
  stay pruned and do not count in ``max|theta|``; ``None`` leaves are never
  pruned and do not count either.

  Under ``jax.vmap`` over a batch of parameter trees the loop's condition is
  batched: the loop runs until every tree's interval is closed, and each tree
  carries its own ``low`` (= ``thr``), ``high`` and evaluation count, updated only
  while its own interval is open, so each tree's result equals its unbatched
  search exactly. A vmapped search costs the longest tree's number of
  iterations, each evaluating every tree's loss.

  Args:
    loss_fn: ``params -> scalar`` mean data loss, traceable (e.g. a
      ``lax.scan`` over the calibration batches, :func:`make_tamade_fn`).
    params: the parameter tree.
    masks: the mask tree over ``params``.
    delta: tolerated relative loss increase :math:`\\delta`.
    resolution: the search stops once ``high - low <= resolution`` (absolute,
      in weight-magnitude units).
    target_loss: the loss before pruning, if already known; by default
      ``loss_fn`` of the masked parameters (one more evaluation).

  Returns:
    A :class:`TamadeResult`. Pruning is permanent in the reference: apply
    ``result.masks`` to the parameters (:func:`sparsejax.masks.apply`).
  """
  params = masks_lib.apply(masks, params)
  if target_loss is None:
    target = loss_fn(params)
  else:
    target = jnp.asarray(target_loss, jax.eval_shape(loss_fn, params).dtype)
  bound = (1 + delta) * target
  high = 2 * _max_magnitude(params, masks)
  high = high.astype(jnp.promote_types(high.dtype, jnp.float32))

  def pruned_masks(threshold):
    return masks_lib.global_magnitude_threshold(params, masks, threshold)

  def is_open(s: _Search) -> jax.Array:
    return (s.high - s.low > resolution) & ((s.low + s.high) / 2 != s.low)

  def step(s: _Search) -> _Search:
    mid = (s.low + s.high) / 2
    loss = loss_fn(masks_lib.apply(pruned_masks(mid), params))
    # ``is_open`` is always true here without vmap; with a batched condition
    # it freezes the trees whose own search has ended.
    active = is_open(s)
    accept = active & (loss <= bound)
    return _Search(
        low=jnp.where(accept, mid, s.low),
        high=jnp.where(active & ~accept, mid, s.high),
        loss=jnp.where(accept, loss, s.loss),
        evaluations=s.evaluations + active.astype(jnp.int32),
    )

  init = _Search(low=jnp.zeros((), high.dtype), high=high, loss=target,
                 evaluations=jnp.zeros((), jnp.int32))
  found = jax.lax.while_loop(is_open, step, init)
  return TamadeResult(
      masks=pruned_masks(found.low),
      threshold=found.low,
      evaluations=found.evaluations,
      target_loss=target,
      final_loss=found.loss,
  )


def make_tamade_fn(model: nn.Module, task: Task, objective: Objective, batch_size: int, *,
                   delta: float = 0.01, resolution: float = 1e-7, jit: bool = True,
                   ) -> Callable[..., TamadeResult]:
  """Builds ``search(state, x, y, target_loss=None) -> TamadeResult``.

  The loss is the unregularised mean data loss over all of ``(x, y)``
  (:func:`sparsejax.train.step.data_loss_fn`: a ``lax.scan`` over batches of
  ``batch_size``, the model in eval mode, ``objective.forward(..., train=False)``),
  at ``state.params`` under ``state.masks``.

  Args:
    model: a Flax module following the sparsejax model contract.
    task: the data loss (cross-entropy for classifiers, MSE for regression).
    objective: the training objective, for its eval-mode ``forward``.
    batch_size: examples per scanned batch of the calibration data.
    delta: tolerated relative loss increase.
    resolution: absolute width at which the search stops.
    jit: compile the search (``jit=False`` for use inside ``jax.vmap`` or a
      larger compiled program).

  Returns:
    The search; ``x, y`` are the calibration data chosen by the caller.
  """
  loss = data_loss_fn(model, task, objective, batch_size)

  def search(state: TrainState, x: jax.Array, y: jax.Array,
             target_loss: jax.Array | None = None) -> TamadeResult:
    return tamade(lambda params: loss(params, state, x, y), state.params, state.masks,
                  delta=delta, resolution=resolution, target_loss=target_loss)

  return jax.jit(search) if jit else search
