"""Pruning at (or near) initialisation: simulated annealing and the criteria it is compared with.

``method="anneal"`` (Sanchez and Reyes, 2020, EEE 198; reference notes
``jax_ecosystem_and_annealing.md``, part 2), for the unstructured mask of an
MLP's weights (``anneal.units="weights"``) or the filter mask of
:class:`~sparsejax.models.BasicCNN` (``"filters"``):

1. ``train``: ``anneal.k_epochs`` epochs of dense training (0: the mask is
   chosen at initialisation);
2. ``search``: the mask keeping ``1 - anneal.sparsity`` of the prunable
   weights, ranked globally, by ``anneal.criterion`` (the scores:
   :mod:`sparsejax.pruning.saliency`):

   * ``sa``: the simulated-annealing search (:mod:`sparsejax.pruning.annealing`)
     for the mask that maximises the accuracy of the *dense* network of step 1,
     masked, on the first ``anneal.eval_examples`` training images; each seed
     is one chain, and the chains run as ``anneal.chain_loop`` says
     (:func:`chain_loop_of`);
   * ``lth``: the largest :math:`|w_K|` (the lottery-ticket criterion);
   * ``deconst``: the largest :math:`|w_K|` whose sign is the initial one
     (:math:`|w_K| \\cdot 1[w_K w_0 \\ge 0]`, Zhou et al.'s "large final, same sign");
   * ``snip``: the largest :math:`|\\partial L / \\partial w \\odot w|` at
     initialisation on one random batch of ``anneal.snip_batch`` training
     images (Lee et al., 2019);
   * ``random``: uniformly random;
   * filters only: ``magnitude`` (mean :math:`|w|` of the filter after
     training) and ``magsign`` (:math:`\\mathrm{sign}(\\bar w_0)\\bar w_K`,
     signed filter means; :mod:`sparsejax.pruning.filters`); a pruned filter
     loses its kernel slice, bias, BatchNorm scale and offset and the next
     conv's input channel, so it outputs exactly 0;

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
over the layer's inputs (Lee et al., 2020; ``os_<layer>``, ``os_sum``), or
for filters the kept filters per conv (``filters_<conv>``) and the smaller
dense CNN left after deleting the pruned ones (``small_params``,
``small_macs`` and their % of the dense ones).

The initial weights follow PyTorch's default scheme (``anneal.weight_init="torch"``,
:mod:`sparsejax.models.init`), as the study's networks do: the rewind
accuracies and orthogonality scores are measured on them.

The optimiser is ``config.optimizer`` at ``config.lr``, with
``anneal.momentum`` (SGD), coupled ``anneal.weight_decay`` and the learning
rate multiplied by ``anneal.lr_decay_factor`` at each epoch of
``anneal.lr_decay_epochs`` (the CNN recipe: SGD 0.1, momentum 0.9, 1e-4,
x0.1 at 30 and 60).
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from sparsejax import keys as keys_lib
from sparsejax import masks as masks_lib
from sparsejax import objectives
from sparsejax.compaction import cost
from sparsejax.fields import choice, require
from sparsejax.models import init as init_lib
from sparsejax.pruning import annealing, filters, saliency
from sparsejax.recipes.base import Outcome, Plan, Recipe, Stage, StageInput, register_recipe
from sparsejax.train import selection
from sparsejax.train import driver
from sparsejax.train.driver import Phase
from sparsejax.train.loop import steps_per_epoch
from sparsejax.train.optimizers import build_optimizer
from sparsejax.train.state import TrainState
from sparsejax.train.step import apply_model

UNITS = ("weights", "filters")
#: How the seeds' search chains run (:func:`chain_loop_of`).
CHAIN_LOOPS = ("auto",) + driver.SEED_LOOPS
#: The criteria of each kind of unit.
CRITERIA = {"weights": ("sa", "lth", "deconst", "snip", "random"),
            "filters": ("sa",) + filters.FILTER_CRITERIA + ("random",)}


def defaults() -> dict:
  a = ml_collections.ConfigDict()
  a.criterion = "sa"             # sa, lth, deconst, snip, random; filters: sa, magnitude, magsign, random
  a.units = "weights"            # weights (unstructured) or filters (BasicCNN)
  a.sparsity = 0.7               # share of the prunable weights (or filters) removed
  a.k_epochs = 0                 # dense training epochs before the criterion
  a.eval_examples = 2000         # sa: accuracy on the first n training images
  a.weight_init = "torch"        # initial weights: torch (the study's PyTorch defaults) or flax
  a.snip_batch = 64              # snip: the batch the gradient is taken on
  a.checkpoint_levels = 250      # sa: a checkpoint every this many temperature levels
  a.chain_loop = "auto"          # sa: the seeds' chains vmapped, or one after another (map) per device
  a.momentum = 0.0               # SGD momentum
  a.weight_decay = 0.0           # coupled weight decay
  a.lr_decay_epochs = ()         # epochs at which the learning rate is multiplied by ...
  a.lr_decay_factor = 0.1        # ... this factor
  schedule = annealing.MLP_SCHEDULE
  for name in annealing.Schedule._fields:
    a[name] = getattr(schedule, name)
  return {"anneal": a}


def check_model(config: ml_collections.ConfigDict, model) -> None:
  """PyTorch's initialisation and the filter search need a model that offers them."""
  if config.anneal.weight_init == "torch":
    model.require("torch_init", "anneal.weight_init 'torch' (or use anneal.weight_init 'flax')")
  if config.anneal.units == "filters":
    model.require("conv_filters", "anneal.units 'filters'")


