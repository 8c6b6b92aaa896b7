"""Every family on one network under one protocol: the accuracy-density Pareto study.

``python -m sparsejax.studies.compare --config=configs/compare_lenet300_mnist.py
[--config.only=magnitude,rigl] [--workdir=DIR] [--out=docs/figures] [--report_only]``

Each family's results in its own paper come from its own protocol (splits,
epoch budgets, selection on test or on validation, densities), so they do
not compare. This study runs every method of a config's table on the same
network and data under one protocol:

* **the same data**: the config's ``protocol`` fields (data set, validation
  share, input scaling) override every family's own; the test split is the
  official one, measured once at the end of each run;
* **the same budget**: every method's phases share ``epochs`` (the whole
  procedure: pretraining, regularised or sparse training, finetuning), in
  the shares its table entry states (``epochs``: field -> share; a phase's
  ``min`` field is set to its ``max``, so it runs exactly that long); the
  table's ``epochs`` column is what each run recorded;
* **choices on validation only**: each family's own selection, which
  reads the validation split (best validation epoch, TAMADE calibrated on
  validation, convergence on the validation loss); none reads the test split;
* **operating points**: a family that takes a target density gets each of
  ``densities`` (as its density, or its sparsity ``1 - d``); a penalty
  family runs its strength grid (``strengths``) and is placed at the density it
  reaches; the table marks, per target, the point nearest to it (on a log
  scale) with ``~10 %``;
* **your own model and data**: ``model`` (``'package.module:Class'``, with
  ``model_kwargs``) replaces the registered ``network`` in every run, and
  ``protocol.dataset`` takes ``npz:PATH`` or a tensorflow-datasets name, as a
  single run does; a family that needs something of the model says which
  capability is missing before any training, and the study goes on without it;
* ``seeds`` seeds per point, vmapped in one program; every point is an
  ordinary run (its row in ``DIR/runs.csv``, checkpoints, resumable: a
  finished point is skipped, an interrupted one resumes).

Outputs (in ``DIR``, and the figures also in ``--out``): ``compare.md``
(the table: method, family, operating point, density, nonzero and compacted
MACs and parameters, test accuracy mean +- std over seeds, validation
accuracy, epochs, wall time), ``compare.csv`` (the same, unrounded) and two
Pareto plots, test accuracy against density (log axis) and against the
nonzero MACs per example (:func:`sparsejax.compaction.cost.nonzero_macs`).
Random pruning and magnitude pruning are the baselines (Blalock et al. 2020,
"What is the State of Neural Network Pruning?": several operating points,
mean and spread over seeds, the baselines always present); a config must
name both.
"""

from __future__ import annotations

import importlib
import math
import pathlib
from typing import Any

import ml_collections
import numpy as np
import pandas as pd
from absl import app, flags
from ml_collections import config_flags

from sparsejax import results, xla_flags
from sparsejax.fields import ConfigError
from sparsejax.runner import run
from sparsejax.runner.config import MissingCapability
from sparsejax.studies import cli
from sparsejax.studies.report import finished, markdown, mean_std

#: How a method's operating point sets its field: the target density ``d``
#: itself, the sparsity ``1 - d``, or one of the method's ``strengths`` (a
#: penalty strength; ``fixed``: the method has no knob, one point).
KINDS = ("density", "sparsity", "strength", "fixed")
#: A phase's epoch field -> its minimum, set to the same value.
MINIMUM_OF = {"max_epochs": "min_epochs", "finetuning_max_epochs": "finetuning_min_epochs"}
#: Every config must hold these two methods (the baselines).
BASELINES = ("magnitude", "random")


def methods(config: ml_collections.ConfigDict) -> list[str]:
  """The labels of the methods to run: ``config.only`` (comma-separated), or all of them,
  the baselines first.

  Raises:
    ConfigError: a label of ``only`` is not in the table, or a baseline is missing.
  """
  table = list(config.methods.keys())
  for baseline in BASELINES:
    if baseline not in table:
      raise ConfigError(f"config field 'methods' lacks the baseline {baseline!r}; "
                        f"every comparison holds {', '.join(BASELINES)}")
  only = [label.strip() for label in config.only.split(",") if label.strip()]
  for label in only:
    if label not in table:
      raise ConfigError(f"config field 'only' names {label!r}; accepted values: "
                        f"{', '.join(table)}")
  return only or [*BASELINES, *(label for label in table if label not in BASELINES)]


def operating_points(config: ml_collections.ConfigDict, label: str) -> list[Any]:
  """The values of ``label``'s operating-point field, one per run."""
  method = config.methods[label]
  if method.kind not in KINDS:
    raise ConfigError(f"config field 'methods.{label}.kind' is {method.kind!r}; accepted "
                      f"values: {', '.join(KINDS)}")
  if method.kind == "fixed":
    return [None]
  if method.kind == "strength":
    if not method.strengths:
      raise ConfigError(f"config field 'methods.{label}.strengths' is empty: a strength "
                        "grid needs at least one value")
    return list(method.strengths)
  return [1.0 - d if method.kind == "sparsity" else d for d in config.densities]


