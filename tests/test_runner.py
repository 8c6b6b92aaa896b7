"""The experiment runner end to end on small teacher-student runs."""

import json
import math
import os
import pathlib
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest

from sparsejax import results
from sparsejax.runner import evaluate_run, load_run, run, run_id_of
from sparsejax.runner.config import base_config

REPO = pathlib.Path(__file__).resolve().parents[1]


def small_config(**overrides):
  """A small rl1 teacher-student config; a dict override updates a sub-dict (``ec={...}``)."""
  c = base_config()
  c.experiment_name = "tiny"
  c.lr = 5e-3
  c.method = "rl1"
  c.ec.alpha = 1e-3
  c.min_epochs = 0
  c.max_epochs = 200
  c.prune_window = 50
  c.smoothing_window = 30
  c.finetuning_min_epochs = 0
  c.finetuning_max_epochs = 100
  c.pruning.criterion = "global_threshold"
  c.pruning.threshold = 0.05
  c.eval_batch_size = 5000
  c.checkpoint_every_epochs = 50
  c.quiet = True
  for key, value in overrides.items():
    if isinstance(value, dict):
      c[key].update(value)
    else:
      c[key] = value
  return c


def test_run_writes_row_artifacts_and_skips_a_finished_run(tmp_path):
  config = small_config()
  [row] = run(config, tmp_path)
  runs = results.read_runs(tmp_path)
  assert len(runs) == 1
  recorded = runs.iloc[0]
  assert recorded["run_id"] == run_id_of(config) == row["run_id"]
  for field in ("lr", "ec.alpha", "pruning.threshold", "seed", "max_epochs"):
    assert recorded[field] == results.flatten_config(config)[field]
  assert recorded["total_params"] == 751
  assert 0 < recorded["kept_params"] < 751
  assert recorded["density"] == pytest.approx(recorded["kept_params"] / 751)
  assert recorded["compression"] == pytest.approx(751 / recorded["kept_params"])
  assert recorded["train_epochs"] == 200 and recorded["finetune_epochs"] == 100
  for split in ("train", "val", "test"):
    assert 0 < recorded[f"final_{split}_loss"] < 1
  assert recorded["wall_time_s"] > 0
  pd.Timestamp(recorded["timestamp"])  # parses as a time
  # The compacted network: the units nothing reads are gone, the rest computes the same.
  assert recorded["masked_params"] == 751 and recorded["masked_macs"] == 2 * 25 + 25 * 25 + 25
  assert recorded["compact_params"] < 751 and recorded["compact_macs"] < recorded["masked_macs"]
  assert recorded["compact_removed_units"] > 0
  # One MAC per kept kernel entry (the 51 biases are kept parameters without MACs).
  assert recorded["kept_params"] - 51 <= recorded["nonzero_macs"] <= recorded["kept_params"]
  assert 2 * recorded["compact_macs"] <= recorded["compact_flops"] < recorded["masked_flops"]

  artifacts = tmp_path / "artifacts" / row["run_id"]
  curves = pd.read_csv(artifacts / "curves.csv")
  assert len(curves) == 300 and {"loss", "val_loss", "density", "phase"} <= set(curves.columns)
  assert (curves["phase"].to_numpy() == np.r_[np.zeros(200), np.ones(100)]).all()
  layers = pd.read_csv(artifacts / "layers.csv")
  assert layers["kept"].sum() == 2 * recorded["kept_params"]  # per leaf + the total row
  masks = results.read_masks(artifacts / "masks.npz")
  assert sum(int(m.sum()) for m in masks.values()) == recorded["kept_params"]
  for name in ("loss.png", "density.png", "config.json"):
    assert (artifacts / name).stat().st_size > 0

  # Running the same config again does nothing but report the row.
  [again] = run(config, tmp_path)
  assert again["run_id"] == row["run_id"]
  assert len(results.read_runs(tmp_path)) == 1