def schedule_of(config: ml_collections.ConfigDict) -> annealing.Schedule:
  """The search's constants from ``config.anneal``."""
  return annealing.Schedule(**{name: config.anneal[name] for name in annealing.Schedule._fields})


def validate(config: ml_collections.ConfigDict) -> None:
  choice(config, "anneal.units", UNITS)
  choice(config, "anneal.criterion", CRITERIA[config.anneal.units])
  choice(config, "anneal.tabu", annealing.TABU_RULES)
  choice(config, "anneal.weight_init", init_lib.INITS)
  choice(config, "anneal.chain_loop", CHAIN_LOOPS)
  a = config.anneal
  for name in ("momentum", "weight_decay", "lr_decay_factor"):
    require(a[name] >= 0, f"anneal.{name}", a[name], ">= 0")
  require(a.momentum == 0 or config.optimizer == "sgd", "anneal.momentum", a.momentum,
          f"0 for optimizer {config.optimizer!r} (only 'sgd' takes a momentum)")
  require(0 < a.sparsity < 1, "anneal.sparsity", a.sparsity, "in (0, 1)")
  require(a.k_epochs >= 0, "anneal.k_epochs", a.k_epochs, ">= 0")
  for name in ("eval_examples", "snip_batch", "levels", "tabu_size", "tabu_attempts",
               "checkpoint_levels"):
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


def filter_masks(flat: jax.Array, model, params, masks):
  """A boolean vector over every conv's filters (in order) as a mask tree."""
  sites = model.gate_sites()
  units, offset = {}, 0
  for site, n in sites.items():
    units[site] = flat[offset:offset + n]
    offset += n
  return masks_lib.unit_masks(params, units, model.unit_covers(), masks)


# --------------------------------------------------------------------------
# The search's evaluation


def first_dense_layer(model, params, model_state, masks, x) -> tuple[tuple, int] | None:
  """``(module path, flat offset)`` of a first layer the search can update incrementally.

  That is the first 2-D prunable kernel ``(d_in, d_out)`` (in leaf order) with
  ``d_in`` the flattened input's size such that the model's outputs computed from
  :math:`X W (+ b)` put in place of the layer's output (a linen method
  interceptor) equal its plain outputs on ``x``; checked numerically, once,
  on concrete arrays. ``None`` when no layer qualifies, or for an NNX model
  (the search then evaluates every candidate in full).
  """
  if getattr(model, "kind", "linen") != "linen":
    return None
  flat_x = x.reshape(x.shape[0], -1)
  plain, _ = apply_model(model, params, model_state, x, train=False)
  for module, kernel, offset in _dense_kernels(params, masks, flat_x.shape[1]):
    replaced = _with_first_layer(model, params, model_state, x, module, flat_x @ kernel)
    if np.allclose(plain, replaced, rtol=1e-4, atol=1e-5):
      return module, offset
  return None


def _dense_kernels(params, masks, d_in: int):
  """``(module path, kernel, flat offset)`` of every prunable 2-D ``kernel`` leaf with
  ``d_in`` rows, in leaf order (the flat mask's order)."""
  offset = 0
  for (path, kernel), m in zip(jax.tree_util.tree_flatten_with_path(params)[0],
                               jax.tree.leaves(masks, is_leaf=lambda leaf: leaf is None)):
    if m is None:
      continue
    names = tuple(masks_lib.path_str(path).split("/"))
    if kernel.ndim == 2 and kernel.shape[0] == d_in and names[-1] == "kernel":
      yield names[:-1], kernel, offset
    offset += m.size


