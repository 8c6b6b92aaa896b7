"""Pruning at (or near) initialisation: simulated annealing and the criteria it is compared with.

``method="anneal"`` (Sanchez and Reyes, 2020, EEE 198; reference notes
``jax_ecosystem_and_annealing.md``, part 2), for the unstructured mask of an
MLP's weights:

1. ``train``: ``anneal.k_epochs`` epochs of dense training (0: the mask is
   chosen at initialisation);
2. ``search``: the mask keeping ``1 - anneal.sparsity`` of the prunable
   weights, ranked globally, by ``anneal.criterion``:

   * ``sa``: the simulated-annealing search (:mod:`sparsejax.pruning.annealing`)
     for the mask that maximises the accuracy of the *dense* network of step 1,
     masked, on the first ``anneal.eval_examples`` training images;
   * ``lth``: the largest :math:`|w_K|` (the lottery-ticket criterion);
   * ``deconst``: the largest :math:`|w_K|` whose sign is the initial one
     (:math:`|w_K| \\cdot 1[w_K w_0 \\ge 0]`, Zhou et al.'s "large final, same sign");
   * ``snip``: the largest :math:`|\\partial L / \\partial w \\odot w|` at
     initialisation on one random batch of ``anneal.snip_batch`` training
     images (Lee et al., 2019);
   * ``random``: uniformly random;

   then the kept weights are **rewound** to their initial values and the
   masked initial network is tested (``rewind_test_accuracy``);
3. ``finetune`` (the retraining): ``finetuning_max_epochs`` epochs with the zeros frozen under a
   fresh optimiser (the reference: Adadelta, lr 1, batch 64, 50 epochs); the
   epoch with the best **validation** accuracy is tested (the reference reports
   the best *test* accuracy over the epochs).

The row adds the rewind accuracy, the search's statistics (``sa_best_mean``,
the best level mean on the evaluation subset in %; ``sa_evaluations``;
``sa_accepted``) and the orthogonality score of every masked layer at
initialisation, :math:`\\mathrm{mean}(((W \\odot M)(W \\odot M)^\\top - I)^2)`
over the layer's inputs (Lee et al., 2020; ``os_<layer>``, ``os_sum``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from sparsejax import masks as masks_lib
from sparsejax import objectives
from sparsejax.pruning import annealing
from sparsejax.recipes.base import Outcome, Plan, Recipe, Stage, StageInput, register_recipe
from sparsejax.runner import keys as keys_lib
from sparsejax.runner.build import build_optimizer
from sparsejax.runner.config import choice, require
from sparsejax.train import selection
from sparsejax.train.driver import Phase
from sparsejax.train.state import TrainState
from sparsejax.train.step import apply_model

CRITERIA = ("sa", "lth", "deconst", "snip", "random")


def defaults() -> dict:
  a = ml_collections.ConfigDict()
  a.criterion = "sa"             # sa, lth, deconst, snip, random
  a.sparsity = 0.7               # share of the prunable weights removed
  a.k_epochs = 0                 # dense training epochs before the criterion
  a.eval_examples = 2000         # sa: accuracy on the first n training images
  a.snip_batch = 64              # snip: the batch the gradient is taken on
  schedule = annealing.MLP_SCHEDULE
  for name in annealing.Schedule._fields:
    a[name] = getattr(schedule, name)
  return {"anneal": a}


def schedule_of(config: ml_collections.ConfigDict) -> annealing.Schedule:
  """The search's constants from ``config.anneal``."""
  return annealing.Schedule(**{name: config.anneal[name] for name in annealing.Schedule._fields})


def validate(config: ml_collections.ConfigDict) -> None:
  choice(config, "anneal.criterion", CRITERIA)
  choice(config, "anneal.tabu", annealing.TABU_RULES)
  a = config.anneal
  require(0 < a.sparsity < 1, "anneal.sparsity", a.sparsity, "in (0, 1)")
  require(a.k_epochs >= 0, "anneal.k_epochs", a.k_epochs, ">= 0")
  for name in ("eval_examples", "snip_batch", "levels", "tabu_size", "tabu_attempts"):
    require(a[name] >= 1, f"anneal.{name}", a[name], ">= 1")
  for name in ("t0", "iters_start"):
    require(a[name] > 0, f"anneal.{name}", a[name], "> 0")
  for name in ("t_decay", "n_decay", "reset_below", "reset_to"):
    require(0 < a[name] <= 1, f"anneal.{name}", a[name], "in (0, 1]")
  require(a.iters_growth >= 1, "anneal.iters_growth", a.iters_growth, ">= 1")
  require(a.iters_cap >= a.iters_start, "anneal.iters_cap", a.iters_cap,
          f">= anneal.iters_start ({a.iters_start})")
  require(a.max_evaluations >= 0, "anneal.max_evaluations", a.max_evaluations,
          ">= 0 (0: no limit)")
  require(config.dataset != "teacher_student", "dataset", config.dataset,
          "an image data set for method 'anneal' (a classifier: the search maximises accuracy)")


# --------------------------------------------------------------------------
# Masks as flat vectors over the prunable leaves


def flat_prunable(tree, masks) -> jax.Array:
  """The prunable leaves of ``tree`` (where ``masks`` is not None), concatenated."""
  mask_leaves = jax.tree.leaves(masks, is_leaf=lambda x: x is None)
  return jnp.concatenate([jnp.ravel(leaf) for m, leaf in zip(mask_leaves, jax.tree.leaves(tree))
                          if m is not None])


def unflatten_mask(flat: jax.Array, masks):
  """A boolean vector back onto the prunable leaves of ``masks`` (None leaves stay)."""
  out, offset = [], 0
  leaves, treedef = jax.tree.flatten(masks, is_leaf=lambda x: x is None)
  for leaf in leaves:
    if leaf is None:
      out.append(None)
      continue
    out.append(flat[offset:offset + leaf.size].reshape(leaf.shape))
    offset += leaf.size
  return jax.tree.unflatten(treedef, out)