def epoch_split(budget: int, shares) -> dict[str, int]:
  """``budget`` epochs split by ``shares`` (field, share) pairs, summing to ``budget``
  (rounded; the last field takes what rounding leaves)."""
  total = sum(share for _, share in shares)
  if not math.isclose(total, 1.0, abs_tol=1e-6):
    raise ConfigError(f"epoch shares {dict(shares)} sum to {total:g}, not 1")
  split, given = {}, 0
  for i, (field, share) in enumerate(shares):
    split[field] = budget - given if i == len(shares) - 1 else int(round(share * budget))
    given += split[field]
  return split


def family_config(config: ml_collections.ConfigDict, label: str, point: Any
                  ) -> ml_collections.ConfigDict:
  """The run of ``label`` at ``point``: its family's config file under the study's
  protocol, budget, seeds and network."""
  from configs import common  # the config files' helpers (the repository root on sys.path)
  method = config.methods[label]
  module, _, argument = method.source.partition(":")
  family = importlib.import_module(f"configs.{module}")
  run_config = family.get_config(argument) if argument else family.get_config()
  run_config.architecture = config.network
  run_config.model, run_config.model_kwargs = config.model, config.model_kwargs
  common.set_fields(run_config, dict(config.protocol))
  for field, epochs in epoch_split(config.epochs, method.epochs).items():
    common.set_fields(run_config, {field: epochs})
    if field in MINIMUM_OF:
      common.set_fields(run_config, {MINIMUM_OF[field]: epochs})
  common.set_fields(run_config, dict(method.fields))
  if point is not None:
    common.set_fields(run_config, {method.field: tuple([point]) if method.as_tuple else point})
  run_config.seeds, run_config.seed = config.seeds, config.seed
  run_config.quiet = config.quiet
  run_config.experiment_name = f"{config.name}_{label}"
  return run_config


def run_study(config: ml_collections.ConfigDict, workdir: pathlib.Path) -> dict[str, str]:
  """Runs (or resumes, or skips) every point of every method; returns ``{label: why}`` of
  the methods left out because the model lacks a capability they need (said before
  any of their training, and printed)."""
  left_out = {}
  for label in methods(config):
    try:
      for point in operating_points(config, label):
        run(family_config(config, label, point), workdir)
    except MissingCapability as error:
      left_out[label] = str(error)
      print(f"left out {label}: {error}")
  return left_out


# --------------------------------------------------------------------------
# The table and the plots


def _point_of(config, label, row) -> Any:
  method = config.methods[label]
  if method.kind == "fixed":
    return None
  value = row[method.field]
  if isinstance(value, str):  # a tuple field, recorded as JSON ("[0.1]")
    value = float(value.strip("()[], ").split(",")[0])
  return 1.0 - value if method.kind == "sparsity" else value


def _phase_epochs(row: pd.Series) -> int:
  """The epochs a run trained: the sum of its phases' ``<phase>_epochs``."""
  phases = [c[:-len("_converged")] for c in row.index if c.endswith("_converged")]
  return int(sum(row[f"{p}_epochs"] for p in phases
                 if f"{p}_epochs" in row and pd.notna(row[f"{p}_epochs"])))


def table(config: ml_collections.ConfigDict, runs: pd.DataFrame) -> pd.DataFrame:
  """One row per method and operating point with finished runs (means over seeds)."""
  runs = finished(runs)
  rows = []
  for label in methods(config):
    mine = runs[runs["experiment_name"] == f"{config.name}_{label}"] if len(runs) else runs
    if mine.empty:
      continue
    points = [_point_of(config, label, r) for _, r in mine.iterrows()]
    mine = mine.copy().assign(point=[-1.0 if p is None else p for p in points])
    for point, group in mine.groupby("point", sort=True):
      method = config.methods[label]
      rows.append({
          "method": label, "family": group["method"].iloc[0],
          "point": "" if method.kind == "fixed" else
                   f"{'density' if method.kind != 'strength' else method.field} {point:g}",
          "seeds": len(group), "density %": 100 * group["density"].mean(),
          "nonzero MACs": _mean(group, "nonzero_macs"),
          "compact MACs": _mean(group, "compact_macs"),
          "compact params": _mean(group, "compact_params"),
          "test accuracy %": mean_std(100 * group["final_test_accuracy"]),
          "test mean": 100 * group["final_test_accuracy"].mean(),
          "test std": 100 * group["final_test_accuracy"].std(ddof=1) if len(group) > 1 else 0.0,
          "val accuracy %": 100 * group["final_val_accuracy"].mean(),
          "epochs": max(_phase_epochs(r) for _, r in group.iterrows()),
          "wall time s": group["wall_time_s"].max(),
          "baseline": label in BASELINES, "strength": method.kind == "strength"})
  frame = pd.DataFrame(rows)
  if not frame.empty:
    frame["nearest"] = nearest_targets(frame, config.densities)
  return frame


