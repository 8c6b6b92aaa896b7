"""The one entry of every run: ``run(config, workdir)``.

A run is a pure function of its config and seed. ``run`` takes this task's
seeds (``seed .. seed + seeds - 1``, or its SLURM sub-batch), skips those
whose rows are already in ``runs.csv``, and runs the rest in programs of
``sweep.chunk_size`` seeds. A program is the method's recipe
(:mod:`sparsejax.recipes`) played by the one phase driver
(:mod:`sparsejax.train.driver`) over a leading seed axis: one seed and many
seeds are the same compiled code.

Resume: the program's carry (states, the recipe's arrays, the phase's
checks), its curves and records are checkpointed (orbax) every
``checkpoint_every_epochs`` epochs at chunk boundaries and after every step
of the plan, under ``checkpoints/<first run id>+<seeds>``; re-running the
same command continues from the latest checkpoint and ends with the result
of an uninterrupted run. Epoch ``e`` of a phase uses the key
``fold_in(phase key, e)`` and every other key comes from
:mod:`sparsejax.keys`, so nothing depends on where a run was
interrupted.

When a program finishes, every seed gets its row in ``runs.csv``, its
artifacts and its final state (``checkpoints/<run id>/``, which
:func:`sparsejax.runner.load_run` reloads), written by
:mod:`sparsejax.runner.records`; the program's working checkpoints are then
removed.
"""

from __future__ import annotations

import copy
import pathlib
import shutil
import time
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from sparsejax import checkpoint as checkpoint_lib
from sparsejax import keys
from sparsejax import masks as masks_lib
from sparsejax import results
from sparsejax.fields import ConfigError
from sparsejax.recipes import Plan, Recipe, Stage, StageInput, get_recipe
from sparsejax.runner import build as build_lib
from sparsejax.runner import errors, hosts, locks, records
from sparsejax.runner.config import validate
from sparsejax.runner.progress import Progress
from sparsejax.train import driver, sharding
from sparsejax.train.state import TrainState, create_train_state, trainables


def sweep_seeds(config: ml_collections.ConfigDict) -> list[int]:
  """This task's seeds: its ``sweep.sub_batch`` of ``sweep.num_sub_batches`` parts."""
  seeds = np.arange(config.seed, config.seed + config.seeds)
  return [int(s) for s in np.array_split(seeds, config.sweep.num_sub_batches)[config.sweep.sub_batch]]


def seed_config(config: ml_collections.ConfigDict, seed: int) -> ml_collections.ConfigDict:
  """The single-run config of one seed (the row a single run of it writes)."""
  single = copy.deepcopy(config)
  single.seed = seed
  single.seeds = 1
  single.sweep.num_sub_batches = 1
  single.sweep.sub_batch = 0
  return single


def run(config: ml_collections.ConfigDict, workdir: str | pathlib.Path) -> list[dict[str, Any]]:
  """Runs (or resumes, or skips if finished) this task's seeds of ``config`` in ``workdir``.

  A finished seed whose final state is damaged or missing is skipped with a
  warning that says how to recompute it (its row stays).

  Returns:
    The ``runs.csv`` rows of the task's seeds, in seed order.
  """
  validate(config)
  workdir = pathlib.Path(workdir)
  records.check_writable(workdir)
  progress = Progress(quiet=config.quiet or not hosts.is_writer(), warnings=hosts.is_writer())
  seeds = sweep_seeds(config)
  if config.init_from:
    init_from_runs(config.init_from, seeds)
  ids = {seed: records.run_id_of(seed_config(config, seed)) for seed in seeds}
  todo = [seed for seed in seeds if ids[seed] not in records.finished_rows(workdir, ids.values())]
  with hosts.writer_only(locks.hold(workdir, [ids[seed] for seed in todo])):
    finished = records.finished_rows(workdir, ids.values())  # others may have finished some
    todo = [seed for seed in seeds if ids[seed] not in finished]
    if len(todo) < len(seeds):
      progress.log(f"{len(seeds) - len(todo)} of {len(seeds)} seeds have been run before; "
                   f"their rows are in {workdir}/runs.csv")
      from sparsejax.runner.reload import final_state_problems  # reload imports this module
      for problem in final_state_problems(workdir, [ids[s] for s in seeds if s not in todo]):
        progress.warn(problem)
    with jax.enable_x64(config.dtype == "float64"):
      for start in range(0, len(todo), config.sweep.chunk_size):
        program_seeds = todo[start:start + config.sweep.chunk_size]
        for row in run_program(config, workdir, program_seeds, progress):
          finished[row["run_id"]] = row
  rows = [finished[ids[seed]] for seed in seeds]
  if hosts.is_writer():
    records.print_summary(config, workdir, rows)
  diverged = [records.diverged_line(row) for row in rows if row.get("status") == "diverged"]
  collapsed = [records.collapsed_line(row) for row in rows if row.get("status") == "collapsed"]
  if len(diverged) == len(rows):
    raise errors.Diverged("; ".join(diverged) + f" (the last finite state is in "
                          f"{workdir}/checkpoints/<run id>; its row in runs.csv is marked "
                          "status=diverged)")
  if len(diverged) + len(collapsed) == len(rows):
    raise errors.Collapsed("; ".join(diverged + collapsed) + f" (the rows in {workdir}/runs.csv "
                           "are marked status=collapsed; try a smaller lr or a weaker penalty)")
  for line in diverged + collapsed:
    progress.warn(line)
  return rows


