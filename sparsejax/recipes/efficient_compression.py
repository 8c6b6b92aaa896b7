"""Efficient compression (Barth & von Petersenn, arXiv 2505.17469) as recipes.

Five methods share one procedure (the reference's ``train_and_prune``; notes
sections 1, 3-7) and register one recipe each: ``none`` (plain training),
``rl1`` (L1 + L2), ``drr`` (the smooth l0 surrogate + L2), ``pmmp``
(probabilistic minimax pruning) and ``layerwise`` (plain training, then the
layerwise Bernoulli fit, PEGP). The five share the config sub-dict ``ec``
(:func:`defaults`: ``ec.alpha``, ``ec.beta``, ..., ``--config.ec.alpha=5e-4``).

**Strength.** ``ec.strength = "fixed"`` uses ``ec.alpha``. With the
Gaussian code length (``ec.gauss_loss``) the counting penalties (DRR, PMMP)
can instead take ``ec.strength = "description_length"``: a kept parameter
costs ``ec.bits_scale`` x :math:`\\tfrac12\\log_2 N` bits of the code length,
so :math:`\\alpha = s\\log_2 N / (2N)` follows the training-set size and
one scale :math:`s` per method serves every teacher
(:func:`description_length_alpha`; ``python -m sparsejax.studies.teachers``).

**Phases.**

1. ``train``: the regularised objective (with ``ec.gauss_loss``, the Gaussian
   code length with a learnable noise scale), checked every
   ``prune_window`` epochs once ``epoch >= smoothing_window + 3`` with the
   Epanechnikov saturation test at deviation 1e-10 on the validation loss
   (``converge_val_loss``) between ``min_epochs`` and ``max_epochs``; PMMP
   also waits for its keep-probabilities to settle (at most 1% of
   :math:`\\gamma` inside (0.1, 0.9)). The turning-point rule returns the
   best validation check if the end is worse (``return_best_state``). With
   ``ec.shrinking``, every check whose curve has saturated at
   ``ec.shrinking_from_deviation_of`` prunes (steps 2-4, 6 below) during
   training; PMMP then prunes the entries whose :math:`\\gamma` is exactly 0
   instead of the criterion.
2. ``prune`` (one stage, in this order):

   1. ``layerwise``: the layerwise fit of every Dense layer, last to first
      (:func:`sparsejax.pruning.layerwise.layerwise_prune`, a host loop per
      seed); the reference runs random gradient pruning after each layer,
      sparsejax once after the whole pass (step 2), which removes the same
      dead weights;
   2. random gradient pruning (``pruning.random_gradient_pruning``): every
      entry whose gradient on one random Gaussian batch is exactly zero;
   3. the criterion ``pruning.criterion``: ``tamade`` (the largest global
      magnitude threshold whose calibration loss stays within
      ``1 + pruning.tolerated_relative_loss_increase`` of the unpruned loss,
      on the ``pruning.calibration`` split), ``description_length`` (the
      global magnitude threshold of the shortest two-part code of the
      calibration split, a kept parameter at ``pruning.bits_scale`` x
      :math:`\\tfrac12\\log_2 N` bits:
      :mod:`sparsejax.pruning.description_length`), ``global_density``,
      ``global_threshold``, or ``none``;
   4. random gradient pruning again;
   5. ``pruning.delete_neurons`` (MLPs, LeNet-5): neurons and channels left
      without incoming weights output the constant :math:`\\sigma(b_j)`; it is
      folded into the next layer's bias
      (:func:`sparsejax.pruning.neurons.fold_dead_neurons`);
   6. the masks are zeroed wherever :math:`\\theta = 0`, and for PMMP
      :math:`\\gamma` and :math:`w` too; the optimiser moments of the
      method's own variables are cleared, so finetuning leaves them as the
      pruning left them.

   Steps 2-4 and 6 are compiled and vmapped over seeds (TAMADE's
   ``lax.while_loop`` runs until every seed's search has closed); steps 1
   and 5 are host steps per seed.
3. ``finetune``: the unregularised loss with frozen masks, the same
   optimiser continued, checked and selected as ``train`` between
   ``finetuning_min_epochs`` and ``finetuning_max_epochs``.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import ml_collections
import numpy as np

from sparsejax import keys
from sparsejax import masks as masks_lib
from sparsejax import objectives
from sparsejax.data import teacher_student
from sparsejax.fields import require
from sparsejax.objectives.base import Objective
from sparsejax.pruning import description_length, make_random_gradient_prune_fn, make_tamade_fn
from sparsejax.pruning.layerwise import layerwise_prune
from sparsejax.pruning.neurons import fold_dead_neurons
from sparsejax.recipes.base import Outcome, Plan, Recipe, Stage, StageInput, register_recipe
from sparsejax.train import selection
from sparsejax.train.convergence import tail_saturated
from sparsejax.train.driver import (ChunkContext, Convergence, Phase, PhaseCarry, stack_seeds,
                                    per_seed, where_seeds)
from sparsejax.train.optimizers import build_optimizer
from sparsejax.train.state import TrainState, clear_objective_moments
from sparsejax.train.step import data_loss_fn

#: How ``ec.alpha`` is set (``ec.strength``; :func:`alpha`).
STRENGTHS = ("fixed", "description_length")
#: The methods whose penalty counts kept parameters (DRR's smooth l0, PMMP's expected l0).
COUNTING_METHODS = ("drr", "pmmp")

#: Deviation of the convergence test (reference: ``is_saturated(...; d=1e-10)``).
CONVERGENCE_DEVIATION = 1e-10


def defaults() -> dict:
  """The family's fields, in its sub-dict ``ec`` (the reference's ``TrainArgs`` names and
  defaults)."""
  e = ml_collections.ConfigDict()
  e.alpha = 0.0
  e.rho = 0.0
  e.beta = 10.0              # DRR sharpness (TrainArgs' 0 would disable DRR; the DRR struct's 10)
  e.norm = False             # DRR: normalise the alpha term per layer
  e.layer_norm = True        # DRR NORM: per top-level layer (True) or per parameter block
  e.l1_alpha = 0.0           # PMMP: L1 on theta
  e.initial_p_value = 1.0    # PMMP: initial gamma
  e.initial_u_value = 0.0    # PMMP: initial u
  e.u_value_multiply_factor = 1.0
  e.gauss_loss = False       # teacher-student: Gaussian code length with learnable sigma
  e.strength = "fixed"       # how alpha is set: "fixed" (ec.alpha) or "description_length"
  e.bits_scale = 1.0         # description_length: bits per kept parameter, in units of log2(N)/2
  e.layerwise_pruning_alpha = 0.1
  e.layerwise_pruning_lr = 1e-3
  e.layerwise_pruning_mask_start_value = 0.3
  e.layerwise_pruning_max_epochs = 20000  # the reference uses max_epochs (default 20000)
  e.shrinking = False        # prune during training once the loss saturates
  e.shrinking_from_deviation_of = 1e-2
  return {"ec": e}


def validate(config: ml_collections.ConfigDict) -> None:
  e = config.ec
  for name in ("alpha", "rho", "l1_alpha", "initial_u_value", "u_value_multiply_factor",
               "layerwise_pruning_alpha", "shrinking_from_deviation_of"):
    require(e[name] >= 0, f"ec.{name}", e[name], ">= 0")
  for name in ("beta", "layerwise_pruning_lr"):
    require(e[name] > 0, f"ec.{name}", e[name], "> 0")
  for name in ("initial_p_value", "layerwise_pruning_mask_start_value"):
    require(0 <= e[name] <= 1, f"ec.{name}", e[name], "in [0, 1]")
  require(e.layerwise_pruning_max_epochs >= 1, "ec.layerwise_pruning_max_epochs",
          e.layerwise_pruning_max_epochs, ">= 1")
  if e.gauss_loss:
    require(config.dataset == "teacher_student", "ec.gauss_loss", True,
            "false unless the data set is 'teacher_student' (a regression loss)")
  require(e.strength in STRENGTHS, "ec.strength", e.strength, f"one of {STRENGTHS}")
  if e.strength == "fixed":
    require(e.bits_scale == 1.0, "ec.bits_scale", e.bits_scale,
            "left at 1.0 with ec.strength 'fixed', which reads ec.alpha instead")
  if e.strength == "description_length":
    require(e.gauss_loss, "ec.gauss_loss", e.gauss_loss,
            "true with ec.strength 'description_length' (the data term must be in bits)")
    require(config.method in COUNTING_METHODS, "ec.strength", e.strength,
            f"'fixed' for method {config.method!r}: 'description_length' prices a kept "
            f"parameter, which only the counting penalties {COUNTING_METHODS} do")
    require(e.bits_scale > 0, "ec.bits_scale", e.bits_scale, "> 0")
    require(e.alpha == 0, "ec.alpha", e.alpha,
            "0 with ec.strength 'description_length', which sets alpha from the training-set "
            "size (set ec.strength='fixed' to give alpha, or ec.bits_scale to scale the rule)")


def check_model(config: ml_collections.ConfigDict, model) -> None:
  """The layerwise Bernoulli fit works layer by layer on a chain of Dense layers."""
  if config.method == "layerwise":
    model.require("dense_chain", "method 'layerwise'")


def description_length_alpha(n_train: int, bits_scale: float = 1.0) -> float:
  r"""The penalty per kept parameter that makes the objective a two-part code length.

  With the Gaussian code length (:mod:`sparsejax.objectives.gauss`) the data
  term is :math:`\bar\ell`, the mean code length of the :math:`N` training
  targets in bits. Sending the targets with a model of :math:`k` kept
  parameters of :math:`b` bits each costs :math:`N\bar\ell + b k` bits in
  all, and divided by :math:`N` (the train step averages over points)

  .. math::  \bar\ell + \alpha k, \qquad \alpha = \frac{b}{N},
             \qquad b = s \cdot \tfrac12 \log_2 N,

  where :math:`\tfrac12\log_2 N` bits is the asymptotic cost of a parameter
  estimated from :math:`N` points (stated to its standard error, of order
  :math:`1/\sqrt N`; Rissanen 1978, the BIC of Schwarz 1978) and :math:`s`
  is ``bits_scale``. DRR's :math:`\sum_i (1 - e^{-\beta|\theta_i|})` and
  PMMP's :math:`\sum_i \gamma_i` (the expected :math:`\ell_0` norm) both
  count kept parameters, so :math:`\alpha` has the same meaning for both,
  for every teacher, noise level and training-set size.

  Args:
    n_train: :math:`N`, the training points.
    bits_scale: :math:`s`; 1 is the BIC cost.
  """
  if n_train < 2:
    raise ValueError(f"n_train must be >= 2, got {n_train}")
  return bits_scale * math.log2(n_train) / (2 * n_train)


def alpha(config: ml_collections.ConfigDict) -> float:
  """The penalty strength of the run: ``ec.alpha``, or with ``ec.strength =
  'description_length'`` :func:`description_length_alpha` of the training-set size."""
  e = config.ec
  if e.strength == "fixed":
    return e.alpha
  return description_length_alpha(config.train_set_size or teacher_student.N_TRAIN, e.bits_scale)


def regulariser(config: ml_collections.ConfigDict) -> Objective:
  """The regularised phase's objective of ``config.method``, before the Gauss loss."""
  method, e = config.method, config.ec
  if method == "rl1":
    return objectives.rl1(e.alpha, e.rho)
  if method == "drr":
    return objectives.drr(alpha(config), e.beta, rho=e.rho, norm=e.norm, layer_norm=e.layer_norm)
  if method == "pmmp":
    return objectives.pmmp(alpha(config), initial_p_value=e.initial_p_value,
                           initial_u_value=e.initial_u_value,
                           u_value_multiply_factor=e.u_value_multiply_factor,
                           l1_alpha=e.l1_alpha, rho=e.rho)
  return objectives.plain()  # none, layerwise (the fit comes after the phase)


