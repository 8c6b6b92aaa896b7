"""Pruning between and during the phases of a run (the reference's ``prune_and_shrink!``).

After the regularised phase (``final=True``) the efficient-compression
procedure (Barth & von Petersenn, arXiv 2505.17469; notes sections 1, 3-6)
prunes the trained parameters in this order:

1. ``method = "layerwise"``: the layerwise Bernoulli fit of every Dense layer,
   last to first (:func:`sparsejax.pruning.layerwise.layerwise_prune`); the
   reference runs random gradient pruning after each layer, sparsejax once
   after the whole pass (step 2), which removes the same dead weights;
2. random gradient pruning (``pruning.random_gradient_pruning``): every entry
   whose gradient on one random Gaussian batch is exactly zero;
3. the criterion ``pruning.criterion``: ``tamade`` (the largest global
   magnitude threshold whose calibration loss stays within
   ``1 + pruning.tolerated_relative_loss_increase`` of the unpruned loss, on
   the train or validation split by ``pruning.calibration``), a global
   magnitude ``global_density`` or ``global_threshold``, or ``none``;
4. random gradient pruning again;
5. ``pruning.delete_neurons`` (MLPs): neurons left without incoming weights
   output the constant :math:`\\sigma(b_j)`; their contribution is folded into
   the next layer's bias and their bias and outgoing weights are pruned
   (:func:`sparsejax.pruning.neurons.fold_dead_neurons`). The network keeps
   its shapes, so checkpoints, reloading and vmapped sweeps are unchanged;
   :func:`sparsejax.pruning.neurons.delete_neurons` removes them physically;
6. the masks are zeroed wherever :math:`\\theta = 0`, and for PMMP
   :math:`\\gamma` and :math:`w` too (:func:`sparsejax.objectives.prune_state`);
   the optimiser moments of the method's own variables are cleared
   (:func:`sparsejax.train.state.clear_objective_moments`), so finetuning
   leaves them as they are.

During training (``shrinking``, ``final=False``) the same runs, except that
PMMP skips the criterion and instead prunes the entries whose
:math:`\\gamma` has been clamped to exactly 0, as the reference does, and the
layerwise fit and neuron deletion are left for the end.

Every step is a compiled function; the pruning is a handful of calls between
phases, not a per-step cost.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import ml_collections

from sparsejax import masks as masks_lib
from sparsejax import objectives
from sparsejax.pruning import make_random_gradient_prune_fn, make_tamade_fn
from sparsejax.pruning.layerwise import layerwise_prune
from sparsejax.pruning.neurons import fold_dead_neurons
from sparsejax.runner import build as build_lib
from sparsejax.train.state import TrainState, clear_objective_moments

Pruner = Callable[..., tuple[TrainState, dict[str, Any]]]


def pmmp_state(config: ml_collections.ConfigDict, objective_state):
  """The PMMP ``{"w", "gamma", "u"}`` state inside the run's objective state."""
  return objective_state["inner"] if config.gauss_loss else objective_state


def _replace_pmmp_state(config, objective_state, new):
  if config.gauss_loss:
    return {**objective_state, "inner": new}
  return new


def _set(state: TrainState, params, masks) -> TrainState:
  return state._replace(params=masks_lib.apply(masks, params), masks=masks)


class PruneStages(NamedTuple):
  """The pruning split into traceable stages and host steps.

  Attributes:
    core: ``(state, key, final) -> (state, info)``: random gradient pruning
      -> criterion -> random gradient pruning (steps 2-4), traceable and
      vmappable (``final`` is static); ``info`` holds jnp scalars.
    tidy: ``(state, final) -> state``: step 6, traceable.
    layerwise: ``state -> state``: step 1 (host loop over layers).
    delete: ``state -> state``: step 5 (host, NumPy).
  """
  core: Callable[..., tuple[TrainState, dict[str, jax.Array]]]
  tidy: Callable[..., TrainState]
  layerwise: Callable[[TrainState], TrainState]
  delete: Callable[[TrainState], TrainState]


def _kept(state: TrainState) -> jax.Array:
  return masks_lib.kept_count(state.masks, state.params)


