"""Seed sweeps: a seed of a many-seed program equals that seed run alone; sub-batches merge."""

import os
import subprocess
import sys

import numpy as np
import pytest

from sparsejax import results
from sparsejax.fields import ConfigError
from sparsejax.runner import run
from sparsejax.runner.config import validate
from sparsejax.runner.program import seed_config, seed_loop_of, sweep_seeds
from tests.test_runner import REPO, small_config


def sweep_config(method, **overrides):
  # Seeds 8..11 of this set-up converge at different epochs.
  fields = dict(method=method, ec=dict(alpha=1e-3 if method == "drr" else 1e-2), min_epochs=50,
                max_epochs=350, smoothing_window=30, prune_window=50, finetuning_min_epochs=0,
                finetuning_max_epochs=50, seeds=4, seed=8, dtype="float64")
  config = small_config(**{**fields, **overrides})
  config.pruning.criterion = "tamade"
  return config


@pytest.mark.slow
@pytest.mark.parametrize("method", ["drr", "pmmp"])
def test_a_single_run_equals_its_seed_of_a_four_seed_program(tmp_path, method):
  # In float64; in float32 the batched reductions may round differently and,
  # over hundreds of epochs, move a borderline weight across the threshold.
  config = sweep_config(method)
  config.pruning.delete_neurons = method == "drr"
  swept = {row["seed"]: row for row in run(config, tmp_path / "sweep")}
  assert sorted(swept) == [8, 9, 10, 11]
  epochs = {row["train_epochs"] for row in swept.values()}
  seed = 10
  [single] = run(seed_config(config, seed), tmp_path / "single")
  row = swept[seed]
  assert row["run_id"] == single["run_id"]
  for key in ("kept_params", "train_epochs", "finetune_epochs", "pruning_kept_after_criterion",
              "pruning_evaluations", "train_returned_best_state", "train_converged"):
    assert row[key] == single[key], key
  for key in ("final_train_loss", "final_val_loss", "final_test_loss"):
    assert row[key] == pytest.approx(single[key], rel=1e-9), key
  # (The TAMADE threshold itself may differ within the gap between two
  # magnitudes that gives the same mask: the masks are compared instead.)
  a = results.read_masks(tmp_path / "sweep" / "artifacts" / row["run_id"] / "masks.npz")
  b = results.read_masks(tmp_path / "single" / "artifacts" / row["run_id"] / "masks.npz")
  for name in a:
    np.testing.assert_array_equal(a[name], b[name])
  if method == "drr":  # the seeds stopped at different epochs: frozen ones waited
    assert len(epochs) > 1