def layout_of(config, parts, n_seeds: int, seed_loop: str):
  """The devices' layout of ``config.parallel``.

  ``"auto"`` is ``"data"`` for a run over several processes, and on
  accelerators for shared data; ``"seeds"`` for per-seed data
  (teacher-student). On a CPU backend, whose devices are its cores
  (:mod:`sparsejax.xla_flags`), it is ``"seeds"``: the seeds of a vmapped
  sweep (``seed_loop`` ``"vmap"``) go one group per core, and a single seed
  or seeds run one after another (``"map"``) stay on one device, whose
  operations use every core (a batch split over the cores would change the
  order of the gradient's sums and ask for batches the cores divide).

  Raises:
    ConfigError: with ``"data"``, a training or evaluation batch that the
      device count does not divide (before any compute).
  """
  kind, devices = config.parallel, None
  if kind == "auto":
    if hosts.several() or (parts.data_axis is None and jax.default_backend() != "cpu"):
      kind = "data"
    else:
      kind = "seeds"
      if parts.data_axis is None and seed_loop != "vmap":
        devices = jax.local_devices()[:1]
  if kind == "seeds" and hosts.several():
    raise ConfigError(
        f"config field 'parallel' is 'seeds': seed sharding runs within one process, and this "
        f"run has {jax.process_count()}; use parallel='data', or split the seeds over "
        "separate jobs with sweep.num_sub_batches")
  layout = sharding.layout_for(kind, n_seeds, devices)
  if kind == "data":
    sizes = [parts.split_size(split) for split in ("train", "val", "test")]
    batches = [("train_batch_size", min(config.train_batch_size or sizes[0], sizes[0]))]
    batches += [("eval_batch_size", min(config.eval_batch_size, n)) for n in sizes]
    for name, size in batches:
      if size % layout.devices:
        raise ConfigError(
            f"config field {name!r} gives batches of {size}; with parallel='data' over "
            f"{layout.devices} devices it must be a multiple of {layout.devices} (or set "
            "parallel='seeds')")
  return layout


def seed_loop_of(config, model, sample) -> str:
  """``config.sweep.seed_loop`` with ``"auto"`` resolved (:func:`sparsejax.train.driver.map_seeds`).

  ``"auto"`` is ``"map"`` (seeds one after another inside the program) on a
  CPU backend for a model with a 2-D convolution (a 4-D kernel), whose
  vmapped kernels XLA:CPU runs as a grouped convolution more slowly (a
  3-seed BMRS LeNet-5 epoch: 84 s vmapped, 41 s mapped;
  ``benchmarks/seed_sweeps.py``, ``docs/benchmarks.md``), and
  ``"vmap"`` otherwise. Checked on shapes alone (``jax.eval_shape``).
  """
  if config.sweep.seed_loop != "auto":
    return config.sweep.seed_loop
  if jax.default_backend() != "cpu":
    return "vmap"
  params, _ = jax.eval_shape(lambda x: model.init(jax.random.key(0), x), sample)
  has_conv = any(leaf.ndim == 4 for leaf in jax.tree.leaves(params))
  return "map" if has_conv else "vmap"


