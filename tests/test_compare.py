"""The comparison study: every method's run under the protocol, the table, the plots."""

import pandas as pd
import pytest

from configs import compare_lenet300_fashion_mnist, compare_lenet300_mnist, compare_lenet5_mnist
from sparsejax import results
from sparsejax.fields import ConfigError
from sparsejax.runner.config import validate
from sparsejax.studies import compare


@pytest.mark.parametrize("module", [compare_lenet300_mnist, compare_lenet5_mnist,
                                    compare_lenet300_fashion_mnist])
def test_every_point_of_every_study_is_a_valid_run_under_the_protocol(module):
  config = module.get_config()
  labels = compare.methods(config)
  assert labels[:2] == list(compare.BASELINES)
  assert len(labels) >= (15 if "lenet300" in config.name else 9)
  for label in labels:
    for point in compare.operating_points(config, label):
      run = compare.family_config(config, label, point)
      validate(run)
      assert run.architecture == config.network and run.dataset == config.protocol.dataset
      assert run.val_fraction == pytest.approx(1 / 12) and run.input_offset == 0.0
      assert run.seeds == 3 and run.experiment_name == f"{config.name}_{label}"
      method = config.methods[label]
      split = compare.epoch_split(config.epochs, method.epochs)
      assert sum(split.values()) == config.epochs
      for field, epochs in split.items():
        node = run
        for part in field.split("."):
          node = node[part]
        assert node == epochs
      if method.kind != "fixed":
        value = run
        for part in method.field.split("."):
          value = value[part]
        assert (value[0] if method.as_tuple else value) == pytest.approx(point)
  # The target densities reach each density method as its density or its sparsity.
  assert compare.operating_points(config, "magnitude") == list(config.densities)
  if "lth" in labels:
    assert compare.operating_points(config, "lth") == pytest.approx(
        [1 - d for d in config.densities])


def test_bad_tables_and_labels_name_the_field():
  config = compare_lenet300_mnist.get_config()
  config.only = "magnitude,nonsense"
  with pytest.raises(ConfigError, match="'only' names 'nonsense'; accepted values: bmrs, deephoyer_hs"):
    compare.methods(config)
  config = compare_lenet300_mnist.get_config()
  del config.methods["random"]
  with pytest.raises(ConfigError, match="lacks the baseline 'random'"):
    compare.methods(config)
  config = compare_lenet300_mnist.get_config()
  config.methods.drr.kind = "strong"
  with pytest.raises(ConfigError, match="'methods.drr.kind' is 'strong'; accepted values"):
    compare.operating_points(config, "drr")
  with pytest.raises(ConfigError, match="sum to 0.9"):
    compare.epoch_split(30, (("max_epochs", 0.5), ("finetuning_max_epochs", 0.4)))
  assert compare.epoch_split(10, (("a", 1 / 3), ("b", 2 / 3))) == {"a": 3, "b": 7}


def test_each_strength_grid_marks_its_points_nearest_to_the_targets():
  frame = pd.DataFrame({"method": ["drr"] * 3 + ["magnitude"] * 3,
                        "density %": [12.0, 4.0, 1.5, 10.0, 5.0, 2.0],
                        "strength": [True] * 3 + [False] * 3})
  # log distances: 10 % -> 12 (0.18) beats 4 (0.92); 5 % -> 4 (0.22); 2 % -> 1.5 (0.29)
  # beats 4 (0.69).
  assert compare.nearest_targets(frame, (0.1, 0.05, 0.02)) == [
      "~10 %", "~5 %", "~2 %", "", "", ""]