def make_prune_stages(config: ml_collections.ConfigDict, parts: build_lib.Parts) -> PruneStages:
  """The stages of the module docstring for the run's model, data and config."""
  model, task, objective = parts.model, parts.task, parts.prune_objective
  x_train, y_train = parts.data.train
  batch_size = config.train_batch_size or x_train.shape[0]
  batch_like = (x_train[:batch_size], y_train[:batch_size])
  calibration = parts.data.train if config.pruning.calibration == "train" else parts.data.val
  rgp = make_random_gradient_prune_fn(model, task, objective, jit=False)
  search = make_tamade_fn(model, task, objective, config.eval_batch_size,
                          delta=config.pruning.tolerated_relative_loss_increase,
                          resolution=config.pruning.binary_search_resolution, jit=False)
  is_pmmp = config.method == "pmmp"

  def random_gradient(state, key):
    if not config.pruning.random_gradient_pruning:
      return state
    params, masks = rgp(key, state, batch_like)
    return _set(state, params, masks)

  def criterion(state, info):
    name = config.pruning.criterion
    if name == "tamade":
      result = search(state, *calibration)
      info.update(threshold=result.threshold, evaluations=result.evaluations)
      masks = result.masks
    elif name == "global_density":
      masks = masks_lib.global_magnitude_density(state.params, state.masks, config.pruning.density)
    elif name == "global_threshold":
      masks = masks_lib.global_magnitude_threshold(state.params, state.masks,
                                                   config.pruning.threshold)
    else:
      return state
    return _set(state, state.params, masks)

  def gamma_zero(state):
    gamma = pmmp_state(config, state.objective_state)["gamma"]
    masks = masks_lib.map_masked(lambda m, g: None if m is None else m & (g != 0),
                                 state.masks, gamma)
    return _set(state, state.params, masks)

  def core(state: TrainState, key: jax.Array, final: bool):
    info = {}
    state = random_gradient(state, jax.random.fold_in(key, 0))
    info["kept_after_rgp"] = _kept(state)
    state = criterion(state, info) if final or not is_pmmp else gamma_zero(state)
    info["kept_after_criterion"] = _kept(state)
    state = random_gradient(state, jax.random.fold_in(key, 1))
    return state, info

  def tidy(state: TrainState, final: bool) -> TrainState:
    state = _set(state, state.params, masks_lib.from_nonzero(state.params, state.masks))
    if is_pmmp:
      pruned = objectives.prune_state(pmmp_state(config, state.objective_state), state.masks)
      state = state._replace(
          objective_state=_replace_pmmp_state(config, state.objective_state, pruned))
    if final:
      state = state._replace(opt_state=clear_objective_moments(state.opt_state))
    return state

  def layerwise(state: TrainState) -> TrainState:
    params, masks = layerwise_prune(
        model, state.params, state.masks, x_train, alpha=config.layerwise_pruning_alpha,
        lr=config.layerwise_pruning_lr,
        mask_start_value=config.layerwise_pruning_mask_start_value,
        max_epochs=config.layerwise_pruning_max_epochs,
        smoothing_window=config.smoothing_window)
    return _set(state, params, masks)

  def delete(state: TrainState) -> TrainState:
    params, masks = fold_dead_neurons(state.params, state.masks, activation=model.activation)
    return _set(state, params, masks)

  return PruneStages(core=core, tidy=tidy, layerwise=layerwise, delete=delete)


def make_pruner(config: ml_collections.ConfigDict, parts: build_lib.Parts) -> Pruner:
  """Builds ``prune(state, key, *, final) -> (state, info)`` for one run.

  ``info`` holds the kept parameter count after each step (``kept_before``,
  ``kept_after_layerwise``, ``kept_after_rgp``, ``kept_after_criterion``,
  ``kept``) and, for TAMADE, ``threshold`` and ``evaluations``, as Python
  numbers.
  """
  stages = make_prune_stages(config, parts)
  core = jax.jit(stages.core, static_argnums=2)
  tidy = jax.jit(stages.tidy, static_argnums=1)

  def prune(state: TrainState, key: jax.Array, *, final: bool) -> tuple[TrainState, dict]:
    info: dict[str, Any] = {"kept_before": _kept(state)}
    if final and config.method == "layerwise":
      state = stages.layerwise(state)
      info["kept_after_layerwise"] = _kept(state)
    state, core_info = core(state, key, final)
    info.update(core_info)
    if final and config.pruning.delete_neurons:
      state = stages.delete(state)
    state = tidy(state, final)
    info["kept"] = _kept(state)
    return jax.block_until_ready(state), jax.tree.map(lambda v: v.item(), info)

  return prune


def gamma_settled(config: ml_collections.ConfigDict, state: TrainState) -> bool:
  """PMMP's extra rule (at most 1% of gamma inside (0.1, 0.9)); True for other methods."""
  if config.method != "pmmp":
    return True
  return bool(objectives.gamma_saturated(pmmp_state(config, state.objective_state)))

