"""The one phase driver: compiled chunks of epochs over a leading seed axis.

Every run trains ``S >= 1`` seeds at once; a single run is ``S = 1`` through
the same compiled program. A :class:`Phase` runs in chunks of
``chunk_epochs`` epochs; one chunk is one compiled call (``jax.jit`` of
``jax.vmap``, or ``lax.map``, over seeds (:func:`map_seeds`) of a
``lax.scan`` over epochs, each epoch a ``lax.scan`` of steps followed by the
validation metrics), and the checks run inside it, vmapped, on the device:

* **convergence**: the saturation test (:mod:`sparsejax.train.convergence`)
  on a fixed-length buffer of the watched curve's latest values, at chunk
  ends past ``check_from`` and ``min_epochs``, and the phase's ``settled``
  rule (PMMP's keep-probabilities);
* **selection**: the best-state rule (:mod:`sparsejax.train.selection`),
  snapshotting each seed's state into the carry where it says so;
* **freezing**: a seed that has converged stops: its updates are masked out
  (``jnp.where(active, new, old)``) while the others go on.

Between chunks the host does only what it must: one transfer of the
``active`` flags to decide whether to go on, the phase's
``between_chunks`` hook (pruning during training, the BMRS criteria), the
progress line (skipped, with its transfer, when quiet) and the ``on_chunk``
callback (checkpoints). The per-epoch curves stay on the device as a list of
chunk arrays until someone asks for them (:meth:`Curves.to_numpy`).

Epoch ``e`` of a phase always uses the key ``fold_in(phase_key, e)``, so a
phase resumed at a chunk boundary continues exactly as an uninterrupted one.
"""

from __future__ import annotations

from functools import partial
from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from sparsejax import masks as masks_lib
from sparsejax.objectives.base import Objective
from sparsejax.sparsity.algorithms import SparseTraining
from sparsejax.train import sharding
from sparsejax.train.convergence import push_tail, tail_length, tail_saturated
from sparsejax.train.loop import make_epoch_fn
from sparsejax.train.selection import Selection
from sparsejax.train.state import TrainState, trainables
from sparsejax.train.step import make_eval_fn, make_train_step, updates_masks


class Convergence(NamedTuple):
  """When a seed's phase has converged: its curve ``curve`` has saturated.

  Attributes:
    curve: the watched per-epoch metric (``"val_loss"`` or ``"loss"``).
    window: the saturation test's smoothing window (epochs).
    deviation: the test's absolute deviation (loss units).
  """
  curve: str
  window: int
  deviation: float


class Phase(NamedTuple):
  """A training phase of a recipe.

  Attributes:
    name: the phase's name: its key stream (:mod:`sparsejax.keys`),
      and the prefix of its fields in the result row (``<name>_epochs``).
    objective: the objective trained (and evaluated) in the phase.
    max_epochs: the most epochs; ``min_epochs``: the fewest before a seed
      may converge.
    chunk_epochs: epochs per compiled call; checks, hooks, progress and
      checkpoints happen between chunks.
    optimizer: ``None`` continues the previous phase's optimiser state;
      otherwise the phase starts a fresh state of this optimiser (a new
      learning rate for finetuning, say).
    convergence: the saturation rule, or ``None`` (exactly ``max_epochs``).
    selection: the best-state rule, or ``None`` (the final state).
    check_from: checks (convergence, selection) happen at chunk ends with
      ``epoch >= check_from``.
    settled: ``state -> bool`` (traceable, one seed), a further condition
      for convergence and for the selection's turning points; ``None``:
      always settled.
    between_chunks: host hook ``(carry, ctx) -> carry`` after each chunk's
      checks (:class:`ChunkContext`); it may change the states (masks
      included: they are part of the state, so nothing recompiles).
    sparse: a sparse-training algorithm (:mod:`sparsejax.sparsity.algorithms`)
      that updates the masks inside the steps, its schedule counted in the
      phase's steps; ``None``: the masks stay as the phase found them.
  """
  name: str
  objective: Objective
  max_epochs: int
  chunk_epochs: int
  min_epochs: int = 0
  optimizer: optax.GradientTransformation | None = None
  convergence: Convergence | None = None
  selection: Selection | None = None
  check_from: int = 0
  settled: Callable[[TrainState], jax.Array] | None = None
  between_chunks: Callable[["PhaseCarry", "ChunkContext"], "PhaseCarry"] | None = None
  sparse: SparseTraining | None = None


