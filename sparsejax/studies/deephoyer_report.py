"""DeepHoyer runs beside the COMP6248 reproduction's table (reference notes, section 1.6).

``python -m sparsejax.studies.deephoyer_report WORKDIR [--model=mlp|lenet5]
[--structure]`` prints, per regulariser, decay and sensitivity (the finished
``deephoyer`` rows; ``magnitude`` rows as the magnitude baseline), the
number of seeds and the mean +- std over seeds of the nonzero parameters
(%), the compression (total / nonzero) and the test accuracy (%), beside the
reproduction's nonzero %, compression and accuracy. The reproduction trained
from scratch and kept the best *test* epoch of finetuning; these runs keep
the best *validation* epoch. ``--structure`` adds, per run, the hidden
neurons and channels alive per layer and the dense network left after
deleting dead units.
"""

from __future__ import annotations

import pathlib

import numpy as np
import pandas as pd
from absl import app, flags

from sparsejax import results
from sparsejax.studies.report import finished, markdown, mean_std

#: (model, regulariser) -> (nonzero %, compression, test accuracy %) of the
#: COMP6248 reproduction (reference notes, section 1.6).
REPRODUCTION = {
    "mlp": {"none": (65.31, 1.53, 98.44), "l1": (2.03, 49.38, 96.21),
            "hoyer": (1.25, 79.99, 97.10), "hs": (3.72, 26.87, 97.99),
            "tl1": (3.09, 32.38, 98.24), "group_lasso": (6.19, 16.17, 97.78),
            "group_hs": (1.36, 73.75, 97.80)},
    "lenet5": {"none": (67.99, 1.47, 99.40), "l1": (0.47, 213.62, 98.59),
               "hoyer": (0.42, 237.12, 97.32), "hs": (1.41, 70.78, 99.17),
               "tl1": (1.05, 95.60, 99.16), "group_lasso": (0.60, 167.47, 98.65),
               "group_hs": (0.26, 383.86, 97.33)},
}
ORDER = ("none", "l1", "hoyer", "hs", "tl1", "group_lasso", "group_hs", "magnitude")


def table(runs: pd.DataFrame, model: str) -> pd.DataFrame:
  """One row per regulariser: ours (mean +- std) beside the reproduction's."""
  runs = finished(runs)
  runs = runs[runs["method"].isin(["deephoyer", "magnitude"])].copy()
  runs["regulariser"] = np.where(runs["method"] == "magnitude", "magnitude",
                                 runs.get("deephoyer.regulariser", "magnitude"))
  for field in ("deephoyer.decay", "deephoyer.sensitivity"):
    runs[field] = runs[field].astype(float) if field in runs else np.nan
  rows = []
  for (name, decay, sensitivity), group in sorted(
      runs.groupby(["regulariser", "deephoyer.decay", "deephoyer.sensitivity"], dropna=False),
      key=lambda item: (ORDER.index(item[0][0]), item[0][1], item[0][2])):
    ref = REPRODUCTION[model].get(name)
    rows.append({
        "regulariser": name,
        "decay": "" if name == "magnitude" else f"{decay:g}",
        "sensitivity": "" if name == "magnitude" else f"{sensitivity:g}",
        "seeds": len(group),
        "nonzero %": mean_std(100 * group["density"]),
        "compression": mean_std(group["compression"], 1),
        "test accuracy %": mean_std(100 * group["final_test_accuracy"]),
        "reproduction nonzero %": "" if ref is None else f"{ref[0]:.2f}",
        "reproduction compression": "" if ref is None else f"{ref[1]:.2f}",
        "reproduction accuracy %": "" if ref is None else f"{ref[2]:.2f}"})
  return pd.DataFrame(rows)


def structure(runs: pd.DataFrame) -> pd.DataFrame:
  """Per DeepHoyer run: units alive per layer and the dense network left after deletion."""
  runs = runs[runs["method"] == "deephoyer"]
  outputs = sorted((c for c in runs if c.startswith("alive_out_")),
                   key=lambda c: (not c.startswith("alive_out_Conv"), c))
  first = "alive_in_" + outputs[0][len("alive_out_"):]
  columns = ["deephoyer.regulariser", "seed", "kept_params", first, *outputs[:-1],
             "small_widths", "small_params"]
  frame = runs[[c for c in columns if c in runs]].copy()
  for column in ("kept_params", "small_params"):
    if column in frame:
      frame[column] = frame[column].astype("Int64")
  frame = frame.rename(columns=lambda c: c.replace("alive_out_", "alive ").replace(
      "alive_in_", "inputs alive ").replace("deephoyer.", ""))
  return frame.sort_values(["regulariser", "seed"], key=lambda col: col.map(
      lambda v: ORDER.index(v) if v in ORDER else v))


def main(argv):
  if len(argv) != 2:
    raise app.UsageError("give the workdir after the flags")
  runs = results.read_runs(pathlib.Path(argv[1]))
  print(markdown(table(runs, flags.FLAGS.model)))
  if flags.FLAGS.structure:
    print()
    print(markdown(structure(runs)))


if __name__ == "__main__":
  flags.DEFINE_enum("model", "mlp", ["mlp", "lenet5"], "Which reproduction table.")
  flags.DEFINE_bool("structure", False, "Also list each run's units alive per layer.")
  app.run(main)