def with_loss(config: ml_collections.ConfigDict, objective: Objective) -> Objective:
  """``objective`` on the Gaussian code length when ``ec.gauss_loss``."""
  return objectives.with_gauss_loss(objective) if config.ec.gauss_loss else objective


def pmmp_state(config, objective_state) -> objectives.PMMPState:
  """The PMMP state inside the run's objective state (unwrapping the Gauss loss)."""
  return objective_state.inner if config.ec.gauss_loss else objective_state


def _replace_pmmp_state(config, objective_state, new):
  return objective_state._replace(inner=new) if config.ec.gauss_loss else new


def gamma_settled(config):
  """PMMP's extra rule for convergence and turning points; ``None`` for the others."""
  if config.method != "pmmp":
    return None
  return lambda state: objectives.gamma_saturated(pmmp_state(config, state.objective_state))


def _set(state: TrainState, params, masks) -> TrainState:
  return state._replace(params=masks_lib.apply(masks, params), masks=masks)


def _kept(state: TrainState) -> jax.Array:
  return masks_lib.kept_count(state.masks, state.params)


class Pruning:
  """The pruning steps of the module docstring for one run's model and config.

  ``core`` (steps 2-4) and ``tidy`` (step 6) are traceable per seed, with the
  seed's data as their last argument; ``layerwise`` and ``delete`` are host
  steps on one seed's state.
  """

  def __init__(self, config: ml_collections.ConfigDict, model, task):
    self.config = config
    self.model = model
    objective = regulariser(config)  # RGP and TAMADE evaluate the data loss (MSE with gauss_loss)
    self.rgp = make_random_gradient_prune_fn(model, task, objective, jit=False)
    self.search = make_tamade_fn(model, task, objective, config.eval_batch_size,
                                 delta=config.pruning.tolerated_relative_loss_increase,
                                 resolution=config.pruning.binary_search_resolution, jit=False)
    self.loss = data_loss_fn(model, task, objective, config.eval_batch_size)
    self.task = task
    if config.pruning.criterion == "description_length":
      description_length.bits_per_point(task.loss, 1)  # a task without a code fails here
    self.is_pmmp = config.method == "pmmp"

  def _random_gradient(self, state, key, data):
    if not self.config.pruning.random_gradient_pruning:
      return state
    x, y = data.train
    size = self.config.train_batch_size or x.shape[0]
    params, masks = self.rgp(key, state, (x[:size], y[:size]))
    return _set(state, params, masks)

  def _criterion(self, state, data, info):
    pruning = self.config.pruning
    calibration = data.train if pruning.calibration == "train" else data.val
    if pruning.criterion == "tamade":
      result = self.search(state, *calibration)
      info.update(threshold=result.threshold, evaluations=result.evaluations)
      masks = result.masks
    elif pruning.criterion == "description_length":
      x, y = calibration
      n = x.shape[0]
      result = description_length.description_length_cut(
          lambda params: self.loss(params, state, x, y), state.params, state.masks, n_points=n,
          bits_per_point=description_length.bits_per_point(self.task.loss, math.prod(y.shape[1:])),
          bits_per_parameter=description_length.bits_per_parameter(n, pruning.bits_scale))
      info.update(threshold=result.threshold, code_length=result.code_length)
      masks = result.masks
    elif pruning.criterion == "global_density":
      masks = masks_lib.global_magnitude_density(state.params, state.masks, pruning.density)
    elif pruning.criterion == "global_threshold":
      masks = masks_lib.global_magnitude_threshold(state.params, state.masks, pruning.threshold)
    else:
      return state
    return _set(state, state.params, masks)

  def _gamma_zero(self, state):
    gamma = pmmp_state(self.config, state.objective_state).gamma
    masks = masks_lib.map_masked(lambda m, g: None if m is None else m & (g != 0),
                                 state.masks, gamma)
    return _set(state, state.params, masks)

  def core(self, state: TrainState, key, data, *, final: bool):
    """Steps 2-4; ``final=False`` (shrinking): PMMP prunes ``gamma == 0`` instead."""
    info = {}
    state = self._random_gradient(state, jax.random.fold_in(key, 0), data)
    info["kept_after_rgp"] = _kept(state)
    state = (self._criterion(state, data, info) if final or not self.is_pmmp
             else self._gamma_zero(state))
    info["kept_after_criterion"] = _kept(state)
    state = self._random_gradient(state, jax.random.fold_in(key, 1), data)
    return state, info

  def tidy(self, state: TrainState, *, final: bool) -> TrainState:
    """Step 6."""
    state = _set(state, state.params, masks_lib.from_nonzero(state.params, state.masks))
    if self.is_pmmp:
      pruned = objectives.prune_state(pmmp_state(self.config, state.objective_state), state.masks)
      state = state._replace(
          objective_state=_replace_pmmp_state(self.config, state.objective_state, pruned))
    if final:
      state = state._replace(opt_state=clear_objective_moments(state.opt_state))
    return state

  def layerwise(self, state: TrainState, x_train) -> TrainState:
    """Step 1, on one seed."""
    c, e = self.config, self.config.ec
    params, masks = layerwise_prune(
        self.model.module, state.params, state.masks, x_train, alpha=e.layerwise_pruning_alpha,
        lr=e.layerwise_pruning_lr, mask_start_value=e.layerwise_pruning_mask_start_value,
        max_epochs=e.layerwise_pruning_max_epochs, smoothing_window=c.smoothing_window)
    return _set(state, params, masks)

  def delete(self, state: TrainState) -> TrainState:
    """Step 5, on one seed."""
    params, masks = fold_dead_neurons(state.params, state.masks, activation=self.model.activation)
    return _set(state, params, masks)


