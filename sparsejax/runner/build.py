"""Turns a validated config into the parts every run has: data, model, task, optimiser.

The method's own parts (objectives, phases) come from its recipe
(:mod:`sparsejax.recipes`).
"""

from __future__ import annotations

from typing import Any, NamedTuple, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax

from sparsejax import data as data_lib
from sparsejax import masks as masks_lib
from sparsejax import models
from sparsejax.train.losses import CLASSIFICATION, REGRESSION, Task


class Parts(NamedTuple):
  """Everything a run needs besides its method: data, model, task.

  Attributes:
    data: the :class:`~sparsejax.data.Splits` on the device; with
      ``data_axis = 0`` every array has a leading seed axis (teacher-student
      data are drawn per seed), with ``None`` they are shared by the seeds.
    data_axis: ``0`` or ``None`` (above).
    model: the Flax model.
    task: the per-example loss and metrics.
    prunable: which parameter leaves get a mask.
    teacher_params: the teachers' parameters (teacher-student; per seed), else ``None``.
  """
  data: Any
  data_axis: int | None
  model: nn.Module
  task: Task
  prunable: masks_lib.PrunablePredicate
  teacher_params: Any

  def split_size(self, split: str = "train") -> int:
    """The examples in ``split`` (one seed's, where each seed has its own data)."""
    return getattr(self.data, split).x.shape[1 if self.data_axis == 0 else 0]


def dtype_of(config) -> jnp.dtype:
  """The parameters', optimiser state's and data's dtype (float32 under ``"bfloat16"``)."""
  return jnp.float64 if config.dtype == "float64" else jnp.float32


def compute_dtype_of(config) -> jnp.dtype:
  """The dtype the model's layers compute in: bfloat16 for mixed precision
  (``dtype="bfloat16"``: float32 parameters cast to bfloat16 in each layer,
  BatchNorm statistics and the loss in float32), else :func:`dtype_of`."""
  return jnp.bfloat16 if config.dtype == "bfloat16" else dtype_of(config)


def build_data(config: ml_collections.ConfigDict, seeds: Sequence[int]):
  """``(splits, data_axis, teacher)`` for the seeds of one program.

  Teacher-student data are drawn per seed (leading seed axis, ``data_axis =
  0``): each seed has its own teacher and points, as its single run. Image
  data sets are loaded once and shared (``data_axis = None``).
  """
  dtype = dtype_of(config)
  if config.dataset == "teacher_student":
    splits, teacher = jax.vmap(lambda seed: data_lib.teacher_student_data(
        seed, n_train=config.train_set_size or 300, n_val=config.val_set_size or 1000,
        n_test=config.test_set_size or 5000, noise=config.noise,
        teacher_widths=tuple(config.architecture_teacher), dtype=dtype))(jnp.asarray(seeds))
    return splits, 0, teacher
  split = (dict(val_fraction=config.val_fraction, n_train=None) if config.val_fraction
           else {})
  splits = data_lib.load_image_dataset(
      config.dataset, data_dir=config.data_dir or None, manual_dir=config.manual_dir or None,
      image_size=config.image_size or None, dtype=dtype, download=config.download, **split)
  return _normalise(_subset(splits, config), config), None, None


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
  """The model of ``config.architecture``, sized for the data set's inputs and classes,
  with the fields the method's recipe sets (``Recipe.model_options``)."""
  from sparsejax.recipes import get_recipe
  kwargs = dict(dtype=compute_dtype_of(config), param_dtype=dtype_of(config),
                **get_recipe(config.method).model_options(config))
  if config.architecture == "mlp":
    return models.MLP(widths=tuple(config.architecture_student), activation=config.activation,
                      **kwargs)
  if config.architecture in ("lenet_300_100", "lenet_300_100_no_bias", "lenet5_caffe",
                             "vgg16_bn"):
    return models.get_model(config.architecture, **kwargs)
  height, width, channels = input_shape(config)
  kwargs["num_classes"] = NUM_CLASSES[config.dataset]
  if config.architecture == "bmrs_mlp":
    kwargs.update(n_layers=config.hidden_layers, hidden_dim=config.hidden_dim,
                  in_dim=height * width * channels)
  elif config.architecture == "bmrs_lenet5":
    kwargs["in_channels"] = channels
  return models.get_model(config.architecture, **kwargs)


def param_shapes(config: ml_collections.ConfigDict):
  """The model's ``params`` as ``jax.ShapeDtypeStruct`` leaves (no compute, no data)."""
  model = build_model(config)
  shape = ((config.architecture_student[0],) if config.dataset == "teacher_student"
           else input_shape(config))
  sample = jax.ShapeDtypeStruct((1, *shape), dtype_of(config))
  return jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), sample)["params"]


def build_optimizer(config: ml_collections.ConfigDict, lr: float | None = None
                    ) -> optax.GradientTransformation:
  """``config.optimizer`` (Adam, SGD or Adadelta) at ``lr`` (default ``config.lr``).

  Adadelta has PyTorch's defaults (``rho=0.9``, ``eps=1e-6``).
  """
  lr = config.lr if lr is None else lr
  if config.optimizer == "adam":
    return optax.adam(lr)
  if config.optimizer == "adadelta":
    return optax.adadelta(lr, rho=0.9, eps=1e-6)
  return optax.sgd(lr)


def build(config: ml_collections.ConfigDict, seeds: Sequence[int] | None = None) -> Parts:
  """The data (for ``seeds``, default ``[config.seed]``), model and task of a run."""
  seeds = [config.seed] if seeds is None else list(seeds)
  splits, data_axis, teacher = build_data(config, seeds)
  return Parts(
      data=splits,
      data_axis=data_axis,
      model=build_model(config),
      task=REGRESSION if config.dataset == "teacher_student" else CLASSIFICATION,
      prunable=masks_lib.every_leaf if config.prunable == "all" else masks_lib.kernels_only,
      teacher_params=teacher,
  )
