"""Random gradient pruning: remove the parameters that cannot change the loss.

The efficient-compression reference (arXiv 2505.17469,
``HelperFunctions/random_gradient_pruning.jl``; notes section 5) prunes, before
and after TAMADE, every parameter whose gradient on one random batch is
exactly zero:

1. draw :math:`x \\sim \\mathcal{N}(0, 1)` and targets :math:`y` in the shapes
   of a training batch;
2. :math:`g = \\nabla_\\theta \\, L(m \\odot \\theta; x, y)`, the gradient of
   the masked, unregularised data loss with respect to all parameters;
3. set :math:`m_i = \\mathrm{False}` and :math:`\\theta_i = 0` wherever
   :math:`g_i = 0`.

This removes weights that cannot affect the output, such as the incoming
weights and bias of a unit whose outgoing weights are all pruned; entries
already masked have zero gradient and stay pruned. With ReLU, a unit that is
inactive on the whole random batch loses its incoming weights too.

**Targets.** Real-valued targets are drawn from :math:`\\mathcal{N}(0, 1)`, as
in the reference. For integer class labels (cross-entropy), the reference's
:math:`\\mathcal{N}(0, 1)` soft targets have no integer counterpart; sparsejax
draws the labels uniformly from the classes. The gradient of the
cross-entropy with respect to the logits, :math:`\\mathrm{softmax}(z) -
\\mathrm{onehot}(y)`, has no exact zeros for any label, so the choice of labels
neither creates nor removes zero gradients upstream of the logits.

``None`` mask leaves are never pruned.
"""

from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from sparsejax import masks as masks_lib
from sparsejax.objectives.base import Objective
from sparsejax.train.losses import Task
from sparsejax.train.state import TrainState
from sparsejax.train.step import apply_model, data_loss_fn

Params = Any
Masks = Any
#: ``(params, x, y) -> scalar`` mean data loss of one batch.
BatchLoss = Callable[[Params, jax.Array, jax.Array], jax.Array]
#: ``(key, state, batch) -> (params, masks)``, see :func:`make_random_gradient_prune_fn`.
PruneFn = Callable[[jax.Array, TrainState, tuple], tuple[Params, Masks]]


def _random_batch(key: jax.Array, batch_like: tuple[Any, Any],
                  num_classes: int | None) -> tuple[jax.Array, jax.Array]:
  x_like, y_like = batch_like
  x_key, y_key = jax.random.split(key)
  x = jax.random.normal(x_key, x_like.shape, x_like.dtype)
  if not jnp.issubdtype(y_like.dtype, jnp.integer):
    return x, jax.random.normal(y_key, y_like.shape, y_like.dtype)
  if num_classes is None:
    raise ValueError("integer targets need num_classes to draw random labels")
  return x, jax.random.randint(y_key, y_like.shape, 0, num_classes, y_like.dtype)


def random_gradient_prune(key: jax.Array, loss_fn: BatchLoss, params: Params, masks: Masks,
                          batch_like: tuple[Any, Any], *, num_classes: int | None = None,
                          ) -> tuple[Params, Masks]:
  """Prunes every entry whose gradient on one random batch is exactly zero.

  Args:
    key: PRNG key of the random batch.
    loss_fn: ``(params, x, y) -> scalar``, the unregularised mean data loss;
      it receives the masked parameters :math:`m \\odot \\theta`.
    params: the parameter tree.
    masks: the mask tree over ``params``.
    batch_like: ``(x, y)`` with the shapes and dtypes of one training batch
      (arrays or ``jax.ShapeDtypeStruct``; only shapes and dtypes are read).
      Floating targets are drawn from N(0, 1), integer targets uniformly from
      ``range(num_classes)``.
    num_classes: number of classes, required for integer targets.

  Returns:
    ``(params, masks)``: the masks AND ``gradient != 0`` (``None`` leaves stay
    ``None``) and the parameters with every pruned entry set to 0.
  """
  x, y = _random_batch(key, batch_like, num_classes)
  grads = jax.grad(lambda p: loss_fn(masks_lib.apply(masks, p), x, y))(params)
  new_masks = masks_lib.map_masked(
      lambda m, g: None if m is None else jnp.logical_and(m, g != 0), masks, grads)
  return masks_lib.apply(new_masks, params), new_masks


def make_random_gradient_prune_fn(model: nn.Module, task: Task, objective: Objective, *,
                                  jit: bool = True) -> PruneFn:
  """Builds ``prune(key, state, batch) -> (params, masks)`` for a model.

  The loss is ``task.loss`` averaged over the random batch, with the model in
  eval mode (BatchNorm running averages, no dropout) and
  ``objective.forward(..., train=False)``, as in TAMADE's calibration
  (:func:`sparsejax.pruning.tamade.make_tamade_fn`). For integer targets the
  number of classes is the model's output width.

  Args:
    model: a Flax module following the sparsejax model contract.
    task: the data loss.
    objective: the training objective, for its eval-mode ``forward``.
    jit: compile ``prune``.

  Returns:
    ``prune(key, state, batch)``, where ``batch = (x, y)`` is a training batch
    whose shapes and dtypes the random batch takes (its values are not read).
  """

  def prune(key: jax.Array, state: TrainState, batch: tuple) -> tuple[Params, Masks]:
    x_like, _ = batch
    loss = data_loss_fn(model, task, objective, x_like.shape[0])
    outputs = jax.eval_shape(
        lambda p, x: apply_model(model, p, state.model_state, x, train=False)[0],
        state.params, x_like)
    return random_gradient_prune(
        key, lambda params, x, y: loss(params, state, x, y), state.params, state.masks,
        batch, num_classes=outputs.shape[-1])

  return jax.jit(prune) if jit else prune
