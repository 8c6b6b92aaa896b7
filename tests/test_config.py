"""The config schema and the shipped config files: bad fields and values are clear errors
before any compute, and every configs/*.py loads, validates and sets the expected values."""

import importlib.util
import pathlib
import re
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # config files import ``configs.common``, as under sparsejax.main
  sys.path.insert(0, str(REPO))

from configs import common  # noqa: E402
from sparsejax.fields import ConfigError  # noqa: E402
from sparsejax.recipes import recipe_names  # noqa: E402
from sparsejax.runner.config import base_config, field_names, validate  # noqa: E402

#: The comparison studies' configs (``python -m sparsejax.studies.compare``; tests/test_compare.py),
#: not configs of one run.
STUDY_CONFIGS = ("compare_lenet300_fashion_mnist", "compare_lenet300_mnist", "compare_lenet5_mnist")
CONFIGS = sorted(p for p in (REPO / "configs").glob("*.py")
                 if p.stem not in ("__init__", "common", *STUDY_CONFIGS))
BMRS_SETUPS = ("bmrs_mlp_mnist", "bmrs_mlp_fashion_mnist", "bmrs_mlp_cifar", "bmrs_lenet5_mnist",
               "bmrs_lenet5_fashion_mnist", "bmrs_lenet5_cifar")
#: The methods each efficient-compression set-up accepts (layerwise: Dense set-ups only).
STANDARD_METHODS = {
    "teacher_student": ("none", "rl1", "drr", "pmmp", "layerwise", "magnitude"),
    "lenet300_mnist": ("none", "rl1", "drr", "pmmp", "layerwise", "magnitude"),
    "lenet5_mnist": ("none", "rl1", "drr", "pmmp"),
    "vgg_cifar": ("none", "rl1", "drr", "pmmp"),
}
BMRS_CRITERIA = ("none", "snr", "expected_theta", "l2", "bmrs_n", "bmrs_u8", "bmrs_u4")
DEEPHOYER_SETUPS = ("deephoyer_lenet300_mnist", "deephoyer_lenet5_mnist")
DEEPHOYER_REGULARISERS = ("none", "l1", "hoyer", "hs", "tl1", "group_lasso", "group_hs")
#: The formulations of the L0 set-ups (the penalty grid: the MLP's lambda search).
L0_SETUPS = {"l0_mlp_mnist": ("constrained", "augmented", "penalized", "penalty_grid"),
             "l0_lenet5_mnist": ("constrained", "augmented", "penalized")}
#: The criteria of the pruning-at-initialisation set-ups.
ANNEAL_SETUPS = {"anneal_mlp_mnist": ("sa", "lth", "deconst", "snip", "random"),
                 "anneal_cnn_cifar": ("sa", "magnitude", "magsign", "random")}
#: The sparse-training set-ups (every one accepts every sparse-training method).
SPARSE_TRAINING_SETUPS = ("sparse_training_lenet300_mnist", "sparse_training_lenet5_mnist")
MAGNITUDE_MISSING = "method 'magnitude' is not registered in sparsejax.recipes yet"


def module(path):
  """The config file at ``path``, loaded by path as ml_collections' config_flags does."""
  spec = importlib.util.spec_from_file_location(path.stem, path)
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod


def load(name, *args):
  return module(REPO / "configs" / f"{name}.py").get_config(*args)


def accepted(name):
  if name in L0_SETUPS:
    return L0_SETUPS[name]
  if name in ANNEAL_SETUPS:
    return ANNEAL_SETUPS[name]
  if name == "deephoyer_lenet300_mnist":  # also the magnitude baseline
    return (*DEEPHOYER_REGULARISERS, "magnitude")
  if name in DEEPHOYER_SETUPS:
    return DEEPHOYER_REGULARISERS
  if name in SPARSE_TRAINING_SETUPS:
    return tuple(common.SPARSE_TRAINING_METHODS)
  return BMRS_CRITERIA if name in BMRS_SETUPS else STANDARD_METHODS[name]


def default_argument(name):
  return {**{s: "bmrs_n" for s in BMRS_SETUPS}, **{s: "hs" for s in DEEPHOYER_SETUPS},
          **{s: "constrained" for s in L0_SETUPS}, **{s: "sa" for s in ANNEAL_SETUPS},
          **{s: "rigl" for s in SPARSE_TRAINING_SETUPS}}.get(
      name, "drr")


