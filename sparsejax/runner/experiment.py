"""One run of a config: regularised phase -> pruning -> finetuning, resumable.

The run is a pure function of its config (the seed included): its id is the
experiment name and a hash of the config, its keys are folded from the seed,
and epoch ``e`` of a phase always uses the same key. Checkpoints (orbax) are
written at chunk boundaries every ``checkpoint_every_epochs`` and at each
phase boundary, so re-running the same command after an interruption resumes
from the latest checkpoint and ends with the same result as an uninterrupted
run. A finished run (its id already in ``runs.csv``) is not run again, as in
the reference (``has_been_run_before``).

Layout of a workdir::

    <workdir>/runs.csv                       one row per finished run
    <workdir>/checkpoints/<run_id>/<n>/      orbax checkpoints (latest kept)
    <workdir>/artifacts/<run_id>/            curves, plots, masks, layers, config
"""

from __future__ import annotations

import hashlib
import json
import pathlib
import time
from datetime import datetime, timezone
from typing import Any

import jax
import ml_collections
import numpy as np

from sparsejax import checkpoint as checkpoint_lib
from sparsejax import masks as masks_lib
from sparsejax import results
from sparsejax.runner import build as build_lib
from sparsejax.runner import procedure
from sparsejax.runner.config import validate
from sparsejax.runner.progress import Progress
from sparsejax.train import best_state
from sparsejax.train.convergence import is_saturated
from sparsejax.train.loop import make_epoch_fn
from sparsejax.train.phases import run_phase
from sparsejax.train.state import TrainState, create_train_state
from sparsejax.train.step import make_eval_fn, make_train_step

#: Fields that do not change what a run computes (left out of the run id).
BOOKKEEPING_FIELDS = ("quiet", "checkpoint_every_epochs", "seeds", "sweep.chunk_size",
                      "sweep.num_sub_batches", "sweep.sub_batch")
#: Deviation of the convergence test (reference: ``is_saturated(...; d=1e-10)``).
CONVERGENCE_DEVIATION = 1e-10
PHASES = ("train", "finetune", "done")


def run_id_of(config: ml_collections.ConfigDict) -> str:
  """``<experiment_name>-<10 hex digits of the config's hash>``."""
  flat = {k: v for k, v in results.flatten_config(config).items() if k not in BOOKKEEPING_FIELDS}
  digest = hashlib.sha1(json.dumps(flat, sort_keys=True, default=str).encode()).hexdigest()
  return f"{config.experiment_name}-{digest[:10]}"


def initial_state(config, parts: build_lib.Parts) -> TrainState:
  x = parts.data.train[0]
  return create_train_state(build_lib.model_key(config), parts.model, x[:1], parts.objective,
                            parts.optimizer, prunable=parts.prunable)


def checkpoint_template(state: TrainState) -> dict[str, TrainState]:
  """What a checkpoint holds: the current state and the phase's best-state snapshot."""
  return {"state": state, "best": state}


def convergence_curve(config) -> str:
  """The curve the checks watch: ``val_loss`` (``converge_val_loss``) or ``loss``."""
  return "val_loss" if config.converge_val_loss else "loss"


def is_check(config, epoch: int) -> bool:
  """The reference checks only once ``epoch >= smoothing_window + 3``."""
  return epoch >= config.smoothing_window + 3


