"""The Recipe contract: what a method family adds to a run, and the registry.

A method family is a :class:`Recipe`, a NamedTuple of pure functions in the
manner of ``optax.GradientTransformation`` and the
:class:`~sparsejax.objectives.Objective`:

* ``defaults()``: the config fields the family adds, in its own sub-dict
  (``ec``, ``bmrs``, ``l0``, ...), with their defaults;
* ``validate(config)``: its checks, run before any compute (raise
  :class:`~sparsejax.fields.ConfigError` naming the field, with
  :func:`~sparsejax.fields.choice` and :func:`~sparsejax.fields.require`);
* ``plan(config, parts)``: the run as a :class:`Plan`, a sequence of
  :class:`~sparsejax.train.driver.Phase` (objective, optimiser, epochs,
  convergence, selection, hooks between chunks) and :class:`Stage`
  (one-shot steps between phases: pruning, rewinding);
* ``row(config, outcome)``: the fields it adds to each seed's result row
  (and artifacts it writes);
* ``model_options(config)``: model fields the family sets (hard-concrete
  L0's BatchNorm, the annealing study's initialisation), ``{}`` for most; a
  registered model takes those it has (:mod:`sparsejax.models.registry`);
* ``check_model(config, model)``: what the family asks of the run's model
  (a :class:`~sparsejax.models.ModelAdapter`), by capability
  (``model.require(capability, family)``), run before any compute.

``register_recipe(recipe)`` files it under ``recipe.name``; the runner looks
the method up with :func:`get_recipe` and knows nothing else about it.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Sequence

import ml_collections

from sparsejax.train.driver import Phase, SeedProgram
from sparsejax.train.state import TrainState


class StageInput(NamedTuple):
  """What a stage sees.

  Attributes:
    states: the train states (leading seed axis).
    aux: the recipe's per-seed arrays.
    program: the seeds, data and compile helpers
      (:class:`~sparsejax.train.driver.SeedProgram`).
    initial: the states at initialisation (for rewinding).
    progress: for a stage that checkpoints its progress (:attr:`Stage.progress_like`),
      the progress restored from its last checkpoint, or ``None`` when it starts.
    save_progress: ``progress -> None``: checkpoints the stage's progress beside
      its input; a run stopped later resumes the stage from it.
  """
  states: TrainState
  aux: Any
  program: SeedProgram
  initial: TrainState
  progress: Any = None
  save_progress: Callable[[Any], None] = lambda progress: None


class Stage(NamedTuple):
  """A one-shot step between phases.

  Attributes:
    name: its name (the key stream it draws from, and the key of its
      per-seed record in :class:`Outcome`).
    apply: ``StageInput -> (states, aux, records)`` with ``records`` one
      JSON-ready dict per seed (kept counts, thresholds, ...).
    progress_like: ``None``, or for a long stage that checkpoints its
      progress (``StageInput.save_progress``): ``StageInput -> progress``, the
      structure of that progress (arrays, or their ``jax.eval_shape``), which a
      checkpoint taken inside the stage restores into.
  """
  name: str
  apply: Callable[[StageInput], tuple[TrainState, Any, list[dict]]]
  progress_like: Callable[[StageInput], Any] | None = None


class Plan(NamedTuple):
  """A run of a recipe: its steps in order, and its per-seed arrays.

  Attributes:
    steps: phases and stages, run in order; the first step is a phase with
      an optimiser (it builds the initial state).
    init_aux: ``states -> aux``, the recipe's per-seed arrays carried beside
      the states (leading seed axis; ``{}`` if none). They are checkpointed
      and handed to the stages, hooks and the row function.
    prepare: ``None`` or ``(state, seed) -> state`` (one seed, traceable;
      ``seed`` an int32 scalar), applied to every freshly initialised state
      before training (hard-concrete L0's kernel rescaling, a penalty weight
      per seed); not to a run started from ``init_from``.
  """
  steps: Sequence[Phase | Stage]
  init_aux: Callable[[TrainState], Any] = lambda states: {}
  prepare: Callable[[TrainState, Any], TrainState] | None = None


class Outcome(NamedTuple):
  """One seed's finished run, for the recipe's row function.

  Attributes:
    index: the seed's position in its program (to read per-program events).
    state: the final train state (no seed axis).
    aux: the recipe's arrays of the seed.
    stages: ``{stage name: record}``.
    events: ``{phase name: [event, ...]}`` from the hooks.
    artifacts: the seed's artifacts folder (a recipe may write files there).
    model: the run's :class:`~sparsejax.models.ModelAdapter`.
  """
  index: int
  state: TrainState
  aux: Any
  stages: dict
  events: dict
  artifacts: Any
  model: Any


class Recipe(NamedTuple):
  """A method family (module docstring)."""
  name: str
  defaults: Callable[[], dict]
  validate: Callable[[ml_collections.ConfigDict], None]
  plan: Callable[[ml_collections.ConfigDict, Any], Plan]
  row: Callable[[ml_collections.ConfigDict, Outcome], dict]
  model_options: Callable[[ml_collections.ConfigDict], dict] = lambda config: {}
  check_model: Callable[[ml_collections.ConfigDict, Any], None] = lambda config, model: None


_REGISTRY: dict[str, Recipe] = {}


def register_recipe(recipe: Recipe) -> Recipe:
  """Files ``recipe`` under ``recipe.name`` (a name may be registered once)."""
  if recipe.name in _REGISTRY and _REGISTRY[recipe.name] is not recipe:
    raise ValueError(f"a recipe named {recipe.name!r} is already registered")
  _REGISTRY[recipe.name] = recipe
  return recipe


def get_recipe(name: str) -> Recipe:
  """The recipe registered as ``name``; a :class:`KeyError` lists the known ones."""
  if name not in _REGISTRY:
    raise KeyError(f"unknown method {name!r}; registered: {', '.join(recipe_names())}")
  return _REGISTRY[name]


def recipe_names() -> list[str]:
  """The registered method names, in registration order."""
  return list(_REGISTRY)


def registered() -> list[Recipe]:
  return list(_REGISTRY.values())
