"""The BMRS runner: vmapped seeds equal single runs, monotone pruning, resume, configs."""

import copy

import jax
import numpy as np
import pandas as pd
import pytest

from configs import bmrs_lenet5_mnist, bmrs_mlp_mnist, common
from sparsejax import results
from sparsejax.fields import ConfigError
from sparsejax.objectives import log_uniform as lu
from sparsejax.recipes import bmrs as bmrs_recipe
from sparsejax.runner import program as program_lib
from sparsejax.runner import run
from sparsejax.runner.config import validate
from tests.conftest import data_path


def _small_config():
  config = bmrs_mlp_mnist.get_config("l2")
  config.manual_dir = str(data_path("mnist"))
  config.hidden_layers = 1
  config.hidden_dim = 16
  config.bmrs.threshold = 1.0  # ~half of the lecun-normal columns have norm < 1
  config.train_set_size, config.val_set_size, config.test_set_size = 768, 256, 256
  config.max_epochs, config.finetuning_max_epochs = 2, 2
  config.dtype = "float64"
  config.quiet = True
  return config


@pytest.fixture
def small_config():
  return _small_config()


def _rows(workdir):
  return results.read_runs(workdir).sort_values("seed").reset_index(drop=True)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  """A 4-seed vmapped run; seed 43 alone; seed 42 alone, killed after epoch 2 and re-run."""
  root = tmp_path_factory.mktemp("bmrs_runs")
  config = _small_config()
  sweep = copy.deepcopy(config)
  sweep.seeds = 4
  run(sweep, root / "sweep")
  again = run(sweep, root / "sweep")  # finished: skipped, rows returned
  assert len(again) == 4
  single = copy.deepcopy(config)
  single.seed = 43
  run(single, root / "single")
  calls = {"n": 0}
  save = program_lib.Program.save

  def crashing_save(self, content):
    save(self, content)
    calls["n"] += 1
    if calls["n"] == 2:
      raise KeyboardInterrupt("killed after epoch 2")
  program_lib.Program.save = crashing_save
  try:
    with pytest.raises(KeyboardInterrupt):
      run(config, root / "crash")
  finally:
    program_lib.Program.save = save
  assert calls["n"] == 2
  run(config, root / "crash")
  return root


@pytest.mark.slow
def test_vmapped_seeds_equal_single_runs_and_pruning_is_monotone(runs):
  vmapped, single = _rows(runs / "sweep"), _rows(runs / "single")
  assert len(vmapped) == 4  # the second run of the same command added no rows
  assert vmapped.run_id[1] == single.run_id[0]  # each seed's row is its single run's
  for column in ("unit_compression", "parameter_compression", "kept_units_Dense_0",
                 "kept_units_Dense_1", "final_test_accuracy"):
    assert vmapped[column][1] == single[column][0], column
  np.testing.assert_allclose(vmapped.final_test_loss[1], single.final_test_loss[0], rtol=1e-9)
  assert (vmapped.unit_compression > 10).all() and (vmapped.unit_compression < 90).all()
  assert (vmapped.parameter_compression > 0).all()
  for run_id in vmapped.run_id:
    curves = pd.read_csv(runs / "sweep" / "artifacts" / run_id / "curves.csv")
    assert len(curves) == 4 and (np.diff(curves.unit_compression) >= 0).all()
    masks = results.read_masks(runs / "sweep" / "artifacts" / run_id / "masks.npz")
    assert masks  # unit and weight masks written


@pytest.mark.slow
def test_resume_after_a_crash_gives_the_uninterrupted_result(runs):
  vmapped, resumed = _rows(runs / "sweep"), _rows(runs / "crash")
  assert len(resumed) == 1 and resumed.run_id[0] == vmapped.run_id[0]
  for column in ("unit_compression", "final_test_accuracy"):
    assert vmapped[column][0] == resumed[column][0], column
  np.testing.assert_allclose(vmapped.final_test_loss[0], resumed.final_test_loss[0], rtol=1e-9)