@pytest.mark.slow
def test_slurm_array_tasks_as_separate_processes_merge_into_one_table(tmp_path):
  """launch/sweep_array.slurm as two array tasks at once, then launch/merge.slurm (twice)."""
  overrides = ["--config.max_epochs=100", "--config.min_epochs=0",
               "--config.finetuning_min_epochs=0", "--config.finetuning_max_epochs=50",
               "--config.experiment_name=sub"]
  env = dict(os.environ, SLURM_ARRAY_TASK_COUNT="2", SLURM_SUBMIT_DIR=str(REPO),
             PYTHON=sys.executable)
  procs = [subprocess.Popen(["bash", "launch/sweep_array.slurm", "configs/teacher_student.py", "4",
                             str(tmp_path), *overrides],
                            cwd=REPO, env=dict(env, SLURM_ARRAY_TASK_ID=str(task)),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
           for task in (0, 1)]
  for p in procs:
    _, err = p.communicate(timeout=600)
    assert p.returncode == 0, err.decode()[-2000:]
  assert sorted(results.read_runs(tmp_path / "task_0")["seed"]) == [42, 43]
  for _ in range(2):  # merging again replaces rows, never duplicates them
    done = subprocess.run(["bash", "launch/merge.slurm", str(tmp_path)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
  merged = tmp_path / "merged"
  runs = results.read_runs(merged)
  assert sorted(runs["seed"]) == [42, 43, 44, 45]
  assert runs["run_id"].is_unique and (runs["total_params"] == 751).all()
  for run_id in runs["run_id"]:
    assert (merged / "artifacts" / run_id / "masks.npz").exists()
  assert "| drr |" in done.stdout  # the report's table


def test_sub_batches_split_the_seeds():
  config = sweep_config("drr", seeds=10)
  config.sweep.num_sub_batches = 3
  parts = []
  for task in range(3):
    config.sweep.sub_batch = task
    parts.append(sweep_seeds(config))
  assert parts == [[8, 9, 10, 11], [12, 13, 14], [15, 16, 17]]
  config.sweep.sub_batch = 3
  with pytest.raises(ConfigError, match="sweep.sub_batch"):
    validate(config)


@pytest.mark.slow
def test_seed_loop_map_gives_the_rows_of_vmap_and_of_single_runs(tmp_path):
  config = small_config(seeds=3, seed=8, dtype="float64", max_epochs=100,
                        finetuning_max_epochs=50)
  config.sweep.seed_loop = "map"
  mapped = {row["seed"]: row for row in run(config, tmp_path / "map")}
  config.sweep.seed_loop = "vmap"
  vmapped = {row["seed"]: row for row in run(config, tmp_path / "vmap")}
  [single] = run(seed_config(config, 9), tmp_path / "single")
  assert sorted(mapped) == sorted(vmapped) == [8, 9, 10]
  for seed in mapped:
    assert mapped[seed]["run_id"] == vmapped[seed]["run_id"]  # a bookkeeping field
    assert mapped[seed]["kept_params"] == vmapped[seed]["kept_params"]
    assert mapped[seed]["final_test_loss"] == pytest.approx(vmapped[seed]["final_test_loss"],
                                                            rel=1e-9)
  assert mapped[9]["kept_params"] == single["kept_params"]
  assert mapped[9]["final_test_loss"] == pytest.approx(single["final_test_loss"], rel=1e-12)


@pytest.mark.parametrize("architecture, dataset, want", [
    ("lenet5_caffe", "mnist", "map"), ("bmrs_lenet5", "mnist", "map"),
    ("lenet_300_100", "mnist", "vmap")])
def test_seed_loop_auto_maps_the_seeds_of_convolutional_models_on_a_cpu(architecture, dataset,
                                                                         want):
  import jax
  import jax.numpy as jnp
  from sparsejax.runner import build
  config = small_config(architecture=architecture, dataset=dataset)
  if architecture == "bmrs_lenet5":
    config.image_size = 32
  model = build.build_model(config)
  sample = jnp.zeros((1, *build.input_shape(config)), jnp.float32)
  assert jax.default_backend() == "cpu"
  assert seed_loop_of(config, model, sample) == want
  for loop in ("vmap", "map"):
    config.sweep.seed_loop = loop
    assert seed_loop_of(config, model, sample) == loop


def test_seed_loop_rejects_an_unknown_value():
  config = small_config()
  config.sweep.seed_loop = "pmap"
  with pytest.raises(ConfigError, match="'sweep.seed_loop'.*accepted values: auto, vmap, map"):
    validate(config)


@pytest.mark.parametrize("data_axis, seeds, loop, devices", [
    (0, 8, "vmap", 4), (None, 8, "vmap", 4), (None, 6, "vmap", 3), (None, 1, "vmap", 1),
    (None, 8, "map", 1)])
def test_auto_spreads_a_vmapped_sweeps_seeds_over_the_cpu_devices(data_axis, seeds, loop,
                                                                  devices):
  import types
  import jax
  from sparsejax.runner.program import layout_of
  assert jax.default_backend() == "cpu" and jax.device_count() == 4  # tests/conftest.py
  parts = types.SimpleNamespace(data_axis=data_axis)
  layout = layout_of(small_config(), parts, seeds, loop)
  assert layout.kind == "seeds" and layout.devices == devices


@pytest.mark.slow
def test_an_image_sweep_spread_over_the_devices_equals_its_seeds_alone(tmp_path, mnist_dir):
  sys.path.insert(0, str(REPO))
  from configs import lenet300_mnist
  config = lenet300_mnist.get_config("none")
  config.manual_dir = str(mnist_dir)
  config.train_set_size, config.val_set_size, config.test_set_size = 1000, 500, 500
  config.max_epochs = config.min_epochs = 2
  config.finetuning_max_epochs = config.finetuning_min_epochs = 1
  config.train_batch_size, config.eval_batch_size = 100, 500
  config.dtype, config.seeds, config.quiet = "float64", 4, True
  swept = {row["seed"]: row for row in run(config, tmp_path / "sweep")}  # 4 devices
  for seed in (42, 45):
    [single] = run(seed_config(config, seed), tmp_path / str(seed))  # one device
    assert single["kept_params"] == swept[seed]["kept_params"]
    for name in ("final_train_loss", "final_test_loss", "final_test_accuracy"):
      assert single[name] == pytest.approx(swept[seed][name], rel=1e-12), name
