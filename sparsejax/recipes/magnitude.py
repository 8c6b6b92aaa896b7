"""Magnitude pruning, the baseline of every family's results table, as a recipe.

``method="magnitude"``:

1. ``train``: dense training with the data loss alone (the run's optimiser,
   epochs, saturation checks and best-state return, as every run);
2. pruning to ``pruning.density`` of the prunable entries by ``|w|``, over all
   leaves together (``magnitude.scope="global"``) or within each leaf
   (``"layer"``; :mod:`sparsejax.pruning.magnitude`):

   * ``magnitude.schedule="one_shot"``: at once;
   * ``"gradual"``: Zhu & Gupta's cubic schedule in ``magnitude.steps``
     steps, each after ``magnitude.epochs_per_step`` epochs of training with
     the masks so far (phase ``gradual``);

3. with ``magnitude.rewind``, the kept weights go back to their initial
   values (the lottery-ticket rewind of Frankle & Carbin, 2019), everything
   else (objective and model state) too;
4. ``finetune``: training with the zeros frozen under a fresh optimiser state.

The row adds ``pruning_kept`` (kept parameters after the pruning).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections

from sparsejax import masks as masks_lib
from sparsejax import objectives
from sparsejax.fields import choice, require
from sparsejax.pruning.magnitude import gradual_density, magnitude_masks
from sparsejax.recipes.base import Outcome, Plan, Recipe, Stage, StageInput, register_recipe
from sparsejax.train import selection
from sparsejax.train.driver import ChunkContext, Convergence, Phase, PhaseCarry
from sparsejax.train.optimizers import build_optimizer
from sparsejax.train.state import TrainState

SCHEDULES = ("one_shot", "gradual")
#: The saturation test's deviation, as the other families' phases.
CONVERGENCE_DEVIATION = 1e-10


def defaults() -> dict:
  m = ml_collections.ConfigDict()
  m.scope = "global"         # global: one ranking over all leaves; layer: per leaf
  m.schedule = "one_shot"    # one_shot, or gradual (Zhu & Gupta's cubic schedule)
  m.steps = 10               # gradual: pruning steps
  m.epochs_per_step = 1      # gradual: training epochs before each step
  m.rewind = False           # rewind the kept weights to their initial values
  return {"magnitude": m}


def validate(config: ml_collections.ConfigDict) -> None:
  choice(config, "magnitude.scope", masks_lib.SCOPES)
  choice(config, "magnitude.schedule", SCHEDULES)
  for name in ("steps", "epochs_per_step"):
    require(config.magnitude[name] >= 1, f"magnitude.{name}", config.magnitude[name], ">= 1")


def _prune(state: TrainState, density, scope: str) -> TrainState:
  masks = magnitude_masks(state.params, state.masks, density, scope)
  return state._replace(masks=masks, params=masks_lib.apply(masks, state.params))


def _rewind(state: TrainState, initial: TrainState) -> TrainState:
  """The initial values of everything, with the pruned masks."""
  return initial._replace(masks=state.masks, params=masks_lib.apply(state.masks, initial.params),
                          opt_state=state.opt_state, step=state.step)


def _kept_records(states: TrainState) -> list[dict]:
  kept = jax.device_get(jax.vmap(lambda s: masks_lib.kept_count(s.masks, s.params))(states))
  return [{"kept": int(k)} for k in kept]


def plan(config: ml_collections.ConfigDict, parts) -> Plan:
  """train -> (gradual ->) prune -> (rewind ->) finetune."""
  m, density = config.magnitude, config.pruning.density
  curve = "val_loss" if config.converge_val_loss else "loss"
  checks = dict(
      convergence=Convergence(curve, config.smoothing_window, CONVERGENCE_DEVIATION),
      selection=selection.turning_point() if config.return_best_state else None,
      check_from=config.smoothing_window + 3, chunk_epochs=config.prune_window)
  dense = objectives.plain()
  steps = [Phase("train", dense, min_epochs=config.min_epochs, max_epochs=config.max_epochs,
                 optimizer=build_optimizer(config.optimizer, config.lr), **checks)]

  if m.schedule == "gradual":
    def step_prune(state, step):
      return _prune(state, gradual_density(step, m.steps, density), m.scope)

    def gradual_hook(carry: PhaseCarry, ctx: ChunkContext) -> PhaseCarry:
      step = ctx.epoch // m.epochs_per_step
      prune = ctx.program.over_seeds(step_prune, with_data=False)
      states = prune(carry.states, jnp.full((ctx.program.size,), step))
      return carry._replace(states=states)

    steps.append(Phase("gradual", dense, max_epochs=m.steps * m.epochs_per_step,
                       min_epochs=m.steps * m.epochs_per_step, chunk_epochs=m.epochs_per_step,
                       between_chunks=gradual_hook))

  def prune_stage(inputs: StageInput):
    prune = inputs.program.over_seeds(lambda s, d: _prune(s, d, m.scope), with_data=False)
    states = prune(inputs.states, jnp.full((inputs.program.size,), density))
    return states, inputs.aux, _kept_records(states)
  steps.append(Stage("prune", prune_stage))

  if m.rewind:
    def rewind_stage(inputs: StageInput):
      states = inputs.program.over_seeds(_rewind, with_data=False)(inputs.states, inputs.initial)
      return states, inputs.aux, [{} for _ in range(inputs.program.size)]
    steps.append(Stage("rewind", rewind_stage))

  steps.append(Phase("finetune", dense, min_epochs=config.finetuning_min_epochs,
                     max_epochs=config.finetuning_max_epochs,
                     optimizer=build_optimizer(config.optimizer, config.lr), **checks))
  return Plan(steps=tuple(steps))


def row(config: ml_collections.ConfigDict, outcome: Outcome) -> dict:
  return {"pruning_kept": outcome.stages["prune"]["kept"]}


register_recipe(Recipe(name="magnitude", defaults=defaults, validate=validate, plan=plan,
                       row=row))
