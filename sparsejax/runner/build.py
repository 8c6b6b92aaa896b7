"""Turns a validated config into the parts of a run: data, model, objective, optimiser."""

from __future__ import annotations

from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax

from sparsejax import data as data_lib
from sparsejax import masks as masks_lib
from sparsejax import models, objectives
from sparsejax.objectives.base import Objective
from sparsejax.train.losses import CLASSIFICATION, REGRESSION, Task

#: Offset of the student's initialisation key (the reference uses seed + 43).
MODEL_KEY_OFFSET = 43


class Parts(NamedTuple):
  """Everything a run needs besides its state."""
  data: Any                 # sparsejax.data.Splits, arrays on the device
  model: nn.Module
  task: Task
  objective: Objective      # the regularised phase
  finetune_objective: Objective
  prune_objective: Objective  # the data loss that RGP and TAMADE evaluate (MSE with gauss_loss)
  optimizer: optax.GradientTransformation
  prunable: masks_lib.PrunablePredicate
  teacher_params: Any       # teacher-student only, else None


def dtype_of(config) -> jnp.dtype:
  return jnp.float64 if config.dtype == "float64" else jnp.float32


def build_data(config: ml_collections.ConfigDict):
  """The data splits of the run (and the teacher's parameters for teacher-student)."""
  dtype = dtype_of(config)
  if config.dataset == "teacher_student":
    splits, teacher = data_lib.teacher_student_data(
        config.seed, n_train=config.train_set_size or 300, n_val=config.val_set_size or 1000,
        n_test=config.test_set_size or 5000, noise=config.noise,
        teacher_widths=tuple(config.architecture_teacher), dtype=dtype)
    return splits, teacher
  split = (dict(val_fraction=config.val_fraction, n_train=None) if config.val_fraction
           else {})
  splits = data_lib.load_image_dataset(
      config.dataset, data_dir=config.data_dir or None, manual_dir=config.manual_dir or None,
      image_size=config.image_size or None, dtype=dtype, **split)
  return _normalise(_subset(splits, config), config), None


def _normalise(splits, config):
  """Images ``(x - input_offset) / input_scale`` (the identity by default)."""
  if config.input_offset == 0 and config.input_scale == 1:
    return splits
  def scale(split):
    return split._replace(x=(split.x - config.input_offset) / config.input_scale)
  return splits._replace(train=scale(splits.train), val=scale(splits.val), test=scale(splits.test))


def _subset(splits, config):
  def take(split, n):
    return split if not n else type(split)(*(a[:n] for a in split))
  return splits._replace(train=take(splits.train, config.train_set_size),
                         val=take(splits.val, config.val_set_size),
                         test=take(splits.test, config.test_set_size))


#: Native image shapes (H, W, C) and class counts of the image data sets.
IMAGE_SHAPES = {"mnist": (28, 28, 1), "fashion_mnist": (28, 28, 1), "cifar10": (32, 32, 3),
                "tiny_imagenet": (64, 64, 3)}
NUM_CLASSES = {"mnist": 10, "fashion_mnist": 10, "cifar10": 10, "tiny_imagenet": 200}


def input_shape(config) -> tuple[int, int, int]:
  """``(H, W, C)`` of the model's inputs: the data set's, resized to ``image_size``."""
  height, width, channels = IMAGE_SHAPES[config.dataset]
  if config.image_size:
    height = width = config.image_size
  return height, width, channels


def build_model(config: ml_collections.ConfigDict) -> nn.Module:
  """The model of ``config.architecture``, sized for the data set's inputs and classes."""
  dtype = dtype_of(config)
  kwargs = dict(dtype=dtype, param_dtype=dtype)
  if config.architecture == "mlp":
    return models.MLP(widths=tuple(config.architecture_student), activation=config.activation,
                      **kwargs)
  if config.architecture in ("lenet_300_100", "lenet5_caffe", "vgg16_bn"):
    return models.get_model(config.architecture, **kwargs)
  height, width, channels = input_shape(config)
  kwargs["num_classes"] = NUM_CLASSES[config.dataset]
  if config.architecture == "bmrs_mlp":
    kwargs.update(n_layers=config.bmrs.n_layers, hidden_dim=config.bmrs.hidden_dim,
                  in_dim=height * width * channels)
  elif config.architecture == "bmrs_lenet5":
    kwargs["in_channels"] = channels
  return models.get_model(config.architecture, **kwargs)


def build_objective(config: ml_collections.ConfigDict, model: nn.Module | None = None,
                    n_train: int | None = None) -> Objective:
  """The regularised phase's objective, chosen by ``config.method``, before the Gauss loss.

  ``none`` and ``layerwise`` train without a penalty (the layerwise fit comes
  after the phase); ``rl1`` is L1 (+ L2); ``drr`` the smooth l0 surrogate
  (+ L2); ``pmmp`` probabilistic minimax pruning (+ L1, L2); ``bmrs``
  log-uniform gates on ``model``'s gate sites (the KL weighted by
  ``1 / n_train`` with ``bmrs.kl_weight="inverse_n_train"``).
  """
  if config.method == "bmrs":
    weight = 1.0 if config.bmrs.kl_weight == "one" else 1.0 / n_train
    return objectives.log_uniform_gates(model.gate_sites(), kl_reduction=config.bmrs.kl_reduction,
                                        kl_weight=weight, noise=config.bmrs.noise)
  if config.method in ("none", "layerwise"):
    return objectives.plain()
  if config.method == "rl1":
    return objectives.rl1(config.alpha, config.rho)
  if config.method == "drr":
    return objectives.drr(config.alpha, config.beta, rho=config.rho, norm=config.norm,
                          layer_norm=config.layer_norm)
  if config.method == "pmmp":
    return objectives.pmmp(config.alpha, initial_p_value=config.initial_p_value,
                           initial_u_value=config.initial_u_value,
                           u_value_multiply_factor=config.u_value_multiply_factor,
                           l1_alpha=config.l1_alpha, rho=config.rho)
  raise ValueError(f"unknown method {config.method!r}")


def _with_loss(config: ml_collections.ConfigDict, objective: Objective) -> Objective:
  return objectives.with_gauss_loss(objective) if config.gauss_loss else objective


def build_optimizer(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
  if config.optimizer == "adam":
    return optax.adam(config.lr)
  return optax.sgd(config.lr)


def build(config: ml_collections.ConfigDict) -> Parts:
  splits, teacher = build_data(config)
  model = build_model(config)
  objective = build_objective(config, model, splits.train.x.shape[0])
  return Parts(
      data=splits,
      model=model,
      task=REGRESSION if config.dataset == "teacher_student" else CLASSIFICATION,
      objective=_with_loss(config, objective),
      finetune_objective=_with_loss(config, objectives.plain()),
      prune_objective=objective,
      optimizer=build_optimizer(config),
      prunable=masks_lib.every_leaf if config.prunable == "all" else masks_lib.kernels_only,
      teacher_params=teacher,
  )


def model_key_of_seed(seed) -> jax.Array:
  """The model's initialisation key for ``seed`` (traceable, so it vmaps over seeds)."""
  return jax.random.fold_in(jax.random.key(seed), MODEL_KEY_OFFSET)


def model_key(config) -> jax.Array:
  return model_key_of_seed(config.seed)