@pytest.mark.slow  # 7 s or more on 2 cores: the default suite stays under 10 minutes
def test_reloaded_run_reproduces_recorded_metrics_exactly(tmp_path):
  run(small_config(), tmp_path)
  loaded = load_run(tmp_path)
  recorded = loaded.row
  metrics = evaluate_run(loaded)
  for key, value in metrics.items():
    assert value == recorded[key], key
  # The restored masks are the recorded ones and the pruned weights are zero.
  kept = sum(int(np.sum(m)) for m in jax_leaves(loaded.state.masks))
  assert kept == recorded["kept_params"]
  for p, m in zip(jax_leaves(loaded.state.params), jax_leaves(loaded.state.masks)):
    assert np.all(np.asarray(p)[~np.asarray(m)] == 0)

  # A run saved before a field existed reloads with that field's default.
  path = tmp_path / "artifacts" / recorded["run_id"] / "config.json"
  saved = json.loads(path.read_text())
  del saved["parallel"], saved["pruning"]["calibration"]
  path.write_text(json.dumps(saved))
  older = load_run(tmp_path)
  assert older.config.parallel == "auto"
  assert older.config.pruning.calibration == base_config().pruning.calibration
  assert evaluate_run(older) == metrics
  # A run saved with the efficient-compression fields at the top level (before ``ec``).
  saved.update(saved.pop("ec"))
  path.write_text(json.dumps(saved))
  oldest = load_run(tmp_path)
  assert oldest.config.ec.alpha == 1e-3 and "alpha" not in oldest.config
  assert evaluate_run(oldest) == metrics


def jax_leaves(tree):
  import jax
  return jax.tree.leaves(tree)


def main_command(workdir, *overrides):
  args = [sys.executable, "-m", "sparsejax.main", "--config=configs/teacher_student.py",
          f"--workdir={workdir}", "--config.quiet=True", "--config.experiment_name=cli"]
  return args + [f"--config.{o}" for o in overrides]


@pytest.mark.slow
def test_two_processes_write_one_workdir(tmp_path):
  overrides = ["max_epochs=100", "min_epochs=0", "finetuning_min_epochs=0",
               "finetuning_max_epochs=50", "prune_window=50"]
  procs = [subprocess.Popen(main_command(tmp_path, *overrides, f"seed={seed}"), cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE) for seed in (1, 2)]
  for p in procs:
    _, err = p.communicate(timeout=300)
    assert p.returncode == 0, err.decode()[-2000:]
  runs = results.read_runs(tmp_path)
  assert sorted(runs["seed"]) == [1, 2]
  assert runs["run_id"].is_unique
  assert runs["final_test_loss"].notna().all() and (runs["total_params"] == 751).all()


def latest_checkpoint(workdir):
  steps = [int(p.name) for p in (workdir / "checkpoints").glob("*/*") if p.name.isdigit()]
  return max(steps, default=0)


