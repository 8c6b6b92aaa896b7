"""DeepHoyer (Yang, Wen and Li, ICLR 2020) as a recipe: regularise, prune, finetune.

``method="deephoyer"`` (reference notes, section 1):

1. ``train``: the data loss plus ``deephoyer.decay`` times a regulariser
   summed per tensor (:mod:`sparsejax.objectives.hoyer`: ``l1``, ``hoyer``,
   ``hs``, ``tl1``, ``group_lasso``, ``group_hs``; ``none`` for the dense
   baseline) for exactly ``max_epochs`` epochs with Adam at ``lr``
   (``deephoyer.weight_decay`` adds PyTorch-style coupled weight decay, as
   ``structure.py``'s 1e-4);
2. ``prune``: per tensor, biases included, ``|w| < sensitivity``
   (``deephoyer.rule="threshold"``, ``prun_tune_T``) or
   ``|w| < sensitivity * std(tensor)`` (``"std"``, ``prun_tune_V``, Han et
   al.'s rule);
3. ``finetune``: the data loss alone with the zeros frozen, under a fresh
   Adam at ``deephoyer.finetune_lr`` with ``deephoyer.finetune_weight_decay``
   for exactly ``finetuning_max_epochs`` epochs; the epoch with the best
   **validation** accuracy is returned and tested (the reference's
   ``prun_tune_V`` keeps the best *test* accuracy, model selection on the test
   set; ``docs/differences.md``).

The row adds the structure left: for every kernel, the input neurons or
channels and the output neurons or filters that still have a nonzero weight
(``alive_in_<layer>``, ``alive_out_<layer>``), and the dense network left
after deleting dead units (``small_widths``, ``small_params``). ``--config.init_from`` starts
from a trained dense run, as the reference's ``--pretrained``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from sparsejax import masks as masks_lib
from sparsejax import objectives
from sparsejax.fields import choice, require
from sparsejax.objectives import hoyer
from sparsejax.recipes.base import Outcome, Plan, Recipe, Stage, StageInput, register_recipe
from sparsejax.pruning import neurons
from sparsejax.train import selection
from sparsejax.train.driver import Phase
from sparsejax.train.optimizers import build_optimizer
from sparsejax.train.state import TrainState

REGULARISERS = ("none",) + hoyer.REGULARISERS
RULES = ("std", "threshold")


def defaults() -> dict:
  d = ml_collections.ConfigDict()
  d.regulariser = "hs"            # none, l1, hoyer, hs, tl1, group_lasso, group_hs
  d.decay = 2e-4                  # the regulariser's weight (the reference's --decay)
  d.tensors = "all"               # element-wise: all (biases included) or kernels
  d.a = 1.0                       # transformed L1's a (the reference fixes 1)
  d.weight_decay = 0.0            # coupled weight decay while regularising (structure.py: 1e-4)
  d.rule = "std"                  # std (prun_tune_V) or threshold (prun_tune_T)
  d.sensitivity = 0.03            # the rule's s (std) or t (threshold)
  d.finetune_lr = 1e-3            # prun_tune_V: 1e-3 (prun_tune_T: 1e-4)
  d.finetune_weight_decay = 1e-4  # prun_tune_V: 1e-4 (prun_tune_T: 0)
  return {"deephoyer": d}


def validate(config: ml_collections.ConfigDict) -> None:
  choice(config, "deephoyer.regulariser", REGULARISERS)
  choice(config, "deephoyer.tensors", hoyer.TENSORS)
  choice(config, "deephoyer.rule", RULES)
  d = config.deephoyer
  for name in ("decay", "weight_decay", "sensitivity", "finetune_weight_decay"):
    require(d[name] >= 0, f"deephoyer.{name}", d[name], ">= 0")
  for name in ("a", "finetune_lr"):
    require(d[name] > 0, f"deephoyer.{name}", d[name], "> 0")
  require(config.dataset != "teacher_student", "dataset", config.dataset,
          "an image data set for method 'deephoyer' (a classifier: the finetuning keeps the "
          "best validation accuracy)")


def regulariser(config: ml_collections.ConfigDict) -> objectives.Objective:
  d = config.deephoyer
  if d.regulariser == "none":
    return objectives.plain()
  return hoyer.deephoyer(d.regulariser, d.decay, tensors=d.tensors, a=d.a)


def prune_masks(state: TrainState, rule: str, sensitivity: float):
  """The reference's one-shot rule on every prunable tensor (biases included)."""
  if rule == "std":
    masks = masks_lib.std_ratio(state.params, state.masks, sensitivity)
  else:
    masks = masks_lib.global_magnitude_threshold(state.params, state.masks, sensitivity)
  return state._replace(masks=masks, params=masks_lib.apply(masks, state.params))


def structure(params) -> dict[str, int]:
  """Per kernel: input neurons/channels and output neurons/filters with a nonzero weight."""
  out = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
    name = masks_lib.path_str(path)
    if not name.endswith("kernel") or np.ndim(leaf) < 2:
      continue
    layer = name[:-len("/kernel")].replace("/", "_")
    inputs, outputs = hoyer.group_norms(jnp.asarray(leaf))
    out[f"alive_in_{layer}"] = int(np.sum(np.asarray(inputs) > 0))
    out[f"alive_out_{layer}"] = int(np.sum(np.asarray(outputs) > 0))
  return out


def plan(config: ml_collections.ConfigDict, parts) -> Plan:
  d = config.deephoyer
  train = Phase("train", regulariser(config), max_epochs=config.max_epochs,
                min_epochs=config.max_epochs, chunk_epochs=config.prune_window,
                optimizer=build_optimizer("adam", config.lr, weight_decay=d.weight_decay))

  def prune(inputs: StageInput):
    states = inputs.program.over_seeds(lambda s: prune_masks(s, d.rule, d.sensitivity),
                                 with_data=False)(inputs.states)
    kept = jax.device_get(jax.vmap(lambda s: masks_lib.kept_count(s.masks, s.params))(states))
    return states, inputs.aux, [{"kept": int(k)} for k in kept]

  finetune = Phase("finetune", objectives.plain(), max_epochs=config.finetuning_max_epochs,
                   min_epochs=config.finetuning_max_epochs, chunk_epochs=1,
                   optimizer=build_optimizer("adam", d.finetune_lr,
                                             weight_decay=d.finetune_weight_decay),
                   selection=selection.best_metric("val_accuracy"))
  return Plan(steps=(train, Stage("prune", prune), finetune))


def smaller_network(model, state: TrainState) -> dict:
  """The dense network left after deleting dead units: its widths and parameter count.

  :func:`sparsejax.pruning.neurons.delete_neurons` removes the neurons and
  conv channels with no incoming or no outgoing weight, folding the
  constants of dead ones into the next biases; the smaller dense network
  computes the masked one's function (tests/test_deephoyer_recipe.py).
  Empty for models without capability ``deletable_units``.
  """
  if "deletable_units" not in model.capabilities:
    return {}
  result = neurons.delete_neurons(state.params, state.masks, activation=model.activation)
  return {"small_widths": "-".join(str(w) for w in result.widths),
          "small_params": int(sum(np.size(leaf) for leaf in jax.tree.leaves(result.params)))}


def row(config: ml_collections.ConfigDict, outcome: Outcome) -> dict:
  fields = {"pruning_kept": outcome.stages["prune"]["kept"]}
  fields.update(structure(outcome.state.params))
  fields.update(smaller_network(outcome.model, outcome.state))
  return fields


register_recipe(Recipe(name="deephoyer", defaults=defaults, validate=validate, plan=plan,
                       row=row))
