"""Reloading a finished run for evaluation: one call.

>>> run = load_run("workdirs/teacher_student")          # the latest run there
>>> metrics = evaluate_run(run)                          # == the recorded final_* values
>>> run.state.params, run.state.masks, run.parts.model   # to explore further
>>> small = load_compacted("workdirs/teacher_student")   # its exported compacted model
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
from typing import Any, NamedTuple, Sequence

import jax
import ml_collections
import numpy as np

from sparsejax import checkpoint as checkpoint_lib
from sparsejax import masks as masks_lib
from sparsejax import results
from sparsejax.compaction import compact, export
from sparsejax.runner import build as build_lib
from sparsejax.runner import config as config_lib
from sparsejax.runner import errors, records
from sparsejax.runner.program import Program
from sparsejax.train.driver import stack_seeds
from sparsejax.train.state import TrainState


class LoadedRun(NamedTuple):
  config: ml_collections.ConfigDict
  state: TrainState
  parts: build_lib.Parts
  row: dict[str, Any]
  program: Program


def load_config(workdir: str | pathlib.Path, run_id: str) -> ml_collections.ConfigDict:
  """The run's saved ``config.json`` over today's defaults.

  A run saved before a field existed gets that field's default (every new
  field defaults to the behaviour before it), and a field renamed since is
  read under its new name (``config_lib.RENAMED_FIELDS``), so older workdirs
  stay loadable.
  """
  path = pathlib.Path(workdir) / "artifacts" / run_id / "config.json"
  saved = config_lib.renamed(json.loads(path.read_text()))
  return ml_collections.ConfigDict(_over_defaults(config_lib.base_config().to_dict(), saved))


def _over_defaults(defaults: dict[str, Any], saved: dict[str, Any]) -> dict[str, Any]:
  merged = dict(defaults)
  for name, value in saved.items():
    if isinstance(value, dict) and isinstance(defaults.get(name), dict):
      value = _over_defaults(defaults[name], value)
    merged[name] = value
  return merged


def load_run(workdir: str | pathlib.Path, run_id: str | None = None) -> LoadedRun:
  """Restores the final state of ``run_id`` (default: the last row of runs.csv).

  The data, model and method are rebuilt from the run's saved config, so the
  returned parts evaluate the restored state exactly as the run did.
  """
  workdir = pathlib.Path(workdir)
  runs = results.read_runs(workdir)
  if run_id is None:
    if runs.empty:
      raise FileNotFoundError(f"no finished run in {workdir / 'runs.csv'}")
    run_id = runs["run_id"].iloc[-1]
  rows = runs[runs["run_id"] == run_id]
  if rows.empty:
    raise KeyError(f"run {run_id!r} is not in {workdir / 'runs.csv'}; runs there: "
                   f"{', '.join(runs['run_id'])}")
  config = load_config(workdir, run_id)
  with jax.enable_x64(config.dtype == "float64"):
    program = Program(config, [config.seed])
    directory = records.final_state_dir(workdir, run_id)
    try:
      with checkpoint_lib.Checkpointer(directory, read_only=True) as checkpointer:
        saved, _ = checkpointer.restore(like={"state": program.final_template()})
    except (checkpoint_lib.CheckpointDamaged, FileNotFoundError) as error:
      raise errors.FinalStateDamaged(_damaged(workdir, run_id, error)) from None
    except checkpoint_lib.CheckpointIncompatible as error:
      raise errors.IncompatibleCheckpoint(
          f"the final state of run {run_id}: {error}. Load it with the version that wrote "
          f"it, or delete its row in {workdir / 'runs.csv'} and {directory}, and run its "
          "command again to recompute it") from None
  return LoadedRun(config, saved["state"], program.parts, rows.iloc[-1].to_dict(), program)


def final_state_problems(workdir: str | pathlib.Path, run_ids: Sequence[str]) -> list[str]:
  """What is wrong with the final states of the finished runs ``run_ids``, one line per damaged one.

  Each final state's latest step is read without a template and checked
  against the checksum saved with it (:meth:`~sparsejax.checkpoint.Checkpointer.check`):
  no model or data is built, so a finished run stays quick to skip. Each line
  says what :func:`load_run` would raise for it.
  """
  workdir = pathlib.Path(workdir)
  problems = []
  for run_id in run_ids:
    directory = records.final_state_dir(workdir, run_id)
    try:
      with checkpoint_lib.Checkpointer(directory, read_only=True) as checkpointer:
        checkpointer.check()
    except (checkpoint_lib.CheckpointDamaged, FileNotFoundError) as error:
      problems.append(_damaged(workdir, run_id, error))
  return problems


def _damaged(workdir: pathlib.Path, run_id: str, error: Exception) -> str:
  """What is damaged in run ``run_id``'s final state, where, and how to recompute the run."""
  return (f"the final state of run {run_id} is damaged or missing ({error}); its row in "
          f"{workdir / 'runs.csv'} is intact. To recompute the run, delete its row and "
          f"{records.final_state_dir(workdir, run_id)}, and run its command again")


def evaluate_run(run: LoadedRun) -> dict[str, float]:
  """The final train/val/test metrics of a loaded run, recomputed."""
  with jax.enable_x64(run.config.dtype == "float64"):
    states = stack_seeds([run.state])
    out = {}
    for split in ("train", "val", "test"):
      metrics = run.program.program.evaluate(run.program.last_phase().objective, states, split)
      out.update({f"final_{split}_{k}": float(np.asarray(v)[0]) for k, v in metrics.items()})
    return out


def compact_dir(workdir: str | pathlib.Path, run_id: str) -> pathlib.Path:
  """Where :mod:`sparsejax.studies.speedup` exports a run's compacted model."""
  return pathlib.Path(workdir) / "artifacts" / run_id / "compact"


def load_compacted(workdir: str | pathlib.Path, run_id: str | None = None):
  """The compacted model of a finished run, as exported by ``python -m
  sparsejax.studies.speedup``: the run is reloaded (:func:`load_run`), its masked model
  compacted again for the program's structure (``gather=False``), and the exported
  variables restored into it (checksummed). ``compacted.apply(compacted.variables, x)``
  gives the run's outputs.

  Raises:
    FileNotFoundError: the run's compacted model was not exported (the message gives
      the command that exports it).
  """
  run = load_run(workdir, run_id)
  directory = compact_dir(workdir, run.row["run_id"])
  if not (directory / "variables").exists():
    raise FileNotFoundError(f"no compacted model of run {run.row['run_id']} in {directory}; "
                            f"export it with: python -m sparsejax.studies.speedup {workdir}")
  with jax.enable_x64(run.config.dtype == "float64"):
    state, model = run.state, run.parts.model
    masked = {"params": masks_lib.apply(state.masks, state.params), **state.model_state}
    example = jax.ShapeDtypeStruct((1, *model.input_shape), jax.tree.leaves(state.params)[0].dtype)
    compacted = compact(model, masked, example=example, gather=False)
    return dataclasses.replace(compacted, variables=export.load(directory, compacted.variables))
