"""The reference's standard set-ups and each method's hyperparameters for them.

``configs/*.py`` are one call each: ``standard_config(setup, method)``. The
set-ups are the efficient-compression README's "standard configurations"
(notes section 7); everything not listed there stays at the
``TrainArgs`` defaults of :func:`sparsejax.runner.config.base_config`. The
reference gives no alpha or beta for its paper runs, so :data:`METHODS` holds
the values measured in ``docs/results.md`` for each set-up.

A config file takes the method as its argument::

  python -m sparsejax.main --config=configs/teacher_student.py:pmmp

and ``--config.method=...`` with ``--config.alpha=...`` overrides both.
"""

from __future__ import annotations

import ml_collections

from sparsejax.runner.config import METHODS as METHOD_NAMES
from sparsejax.runner.config import ConfigError, base_config

#: Set-up -> the fields the reference README sets for it.
SETUPS: dict[str, dict] = {
    "teacher_student": dict(
        dataset="teacher_student", architecture="mlp", architecture_teacher=[2, 5, 8, 1],
        architecture_student=[2, 25, 25, 1], activation="tanh", noise=0.08,
        train_batch_size=0, eval_batch_size=5000, lr=5e-4, min_epochs=5000, max_epochs=50000,
        smoothing_window=500, prune_window=50, finetuning_max_epochs=10000,
        checkpoint_every_epochs=1000),
    "lenet300_mnist": dict(
        dataset="mnist", architecture="lenet_300_100", train_batch_size=500,
        eval_batch_size=5000, min_epochs=300, max_epochs=5000, prune_window=10,
        finetuning_max_epochs=1000, checkpoint_every_epochs=10),
    "lenet5_mnist": dict(
        dataset="mnist", architecture="lenet5_caffe", train_batch_size=500,
        eval_batch_size=5000, min_epochs=300, max_epochs=5000, prune_window=10,
        finetuning_max_epochs=1000, checkpoint_every_epochs=10),
    "vgg_cifar": dict(
        dataset="cifar10", architecture="vgg16_bn", train_batch_size=500, eval_batch_size=500,
        min_epochs=30, max_epochs=300, smoothing_window=20, prune_window=10,
        finetuning_min_epochs=10, finetuning_max_epochs=50, shrinking_from_deviation_of=1e-2,
        checkpoint_every_epochs=10),
}

#: Set-up -> method -> its hyperparameters (see docs/results.md for how they were chosen).
METHODS: dict[str, dict[str, dict]] = {
    "teacher_student": {
        "none": {}, "layerwise": {},
        "rl1": dict(alpha=1e-3),
        "drr": dict(alpha=2e-4, beta=10.0),
        "pmmp": dict(alpha=1e-2),
    },
    "lenet300_mnist": {
        "none": {}, "layerwise": {},
        "rl1": dict(alpha=1e-5),
        "drr": dict(alpha=1.2e-5, beta=10.0),
        "pmmp": dict(alpha=2e-4),
    },
    "lenet5_mnist": {  # not tuned: LeNet-300-100's values
        "none": {},
        "rl1": dict(alpha=1e-5),
        "drr": dict(alpha=1.2e-5, beta=10.0),
        "pmmp": dict(alpha=2e-4),
    },
    "vgg_cifar": {  # not tuned (no GPU run yet)
        "none": {},
        "rl1": dict(alpha=1e-6),
        "drr": dict(alpha=1e-6, beta=10.0),
        "pmmp": dict(alpha=1e-6),
    },
}


def _set(config: ml_collections.ConfigDict, fields: dict) -> None:
  for name, value in fields.items():
    config[name] = value


def standard_config(setup: str, method: str) -> ml_collections.ConfigDict:
  """The reference's standard ``setup`` trained with ``method``.

  Args:
    setup: one of :data:`SETUPS`.
    method: one of ``none, rl1, drr, pmmp, layerwise``.

  Raises:
    ConfigError: for an unknown set-up or method, naming the accepted ones.
  """
  if setup not in SETUPS:
    raise ConfigError(f"unknown set-up {setup!r}; accepted: {', '.join(SETUPS)}")
  accepted = [m for m in METHOD_NAMES if m != "bmrs"]
  if method == "bmrs":
    raise ConfigError("method 'bmrs' has its own set-ups: configs/bmrs_*.py (bmrs_config)")
  if method not in accepted:
    raise ConfigError(f"config field 'method' is {method!r}; accepted values: "
                      f"{', '.join(accepted)}")
  if method == "layerwise" and SETUPS[setup]["architecture"] not in ("mlp", "lenet_300_100"):
    raise ConfigError(f"method 'layerwise' needs Dense layers only; set-up {setup!r} has "
                      f"{SETUPS[setup]['architecture']!r}")
  config = base_config()
  config.experiment_name = f"{setup}_{method}"
  _set(config, SETUPS[setup])
  config.method = method
  _set(config, METHODS[setup][method])
  return config


