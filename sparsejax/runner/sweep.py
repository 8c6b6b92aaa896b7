"""Seed sweeps: many seeds of one config as one vmapped program per phase.

``python -m sparsejax.main --config=configs/teacher_student.py --config.seeds=64``
runs seeds ``seed, seed + 1, ..., seed + 63`` of the config. Instead of one
process per seed (as the reference code runs them), each chunk of
``sweep.chunk_size`` seeds is one ``jax.vmap``-ed program per phase:

* **initialisation**: per-seed data (teacher-student draws a teacher and its
  data per seed; image data sets are shared) and per-seed student weights;
* **regularised training** in ``lax.scan`` chunks of ``prune_window`` epochs
  (each epoch a ``lax.scan`` of steps), the validation loss evaluated on the
  device after every epoch. Between chunks the host runs each seed's
  checks exactly as a single run does (the saturation test, PMMP's gamma
  rule, the best-state tracker). A seed that has converged is *frozen*: its
  updates are masked out (``jnp.where(active, new, old)``) while the others
  go on, and the phase ends when all have converged or ``max_epochs`` is
  reached;
* **pruning**: random gradient pruning -> TAMADE -> random gradient pruning,
  vmapped (TAMADE's ``lax.while_loop`` runs until every seed's search has
  closed, each seed with its own interval); neuron deletion per seed on the
  host;
* **finetuning**, as the regularised phase.

Every seed uses the keys of its single run (``jax.random.key(seed)`` folded
as in :mod:`sparsejax.runner.experiment`), so each seed's result equals the
seed run alone: the same masks and the same losses up to float rounding
(``tests/test_sweep.py``). Each seed gets the row, artifacts and final
checkpoint that its single run would write, under the same run id, so
:func:`sparsejax.runner.load_run` reloads any seed and a later single run of
that seed is recognised as done. A re-run skips the seeds already in
``runs.csv`` (the resume granularity of a sweep is the seed: an interrupted
chunk is recomputed).

Across machines, ``sweep.num_sub_batches`` / ``sweep.sub_batch`` (the
reference README's ``--num_sub_batches/--sub_batch``) select one contiguous
part of the seeds per task; ``launch/`` holds a SLURM array script, and
:mod:`sparsejax.runner.merge` joins the tasks' tables.

Not in sweeps: ``shrinking`` and ``method = "layerwise"`` (host-side steps
inside a phase), rejected by the config check.
"""

from __future__ import annotations

import copy
import json
import pathlib
import time
from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import matplotlib
import ml_collections
import numpy as np

from sparsejax import checkpoint as checkpoint_lib
from sparsejax import data as data_lib
from sparsejax import objectives, results
from sparsejax.runner import build as build_lib
from sparsejax.runner import experiment, procedure
from sparsejax.runner.config import validate
from sparsejax.runner.progress import Progress
from sparsejax.train import best_state
from sparsejax.train.convergence import is_saturated
from sparsejax.train.loop import make_epoch_fn
from sparsejax.train.state import TrainState, create_train_state
from sparsejax.train.step import make_eval_fn, make_train_step

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)

#: Quantiles printed in the summary.
QUANTILES = (0.1, 0.25, 0.5, 0.75, 0.9)


def sweep_seeds(config: ml_collections.ConfigDict) -> list[int]:
  """This task's seeds: its ``sweep.sub_batch`` of ``sweep.num_sub_batches`` parts."""
  seeds = np.arange(config.seed, config.seed + config.seeds)
  return [int(s) for s in np.array_split(seeds, config.sweep.num_sub_batches)[config.sweep.sub_batch]]


def seed_config(config: ml_collections.ConfigDict, seed: int) -> ml_collections.ConfigDict:
  """The single-run config of one seed (the row a single run would write)."""
  single = copy.deepcopy(config)
  single.seed = seed
  single.seeds = 1
  single.sweep.num_sub_batches = 1
  single.sweep.sub_batch = 0
  return single


class _Chunk(NamedTuple):
  """A chunk of seeds: per-seed data (leading axis, or shared) and the parts."""
  seeds: jax.Array
  parts: build_lib.Parts          # model, objectives, ...; data per seed or shared
  data_axis: int | None           # 0: data per seed; None: shared


def _chunk_parts(config, seeds: Sequence[int]) -> _Chunk:
  dtype = build_lib.dtype_of(config)
  seeds_array = jnp.asarray(seeds)
  parts = build_lib.build(seed_config(config, seeds[0]))
  if config.dataset != "teacher_student":
    return _Chunk(seeds_array, parts, None)
  splits, teacher = jax.vmap(lambda s: data_lib.teacher_student_data(
      s, n_train=config.train_set_size or 300, n_val=config.val_set_size or 1000,
      n_test=config.test_set_size or 5000, noise=config.noise,
      teacher_widths=tuple(config.architecture_teacher), dtype=dtype))(seeds_array)
  return _Chunk(seeds_array, parts._replace(data=splits, teacher_params=teacher), 0)


