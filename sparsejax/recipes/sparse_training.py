"""Sparse training from the first step: the baselines of every comparison table.

One family, nine methods (:mod:`sparsejax.sparsity.algorithms`), each a
single training phase whose masks change inside the compiled steps:

==========  ===============================================================
method      masks
==========  ===============================================================
gmp         gradual magnitude pruning (Zhu & Gupta, 2018), dense start
random      random pruning on the same schedule
saliency    pruning by :math:`|\\theta g|` on the same schedule
snip        saliency pruning once, at the first step (Lee et al., 2019)
ste         magnitude masks with the straight-through estimator
sr_ste      SR-STE (Zhou et al., 2021): STE plus decay of the pruned weights
static      random masks at initialisation, never changed
set         SET (Mocanu et al., 2018): drop by magnitude, grow at random
rigl        RigL (Evci et al., 2020): drop by magnitude, grow by :math:`|g|`
==========  ===============================================================

The fields, in ``config.sparse``: the budget (``distribution`` uniform, er,
erk or global; ``erk_power``; ``dense_first``, ``dense_last``;
``overrides``, ``"glob=density"`` strings), the ``structure``
(``unstructured``, ``N:M``, ``block:RxC``, ``channel``), the schedule
(``schedule``: empty for the method's own, or one_shot, periodic,
polynomial; ``start_fraction`` and ``end_fraction`` of the training steps,
``frequency`` in steps, ``power``), SET's and RigL's ``drop_fraction`` and
``drop_decay``, and SR-STE's ``sr_ste_decay``. The target is
``pruning.density`` (N:M fixes it at N/M). Training runs ``max_epochs``
epochs under the run's optimiser and returns the final state (no
early stop, no best-state selection, as the papers report). The masks start
from ``prepare`` (random for static, SET and RigL; from the initial weights
for STE and SR-STE; dense for the rest) with the seed's ``sparse`` key
stream.

The row adds ``sparse_kept`` and ``sparse_density`` (kept share of the
prunable entries); the straight-through methods' final weights are masked.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections

from sparsejax import keys
from sparsejax import masks as masks_lib
from sparsejax import objectives
from sparsejax.fields import ConfigError, choice, require
from sparsejax.recipes.base import Outcome, Plan, Recipe, Stage, StageInput, register_recipe
from sparsejax.sparsity import algorithms, schedules, structures
from sparsejax.train.driver import Phase
from sparsejax.train.loop import steps_per_epoch
from sparsejax.train.optimizers import build_optimizer
from sparsejax.train.state import TrainState

#: method -> the schedule it uses when ``sparse.schedule`` is empty.
METHODS = {"gmp": "polynomial", "random": "polynomial", "saliency": "polynomial",
           "snip": "one_shot", "ste": "periodic", "sr_ste": "periodic",
           "static": "periodic", "set": "periodic", "rigl": "periodic"}
def defaults() -> dict:
  s = ml_collections.ConfigDict()
  s.distribution = "erk"        # uniform, er, erk (layer-wise) or global (one ranking)
  s.erk_power = 1.0             # ER/ERK score exponent (RigL's erk_power_scale)
  s.dense_first = False         # keep the first prunable layer dense (outside the budget)
  s.dense_last = False          # keep the last prunable layer dense (outside the budget)
  s.overrides = ()              # ("glob=density", ...): fixed leaves, outside the budget
  s.structure = "unstructured"  # unstructured, N:M (2:4), block:RxC, channel
  s.schedule = ""               # "": the method's own; one_shot, periodic, polynomial
  s.start_fraction = 0.0        # first update, as a fraction of the training steps
  s.end_fraction = 0.75         # last update (RigL's T_end), as a fraction
  s.frequency = 100             # steps between updates (RigL's Delta T)
  s.power = 3.0                 # polynomial schedule's exponent (Zhu & Gupta: 3)
  s.drop_fraction = 0.3         # SET / RigL: alpha, the initial drop fraction
  s.drop_decay = "cosine"       # SET / RigL: cosine (RigL) or constant
  s.sr_ste_decay = 2e-4         # SR-STE's lambda_W
  return {"sparse": s}


def overrides_of(config: ml_collections.ConfigDict) -> tuple[tuple[str, float], ...]:
  """``sparse.overrides`` as ``(pattern, density)`` pairs."""
  pairs = []
  for item in config.sparse.overrides:
    pattern, sep, value = str(item).rpartition("=")
    try:
      density = float(value)
    except ValueError:
      density = None
    if not sep or not pattern or density is None or not 0.0 < density <= 1.0:
      raise ConfigError(f"config field 'sparse.overrides' has {item!r}; each entry must be "
                        f"'glob=density' with a density in (0, 1], e.g. 'Dense_0/kernel=1.0'")
    pairs.append((pattern, density))
  return tuple(pairs)


def structure_of(config: ml_collections.ConfigDict):
  """``sparse.structure`` parsed (:func:`sparsejax.sparsity.structures.parse`)."""
  try:
    return structures.parse(config.sparse.structure)
  except ValueError as error:
    raise ConfigError(f"config field 'sparse.structure' is {config.sparse.structure!r}: "
                      f"{error}") from None


#: The ``sparse`` fields every method reads: the budget and the structure.
BUDGET_FIELDS = {"distribution", "erk_power", "dense_first", "dense_last", "overrides",
                 "structure"}


def used_fields(config: ml_collections.ConfigDict) -> set[str]:
  """The ``sparse`` fields ``config.method`` reads (the others must keep their defaults)."""
  method = config.method
  if method == "static":
    return BUDGET_FIELDS
  if method in ("set", "rigl"):
    return BUDGET_FIELDS | {"start_fraction", "end_fraction", "frequency", "drop_fraction",
                            "drop_decay"}
  kind = config.sparse.schedule or METHODS[method]
  schedule = {"schedule", "start_fraction"}
  if kind != "one_shot":
    schedule |= {"end_fraction", "frequency"}
  if kind == "polynomial":
    schedule |= {"power"}
  return BUDGET_FIELDS | schedule | ({"sr_ste_decay"} if method == "sr_ste" else set())


def validate(config: ml_collections.ConfigDict) -> None:
  s = config.sparse
  choice(config, "sparse.distribution", algorithms.BUDGETS)
  choice(config, "sparse.schedule", ("", *schedules.SCHEDULES))
  choice(config, "sparse.drop_decay", schedules.DROP_DECAYS)
  for name in ("start_fraction", "end_fraction", "drop_fraction"):
    require(0.0 <= s[name] <= 1.0, f"sparse.{name}", s[name], "in [0, 1]")
  require(s.start_fraction <= s.end_fraction, "sparse.start_fraction", s.start_fraction,
          f"<= sparse.end_fraction ({s.end_fraction})")
  require(s.frequency >= 1, "sparse.frequency", s.frequency, "an int >= 1")
  require(s.power > 0, "sparse.power", s.power, "> 0")
  require(s.erk_power >= 0, "sparse.erk_power", s.erk_power, ">= 0")
  require(s.sr_ste_decay >= 0, "sparse.sr_ste_decay", s.sr_ste_decay, ">= 0")
  overrides_of(config)
  structure = structure_of(config)
  if structure.fixed_density is not None:
    require(abs(config.pruning.density - structure.fixed_density) < 1e-12, "pruning.density",
            config.pruning.density,
            f"{structure.fixed_density} with sparse.structure={s.structure!r} (N:M keeps N of M)")
  try:
    algorithms.Budget(s.distribution, overrides=overrides_of(config), dense_first=s.dense_first,
                      dense_last=s.dense_last).check(structure)
  except ValueError as error:
    raise ConfigError(f"config field 'sparse.distribution' is {s.distribution!r}: {error}") \
        from None
  default = defaults()["sparse"]
  for name in sorted(set(default) - used_fields(config)):
    if s[name] != default[name]:
      raise ConfigError(f"config field 'sparse.{name}' is {s[name]!r}, but method "
                        f"{config.method!r} does not use it (its fields: "
                        f"{', '.join(sorted(used_fields(config)))}); leave it at "
                        f"{default[name]!r}")


def _order(model, masks) -> list[str] | None:
  """The prunable leaves in the order the forward pass calls their layers, if traced."""
  layers = model.layer_order()
  if not layers:
    return None
  names = [masks_lib.path_str(path) for path, m in
           jax.tree_util.tree_flatten_with_path(masks, is_leaf=lambda x: x is None)[0]
           if m is not None]
  rank = {layer: i for i, layer in enumerate(layers)}
  position = {name: rank.get(name.rpartition("/")[0]) for name in names}
  if any(p is None for p in position.values()):
    return None
  return sorted(names, key=lambda name: position[name])


def algorithm_of(config: ml_collections.ConfigDict, total_steps: int,
                 model=None) -> algorithms.SparseTraining:
  """The run's :class:`~sparsejax.sparsity.algorithms.SparseTraining` for ``total_steps``."""
  s, method, density = config.sparse, config.method, config.pruning.density
  structure = structure_of(config)
  order = None
  if model is not None and (s.dense_first or s.dense_last):
    prunable = masks_lib.named_prunable(config.prunable)
    order = _order(model, masks_lib.ones_like(model.param_shapes, prunable))
  budget = algorithms.Budget(s.distribution, power=s.erk_power, overrides=overrides_of(config),
                             dense_first=s.dense_first, dense_last=s.dense_last, order=order)
  start = int(round(s.start_fraction * total_steps))
  # The straight-through masks of step t + 1 are made at step t: those of the final
  # weights at clock total_steps.
  last = total_steps if method in ("ste", "sr_ste") else total_steps - 1
  end = max(start, min(last, int(round(s.end_fraction * total_steps))))
  if method == "static":
    return algorithms.static(density, budget=budget, structure=structure)
  if method in ("set", "rigl"):
    return algorithms.dynamic(
        density, grow="gradient" if method == "rigl" else "random",
        start=start + s.frequency, end=end, frequency=s.frequency,
        drop_fraction=s.drop_fraction, drop_decay=s.drop_decay, budget=budget,
        structure=structure, name=method)
  kind = s.schedule or METHODS[method]
  if kind == "one_shot":
    schedule = schedules.one_shot(density, start)
  elif kind == "periodic":
    schedule = schedules.periodic(density, start=start, end=end, frequency=s.frequency)
  else:
    schedule = schedules.polynomial(density, start=start, end=end, frequency=s.frequency,
                                    power=s.power)
  score = {"gmp": "magnitude", "random": "random", "saliency": "saliency",
           "snip": "saliency"}.get(method, "magnitude")
  straight = method in ("ste", "sr_ste")
  return algorithms.pruning(schedule, score=score, budget=budget, structure=structure,
                            straight_through=straight,
                            decay=s.sr_ste_decay if method == "sr_ste" else 0.0, name=method)


