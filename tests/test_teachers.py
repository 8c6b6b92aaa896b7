"""Teacher recovery: the description-length strength, the MSE metric beside the code
length, and the teacher-size study (sparsejax.studies.teachers)."""

import math
import pathlib
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pandas as pd
import pytest

from configs import teacher_student as ts_config
from sparsejax import objectives
from sparsejax.data import teacher_student
from sparsejax.fields import ConfigError
from sparsejax.recipes import efficient_compression as ec
from sparsejax.runner import run_id_of
from sparsejax.runner.config import base_config, validate
from sparsejax.runner.records import seed_line
from sparsejax.studies import teachers
from sparsejax.train import REGRESSION, create_train_state, make_eval_fn

REPO = pathlib.Path(__file__).resolve().parents[1]


def small_config(method="drr", **ec_fields):
  c = base_config()
  c.experiment_name = "tiny"
  c.method = method
  c.lr = 5e-3
  c.min_epochs = 0
  c.max_epochs = 100
  c.prune_window = 50
  c.smoothing_window = 30
  c.finetuning_min_epochs = 0
  c.finetuning_max_epochs = 50
  c.eval_batch_size = 5000
  c.quiet = True
  c.ec.update(ec_fields)
  return c


def test_description_length_alpha_is_the_bic_cost_per_training_point():
  # N * (alpha * k) must be k parameters at s * log2(N) / 2 bits each.
  for n, s in ((300, 1.0), (150, 1.0), (1200, 10.0)):
    alpha = ec.description_length_alpha(n, s)
    assert n * alpha * 7 == pytest.approx(7 * s * 0.5 * math.log2(n))
  assert ec.description_length_alpha(300) == pytest.approx(0.0137147, rel=1e-5)
  with pytest.raises(ValueError, match="n_train"):
    ec.description_length_alpha(1)


def test_alpha_follows_the_training_set_size():
  config = small_config(strength="description_length", gauss_loss=True)
  assert ec.alpha(config) == ec.description_length_alpha(teacher_student.N_TRAIN)
  config.train_set_size = 1200
  config.ec.bits_scale = 2.0
  assert ec.alpha(config) == pytest.approx(2 * math.log2(1200) / 2400)
  assert ec.alpha(small_config(alpha=3e-4)) == 3e-4  # "fixed" reads ec.alpha


@pytest.mark.parametrize("method,fields,match", [
    ("rl1", {"strength": "description_length", "gauss_loss": True}, "ec.strength"),
    ("drr", {"strength": "description_length"}, "ec.gauss_loss"),
    ("drr", {"strength": "bic"}, "one of"),
    ("drr", {"bits_scale": 2.0}, "ec.bits_scale.*'fixed'"),
    ("pmmp", {"strength": "description_length", "gauss_loss": True, "bits_scale": 0.0},
     "ec.bits_scale"),
    ("drr", {"strength": "description_length", "gauss_loss": True, "alpha": 5e-4},
     "ec.alpha.*ec.strength='fixed'"),
])
def test_bad_strength_settings_are_clear_errors(method, fields, match):
  with pytest.raises(ConfigError, match=match):
    validate(small_config(method, **fields))


def test_the_new_fields_leave_earlier_run_ids_alone():
  config = small_config(alpha=2e-4)
  without = config.copy_and_resolve_references()
  del without.ec["strength"]
  del without.ec["bits_scale"]
  assert run_id_of(config) == run_id_of(without)
  ruled = small_config(strength="description_length", gauss_loss=True)
  assert run_id_of(ruled) != run_id_of(small_config(gauss_loss=True))


def test_evaluation_reports_the_mse_beside_the_code_length():
  model = nn.Dense(1)
  x = jax.random.normal(jax.random.key(0), (7, 2))
  y = jax.random.normal(jax.random.key(1), (7, 1))
  objective = objectives.with_gauss_loss(objectives.plain(), initial_sigma=0.3)
  state = create_train_state(jax.random.key(2), model, x, objective, optax.adam(1e-3))
  out = make_eval_fn(model, REGRESSION, objective, batch_size=3)(state, x, y)
  mse = jnp.mean(jnp.square(model.apply({"params": state.params}, x) - y))
  assert float(out["mse"]) == pytest.approx(float(mse), rel=1e-6)
  assert float(out["loss"]) == pytest.approx(
      float(objectives.gauss_code_length(mse, jnp.asarray(0.3))), rel=1e-6)


