"""Reliability: divergence, damaged checkpoints, one process per run, validation, early errors."""

import copy
import json
import math
import os
import pathlib
import re
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sparsejax import checkpoint as checkpoint_lib
from sparsejax import results
from sparsejax.fields import ConfigError, flatten
from sparsejax.runner import build as build_lib
from sparsejax.runner import errors, load_run, run
from sparsejax.runner import program as program_lib
from sparsejax.runner import records as records_lib
from sparsejax.runner.config import base_config, validate
from sparsejax.train import convergence
from tests.test_cli import own_stderr
from tests.test_runner import REPO, latest_checkpoint, main_command, small_config

# -- divergence ---------------------------------------------------------------------------------


@pytest.mark.slow  # 7 s or more on 2 cores: the default suite stays under 10 minutes
def test_a_diverging_run_stops_names_phase_epoch_quantity_and_keeps_a_finite_state(tmp_path):
  config = small_config(optimizer="sgd", lr=1e6)
  with pytest.raises(errors.Diverged, match=r"loss not finite in phase 'train' at epoch \d+"):
    run(config, tmp_path)
  [row] = results.read_runs(tmp_path).to_dict("records")
  assert row["status"] == "diverged" and row["diverged_phase"] == "train"
  assert math.isnan(row.get("final_test_loss", math.nan))  # never a normal row
  loaded = load_run(tmp_path)  # the last finite state
  assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(loaded.state.params))
  # Re-running reports the divergence again without training.
  with pytest.raises(errors.Diverged):
    run(config, tmp_path)
  assert len(results.read_runs(tmp_path)) == 1


@pytest.mark.slow  # a subprocess; the divergence itself is tested in-process above
def test_the_command_line_exits_2_on_divergence(tmp_path):
  # On the MSE: the default code length's learnable noise scale absorbs the blow-up (its
  # gradients shrink as 1/sigma^2) and the penalty then prunes everything (a collapse).
  mse = ("ec.gauss_loss=False", "ec.strength=fixed", "ec.bits_scale=1.0")
  done = subprocess.run(main_command(tmp_path, "optimizer=sgd", "lr=1e6", "max_epochs=200",
                                     "min_epochs=0", "finetuning_max_epochs=0",
                                     "finetuning_min_epochs=0", *mse),
                        cwd=REPO, capture_output=True, text=True, timeout=300)
  assert done.returncode == 2, done.stderr[-2000:]
  assert "diverged" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.slow
def test_a_diverged_seed_of_a_sweep_is_frozen_and_marked_while_the_others_go_on(tmp_path,
                                                                                 monkeypatch):
  build_data = build_lib.build_data

  def poisoned(config, seeds):  # seed 43's targets are NaN from the 1st epoch on
    splits, axis, teacher = build_data(config, seeds)
    y = splits.train.y.at[list(seeds).index(43)].set(jnp.nan) if 43 in seeds else splits.train.y
    return splits._replace(train=splits.train._replace(y=y)), axis, teacher
  monkeypatch.setattr(build_lib, "build_data", poisoned)
  short = dict(max_epochs=60, finetuning_max_epochs=20)
  rows = run(small_config(seeds=3, **short), tmp_path)
  by_seed = {row["seed"]: row for row in rows}
  assert by_seed[43]["status"] == "diverged" and by_seed[43]["diverged_epoch"] == 1
  assert by_seed[43]["diverged_quantity"] == "loss"
  for seed in (42, 44):
    assert by_seed[seed]["status"] == "finished" and by_seed[seed]["finetune_epochs"] == 20
  # The others equal their runs without the poisoned neighbour.
  monkeypatch.setattr(build_lib, "build_data", build_data)
  [alone] = run(program_lib.seed_config(small_config(**short), 44), tmp_path / "alone")
  assert alone["kept_params"] == by_seed[44]["kept_params"]
  assert alone["final_test_loss"] == pytest.approx(by_seed[44]["final_test_loss"], rel=1e-5)


# -- damaged checkpoints ------------------------------------------------------------------------