def _kept_records(states: TrainState) -> list[dict]:
  def count(state):
    kept = sum(jnp.sum(m, dtype=jnp.int32) for m in jax.tree_util.tree_leaves(state.masks))
    return kept, sum(m.size for m in jax.tree_util.tree_leaves(state.masks))
  kept, total = jax.device_get(jax.vmap(count)(states))
  return [{"kept": int(k), "density": float(k) / float(t)} for k, t in zip(kept, total)]


def plan(config: ml_collections.ConfigDict, parts) -> Plan:
  """prepare (initial masks) -> train (masks updated inside the steps) -> final masks."""
  total_steps = config.max_epochs * steps_per_epoch(parts.split_size("train"),
                                                    config.train_batch_size)
  algorithm = algorithm_of(config, total_steps, parts.model)
  train = Phase("train", objectives.plain(), min_epochs=config.max_epochs,
                max_epochs=config.max_epochs, chunk_epochs=config.prune_window,
                optimizer=build_optimizer(config.optimizer, config.lr), sparse=algorithm)

  def prepare(state: TrainState, seed) -> TrainState:
    masks = algorithm.init(keys.stream_key(seed, "sparse"), state.params, state.masks)
    return state._replace(masks=masks, params=masks_lib.apply(masks, state.params))

  def final(inputs: StageInput):
    states = inputs.states._replace(params=jax.vmap(masks_lib.apply)(inputs.states.masks,
                                                                    inputs.states.params))
    return states, inputs.aux, _kept_records(states)

  return Plan(steps=(train, Stage("sparse", final)), prepare=prepare)


def row(config: ml_collections.ConfigDict, outcome: Outcome) -> dict:
  record = outcome.stages["sparse"]
  return {"sparse_kept": record["kept"], "sparse_density": record["density"]}


def check_model(config: ml_collections.ConfigDict, model) -> None:
  """The prunable leaves must exist and suit the structure (N:M: kernels of rank >= 2)."""
  masks = masks_lib.ones_like(model.param_shapes, masks_lib.named_prunable(config.prunable))
  leaves = [(masks_lib.path_str(path), m.shape) for path, m in
            jax.tree_util.tree_flatten_with_path(masks)[0]]
  if not leaves:
    raise ConfigError("config field 'prunable' selects no parameter of the model: sparse "
                      "training needs prunable leaves")
  if isinstance(structure_of(config), structures.NByM):
    for name, shape in leaves:
      if len(shape) < 2:
        raise ConfigError(f"config field 'sparse.structure' is {config.sparse.structure!r}: "
                          f"N:M masks group a kernel's input axis, and the prunable leaf "
                          f"{name!r} has shape {shape}; set prunable='kernels'")


for _method in METHODS:
  register_recipe(Recipe(name=_method, defaults=defaults, validate=validate, plan=plan, row=row,
                         check_model=check_model))
