"""Run ids, result rows, artifacts and final states: the one writer for every recipe.

A run's id is ``<experiment_name>-<10 hex digits>`` of a hash of the fields
it depends on (:func:`sparsejax.runner.config.relevant_fields`, without the
bookkeeping ones), so the same config always has the same id and a finished
run (its id in ``runs.csv``) is not run again, as in the reference
(``has_been_run_before``).

Per seed, :func:`record_seed` writes

* ``artifacts/<run_id>/``: ``curves.csv`` (every phase's per-epoch curves
  joined, with ``phase`` 0, 1, ... and ``density``) and its plots,
  ``layers.csv`` (kept/total per parameter leaf), ``masks.npz``,
  ``config.json``, plus what the recipe's row function writes;
* ``checkpoints/<run_id>/``: the final train state (orbax), for
  :func:`sparsejax.runner.load_run`;
* its row of ``runs.csv``, last (atomically, under the table's lock): the
  fields of its config, ``run_id``, ``timestamp``, ``wall_time_s`` (of the
  whole program), ``seeds_in_program``, the final train/val/test metrics,
  kept/total parameters, density, compression, per phase ``<phase>_epochs``,
  ``<phase>_converged`` and ``<phase>_returned_best_state``, the initial
  network's test loss ``initial_test_loss`` (and ``initial_test_accuracy``
  for classification; at initialisation, or the ``init_from`` run's final
  network), the compacted model's size beside the masked one's (``masked_*`` and
  ``compact_*`` parameters, MACs and XLA FLOPs per example, ``compact_removed_units``;
  :mod:`sparsejax.compaction.report`), and the recipe's fields. ``status`` is ``finished``, ``diverged`` (a non-finite value;
  the row keeps the last finite state) or ``collapsed`` (:func:`collapse_reason`:
  nothing non-finite, but every prunable parameter pruned or no better
  than the initial network; ``collapse_reason`` says which).

A sweep (``seeds > 1``) also writes ``sweep_<experiment>.json`` (quantiles
of kept parameters and test metrics, how many seeds collapsed; for
teacher-student, how many seeds that did not collapse kept at most the
teacher's parameters) and a histogram ``sweep_<experiment>_kept.png``.
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
from datetime import datetime, timezone
from typing import Any, Sequence

import ml_collections
import numpy as np
from matplotlib import figure
from matplotlib.backends import backend_agg

from sparsejax import checkpoint as checkpoint_lib
from sparsejax import masks as masks_lib
from sparsejax import results
from sparsejax.compaction.report import compaction_fields
from sparsejax.recipes import Outcome, Recipe
from sparsejax.runner import hosts
from sparsejax.runner.config import (BOOKKEEPING_FIELDS, ID_NAMES, NEUTRAL_FIELDS,
                                     relevant_fields)
from sparsejax.runner.errors import WorkdirError
from sparsejax.train.driver import per_seed

__all__ = ["finished_rows", "per_seed", "print_summary", "record_seed", "run_id_of"]

#: Quantiles of a sweep's summary.
QUANTILES = (0.1, 0.25, 0.5, 0.75, 0.9)


def run_id_of(config: ml_collections.ConfigDict) -> str:
  """``<experiment_name>-<10 hex digits of the hash of the fields the run depends on>``.

  Bookkeeping fields are left out, and so are fields added since runs were recorded
  while they hold their neutral values (``NEUTRAL_FIELDS``); moved fields are hashed
  under their former names (``ID_NAMES``): a run keeps its id across such changes.
  """
  flat = {ID_NAMES.get(k, k): v for k, v in relevant_fields(config).items()
          if k not in BOOKKEEPING_FIELDS and not (k in NEUTRAL_FIELDS and v == NEUTRAL_FIELDS[k])}
  digest = hashlib.sha1(json.dumps(flat, sort_keys=True, default=str).encode()).hexdigest()
  return f"{config.experiment_name}-{digest[:10]}"


def finished_rows(workdir: pathlib.Path, run_ids: Sequence[str] | None) -> dict[str, dict]:
  """``{run_id: row}`` of the ``run_ids`` (``None``: all) in ``workdir/runs.csv``, in
  table order (last row wins)."""
  if not results.runs_path(workdir).exists():
    return {}
  runs = results.read_runs(workdir)
  if run_ids is not None:
    runs = runs[runs["run_id"].isin(list(run_ids))]
  return {row["run_id"]: row for row in runs.to_dict("records")}


def check_writable(workdir: pathlib.Path) -> None:
  """Checks, before any compute, that everything a run writes can be written.

  The workdir and its ``artifacts``, ``checkpoints`` and ``locks`` folders are
  created if needed and written to (a file created and removed in each), and
  the table's lock file is opened for writing.

  Raises:
    WorkdirError: naming the path and the reason.
  """
  workdir = pathlib.Path(workdir)
  if workdir.exists() and not workdir.is_dir():
    raise WorkdirError(f"the workdir {workdir} is a file, not a folder; pass another "
                       "--workdir or move the file")
  for folder in (workdir, workdir / results.ARTIFACTS_DIR, workdir / "checkpoints",
                 workdir / "locks"):
    try:
      folder.mkdir(parents=True, exist_ok=True)
      probe = folder / f".write-test-{os.getpid()}"
      probe.write_bytes(b"")
      probe.unlink()
    except OSError as error:
      raise WorkdirError(f"cannot write in {folder}: {error.strerror or error}") from None
  lock = pathlib.Path(f"{results.runs_path(workdir)}{results.LOCK_SUFFIX}")
  try:
    os.close(os.open(lock, os.O_RDWR | os.O_CREAT, 0o644))
  except OSError as error:
    raise WorkdirError(f"cannot write the lock file {lock}: {error.strerror or error}") from None


def final_state_dir(workdir: pathlib.Path, run_id: str) -> pathlib.Path:
  return pathlib.Path(workdir) / "checkpoints" / run_id


def collapse_reason(kept: int, total: int, test_loss: float, initial_test_loss: float,
                    test_accuracy: float | None = None,
                    initial_test_accuracy: float | None = None,
                    started_untrained: bool = True) -> str | None:
  """Why a finished run collapsed, or ``None`` for a healthy one.

  A run collapses when every prunable parameter is pruned (the network is
  its biases alone), or when it ends no better than its untrained network:
  a final test loss worse than the initial network's and, for
  classification, a test accuracy no better (an overconfident classifier
  can have a large test loss and a good accuracy). Nothing became
  non-finite, so the divergence guard did not fire; a learning rate far too
  high typically gives either. A run that started from a trained network
  (``init_from``, ``started_untrained=False``) is only held to the first
  test: pruning a trained network may well leave it a little worse than it
  started.
  """
  if total > 0 and kept == 0:
    return f"every prunable parameter was pruned (kept 0 of {total})"
  no_better = test_accuracy is None or test_accuracy <= initial_test_accuracy
  if started_untrained and test_loss > initial_test_loss and no_better:
    reason = (f"its final test loss {test_loss:.5g} is worse than its initial network's "
              f"{initial_test_loss:.5g}")
    if test_accuracy is not None:
      reason += (f" and its test accuracy {test_accuracy:.4f} no better than the initial "
                 f"{initial_test_accuracy:.4f}")
    return reason
  return None


def _compaction(model, state) -> dict[str, Any]:
  """The row's compaction fields (:func:`compaction_fields`); a model the compaction
  cannot handle gets ``compact_error`` instead, and its run still finishes."""
  try:
    return compaction_fields(model, state.params, state.model_state, state.masks)
  except Exception as error:  # pylint: disable=broad-except  (a report, not the run)
    return {"compact_error": f"{type(error).__name__}: {error}"}


def record_seed(config: ml_collections.ConfigDict, workdir: pathlib.Path, *, recipe: Recipe,
                model, index: int, state, aux, metrics: dict[str, float], phase_names: Sequence[str],
                curves: dict[str, dict[str, np.ndarray]], meta: dict,
                seeds_in_program: int, initial_test: dict[str, float]) -> dict[str, Any]:
  """Writes one seed's artifacts, final state and row (module docstring); returns the row."""
  run_id = run_id_of(config)
  artifacts = hosts.artifact_dir(results.artifact_dir(workdir, run_id))
  summary = masks_lib.summary(state.masks, state.params)
  total = summary["total"]
  row = dict(relevant_fields(config))
  diverged = meta["diverged"][index]
  row.update(run_id=run_id, timestamp=datetime.now(timezone.utc).isoformat(timespec="seconds"),
             wall_time_s=round(float(meta["wall_time_s"]), 3), seeds_in_program=seeds_in_program,
             status="finished" if diverged is None else "diverged")
  if diverged is not None:
    row.update({f"diverged_{k}": v for k, v in diverged.items()})
  else:
    row.update(metrics)
    row.update(kept_params=total["kept"], total_params=total["total"],
               density=total["density"], compression=total["compression"],
               **{f"initial_test_{name}": value for name, value in initial_test.items()})
    reason = collapse_reason(total["kept"], total["total"], metrics["final_test_loss"],
                             initial_test["loss"], metrics.get("final_test_accuracy"),
                             initial_test.get("accuracy"), started_untrained=not config.init_from)
    if reason is not None:
      row.update(status="collapsed", collapse_reason=reason)
  for name in phase_names:
    outcome = meta["phases"].get(name, {})
    row[f"{name}_epochs"] = int(outcome.get("epochs", [0] * (index + 1))[index])
    row[f"{name}_converged"] = bool(outcome.get("converged", [False] * (index + 1))[index])
    row[f"{name}_returned_best_state"] = bool(
        outcome.get("returned_best_state", [False] * (index + 1))[index])
  epochs = [row[f"{name}_epochs"] for name in phase_names]
  results.write_curves(artifacts, joined_curves(curves, phase_names, epochs, index,
                                                total["density"]))
  results.write_layer_counts(artifacts, summary)
  results.write_masks(artifacts, state.masks)
  results.write_config(artifacts, config)
  outcome = Outcome(index=index, state=state, aux=aux,
                    stages={name: r[index] for name, r in meta["stages"].items()},
                    events=meta["events"], artifacts=artifacts, model=model)
  if diverged is None:
    row.update(recipe.row(config, outcome))
    row.update(_compaction(model, state))
  with checkpoint_lib.Checkpointer(final_state_dir(workdir, run_id), max_to_keep=1) as ckpt:
    step = (ckpt.latest_step() or 0) + 1
    ckpt.save(step, {"state": state}, {"run_id": run_id})
  if hosts.is_writer():
    results.replace_runs(workdir, [row])  # one row per run id, whoever wrote it before
  return row


