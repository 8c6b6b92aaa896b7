"""The regression check: re-running a workdir's runs with the current code."""

import pytest

from sparsejax import results
from sparsejax.runner import run
from sparsejax.studies import rerun
from tests.test_runner import small_config


@pytest.mark.slow
def test_a_rerun_agrees_and_a_changed_result_is_caught(tmp_path, capsys):
  config = small_config(max_epochs=60, finetuning_max_epochs=20, dtype="float64")
  run(config, tmp_path / "old")
  assert rerun.compare(tmp_path / "old", tmp_path / "new", rtol=1e-9)
  assert "largest relative difference of the final losses and accuracies: 0.000e+00" in (
      capsys.readouterr().out)
  runs = results.read_runs(tmp_path / "old")
  runs.loc[0, "final_test_loss"] *= 1 + 1e-6
  runs.to_csv(tmp_path / "old" / "runs.csv", index=False)
  assert not rerun.compare(tmp_path / "old", tmp_path / "new", rtol=1e-9)
  assert "final_test_loss" in capsys.readouterr().out


def test_renamed_fields_map_to_their_new_names():
  config = rerun.config_of({"bmrs": {"n_layers": 3, "hidden_dim": 7}, "lr": 0.5,
                            "architecture_student": [2, 4, 1]})
  assert config.hidden_layers == 3 and config.hidden_dim == 7 and config.lr == 0.5
  assert config.architecture_student == (2, 4, 1)


def test_the_efficient_compression_fields_move_to_their_sub_dict():
  # Saved before the family's fields moved from the top level to ``ec``.
  config = rerun.config_of({"method": "drr", "alpha": 5e-4, "beta": 3.0, "gauss_loss": True,
                            "shrinking": True, "layerwise_pruning_max_epochs": 7,
                            "pruning": {"density": 0.5}})
  assert (config.ec.alpha, config.ec.beta, config.ec.gauss_loss, config.ec.shrinking) == (
      5e-4, 3.0, True, True)
  assert config.ec.layerwise_pruning_max_epochs == 7 and config.pruning.density == 0.5
  assert "alpha" not in config and "gauss_loss" not in config
