"""Hard-concrete L0 gates, constrained or penalised, as a recipe; purging after training.

``method="l0"`` trains every Dense and Conv layer under hard-concrete gates
(:mod:`sparsejax.objectives.hard_concrete`) in one phase of exactly
``max_epochs`` epochs, with the objective of ``l0.formulation``
(:mod:`sparsejax.objectives.constrained_l0`): the Lagrangian with
inequality constraints on the expected kept density (Gallego-Posada et al.,
2022; model-wise for one ``l0.target_density``, layer-wise for one per gated
layer), Cooper 1.0's augmented Lagrangian, or Louizos et al.'s penalty
``l0.penalty * expected L0``. The primal optimiser (``config.optimizer`` at
``config.lr``) trains the weights, the same kind at ``l0.gates_lr`` the
gates' ``log_alpha``, and SGD at ``l0.dual_lr`` ascends the multipliers
(:func:`~sparsejax.objectives.constrained_l0.optimizer`); penalised runs hold
the penalty weights fixed.
With ``l0.target_anneal_epochs > 0`` (not in the paper) the constrained
targets fall from 1 to ``l0.target_density`` over that many epochs by Zhu
and Gupta's cubic schedule (:func:`~sparsejax.objectives.constrained_l0.annealed_targets`).
``l0.penalty_sweep`` makes the seeds of one program a grid of penalty weights
(seed ``config.seed + i`` trains with ``l0.penalty[i]``, model-wise): the
reference's lambda search as one vmapped program.
With ``l0.weight_init="kaiming"`` the gated layers start as the
reference's L0 layers do (He-normal kernels, small random biases;
:func:`~sparsejax.objectives.hard_concrete.kaiming_init`), and the kernels
start divided by ``1 - droprate_init`` (the reference's rescaling;
``l0.rescale_init``). Models with BatchNorm use L0 BatchNorm
(:mod:`sparsejax.models.batchnorm`; ``l0.batchnorm``).

With ``l0.finetune_epochs > 0`` (the reference does not finetune) the
trained network is then purged and finetuned: a stage folds the
deterministic test gates into the weights and masks the dead groups
(:func:`~sparsejax.objectives.hard_concrete.fold_test_gates`), recording the
gated network's validation and test accuracy first, and a phase trains the
weights alone (``config.optimizer`` at ``l0.finetune_lr``, the gates and
multipliers frozen, the plain loss) for that many epochs, keeping the epoch
of best validation accuracy. Models with BatchNorm are not finetuned (L0
BatchNorm's statistics follow the gates).

The final state is tested with the deterministic test gates (after
finetuning: the folded network). The row adds
the expected densities (``l0_density`` for the model, ``l0_density_<layer>``),
the multipliers, and for structured gates on the chain architectures (MLPs,
LeNet-5-Caffe) the purged network's size (:mod:`sparsejax.pruning.purge`):
``purged_params``, ``purged_macs`` and their shares of the dense model's.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from sparsejax import keys
from sparsejax import masks as masks_lib
from sparsejax import objectives
from sparsejax.compaction import cost
from sparsejax.fields import choice, require
from sparsejax.models.batchnorm import BATCHNORMS
from sparsejax.objectives import constrained_l0
from sparsejax.objectives import hard_concrete as hc
from sparsejax.objectives.base import Objective
from sparsejax.pruning import purge
from sparsejax.recipes.base import Outcome, Plan, Recipe, Stage, StageInput, register_recipe
from sparsejax.train import selection
from sparsejax.train.driver import Phase
from sparsejax.train.loop import steps_per_epoch
from sparsejax.train.optimizers import build_optimizer
from sparsejax.train.state import TrainState


def defaults() -> dict:
  l0 = ml_collections.ConfigDict()
  l0.formulation = "lagrangian"    # lagrangian, augmented_lagrangian or penalized
  l0.target_density = (0.5,)       # kept densities: one (model-wise) or one per gated layer
  l0.penalty = (0.1,)              # penalized: lambda, one value or one per gated layer
  l0.penalty_sweep = False         # penalized: seed i of the run trains with lambda = penalty[i]
  l0.structure = "structured"      # structured (input features, conv channels) or unstructured
  l0.sampling = "per_batch"        # per_batch (the reference) or per_example (on the activations)
  l0.batchnorm = "l0"              # BatchNorm models: l0 (active channels only) or standard
  l0.droprate_init = (0.5,)        # one value or one per gated layer (MNIST MLP: 0.2, 0.5, 0.5)
  l0.weight_init = "flax"          # flax (the model's) or kaiming (the reference's L0 layers)
  l0.rescale_init = True           # divide the initial kernels by 1 - droprate_init
  l0.test_gate = "median"          # median (constrained-sparsity code) or mean (Louizos Eq. 13)
  l0.weight_decay = 0.0            # weight of the expected L2 term
  l0.l2_detach_gates = True        # the expected L2 term does not move the gates
  l0.dual_restarts = True          # lagrangian: reset multipliers of satisfied constraints
  l0.gates_lr = -1.0               # the gates' learning rate; < 0: config.lr
  l0.dual_lr = 1e-4                # the multipliers' SGD rate (augmented: the coefficient c)
  l0.target_anneal_epochs = 0      # > 0: targets fall from 1 over these epochs (0: the paper)
  l0.finetune_epochs = 0           # > 0: then finetune the purged network (0: the reference)
  l0.finetune_lr = 3e-5            # its learning rate (config.optimizer)
  return {"l0": l0}


def layers_of(config: ml_collections.ConfigDict, model) -> list[hc.GatedLayer]:
  """The gated layers of the run's model (from its parameter shapes alone)."""
  return hc.gated_layers(model.param_shapes, config.l0.structure)