def per_seed(tree, index: int):
  """Seed ``index``'s slice of a tree with a leading seed axis."""
  return jax.tree.map(lambda x: x[index], tree)


def where_seeds(active: jax.Array, new, old):
  """Per seed: ``new`` where ``active`` else ``old`` (leading seed axis)."""
  def pick(a, b):
    return jnp.where(active.reshape(active.shape + (1,) * (a.ndim - 1)), a, b)
  return jax.tree.map(pick, new, old)


class _Phase:
  """One phase of a chunk of seeds: compiled chunks of epochs, host checks per seed."""

  def __init__(self, config, chunk: _Chunk, objective, phase: str):
    parts = chunk.parts
    self.config, self.chunk, self.phase = config, chunk, phase
    step = make_train_step(parts.model, parts.task, objective, parts.optimizer, jit=False)
    x_train = parts.data.train[0]
    n_train = x_train.shape[1] if chunk.data_axis == 0 else x_train.shape[0]
    self.epoch_fn = make_epoch_fn(step, config.train_batch_size or n_train, jit=False)
    self.eval_fn = make_eval_fn(parts.model, parts.task, parts.objective, config.eval_batch_size,
                                jit=False)
    self.phase_keys = jax.vmap(lambda s: jax.random.fold_in(
        jax.random.key(s), experiment.PHASES.index(phase)))(chunk.seeds)
    self._compiled: dict[int, Callable] = {}

  def _compile(self, n: int) -> Callable:
    epoch_fn, eval_fn = self.epoch_fn, self.eval_fn

    def one_seed(state, active, train, val, phase_key, first_epoch):
      def body(state, epoch):
        new, metrics = epoch_fn(state, train, jax.random.fold_in(phase_key, epoch))
        metrics.update({f"val_{k}": v for k, v in eval_fn(new, *val).items()})
        return jax.tree.map(lambda a, b: jnp.where(active, a, b), new, state), metrics
      return jax.lax.scan(body, state, first_epoch + jnp.arange(n))

    axis = self.chunk.data_axis
    return jax.jit(jax.vmap(one_seed, in_axes=(0, 0, axis, axis, 0, None)))

  def run(self, states: TrainState, min_epochs: int, max_epochs: int, progress: Progress):
    """Runs the phase for all seeds; returns ``(states, curves, epochs, converged)``."""
    config, data = self.config, self.chunk.parts.data
    n_seeds = len(self.chunk.seeds)
    curves: list[dict[str, list[float]]] = [{} for _ in range(n_seeds)]
    epochs = np.zeros(n_seeds, int)
    active = np.ones(n_seeds, bool)
    converged = np.zeros(n_seeds, bool)
    trackers = [best_state.BestState() for _ in range(n_seeds)]
    snapshots, has_snapshot = states, np.zeros(n_seeds, bool)
    curve_name = experiment.convergence_curve(config)
    epoch = 0
    progress.start_phase(f"{self.phase} x{n_seeds}", 0)
    while active.any() and epoch < max_epochs:
      n = min(config.prune_window, max_epochs - epoch)
      if n not in self._compiled:
        self._compiled[n] = self._compile(n)
      states, metrics = self._compiled[n](states, jnp.asarray(active), data.train, data.val,
                                          self.phase_keys, epoch)
      metrics = jax.device_get(metrics)
      epoch += n
      gamma_ok = self._gamma_settled(states)
      snap = np.zeros(n_seeds, bool)
      for i in np.flatnonzero(active):
        for name, values in metrics.items():
          curves[i].setdefault(name, []).extend(np.asarray(values[i], float).tolist())
        epochs[i] = epoch
        check = experiment.is_check(config, epoch)
        if (epoch >= min_epochs and check and gamma_ok[i]
            and is_saturated(np.asarray(curves[i][curve_name]), config.smoothing_window,
                             experiment.CONVERGENCE_DEVIATION)):
          converged[i] = True
        if check and config.return_best_state:
          trackers[i], snap[i] = best_state.check(trackers[i], curves[i]["val_loss"][-1],
                                                  may_turn=bool(gamma_ok[i]))
      if snap.any():
        snapshots = where_seeds(jnp.asarray(snap), states, snapshots)
        has_snapshot |= snap
      active &= ~converged
      medians = {name: [float(np.median([c[name][-1] for c in curves]))]
                 for name in ("loss", "val_loss") if name in curves[0]}
      progress.update(f"{self.phase} x{n_seeds}, {int(active.sum())} active", epoch, max_epochs,
                      medians, None)
    use = np.array([config.return_best_state and has_snapshot[i]
                    and best_state.should_restore(trackers[i], curves[i]["val_loss"][-1])
                    for i in range(n_seeds)], bool)
    states = where_seeds(jnp.asarray(use), snapshots, states)
    return states, curves, epochs, converged, use

  def _gamma_settled(self, states: TrainState) -> np.ndarray:
    n_seeds = len(self.chunk.seeds)
    if self.config.method != "pmmp":
      return np.ones(n_seeds, bool)
    pmmp = procedure.pmmp_state(self.config, states.objective_state)
    return np.asarray(jax.vmap(objectives.gamma_saturated)(pmmp))