def _records(info: dict) -> list[dict]:
  """``{name: (seeds,)}`` -> one dict of Python numbers per seed."""
  info = jax.device_get(info)
  n = len(next(iter(info.values())))
  return [{k: np.asarray(v[i]).item() for k, v in info.items()} for i in range(n)]


def _host_per_seed(fn, states: TrainState, *args) -> TrainState:
  """Applies a host step to each seed's state (``args`` per seed)."""
  n = len(np.asarray(states.step))
  return stack_seeds([fn(per_seed(states, i), *(a[i] for a in args)) for i in range(n)])


def prune_stage(config: ml_collections.ConfigDict, pruning: Pruning) -> Stage:
  """The final pruning (module docstring, step 2)."""
  method = config.method

  def apply(inputs: StageInput):
    program, states = inputs.program, inputs.states
    kept = [{"kept_before": int(k)} for k in jax.device_get(jax.vmap(_kept)(states))]
    if method == "layerwise":
      xs = [program.per_seed_data(i).train.x for i in range(program.size)]
      states = _host_per_seed(pruning.layerwise, states, xs)
      for record, k in zip(kept, jax.device_get(jax.vmap(_kept)(states))):
        record["kept_after_layerwise"] = int(k)
    steps = program.over_seeds(lambda s, k, d: pruning.core(s, k, d, final=True))
    states, info = steps(states, keys.stream_keys(program.seeds, "prune"), program.data)
    if config.pruning.delete_neurons:
      states = _host_per_seed(pruning.delete, states)
    states = program.over_seeds(lambda s, d: pruning.tidy(s, final=True))(states, program.data)
    records = _records(dict(info, kept=jax.vmap(_kept)(states)))
    return states, inputs.aux, [dict(a, **b) for a, b in zip(kept, records)]

  return Stage("prune", apply)