def second_dense_layer(model, params, model_state, masks, x, first: tuple
                       ) -> tuple[tuple, int, str] | None:
  """``(module path, flat offset, activation)`` of a second layer the search updates
  incrementally after ``first`` (:func:`first_dense_layer`), or ``None``.

  That is a 2-D prunable kernel ``(d_1, d_2)`` fed by the first layer through one
  of :data:`sparsejax.pruning.annealing.ACTIVATIONS`: with an arbitrary
  :math:`Z` (standard normal, so both signs) as the first layer's output less its
  bias, the model's outputs with :math:`\\phi(Z + b_1) W_2 (+ b_2)` also put in
  place of the second layer's output equal those it computes itself; checked
  numerically, once, for each activation.
  """
  module1, _ = first
  kernel1, bias1 = _layer(params, module1)
  z = jax.random.normal(jax.random.key(0), (x.shape[0], kernel1.shape[1]), kernel1.dtype)
  h1 = z + (0 if bias1 is None else bias1)
  plain = _with_layers(model, params, model_state, x, {module1: z})
  for module, kernel, offset in _dense_kernels(params, masks, kernel1.shape[1]):
    if module == module1:
      continue
    for name, act in annealing.ACTIVATIONS.items():
      replaced = _with_layers(model, params, model_state, x, {module1: z, module: act(h1) @ kernel})
      if np.allclose(plain, replaced, rtol=1e-4, atol=1e-5):
        return module, offset, name
  return None


def _layer(params, module: tuple):
  """A Dense layer's ``(kernel, bias or None)``."""
  layer = params
  for name in module:
    layer = layer[name]
  return layer["kernel"], layer.get("bias")


def _with_first_layer(model, params, model_state, x, module: tuple, h):
  """The model's outputs with ``h`` (plus the layer's bias) as the output of ``module``."""
  return _with_layers(model, params, model_state, x, {module: h})


def _with_layers(model, params, model_state, x, outputs: dict):
  """The model's outputs with ``outputs[module]`` (plus the layer's bias) as the output
  of each named ``module``; those layers are not computed."""
  replaced = {}
  for module, h in outputs.items():
    _, bias = _layer(params, module)
    replaced[module] = (h if bias is None else h + bias).astype(h.dtype)

  def interceptor(next_fun, args, kwargs, context):
    module = tuple(context.module.path)
    if context.method_name == "__call__" and module in replaced:
      return replaced[module]
    return next_fun(*args, **kwargs)
  with nn.intercept_methods(interceptor):
    out, _ = apply_model(model, params, model_state, x, train=False)
  return out


def _accuracy(outputs, y):
  return 100.0 * jnp.mean(jnp.argmax(outputs, -1) == y)


def full_evaluator(model, trained: TrainState, to_tree, x, y) -> annealing.Evaluator:
  """The search's accuracy (%) of the trained network masked by ``to_tree(flat mask)``,
  computed in full for every candidate."""
  def evaluate(flat_mask):
    params = masks_lib.apply(to_tree(flat_mask), trained.params)
    outputs, _ = apply_model(model, params, trained.model_state, x, train=False)
    return _accuracy(outputs, y)
  return annealing.plain_evaluator(evaluate)


def weight_evaluator(model, trained: TrainState, masks, x, y, first, second=None
                     ) -> annealing.Evaluator:
  """The search's accuracy (%) of the trained network masked by a flat weight mask:
  updated through the first two layers when ``second`` (:func:`second_dense_layer`)
  names the layer after ``first``, through the first when ``first``
  (:func:`first_dense_layer`) names one, else computed in full."""
  def to_tree(flat_mask):
    return masks_lib.unflatten_like(flat_mask, masks)
  if first is None:
    return full_evaluator(model, trained, to_tree, x, y)
  module, offset = first
  kernel, bias = _layer(trained.params, module)
  flat_x = x.reshape(x.shape[0], -1)
  if second is None:
    def rest(h, flat_mask):
      params = masks_lib.apply(to_tree(flat_mask), trained.params)
      return _accuracy(_with_first_layer(model, params, trained.model_state, x, module, h), y)
    return annealing.first_layer_evaluator(flat_x, kernel, offset, rest)
  module2, offset2, activation = second
  kernel2, _ = _layer(trained.params, module2)
  skipped = jnp.zeros((x.shape[0], kernel.shape[1]), kernel.dtype)

  def rest2(h2, flat_mask):
    params = masks_lib.apply(to_tree(flat_mask), trained.params)
    outputs = _with_layers(model, params, trained.model_state, x,
                           {module: skipped, module2: h2})
    return _accuracy(outputs, y)
  return annealing.two_layer_evaluator(flat_x, kernel, bias, offset, activation, kernel2,
                                       offset2, rest2)