def _init_states(config, chunk: _Chunk) -> TrainState:
  parts = chunk.parts
  x = parts.data.train[0]
  sample = x[0, :1] if chunk.data_axis == 0 else x[:1]
  return jax.vmap(lambda s: create_train_state(
      jax.random.fold_in(jax.random.key(s), build_lib.MODEL_KEY_OFFSET), parts.model, sample,
      parts.objective, parts.optimizer, prunable=parts.prunable))(chunk.seeds)


def _prune(config, chunk: _Chunk, states: TrainState) -> tuple[TrainState, list[dict]]:
  """The final pruning of every seed (vmapped core and tidy, host neuron deletion)."""
  axis = chunk.data_axis
  keys = jax.vmap(lambda s: jax.random.fold_in(jax.random.key(s), len(experiment.PHASES) + 1))(
      chunk.seeds)
  kept_before = jax.vmap(procedure._kept)(states)

  def core(state, key, data):
    return procedure.make_prune_stages(config, chunk.parts._replace(data=data)).core(
        state, key, True)

  def tidy(state, data):
    return procedure.make_prune_stages(config, chunk.parts._replace(data=data)).tidy(state, True)

  states, info = jax.jit(jax.vmap(core, in_axes=(0, 0, axis)))(states, keys, chunk.parts.data)
  if config.pruning.delete_neurons:
    stages = procedure.make_prune_stages(config, chunk.parts if axis is None else
                                         chunk.parts._replace(data=per_seed(chunk.parts.data, 0)))
    singles = [stages.delete(per_seed(states, i)) for i in range(len(chunk.seeds))]
    states = jax.tree.map(lambda *xs: jnp.stack(xs), *singles)
  states = jax.jit(jax.vmap(tidy, in_axes=(0, axis)))(states, chunk.parts.data)
  info.update(kept_before=kept_before, kept=jax.vmap(procedure._kept)(states))
  info = jax.device_get(info)
  return states, [{k: np.asarray(v[i]).item() for k, v in info.items()}
                  for i in range(len(chunk.seeds))]


def _final_metrics(config, chunk: _Chunk, states: TrainState) -> list[dict[str, float]]:
  parts = chunk.parts
  evaluate = make_eval_fn(parts.model, parts.task, parts.finetune_objective,
                          config.eval_batch_size, jit=False)
  axis = chunk.data_axis
  out = {}
  for split in ("train", "val", "test"):
    values = jax.jit(jax.vmap(evaluate, in_axes=(0, axis, axis)))(
        states, *getattr(parts.data, split))
    for name, v in jax.device_get(values).items():
      out[f"final_{split}_{name}"] = np.asarray(v)
  return [{k: float(v[i]) for k, v in out.items()} for i in range(len(chunk.seeds))]


def _run_chunk(config, workdir: pathlib.Path, seeds: Sequence[int], progress: Progress
               ) -> list[dict[str, Any]]:
  start = time.monotonic()
  chunk = _chunk_parts(config, seeds)
  parts = chunk.parts
  states = _init_states(config, chunk)
  train = _Phase(config, chunk, parts.objective, "train")
  states, train_curves, train_epochs, train_conv, train_best = train.run(
      states, config.min_epochs, config.max_epochs, progress)
  states, prune_info = _prune(config, chunk, states)
  finetune = _Phase(config, chunk, parts.finetune_objective, "finetune")
  states, ft_curves, ft_epochs, ft_conv, _ = finetune.run(
      states, config.finetuning_min_epochs, config.finetuning_max_epochs, progress)
  metrics = _final_metrics(config, chunk, states)
  wall_per_seed = (time.monotonic() - start) / len(seeds)
  rows = []
  for i, seed in enumerate(seeds):
    single = seed_config(config, seed)
    run_id = experiment.run_id_of(single)
    state = per_seed(states, i)
    seed_parts = parts if chunk.data_axis is None else parts._replace(
        data=per_seed(parts.data, i), teacher_params=per_seed(parts.teacher_params, i))
    meta = {"phase": "done", "epoch": 0, "wall_time_s": wall_per_seed, "saves": 1, "best": {},
            "curves": {"train": train_curves[i], "finetune": ft_curves[i]},
            "phase_epochs": {"train": int(train_epochs[i]), "finetune": int(ft_epochs[i])},
            "pruning": {"final": prune_info[i]}, "train_converged": bool(train_conv[i]),
            "finetune_converged": bool(ft_conv[i]),
            "train_returned_best_state": bool(train_best[i])}
    with checkpoint_lib.Checkpointer(workdir / "checkpoints" / run_id) as checkpointer:
      checkpointer.save(1, experiment.checkpoint_template(state), meta)
    rows.append(experiment.record(single, workdir, run_id, state, seed_parts, meta, metrics[i]))
  return rows