class Program:
  """One program of seeds: its parts, plan, checkpoints and records (host orchestration).

  Without a ``workdir`` it only builds (for reloading a finished run).
  """

  def __init__(self, config, seeds: Sequence[int], progress: Progress | None = None,
               workdir: pathlib.Path | None = None):
    self.config, self.seeds = config, list(seeds)
    self.progress = progress or Progress(quiet=True)
    self.workdir = workdir
    self.recipe: Recipe = get_recipe(config.method)
    self.parts = build_lib.build(config, seeds)
    seed_loop = seed_loop_of(config, self.parts.model, self.sample_input())
    self.program = driver.SeedProgram(
        seeds, self.parts.data, self.parts.data_axis, self.parts.model, self.parts.task,
        train_batch_size=config.train_batch_size, eval_batch_size=config.eval_batch_size,
        layout=layout_of(config, self.parts, len(self.seeds), seed_loop), seed_loop=seed_loop)
    self.plan: Plan = self.recipe.plan(config, self.parts)
    first = self.plan.steps[0]
    if not isinstance(first, driver.Phase) or first.optimizer is None:
      raise ValueError(f"recipe {self.recipe.name!r}: the first step must be a phase with an "
                       "optimizer")
    if workdir is not None:
      first_id = records.run_id_of(seed_config(config, seeds[0]))
      self.checkpointer = checkpoint_lib.Checkpointer(
          workdir / "checkpoints" / f"{first_id}+{len(seeds)}", max_to_keep=2)
    self.meta: dict[str, Any] = {"step": 0, "epoch": 0, "any_active": True, "events": {},
                                 "stages": {}, "phases": {}, "wall_time_s": 0.0, "saves": 0,
                                 "diverged": [None] * len(self.seeds)}
    self.curves: dict[str, driver.Curves] = {}
    self._last_saved_epoch = 0

  # -- states -----------------------------------------------------------------------------------

  def sample_input(self) -> jax.Array:
    """One training input with a batch axis of one (what initialises the model)."""
    x = self.parts.data.train.x
    return x[0, :1] if self.parts.data_axis == 0 else x[:1]

  def initial_states(self) -> TrainState:
    """Every seed's state at initialisation (a pure function of the seeds)."""
    first = self.plan.steps[0]
    model, prunable = self.parts.model, self.parts.prunable
    sample = self.sample_input()
    init = jax.jit(driver.map_seeds(lambda key: create_train_state(
        key, model, sample, first.objective, first.optimizer, prunable=prunable), 0,
        len(self.seeds)))
    model_keys = jax.vmap(keys.model_key)(jnp.asarray(self.seeds))
    states = self.program.place(init(model_keys))
    if not self.config.init_from:
      if self.plan.prepare is None:
        return states
      return jax.jit(driver.map_seeds(self.plan.prepare, 0, len(self.seeds)))(
          states, jnp.asarray(self.seeds, jnp.int32))
    params, model_state = self.program.place(pretrained(self.config.init_from, self.seeds,
                                                        records.per_seed(states, 0)))

    def start_from(state, params, model_state, key):
      objective_state = first.objective.init(jax.random.split(key)[1], params)
      return state._replace(
          params=params, model_state=model_state, objective_state=objective_state,
          opt_state=first.optimizer.init(trainables(params, objective_state)))
    return jax.jit(driver.map_seeds(start_from, 0, len(self.seeds)))(
        states, params, model_state, model_keys)

  def optimizer_before(self, index: int):
    """The optimiser in effect at step ``index`` (the last phase's own before it)."""
    optimizer = None
    for step in self.plan.steps[:index + 1]:
      if isinstance(step, driver.Phase) and step.optimizer is not None:
        optimizer = step.optimizer
    return optimizer

  def final_template(self) -> TrainState:
    """The shape of a seed's final state."""
    states = self.template(len(self.plan.steps) - 1, self.initial_states(), False)["states"]
    return records.per_seed(states, 0)

  def last_phase(self) -> driver.Phase:
    return [s for s in self.plan.steps if isinstance(s, driver.Phase)][-1]

  def template(self, index: int, initial: TrainState, in_phase: bool, in_stage: bool = False):
    """The shape of what the checkpoint at step ``index`` holds, placed on the
    program's devices (a checkpoint restores into the template's shardings);
    ``in_stage``: taken inside the stage at ``index``, with its progress."""
    states = initial
    for step in self.plan.steps[:index + 1]:
      if isinstance(step, driver.Phase):
        states = driver.start_states(states, step)
    aux = self.plan.init_aux(initial)
    if in_phase:
      phase = self.plan.steps[index]
      return driver.init_carry(self.program, phase, states, aux, self.optimizer_before(index))
    content = self.program.place({"states": states, "aux": aux})
    if in_stage:
      content["progress"] = self.plan.steps[index].progress_like(
          StageInput(content["states"], content["aux"], self.program, initial))
    return content

  # -- checkpoints ------------------------------------------------------------------------------

  def _arrays(self) -> dict:
    return {name: curves.to_numpy() for name, curves in self.curves.items()}

  def save(self, content) -> None:
    self.meta["saves"] += 1
    self.meta["wall_time_s"] = self._offset + time.monotonic() - self._start
    self.checkpointer.save(self.meta["saves"], content, dict(self.meta), arrays=self._arrays())

  def restore_or_init(self):
    """``(index, content, initial)``: where to start and what to start from.

    The newest intact checkpoint is restored; a damaged one (unreadable, or
    failing its checksum) is reported, removed, and the one before it tried;
    with none intact the program starts over. An intact one that another
    version of the code wrote (its state has other leaves) stops the run with
    :class:`~sparsejax.runner.errors.IncompatibleCheckpoint` and is kept.
    """
    self._start, self._offset = time.monotonic(), 0.0
    initial = self.initial_states()
    fresh = 0, {"states": initial, "aux": self.plan.init_aux(initial)}, initial
    damaged = False
    for step in reversed(self.checkpointer.all_steps()):
      try:
        meta = self.checkpointer.restore_meta(step)
        index, in_phase = meta["step"], meta["epoch"] > 0
        in_stage = meta.get("in_stage", False)
        content, meta, arrays = self.checkpointer.restore(
            step, like=self.template(index, initial, in_phase, in_stage), with_arrays=True)
      except checkpoint_lib.CheckpointDamaged as error:
        self.progress.warn(f"{error}; it is removed and an older checkpoint is tried")
        self.checkpointer.delete(step)
        damaged = True
        continue
      except checkpoint_lib.CheckpointIncompatible as error:
        raise errors.IncompatibleCheckpoint(
            f"{error}. It is left as it is: resume the run with the version that wrote it, "
            f"or move {self.checkpointer.directory} away to start the run over") from None
      self.meta = meta
      self._offset = float(meta["wall_time_s"])
      self.curves = {name: driver.Curves(phase_arrays) for name, phase_arrays in arrays.items()}
      where = ("the end" if index >= len(self.plan.steps) else
               f"inside {self._step_name(index)}" if in_stage else
               f"{self._step_name(index)} epoch {meta['epoch']}")
      self.progress.log(f"resuming seeds {self.seeds[0]}..{self.seeds[-1]} from checkpoint "
                        f"{meta['saves']} ({where})")
      return index, content, initial
    if damaged:
      self.progress.warn(f"no intact checkpoint left in {self.checkpointer.directory}; the "
                         f"seeds {self.seeds[0]}..{self.seeds[-1]} start over")
    return fresh

  def _step_name(self, index: int) -> str:
    return self.plan.steps[index].name

  # -- the plan ---------------------------------------------------------------------------------

  def run(self) -> list[dict[str, Any]]:
    index, content, initial = self.restore_or_init()
    steps = self.plan.steps
    while index < len(steps):
      step = steps[index]
      if isinstance(step, driver.Phase):
        states, aux = self._run_phase(index, step, content)
      else:
        states, aux = self._run_stage(index, step, content, initial)
      index += 1
      self.meta.update(step=index, epoch=0, any_active=True, in_stage=False)
      content = {"states": states, "aux": aux}
      self.save(content)
    self.checkpointer.wait()
    states = driver.readout(self.program, self.last_phase().objective, content["states"])
    return self._record(states, content["aux"], initial)

  def _run_phase(self, index: int, phase: driver.Phase, content):
    optimizer = self.optimizer_before(index)
    if isinstance(content, driver.PhaseCarry):
      carry, start = content, self.meta["epoch"]
    else:
      states = driver.start_states(content["states"], phase)
      carry = driver.init_carry(self.program, phase, states, content["aux"], optimizer,
                                diverged=self.diverged())
      start = 0
      self.curves[phase.name] = driver.Curves()
    curves = self.curves.setdefault(phase.name, driver.Curves())
    events = self.meta["events"].setdefault(phase.name, [])
    self._last_saved_epoch = start
    self.progress.start_phase(f"{phase.name} x{len(self.seeds)}", start)

    def on_chunk(carry: driver.PhaseCarry, epoch: int) -> None:
      if epoch - self._last_saved_epoch >= self.config.checkpoint_every_epochs:
        self.meta.update(step=index, epoch=epoch, any_active=bool(jax.device_get(
            jnp.any(carry.active))))
        self.save(carry)
        self._last_saved_epoch = epoch

    result = driver.run_phase(
        self.program, phase, carry, keys.stream_keys(self.seeds, phase.name),
        optimizer=optimizer, start_epoch=start, curves=curves, events=events,
        any_active=self.meta["any_active"] if start else not self.diverged().all(),
        on_chunk=on_chunk, progress=self._progress_line(phase))
    self.meta["phases"][phase.name] = {
        "epochs": result.epochs.tolist(), "converged": result.converged.tolist(),
        "returned_best_state": result.returned_best_state.tolist()}
    for i, found in enumerate(result.diverged):
      if found is not None and self.meta["diverged"][i] is None:
        epoch, quantity = found
        self.meta["diverged"][i] = {"phase": phase.name, "epoch": epoch, "quantity": quantity}
        self.progress.warn(f"seed {self.seeds[i]} diverged: {quantity} not finite in phase "
                           f"{phase.name!r} at epoch {epoch}; it stops at its last finite state")
    return result.carry.states, result.carry.aux

  def diverged(self) -> np.ndarray:
    """Per seed, whether it has diverged in an earlier phase."""
    return np.asarray([d is not None for d in self.meta["diverged"]])

  def _run_stage(self, index: int, stage: Stage, content, initial):
    def save_progress(progress) -> None:
      self.meta.update(step=index, epoch=0, in_stage=True)
      self.save({"states": content["states"], "aux": content["aux"], "progress": progress})
    states, aux, stage_records = stage.apply(
        StageInput(content["states"], content["aux"], self.program, initial,
                   content.get("progress"), save_progress))
    self.meta["stages"][stage.name] = stage_records
    if stage_records and stage_records[0]:
      self.progress.log(f"{stage.name}: " + "; ".join(
          ", ".join(f"{k} {v}" for k, v in r.items()) for r in stage_records[:4])
          + (" ..." if len(stage_records) > 4 else ""))
    return states, aux

  def _progress_line(self, phase: driver.Phase):
    if self.progress.quiet:
      return None
    density = jax.jit(jax.vmap(lambda s: masks_lib.kept_count(s.masks, s.params)))

    def line(carry: driver.PhaseCarry, epoch: int) -> None:
      if not self.progress.due():
        return
      last, active, kept = jax.device_get((carry.last, carry.active, density(carry.states)))
      first = records.per_seed(carry.states, 0)
      total = masks_lib.total_count(first.masks, first.params)
      medians = {name: [float(np.median(values))] for name, values in last.items()}
      label = phase.name if len(self.seeds) == 1 else (
          f"{phase.name} x{len(self.seeds)}, {int(np.sum(active))} active")
      self.progress.update(label, epoch, phase.max_epochs, medians,
                           float(np.median(kept)) / total, force=True)
    return line

  # -- records ----------------------------------------------------------------------------------

  def _record(self, states: TrainState, aux, initial: TrainState) -> list[dict[str, Any]]:
    metrics = {split: self.program.evaluate(self.last_phase().objective, states, split)
               for split in ("train", "val", "test")}
    first = self.plan.steps[0].objective
    initial_test = self.program.evaluate(
        first, driver.readout(self.program, first, initial), "test")
    curves = {name: c.to_numpy() for name, c in self.curves.items()}
    phase_names = [s.name for s in self.plan.steps if isinstance(s, driver.Phase)]
    rows = []
    for i, seed in enumerate(self.seeds):
      rows.append(records.record_seed(
          seed_config(self.config, seed), self.workdir,
          recipe=self.recipe, model=self.parts.model, index=i, state=records.per_seed(states, i),
          aux=records.per_seed(aux, i),
          metrics={f"final_{split}_{k}": float(v[i]) for split, m in metrics.items()
                   for k, v in m.items()},
          phase_names=phase_names, curves=curves, meta=self.meta, seeds_in_program=len(self.seeds),
          initial_test={k: float(v[i]) for k, v in initial_test.items()}))
    self.checkpointer.close()
    hosts.barrier("program-recorded")
    if hosts.is_writer():
      shutil.rmtree(self.checkpointer.directory, ignore_errors=True)
    return rows