class PhaseCarry(NamedTuple):
  """Everything a phase carries between chunks; every leaf has the leading seed axis.

  Attributes:
    states: the train states.
    aux: the recipe's own per-seed arrays (BMRS's unit masks), ``{}`` if none.
    active: seeds still training.
    trained: seeds that trained in the last chunk (active at its start).
    epochs: epochs each seed has trained in this phase.
    converged: seeds that stopped by convergence.
    tail, count: the convergence curve's latest values and its length.
    selection: the selection rule's per-seed state (``()`` without a rule).
    snapshot: the selected states (the states themselves until a snapshot).
    last: the metrics of each seed's last trained epoch.
    diverged: seeds stopped by a non-finite value (in this phase or before);
      their states are the last finite ones.
    diverged_epoch: the phase epoch of the first non-finite value.
    diverged_what: what was non-finite: an index into the sorted metric
      names, or their count for the parameters (:func:`quantity_names`).
  """
  states: TrainState
  aux: Any
  active: jax.Array
  trained: jax.Array
  epochs: jax.Array
  converged: jax.Array
  tail: jax.Array
  count: jax.Array
  selection: Any
  snapshot: TrainState
  last: dict
  diverged: jax.Array
  diverged_epoch: jax.Array
  diverged_what: jax.Array


def quantity_names(carry: PhaseCarry) -> list[str]:
  """The names ``diverged_what`` indexes: the metrics (sorted), then ``"parameters"``."""
  return sorted(carry.last) + ["parameters"]


class ChunkContext(NamedTuple):
  """What a ``between_chunks`` hook sees besides the carry.

  Attributes:
    program: the :class:`SeedProgram` (seeds, data, ``vmap``, keys).
    phase: the phase.
    epoch: the phase's epoch count after the chunk (host integer).
    events: a list the hook may append JSON-ready records to (``{"epoch":
      e, "name": ..., per-seed lists...}``), kept in the checkpoint and handed
      to the recipe's row function.
    curves: the phase's curves; :meth:`Curves.record` adds a per-seed value
      at the chunk's last epoch.
  """
  program: "SeedProgram"
  phase: Phase
  epoch: int
  events: list
  curves: "Curves"


#: How a program runs its seeds: vectorised (``jax.vmap``) or one after another (``lax.map``).
SEED_LOOPS = ("vmap", "map")


