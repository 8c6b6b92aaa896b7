"""BMRS continuous pruning (Wright, Igel and Selvan, NeurIPS 2024, Algorithm 1) as a recipe.

``method="bmrs"`` trains log-uniform unit gates
(:mod:`sparsejax.objectives.log_uniform`) with the data loss plus the KL
term for exactly ``max_epochs`` epochs. Every ``bmrs.compress_epochs`` epochs
the criterion (:mod:`sparsejax.pruning.bmr`) is applied to every unit (a
hook between one-epoch chunks); a pruned unit stays pruned
(``bmrs.monotone``; the released code recomputes the masks from scratch, so
a unit can come back). After training the criterion is applied once more (at
the percentile ``bmrs.match_compression`` when it is set: the L2 and SNR runs
matched to a BMRS_N run's compression), then the masked network is finetuned
for exactly ``finetuning_max_epochs`` epochs with the masks frozen and the KL
still in the loss; the finetuning epoch with the best validation accuracy is
tested, as in the reference.

The criteria run between epochs on the host in float64 (the BMR criteria
need it: :func:`sparsejax.pruning.bmr.bmrs_n_delta_f`); the unit masks are
the recipe's per-seed arrays (``aux["units"]``), checkpointed with the
states. The validation metrics of a training epoch are measured before that
epoch's criterion is applied (its ``unit_compression`` after).

Each seed's row adds ``unit_compression`` (% of gated units pruned, the
reference's ``compression``), ``parameter_compression`` (% of parameters
removed with their units), ``reference_parameter_compression`` (the same,
counting weight matrices and kernels only, as the paper's "Comp. (%)"; see
:func:`sparsejax.pruning.bmr.parameter_compression`), the kept units per
site, and ``seeds_in_program``; ``masks.npz`` holds the unit and the weight
masks.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from sparsejax import masks as masks_lib
from sparsejax import objectives, results
from sparsejax.fields import choice, require
from sparsejax.pruning import bmr
from sparsejax.recipes.base import Outcome, Plan, Recipe, Stage, StageInput, register_recipe
from sparsejax.train import selection
from sparsejax.train.driver import ChunkContext, Phase, PhaseCarry
from sparsejax.train.optimizers import build_optimizer
from sparsejax.train.state import TrainState

CRITERIA = ("none", "snr", "expected_theta", "l2", "bmrs_n", "bmrs_u")
CONVENTIONS = ("paper", "code")
KL_REDUCTIONS = ("mean", "sum")
KL_WEIGHTS = ("one", "inverse_n_train")
GATE_NOISE = ("per_element", "per_batch")


def defaults() -> dict:
  b = ml_collections.ConfigDict()
  b.criterion = "bmrs_n"      # none, snr, expected_theta, l2, bmrs_n, bmrs_u
  b.p1 = 8.0                  # bmrs_u: reduced prior LogU[2^-23, 2^-p1]
  b.convention = "paper"      # bmrs_n: keep the 1/2 log 2 pi term (paper) or drop it (code)
  b.mu_p = -20.0              # bmrs_n: reduced-prior mean (log space)
  b.var_p = 1e-12             # bmrs_n: reduced-prior variance
  b.threshold = -1.0          # snr / expected_theta / l2 cut; < 0: the criterion's default
  b.match_compression = -1.0  # >= 0: final cut at this percentile of the scores (units %)
  b.compress_epochs = 1
  b.monotone = True           # a pruned unit stays pruned (False: the upstream behaviour)
  b.kl_reduction = "mean"     # mean (BMRS) or sum over units
  b.kl_weight = "one"         # one (BMRS) or inverse_n_train (the ELBO per example)
  b.noise = "per_element"     # per_element (BMRS) or per_batch (SBP)
  b.posthoc_points = 100      # post-training sweep: percentiles in linspace(0, 100, n)
  b.posthoc_finetune_epochs = 1
  return {"bmrs": b}


def validate(config: ml_collections.ConfigDict) -> None:
  for name, accepted in [("bmrs.criterion", CRITERIA), ("bmrs.convention", CONVENTIONS),
                         ("bmrs.kl_reduction", KL_REDUCTIONS), ("bmrs.kl_weight", KL_WEIGHTS),
                         ("bmrs.noise", GATE_NOISE)]:
    choice(config, name, accepted)
  b = config.bmrs
  require(0 < b.p1 < 23, "bmrs.p1", b.p1, "in (0, 23) (the reduced prior's 2^-23 lower end)")
  require(b.var_p > 0, "bmrs.var_p", b.var_p, "> 0")
  require(b.threshold == -1 or b.threshold >= 0, "bmrs.threshold", b.threshold,
          ">= 0, or -1 for the criterion's default")
  require(b.match_compression == -1 or 0 <= b.match_compression <= 100, "bmrs.match_compression",
          b.match_compression, "in [0, 100], or -1 (off)")
  require(b.compress_epochs >= 0, "bmrs.compress_epochs", b.compress_epochs, ">= 0")
  for name in ("posthoc_points", "posthoc_finetune_epochs"):
    require(b[name] >= 1, f"bmrs.{name}", b[name], ">= 1")
  require(config.dataset != "teacher_student", "dataset", config.dataset,
          "an image data set for method 'bmrs'")


def check_model(config: ml_collections.ConfigDict, model) -> None:
  """BMRS gates the model's units."""
  del config
  model.require("gate_sites", "method 'bmrs'")


