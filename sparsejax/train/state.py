"""The train state: every array a run carries from one step to the next."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from sparsejax import masks as masks_lib
from sparsejax.models.adapter import ModelAdapter, as_adapter
from sparsejax.objectives.base import Objective


class TrainState(NamedTuple):
  """A pytree; no PRNG key lives here (keys are arguments of the step).

  Attributes:
    step: number of optimiser updates taken (int32 scalar).
    params: the model's ``params`` collection.
    objective_state: the objective's own variables (see ``Objective.init``).
    model_state: the model's other collections (``batch_stats``), ``{}`` if none.
    opt_state: the optimiser state over ``trainables(state)``.
    masks: the mask tree over ``params`` (``None`` leaves are never pruned).
  """
  step: jax.Array
  params: Any
  objective_state: Any
  model_state: Any
  opt_state: optax.OptState
  masks: Any


def trainables(params, objective_state) -> dict:
  """The tree the optimiser updates: model parameters and objective variables."""
  return {"params": params, "objective": objective_state}


def create_train_state(key: jax.Array, model: ModelAdapter, sample_input: jax.Array,
                       objective: Objective, optimizer: optax.GradientTransformation,
                       *, prunable: masks_lib.PrunablePredicate | None = None,
                       ) -> TrainState:
  """Initialises the model, the objective and the optimiser.

  Args:
    key: PRNG key; split into the model's and the objective's.
    model: the model (:func:`sparsejax.models.adapt`; a bare linen or NNX module is
      adapted with the defaults).
    sample_input: a batch of inputs (only its shape and dtype matter).
    objective: the training objective.
    optimizer: an optax transformation over ``trainables(params, objective_state)``.
    prunable: which parameter leaves get a mask (default ``model.prunable``: the
      adapter's, kernels only unless it was told otherwise).
  """
  model_key, objective_key = jax.random.split(key)
  model = as_adapter(model, sample_input)
  params, model_state = model.init(model_key, sample_input)
  objective_state = objective.init(objective_key, params)
  return TrainState(
      step=jnp.zeros((), jnp.int32),
      params=params,
      objective_state=objective_state,
      model_state=model_state,
      opt_state=optimizer.init(trainables(params, objective_state)),
      masks=masks_lib.ones_like(params, model.prunable if prunable is None else prunable),
  )


def clear_objective_moments(opt_state: optax.OptState) -> optax.OptState:
  """Zeroes the optimiser's per-entry state of the objective's variables.

  Every leaf of ``opt_state`` under a ``"objective"`` key of
  :func:`trainables` (Adam's ``mu`` and ``nu``, SGD's momentum) becomes 0;
  the parameters' moments and the step counts are kept. Finetuning trains
  without the method's penalty, so the method's variables (PMMP's ``w``,
  ``gamma``, ``u``) get zero gradients; with their moments cleared too their
  updates are exactly zero and they stay as the pruning left them, as if
  discarded (the reference drops them when finetuning starts). Variables that
  the finetuning loss still uses, such as the Gaussian loss's ``sigma``, keep
  training from fresh moments.
  """
  def clear(path, leaf):
    under_objective = any(getattr(k, "key", None) == "objective" for k in path)
    return jnp.zeros_like(leaf) if under_objective else leaf
  return jax.tree_util.tree_map_with_path(clear, opt_state)