def map_seeds(fn: Callable, in_axes, size: int, loop: str = "vmap",
              mesh: jax.sharding.Mesh | None = None) -> Callable:
  """``fn`` over the leading seed axis of ``size`` seeds, inside one program.

  ``loop="vmap"`` vectorises the seeds (``jax.vmap(fn, in_axes)``): the
  seeds' matrix products become batched ones, which is what makes sweeps of
  MLPs cheap. ``loop="map"`` runs them one after another in the same
  compiled program (``lax.map``), each seed through the unbatched ``fn``:
  vmapped per-seed convolution kernels become one grouped convolution
  (``feature_group_count = size``), which XLA's CPU backend runs, with its
  gradients, more slowly than the seeds' convolutions one at a time
  (``benchmarks/seed_sweeps.py``).

  For one seed it is ``fn`` itself on the arguments without their seed axis
  (the axis is put back on the outputs): XLA rounds a vmapped axis of size
  one differently from the plain program (by about 1e-17 per step in
  float64, which thousands of epochs amplify), so this way a single run
  reproduces the arithmetic of the per-seed program bit for bit. Each seed
  of a ``"map"`` program runs the one-seed ``fn`` too (in float64 its rows
  equal its single run's to 1e-12, ``tests/test_sweep.py``).

  Args:
    fn: the one-seed function.
    in_axes: 0 (an argument with the seed axis) or ``None`` (shared), per
      positional argument or one for all, as ``jax.vmap`` takes it.
    size: the number of seeds.
    loop: one of :data:`SEED_LOOPS`.
    mesh: ``None``, or a ``data`` mesh (:func:`sharding.data_mesh`) whose
      device count divides ``size``: each device runs ``loop`` over its own
      share of the seeds (``jax.shard_map``; the seed-axis arguments split
      over ``data``, the shared ones replicated). On a CPU, whose devices
      are its cores (:mod:`sparsejax.xla_flags`), seeds run one after another
      on each core, side by side: a program of small sequential operations
      (the annealing search's moves) then uses every core.
  """
  if loop not in SEED_LOOPS:
    raise ValueError(f"loop must be one of {SEED_LOOPS}, got {loop!r}")
  devices = 1 if mesh is None else mesh.shape[sharding.DATA_AXIS]
  if devices > 1:
    if size % devices:
      raise ValueError(f"{size} seeds do not split over {devices} devices")
    return sharding.split_seeds(map_seeds(fn, in_axes, size // devices, loop), in_axes, mesh)
  if size > 1 and loop == "vmap":
    return jax.vmap(fn, in_axes=in_axes)

  def single(*args):
    squeezed = [arg if axis is None else jax.tree.map(lambda x: x[0], arg)
                for arg, axis in zip(args, sharding.argument_axes(in_axes, len(args)))]
    return jax.tree.map(lambda x: x[None], fn(*squeezed))

  def looped(*args):
    mapped = [i for i, axis in enumerate(sharding.argument_axes(in_axes, len(args)))
              if axis is not None]

    def one(seed_args):
      full = list(args)
      for i, arg in zip(mapped, seed_args):
        full[i] = arg
      return fn(*full)
    return jax.lax.map(one, tuple(args[i] for i in mapped))
  return single if size == 1 else looped


class SeedProgram:
  """The seeds of one compiled program, their data, and helpers to compile for them.

  Attributes:
    seed_loop: how the compiled functions run the seeds (:func:`map_seeds`).
    seeds: the seeds (host array).
    data: the :class:`~sparsejax.data.Splits`; with ``data_axis = 0`` every
      array has a leading seed axis (teacher-student data are drawn per
      seed), with ``None`` they are shared.
    model, task: the model and its task.
  """

  def __init__(self, seeds: Sequence[int], data, data_axis: int | None, model, task, *,
               train_batch_size: int, eval_batch_size: int,
               layout: sharding.Layout | None = None, seed_loop: str = "vmap"):
    self.seeds = np.asarray(seeds)
    self.seed_loop = seed_loop
    self.layout = layout
    self.data_axis = data_axis
    # On the devices once: the compiled chunks take the data as an argument.
    self.data = jax.device_put(data) if layout is None else layout.place_data(data, data_axis)
    self.model, self.task = model, task
    self.eval_batch_size = eval_batch_size
    n_train = data.train[0].shape[1 if data_axis == 0 else 0]
    self.train_batch_size = train_batch_size or n_train
    self._compiled: dict[Any, Callable] = {}

  @property
  def size(self) -> int:
    return len(self.seeds)

  def place(self, tree):
    """Puts a tree with a leading seed axis on the program's devices (as it is without a layout)."""
    return tree if self.layout is None else self.layout.place(tree)

  @property
  def batch_constraint(self):
    """The constraint that splits each batch over the devices, or ``None``."""
    return None if self.layout is None else self.layout.batch_constraint()

  def over_seeds(self, fn: Callable, *, with_data: bool = True) -> Callable:
    """``fn`` compiled over the seeds (:func:`map_seeds`, ``seed_loop``), cached per ``fn``.

    With ``with_data`` the last positional argument is the program's data
    (or a part of it), mapped on ``data_axis``; every other argument has the
    leading seed axis.
    """
    key = ("over_seeds", fn, with_data)
    if key not in self._compiled:
      def batched(*args):
        in_axes = (0,) * (len(args) - 1) + ((self.data_axis,) if with_data else (0,))
        return map_seeds(fn, in_axes, self.size, self.seed_loop)(*args)
      self._compiled[key] = jax.jit(batched)
    return self._compiled[key]

  def per_seed_data(self, index: int):
    """Seed ``index``'s data (the shared data when they are shared)."""
    if self.data_axis is None:
      return self.data
    return jax.tree.map(lambda x: x[index], self.data)

  def evaluate(self, objective: Objective, states: TrainState, split: str) -> dict[str, np.ndarray]:
    """Metrics of every seed's state on a split: ``{name: (seeds,)}``."""
    key = ("evaluate", objective)
    if key not in self._compiled:
      evaluate = make_eval_fn(self.model, self.task, objective, self.eval_batch_size, jit=False,
                              batch_constraint=self.batch_constraint)
      self._compiled[key] = self.over_seeds(lambda state, data: evaluate(state, *data))
    return jax.device_get(self._compiled[key](states, getattr(self.data, split)))


def per_seed(tree, index: int):
  """Seed ``index``'s slice of a tree with a leading seed axis."""
  return jax.tree.map(lambda x: x[index], tree)


def stack_seeds(trees: Sequence[Any]):
  """The inverse of :func:`per_seed`: a leading seed axis over ``trees``."""
  return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


def where_seeds(mask: jax.Array, new, old):
  """Per seed: ``new`` where ``mask`` else ``old`` (leading seed axis)."""
  def pick(a, b):
    return jnp.where(mask.reshape(mask.shape + (1,) * (a.ndim - 1)), a, b)
  return jax.tree.map(pick, new, old)


class Curves:
  """A phase's per-epoch metrics: chunk arrays ``(seeds, n)`` kept where they were made.

  Chunks stay on the device until :meth:`to_numpy`; a seed's curve is the
  first ``epochs[i]`` values (a frozen seed's later values are discarded).
  """

  def __init__(self, restored: dict[str, np.ndarray] | None = None):
    self._chunks: list[dict[str, Any]] = [restored] if restored else []

  def append(self, metrics: dict[str, Any]) -> None:
    self._chunks.append(dict(metrics))

  def record(self, name: str, values) -> None:
    """Adds ``values`` ``(seeds,)`` as curve ``name`` at the last chunk's last epoch
    (its earlier epochs are NaN)."""
    chunk = self._chunks[-1]
    seeds, width = next(iter(chunk.values())).shape
    column = np.full((seeds, width), np.nan)
    column[:, -1] = np.asarray(values, np.float64)
    chunk[name] = column

  def to_numpy(self) -> dict[str, np.ndarray]:
    """``{name: (seeds, epochs so far)}`` float64 arrays (one transfer)."""
    if not self._chunks:
      return {}
    chunks = jax.device_get(self._chunks)
    names = sorted({name for chunk in chunks for name in chunk})
    seeds = next(iter(chunks[0].values())).shape[0]
    out = {}
    for name in names:
      parts = []
      for chunk in chunks:
        width = next(iter(chunk.values())).shape[1]
        value = chunk.get(name)
        parts.append(np.full((seeds, width), np.nan) if value is None
                     else np.asarray(value, np.float64))
      out[name] = np.concatenate(parts, axis=1)
    self._chunks = [out]
    return out


def start_states(states: TrainState, phase: Phase) -> TrainState:
  """The states at the start of ``phase``: a fresh optimiser state if it has its own."""
  if phase.optimizer is None:
    return states
  return states._replace(opt_state=jax.vmap(
      lambda s: phase.optimizer.init(trainables(s.params, s.objective_state)))(states))


def init_carry(program: SeedProgram, phase: Phase, states: TrainState, aux,
               optimizer: optax.GradientTransformation, diverged=None) -> PhaseCarry:
  """The carry of a phase's first chunk (``states`` already from :func:`start_states`).

  ``diverged`` (host booleans per seed) marks seeds that diverged in an
  earlier phase: they do not train again.
  """
  n = program.size
  diverged = jnp.zeros(n, bool) if diverged is None else jnp.asarray(diverged, bool)
  dtype = jax.tree.leaves(states.params)[0].dtype
  length = tail_length(phase.convergence.window) if phase.convergence else 1
  selection = (jax.vmap(lambda _: phase.selection.init(dtype))(jnp.arange(n))
               if phase.selection else ())
  carry = PhaseCarry(
      states=states, aux=aux, active=~diverged, trained=~diverged,
      epochs=jnp.zeros(n, jnp.int32), converged=jnp.zeros(n, bool),
      tail=jnp.zeros((n, length), dtype), count=jnp.zeros(n, jnp.int32),
      selection=selection, snapshot=states, last=None, diverged=diverged,
      diverged_epoch=jnp.zeros(n, jnp.int32), diverged_what=jnp.zeros(n, jnp.int32))
  # The last-epoch metrics have the names and dtypes one epoch returns.
  chunk = _chunk_fn(program, phase._replace(optimizer=optimizer), 1)
  keys = jax.vmap(jax.random.key)(jnp.arange(n))
  shapes = jax.eval_shape(chunk, carry, keys, 0, program.data)[1]
  # Every leaf on the program's devices: a fresh optimiser state from
  # ``start_states`` is on the default device, and a checkpoint restored into
  # this carry as a template must not pin it there.
  return program.place(
      carry._replace(last={name: jnp.zeros(s.shape[:1], s.dtype) for name, s in shapes.items()}))


def _chunk_fn(program: SeedProgram, phase: Phase, n_epochs: int) -> Callable:
  """The compiled chunk ``(carry, phase_keys, first_epoch, data) -> (carry, metrics)``.

  The data is an argument, not a closure: closed over, the training set would be
  folded into the compiled program as a constant.
  """
  cache_key = ("chunk", phase, n_epochs)
  if cache_key in program._compiled:
    return program._compiled[cache_key]
  constraint = program.batch_constraint
  step = make_train_step(program.model, program.task, phase.objective, phase.optimizer, jit=False,
                         batch_constraint=constraint, sparse=phase.sparse)
  epoch_fn = make_epoch_fn(
      step, program.train_batch_size, jit=False,
      update_steps=None if phase.sparse is None else partial(updates_masks, phase.sparse))
  evaluate = make_eval_fn(program.model, program.task, phase.objective, program.eval_batch_size,
                          jit=False, batch_constraint=constraint)
  axis = program.data_axis

  def one_seed(state, active, data, key, first_epoch):
    def body(state, epoch):
      new, metrics = epoch_fn(state, data.train, jax.random.fold_in(key, epoch),
                              None if phase.sparse is None else epoch)
      metrics.update({f"val_{k}": v for k, v in evaluate(new, *data.val).items()})
      return jax.tree.map(lambda a, b: jnp.where(active, a, b), new, state), metrics
    return jax.lax.scan(body, state, first_epoch + jnp.arange(n_epochs))

  def chunk(carry: PhaseCarry, keys, first_epoch, data):
    states, metrics = map_seeds(one_seed, (0, 0, axis, 0, None), program.size, program.seed_loop)(
        carry.states, carry.active, data, keys, first_epoch)
    return _checks(phase, carry, states, metrics, first_epoch, n_epochs), metrics

  program._compiled[cache_key] = jax.jit(chunk)
  return program._compiled[cache_key]


def _all_finite(state: TrainState) -> jax.Array:
  """Whether every floating-point entry of one seed's state is finite."""
  leaves = [x for x in jax.tree.leaves((state.params, state.objective_state, state.opt_state))
            if jnp.issubdtype(x.dtype, jnp.floating)]
  return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves]))


