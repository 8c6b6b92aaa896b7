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


def updates_masks(sparse: SparseTraining, clock) -> jax.Array:
  """Whether the step at ``clock`` changes the masks (traceable): an update step of
  ``sparse``, or, for a straight-through algorithm, the step before one (its masks
  for step ``t + 1`` are made at step ``t``)."""
  return sparse.is_update_step(clock + 1 if sparse.straight_through else clock)


def make_train_step(model: ModelAdapter, task: Task, objective: Objective,
                    optimizer: optax.GradientTransformation, *, jit: bool = True,
                    batch_constraint: Callable[[Batch], Batch] | None = None,
                    sparse: SparseTraining | None = None,
                    ) -> TrainStep:
  """Builds ``step(state, batch, key[, clock, update]) -> (state, metrics)`` for any objective.

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
      draws its random scores (``update``, a Python bool, names the kind of step
      for a loop that knows it, :func:`updates_masks`; by default the step
      decides under ``lax.cond``). Its update sees the dense gradient
      :math:`\\nabla_{m\\odot\\theta} L` of the batch; with a straight-through
      algorithm the weights stay dense, every one takes the gradient, and the
      masks of the next step are computed from the updated weights.

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

  def gradients(state: TrainState, masks, batch: Batch, key: jax.Array):
    # The gradient at the masked weights m * theta: the dense gradient that
    # RigL grows by; masked by the caller, it is the gradient with respect to theta.
    masked = trainables(masks_lib.apply(masks, state.params), state.objective_state)
    grads, (model_state, metrics) = jax.grad(loss_fn, has_aux=True)(
        masked, state.model_state, batch, key)
    return grads["params"], ascent_signs(objective, grads["objective"]), model_state, metrics

  def finish(state: TrainState, updates, opt_state, masks, model_state, dense: bool):
    train_vars = optax.apply_updates(trainables(state.params, state.objective_state), updates)
    return state._replace(
        step=state.step + 1,
        params=train_vars["params"] if dense else masks_lib.apply(masks, train_vars["params"]),
        objective_state=objective.project(train_vars["objective"]),
        model_state=model_state,
        opt_state=opt_state,
        masks=masks,
    )

  def plain_step(state: TrainState, batch: Batch, key: jax.Array):
    params_grads, objective_grads, model_state, metrics = gradients(state, state.masks, batch, key)
    grads = {"params": masks_lib.apply(state.masks, params_grads), "objective": objective_grads}
    updates, opt_state = optimizer.update(grads, state.opt_state,
                                          trainables(state.params, state.objective_state))
    return finish(state, updates, opt_state, state.masks, model_state, False), metrics

  def sparse_step(state: TrainState, batch: Batch, key: jax.Array, clock, update: bool):
    """A step of ``sparse``; ``update``: this step changes the masks (a static branch)."""
    key, mask_key = jax.random.split(key)
    straight = sparse.straight_through
    masks = state.masks
    params_grads, objective_grads, model_state, metrics = gradients(state, masks, batch, key)
    if update and not straight:
      masks = sparse.update(clock, mask_key, state.params, params_grads, masks)
    grads = {"params": sparse_lib.gradients(sparse, masks, state.params, params_grads),
             "objective": objective_grads}
    train_vars = trainables(state.params, state.objective_state)
    if update and sparse.skip_update:
      updates, opt_state = jax.tree.map(jnp.zeros_like, grads), state.opt_state
    else:
      updates, opt_state = optimizer.update(grads, state.opt_state, train_vars)
    if update and not straight:
      grown = jax.tree.map(lambda old, new: None if old is None else new & ~old,
                           state.masks, masks, is_leaf=lambda x: x is None)
      opt_state = sparse_lib.reset_moments(opt_state, {"params": grown, "objective": None},
                                           train_vars)
    new_state = finish(state, updates, opt_state, masks, model_state, straight)
    if update and straight:
      # The masks of the next forward pass, from the updated dense weights.
      new_state = new_state._replace(masks=sparse.update(
          clock + 1, mask_key, new_state.params, None, masks))
    return new_state, metrics

  def step(state: TrainState, batch: Batch, key: jax.Array, clock=None, update=None):
    if batch_constraint is not None:
      batch = batch_constraint(batch)
    if sparse is None:
      return plain_step(state, batch, key)
    if clock is None:
      raise ValueError("a step with a sparse-training algorithm needs its clock: "
                       "step(state, batch, key, clock)")
    if update is not None:
      return sparse_step(state, batch, key, clock, bool(update))
    # One branch per kind of step, so that the steps between updates carry no
    # condition inside (the clock is the same for every seed: a branch, not a select).
    return jax.lax.cond(updates_masks(sparse, clock),
                        lambda: sparse_step(state, batch, key, clock, True),
                        lambda: sparse_step(state, batch, key, clock, False))

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