def test_the_summary_line_gives_code_length_and_teacher_size():
  config = small_config(gauss_loss=True)
  row = {"run_id": "tiny-0", "kept_params": 90, "total_params": 751, "density": 0.12,
         "final_test_loss": -2.85, "final_test_mse": 0.0069, "final_sigma": 0.08}
  line = seed_line(config, row)
  assert "test code length -2.85 bits per point" in line and "test MSE 0.0069" in line
  assert "the teacher has 72 parameters (kept 1.25x)" in line and "0.0064" in line


def test_setups_and_their_teacher_sizes():
  sizes = {s.name: s.teacher_params for s in teachers.SETUPS}
  assert sizes["2-3-3-1"] == 2 * 3 + 3 + 3 * 3 + 3 + 3 + 1 == 25
  assert sizes["2-5-8-1"] == 72 and sizes["2-8-8-1"] == 105 and sizes["2-6-6-6-1"] == 109
  with pytest.raises(ConfigError, match="accepted names"):
    teachers.setups_named(["2-5-8-1", "2-9-1"])
  deep = teachers.setup_config(small_config(), teachers.setups_named(["2-6-6-6-1"])[0], 3)
  assert deep.architecture_student == (2, 25, 25, 25, 1)
  assert deep.architecture_teacher == (2, 6, 6, 6, 1) and deep.seeds == 3
  few = teachers.setup_config(small_config(), teachers.setups_named(["2-5-8-1_n150"])[0], 1)
  assert few.train_set_size == 150 and few.noise == 0.08


@pytest.mark.slow  # 7 s or more on 2 cores: the default suite stays under 10 minutes
def test_oracle_starts_at_the_teacher_and_fits_the_training_points():
  setup = teachers.Setup("t", (2, 3, 3, 1), noise=0.1, n_train=40)
  start = teachers.oracle_mse(setup, [4, 5], lr=1e-2, epochs=0)
  for seed, value in zip([4, 5], start):
    splits, teacher = teacher_student.teacher_student_data(
        seed, n_train=40, noise=0.1, teacher_widths=(2, 3, 3, 1))
    predicted = teacher_student.teacher_model((2, 3, 3, 1)).apply(teacher, splits.test.x)
    assert value == pytest.approx(float(jnp.mean(jnp.square(predicted - splits.test.y))),
                                  rel=1e-5)
  fitted = teachers.oracle_mse(setup, [4, 5], lr=1e-2, epochs=100)
  # Fitting 25 parameters to 40 noisy points moves off the truth: the test error grows.
  assert np.all(fitted > start)


def test_summary_line_and_plot_from_rows(tmp_path):
  setup = teachers.setups_named(["2-5-8-1_noise0.16"])[0]
  rows = [{"kept_params": k, "final_test_mse": m} for k, m in
          [(50, 0.0260), (72, 0.0270), (90, 0.0280), (200, 0.0300)]]
  line = teachers.summarize(setup, rows, np.asarray([0.03, 0.04, 0.05]))
  assert line["teacher params"] == 72 and line["noise var"] == pytest.approx(0.0256)
  assert line["kept median"] == 81 and line["kept q25"] == 66.5 and line["kept q75"] == 117.5
  assert line["kept / teacher"] == pytest.approx(81 / 72)
  assert line["seeds <= teacher"] == 0.5
  assert line["MSE / noise var"] == pytest.approx(0.0275 / 0.0256)
  assert line["oracle MSE / noise var"] == pytest.approx(0.04 / 0.0256)
  assert line["met"]  # 1.125 <= 1.5 and 1.074 <= 1.1
  rows[1]["final_test_mse"] = rows[2]["final_test_mse"] = 0.0290
  assert not teachers.summarize(setup, rows, None)["met"]  # 1.133 > 1.1
  table = pd.DataFrame([line, dict(line, **{"set-up": "other"})])
  teachers.plot(table, tmp_path / "kept.png", "title")
  assert (tmp_path / "kept.png").stat().st_size > 0


