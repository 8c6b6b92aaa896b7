"""Markdown tables of a workdir's runs: per run, and medians per method.

``python -m sparsejax.studies.report --workdir=DIR [--columns a,b,...]`` prints
the rows of ``DIR/runs.csv`` as a Markdown table (the tables of
``docs/results/`` are made this way) followed by the median of every
numeric column per ``method`` and ``ec.alpha`` (the efficient-compression
family's penalty weight; ``alpha`` in a ``runs.csv`` written before the
family's fields moved to the ``ec`` sub-dict).
"""

from __future__ import annotations

import pathlib
from typing import Sequence

import pandas as pd
from absl import app, flags

from sparsejax import results

DEFAULT_COLUMNS = ("method", "ec.alpha", "seed", "kept_params", "total_params", "final_test_loss",
                   "final_test_accuracy", "train_epochs", "finetune_epochs", "wall_time_s")
GROUP = ("method", "ec.alpha", "alpha")


def markdown(frame: pd.DataFrame) -> str:
  """``frame`` as a Markdown table (numbers with 4 significant digits)."""
  def cell(value):
    if isinstance(value, float):
      return f"{value:.4g}"
    return str(value)
  lines = ["| " + " | ".join(frame.columns) + " |", "|" + "---|" * len(frame.columns)]
  lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
  return "\n".join(lines)


def finished(runs: pd.DataFrame) -> pd.DataFrame:
  """The rows of runs that finished healthy: not ``diverged`` nor ``collapsed`` (a table
  without a ``status`` column: all of them)."""
  if "status" not in runs:
    return runs
  return runs[runs["status"].fillna("finished") == "finished"]


def mean_std(values: pd.Series, digits: int = 2) -> str:
  """``"mean +- std"`` over seeds (the sample standard deviation; 0 for one value)."""
  values = values.astype(float).to_numpy()
  std = values.std(ddof=1) if len(values) > 1 else 0.0
  return f"{values.mean():.{digits}f} +- {std:.{digits}f}"


def tables(runs: pd.DataFrame, columns: Sequence[str] = DEFAULT_COLUMNS) -> tuple[str, str]:
  """``(per-run table, medians per method and ec.alpha)`` of the columns present."""
  present = [c for c in columns if c in runs.columns]
  per_run = runs[present].sort_values([c for c in (*GROUP, "seed") if c in present])
  keys = [c for c in GROUP if c in present]
  numeric = [c for c in present if c not in keys and c != "seed"
             and pd.api.types.is_numeric_dtype(runs[c])]
  medians = runs.groupby(keys)[numeric].median().reset_index()
  medians.insert(len(keys), "runs", runs.groupby(keys).size().to_numpy())
  return markdown(per_run), markdown(medians)


def main(argv):
  del argv
  per_run, medians = tables(results.read_runs(pathlib.Path(flags.FLAGS.workdir)),
                            flags.FLAGS.columns)
  print(per_run)
  print()
  print(medians)


if __name__ == "__main__":
  flags.DEFINE_string("workdir", None, "The workdir whose runs.csv to tabulate.", required=True)
  flags.DEFINE_list("columns", list(DEFAULT_COLUMNS), "Columns of the tables.")
  app.run(main)