def init_from_runs(init_from: str, seeds: Sequence[int]) -> list[str]:
  """The finished runs ``config.init_from`` names, one per seed (:func:`pretrained`):
  read from ``runs.csv`` alone, so :func:`run` refuses a wrong one before any compute.

  Raises:
    RunError: no such workdir or run.
  """
  workdir, _, run_id = init_from.partition(":")
  if not results.runs_path(pathlib.Path(workdir)).is_file():
    raise errors.RunError(f"config field 'init_from' is {init_from!r}: there is no "
                          f"{results.runs_path(pathlib.Path(workdir))} (it must be "
                          "WORKDIR[:RUN_ID] of a finished run)")
  rows = records.finished_rows(pathlib.Path(workdir), None)
  chosen = []
  for seed in seeds:
    if run_id:
      found = run_id if run_id in rows else None
    else:
      found = next((r["run_id"] for r in reversed(list(rows.values()))
                    if int(r["seed"]) == seed and r.get("status", "finished") == "finished"),
                   None)
    if found is None:
      raise errors.RunError(f"config field 'init_from' is {init_from!r}: no finished run "
                            f"{run_id or f'of seed {seed}'} in {workdir}/runs.csv")
    chosen.append(found)
  return chosen


def pretrained(init_from: str, seeds: Sequence[int], like: TrainState):
  """The final parameters and model state of the runs ``init_from`` names, per seed.

  ``WORKDIR:RUN_ID`` gives every seed that run's; ``WORKDIR`` gives each seed
  the finished run of the same seed there (the last one).

  Raises:
    RunError: no such run, or parameters of another shape than the model's.
  """
  from sparsejax.runner.reload import load_run
  workdir = init_from.partition(":")[0]
  chosen = init_from_runs(init_from, seeds)
  loaded = {run: load_run(workdir, run).state for run in set(chosen)}
  for run, state in loaded.items():
    same = jax.tree.structure(state.params) == jax.tree.structure(like.params) and all(
        a.shape == b.shape for a, b in zip(jax.tree.leaves(state.params),
                                           jax.tree.leaves(like.params)))
    if not same:
      raise errors.RunError(f"config field 'init_from': run {run} in {workdir} has parameters "
                            "of another shape than this run's model")
  states = [loaded[run] for run in chosen]
  return (driver.stack_seeds([s.params for s in states]),
          driver.stack_seeds([s.model_state for s in states]))


def run_program(config: ml_collections.ConfigDict, workdir: pathlib.Path, seeds: Sequence[int],
                progress: Progress) -> list[dict[str, Any]]:
  """Runs (or resumes) one program of ``seeds``; returns their rows."""
  progress.log(f"seeds {seeds[0]}..{seeds[-1]} ({len(seeds)} in one program)"
               if len(seeds) > 1 else f"{records.run_id_of(seed_config(config, seeds[0]))}")
  return Program(config, seeds, progress, workdir).run()