@pytest.mark.slow
def test_study_runs_each_setup_as_one_program_and_resumes(tmp_path):
  config = small_config(strength="description_length", gauss_loss=True)
  chosen = teachers.setups_named(["2-3-3-1", "2-6-6-6-1"])
  table = teachers.study(config, tmp_path, chosen, seeds=2, oracle_epochs=5)
  assert list(table["set-up"]) == ["2-3-3-1", "2-6-6-6-1"]
  for setup, line in zip(chosen, table.to_dict("records")):
    runs = pd.read_csv(tmp_path / setup.name / "runs.csv")
    assert len(runs) == 2 and set(runs["seeds_in_program"]) == {2}
    assert line["kept median"] == np.median(runs["kept_params"])
    assert line["MSE / noise var"] == pytest.approx(np.median(runs["final_test_mse"]) / 0.0064)
    assert line["seeds <= teacher"] == np.mean(runs["kept_params"] <= setup.teacher_params)
    assert runs["alpha_used"].iloc[0] == pytest.approx(ec.description_length_alpha(300))
  assert (tmp_path / "teachers.png").stat().st_size > 0
  assert "2-6-6-6-1" in (tmp_path / "teachers.md").read_text()
  stamps = [(tmp_path / s.name / "runs.csv").stat().st_mtime_ns for s in chosen]
  again = teachers.study(config, tmp_path, chosen, seeds=2, oracle_epochs=5)
  assert [(tmp_path / s.name / "runs.csv").stat().st_mtime_ns for s in chosen] == stamps
  pd.testing.assert_frame_equal(again, table)

  grid = teachers.strength_grid(config, tmp_path / "grid", "ec.bits_scale", [1.0, 4.0],
                                chosen[0], seeds=2)
  assert list(grid["ec.bits_scale"]) == [1.0, 4.0] and grid["chosen"].sum() == 1
  assert grid["alpha"][1] == pytest.approx(4 * ec.description_length_alpha(300))
  runs = pd.read_csv(tmp_path / "grid" / "2-3-3-1_ec.bits_scale_4" / "runs.csv")
  assert grid["val code mean"][1] == pytest.approx(runs["final_val_loss"].mean())


def test_one_standard_error_rule_takes_the_smallest_model_near_the_best():
  table = pd.DataFrame({"val code mean": [-2.840, -2.836, -2.832, -2.820, -2.790],
                        "val code se": [0.010, 0.013, 0.014, 0.016, 0.023],
                        "kept median": [66.5, 33.5, 26.5, 24.5, 18.5]})
  assert teachers.one_standard_error_choice(table) == 2  # -2.832 <= -2.840 + 0.010
  table.loc[0, "val code se"] = 0.001
  assert teachers.one_standard_error_choice(table) == 0
  table.loc[3, "val code mean"] = -2.85  # a new best with its own error bar
  assert teachers.one_standard_error_choice(table) == 3


def test_grid_config_sets_a_dotted_field():
  config = small_config()
  assert teachers.grid_config(config, "ec.bits_scale", 5).ec.bits_scale == 5.0
  assert config.ec.bits_scale == 1.0
  with pytest.raises(ConfigError, match="--grid_field 'ec.bits'"):
    teachers.grid_config(config, "ec.bits", 5)


@pytest.mark.slow
def test_the_command_line_runs_the_study(tmp_path):
  tiny = ["--config.min_epochs=0", "--config.max_epochs=60", "--config.smoothing_window=20",
          "--config.finetuning_min_epochs=0", "--config.finetuning_max_epochs=20",
          "--config.quiet=True"]
  out = subprocess.run(
      [sys.executable, "-m", "sparsejax.studies.teachers", "--config=configs/teacher_student.py:pmmp",
       f"--workdir={tmp_path}", "--seeds=2", "--setups=2-5-8-1_n150", "--oracle_epochs=5", *tiny],
      cwd=REPO, capture_output=True, text=True, timeout=600, check=True).stdout
  assert "| 2-5-8-1_n150 | 72 |" in out
  assert "of 1 set-ups meet both bars" in out
  runs = pd.read_csv(tmp_path / "2-5-8-1_n150" / "runs.csv")
  assert set(runs["train_set_size"]) == {150} and len(runs) == 2
  scale = ts_config.get_config("pmmp").ec.bits_scale
  assert runs["alpha_used"].iloc[0] == pytest.approx(scale * math.log2(150) / 300)
