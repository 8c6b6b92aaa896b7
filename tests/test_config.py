"""Config schema: unknown fields and bad values are clear errors before any compute."""

import importlib.util
import pathlib
import re
import subprocess
import sys

import pytest

from sparsejax.runner.config import ConfigError, base_config, field_names, validate
from sparsejax.runner.presets import BMRS_CRITERIA

REPO = pathlib.Path(__file__).resolve().parents[1]
CONFIGS = sorted((REPO / "configs").glob("*.py"))


def load(path, *args):
  spec = importlib.util.spec_from_file_location(path.stem, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(*args)


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_every_shipped_config_is_valid_for_every_method_it_accepts(path):
  validate(load(path))
  if path.stem.startswith("bmrs_"):
    for criterion in BMRS_CRITERIA:
      config = load(path, criterion)
      validate(config)
      assert config.method == "bmrs" and config.experiment_name == f"{path.stem}_{criterion}"
    return
  for method in ("none", "rl1", "drr", "pmmp", "layerwise"):
    if method == "layerwise" and path.stem in ("lenet5_mnist", "vgg_cifar"):
      with pytest.raises(ConfigError, match="needs Dense layers only"):
        load(path, method)
      continue
    config = load(path, method)
    validate(config)
    assert config.method == method and config.experiment_name == f"{path.stem}_{method}"


def test_unknown_method_argument_lists_the_methods():
  with pytest.raises(ConfigError, match="accepted values: none, rl1, drr, pmmp, layerwise$"):
    load(REPO / "configs/teacher_student.py", "l0")
  with pytest.raises(ConfigError, match="configs/bmrs_"):
    load(REPO / "configs/teacher_student.py", "bmrs")


def test_expected_configs_exist():
  assert {p.stem for p in CONFIGS} >= {"teacher_student", "lenet300_mnist", "lenet5_mnist", "vgg_cifar"}


@pytest.mark.parametrize("field,value,message", [
    ("lr", -1e-3, "'lr' is -0.001; it must be > 0"),
    ("dataset", "imagenet", "accepted values: teacher_student, mnist, fashion_mnist, cifar10"),
    ("architecture", "resnet9", "accepted values: mlp, lenet_300_100"),
    ("method", "magic", "'method' is 'magic'; accepted values"),
    ("optimizer", "lion", "accepted values: adam, sgd"),
    ("max_epochs", 1, "must be >= min_epochs"),
    ("train_batch_size", -5, "'train_batch_size' is -5; it must be >= 0"),
    ("alpha", -1.0, "'alpha' is -1.0; it must be >= 0"),
    ("beta", 0.0, "'beta' is 0.0; it must be > 0"),
    ("initial_p_value", 1.5, "'initial_p_value' is 1.5; it must be in [0, 1]"),
    ("pruning.calibration", "test", "accepted values: train, val"),
    ("pruning.criterion", "snip", "accepted values: none, tamade, global_density"),
])
def test_bad_values_name_the_field_and_accepted_values(field, value, message):
  c = base_config()
  group, _, name = field.rpartition(".")
  (c[group] if group else c)[name] = value
  with pytest.raises(ConfigError, match=re.escape(message)):
    validate(c)


@pytest.mark.parametrize("density", [0.0, -0.1, 1.5])
def test_density_outside_unit_interval(density):
  c = base_config()
  c.pruning.density = density
  with pytest.raises(ConfigError, match=r"'pruning.density'.*in \(0, 1\]"):
    validate(c)


def test_unknown_field_lists_valid_ones():
  c = base_config()
  c.unlocked = True  # ConfigDict is not locked here; validate still catches it
  with pytest.raises(ConfigError, match="unknown config field 'unlocked'; valid fields: .*lr"):
    validate(c)
  assert "pruning.density" in field_names()


def run_main(*args):
  return subprocess.run([sys.executable, "-m", "sparsejax.main", *args], cwd=REPO,
                        capture_output=True, text=True, timeout=120)


def test_command_line_unknown_override_is_a_clear_error(tmp_path):
  out = run_main("--config=configs/teacher_student.py", "--config.learning_rate=0.1",
                 f"--workdir={tmp_path}")
  assert out.returncode != 0
  assert "unknown config field 'learning_rate'; valid fields:" in out.stderr
  assert "Traceback" not in out.stderr


def test_command_line_bad_value_fails_before_compute(tmp_path):
  out = run_main("--config=configs/teacher_student.py", "--config.pruning.density=1.5",
                 f"--workdir={tmp_path}")
  assert out.returncode != 0
  assert "'pruning.density' is 1.5; it must be in (0, 1]" in out.stderr
  assert not (tmp_path / "runs.csv").exists()