def _checks(phase: Phase, carry: PhaseCarry, states: TrainState, metrics: dict, first_epoch,
            n_epochs: int) -> PhaseCarry:
  """The checks after a chunk, for every seed at once (traced).

  First the guard: a seed with a non-finite metric in the chunk or a
  non-finite entry in its state keeps its state from before the chunk and
  stops (``diverged``), so no later check, snapshot or checkpoint sees a
  non-finite value. Then, for the others, convergence and selection.
  """
  end = first_epoch + n_epochs
  names = sorted(metrics)
  finite_epochs = jnp.stack([jnp.isfinite(metrics[name]) for name in names])  # (M, S, n)
  metric_finite = jnp.all(finite_epochs, axis=2)  # (M, S)
  finite = jnp.all(metric_finite, axis=0) & jax.vmap(_all_finite)(states)
  bad = carry.active & ~finite
  first_bad = jnp.argmin(jnp.all(finite_epochs, axis=0), axis=1)  # first epoch of a bad metric
  bad_epoch = jnp.where(jnp.all(metric_finite, axis=0), end, first_epoch + first_bad + 1)
  what = jnp.where(jnp.all(metric_finite, axis=0), len(names), jnp.argmin(metric_finite, axis=0))
  states = where_seeds(bad, carry.states, states)
  active = carry.active & finite
  last = {name: values[:, -1] for name, values in metrics.items()}
  if carry.last is not None:
    last = where_seeds(active, last, carry.last)
  check = end >= phase.check_from
  settled = (jax.vmap(phase.settled)(states) if phase.settled is not None
             else jnp.ones_like(active))
  tail, count, converged = carry.tail, carry.count, carry.converged
  if phase.convergence is not None:
    c = phase.convergence
    tail, count = where_seeds(active, jax.vmap(push_tail)(tail, count, metrics[c.curve]),
                              (tail, count))
    saturated = jax.vmap(lambda t, k: tail_saturated(t, k, c.window, c.deviation))(tail, count)
    converged = converged | (active & check & (end >= phase.min_epochs) & settled & saturated)
  selection, snapshot = carry.selection, carry.snapshot
  if phase.selection is not None:
    new_selection, take = jax.vmap(phase.selection.update)(selection, last, settled)
    update = active & check
    selection = where_seeds(update, new_selection, selection)
    snapshot = where_seeds(update & take, states, snapshot)
  return carry._replace(
      states=states, trained=active, active=active & ~converged,
      epochs=jnp.where(active, end, carry.epochs), converged=converged, tail=tail, count=count,
      selection=selection, snapshot=snapshot, last=last, diverged=carry.diverged | bad,
      diverged_epoch=jnp.where(bad, bad_epoch, carry.diverged_epoch),
      diverged_what=jnp.where(bad, what, carry.diverged_what))


