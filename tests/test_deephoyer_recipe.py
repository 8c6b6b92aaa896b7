"""The DeepHoyer recipe on a small slice of real MNIST: zeros stay zero, structure, init_from."""

import jax
import numpy as np
import pandas as pd
import pytest

from configs import common, deephoyer_lenet300_mnist
from sparsejax import masks as masks_lib
from sparsejax.fields import ConfigError
from sparsejax.recipes import deephoyer
from sparsejax.runner import load_run, run
from sparsejax.runner.build import build_model
from sparsejax.runner.config import validate
from sparsejax.runner.records import run_id_of
from sparsejax.studies import deephoyer_report, deephoyer_tune
from sparsejax.train.state import TrainState
from tests.conftest import data_path


def small(regulariser, **fields):
  config = deephoyer_lenet300_mnist.get_config(regulariser)
  config.manual_dir = str(data_path("mnist"))
  config.train_set_size, config.val_set_size, config.test_set_size = 2000, 500, 500
  config.max_epochs = config.min_epochs = 4
  config.prune_window = 2
  config.finetuning_max_epochs = config.finetuning_min_epochs = 3
  config.quiet = True
  common.set_fields(config, fields)
  return config


@pytest.mark.slow
def test_pruned_weights_stay_exactly_zero_through_finetuning(tmp_path):
  rows = run(small("hs", seeds=2), tmp_path)
  for row in rows:
    assert row["status"] == "finished" and row["finetune_epochs"] == 3
    assert row["kept_params"] == row["pruning_kept"] < 266_610  # finetuning revived nothing
    loaded = load_run(tmp_path, row["run_id"])
    for p, m in zip(jax.tree.leaves(loaded.state.params), jax.tree.leaves(loaded.state.masks)):
      assert np.all(np.asarray(p)[~np.asarray(m)] == 0)
    assert row["alive_in_Dense_0"] <= 784 and row["alive_out_Dense_2"] <= 10
    assert row["small_widths"].startswith("784-") and row["small_widths"].endswith("-10")
    assert row["kept_params"] <= row["small_params"] <= 266_610
  frame = deephoyer_report.table(pd.DataFrame(rows), "mlp")
  assert list(frame["regulariser"]) == ["hs"] and frame["seeds"].iloc[0] == 2
  assert frame["reproduction accuracy %"].iloc[0] == "97.99"


def test_the_std_rule_and_the_threshold_rule_prune_per_tensor_biases_included():
  params = {"Dense_0": {"kernel": np.array([[1.0, -0.1], [0.5, 2.0]]),
                        "bias": np.array([0.01, 3.0])}}
  masks = masks_lib.ones_like(params, masks_lib.every_leaf)
  state = TrainState(step=0, params=params, objective_state=(), model_state={}, opt_state=(),
                     masks=masks)
  pruned = deephoyer.prune_masks(state, "threshold", 0.2)
  np.testing.assert_array_equal(pruned.masks["Dense_0"]["kernel"], [[True, False], [True, True]])
  np.testing.assert_array_equal(pruned.masks["Dense_0"]["bias"], [False, True])
  by_std = deephoyer.prune_masks(state, "std", 1.0)  # |w| < std(tensor)
  kernel_std = np.std(params["Dense_0"]["kernel"])
  np.testing.assert_array_equal(by_std.masks["Dense_0"]["kernel"],
                                np.abs(params["Dense_0"]["kernel"]) >= kernel_std)


def test_group_regularisers_report_the_structure_left():
  params = {"Dense_0": {"kernel": np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 0.0]])},
            "Conv_0": {"kernel": _conv()}}
  alive = deephoyer.structure(params)
  assert alive["alive_in_Dense_0"] == 1 and alive["alive_out_Dense_0"] == 1
  assert alive["alive_in_Conv_0"] == 1 and alive["alive_out_Conv_0"] == 1


def test_the_row_gives_the_dense_network_left_after_deleting_dead_units():
  config = small("group_hs")
  model = build_model(config)
  params = jax.tree.map(np.array, model.init(
      jax.random.key(0), np.zeros((1, 28, 28, 1), np.float32))[0])
  params["Dense_0"]["kernel"][:, 10:] = 0  # 290 of 300 first-layer neurons lose their inputs
  params["Dense_2"]["kernel"][50:] = 0     # 50 of 100 second-layer neurons lose their outputs
  state = TrainState(step=0, params=params, objective_state=(), model_state={}, opt_state=(),
                     masks=masks_lib.ones_like(params, masks_lib.every_leaf))
  fields = deephoyer.smaller_network(model, state)
  assert fields["small_widths"] == "784-10-50-10"
  assert fields["small_params"] == (784 * 10 + 10) + (10 * 50 + 50) + (50 * 10 + 10)
  config.architecture = "bmrs_mlp"  # no capability 'deletable_units'
  assert deephoyer.smaller_network(build_model(config), state) == {}