def per_layer(values, layers) -> dict[str, float]:
  """``{layer: value}`` from one value or one per layer."""
  values = list(values)
  if len(values) == 1:
    values = values * len(layers)
  return {layer.name: float(v) for layer, v in zip(layers, values)}


def validate(config: ml_collections.ConfigDict) -> None:
  choice(config, "l0.formulation", constrained_l0.FORMULATIONS)
  choice(config, "l0.structure", hc.STRUCTURES)
  choice(config, "l0.test_gate", hc.TEST_GATES)
  choice(config, "l0.sampling", hc.SAMPLING)
  choice(config, "l0.batchnorm", BATCHNORMS)
  choice(config, "l0.weight_init", hc.WEIGHT_INITS)
  l0 = config.l0
  require(l0.dual_lr > 0, "l0.dual_lr", l0.dual_lr, "> 0")
  require(l0.gates_lr == -1 or l0.gates_lr > 0, "l0.gates_lr", l0.gates_lr,
          "> 0, or -1 for config.lr")
  require(l0.weight_decay >= 0, "l0.weight_decay", l0.weight_decay, ">= 0")
  require(all(0 < t <= 1 for t in l0.target_density), "l0.target_density", l0.target_density,
          "kept densities in (0, 1]")
  require(all(p >= 0 for p in l0.penalty), "l0.penalty", l0.penalty, ">= 0")
  require(all(0 < d < 1 for d in l0.droprate_init), "l0.droprate_init", l0.droprate_init,
          "in (0, 1)")
  if l0.sampling == "per_example":
    require(l0.structure == "structured", "l0.sampling", l0.sampling,
            "per_batch unless l0.structure is 'structured'")
  require(0 <= l0.target_anneal_epochs <= config.max_epochs, "l0.target_anneal_epochs",
          l0.target_anneal_epochs, f"in [0, max_epochs = {config.max_epochs}]")
  if l0.formulation == "penalized":
    require(l0.target_anneal_epochs == 0, "l0.target_anneal_epochs", l0.target_anneal_epochs,
            "0 with l0.formulation 'penalized' (it has no targets)")
  require(l0.finetune_epochs >= 0, "l0.finetune_epochs", l0.finetune_epochs, ">= 0")
  require(l0.finetune_lr > 0, "l0.finetune_lr", l0.finetune_lr, "> 0")
  if l0.finetune_epochs:
    require(config.prunable == "all", "prunable", config.prunable,
            "'all' with l0.finetune_epochs > 0 (every gated leaf needs a mask)")
  if l0.penalty_sweep:
    require(l0.formulation == "penalized", "l0.penalty_sweep", l0.penalty_sweep,
            "false unless l0.formulation is 'penalized'")
    require(len(l0.penalty) == config.seeds, "l0.penalty", l0.penalty,
            f"one value per seed ({config.seeds}) with l0.penalty_sweep")