def test_the_config_files_are_the_expected_ones():
  assert [p.stem for p in CONFIGS] == sorted([*STANDARD_METHODS, *BMRS_SETUPS,
                                              *DEEPHOYER_SETUPS, *L0_SETUPS, *ANNEAL_SETUPS,
                                              *SPARSE_TRAINING_SETUPS])
  assert (REPO / "configs" / "__init__.py").exists()
  studies = sorted(p.stem for p in (REPO / "configs").glob("compare_*.py"))
  assert studies == list(STUDY_CONFIGS)


def test_each_config_accepts_its_arguments():
  for name in STANDARD_METHODS:
    assert tuple(module(REPO / "configs" / f"{name}.py").METHODS) == STANDARD_METHODS[name]
  assert tuple(common.BMRS_CRITERIA) == BMRS_CRITERIA


@pytest.mark.parametrize("name,arg", [(n, a) for n in sorted([*STANDARD_METHODS, *BMRS_SETUPS,
                                                              *DEEPHOYER_SETUPS, *L0_SETUPS,
                                                              *ANNEAL_SETUPS,
                                                              *SPARSE_TRAINING_SETUPS])
                                      for a in accepted(n)])
def test_every_config_loads_and_validates_for_every_argument(name, arg):
  if arg == "magnitude" and "magnitude" not in recipe_names():
    pytest.skip(MAGNITUDE_MISSING)
  config = load(name, arg)
  validate(config)
  assert config.experiment_name == f"{name}_{arg}"
  if name in BMRS_SETUPS:
    assert config.method == "bmrs"
    assert config.checkpoint_every_epochs == 1
  elif name in DEEPHOYER_SETUPS and arg == "magnitude":
    assert config.method == "magnitude" and config.pruning.density == 0.028
  elif name in DEEPHOYER_SETUPS:
    assert config.method == "deephoyer" and config.deephoyer.regulariser == arg
  elif name in L0_SETUPS:
    assert config.method == "l0" and config.l0.penalty_sweep == (arg == "penalty_grid")
  elif name in ANNEAL_SETUPS:
    assert config.method == "anneal" and config.anneal.criterion == arg
  elif name in SPARSE_TRAINING_SETUPS:
    assert config.method == arg and config.prunable == "kernels"
    assert config.pruning.density == (0.5 if arg == "sr_ste" else 0.1)
    assert config.sparse.structure == ("2:4" if arg == "sr_ste" else "unstructured")
  else:
    assert config.method == arg


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_default_argument_and_docstring(path):
  default = default_argument(path.stem)
  assert load(path.stem).to_dict() == load(path.stem, default).to_dict()
  doc = module(path).__doc__
  assert f"python -m sparsejax.main --config=configs/{path.stem}.py:" in doc


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_unknown_argument_names_the_accepted_ones(path):
  names = accepted(path.stem)
  with pytest.raises(ConfigError, match=re.escape(f"accepted values: {', '.join(names)}") + "$"):
    load(path.stem, "l0")


def test_methods_a_set_up_does_not_offer():
  with pytest.raises(ConfigError, match="configs/bmrs_"):
    load("teacher_student", "bmrs")
  for name in ("lenet5_mnist", "vgg_cifar"):  # layerwise fits Dense layers only
    for method in ("layerwise", "magnitude"):
      with pytest.raises(ConfigError, match="accepted values: none, rl1, drr, pmmp$"):
        load(name, method)


def test_magnitude_is_a_clear_error_until_registered():
  if "magnitude" in recipe_names():
    pytest.skip("method 'magnitude' is registered")
  with pytest.raises(ConfigError, match="'magnitude' is not registered"):
    load("lenet300_mnist", "magnitude")