@pytest.mark.slow  # 7 s or more on 2 cores: the default suite stays under 10 minutes
def test_pruned_units_weights_are_exactly_zero(small_config):
  config = copy.deepcopy(small_config)
  with jax.enable_x64(True):
    program = program_lib.Program(config, [1, 2])
    states = program.initial_states()
    compress = bmrs_recipe.Compressor(config, program.parts.model)
    states, aux = compress(states, program.plan.init_aux(states))
    units = {s: np.asarray(u) for s, u in aux["units"].items()}
    kernel = np.asarray(states.params["Dense_0"]["kernel"])
    next_kernel = np.asarray(states.params["Dense_1"]["kernel"])
  pruned = ~units["Dense_0"]
  assert pruned.any() and kernel.dtype == np.float64
  for i in range(2):
    assert np.all(kernel[i][:, pruned[i]] == 0)
    assert np.all(next_kernel[i][pruned[i], :] == 0)
    assert np.all(kernel[i][:, ~pruned[i]] != 0)


def test_next_units_monotone_and_percentile():
  class States:  # scores come from the gate state only for SNR
    objective_state = lu.GateState(mu={"s": np.array([[0.0, -8.0, -1.0, -10.0]])},
                                   log_sigma={"s": np.array([[-5.0, 1.0, 0.0, 1.5]])})
    params = None
  snr = bmrs_recipe.criterion_of(bmrs_mlp_mnist.get_config("snr"))
  previous = {"s": np.array([[False, True, True, True]])}
  keep = bmrs_recipe.next_units(snr, States, previous, {}, monotone=False)
  np.testing.assert_array_equal(keep["s"], [[True, False, True, False]])
  keep = bmrs_recipe.next_units(snr, States, previous, {}, monotone=True)
  np.testing.assert_array_equal(keep["s"], [[False, False, True, False]])
  keep = bmrs_recipe.next_units(snr, States, previous, {}, monotone=False, pruned_percent=25.0)
  assert int(keep["s"].sum()) == 3


def test_bad_bmrs_fields_are_named():
  config = bmrs_lenet5_mnist.get_config("bmrs_n")
  config.bmrs.criterion = "hessian"
  with pytest.raises(ConfigError, match="bmrs.criterion.*bmrs_u"):
    validate(config)
  config = bmrs_lenet5_mnist.get_config("bmrs_n")
  config.bmrs.p1 = 30.0
  with pytest.raises(ConfigError, match="bmrs.p1"):
    validate(config)
  with pytest.raises(ConfigError, match="criterion.*accepted"):
    bmrs_lenet5_mnist.get_config("bmrs_u16")


@pytest.mark.slow  # 7 s or more on 2 cores: the default suite stays under 10 minutes
def test_bmrs_inputs_are_resized_split_and_centred_as_the_reference():
  from sparsejax.runner import build as build_lib
  config = bmrs_mlp_mnist.get_config("snr")
  config.manual_dir = str(data_path("mnist"))
  splits, _, _ = build_lib.build_data(config, [config.seed])
  assert splits.train.x.shape == (48000, 32, 32, 1) and splits.val.x.shape[0] == 12000
  # (pixel - 127) / 255: background -0.498, full ink +0.502.
  np.testing.assert_allclose(float(splits.test.x.min()), -127 / 255, atol=1e-6)
  assert 0.45 < float(splits.test.x.max()) <= 128 / 255 + 1e-6
  assert build_lib.build_model(config).widths[0] == 32 * 32


def test_table1_launcher_runs_every_criterion_then_the_report(tmp_path):
  import os
  import pathlib
  import stat
  import subprocess
  repo = pathlib.Path(__file__).resolve().parents[1]
  log = tmp_path / "calls.txt"
  fake = tmp_path / "python"
  fake.write_text(f'#!/bin/sh\necho "$@" >> {log}\n')
  fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
  subprocess.run(["bash", "launch/bmrs_table1.sh", "bmrs_lenet5_mnist", "3", str(tmp_path / "w"),
                  "--config.max_epochs=2"], cwd=repo, check=True,
                 env=dict(os.environ, PYTHON=str(fake)))
  calls = log.read_text().splitlines()
  assert len(calls) == 8 and calls[-1].startswith("-m sparsejax.studies.bmrs_report")
  criteria = [c.split("configs/bmrs_lenet5_mnist.py:")[1].split()[0] for c in calls[:-1]]
  assert criteria == ["none", "snr", "expected_theta", "bmrs_n", "bmrs_u8", "bmrs_u4", "bmrs_n"]
  assert "--config.bmrs.convention=code" in calls[-2]
  assert all("--config.seeds=3" in c and "--config.max_epochs=2" in c for c in calls[:-1])
  for criterion in set(criteria):
    validate(bmrs_lenet5_mnist.get_config(criterion))
  assert set(criteria) <= set(common.BMRS_CRITERIA)