def check_model(config: ml_collections.ConfigDict, model) -> None:
  """One value or one per gated layer; per-example gates need a gate chain; a model with
  L0 BatchNorm is not finetuned (its statistics follow the gates)."""
  l0 = config.l0
  layers = layers_of(config, model)
  names = ", ".join(layer.name for layer in layers)
  fields = ("target_density", "droprate_init") + (() if l0.penalty_sweep else ("penalty",))
  for field in fields:
    require(len(l0[field]) in (1, len(layers)), f"l0.{field}", l0[field],
            f"one value or one per gated layer ({len(layers)}: {names})")
  if l0.sampling == "per_example" and "gate_chain" not in model.capabilities:
    model.require("layer_gates", "l0.sampling 'per_example'")
  if l0.finetune_epochs:
    require("l0_batchnorm" not in model.capabilities, "l0.finetune_epochs", l0.finetune_epochs,
            "0 for models with L0 BatchNorm (capability 'l0_batchnorm': its statistics follow "
            "the gates)")


def objective(config: ml_collections.ConfigDict, layers, epoch_steps: int = 0,
              model=None) -> Objective:
  """The config's L0 objective; ``epoch_steps`` (updates an epoch) times
  ``l0.target_anneal_epochs`` is the annealing's length in updates. Per example,
  ``model``'s gates act where it declares its chain (capability ``gate_chain``)
  or on its traced layers (``layer_gates``)."""
  l0 = config.l0
  sites = None
  if l0.sampling == "per_example" and "gate_chain" not in model.capabilities:
    sites = hc.layer_sites(layers)
  if l0.target_anneal_epochs and epoch_steps < 1:
    raise ValueError("objective() needs epoch_steps >= 1 with l0.target_anneal_epochs > 0")
  return constrained_l0.hard_concrete_l0(
      layers, formulation=l0.formulation, targets=tuple(l0.target_density),
      penalty=tuple(l0.penalty[:1] if l0.penalty_sweep else l0.penalty),
      droprates=per_layer(l0.droprate_init, layers),
      weight_decay=l0.weight_decay, l2_detach_gates=l0.l2_detach_gates,
      test_gate=l0.test_gate, dual_restarts=l0.dual_restarts, penalty_coefficient=l0.dual_lr,
      sampling=l0.sampling, anneal_steps=l0.target_anneal_epochs * epoch_steps, sites=sites)