@pytest.mark.parametrize("name,arg,expected", [
    ("teacher_student", "drr", {"ec.strength": "description_length", "ec.bits_scale": 2.0,
                                "ec.beta": 10.0, "ec.gauss_loss": True, "lr": 5e-4,
                                "train_batch_size": 0, "architecture_student": (2, 25, 25, 1),
                                "max_epochs": 20000, "prune_window": 50,
                                "smoothing_window": 500, "ec.shrinking": False}),
    ("teacher_student", "pmmp", {"ec.strength": "description_length", "ec.bits_scale": 10.0,
                                 "ec.initial_p_value": 1.0, "ec.gauss_loss": True}),
    ("teacher_student", "magnitude", {"pruning.density": 0.1}),
    ("lenet300_mnist", "drr", {"ec.alpha": 1.2e-5, "architecture": "lenet_300_100", "lr": 1e-3,
                               "train_batch_size": 500, "min_epochs": 300, "max_epochs": 5000}),
    ("lenet300_mnist", "magnitude", {"pruning.density": 0.1, "architecture": "lenet_300_100"}),
    ("lenet5_mnist", "rl1", {"ec.alpha": 1e-5, "architecture": "lenet5_caffe"}),
    ("vgg_cifar", "pmmp", {"ec.alpha": 1e-6, "architecture": "vgg16_bn", "eval_batch_size": 500,
                           "finetuning_min_epochs": 10, "finetuning_max_epochs": 50}),
    ("bmrs_mlp_mnist", "bmrs_n", {"hidden_layers": 7, "hidden_dim": 100, "lr": 8.5e-4,
                                  "train_batch_size": 128, "bmrs.criterion": "bmrs_n",
                                  "image_size": 32, "val_fraction": 0.2, "max_epochs": 50,
                                  "finetuning_max_epochs": 10, "input_offset": 127 / 255}),
    ("bmrs_mlp_fashion_mnist", "l2", {"hidden_layers": 1, "hidden_dim": 150, "lr": 1.5e-3,
                                      "bmrs.criterion": "l2"}),
    ("bmrs_mlp_cifar", "bmrs_u4", {"hidden_layers": 5, "hidden_dim": 150, "train_batch_size": 32,
                                   "bmrs.criterion": "bmrs_u", "bmrs.p1": 4.0,
                                   "input_offset": 0.5, "input_scale": 0.5}),
    ("bmrs_lenet5_cifar", "bmrs_u8", {"lr": 0.001026894323862342, "train_batch_size": 64,
                                      "bmrs.criterion": "bmrs_u", "bmrs.p1": 8.0,
                                      "dataset": "cifar10", "input_scale": 0.5}),
    ("bmrs_lenet5_fashion_mnist", "snr", {"lr": 1.4e-3, "train_batch_size": 32,
                                          "dataset": "fashion_mnist", "input_offset": 127 / 255,
                                          "input_scale": 1.0, "architecture": "bmrs_lenet5"}),
])
def test_hand_written_values(name, arg, expected):
  if arg == "magnitude" and "magnitude" not in recipe_names():
    pytest.skip(MAGNITUDE_MISSING)
  config = load(name, arg)
  for field, value in expected.items():
    group, _, leaf = field.rpartition(".")
    assert (config[group] if group else config)[leaf] == value, field


def test_bmrs_set_up_rejects_an_unknown_data_set():
  config = common.base("bmrs", "x")
  with pytest.raises(ConfigError, match="unknown BMRS data set 'svhn'; accepted values: "
                                        "mnist, fashion_mnist, cifar10$"):
    common.bmrs_appendix_c(config, "bmrs_n", "svhn")


def test_common_set_fields_rejects_unknown_fields():
  config = common.base("drr", "x")
  common.set_fields(config, {"pruning.density": 0.5, "ec.alpha": 1e-3})
  assert config.pruning.density == 0.5 and config.ec.alpha == 1e-3
  with pytest.raises(ConfigError, match="'pruning.densty'"):
    common.set_fields(config, {"pruning.densty": 0.5})
  with pytest.raises(ConfigError, match="'nosuch'"):
    common.set_fields(config, {"nosuch.field": 1})


@pytest.mark.parametrize("field,value,message", [
    ("lr", -1e-3, "'lr' is -0.001; it must be > 0"),
    ("dataset", "imagenet", "accepted values: teacher_student, mnist, fashion_mnist, cifar10"),
    ("architecture", "resnet9", "accepted values: mlp, lenet_300_100"),
    ("method", "magic", "'method' is 'magic'; accepted values"),
    ("optimizer", "lion", "accepted values: adam, sgd"),
    ("max_epochs", 1, "must be >= min_epochs"),
    ("train_batch_size", -5, "'train_batch_size' is -5; it must be >= 0"),
    ("ec.alpha", -1.0, "'ec.alpha' is -1.0; it must be >= 0"),
    ("ec.beta", 0.0, "'ec.beta' is 0.0; it must be > 0"),
    ("ec.initial_p_value", 1.5, "'ec.initial_p_value' is 1.5; it must be in [0, 1]"),
    ("pruning.calibration", "test", "accepted values: train, val"),
    ("pruning.criterion", "snip", "accepted values: none, tamade, description_length, global_density"),
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