def _conv():
  w = np.zeros((3, 3, 2, 4))
  w[:, :, 1, 2] = 1.0
  return w


@pytest.mark.slow
def test_init_from_starts_from_a_finished_runs_parameters(tmp_path):
  [dense] = run(small("none"), tmp_path / "dense")
  config = small("l1", max_epochs=0, min_epochs=0, init_from=str(tmp_path / "dense"),
                 finetuning_max_epochs=0, finetuning_min_epochs=0)
  config.deephoyer.rule, config.deephoyer.sensitivity = "threshold", 0.05
  [row] = run(config, tmp_path / "pruned")
  pretrained = load_run(tmp_path / "dense", dense["run_id"]).state.params
  kept = sum(int(np.sum(np.abs(np.asarray(p)) >= 0.05)) for p in jax.tree.leaves(pretrained))
  assert row["kept_params"] == kept
  bad = small("l1", init_from=str(tmp_path / "nowhere"))
  with pytest.raises(Exception, match="init_from"):
    run(bad, tmp_path / "bad")


def test_bad_deephoyer_fields_are_named():
  with pytest.raises(ConfigError, match="deephoyer.regulariser"):
    validate(small("hs", **{"deephoyer.regulariser": "hessian"}))
  with pytest.raises(ConfigError, match="regulariser 'l2'.*accepted"):
    deephoyer_lenet300_mnist.get_config("l2")


@pytest.mark.slow  # 7 s or more on 2 cores: the default suite stays under 10 minutes
def test_the_study_commands_run_as_scripts(tmp_path):
  import subprocess
  import sys
  from sparsejax import results
  from tests.conftest import REPO
  results.append_run(tmp_path, {"run_id": "x-1", "method": "deephoyer", "seed": 1,
                                "deephoyer.regulariser": "hs", "deephoyer.decay": 2e-4,
                                "deephoyer.sensitivity": 0.03, "density": 0.05,
                                "compression": 20.0, "final_test_accuracy": 0.98,
                                "status": "finished"})
  outputs = []
  for module, args in (("deephoyer_report", [str(tmp_path)]),
                       ("report", [f"--workdir={tmp_path}", "--columns=method,seed,density"])):
    done = subprocess.run([sys.executable, "-m", f"sparsejax.studies.{module}", *args],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    outputs.append(done.stdout)
  assert ("| hs | 0.0002 | 0.03 | 1 | 5.00 +- 0.00 | 20.0 +- 0.0 | 98.00 +- 0.00 | 3.72 |"
          in outputs[0])
  assert "| deephoyer | 1 | 0.05 |" in outputs[1]


@pytest.mark.slow
def test_the_tuning_grid_shares_one_training_per_decay(tmp_path):
  config = small("hs")
  config.finetuning_max_epochs = config.finetuning_min_epochs = 0
  frame = deephoyer_tune.grid(config, tmp_path, [1e-3], [0.0, 0.5])
  assert list(frame["sensitivity"]) == [0.0, 0.5]
  [trained] = pd.read_csv(tmp_path / "train_0.001" / "runs.csv").to_dict("records")
  assert trained["density"] == 1.0 and trained["finetune_epochs"] == 0
  # Sensitivity 0 prunes nothing and there is no finetuning: the trained network itself.
  assert frame["nonzero %"].iloc[0] == 100.0
  assert frame["val accuracy %"].iloc[0] == pytest.approx(100 * trained["final_val_accuracy"])
  assert frame["nonzero %"].iloc[1] < 100.0
  chosen = deephoyer_tune.choose(frame, max_nonzero=99.0)
  assert list(chosen["chosen"]) == ["", "<-"]
  assert list(deephoyer_tune.choose(frame, max_nonzero=0.0)["chosen"]) == ["", ""]


def test_grids_with_other_finetuning_share_the_training():
  config = small("hs")
  other = small("hs", **{"deephoyer.finetune_lr": 1e-4, "finetuning_max_epochs": 100,
                         "deephoyer.sensitivity": 0.5})
  same = [run_id_of(deephoyer_tune.training_config(c, 2e-4)) for c in (config, other)]
  assert same[0] == same[1]
  assert run_id_of(deephoyer_tune.training_config(config, 1e-4)) != same[0]
  pruning = deephoyer_tune.pruning_config(other, 2e-4, 0.05, "somewhere")
  assert pruning.init_from == "somewhere" and pruning.max_epochs == 0
  assert pruning.deephoyer.finetune_lr == 1e-4 and pruning.deephoyer.sensitivity == 0.05