@pytest.mark.slow
def test_resume_after_kill_equals_uninterrupted_run(tmp_path):
  overrides = ["max_epochs=3000", "min_epochs=3000", "finetuning_min_epochs=0",
               "finetuning_max_epochs=200", "checkpoint_every_epochs=500"]
  killed, clean = tmp_path / "killed", tmp_path / "clean"
  proc = subprocess.Popen(main_command(killed, *overrides), cwd=REPO,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  deadline = time.monotonic() + 240
  while latest_checkpoint(killed) < 2 and proc.poll() is None and time.monotonic() < deadline:
    time.sleep(0.05)
  assert proc.poll() is None, "the run ended before it could be interrupted"
  os.kill(proc.pid, signal.SIGKILL)
  proc.wait()
  assert not (killed / "runs.csv").exists()
  resumed = subprocess.run(main_command(killed, *overrides, "quiet=False"), cwd=REPO,
                           capture_output=True, text=True, timeout=300)
  assert resumed.returncode == 0, resumed.stderr[-2000:]
  assert "resuming seeds 42..42 from checkpoint" in resumed.stdout
  uninterrupted = subprocess.run(main_command(clean, *overrides), cwd=REPO,
                                 capture_output=True, text=True, timeout=300)
  assert uninterrupted.returncode == 0, uninterrupted.stderr[-2000:]
  a, b = results.read_runs(killed).iloc[0], results.read_runs(clean).iloc[0]
  for key in ("run_id", "kept_params", "train_epochs", "finetune_epochs"):
    assert a[key] == b[key], key
  for key in ("final_train_loss", "final_val_loss", "final_test_loss"):
    assert math.isclose(a[key], b[key], rel_tol=1e-6), key
  masks_a = results.read_masks(killed / "artifacts" / a["run_id"] / "masks.npz")
  masks_b = results.read_masks(clean / "artifacts" / b["run_id"] / "masks.npz")
  assert masks_a.keys() == masks_b.keys()
  for name in masks_a:
    np.testing.assert_array_equal(masks_a[name], masks_b[name])


@pytest.mark.parametrize("method", ["drr", pytest.param("pmmp", marks=pytest.mark.slow),
                                    pytest.param("layerwise", marks=pytest.mark.slow)])
@pytest.mark.slow  # 7 s or more on 2 cores: the default suite stays under 10 minutes
def test_each_method_runs_the_procedure_rgp_tamade_rgp_finetune(tmp_path, method):
  config = small_config(method=method, ec=dict(alpha=1e-3 if method != "layerwise" else 0.0),
                        max_epochs=100, finetuning_max_epochs=50)
  config.pruning.criterion = "tamade"
  config.pruning.delete_neurons = method != "layerwise"
  config.ec.layerwise_pruning_max_epochs = 3000
  config.ec.layerwise_pruning_alpha = 1e-3
  [row] = run(config, tmp_path)
  # Each pruning step only removes parameters; TAMADE's search ran and
  # respected its tolerance on the calibration (train) data.
  steps = [row[f"pruning_kept_{s}"] for s in ("before", "after_rgp", "after_criterion")]
  assert steps == sorted(steps, reverse=True) and row["pruning_kept"] <= steps[-1]
  assert row["pruning_kept_before"] == 751 and row["kept_params"] == row["pruning_kept"] < 751
  assert row["pruning_evaluations"] >= 10 and row["pruning_threshold"] > 0
  loaded = load_run(tmp_path)
  for p, m in zip(jax_leaves(loaded.state.params), jax_leaves(loaded.state.masks)):
    assert np.all(np.asarray(p)[~np.asarray(m)] == 0)
  if method == "pmmp":
    gamma = loaded.state.objective_state.gamma
    for g, m in zip(jax_leaves(gamma), jax_leaves(loaded.state.masks)):
      assert np.all(np.asarray(g)[~np.asarray(m)] == 0)


@pytest.mark.slow  # about 25 s
def test_shrinking_prunes_during_training_once_the_loss_saturates(tmp_path):
  # A deviation of 1 (loss units) saturates at the first check; RGP -> TAMADE
  # -> RGP then runs at every check of the regularised phase.
  config = small_config(method="drr", ec=dict(alpha=1e-3, shrinking=True,
                                              shrinking_from_deviation_of=1.0),
                        smoothing_window=20, max_epochs=150, finetuning_max_epochs=50)
  config.pruning.criterion = "tamade"
  [row] = run(config, tmp_path)
  assert row["shrinking_prunings"] == 2  # checks at epochs 50 and 100 (not at the last, 150)
  curves = pd.read_csv(tmp_path / "artifacts" / row["run_id"] / "curves.csv")
  assert row["pruning_kept_before"] < 751  # the final pruning starts from a pruned network
  assert len(curves) == 200


def test_a_model_the_compaction_cannot_handle_gets_an_error_field_not_a_failed_run():
  from types import SimpleNamespace
  from sparsejax.runner import records
  state = SimpleNamespace(params={"w": np.ones(3)}, model_state={}, masks={"w": None})
  fields = records._compaction(object(), state)  # pylint: disable=protected-access
  assert list(fields) == ["compact_error"]
  assert fields["compact_error"].startswith("AttributeError")
