"""The one train-step builder for every objective, and full-data evaluation.

For a batch :math:`(x, y)`, masks :math:`m`, parameters :math:`\\theta` and
objective variables :math:`s`, the step minimises

.. math::  \\frac{1}{B}\\sum_{b} \\ell(f_{\\phi(m\\odot\\theta, s)}(x_b), y_b)
           + R(m\\odot\\theta, s)

over :math:`(\\theta, s)` with one optax transformation, where
:math:`\\phi` is ``objective.forward`` and :math:`R` is ``objective.penalty``.
Around the optimiser update it

1. zeroes the gradient of every pruned entry,
2. negates the gradient of the dual variables (``objective.ascend``), so the
   optimiser *ascends* on them (min over primal, max over dual),
3. re-applies the masks to the updated parameters (so pruned weights stay
   exactly zero, even under Adam's momentum), and
4. projects the objective state (``objective.project``).
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax

from sparsejax import masks as masks_lib
from sparsejax.models.adapter import ModelAdapter, as_adapter
from sparsejax.objectives.base import Objective
from sparsejax.sparsity import algorithms as sparse_lib
from sparsejax.sparsity.algorithms import SparseTraining
from sparsejax.train.losses import Task
from sparsejax.train.state import TrainState, trainables

Batch = tuple[jax.Array, jax.Array]
TrainStep = Callable[..., tuple[TrainState, dict]]


def apply_model(model: ModelAdapter, params, model_state, x, *, train: bool,
                gates=None, key: jax.Array | None = None):
  """Runs the model; returns ``(outputs, new_model_state)``.

  ``model`` is a :class:`~sparsejax.models.ModelAdapter`, or any linen or
  NNX module, adapted here with the defaults of :func:`sparsejax.models.adapt`.
  In train mode the mutable collections (BatchNorm statistics) are updated and
  ``key`` feeds the ``dropout`` stream; ``gates`` are attached at their sites
  (a gate at the reserved site ``"input"``, a callable, is applied to ``x``).
  """
  model = as_adapter(model, x)
  return model.apply(params, model_state, x, train=train, gates=gates, key=key)


def ascent_signs(objective: Objective, grads_objective):
  """The objective's gradients with the sign of its dual variables flipped.

  Where ``objective.ascend`` marks a variable, its gradient is negated, so a
  descending optimiser *ascends* on it (min over the primal, max over the
  dual variables). Shared by :func:`make_train_step` and
  :func:`sparsejax.train.regularized.ascend_duals`.
  """
  dual = objective.ascend(grads_objective)
  return jax.tree.map(lambda g, is_dual: -g if is_dual else g, grads_objective, dual)


def make_train_step(model: ModelAdapter, task: Task, objective: Objective,
                    optimizer: optax.GradientTransformation, *, jit: bool = True,
                    batch_constraint: Callable[[Batch], Batch] | None = None,
                    sparse: SparseTraining | None = None,
                    ) -> TrainStep:
  """Builds ``step(state, batch, key[, clock]) -> (state, metrics)`` for any objective.

  Args:
    model: the model (:func:`sparsejax.models.adapt`; a bare linen or NNX module is
      adapted with the defaults).
    task: the per-example loss and metrics (:data:`~sparsejax.train.losses.CLASSIFICATION`
      or :data:`~sparsejax.train.losses.REGRESSION`).
    objective: the regularised objective.
    optimizer: optax transformation over ``{"params", "objective"}``.
    jit: return the step compiled with ``jax.jit`` (the loops use the raw one
      inside ``lax.scan``).
    batch_constraint: applied to the batch first; the sharded loop passes a
      ``with_sharding_constraint`` that splits it over the ``data`` axis.
    sparse: a sparse-training algorithm (:mod:`sparsejax.sparsity.algorithms`)
      that changes the masks inside the step: the step then takes ``clock``,
      the step number its schedule reads (the same for every seed of a vmapped
      program, so that the update stays a branch), and a part of ``key``
      draws its random scores. Its update sees the dense gradient
      :math:`\\nabla_{m\\odot\\theta} L` of the batch; with a straight-through
      algorithm the weights stay dense and every one takes the gradient.

  Returns:
    The step. ``metrics`` holds ``loss`` (the data loss, as the reference
    reports it, without the regulariser), ``penalty``, ``objective``
    (= loss + penalty) and the task's metrics, all batch means.
  """

  def loss_fn(train_vars, model_state, batch: Batch, key: jax.Array):
    x, y = batch
    forward_key, dropout_key = jax.random.split(key)
    params = train_vars["params"]
    objective_state = train_vars["objective"]
    effective, gates = objective.forward(params, objective_state, forward_key, True)
    outputs, model_state = apply_model(
        model, effective, model_state, x, train=True, gates=gates, key=dropout_key)
    data_loss = jnp.mean(objective.loss_transform(task.loss(outputs, y), objective_state))
    penalty = objective.penalty(params, objective_state)
    metrics = {name: jnp.mean(fn(outputs, y)) for name, fn in task.metrics.items()}
    metrics.update(loss=data_loss, penalty=penalty, objective=data_loss + penalty)
    return data_loss + penalty, (model_state, metrics)

  def step(state: TrainState, batch: Batch, key: jax.Array, clock=None):
    if batch_constraint is not None:
      batch = batch_constraint(batch)
    if sparse is not None:
      if clock is None:
        raise ValueError("a step with a sparse-training algorithm needs its clock: "
                         "step(state, batch, key, clock)")
      key, mask_key = jax.random.split(key)
    # The gradient at the masked weights m * theta: the dense gradient that
    # RigL grows by; masked below, it is the gradient with respect to theta.
    masked = trainables(masks_lib.apply(state.masks, state.params), state.objective_state)
    grads, (model_state, metrics) = jax.grad(loss_fn, has_aux=True)(
        masked, state.model_state, batch, key)
    masks = state.masks
    train_vars = trainables(state.params, state.objective_state)
    objective_grads = ascent_signs(objective, grads["objective"])
    if sparse is None:
      grads = {"params": masks_lib.apply(masks, grads["params"]), "objective": objective_grads}
      updates, opt_state = optimizer.update(grads, state.opt_state, train_vars)
    else:
      masks, updating, grown = sparse_lib.step_masks(
          sparse, clock, mask_key, state.params, grads["params"], masks)
      grads = {"params": sparse_lib.gradients(sparse, masks, state.params, grads["params"]),
               "objective": objective_grads}
      if sparse.skip_update:
        updates, opt_state = jax.lax.cond(
            updating, lambda: (jax.tree.map(jnp.zeros_like, grads), state.opt_state),
            lambda: optimizer.update(grads, state.opt_state, train_vars))
      else:
        updates, opt_state = optimizer.update(grads, state.opt_state, train_vars)
      opt_state = jax.lax.cond(
          updating, lambda: sparse_lib.reset_moments(
              opt_state, {"params": grown, "objective": None}, train_vars),
          lambda: opt_state)
    train_vars = optax.apply_updates(train_vars, updates)
    dense = sparse is not None and sparse.straight_through
    new_state = state._replace(
        step=state.step + 1,
        params=train_vars["params"] if dense else masks_lib.apply(masks, train_vars["params"]),
        objective_state=objective.project(train_vars["objective"]),
        model_state=model_state,
        opt_state=opt_state,
        masks=masks,
    )
    return new_state, metrics

  return jax.jit(step) if jit else step


def make_eval_fn(model: ModelAdapter, task: Task, objective: Objective,
                 batch_size: int, *, jit: bool = True,
                 batch_constraint: Callable[[Batch], Batch] | None = None,
                 ) -> Callable[[TrainState, jax.Array, jax.Array], dict]:
  """Builds ``evaluate(state, x, y) -> metrics`` over a whole data set.

  The model runs in eval mode (BatchNorm running averages, no dropout) with
  ``objective.forward(..., train=False)``. The data are padded to a multiple
  of ``batch_size`` and scanned batch by batch on the device; padding carries
  zero weight, so every metric is the exact mean over the examples. With
  ``batch_constraint`` (see :func:`make_train_step`) each batch is split over
  the devices of the data mesh.

  Returns:
    ``{"loss": mean data loss, <task metric>: mean, ...}``.
  """

  def evaluate(state: TrainState, x: jax.Array, y: jax.Array) -> dict:
    n = x.shape[0]
    bs = min(batch_size, n)
    n_batches = -(-n // bs)
    pad = n_batches * bs - n
    weights = jnp.concatenate([jnp.ones(n, x.dtype), jnp.zeros(pad, x.dtype)])
    xb = jnp.pad(x, [(0, pad)] + [(0, 0)] * (x.ndim - 1)).reshape((n_batches, bs) + x.shape[1:])
    yb = jnp.pad(y, [(0, pad)] + [(0, 0)] * (y.ndim - 1)).reshape((n_batches, bs) + y.shape[1:])
    wb = weights.reshape(n_batches, bs)
    params = masks_lib.apply(state.masks, state.params)
    effective, gates = objective.forward(params, state.objective_state, jax.random.key(0), False)

    def body(totals, batch):
      xi, yi, wi = batch
      if batch_constraint is not None:
        xi, yi = batch_constraint((xi, yi))
      outputs, _ = apply_model(model, effective, state.model_state, xi, train=False, gates=gates)
      losses = objective.loss_transform(task.loss(outputs, yi), state.objective_state)
      sums = {"loss": jnp.sum(wi * losses)}
      sums.update({k: jnp.sum(wi * fn(outputs, yi)) for k, fn in task.metrics.items()})
      return jax.tree.map(jnp.add, totals, sums), None

    zeros = {k: jnp.zeros((), x.dtype) for k in ["loss", *task.metrics]}
    totals, _ = jax.lax.scan(body, zeros, (xb, yb, wb))
    return {k: v / n for k, v in totals.items()}

  return jax.jit(evaluate) if jit else evaluate


def data_loss_fn(model: ModelAdapter, task: Task, objective: Objective, batch_size: int
                 ) -> Callable[[Any, TrainState, jax.Array, jax.Array], jax.Array]:
  """``loss(params, state, x, y)``: the full-data mean loss at given parameters.

  The building block of post-hoc pruning searches (TAMADE), which evaluate
  the unregularised loss of candidate parameters without touching the state.
  """
  evaluate = make_eval_fn(model, task, objective, batch_size, jit=False)

  def loss(params, state: TrainState, x, y):
    return evaluate(state._replace(params=params), x, y)["loss"]
  return loss
