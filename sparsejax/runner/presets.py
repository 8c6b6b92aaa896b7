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
  if method not in METHOD_NAMES:
    raise ConfigError(f"config field 'method' is {method!r}; accepted values: "
                      f"{', '.join(METHOD_NAMES)}")
  if method == "layerwise" and SETUPS[setup]["architecture"] not in ("mlp", "lenet_300_100"):
    raise ConfigError(f"method 'layerwise' needs Dense layers only; set-up {setup!r} has "
                      f"{SETUPS[setup]['architecture']!r}")
  config = base_config()
  config.experiment_name = f"{setup}_{method}"
  _set(config, SETUPS[setup])
  config.method = method
  _set(config, METHODS[setup][method])
  return config