def optimizer(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
  """Weights and gates at their own rates of ``config.optimizer``; the duals by SGD
  (held fixed when penalised)."""
  gates_lr = config.lr if config.l0.gates_lr < 0 else config.l0.gates_lr
  duals = (None if config.l0.formulation == "penalized"
           else build_optimizer("sgd", config.l0.dual_lr))
  return constrained_l0.optimizer(weights=build_optimizer(config.optimizer, config.lr),
                                  gates=build_optimizer(config.optimizer, gates_lr),
                                  multipliers=duals)


def plan(config: ml_collections.ConfigDict, parts) -> Plan:
  """train; with ``l0.finetune_epochs``: -> fold the test gates -> finetune."""
  layers = layers_of(config, parts.model)
  steps = 0
  if config.l0.target_anneal_epochs:
    steps = steps_per_epoch(parts.split_size("train"), config.train_batch_size)
  gated = objective(config, layers, steps, parts.model)
  train = Phase("train", gated, max_epochs=config.max_epochs,
                min_epochs=config.max_epochs, chunk_epochs=config.prune_window,
                optimizer=optimizer(config))
  steps = [train]
  epochs = config.l0.finetune_epochs
  if epochs:
    finetune = Phase("finetune", objectives.plain(), max_epochs=epochs, min_epochs=epochs,
                     chunk_epochs=1, optimizer=finetune_optimizer(config),
                     selection=selection.best_metric("val_accuracy"))
    steps += [Stage("fold", fold_stage(config, layers, gated)), finetune]
  return Plan(steps=tuple(steps), prepare=preparation(config, layers))


def finetune_optimizer(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
  """``config.optimizer`` at ``l0.finetune_lr`` on the weights; gates and multipliers frozen."""
  return constrained_l0.optimizer(
      weights=build_optimizer(config.optimizer, config.l0.finetune_lr), gates=None,
      multipliers=None)


def fold_stage(config: ml_collections.ConfigDict, layers, gated: Objective):
  """The stage before finetuning: the test gates folded into the weights, dead groups masked.

  Its record holds the gated network's validation and test accuracy
  (``gated_val_accuracy``, ``gated_test_accuracy``): the figures of the
  reference's protocol, which reports the network at the end of training.
  The folded network's outputs are the gated network's at test time, so
  the finetuning starts from exactly that network
  (:func:`~sparsejax.objectives.hard_concrete.fold_test_gates`).
  """
  def fold(state: TrainState) -> TrainState:
    params, alive = hc.fold_test_gates(layers, state.params, state.objective_state.log_alpha,
                                       config.l0.test_gate)
    masks = masks_lib.logical_and(state.masks, alive)
    return state._replace(params=masks_lib.apply(masks, params), masks=masks)

  def apply(inputs: StageInput):
    program = inputs.program
    before = {split: np.asarray(program.evaluate(gated, inputs.states, split)["accuracy"])
              for split in ("val", "test")}
    states = program.over_seeds(fold, with_data=False)(inputs.states)
    records = [{f"gated_{split}_accuracy": float(before[split][i]) for split in before}
               for i in range(program.size)]
    return states, inputs.aux, records
  return apply


def preparation(config: ml_collections.ConfigDict, layers):
  """``(state, seed) -> state`` before training: the gated layers redrawn by
  :func:`~sparsejax.objectives.hard_concrete.kaiming_init` (``l0.weight_init``,
  from the seed's ``reinit`` key stream), the kernels divided by ``1 - d``
  (``l0.rescale_init``) and, with ``l0.penalty_sweep``, seed ``config.seed + i``'s
  penalty weight ``l0.penalty[i]``; ``None`` if none applies."""
  l0 = config.l0
  kaiming = l0.weight_init == "kaiming"
  if not (kaiming or l0.rescale_init or l0.penalty_sweep):
    return None
  droprates = per_layer(l0.droprate_init, layers)
  grid = jnp.asarray(l0.penalty, jnp.float32)

  def prepare(state: TrainState, seed) -> TrainState:
    if kaiming:
      state = state._replace(params=hc.kaiming_init(layers, state.params,
                                                    keys.stream_key(seed, "reinit")))
    if l0.rescale_init:
      state = state._replace(params=hc.rescale_kernels(layers, state.params, droprates))
    if l0.penalty_sweep:
      weight = grid[seed - config.seed]
      objective_state = state.objective_state
      state = state._replace(objective_state=objective_state._replace(
          multipliers=jnp.full_like(objective_state.multipliers, weight)))
    return state
  return prepare


def densities(layers, log_alpha) -> dict:
  """The expected kept densities: the model's and each layer's."""
  fields = {"l0_density": float(hc.model_density(layers, log_alpha))}
  for layer, value in zip(layers, np.asarray(hc.layer_densities(layers, log_alpha))):
    fields[f"l0_density_{layer.name.replace('/', '_')}"] = float(value)
  return fields


def purged_size(config: ml_collections.ConfigDict, model, layers, state: TrainState) -> dict:
  """The purged network's parameters and MACs, and their shares of the dense model's
  (structured gates on a model with capability ``deletable_units``)."""
  if config.l0.structure != "structured" or "deletable_units" not in model.capabilities:
    return {}
  log_alpha = state.objective_state.log_alpha
  gates = {l.name: hc.test_gates(log_alpha[l.name], config.l0.test_gate) for l in layers}
  example = np.zeros((1, *model.input_shape), np.float32)
  net = purge.purge(model, hc.gate_params(layers, state.params, gates),
                    {name: np.asarray(g) > 0 for name, g in gates.items()}, example)
  small = purge.count(net, example)
  # The dense network's size: every parameter of the model (dead groups included).
  full = {"params": cost.parameters(state.params),
          "macs": cost.macs(net.forward, {"params": state.params}, example)}
  return {"purged_params": small["params"], "purged_macs": small["macs"],
          "purged_params_pct": 100 * small["params"] / full["params"],
          "purged_macs_pct": 100 * small["macs"] / full["macs"]}


def row(config: ml_collections.ConfigDict, outcome: Outcome) -> dict:
  state = outcome.state
  layers = hc.gated_layers(state.params, config.l0.structure)
  fields = dict(outcome.stages.get("fold", {}))
  fields.update(densities(layers, state.objective_state.log_alpha))
  for k, value in enumerate(np.asarray(jax.device_get(state.objective_state.multipliers))):
    fields[f"l0_multiplier_{k}"] = float(value)
  fields.update(purged_size(config, outcome.model, layers, state))
  return fields


def model_options(config: ml_collections.ConfigDict) -> dict:
  """L0 BatchNorm (``l0.batchnorm``), for the registered models that have the field
  (capability ``l0_batchnorm``)."""
  return {"batchnorm": config.l0.batchnorm}


register_recipe(Recipe(name="l0", defaults=defaults, validate=validate, plan=plan, row=row,
                       model_options=model_options, check_model=check_model))