def shrinking_hook(config: ml_collections.ConfigDict, pruning: Pruning, convergence: Convergence,
                   check_from: int):
  """The ``between_chunks`` hook of ``ec.shrinking``: prune the seeds whose curve has
  saturated at ``ec.shrinking_from_deviation_of`` (checks before the last epoch)."""
  deviation = config.ec.shrinking_from_deviation_of
  saturated = jax.jit(jax.vmap(lambda t, c: tail_saturated(t, c, convergence.window, deviation)))

  def prune(state, key, data):
    state, info = pruning.core(state, key, data, final=False)
    return pruning.tidy(state, final=False), info

  def hook(carry: PhaseCarry, ctx: ChunkContext) -> PhaseCarry:
    if ctx.epoch < check_from or ctx.epoch >= ctx.phase.max_epochs:
      return carry
    due = carry.trained & saturated(carry.tail, carry.count)
    due_host = np.asarray(jax.device_get(due))
    if not due_host.any():
      return carry
    program = ctx.program
    keys_now = keys.event_keys(program.seeds, "shrinking", ctx.epoch)
    pruned, info = program.over_seeds(prune)(carry.states, keys_now, program.data)
    kept = jax.device_get(jax.vmap(_kept)(pruned))
    ctx.events.append({"name": "shrinking", "epoch": ctx.epoch, "seeds": due_host.tolist(),
                       "kept": np.asarray(kept).tolist()})
    return carry._replace(states=where_seeds(due, pruned, carry.states))

  return hook