class _Run:
  """Host-level orchestration of the phases of one run (not a public API)."""

  def __init__(self, config, workdir: pathlib.Path, parts: build_lib.Parts):
    self.config = config
    self.parts = parts
    self.run_id = run_id_of(config)
    self.progress = Progress(quiet=config.quiet)
    self.checkpointer = checkpoint_lib.Checkpointer(workdir / "checkpoints" / self.run_id)
    self.eval_fn = make_eval_fn(parts.model, parts.task, parts.objective, config.eval_batch_size,
                                jit=False)
    self.prune = procedure.make_pruner(config, parts)
    self.key = jax.random.key(config.seed)
    self.meta: dict[str, Any] = {"phase": "train", "epoch": 0, "curves": {}, "wall_time_s": 0.0,
                                 "saves": 0, "phase_epochs": {}, "pruning": {}, "best": {}}
    self.best_snapshot: TrainState | None = None
    self._last_saved_epoch = 0

  def save(self, state: TrainState) -> None:
    self.meta["saves"] += 1
    self.meta["wall_time_s"] = self._wall_time()
    best = state if self.best_snapshot is None else self.best_snapshot
    self.checkpointer.save(self.meta["saves"], {"state": state, "best": best}, dict(self.meta))

  def _wall_time(self) -> float:
    return self._wall_start_offset + (time.monotonic() - self._wall_start)

  def restore_or_init(self) -> TrainState:
    self._wall_start = time.monotonic()
    self._wall_start_offset = 0.0
    template = initial_state(self.config, self.parts)
    if self.checkpointer.latest_step() is None:
      return template
    saved, meta = self.checkpointer.restore(like=checkpoint_template(template))
    state = saved["state"]
    self.meta = meta
    if meta["best"].get("snapshot_val_loss") is not None:
      self.best_snapshot = saved["best"]
    self._wall_start_offset = float(meta["wall_time_s"])
    self.progress.log(f"resuming {self.run_id} from checkpoint {meta['saves']} "
                      f"(phase {meta['phase']}, epoch {meta['epoch']})")
    return state

  def run_phase(self, state: TrainState, phase: str, objective, min_epochs: int,
                max_epochs: int) -> TrainState:
    """Runs one phase from its start or its last checkpoint.

    At every check (each chunk of ``prune_window`` epochs, once
    :func:`is_check`): the convergence test (the saturation test at deviation
    1e-10, and PMMP's gamma rule), the best-state tracker, and with
    ``shrinking`` in the regularised phase the pruning of
    :mod:`sparsejax.runner.procedure` once the curve saturates at
    ``shrinking_from_deviation_of``.
    """
    config, parts = self.config, self.parts
    mesh_free_step = make_train_step(parts.model, parts.task, objective, parts.optimizer, jit=False)
    epoch_fn = make_epoch_fn(mesh_free_step, config.train_batch_size or parts.data.train[0].shape[0],
                             jit=False)
    resumed = self.meta["phase"] == phase
    start = self.meta["epoch"] if resumed else 0
    curves = self.meta["curves"].get(phase, {})
    tracker = best_state.BestState.from_json(self.meta["best"] if resumed else None)
    if not resumed:
      self.best_snapshot = None
    self._last_saved_epoch = start
    curve = convergence_curve(config)
    self.progress.start_phase(phase, start)

    def saturated(curves, deviation):
      return bool(is_saturated(np.asarray(curves.get(curve, [])), config.smoothing_window,
                               deviation))

    def converged(state, curves, epoch):
      return (is_check(config, epoch) and saturated(curves, CONVERGENCE_DEVIATION)
              and procedure.gamma_settled(config, state))

    def on_chunk(state, curves, epoch):
      nonlocal tracker
      if is_check(config, epoch):
        if config.return_best_state:
          tracker, snapshot = best_state.check(
              tracker, curves["val_loss"][-1], may_turn=procedure.gamma_settled(config, state))
          if snapshot:
            self.best_snapshot = state
        if (config.shrinking and phase == "train" and epoch < max_epochs
            and saturated(curves, config.shrinking_from_deviation_of)):
          key = jax.random.fold_in(jax.random.fold_in(self.key, len(PHASES)), epoch)
          state, info = self.prune(state, key, final=False)
          self.meta["pruning"].setdefault("shrinking", []).append({"epoch": epoch, **info})
      self.progress.update(phase, epoch, max_epochs, curves,
                           masks_lib.density(state.masks, state.params))
      if epoch - self._last_saved_epoch >= config.checkpoint_every_epochs:
        self.meta.update(phase=phase, epoch=epoch, best=tracker.to_json())
        self.meta["curves"][phase] = curves
        self.save(state)
        self._last_saved_epoch = epoch
      return state

    result = run_phase(
        state, epoch_fn, parts.data.train, phase_key=jax.random.fold_in(self.key, PHASES.index(phase)),
        max_epochs=max_epochs, min_epochs=min_epochs, chunk=config.prune_window,
        eval_fn=self.eval_fn, val_data=parts.data.val, converged=converged, on_chunk=on_chunk,
        start_epoch=start, curves=curves)
    state = result.state
    if config.return_best_state and result.curves.get("val_loss"):
      state, used = best_state.select(tracker, state, self.best_snapshot,
                                      result.curves["val_loss"][-1])
      self.meta[f"{phase}_returned_best_state"] = used
    self.progress.update(phase, result.epochs, max_epochs, result.curves,
                         masks_lib.density(state.masks, state.params), force=True)
    self.meta["curves"][phase] = result.curves
    self.meta["phase_epochs"][phase] = result.epochs
    self.meta[f"{phase}_converged"] = result.converged
    return state

  def advance(self, state: TrainState, next_phase: str) -> None:
    self.meta.update(phase=next_phase, epoch=0, best={})
    self.best_snapshot = None
    self.save(state)