def criterion_of(config: ml_collections.ConfigDict) -> bmr.Criterion | None:
  """The config's unit criterion, or ``None`` for ``bmrs.criterion="none"``."""
  b = config.bmrs
  if b.criterion == "none":
    return None
  return bmr.Criterion(b.criterion, threshold=None if b.threshold < 0 else b.threshold,
                       p1=b.p1, convention=b.convention, mu_p=b.mu_p, var_p=b.var_p)


def gates(config: ml_collections.ConfigDict, model, n_train: int) -> objectives.Objective:
  """The log-uniform gates on ``model``'s gate sites (KL weighted by ``bmrs.kl_weight``)."""
  weight = 1.0 if config.bmrs.kl_weight == "one" else 1.0 / n_train
  return objectives.log_uniform_gates(model.gate_sites(), kl_reduction=config.bmrs.kl_reduction,
                                      kl_weight=weight, noise=config.bmrs.noise)


def unit_scores(criterion: bmr.Criterion, states: TrainState, covers) -> dict[str, np.ndarray]:
  """Per-seed unit scores ``{site: (seeds, n)}``, computed in float64."""
  with jax.enable_x64(True):
    as64 = lambda tree: jax.tree.map(lambda a: jnp.asarray(np.asarray(a, np.float64)), tree)
    gate_state = as64(states.objective_state)
    params = as64(states.params) if criterion.name == "l2" else None
    fn = lambda g, p: bmr.scores(criterion, g, p, covers)
    scores = jax.vmap(fn)(gate_state, params) if params is not None else jax.vmap(
        lambda g: fn(g, None))(gate_state)
    return {site: np.asarray(s) for site, s in scores.items()}


def next_units(criterion: bmr.Criterion, states: TrainState, units: dict, covers, *,
               monotone: bool, pruned_percent: float | None = None) -> dict[str, np.ndarray]:
  """The criterion's unit masks per seed (intersected with ``units`` if ``monotone``).

  With ``pruned_percent`` the cut is that percentile of each seed's scores
  (:func:`sparsejax.pruning.bmr.percentile_cut`); otherwise the criterion's
  own cut (its threshold, or 0 for the BMR criteria).
  """
  scores = unit_scores(criterion, states, covers)
  n_seeds = next(iter(scores.values())).shape[0]
  new = {site: np.zeros_like(s, dtype=bool) for site, s in scores.items()}
  for i in range(n_seeds):
    seed_scores = {site: s[i] for site, s in scores.items()}
    cut = (bmr.default_cut(criterion) if pruned_percent is None
           else bmr.percentile_cut(seed_scores, pruned_percent))
    for site, keep in bmr.keep_masks(seed_scores, cut).items():
      new[site][i] = np.asarray(keep)
  if monotone:
    new = {site: new[site] & np.asarray(units[site]) for site in new}
  return new