# --------------------------------------------------------------------------
# The search stage


def _to_tree(config, model, trained: TrainState, initial: TrainState):
  """``flat mask -> mask tree``: over the weights, or over the filters (:func:`filter_masks`)."""
  if config.anneal.units == "filters":
    return lambda flat: filter_masks(flat, model, trained.params, initial.masks)
  return lambda flat: masks_lib.unflatten_like(flat, initial.masks)


class AnnealingSearch(NamedTuple):
  """The simulated-annealing search of one seed, in parts that resume between levels.

  Attributes:
    plan: its per-level inputs (:func:`sparsejax.pruning.annealing.plan_search`).
    init: ``(trained, initial, key, data) -> Chain``.
    run: ``(trained, initial, chain, key, level inputs, data) -> (chain, level means)``.
    finish: ``(trained, initial, chain) -> (mask tree, statistics)``: the best mask.
  """
  plan: annealing.Plan
  init: Callable
  run: Callable
  finish: Callable


def annealing_search(config: ml_collections.ConfigDict, program, n_units: int,
                     first=None) -> AnnealingSearch:
  """The search over ``n_units`` weights or filters; ``first``: ``(first layer, second
  layer or None)`` the weight search updates incrementally (:func:`first_dense_layer`,
  :func:`second_dense_layer`), or ``None``."""
  a = config.anneal
  model = program.model
  schedule = schedule_of(config)
  plan = annealing.plan_search(n_units, a.sparsity, schedule)

  def evaluator(trained: TrainState, initial: TrainState, data) -> annealing.Evaluator:
    x, y = data.train.x[:a.eval_examples], data.train.y[:a.eval_examples]
    if a.units == "weights":
      return weight_evaluator(model, trained, initial.masks, x, y, *(first or (None, None)))
    return full_evaluator(model, trained, _to_tree(config, model, trained, initial), x, y)

  def init(trained, initial, key, data):
    return annealing.init_chain(evaluator(trained, initial, data), key, plan, schedule)

  def run(trained, initial, chain, key, inputs, data):
    return annealing.run_levels(evaluator(trained, initial, data), key, chain, plan, schedule,
                                inputs)

  def finish(trained, initial, chain):
    stats = {"sa_best_mean": chain.best_mean, "sa_evaluations": chain.evaluations,
             "sa_accepted": chain.accepted}
    return _to_tree(config, model, trained, initial)(chain.best_mask), stats
  return AnnealingSearch(plan, init, run, finish)


def make_search(config: ml_collections.ConfigDict, program):
  """``(trained, initial, key, data) -> (mask tree, statistics)`` for one seed, for every
  criterion but ``sa`` (:func:`resumable_search`)."""
  a = config.anneal
  model, task = program.model, program.task
  by_filter = a.units == "filters"

  def search(trained: TrainState, initial: TrainState, key, data):
    masks = initial.masks
    to_tree = _to_tree(config, model, trained, initial)
    n = (sum(model.gate_sites().values()) if by_filter
         else sum(m.size for m in jax.tree.leaves(masks)))
    n_keep = n - int(n * a.sparsity)
    stats = {"sa_best_mean": jnp.asarray(jnp.nan), "sa_evaluations": jnp.asarray(0),
             "sa_accepted": jnp.asarray(0)}
    if a.criterion in filters.FILTER_CRITERIA:
      scores = filters.filter_scores(a.criterion, trained.params, initial.params)
      flat = jnp.concatenate([scores[site] for site in model.gate_sites()])
      return to_tree(masks_lib.top_k(flat, n_keep)), stats
    if a.criterion == "random":
      return to_tree(annealing.random_mask(key, n, n - n_keep)), stats
    if a.criterion == "lth":
      scores = saliency.lth_scores(trained.params)
    elif a.criterion == "deconst":
      scores = saliency.deconst_scores(initial.params, trained.params)
    else:  # snip
      batch = jax.random.choice(key, data.train.x.shape[0], (a.snip_batch,), replace=False)

      def loss(params, batch):
        outputs, _ = apply_model(model, params, initial.model_state, batch[0], train=False)
        return jnp.mean(task.loss(outputs, batch[1]))
      scores = saliency.snip_scores(loss, initial.params,
                                    (data.train.x[batch], data.train.y[batch]))
    return masks_lib.global_top_k(scores, masks, n_keep), stats
  return search