def test_the_table_averages_seeds_per_point_and_the_plots_are_written(tmp_path):
  config = compare_lenet300_mnist.get_config()
  rows = []
  for seed, accuracy in ((42, 0.97), (43, 0.95)):
    common = {"seed": seed, "status": "finished", "final_val_accuracy": 0.96, "wall_time_s": 60.0,
              "train_epochs": 20, "train_converged": False, "finetune_epochs": 10,
              "finetune_converged": False, "nonzero_macs": 26_661.0, "compact_macs": 266_200.0,
              "compact_params": 266_610.0}
    rows.append({**common, "experiment_name": "compare_lenet300_mnist_magnitude",
                 "method": "magnitude", "pruning.density": 0.1, "density": 0.1,
                 "final_test_accuracy": accuracy})
    rows.append({**common, "experiment_name": "compare_lenet300_mnist_lth", "method": "anneal",
                 "anneal.sparsity": 0.95, "density": 0.05, "final_test_accuracy": accuracy - 0.1})
    rows.append({**common, "experiment_name": "compare_lenet300_mnist_l0_penalized",
                 "method": "l0", "l0.penalty": "[0.1]", "density": 0.03,
                 "final_test_accuracy": 0.9})
  frame = compare.table(config, pd.DataFrame(rows))
  assert list(frame["method"]) == ["magnitude", "l0_penalized", "lth"]
  assert list(frame["point"]) == ["density 0.1", "l0.penalty 0.1", "density 0.05"]
  assert list(frame["test accuracy %"]) == ["96.00 +- 1.41", "90.00 +- 0.00", "86.00 +- 1.41"]
  assert list(frame["epochs"]) == [30, 30, 30] and list(frame["seeds"]) == [2, 2, 2]
  assert list(frame["nearest"]) == ["", "~10 % ~5 % ~2 %", ""]
  paths = compare.pareto_plots(frame, config.title, tmp_path / "study")
  assert [p.name for p in paths] == ["study_density.png", "study_macs.png"]
  assert all(p.stat().st_size > 10_000 for p in paths)


@pytest.mark.slow  # about a minute: three short runs of two seeds
def test_a_small_study_runs_reports_and_skips_what_it_finished(tmp_path, mnist_dir):
  config = compare_lenet300_mnist.get_config()
  config.only = "magnitude,random,drr"
  config.epochs, config.seeds, config.densities = 3, 2, (0.1,)
  config.methods.drr.strengths = (1.2e-5,)
  config.protocol.manual_dir = str(mnist_dir)
  config.protocol.train_set_size, config.protocol.val_set_size = 1000, 300
  config.protocol.test_set_size = 300
  compare.run_study(config, tmp_path)
  frame = compare.report(config, tmp_path, tmp_path / "out")
  assert list(frame["method"]) == ["magnitude", "random", "drr"]
  assert (frame["seeds"] == 2).all() and (frame["epochs"] == 3).all()
  magnitude, random = frame.iloc[0], frame.iloc[1]
  assert magnitude["density %"] == pytest.approx(10, abs=0.5)
  assert random["density %"] == pytest.approx(10, abs=0.5)  # kernels at 10 %, biases kept
  assert 0 < frame.iloc[2]["nonzero MACs"] < 266_200 and frame.iloc[2]["nearest"] == "~10 %"
  assert magnitude["nonzero MACs"] == pytest.approx(0.1 * 266_610, rel=0.05)
  assert "| magnitude | magnitude | density 0.1 |" in (tmp_path / "compare.md").read_text()
  for directory in (tmp_path / "figures", tmp_path / "out"):
    assert {p.name for p in directory.iterdir()} == {
        "compare_lenet300_mnist_density.png", "compare_lenet300_mnist_macs.png"}
  # A second call finds every point finished: no new row.
  rows = len(results.read_runs(tmp_path))
  compare.run_study(config, tmp_path)
  assert len(results.read_runs(tmp_path)) == rows == 6


@pytest.mark.slow  # about a minute: two short runs of two seeds
def test_a_study_runs_on_the_users_own_model(tmp_path, mnist_dir):
  config = compare_lenet300_mnist.get_config()
  config.model = "tests.test_foreign_models:NNXMLP"
  config.model_kwargs = "{'width': 32}"
  config.only = "magnitude,random,lth"
  config.epochs, config.seeds, config.densities = 3, 2, (0.2,)
  config.protocol.manual_dir = str(mnist_dir)
  config.protocol.train_set_size, config.protocol.val_set_size = 1000, 300
  config.protocol.test_set_size = 300
  run = compare.family_config(config, "magnitude", 0.2)
  assert run.model == config.model and run.model_kwargs == config.model_kwargs
  left_out = compare.run_study(config, tmp_path)
  # LTH initialises as the study's PyTorch networks do, which the user's model cannot.
  assert list(left_out) == ["lth"] and "capability 'torch_init'" in left_out["lth"]
  frame = compare.report(config, tmp_path, tmp_path / "out")
  assert list(frame["method"]) == ["magnitude", "random"]
  # The user's 784-32-10 network with BatchNorm, not LeNet-300-100's 266,610 parameters.
  runs = results.read_runs(tmp_path)
  assert set(runs["total_params"]) == {784 * 32 + 32 + 2 * 32 + 32 * 10 + 10}
  assert frame.iloc[0]["density %"] == pytest.approx(20, abs=1)
  assert (frame["test mean"] > 15).all()  # 30 steps on 1,000 images; chance is 10 %