def _mean(group: pd.DataFrame, column: str) -> float:
  return float(group[column].mean()) if column in group else math.nan


def nearest_targets(frame: pd.DataFrame, densities) -> list[str]:
  """Per strength-grid method, ``~d %`` on its point nearest (log scale) to each target."""
  marks = [""] * len(frame)
  for _, group in frame[frame["strength"]].groupby("method"):
    for d in densities:
      distance = np.abs(np.log(group["density %"].to_numpy() / (100 * d)))
      at = group.index[int(np.argmin(distance))]
      marks[frame.index.get_loc(at)] += f"~{100 * d:g} % "
  return [m.strip() for m in marks]


COLUMNS = ("method", "family", "point", "nearest", "seeds", "density %", "nonzero MACs",
           "compact MACs", "compact params", "test accuracy %", "val accuracy %", "epochs",
           "wall time s")


def pareto_plots(frame: pd.DataFrame, title: str, prefix: pathlib.Path) -> list[pathlib.Path]:
  """Test accuracy (mean, error bars: std over seeds) against density and against nonzero
  MACs, both on log axes, a line per method (baselines dashed; a colour and marker of
  its own for each of up to 20 methods); returns the files."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  paths = []
  colours, markers = plt.get_cmap("tab20").colors, "osD^v<>ph*"
  for x, xlabel, suffix in (("density %", "density (% of parameters kept)", "density"),
                            ("nonzero MACs", "MACs per example with a nonzero weight", "macs")):
    figure, axis = plt.subplots(figsize=(7.5, 5))
    for i, (label, group) in enumerate(frame.groupby("method", sort=False)):
      group = group.sort_values(x)
      axis.errorbar(group[x], group["test mean"], yerr=group["test std"],
                    color=colours[(2 * i) % 20 + (2 * i) // 20 % 2], marker=markers[i % 10],
                    capsize=2, label=label, linestyle="--" if group["baseline"].iloc[0] else "-")
    axis.set_xscale("log")
    axis.set_xlabel(xlabel)
    axis.set_ylabel("test accuracy % (mean +- std over seeds)")
    axis.set_title(title)
    axis.grid(True, which="both", alpha=0.3)
    axis.legend(fontsize=7, ncol=2)
    figure.tight_layout()
    path = prefix.parent / f"{prefix.name}_{suffix}.png"
    figure.savefig(path, dpi=120)
    plt.close(figure)
    paths.append(path)
  return paths


def report(config: ml_collections.ConfigDict, workdir: pathlib.Path,
           out: pathlib.Path | None = None) -> pd.DataFrame:
  """Writes ``compare.md``, ``compare.csv`` and the plots; returns the table."""
  frame = table(config, results.read_runs(workdir))
  if frame.empty:
    return frame
  frame.to_csv(workdir / "compare.csv", index=False)
  shown = frame[list(COLUMNS)].round({"density %": 3, "val accuracy %": 2})
  for column in ("nonzero MACs", "compact MACs", "compact params", "wall time s"):
    shown[column] = [f"{v:,.0f}" if pd.notna(v) else "" for v in shown[column]]
  (workdir / "compare.md").write_text(markdown(shown) + "\n")
  for directory in {workdir / "figures", *([out] if out else [])}:
    directory.mkdir(parents=True, exist_ok=True)
    pareto_plots(frame, config.title, directory / config.name)
  return frame


def main(argv):
  config = _CONFIG.value
  cli.start(argv, config)
  workdir = pathlib.Path(flags.FLAGS.workdir or config.workdir)
  if not flags.FLAGS.report_only:
    run_study(config, workdir)
  out = pathlib.Path(flags.FLAGS.out) if flags.FLAGS.out else None
  frame = report(config, workdir, out)
  print(markdown(frame[list(COLUMNS)]) if not frame.empty else f"no finished run in {workdir}")


if __name__ == "__main__":
  xla_flags.apply()  # before JAX starts a backend: XLA reads XLA_FLAGS once
  _CONFIG = config_flags.DEFINE_config_file("config", None, "A configs/compare_*.py file.")
  flags.DEFINE_string("workdir", None, "Where the runs go (default: the config's workdir).")
  flags.DEFINE_string("out", None, "Also write the plots here (e.g. docs/figures).")
  flags.DEFINE_bool("report_only", False, "Only the table and plots of the finished runs.")
  flags.mark_flags_as_required(["config"])
  app.run(main)
