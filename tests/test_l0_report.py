"""sparsejax.studies.l0_report: the constrained runs beside the reference's numbers."""

import pandas as pd
import pytest

from sparsejax.studies import l0_report


def _run(targets, density, accuracy, seed, layers=None, formulation="lagrangian"):
  row = {"architecture": "lenet_300_100", "l0.formulation": formulation,
         "l0.target_density": str(list(targets)), "l0.dual_lr": 1e-3, "max_epochs": 200,
         "seed": seed, "l0_density": density, "final_test_accuracy": accuracy,
         "purged_params_pct": 10.0 + seed, "purged_macs_pct": 9.0, "status": "finished"}
  for name, value in zip(("Dense_0", "Dense_1", "Dense_2"), layers or (None,) * 3):
    row[f"l0_density_{name}"] = value
  return row


def test_rows_per_target_with_the_largest_miss_and_the_reference():
  runs = pd.DataFrame([
      _run([0.2], 0.203, 0.979, 0), _run([0.2], 0.199, 0.981, 1),
      _run([0.3, 0.3, 0.3], 0.31, 0.975, 0, layers=(0.30, 0.33, 0.29)),
      _run([0.2], 0.135, 0.96, 0, formulation="augmented_lagrangian"),
      _run([0.5], 0.4, 0.9, 0, formulation="penalized")])  # not constrained: left out
  table = l0_report.table(runs).set_index(["constraint", "formulation"])
  assert list(table.index) == [("M 0.2", "augmented_lagrangian"), ("M 0.2", "lagrangian"),
                               ("L 0.3, 0.3, 0.3", "lagrangian")]
  # The two formulations of one target stay apart.
  assert table.loc[("M 0.2", "augmented_lagrangian"), "expected density %"] == "13.50 +- 0.00"
  model_wise = table.loc[("M 0.2", "lagrangian")]
  assert model_wise["seeds"] == 2
  assert model_wise["expected density %"] == "20.10 +- 0.28"
  assert model_wise["largest miss (points)"] == "0.30"
  assert model_wise["test error %"] == "2.00 +- 0.14"
  assert model_wise["reference density %"] == "22.77" and model_wise["reference error %"] == "2.110"
  layer_wise = table.loc[("L 0.3, 0.3, 0.3", "lagrangian")]
  assert layer_wise["largest miss (points)"] == "3.00"  # Dense_1 at 33 % against 30 %
  assert layer_wise["reference params %"] == "7.59"


def test_set_ups_stay_apart_and_old_runs_read_as_flax_on_raw_pixels():
  old = _run([0.2], 0.203, 0.979, 0)      # a run from before the set-up fields
  new = {**_run([0.2], 0.201, 0.98, 0), "l0.weight_init": "kaiming", "input_offset": 0.1307,
         "input_scale": 0.3081, "val_fraction": 1 / 12}
  per_example = {**new, "l0.sampling": "per_example"}
  subset = {**new, "val_fraction": 1 / 60, "train_set_size": 20_000}
  table = l0_report.table(pd.DataFrame([old, new, per_example, subset])).set_index("set-up")
  assert sorted(table.index) == [
      # val_fraction 0 is the data module's default split, 45,000 / 5,000.
      "flax, [0, 1], 45,000 train",
      "kaiming, (x - 0.1307) / 0.3081, 20,000 train",
      "kaiming, (x - 0.1307) / 0.3081, 55,000 train",
      "kaiming, (x - 0.1307) / 0.3081, 55,000 train, gates per example"]
  assert table["seeds"].tolist() == [1, 1, 1, 1]


def test_finetuned_runs_report_both_errors_under_their_own_set_up():
  trained = _run([0.2], 0.202, 0.975, 0)
  finetuned = {**_run([0.2], 0.202, 0.98, 0), "l0.finetune_epochs": 20,
               "gated_test_accuracy": 0.975}
  table = l0_report.table(pd.DataFrame([trained, finetuned])).set_index("set-up")
  plain = table.loc["flax, [0, 1], 45,000 train"]
  assert plain["test error %"] == "2.50 +- 0.00" and plain["after finetuning %"] == ""
  tuned = table.loc["flax, [0, 1], 45,000 train, finetuned 20 epochs"]
  assert tuned["test error %"] == "2.50 +- 0.00"      # the end of training, as the reference
  assert tuned["after finetuning %"] == "2.00 +- 0.00"


def test_annealed_runs_are_kept_apart_and_named():
  constant = _run([0.2], 0.202, 0.975, 0)
  annealed = {**_run([0.2], 0.203, 0.977, 0), "l0.target_anneal_epochs": 100,
              "l0.finetune_epochs": 20, "gated_test_accuracy": 0.976}
  table = l0_report.table(pd.DataFrame([constant, annealed])).set_index("set-up")
  assert table["seeds"].tolist() == [1, 1]
  row = table.loc["flax, [0, 1], 45,000 train, targets annealed over 100 epochs, "
                  "finetuned 20 epochs"]
  assert row["test error %"] == "2.40 +- 0.00" and row["after finetuning %"] == "2.30 +- 0.00"


def test_no_constrained_runs_give_an_empty_table():
  assert l0_report.table(pd.DataFrame()).empty
  only_penalised = pd.DataFrame([_run([0.5], 0.4, 0.9, 0, formulation="penalized")])
  assert l0_report.table(only_penalised).empty