def _crash_after(monkeypatch, saves):
  calls = {"n": 0}
  save = program_lib.Program.save

  def crashing(self, content):
    save(self, content)
    calls["n"] += 1
    if calls["n"] == saves:
      raise KeyboardInterrupt(f"killed after save {saves}")
  monkeypatch.setattr(program_lib.Program, "save", crashing)
  return lambda: monkeypatch.setattr(program_lib.Program, "save", save)


def _truncate(path: pathlib.Path):
  data = path.read_bytes()
  path.write_bytes(data[:len(data) // 2])


def _flip(path: pathlib.Path):
  data = bytearray(path.read_bytes())
  for i in range(len(data) // 3, len(data) // 3 + 8):
    data[i] ^= 0xFF
  path.write_bytes(bytes(data))


def _step_files(step_dir: pathlib.Path, item: str):
  return sorted(p for p in (step_dir / item).rglob("*") if p.is_file() and p.stat().st_size > 0)


def _checkpointed_config():
  return small_config(max_epochs=150, finetuning_max_epochs=50, checkpoint_every_epochs=50)


@pytest.fixture(scope="module")
def clean_row(tmp_path_factory):
  return run(_checkpointed_config(), tmp_path_factory.mktemp("clean"))[0]


# One damage in the default suite; the other two (about 35 s each) are slow.
@pytest.mark.parametrize("damage", [pytest.param("truncated_metadata", marks=pytest.mark.slow),
                                    pytest.param("truncated_arrays", marks=pytest.mark.slow),
                                    pytest.param("flipped_bytes", marks=pytest.mark.slow)])
def test_a_damaged_latest_checkpoint_falls_back_to_the_previous_one(tmp_path, monkeypatch,
                                                                    capfd, damage, clean_row):
  config, clean = _checkpointed_config(), clean_row
  restore = _crash_after(monkeypatch, 3)
  with pytest.raises(KeyboardInterrupt):
    run(config, tmp_path / "damaged")
  restore()
  [folder] = (tmp_path / "damaged" / "checkpoints").iterdir()
  latest = folder / str(max(int(p.name) for p in folder.iterdir() if p.name.isdigit()))
  if damage == "truncated_metadata":
    _truncate(latest / "meta" / "metadata")
  elif damage == "truncated_arrays":
    for path in _step_files(latest, "state"):
      _truncate(path)
  else:
    _flip(max(_step_files(latest, "state"), key=lambda p: p.stat().st_size))
  capfd.readouterr()
  [resumed] = run(config, tmp_path / "damaged")
  err = capfd.readouterr().err
  assert f"checkpoint {latest}" in err and "older checkpoint is tried" in err
  for key in ("kept_params", "train_epochs", "finetune_epochs"):
    assert resumed[key] == clean[key]
  assert resumed["final_test_loss"] == pytest.approx(clean["final_test_loss"], rel=1e-6)


@pytest.mark.slow  # about 25 s; the fallback to an older checkpoint is in the default suite
def test_with_no_intact_checkpoint_the_run_starts_over(tmp_path, monkeypatch, capfd):
  config = _checkpointed_config()
  restore = _crash_after(monkeypatch, 2)
  with pytest.raises(KeyboardInterrupt):
    run(config, tmp_path)
  restore()
  [folder] = (tmp_path / "checkpoints").iterdir()
  for step in (p for p in folder.iterdir() if p.name.isdigit()):
    _truncate(step / "meta" / "metadata")
  [row] = run(config, tmp_path)
  assert "no intact checkpoint left" in capfd.readouterr().err
  assert row["status"] == "finished" and row["train_epochs"] == 150


@pytest.mark.slow  # about 22 s: trains a run to damage its final state
def test_load_run_of_a_damaged_final_state_says_what_is_damaged(tmp_path):
  [row] = run(small_config(), tmp_path)
  final = tmp_path / "checkpoints" / row["run_id"]
  step = next(p for p in final.iterdir() if p.name.isdigit())
  _flip(max(_step_files(step, "state"), key=lambda p: p.stat().st_size))
  with pytest.raises(errors.FinalStateDamaged, match=f"final state of run {row['run_id']}"):
    load_run(tmp_path)


def test_checksums_catch_any_changed_array():
  tree = {"a": np.arange(6.0), "k": jax.random.key(3), "n": None}
  same = {"a": np.arange(6.0), "k": jax.random.key(3), "n": None}
  assert checkpoint_lib.tree_checksum(tree) == checkpoint_lib.tree_checksum(same)
  same["a"][2] = np.nextafter(2.0, 3.0)
  assert checkpoint_lib.tree_checksum(tree) != checkpoint_lib.tree_checksum(same)


# -- one process per run ------------------------------------------------------------------------


@pytest.mark.slow   # about 30 s for two copies: each compiles and trains the run
@pytest.mark.parametrize("copies", [2, 3])
def test_concurrent_copies_of_one_run_train_it_once(tmp_path, copies):
  overrides = ["max_epochs=600", "min_epochs=600", "finetuning_min_epochs=0",
               "finetuning_max_epochs=50", "checkpoint_every_epochs=300"]
  procs = [subprocess.Popen(main_command(tmp_path, *overrides), cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True) for _ in range(copies)]
  outputs = [p.communicate(timeout=600) for p in procs]
  codes = sorted(p.returncode for p in procs)
  assert codes == [0] + [2] * (copies - 1), [o[1][-1500:] for o in outputs]
  for p, (_, err) in zip(procs, outputs):
    if p.returncode == 2:
      assert "being trained by another process" in err and "Traceback" not in err
  runs = results.read_runs(tmp_path)
  assert len(runs) == 1 and runs["status"].iloc[0] == "finished"


def test_rows_are_unique_by_run_id(tmp_path):
  row = {"run_id": "a-1", "x": 1}
  results.replace_runs(tmp_path, [row])
  results.replace_runs(tmp_path, [dict(row, x=2)])
  runs = results.read_runs(tmp_path)
  assert len(runs) == 1 and runs["x"].iloc[0] == 2


# -- validation of every field ------------------------------------------------------------------


def _with(config, name, value):
  config = copy.deepcopy(config)
  *parents, leaf = name.split(".")
  node = config
  for parent in parents:
    node = node[parent]
  node._fields[leaf] = value  # past ml_collections' own type check: validate must catch it
  return config


def test_every_field_rejects_nan_infinity_and_the_wrong_type():
  defaults = flatten(base_config())
  config = base_config()
  validate(config)
  for name, default in defaults.items():
    if isinstance(default, bool):
      bad = ["yes", 1]
    elif isinstance(default, int):
      bad = ["3", 1.5, 2 ** 40]
    elif isinstance(default, float):
      bad = [float("nan"), float("inf"), -float("inf"), "0.1"]
    elif isinstance(default, str):
      bad = [3]
    elif any(isinstance(v, float) for v in default):  # lists of numbers (L0's densities)
      bad = [("a",), (float("nan"),), (0.5, float("inf")), ()]
    else:
      bad = [("a",), (2, 0, 1), (2, -1)]
    for value in bad:
      with pytest.raises(ConfigError, match=re.escape(repr(name))):
        validate(_with(config, name, value))


@pytest.mark.parametrize("name,value,what", [
    ("architecture_teacher", (2,), "architecture_teacher"),
    ("architecture_teacher", (2, 0, 1), "architecture_teacher"),
    ("architecture_teacher", (3, 5, 1), "architecture_student"),
    ("architecture_teacher", (2, 5, 2), "architecture_student"),
    ("architecture_student", (3, 25, 1), "architecture_student"),
    ("experiment_name", "../../../x", "experiment_name"),
    ("experiment_name", "x" * 300, "experiment_name"),
    ("experiment_name", "", "experiment_name"),
    ("seed", 2 ** 66, "seed"),
    ("seed", -1, "seed"),
    ("ec.layerwise_pruning_max_epochs", 10 ** 12, "ec.layerwise_pruning_max_epochs"),
    ("input_offset", float("nan"), "input_offset"),
    ("bmrs.mu_p", float("nan"), "bmrs.mu_p"),
    ("distributed.coordinator_address", "localhost", "distributed.coordinator_address"),
    ("distributed.process_id", 1, "distributed.process_id"),
    ("distributed.num_processes", 0, "distributed.num_processes"),
])
def test_fields_that_escaped_validation_are_caught(name, value, what):
  with pytest.raises(ConfigError, match=re.escape(repr(what))):
    validate(_with(small_config(), name, value))


def test_a_sweep_split_into_more_tasks_than_seeds_and_a_too_small_image_are_caught():
  config = small_config(seeds=2)
  config.sweep.num_sub_batches, config.sweep.sub_batch = 5, 4
  with pytest.raises(ConfigError, match="sweep.num_sub_batches"):
    validate(config)
  sys.path.insert(0, str(REPO))
  from configs import lenet5_mnist
  image = lenet5_mnist.get_config("drr")
  image.image_size = 1
  with pytest.raises(ConfigError, match="'architecture'.*1x1x1"):
    validate(image)


@pytest.mark.slow  # 7 s or more on 2 cores: the default suite stays under 10 minutes
def test_list_fields_can_be_set_on_the_command_line(tmp_path):
  # The tuple is parsed and validated; the run then stops at the next bad field (no compute).
  done = subprocess.run(main_command(tmp_path, "architecture_student=(2, 10, 1)",
                                     "architecture_teacher=(2, 3, 1)", "max_epochs=-1"),
                        cwd=REPO, capture_output=True, text=True, timeout=300)
  assert done.returncode == 2 and "'max_epochs'" in done.stderr, done.stderr[-2000:]
  done = subprocess.run(main_command(tmp_path, "architecture_student=(3, 10, 1)"),
                        cwd=REPO, capture_output=True, text=True, timeout=300)
  assert done.returncode == 2 and "'architecture_student' is [3, 10, 1]" in done.stderr


# -- errors before compute ----------------------------------------------------------------------


def _cli_error(tmp_path, workdir, *overrides):
  done = subprocess.run(main_command(workdir, *overrides), cwd=REPO, capture_output=True,
                        text=True, timeout=120)
  assert done.returncode == 2, (done.stdout[-500:], done.stderr[-2000:])
  assert "Traceback" not in done.stderr and own_stderr(done).startswith("error: ")
  return done.stderr


def test_a_workdir_that_is_a_file_is_an_error_before_compute(tmp_path):
  workdir = tmp_path / "file"
  workdir.write_text("not a folder")
  assert "is a file" in _cli_error(tmp_path, workdir)


@pytest.mark.slow  # 7 s or more on 2 cores: the default suite stays under 10 minutes
def test_an_unwritable_artifacts_folder_and_lock_file_are_errors_before_compute(tmp_path):
  # (Tests run as root, where permission bits do not bind: a file where the
  # folder should be, and a folder where the lock file should be, fail alike.)
  artifacts = tmp_path / "a"
  artifacts.mkdir()
  (artifacts / "artifacts").write_text("")
  assert f"cannot write in {artifacts / 'artifacts'}" in _cli_error(tmp_path, artifacts)
  lock = tmp_path / "l"
  (lock / "runs.csv.lock").mkdir(parents=True)
  assert "cannot write the lock file" in _cli_error(tmp_path, lock)
  assert not (lock / "runs.csv").exists() and not list((lock / "checkpoints").iterdir())


@pytest.mark.slow
def test_a_truncated_data_file_names_the_file(tmp_path, mnist_dir):
  manual = tmp_path / "mnist"
  manual.mkdir()
  for path in mnist_dir.iterdir():
    (manual / path.name).write_bytes(path.read_bytes())
  _truncate(manual / "train-labels-idx1-ubyte.gz")
  sys.path.insert(0, str(REPO))
  done = subprocess.run(
      [sys.executable, "-m", "sparsejax.main", "--config=configs/lenet300_mnist.py:none",
       f"--workdir={tmp_path / 'w'}", f"--config.manual_dir={manual}",
       f"--config.data_dir={tmp_path / 'tfds'}", "--config.quiet=True"],
      cwd=REPO, capture_output=True, text=True, timeout=300)
  assert done.returncode == 2 and "Traceback" not in done.stderr
  assert "train-labels-idx1-ubyte.gz" in done.stderr and "checksum" in done.stderr


# -- a killed sweep resumes within its program ------------------------------------------------


@pytest.mark.slow
def test_a_killed_8_seed_sweep_loses_at_most_one_checkpoint_interval(tmp_path):
  overrides = ["seeds=8", "max_epochs=4000", "min_epochs=4000", "finetuning_min_epochs=0",
               "finetuning_max_epochs=50", "checkpoint_every_epochs=500"]
  proc = subprocess.Popen(main_command(tmp_path, *overrides), cwd=REPO,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  deadline = time.monotonic() + 300
  while latest_checkpoint(tmp_path) < 2 and proc.poll() is None and time.monotonic() < deadline:
    time.sleep(0.05)
  assert proc.poll() is None, "the sweep ended before it could be interrupted"
  os.kill(proc.pid, signal.SIGKILL)
  proc.wait()
  [folder] = [p for p in (tmp_path / "checkpoints").iterdir() if p.name.endswith("+8")]
  with checkpoint_lib.Checkpointer(folder) as ckpt:
    saved_epoch = ckpt.restore_meta()["epoch"]
  assert saved_epoch >= 500
  resumed = subprocess.run(main_command(tmp_path, *overrides, "quiet=False"), cwd=REPO,
                           capture_output=True, text=True, timeout=600)
  assert resumed.returncode == 0, resumed.stderr[-2000:]
  match = re.search(r"resuming seeds 42\.\.49 from checkpoint \d+ \(train epoch (\d+)\)",
                    resumed.stdout)
  assert match and int(match.group(1)) == saved_epoch
  runs = results.read_runs(tmp_path)
  assert len(runs) == 8 and (runs["train_epochs"] == 4000).all()


@pytest.mark.slow
def test_a_damaged_prepared_copy_names_the_folder_to_delete(tmp_path, mnist_dir):
  from sparsejax.data import DatasetDamagedError, load_image_dataset
  load_image_dataset("mnist", manual_dir=mnist_dir, data_dir=tmp_path)
  records = sorted(tmp_path.rglob("mnist-train.tfrecord*"))
  assert records
  for path in records:
    _flip(path)
    _truncate(path)
  with pytest.raises(DatasetDamagedError, match=r"delete the folder .*mnist"):
    load_image_dataset("mnist", manual_dir=mnist_dir, data_dir=tmp_path)


# -- collapsed runs -----------------------------------------------------------------------------

#: A teacher-student run whose learning rate is far too high: nothing becomes non-finite,
#: and the final test loss is worse than the untrained network's by orders of magnitude.
COLLAPSING = dict(lr=1e6, max_epochs=60, finetuning_max_epochs=20)


def test_collapse_reason_names_what_collapsed():
  assert records_lib.collapse_reason(0, 751, 0.01, 1.0) == (
      "every prunable parameter was pruned (kept 0 of 751)")
  assert "worse than its initial network's 0.5" in records_lib.collapse_reason(10, 751, 0.7, 0.5)
  assert records_lib.collapse_reason(10, 751, 0.01, 0.5) is None
  assert records_lib.collapse_reason(10, 751, 0.5, 0.5) is None  # no better, but not worse
  # Classification: a worse loss collapses only with an accuracy no better than at the start.
  assert "accuracy 0.1000 no better than the initial 0.1000" in records_lib.collapse_reason(
      10, 751, 16.9, 2.3, 0.1, 0.1)
  assert records_lib.collapse_reason(10, 751, 2.6, 2.3, 0.8, 0.1) is None  # overconfident
  # Started from a trained network (init_from): pruning may leave it a little worse.
  assert records_lib.collapse_reason(10, 751, 0.44, 0.32, 0.89, 0.91,
                                     started_untrained=False) is None
  assert "kept 0" in records_lib.collapse_reason(0, 751, 0.4, 0.3, started_untrained=False)


@pytest.mark.slow  # 30 to 60 s: the default suite stays under 10 minutes
def test_a_collapsed_sweep_is_marked_warned_and_not_counted_as_a_success(tmp_path, capsys):
  with pytest.raises(errors.Collapsed, match=r"\(seed 43\) collapsed: its final test loss"):
    run(small_config(seeds=2, **COLLAPSING), tmp_path)
  rows = results.read_runs(tmp_path).to_dict("records")
  assert [r["status"] for r in rows] == ["collapsed"] * 2
  for row in rows:
    assert row["final_test_loss"] > 1e3 * row["initial_test_loss"] > 0
    assert row["collapse_reason"] == records_lib.collapse_reason(
        row["kept_params"], 751, row["final_test_loss"], row["initial_test_loss"])
  out = capsys.readouterr().out
  assert "seeds with kept <= the teacher's 72: 0 of 2 (collapsed seeds not counted)" in out
  assert "COLLAPSED: 2 of 2 seeds" in out
  summary = json.loads((tmp_path / "sweep_tiny.json").read_text())
  assert summary["collapsed_seeds"] == 2 and summary["seeds_at_most_teacher"] == 0
  # Rerunning the command reports the same, without training.
  with pytest.raises(errors.Collapsed):
    run(small_config(seeds=2, **COLLAPSING), tmp_path)
  assert len(results.read_runs(tmp_path)) == 2


@pytest.mark.slow  # 7 s or more on 2 cores: the default suite stays under 10 minutes
def test_a_healthy_run_records_its_initial_loss_and_is_not_collapsed(tmp_path):
  [row] = run(small_config(max_epochs=60, finetuning_max_epochs=20), tmp_path)
  assert row["status"] == "finished" and "collapse_reason" not in row
  assert row["final_test_loss"] < row["initial_test_loss"]


@pytest.mark.slow  # a subprocess; the marking is tested in-process above
def test_the_command_line_exits_2_when_every_seed_collapsed(tmp_path):
  done = subprocess.run(main_command(tmp_path, "lr=1e6", "max_epochs=60", "min_epochs=0",
                                     "finetuning_min_epochs=0", "finetuning_max_epochs=20",
                                     "seeds=4"),
                        cwd=REPO, capture_output=True, text=True, timeout=300)
  assert done.returncode == 2, done.stderr[-2000:]
  [line] = own_stderr(done).splitlines()
  assert line.startswith("error: ") and line.count("collapsed: every prunable") == 4
  assert "COLLAPSED: 4 of 4 seeds" in done.stdout
  assert "seeds with kept <= the teacher's 72: 0 of 4" in done.stdout


# -- fields that do nothing ---------------------------------------------------------------------


@pytest.mark.parametrize("name,value,why", [
    ("magnitude.scope", "layer", "no effect under method 'rl1' (it is read by method magnitude)"),
    ("l0.penalty", (0.5,), "no effect under method 'rl1' (it is read by method l0)"),
    ("bmrs.criterion", "snr", "no effect under method 'rl1' (it is read by method bmrs)"),
    ("deephoyer.rule", "foo", "no effect under method 'rl1'"),
    ("sparse.drop_fraction", 0.5, "(it is read by method gmp, random"),
    ("val_fraction", 0.5, "no effect with dataset 'teacher_student'"),
    ("image_size", 28, "no effect with dataset 'teacher_student'"),
    ("distributed.num_processes", 2, "without distributed.coordinator_address"),
])
def test_a_field_the_run_does_not_read_is_an_error(name, value, why):
  with pytest.raises(ConfigError, match=re.escape(repr(name)) + ".*" + re.escape(why)):
    validate(_with(small_config(), name, value))


def test_teacher_student_fields_are_errors_on_an_image_data_set_and_defaults_pass():
  sys.path.insert(0, str(REPO))
  from configs import lenet300_mnist
  config = lenet300_mnist.get_config("drr")
  validate(config)
  config.noise = 0.5
  with pytest.raises(ConfigError, match="'noise'.*no effect with dataset 'mnist'"):
    validate(config)
  # The method's own family's fields, and every other family's at their defaults, pass.
  validate(small_config(ec={"alpha": 0.5}))


def test_a_set_size_larger_than_its_split_is_an_error():
  splits = build_lib.build_data(small_config(), [42])[0]
  sizes = small_config(dataset="mnist")
  sizes.train_set_size = 10 ** 8
  one_seed = jax.tree.map(lambda a: a[0], splits)
  with pytest.raises(ConfigError, match="'train_set_size' is 100000000; the train split of "
                                        "mnist has 300 examples, so it must be at most 300"):
    build_lib._subset(one_seed, sizes)


def test_the_smallest_smoothing_window_is_validated():
  assert convergence.MIN_WINDOW == 5
  curve = jnp.linspace(1.0, 0.5, 40)
  assert not bool(convergence.is_saturated(curve, convergence.MIN_WINDOW, 1e-10))
  assert bool(convergence.is_saturated(jnp.ones(40), convergence.MIN_WINDOW, 1e-10))
  for window in (1, 2, 3, 4):
    with pytest.raises(ValueError, match="window >= 5"):
      convergence.is_saturated(curve, window, 1e-10)
    with pytest.raises(ConfigError, match="'smoothing_window' is %d; it must be >= 5" % window):
      validate(small_config(smoothing_window=window))


def test_init_from_a_missing_workdir_is_refused_before_any_compute(tmp_path, monkeypatch):
  def no_compute(*args, **kwargs):
    raise AssertionError("a program was built")
  monkeypatch.setattr(program_lib, "Program", no_compute)
  with pytest.raises(errors.RunError, match=r"'init_from' is '\.\./x': there is no \.\./x/"
                                            "runs.csv"):
    run(small_config(init_from="../x"), tmp_path)
  (tmp_path / "other").mkdir()
  results.replace_runs(tmp_path / "other", [{"run_id": "a-1", "seed": 7, "status": "finished"}])
  with pytest.raises(errors.RunError, match="no finished run of seed 42"):
    run(small_config(init_from=str(tmp_path / "other")), tmp_path)


@pytest.mark.slow  # subprocesses; each check is tested in-process above
@pytest.mark.parametrize("config,overrides,names", [
    ("teacher_student", ["method=drr", "magnitude.scope=layer"], ["'magnitude.scope'", "'drr'"]),
    ("teacher_student", ["deephoyer.rule=foo"], ["'deephoyer.rule'"]),
    ("teacher_student", ["val_fraction=0.5"], ["'val_fraction'", "teacher_student"]),
    ("teacher_student", ["image_size=28"], ["'image_size'", "teacher_student"]),
    ("teacher_student", ["distributed.num_processes=2"], ["'distributed.num_processes'"]),
    ("teacher_student", ["smoothing_window=1"], ["'smoothing_window'", ">= 5"]),
    ("teacher_student", ["smoothing_window=2"], ["'smoothing_window'", ">= 5"]),
    ("teacher_student", ["init_from=../x"], ["'init_from'", "../x/runs.csv"]),
    ("lenet300_mnist", ["train_set_size=99999999"], ["'train_set_size'", "has 45000 examples"]),
])
def test_the_command_line_names_a_field_that_does_nothing(tmp_path, mnist_dir, config,
                                                         overrides, names):
  args = [sys.executable, "-m", "sparsejax.main", f"--config=configs/{config}.py",
          f"--workdir={tmp_path}", "--config.quiet=True"] + [f"--config.{o}" for o in overrides]
  done = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=300,
                        env={**os.environ, "SPARSEJAX_DATA_DIR": str(mnist_dir.parent)})
  assert done.returncode == 2, done.stderr[-2000:]
  [line] = own_stderr(done).splitlines()
  assert line.startswith("error: "), line
  for name in names:
    assert name in line, (name, line)
  assert done.stdout == ""