def joined_curves(curves: dict[str, dict[str, np.ndarray]], phase_names: Sequence[str],
                  epochs: Sequence[int], index: int, final_density: float) -> dict[str, list]:
  """One seed's curves of every phase, end to end, with ``phase`` and ``density`` columns.

  ``density`` is 1 in the first phase and the final density after it (the
  masks change between phases, at the pruning).
  """
  names = sorted({name for phase in phase_names for name in curves.get(phase, {})})
  joined: dict[str, list] = {name: [] for name in names + ["phase", "density"]}
  for number, (phase, n) in enumerate(zip(phase_names, epochs)):
    phase_curves = curves.get(phase, {})
    for name in names:
      values = phase_curves.get(name)
      row = [] if values is None else values[index, :n].tolist()
      joined[name].extend(row + [float("nan")] * (n - len(row)))
    joined["phase"].extend([number] * n)
    joined["density"].extend([1.0 if number == 0 else final_density] * n)
  return joined


def teacher_size(config) -> int | None:
  """Parameters of the teacher (teacher-student runs), else ``None``."""
  if config.dataset != "teacher_student":
    return None
  w = list(config.architecture_teacher)
  return int(sum(a * b + b for a, b in zip(w[:-1], w[1:])))


def diverged_line(row: dict) -> str:
  return (f"{row['run_id']} (seed {row['seed']}) diverged: {row['diverged_quantity']} not "
          f"finite in phase {row['diverged_phase']!r} at epoch {row['diverged_epoch']}")


