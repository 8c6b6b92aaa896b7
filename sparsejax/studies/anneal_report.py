"""Pruning-at-initialisation runs beside the EEE 198 study's MLP table.

``python -m sparsejax.studies.anneal_report WORKDIR [WORKDIR ...]`` prints two
Markdown tables of the finished ``method="anneal"`` runs on weights (the
bias-free LeNet-300-100):

* one row per criterion, sparsity, dense epochs ``K`` and (for ``sa``)
  evaluation budget: the seeds, the **rewind** test accuracy (the mask on the
  initial weights) and the **trained** test accuracy (after the retraining,
  the epoch with the best validation accuracy), mean +- std over seeds, with
  the search's best level mean on its evaluation subset for ``sa``; beside
  them the reference's README numbers (reference notes
  ``jax_ecosystem_and_annealing.md``, section 2.8: mean of 3 runs, the
  trained figure the best *test* epoch);
* the orthogonality score of every masked layer at initialisation and their
  sum (section 2.6) per criterion at ``--os_sparsity`` (the reference's 70 %),
  beside the reference's sums.
"""

from __future__ import annotations

import pathlib

import pandas as pd
from absl import app, flags

from sparsejax import results
from sparsejax.studies.report import finished, markdown, mean_std

_OS_SPARSITY = flags.DEFINE_float("os_sparsity", 0.7, "sparsity of the orthogonality table")

#: (criterion, sparsity) -> (rewind %, trained %) of the reference's MLP table.
REFERENCE = {
    ("sa", 0.7): (61.22, 98.23), ("sa", 0.8): (61.87, 97.99), ("sa", 0.9): (61.75, 97.36),
    ("snip", 0.7): (11.31, 98.42), ("snip", 0.8): (10.57, 98.35), ("snip", 0.9): (10.33, 98.05),
    ("deconst", 0.7): (73.39, 98.47), ("deconst", 0.8): (82.37, 98.47),
    ("deconst", 0.9): (86.08, 98.47),
    ("lth", 0.7): (41.03, 98.48), ("lth", 0.8): (55.12, 98.60), ("lth", 0.9): (60.51, 98.50),
    ("random", 0.7): (10.17, 98.18), ("random", 0.8): (6.72, 98.04),
    ("random", 0.9): (10.22, 97.37),
}
#: criterion -> the reference's summed orthogonality score at 70 % (section 2.8).
REFERENCE_OS = {"sa": 0.01413, "random": 0.01412, "deconst": 0.01372, "lth": 0.01366,
                "snip": 0.01356}
#: The order of the reference's table.
ORDER = ("sa", "snip", "deconst", "lth", "random")


def _finished_weight_runs(runs: pd.DataFrame) -> pd.DataFrame:
  if runs.empty or "anneal.criterion" not in runs:
    return pd.DataFrame()
  runs = runs[(runs["method"] == "anneal") & (runs["anneal.units"] == "weights")]
  runs = finished(runs)
  runs = runs.copy()
  runs["budget"] = [int(e) if c == "sa" else 0 for c, e in
                    zip(runs["anneal.criterion"], runs["anneal.max_evaluations"])]
  return runs


def _groups(runs: pd.DataFrame, keys):
  def order(item):
    criterion, *rest = item[0]
    return (ORDER.index(criterion) if criterion in ORDER else len(ORDER), criterion, *rest)
  return sorted(runs.groupby(list(keys)), key=order)


def table(runs: pd.DataFrame) -> pd.DataFrame:
  """One row per criterion, sparsity, ``K`` and evaluation budget (module docstring)."""
  runs = _finished_weight_runs(runs)
  rows = []
  if runs.empty:
    return pd.DataFrame()
  for (criterion, sparsity, k_epochs, budget), group in _groups(
      runs, ("anneal.criterion", "anneal.sparsity", "anneal.k_epochs", "budget")):
    ref = REFERENCE.get((criterion, round(float(sparsity), 2)), ("", ""))
    searched = criterion == "sa"
    rows.append({
        "criterion": criterion, "sparsity %": f"{100 * sparsity:g}", "K epochs": int(k_epochs),
        "SA evaluations": f"{int(group['sa_evaluations'].iloc[0]):,}" if searched else "",
        "seeds": len(group),
        "SA best level mean %": mean_std(group["sa_best_mean"]) if searched else "",
        "rewind accuracy %": mean_std(100 * group["rewind_test_accuracy"]),
        "trained accuracy %": mean_std(100 * group["final_test_accuracy"]),
        "reference rewind %": f"{ref[0]}", "reference trained %": f"{ref[1]}"})
  return pd.DataFrame(rows)


def orthogonality_table(runs: pd.DataFrame, sparsity: float) -> pd.DataFrame:
  """The orthogonality score per masked layer and summed, per criterion at ``sparsity``."""
  runs = _finished_weight_runs(runs)
  if runs.empty:
    return pd.DataFrame()
  runs = runs[(runs["anneal.sparsity"] - sparsity).abs() < 1e-9]
  layers = sorted(c for c in runs if c.startswith("os_") and c != "os_sum")
  rows = []
  for (criterion, budget), group in _groups(runs, ("anneal.criterion", "budget")):
    row = {"criterion": criterion, "seeds": len(group)}
    row.update({layer[3:]: mean_std(group[layer], 5) for layer in layers})
    row["sum"] = mean_std(group["os_sum"], 5)
    row["reference sum"] = f"{REFERENCE_OS[criterion]}" if criterion in REFERENCE_OS else ""
    rows.append(row)
  return pd.DataFrame(rows)


def main(argv):
  if len(argv) < 2:
    raise app.UsageError("give one or more workdirs")
  runs = pd.concat([results.read_runs(pathlib.Path(w)) for w in argv[1:]], ignore_index=True)
  print(markdown(table(runs)))
  print()
  print(markdown(orthogonality_table(runs, _OS_SPARSITY.value)))


if __name__ == "__main__":
  app.run(main)