def run(config: ml_collections.ConfigDict, workdir: str | pathlib.Path) -> dict[str, Any]:
  """Runs (or resumes, or skips if finished) the experiment ``config`` in ``workdir``.

  Returns:
    The run's row of ``runs.csv``.
  """
  validate(config)
  workdir = pathlib.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  run_id = run_id_of(config)
  finished = finished_row(workdir, run_id)
  if finished is not None:
    Progress(quiet=config.quiet).log(f"{run_id} has been run before; its row is in {workdir}/runs.csv")
    return finished
  with jax.enable_x64(config.dtype == "float64"):
    return _run(config, workdir)


def finished_row(workdir: pathlib.Path, run_id: str) -> dict[str, Any] | None:
  """The ``runs.csv`` row of ``run_id`` in ``workdir``, or ``None`` if it has not finished."""
  if not (workdir / "runs.csv").exists():
    return None
  runs = results.read_runs(workdir)
  rows = runs[runs["run_id"] == run_id]
  return None if rows.empty else rows.iloc[-1].to_dict()


def _run(config, workdir: pathlib.Path) -> dict[str, Any]:
  parts = build_lib.build(config)
  run = _Run(config, workdir, parts)
  state = run.restore_or_init()
  if run.meta["phase"] == "train":
    state = run.run_phase(state, "train", parts.objective, config.min_epochs, config.max_epochs)
    state, info = run.prune(state, jax.random.fold_in(run.key, len(PHASES) + 1), final=True)
    run.meta["pruning"]["final"] = info
    run.progress.log(f"pruned: {_pruning_line(info)}")
    run.advance(state, "finetune")
  if run.meta["phase"] == "finetune":
    state = run.run_phase(state, "finetune", parts.finetune_objective,
                          config.finetuning_min_epochs, config.finetuning_max_epochs)
    run.advance(state, "done")
  run.checkpointer.wait()
  row = record(config, workdir, run.run_id, state, parts, run.meta)
  run.checkpointer.close()
  _print_summary(config, row, run.progress)
  return row


def final_metrics(config, state: TrainState, parts: build_lib.Parts) -> dict[str, float]:
  """Data loss (and accuracy) of the final masked model on train, val and test."""
  evaluate = jax.jit(make_eval_fn(parts.model, parts.task, parts.finetune_objective,
                                  config.eval_batch_size, jit=False))
  out = {}
  for split in ("train", "val", "test"):
    for name, value in evaluate(state, *getattr(parts.data, split)).items():
      out[f"final_{split}_{name}"] = float(value)
  return out