def readout(program: SeedProgram, objective: Objective, states: TrainState) -> TrainState:
  """Every seed's sparse result through ``objective.readout``.

  The objective's deterministic ``(params, masks)`` replace the state's (its
  masks intersected with the state's, so nothing pruned comes back, and
  leaves that are never pruned stay ``None``); an objective that prunes
  nothing itself (``masks is None``) leaves the masks.
  """
  def one(state: TrainState) -> TrainState:
    params, masks = objective.readout(state.params, state.objective_state)
    if masks is None:
      return state._replace(params=params)
    masks = masks_lib.map_masked(lambda m, r: None if m is None else m & r, state.masks, masks)
    return state._replace(params=masks_lib.apply(masks, params), masks=masks)
  return program.over_seeds(one, with_data=False)(states)


class PhaseResult(NamedTuple):
  """A finished phase: the carry (states selected) and per-seed outcomes (host arrays).

  ``diverged`` holds, per seed, ``None`` or ``(epoch, quantity)`` of its first
  non-finite value (for a seed that diverged in an earlier phase, not
  meaningful: the caller keeps the first record).
  """
  carry: PhaseCarry
  epochs: np.ndarray
  converged: np.ndarray
  returned_best_state: np.ndarray
  diverged: list


def run_phase(program: SeedProgram, phase: Phase, carry: PhaseCarry, phase_keys: jax.Array, *,
              optimizer: optax.GradientTransformation, start_epoch: int, curves: Curves,
              events: list, any_active: bool = True,
              on_chunk: Callable[[PhaseCarry, int], None] | None = None,
              progress: Callable[[PhaseCarry, int], None] | None = None) -> PhaseResult:
  """Runs ``phase`` from ``start_epoch`` until every seed has converged or ``max_epochs``.

  Args:
    program: the seeds and their data.
    phase: the phase.
    carry: its carry (from :func:`init_carry` or a checkpoint).
    phase_keys: each seed's key of the phase (epoch ``e`` folds in ``e``).
    optimizer: the optimiser the phase trains with (``phase.optimizer`` or
      the one the states' optimiser state belongs to).
    start_epoch: where the phase picks up.
    curves, events: the phase's curves and hook events so far (appended to).
    any_active: whether any seed is still active (``False`` when resuming a
      phase whose seeds had all converged).
    on_chunk: ``(carry, epoch)`` after each chunk (checkpoints).
    progress: ``(carry, epoch)`` after each chunk (the progress line).

  Returns:
    The :class:`PhaseResult`; the states of seeds whose selection says so
    are replaced by their snapshots.
  """
  phase = phase._replace(optimizer=optimizer)
  epoch = start_epoch
  while any_active and epoch < phase.max_epochs:
    n = min(phase.chunk_epochs, phase.max_epochs - epoch)
    carry, metrics = _chunk_fn(program, phase, n)(carry, phase_keys, epoch, program.data)
    curves.append(metrics)
    epoch += n
    if phase.between_chunks is not None:
      carry = phase.between_chunks(carry, ChunkContext(program, phase, epoch, events, curves))
    if progress is not None:
      progress(carry, epoch)
    any_active = bool(jax.device_get(jnp.any(carry.active)))
    if on_chunk is not None:
      on_chunk(carry, epoch)
  use = np.zeros(program.size, bool)
  if phase.selection is not None:
    restore = jax.vmap(phase.selection.restore)(carry.selection, carry.last) & (carry.epochs > 0)
    use = np.asarray(jax.device_get(restore))
    carry = carry._replace(states=where_seeds(jnp.asarray(use), carry.snapshot, carry.states))
  epochs, converged, flags, at, what = jax.device_get(
      (carry.epochs, carry.converged, carry.diverged, carry.diverged_epoch, carry.diverged_what))
  names = quantity_names(carry)
  diverged = [(int(e), names[int(w)]) if f else None for f, e, w in zip(flags, at, what)]
  return PhaseResult(carry, np.asarray(epochs), np.asarray(converged), use, diverged)