def plan(config: ml_collections.ConfigDict, parts) -> Plan:
  """train -> prune -> finetune (module docstring)."""
  pruning = Pruning(config, parts.model, parts.task)
  curve = "val_loss" if config.converge_val_loss else "loss"
  convergence = Convergence(curve, config.smoothing_window, CONVERGENCE_DEVIATION)
  check_from = config.smoothing_window + 3  # the reference checks once epoch >= window + 3
  rule = selection.turning_point() if config.return_best_state else None
  settled = gamma_settled(config)
  common = dict(chunk_epochs=config.prune_window, convergence=convergence, selection=rule,
                check_from=check_from, settled=settled)
  train = Phase(
      "train", with_loss(config, regulariser(config)), min_epochs=config.min_epochs,
      max_epochs=config.max_epochs, optimizer=build_optimizer(config.optimizer, config.lr),
      between_chunks=(shrinking_hook(config, pruning, convergence, check_from)
                      if config.ec.shrinking else None), **common)
  finetune = Phase(
      "finetune", with_loss(config, objectives.plain()), min_epochs=config.finetuning_min_epochs,
      max_epochs=config.finetuning_max_epochs, **common)
  return Plan(steps=(train, prune_stage(config, pruning), finetune))


def row(config: ml_collections.ConfigDict, outcome: Outcome) -> dict[str, Any]:
  """The pruning record (``pruning_<step>``), shrinking count and learned sigma."""
  fields = {f"pruning_{k}": v for k, v in outcome.stages.get("prune", {}).items()}
  fields["shrinking_prunings"] = sum(
      1 for event in outcome.events.get("train", []) if event["name"] == "shrinking"
      and event["seeds"][outcome.index])
  if config.ec.gauss_loss:
    fields["final_sigma"] = float(outcome.state.objective_state.sigma)
  if config.ec.strength != "fixed":
    fields["alpha_used"] = alpha(config)
  return fields


for _method in ("none", "rl1", "drr", "pmmp", "layerwise"):
  register_recipe(Recipe(name=_method, defaults=defaults, validate=validate, plan=plan, row=row,
                         check_model=check_model))