#: BMRS set-ups: the paper's Appendix C hyperparameters (Wright et al., 2024;
#: reference notes section 4). Images resized to 32x32, an 80/20 train/val
#: split of the official training set, Adam (no weight decay), 50 epochs with
#: the criterion every epoch, then 10 finetuning epochs. Inputs are centred as
#: the released ``train.py`` does: (pixel - 127) / 255 for (Fashion-)MNIST,
#: (pixel / 255 - 0.5) / 0.5 for CIFAR-10.
_BMRS_COMMON = dict(method="bmrs", image_size=32, val_fraction=0.2, optimizer="adam",
                    max_epochs=50, min_epochs=0, finetuning_max_epochs=10,
                    finetuning_min_epochs=0, eval_batch_size=2000)
_GREY = dict(input_offset=127 / 255, input_scale=1.0)
_COLOUR = dict(input_offset=0.5, input_scale=0.5)
BMRS_SETUPS: dict[str, dict] = {
    "bmrs_mlp_mnist": dict(
        dataset="mnist", architecture="bmrs_mlp", train_batch_size=128, lr=8.5e-4,
        **_GREY, **{"bmrs.n_layers": 7, "bmrs.hidden_dim": 100}),
    "bmrs_mlp_fashion_mnist": dict(
        dataset="fashion_mnist", architecture="bmrs_mlp", train_batch_size=128, lr=1.5e-3,
        **_GREY, **{"bmrs.n_layers": 1, "bmrs.hidden_dim": 150}),
    "bmrs_mlp_cifar": dict(
        dataset="cifar10", architecture="bmrs_mlp", train_batch_size=32, lr=6.8e-4,
        **_COLOUR, **{"bmrs.n_layers": 5, "bmrs.hidden_dim": 150}),
    "bmrs_lenet5_mnist": dict(
        dataset="mnist", architecture="bmrs_lenet5", train_batch_size=128, lr=1.4e-3, **_GREY),
    "bmrs_lenet5_fashion_mnist": dict(
        dataset="fashion_mnist", architecture="bmrs_lenet5", train_batch_size=32, lr=1.4e-3,
        **_GREY),
    # The reference README's example: LeNet-5, CIFAR-10, lr 0.001026894323862342.
    "bmrs_lenet5_cifar": dict(
        dataset="cifar10", architecture="bmrs_lenet5", train_batch_size=64,
        lr=0.001026894323862342, **_COLOUR),
}
#: Criterion argument -> the bmrs fields it sets ("none": no pruning, the baseline).
BMRS_CRITERIA: dict[str, dict] = {
    "none": {"bmrs.criterion": "none"},
    "snr": {"bmrs.criterion": "snr"},
    "expected_theta": {"bmrs.criterion": "expected_theta"},
    "l2": {"bmrs.criterion": "l2"},
    "bmrs_n": {"bmrs.criterion": "bmrs_n"},
    "bmrs_u8": {"bmrs.criterion": "bmrs_u", "bmrs.p1": 8.0},
    "bmrs_u4": {"bmrs.criterion": "bmrs_u", "bmrs.p1": 4.0},
}


def bmrs_config(setup: str, criterion: str = "bmrs_n") -> ml_collections.ConfigDict:
  """The BMRS ``setup`` pruned by ``criterion`` (one of :data:`BMRS_CRITERIA`).

  Raises:
    ConfigError: for an unknown set-up or criterion, naming the accepted ones.
  """
  if setup not in BMRS_SETUPS:
    raise ConfigError(f"unknown BMRS set-up {setup!r}; accepted: {', '.join(BMRS_SETUPS)}")
  if criterion not in BMRS_CRITERIA:
    raise ConfigError(f"unknown BMRS criterion {criterion!r}; accepted values: "
                      f"{', '.join(BMRS_CRITERIA)}")
  config = base_config()
  config.experiment_name = f"{setup}_{criterion}"
  _set_dotted(config, _BMRS_COMMON)
  _set_dotted(config, BMRS_SETUPS[setup])
  _set_dotted(config, BMRS_CRITERIA[criterion])
  return config


def _set_dotted(config: ml_collections.ConfigDict, fields: dict) -> None:
  for name, value in fields.items():
    *parents, leaf = name.split(".")
    node = config
    for parent in parents:
      node = node[parent]
    node[leaf] = value
