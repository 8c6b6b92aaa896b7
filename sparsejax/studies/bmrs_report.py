"""BMRS results beside the paper's Table 1: ``python -m sparsejax.studies.bmrs_report``.

Reads ``runs.csv`` of a workdir, groups the BMRS rows by network, data set
and criterion, and prints a Markdown table of mean ± standard deviation over
seeds (NumPy's ``ddof=1``): units pruned, parameters removed (ours and the
paper's measure, see :func:`sparsejax.pruning.bmr.parameter_compression`) and
test accuracy, beside the paper's Table 1 (Wright et al., 2024; continuous
pruning, 10 runs) with the differences.
"""

from __future__ import annotations

import pathlib
import sys

import numpy as np
import pandas as pd

from sparsejax import results

#: Paper Table 1: (network, data set) -> criterion -> (Comp. %, ±, Acc. %, ±).
PAPER_TABLE1: dict[tuple[str, str], dict[str, tuple[float, float, float, float]]] = {
    ("bmrs_mlp", "mnist"): {
        "none": (0.00, 0.00, 97.43, 0.14), "l2": (43.11, 2.06, 10.39, 0.32),
        "expected_theta": (52.08, 1.71, 96.88, 0.15), "snr": (58.57, 2.01, 96.92, 0.08),
        "bmrs_n": (48.86, 1.32, 96.95, 0.19), "bmrs_u8": (48.73, 1.90, 96.93, 0.16),
        "bmrs_u4": (54.47, 1.74, 96.99, 0.13)},
    ("bmrs_mlp", "fashion_mnist"): {
        "none": (0.00, 0.00, 88.17, 0.20), "l2": (87.86, 2.27, 18.23, 10.22),
        "expected_theta": (91.76, 0.81, 85.59, 0.26), "snr": (99.83, 0.00, 10.00, 0.00),
        "bmrs_n": (93.20, 0.66, 84.99, 0.35), "bmrs_u8": (93.02, 0.81, 85.01, 0.32),
        "bmrs_u4": (91.57, 0.71, 85.79, 0.34)},
    ("bmrs_mlp", "cifar10"): {
        "none": (0.00, 0.00, 44.94, 0.40), "l2": (42.89, 2.64, 10.00, 0.00),
        "expected_theta": (77.99, 1.54, 43.39, 0.46), "snr": (75.93, 1.26, 43.97, 0.46),
        "bmrs_n": (76.36, 1.08, 43.59, 0.29), "bmrs_u8": (77.17, 0.98, 43.45, 0.42),
        "bmrs_u4": (76.63, 0.94, 44.06, 0.40)},
    ("bmrs_lenet5", "mnist"): {
        "none": (0.00, 0.00, 99.07, 0.09), "l2": (83.42, 1.92, 11.35, 0.00),
        "expected_theta": (88.29, 1.00, 51.30, 41.12), "snr": (92.66, 5.77, 62.70, 41.93),
        "bmrs_n": (86.90, 1.15, 95.59, 0.94), "bmrs_u8": (86.11, 1.37, 95.27, 1.02),
        "bmrs_u4": (87.58, 1.01, 96.66, 0.59)},
    ("bmrs_lenet5", "fashion_mnist"): {
        "none": (0.00, 0.00, 89.16, 0.27), "l2": (83.62, 1.69, 10.00, 0.00),
        "expected_theta": (89.71, 0.56, 50.93, 33.45), "snr": (98.47, 3.45, 17.01, 21.03),
        "bmrs_n": (88.02, 1.00, 77.90, 2.44), "bmrs_u8": (87.61, 0.72, 77.23, 3.49),
        "bmrs_u4": (88.72, 0.73, 81.10, 1.50)},
    ("bmrs_lenet5", "cifar10"): {
        "none": (0.00, 0.00, 67.62, 0.77), "l2": (52.29, 2.18, 10.00, 0.00),
        "expected_theta": (66.19, 1.36, 65.83, 0.90), "snr": (70.29, 2.02, 67.68, 0.52),
        "bmrs_n": (62.87, 1.64, 66.14, 0.70), "bmrs_u8": (62.54, 1.49, 66.28, 1.07),
        "bmrs_u4": (68.07, 1.95, 67.66, 0.59)},
}


def criterion_label(row: pd.Series) -> str:
  """``bmrs_u8`` / ``bmrs_u4`` for BMRS_U, ``bmrs_n`` or ``bmrs_n_code`` for BMRS_N."""
  name = row["bmrs.criterion"]
  if name == "bmrs_u":
    return f"bmrs_u{float(row['bmrs.p1']):g}"
  if name == "bmrs_n" and row["bmrs.convention"] == "code":
    return "bmrs_n_code"
  return name


def _reference_measure(workdir: pathlib.Path, row: pd.Series) -> float:
  """The paper's parameter measure recomputed from a run's saved masks."""
  masks = results.read_masks(workdir / results.ARTIFACTS_DIR / row["run_id"])
  removed = sum(m.size - int(m.sum()) for name, m in masks.items()
                if name.startswith("weights/") and m.ndim >= 2)
  units = [m for name, m in masks.items() if name.startswith("units/")]
  pruned = sum(m.size - int(m.sum()) for m in units)
  n_units = sum(m.size for m in units)
  return 100.0 * (removed + 2 * pruned) / (int(row["total_params"]) + 2 * n_units)


def _mean_std(values: pd.Series) -> str:
  std = values.std(ddof=1) if len(values) > 1 else float("nan")
  return f"{values.mean():.2f} ± {std:.2f}"


def table(workdir: str | pathlib.Path) -> str:
  """The Markdown table of the module docstring for the BMRS runs in ``workdir``."""
  workdir = pathlib.Path(workdir)
  runs = results.read_runs(workdir)
  runs = runs[runs["method"] == "bmrs"].copy()
  if runs.empty:
    return "no BMRS runs in " + str(workdir)
  runs["label"] = runs.apply(criterion_label, axis=1)
  if "reference_parameter_compression" not in runs:
    runs["reference_parameter_compression"] = np.nan
  missing = runs["reference_parameter_compression"].isna()
  runs.loc[missing, "reference_parameter_compression"] = runs[missing].apply(
      lambda row: _reference_measure(workdir, row), axis=1)
  lines = ["| network | data | criterion | seeds | units pruned % | params removed % "
           "| Comp. % (paper's measure) | test acc. % | paper Comp. % | paper acc. % "
           "| Δ Comp. | Δ acc. |",
           "|" + "---|" * 12]
  for (arch, data, label), group in runs.groupby(["architecture", "dataset", "label"]):
    paper = PAPER_TABLE1.get((arch, data), {}).get(label.removesuffix("_code"))
    comp = group["reference_parameter_compression"]
    acc = 100 * group["final_test_accuracy"]
    cells = [arch, data, label, str(len(group)), _mean_std(group["unit_compression"]),
             _mean_std(group["parameter_compression"]), _mean_std(comp), _mean_std(acc)]
    if paper:
      cells += [f"{paper[0]:.2f} ± {paper[1]:.2f}", f"{paper[2]:.2f} ± {paper[3]:.2f}",
                f"{comp.mean() - paper[0]:+.2f}", f"{acc.mean() - paper[2]:+.2f}"]
    else:
      cells += ["", "", "", ""]
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines)


def main(argv: list[str]) -> None:
  workdir = argv[1] if len(argv) > 1 else "workdirs/bmrs_table1"
  print(table(workdir))


if __name__ == "__main__":
  main(sys.argv)