def record(config, workdir: pathlib.Path, run_id: str, state: TrainState, parts: build_lib.Parts,
           meta: dict, metrics: dict[str, float] | None = None) -> dict[str, Any]:
  """Writes the artifacts and appends the run's row to ``runs.csv``.

  ``metrics`` are the :func:`final_metrics` if already computed (a sweep
  evaluates all its seeds at once).
  """
  summary = masks_lib.summary(state.masks, state.params)
  row = dict(results.flatten_config(config))
  row.update(run_id=run_id, timestamp=datetime.now(timezone.utc).isoformat(timespec="seconds"),
             wall_time_s=round(float(meta["wall_time_s"]), 3))
  row.update(final_metrics(config, state, parts) if metrics is None else metrics)
  total = summary["total"]
  row.update(kept_params=total["kept"], total_params=total["total"], density=total["density"],
             compression=total["compression"],
             train_epochs=meta["phase_epochs"].get("train", 0),
             finetune_epochs=meta["phase_epochs"].get("finetune", 0),
             train_converged=bool(meta.get("train_converged", False)),
             finetune_converged=bool(meta.get("finetune_converged", False)),
             train_returned_best_state=bool(meta.get("train_returned_best_state", False)))
  final_pruning = meta["pruning"].get("final", {})
  row.update({f"pruning_{k}": v for k, v in final_pruning.items()})
  row["shrinking_prunings"] = len(meta["pruning"].get("shrinking", []))
  if config.gauss_loss:
    row["final_sigma"] = float(state.objective_state["sigma"])
  artifacts = workdir / "artifacts" / run_id
  artifacts.mkdir(parents=True, exist_ok=True)
  results.write_curves(artifacts, _joined_curves(meta["curves"], meta["phase_epochs"], summary))
  results.write_layer_counts(artifacts, summary)
  results.write_masks(artifacts, state.masks)
  results.write_config(artifacts, config)
  results.append_run(workdir, row)
  return row


def _joined_curves(curves_by_phase: dict, phase_epochs: dict, summary: dict) -> dict[str, list]:
  """Concatenates the phases' curves; adds ``phase`` (0 train, 1 finetune) and ``density``."""
  phases = ("train", "finetune")
  names = sorted({name for phase in phases for name in curves_by_phase.get(phase, {})})
  joined: dict[str, list] = {name: [] for name in names + ["phase", "density"]}
  for index, phase in enumerate(phases):
    curves = curves_by_phase.get(phase, {})
    n = phase_epochs.get(phase, 0)
    for name in names:
      values = list(curves.get(name, []))[:n]
      joined[name].extend(values + [float("nan")] * (n - len(values)))
    joined["phase"].extend([index] * n)
    joined["density"].extend([1.0 if phase == "train" else summary["total"]["density"]] * n)
  return joined


def _pruning_line(info: dict) -> str:
  steps = ", ".join(f"{k[len('kept_'):]} {v}" for k, v in info.items() if k.startswith("kept_"))
  line = f"kept {info['kept']} ({steps})"
  if "threshold" in info:
    line += f"; TAMADE threshold {info['threshold']:.4g} after {info['evaluations']} evaluations"
  return line


def _print_summary(config, row: dict, progress: Progress) -> None:
  line = (f"{row['run_id']}: kept {row['kept_params']}/{row['total_params']} parameters "
          f"(density {row['density']:.4f}), test loss {row['final_test_loss']:.5g}")
  if "final_test_accuracy" in row:
    line += f", test accuracy {100 * row['final_test_accuracy']:.2f}%"
  if config.dataset == "teacher_student":
    teacher = sum(a * b + b for a, b in zip(config.architecture_teacher[:-1],
                                            config.architecture_teacher[1:]))
    line += f"; the teacher has {teacher} parameters, noise variance {config.noise ** 2:.4g}"
  progress.log(line)