def unit_compressions(units: dict) -> list[float]:
  """% of units pruned, per seed."""
  n = len(next(iter(units.values())))
  return [bmr.unit_compression({s: np.asarray(u[i]) for s, u in units.items()}) for i in range(n)]


class Compressor:
  """Applies the criterion to every seed and masks the pruned units' weights."""

  def __init__(self, config: ml_collections.ConfigDict, model):
    self.config = config
    self.criterion = criterion_of(config)
    self.covers = model.unit_covers()

    def set_units(state: TrainState, units) -> TrainState:
      masks = masks_lib.unit_masks(state.params, units, self.covers,
                                   jax.tree.map(jnp.ones_like, state.masks))
      return state._replace(masks=masks, params=masks_lib.apply(masks, state.params))
    self.set_units = jax.jit(jax.vmap(set_units))

  def __call__(self, states: TrainState, aux, pruned_percent: float | None = None):
    units = next_units(self.criterion, states, aux["units"], self.covers,
                       monotone=self.config.bmrs.monotone, pruned_percent=pruned_percent)
    units = {s: jnp.asarray(u) for s, u in units.items()}
    return self.set_units(states, units), {"units": units}


def plan(config: ml_collections.ConfigDict, parts) -> Plan:
  """train (criterion every ``compress_epochs``) -> final criterion -> finetune."""
  objective = gates(config, parts.model, parts.data.train.x.shape[0])
  compress = Compressor(config, parts.model)
  every = config.bmrs.compress_epochs

  def during_training(carry: PhaseCarry, ctx: ChunkContext) -> PhaseCarry:
    if compress.criterion is not None and every > 0 and ctx.epoch % every == 0:
      states, aux = compress(carry.states, carry.aux)
      carry = carry._replace(states=states, aux=aux)
    ctx.curves.record("unit_compression", unit_compressions(carry.aux["units"]))
    return carry

  def during_finetuning(carry: PhaseCarry, ctx: ChunkContext) -> PhaseCarry:
    ctx.curves.record("unit_compression", unit_compressions(carry.aux["units"]))
    return carry

  def final(inputs: StageInput):
    if compress.criterion is None:
      return inputs.states, inputs.aux, [{} for _ in range(inputs.program.size)]
    match = config.bmrs.match_compression
    states, aux = compress(inputs.states, inputs.aux, None if match < 0 else match)
    return states, aux, [{"unit_compression": c} for c in unit_compressions(aux["units"])]

  def init_aux(states: TrainState):
    n = len(np.asarray(states.step))
    return {"units": {s: jnp.ones((n, k), bool) for s, k in parts.model.gate_sites().items()}}

  train = Phase("train", objective, max_epochs=config.max_epochs, min_epochs=config.max_epochs,
                chunk_epochs=1, optimizer=build_optimizer(config.optimizer, config.lr),
                between_chunks=during_training)
  finetune = Phase("finetune", objective, max_epochs=config.finetuning_max_epochs,
                   min_epochs=config.finetuning_max_epochs, chunk_epochs=1,
                   selection=selection.best_metric("val_accuracy"),
                   between_chunks=during_finetuning)
  return Plan(steps=(train, Stage("compress", final), finetune), init_aux=init_aux)


def row(config: ml_collections.ConfigDict, outcome: Outcome) -> dict[str, Any]:
  """Unit and parameter compression, kept units per site; unit masks in ``masks.npz``."""
  state = jax.tree.map(np.asarray, outcome.state)
  units = {s: np.asarray(u) for s, u in outcome.aux["units"].items()}
  results.write_masks(outcome.artifacts, {"units": units, "weights": state.masks})
  fields = dict(
      unit_compression=bmr.unit_compression(units),
      parameter_compression=bmr.parameter_compression(state.params, state.masks, units),
      reference_parameter_compression=bmr.parameter_compression(
          state.params, state.masks, units, weights_only=True),
      kept_units=sum(int(u.sum()) for u in units.values()),
      total_units=sum(int(u.size) for u in units.values()))
  fields.update({f"kept_units_{s}": int(u.sum()) for s, u in units.items()})
  return fields


register_recipe(Recipe(name="bmrs", defaults=defaults, validate=validate, plan=plan, row=row,
                       check_model=check_model))