def collapsed_line(row: dict) -> str:
  return f"{row['run_id']} (seed {row['seed']}) collapsed: {row['collapse_reason']}"


def print_summary(config: ml_collections.ConfigDict, workdir: pathlib.Path,
                  rows: Sequence[dict]) -> None:
  """The final summary (printed even when ``quiet``); a sweep also writes its files.

  Diverged seeds are listed and left out of the summary.
  """
  rows = [row for row in rows if row.get("status") != "diverged"]
  if not rows:
    return
  if len(rows) == 1:
    print(seed_line(config, rows[0]), flush=True)
    return
  summary = summarize(config, rows)
  write_sweep_summary(config, workdir, rows, summary)
  print(format_summary(summary), flush=True)


def seed_line(config, row: dict) -> str:
  """One finished seed: kept parameters and test figures; for teacher-student runs the
  kept count against the teacher's, and the test MSE against the noise variance (with the
  Gaussian code length, the loss is that code length in bits per point)."""
  loss = ("test code length {:.5g} bits per point" if "final_sigma" in row
          else "test loss {:.5g}").format(row["final_test_loss"])
  line = (f"{row['run_id']}: kept {row['kept_params']}/{row['total_params']} parameters "
          f"(density {row['density']:.4f}), {loss}")
  if "final_test_accuracy" in row:
    line += f", test accuracy {100 * row['final_test_accuracy']:.2f}%"
  if "final_test_mse" in row and "final_sigma" in row:
    line += f", test MSE {row['final_test_mse']:.5g}"
  teacher = teacher_size(config)
  if teacher is not None:
    line += (f"; the teacher has {teacher} parameters (kept {row['kept_params'] / teacher:.2f}x), "
             f"noise variance {config.noise ** 2:.4g}")
  if row.get("status") == "collapsed":
    line += f"; COLLAPSED: {row['collapse_reason']}"
  return line