def chain_loop_of(config: ml_collections.ConfigDict) -> str:
  """``anneal.chain_loop``, with ``"auto"`` resolved: ``"map"`` on a CPU, ``"vmap"`` on
  accelerators.

  On a CPU a vmapped chain costs more than a chain alone at every move size
  (docs/benchmarks.md, W6: the batched gathers, scatters and rejection loops
  grow with the chains and their caches leave the CPU's cache), so the chains
  run one after another, side by side on the cores where the seeds split over
  them (the program's ``"seeds"`` layout; :func:`driver.map_seeds`).
  """
  loop = config.anneal.chain_loop
  if loop == "auto":
    return "map" if jax.default_backend() == "cpu" else "vmap"
  return loop


def _seeds_search(config: ml_collections.ConfigDict, inputs: StageInput):
  """The search of every seed of the stage, and its parts compiled over the seeds (the
  level inputs shared, so the moves' branches stay branches)."""
  a, program = config.anneal, inputs.program
  first_masks = driver.per_seed(inputs.initial.masks, 0)
  if a.units == "filters":
    n_units, first = sum(program.model.gate_sites().values()), None
  else:
    n_units = sum(m.size for m in jax.tree.leaves(first_masks))
    one = driver.per_seed(inputs.states, 0)
    sample = program.per_seed_data(0).train.x[:min(a.eval_examples, 64)]
    first = first_dense_layer(program.model, one.params, one.model_state, one.masks, sample)
    if first is not None:
      first = (first, second_dense_layer(program.model, one.params, one.model_state, one.masks,
                                         sample, first))
  search = annealing_search(config, program, n_units, first)

  loop, layout = chain_loop_of(config), program.layout
  mesh = layout.mesh if layout is not None and layout.kind == "seeds" else None

  def over(fn, in_axes):
    return jax.jit(driver.map_seeds(fn, in_axes, program.size, loop, mesh))
  data = program.data_axis
  parts = {"init": over(search.init, (0, 0, 0, data)),
           "run": over(search.run, (0, 0, 0, 0, None, data)),
           "finish": over(search.finish, (0, 0, 0))}
  return search, parts


def _start(search: AnnealingSearch, parts, inputs: StageInput, keys):
  chains = parts["init"](inputs.states, inputs.initial, keys, inputs.program.data)
  return {"chains": chains, "next_level": jnp.zeros((), jnp.int32)}


def resumable_search(config: ml_collections.ConfigDict, inputs: StageInput, keys):
  """Every seed's search, ``anneal.checkpoint_levels`` temperature levels at a time, with
  a checkpoint after each (``inputs.save_progress``); resumes from ``inputs.progress``.
  The chains are those of one uninterrupted run (:func:`~sparsejax.pruning.annealing.
  run_levels`)."""
  search, parts = _seeds_search(config, inputs)
  plan, chunk = search.plan, min(config.anneal.checkpoint_levels, search.plan.levels)
  progress = inputs.progress or _start(search, parts, inputs, keys)
  start = int(progress["next_level"])
  while start < plan.levels:
    stop = min(start + chunk, plan.levels)
    chains, _ = parts["run"](inputs.states, inputs.initial, progress["chains"], keys,
                             annealing.level_inputs(plan, start, stop, chunk),
                             inputs.program.data)
    progress = {"chains": chains, "next_level": jnp.asarray(stop, jnp.int32)}
    if stop < plan.levels:
      inputs.save_progress(progress)
    start = stop
  return parts["finish"](inputs.states, inputs.initial, progress["chains"])


def optimizer(config: ml_collections.ConfigDict, n_train: int) -> optax.GradientTransformation:
  """``config.optimizer`` with the family's momentum, weight decay and step schedule."""
  a = config.anneal
  steps = steps_per_epoch(n_train, config.train_batch_size)
  lr = optax.piecewise_constant_schedule(
      config.lr, {epoch * steps: a.lr_decay_factor for epoch in a.lr_decay_epochs})
  return build_optimizer(config.optimizer, lr, momentum=a.momentum, weight_decay=a.weight_decay)