def run_sweep(config: ml_collections.ConfigDict, workdir: str | pathlib.Path
              ) -> list[dict[str, Any]]:
  """Runs this task's seeds of ``config`` (skipping finished ones); returns their rows."""
  validate(config)
  workdir = pathlib.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  progress = Progress(quiet=config.quiet)
  seeds = sweep_seeds(config)
  done = set(results.read_runs(workdir).get("run_id", []))
  todo = [s for s in seeds if experiment.run_id_of(seed_config(config, s)) not in done]
  if len(todo) < len(seeds):
    progress.log(f"{len(seeds) - len(todo)} of {len(seeds)} seeds are already in "
                 f"{workdir}/runs.csv")
  with jax.enable_x64(config.dtype == "float64"):
    for start in range(0, len(todo), config.sweep.chunk_size):
      chunk = todo[start:start + config.sweep.chunk_size]
      progress.log(f"seeds {chunk[0]}..{chunk[-1]} ({len(chunk)} vmapped)")
      _run_chunk(config, workdir, chunk, progress)
  ids = {experiment.run_id_of(seed_config(config, s)) for s in seeds}
  runs = results.read_runs(workdir)
  rows = runs[runs["run_id"].isin(ids)]
  summary = summarize(config, rows)
  write_summary(config, workdir, rows, summary)
  progress.log(format_summary(summary))
  return rows.to_dict("records")


def teacher_size(config) -> int | None:
  """Parameters of the teacher (teacher-student sweeps), else ``None``."""
  if config.dataset != "teacher_student":
    return None
  w = list(config.architecture_teacher)
  return int(sum(a * b + b for a, b in zip(w[:-1], w[1:])))


def summarize(config, rows) -> dict[str, Any]:
  """Quantiles of kept parameters and test loss; seeds at most the teacher's size."""
  summary: dict[str, Any] = {"seeds": int(len(rows))}
  for column in ("kept_params", "final_test_loss", "final_test_accuracy"):
    if column in rows:
      values = rows[column].astype(float).to_numpy()
      summary[column] = {f"q{int(q * 100)}": float(np.quantile(values, q)) for q in QUANTILES}
  teacher = teacher_size(config)
  if teacher is not None:
    summary["teacher_params"] = teacher
    summary["seeds_at_most_teacher"] = int((rows["kept_params"] <= teacher).sum())
  return summary


def format_summary(summary: dict[str, Any]) -> str:
  lines = [f"sweep of {summary['seeds']} seeds:"]
  for column in ("kept_params", "final_test_loss", "final_test_accuracy"):
    if column in summary:
      q = summary[column]
      lines.append(f"  {column}: median {q['q50']:.5g}, quartiles {q['q25']:.5g}..{q['q75']:.5g}, "
                   f"10%..90% {q['q10']:.5g}..{q['q90']:.5g}")
  if "teacher_params" in summary:
    lines.append(f"  seeds with kept <= the teacher's {summary['teacher_params']}: "
                 f"{summary['seeds_at_most_teacher']} of {summary['seeds']}")
  return "\n".join(lines)


def write_summary(config, workdir: pathlib.Path, rows, summary: dict[str, Any]) -> None:
  """``sweep_<experiment>.json`` and a histogram of kept parameters (PNG)."""
  name = f"sweep_{config.experiment_name}"
  (workdir / f"{name}.json").write_text(json.dumps(summary, indent=2))
  fig, ax = plt.subplots(figsize=(6, 3.5))
  ax.hist(rows["kept_params"], bins=30, color="tab:blue")
  teacher = summary.get("teacher_params")
  if teacher is not None:
    ax.axvline(teacher, color="tab:red", linestyle="--", label=f"teacher ({teacher})")
    ax.legend()
  ax.set_xlabel("kept parameters")
  ax.set_ylabel("seeds")
  ax.set_title(f"{config.experiment_name}: {summary['seeds']} seeds")
  fig.tight_layout()
  fig.savefig(workdir / f"{name}_kept.png", dpi=120)
  plt.close(fig)