def summarize(config, rows: Sequence[dict]) -> dict[str, Any]:
  """Quantiles of kept parameters and test metrics, collapsed seeds, and the seeds that
  did not collapse and kept at most the teacher's size."""
  collapsed = [r for r in rows if r.get("status") == "collapsed"]
  summary: dict[str, Any] = {"seeds": len(rows), "collapsed_seeds": len(collapsed)}
  for column in ("kept_params", "final_test_loss", "final_test_mse", "final_test_accuracy"):
    if column in rows[0]:
      values = np.asarray([float(r[column]) for r in rows])
      summary[column] = {f"q{int(q * 100)}": float(np.quantile(values, q)) for q in QUANTILES}
  teacher = teacher_size(config)
  if teacher is not None:
    summary["teacher_params"] = teacher
    summary["seeds_at_most_teacher"] = int(sum(
        r["kept_params"] <= teacher for r in rows if r.get("status") != "collapsed"))
  return summary


def format_summary(summary: dict[str, Any]) -> str:
  lines = [f"sweep of {summary['seeds']} seeds:"]
  for column in ("kept_params", "final_test_loss", "final_test_mse", "final_test_accuracy"):
    if column in summary:
      q = summary[column]
      lines.append(f"  {column}: median {q['q50']:.5g}, quartiles {q['q25']:.5g}..{q['q75']:.5g}, "
                   f"10%..90% {q['q10']:.5g}..{q['q90']:.5g}")
  collapsed = summary.get("collapsed_seeds", 0)
  if "teacher_params" in summary:
    lines.append(f"  seeds with kept <= the teacher's {summary['teacher_params']}: "
                 f"{summary['seeds_at_most_teacher']} of {summary['seeds']}"
                 + (" (collapsed seeds not counted)" if collapsed else ""))
  if collapsed:
    lines.append(f"  COLLAPSED: {collapsed} of {summary['seeds']} seeds (status=collapsed in "
                 "runs.csv)")
  return "\n".join(lines)


def write_sweep_summary(config, workdir: pathlib.Path, rows: Sequence[dict],
                        summary: dict[str, Any]) -> None:
  """``sweep_<experiment>.json`` and a histogram of kept parameters (PNG)."""
  name = f"sweep_{config.experiment_name}"
  (pathlib.Path(workdir) / f"{name}.json").write_text(json.dumps(summary, indent=2))
  fig = figure.Figure(figsize=(6, 3.5), layout="constrained")
  backend_agg.FigureCanvasAgg(fig)  # its own canvas: pyplot's backend is left alone
  ax = fig.add_subplot()
  ax.hist([r["kept_params"] for r in rows], bins=30, color="tab:blue")
  teacher = summary.get("teacher_params")
  if teacher is not None:
    ax.axvline(teacher, color="tab:red", linestyle="--", label=f"teacher ({teacher})")
    ax.legend()
  ax.set_xlabel("kept parameters")
  ax.set_ylabel("seeds")
  ax.set_title(f"{config.experiment_name}: {summary['seeds']} seeds")
  fig.savefig(pathlib.Path(workdir) / f"{name}_kept.png", dpi=120)