def top_mask(scores: jax.Array, n_keep: int) -> jax.Array:
  """The ``n_keep`` largest scores (global ranking)."""
  keep = jnp.zeros(scores.shape, bool)
  return keep.at[jnp.argsort(-scores)[:n_keep]].set(True)


def orthogonality(params, masks) -> dict[str, jax.Array]:
  """``{layer: mean(((W*M)(W*M)^T - I)^2)}`` for every masked 2-D kernel (in, out)."""
  scores = {}
  for (path, kernel), m in zip(jax.tree_util.tree_flatten_with_path(params)[0],
                               jax.tree.leaves(masks, is_leaf=lambda x: x is None)):
    if m is None or kernel.ndim != 2:
      continue
    w = kernel * m
    gram = w @ w.T
    scores[masks_lib.path_str(path).replace("/kernel", "").replace("/", "_")] = jnp.mean(
        jnp.square(gram - jnp.eye(gram.shape[0], dtype=gram.dtype)))
  return scores


# --------------------------------------------------------------------------
# The search stage


def make_search(config: ml_collections.ConfigDict, program):
  """``(trained, initial, key, data) -> (mask tree, statistics)`` for one seed."""
  a = config.anneal
  model, task = program.model, program.task
  schedule = schedule_of(config)

  def search(trained: TrainState, initial: TrainState, key, data):
    masks = initial.masks
    w_k = flat_prunable(trained.params, masks)
    w_0 = flat_prunable(initial.params, masks)
    n = w_k.size
    n_keep = n - int(n * a.sparsity)
    stats = {"sa_best_mean": jnp.nan, "sa_evaluations": 0, "sa_accepted": 0}
    if a.criterion == "sa":
      x, y = data.train.x[:a.eval_examples], data.train.y[:a.eval_examples]

      def evaluate(flat_mask):
        params = masks_lib.apply(unflatten_mask(flat_mask, masks), trained.params)
        outputs, _ = apply_model(model, params, trained.model_state, x, train=False)
        return 100.0 * jnp.mean(jnp.argmax(outputs, -1) == y)
      result = annealing.anneal(evaluate, key, n, a.sparsity, schedule)
      flat = result.best_mask
      stats = {"sa_best_mean": result.best_mean, "sa_evaluations": result.evaluations,
               "sa_accepted": result.accepted}
    elif a.criterion == "lth":
      flat = top_mask(jnp.abs(w_k), n_keep)
    elif a.criterion == "deconst":
      flat = top_mask(jnp.abs(w_k) * (w_k * w_0 >= 0), n_keep)
    elif a.criterion == "snip":
      batch = jax.random.choice(key, data.train.x.shape[0], (a.snip_batch,), replace=False)
      xb, yb = data.train.x[batch], data.train.y[batch]

      def loss(params):
        outputs, _ = apply_model(model, params, initial.model_state, xb, train=False)
        return jnp.mean(task.loss(outputs, yb))
      grads = jax.grad(loss)(initial.params)
      flat = top_mask(jnp.abs(flat_prunable(grads, masks) * w_0), n_keep)
    else:
      flat = annealing.random_mask(key, n, n - n_keep)
    return unflatten_mask(flat, masks), stats
  return search


def plan(config: ml_collections.ConfigDict, parts) -> Plan:
  a = config.anneal
  dense = Phase("train", objectives.plain(), max_epochs=a.k_epochs, min_epochs=a.k_epochs,
                chunk_epochs=max(1, min(a.k_epochs, config.prune_window)),
                optimizer=build_optimizer(config))

  def search_stage(inputs: StageInput):
    program = inputs.program
    search = make_search(config, program)
    keys = keys_lib.stream_keys(program.seeds, "search")
    masks, stats = program.vmap(search)(inputs.states, inputs.initial, keys, program.data)

    def rewind(initial: TrainState, masks) -> TrainState:
      return initial._replace(masks=masks, params=masks_lib.apply(masks, initial.params))
    states = program.vmap(rewind, with_data=False)(inputs.initial, masks)
    rewound = program.evaluate(objectives.plain(), states, "test")
    scores = program.vmap(lambda s: orthogonality(s.params, s.masks), with_data=False)(states)
    stats, scores = jax.device_get((stats, scores))
    records = []
    for i in range(program.size):
      record = {"rewind_test_accuracy": float(rewound["accuracy"][i]),
                "sa_best_mean": float(stats["sa_best_mean"][i]),
                "sa_evaluations": int(stats["sa_evaluations"][i]),
                "sa_accepted": int(stats["sa_accepted"][i])}
      record.update({f"os_{layer}": float(v[i]) for layer, v in scores.items()})
      record["os_sum"] = float(sum(v[i] for v in scores.values()))
      records.append(record)
    return states, inputs.aux, records

  retrain = Phase("finetune", objectives.plain(), max_epochs=config.finetuning_max_epochs,
                  min_epochs=config.finetuning_max_epochs, chunk_epochs=1,
                  optimizer=build_optimizer(config),
                  selection=selection.best_metric("val_accuracy"))
  return Plan(steps=(dense, Stage("search", search_stage), retrain))


def row(config: ml_collections.ConfigDict, outcome: Outcome) -> dict:
  record = dict(outcome.stages["search"])
  if config.anneal.criterion != "sa":
    for name in ("sa_best_mean", "sa_evaluations", "sa_accepted"):
      record.pop(name)
  return record


register_recipe(Recipe(name="anneal", defaults=defaults, validate=validate, plan=plan, row=row))