def plan(config: ml_collections.ConfigDict, parts) -> Plan:
  a = config.anneal
  n_train = parts.split_size("train")
  dense = Phase("train", objectives.plain(), max_epochs=a.k_epochs, min_epochs=a.k_epochs,
                chunk_epochs=max(1, min(a.k_epochs, config.prune_window)),
                optimizer=optimizer(config, n_train))

  def search_stage(inputs: StageInput):
    program = inputs.program
    keys = keys_lib.stream_keys(program.seeds, "search")
    if a.criterion == "sa":
      masks, stats = resumable_search(config, inputs, keys)
    else:
      search = make_search(config, program)
      masks, stats = program.over_seeds(search)(inputs.states, inputs.initial, keys,
                                                program.data)

    def rewind(initial: TrainState, masks) -> TrainState:
      return initial._replace(masks=masks, params=masks_lib.apply(masks, initial.params))
    states = program.over_seeds(rewind, with_data=False)(inputs.initial, masks)
    rewound = program.evaluate(objectives.plain(), states, "test")
    scores = ({} if a.units == "filters" else
              program.over_seeds(lambda s: orthogonality(s.params, s.masks), with_data=False)(states))
    stats, scores = jax.device_get((stats, scores))
    records = []
    for i in range(program.size):
      record = {"rewind_test_accuracy": float(rewound["accuracy"][i]),
                "sa_best_mean": float(stats["sa_best_mean"][i]),
                "sa_evaluations": int(stats["sa_evaluations"][i]),
                "sa_accepted": int(stats["sa_accepted"][i])}
      if scores:
        record.update({f"os_{layer}": float(v[i]) for layer, v in scores.items()})
        record["os_sum"] = float(sum(v[i] for v in scores.values()))
      records.append(record)
    return states, inputs.aux, records

  retrain = Phase("finetune", objectives.plain(), max_epochs=config.finetuning_max_epochs,
                  min_epochs=config.finetuning_max_epochs, chunk_epochs=1,
                  optimizer=optimizer(config, n_train),
                  selection=selection.best_metric("val_accuracy"))
  def progress_like(inputs: StageInput):
    search, parts = _seeds_search(config, inputs)
    keys = keys_lib.stream_keys(inputs.program.seeds, "search")
    return jax.eval_shape(lambda: _start(search, parts, inputs, keys))
  search = Stage("search", search_stage, progress_like if a.criterion == "sa" else None)
  return Plan(steps=(dense, search, retrain))


def kept_filters(state: TrainState) -> dict[str, np.ndarray]:
  """``{conv: bool[out]}``: the filters whose kernel slice is kept."""
  return {name: np.asarray(state.masks[name]["kernel"]).any(axis=(0, 1, 2))
          for name in filters.conv_names(state.params)}


def smaller_cnn(model, state: TrainState) -> dict:
  """Kept filters per conv and the deleted CNN's size beside the dense one's
  (parameters, BatchNorm's scale and offset included, and multiply-accumulates)."""
  kept = kept_filters(state)
  example = np.zeros((1, *model.input_shape), np.float32)
  variables = {"params": state.params, **state.model_state}
  deleted = filters.delete_filters(model, variables, kept, example)
  small = {"params": cost.parameters(deleted.variables["params"]),
           "macs": cost.macs(deleted.apply, deleted.variables, example)}
  full = {"params": cost.parameters(state.params),
          "macs": cost.macs(deleted.forward, variables, example)}
  fields = {f"filters_{name}": int(k.sum()) for name, k in kept.items()}
  fields.update(small_params=small["params"], small_macs=small["macs"],
                small_params_pct=100 * small["params"] / full["params"],
                small_macs_pct=100 * small["macs"] / full["macs"])
  return fields


def row(config: ml_collections.ConfigDict, outcome: Outcome) -> dict:
  record = dict(outcome.stages["search"])
  if config.anneal.criterion != "sa":
    for name in ("sa_best_mean", "sa_evaluations", "sa_accepted"):
      record.pop(name)
  if config.anneal.units == "filters":
    record.update(smaller_cnn(outcome.model, outcome.state))
  return record


def model_options(config: ml_collections.ConfigDict) -> dict:
  """The initialisation scheme (``anneal.weight_init``; the study's is PyTorch's), for the
  registered models that have the field (capability ``torch_init``)."""
  return {"weight_init": config.anneal.weight_init}


register_recipe(Recipe(name="anneal", defaults=defaults, validate=validate, plan=plan, row=row,
                       model_options=model_options, check_model=check_model))
