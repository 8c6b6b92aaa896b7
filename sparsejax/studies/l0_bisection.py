"""The penalty weight that gives a target density: a vmapped grid, then bisection.

``python -m sparsejax.studies.l0_bisection --config=configs/l0_mlp_mnist.py:penalty_grid
--workdir=DIR [--target=0.5] [--tolerance=0.005] [--max_trainings=8]``

The penalised hard-concrete objective (:mod:`sparsejax.recipes.l0`) has no
handle on the density it reaches; the constrained-sparsity reference
searches :math:`\\log_{10}\\lambda \\in [-3, 0]` by bisection, one full
training after another (reference notes, section 4: six trainings to land at
0.5006). Here

1. the config's penalty sweep (``l0.penalty_sweep``: one weight per seed)
   trains the whole grid as **one vmapped program**;
2. the two adjacent grid weights whose expected densities straddle
   ``--target`` bracket the answer (the density falls as :math:`\\lambda`
   grows);
3. bisection on :math:`\\log_{10}\\lambda` inside the bracket trains one
   penalised run (seed ``config.seed``) at each midpoint until the density is
   within ``--tolerance`` of the target, or ``--max_trainings`` runs.

Every run resumes and is skipped when finished, as any run. The table lists
every training (grid and bisection) with its weight, expected density, test
accuracy and wall time, and the line after it how many trainings the search
took.
"""

from __future__ import annotations

import math
import pathlib

import ml_collections
import pandas as pd
from absl import app, flags
from ml_collections import config_flags

from sparsejax import xla_flags
from sparsejax.fields import ConfigError
from sparsejax.runner import run
from sparsejax.studies import cli
from sparsejax.studies.report import markdown


def _summary(row: dict, source: str) -> dict:
  return {"source": source, "lambda": row["l0_multiplier_0"],
          "log10 lambda": math.log10(row["l0_multiplier_0"]),
          "expected density": row["l0_density"],
          "test accuracy %": 100 * row["final_test_accuracy"],
          "wall time s": row["wall_time_s"]}


def grid(config: ml_collections.ConfigDict, workdir: pathlib.Path) -> pd.DataFrame:
  """The penalty sweep of ``config`` as one program; one row per weight."""
  if not (config.l0.formulation == "penalized" and config.l0.penalty_sweep):
    raise ConfigError("the config must be a penalty sweep (l0.formulation 'penalized', "
                      "l0.penalty_sweep true), e.g. configs/l0_mlp_mnist.py:penalty_grid")
  rows = run(config, workdir)
  return pd.DataFrame([_summary(row, "grid") for row in rows]).sort_values("lambda")


def bracket(frame: pd.DataFrame, target: float) -> tuple[float, float]:
  """Adjacent ``log10 lambda`` whose densities straddle ``target`` (low, high)."""
  frame = frame.sort_values("lambda")
  logs, densities = list(frame["log10 lambda"]), list(frame["expected density"])
  for i in range(len(logs) - 1):
    if densities[i] >= target >= densities[i + 1]:
      return logs[i], logs[i + 1]
  raise ValueError(f"no two adjacent grid weights straddle the target {target}: densities "
                   f"{[round(d, 4) for d in densities]} at log10 lambda {logs}")


def single(config: ml_collections.ConfigDict, penalty: float) -> ml_collections.ConfigDict:
  """One penalised training at ``penalty`` with the sweep's set-up (seed ``config.seed``)."""
  config = config.copy_and_resolve_references()
  config.l0.penalty_sweep = False
  config.l0.penalty = (penalty,)
  config.seeds = 1
  config.experiment_name = f"{config.experiment_name}_bisection"
  return config


def bisect(config: ml_collections.ConfigDict, workdir: pathlib.Path, low: float, high: float,
           target: float, tolerance: float, max_trainings: int) -> pd.DataFrame:
  """Bisection of ``log10 lambda`` in ``[low, high]``; one row per training."""
  rows = []
  for _ in range(max_trainings):
    middle = (low + high) / 2
    row = _summary(run(single(config, round(10 ** middle, 8)), workdir)[0], "bisection")
    rows.append(row)
    if abs(row["expected density"] - target) <= tolerance:
      break
    if row["expected density"] > target:
      low = middle
    else:
      high = middle
  return pd.DataFrame(rows)


def search(config: ml_collections.ConfigDict, workdir: pathlib.Path, target: float,
           tolerance: float, max_trainings: int) -> pd.DataFrame:
  """The grid, then bisection inside its bracket (module docstring)."""
  found = grid(config, workdir)
  if ((found["expected density"] - target).abs() <= tolerance).any():
    return found
  low, high = bracket(found, target)
  return pd.concat([found, bisect(config, workdir, low, high, target, tolerance,
                                  max_trainings)], ignore_index=True)


def main(argv):
  cli.start(argv, _CONFIG.value)
  f = flags.FLAGS
  frame = search(_CONFIG.value, pathlib.Path(f.workdir), f.target, f.tolerance, f.max_trainings)
  print(markdown(frame.round({"log10 lambda": 4, "expected density": 4, "test accuracy %": 2,
                              "wall time s": 0})))
  hits = (frame["expected density"] - f.target).abs() <= f.tolerance
  grid_size = int((frame["source"] == "grid").sum())
  bisections = int((frame["source"] == "bisection").sum())
  outcome = "reached" if hits.any() else "did not reach"
  print(f"\n{outcome} {f.target} +- {f.tolerance} after one program of {grid_size} weights "
        f"and {bisections} bisection training(s)")


if __name__ == "__main__":
  xla_flags.apply()  # before JAX starts a backend: XLA reads XLA_FLAGS once
  _CONFIG = config_flags.DEFINE_config_file("config", None, "A penalty-sweep L0 config file.")
  flags.DEFINE_string("workdir", None, "Where the runs go.")
  flags.DEFINE_float("target", 0.5, "The expected density to reach.")
  flags.DEFINE_float("tolerance", 0.005, "How close counts as reached (0.005 = 0.5 points).")
  flags.DEFINE_integer("max_trainings", 8, "Bisection trainings at most.")
  flags.mark_flags_as_required(["config", "workdir"])
  app.run(main)
