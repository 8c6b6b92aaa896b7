"""Turns a validated config into the parts every run has: data, model, task.

The method's own parts (objectives, optimisers, phases) come from its recipe
(:mod:`sparsejax.recipes`).
"""

from __future__ import annotations

import ast
from typing import Any, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import ml_collections

from sparsejax import data as data_lib
from sparsejax import masks as masks_lib
from sparsejax.fields import ConfigError
from sparsejax.models import registry
from sparsejax.models.adapter import ModelAdapter
from sparsejax.runner.config import model_name
from sparsejax.train.losses import CLASSIFICATION, REGRESSION, Task


class Parts(NamedTuple):
  """Everything a run needs besides its method: data, model, task.

  Attributes:
    data: the :class:`~sparsejax.data.Splits` on the device; with
      ``data_axis = 0`` every array has a leading seed axis (teacher-student
      data are drawn per seed), with ``None`` they are shared by the seeds.
    data_axis: ``0`` or ``None`` (above).
    model: the model (:class:`~sparsejax.models.ModelAdapter`).
    task: the per-example loss and metrics.
    prunable: which parameter leaves get a mask.
    teacher_params: the teachers' parameters (teacher-student; per seed), else ``None``.
  """
  data: Any
  data_axis: int | None
  model: ModelAdapter
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
  0``): each seed has its own teacher and points, as its single run.
  Classification data sets (an image data set, ``npz:PATH`` or a
  tensorflow-datasets name; :func:`sparsejax.data.load_dataset`) are loaded
  once and shared (``data_axis = None``).
  """
  dtype = dtype_of(config)
  if config.dataset == "teacher_student":
    splits, teacher = jax.vmap(lambda seed: data_lib.teacher_student_data(
        seed, n_train=config.train_set_size or data_lib.teacher_student.N_TRAIN,
        n_val=config.val_set_size or data_lib.teacher_student.N_VAL,
        n_test=config.test_set_size or data_lib.teacher_student.N_TEST, noise=config.noise,
        teacher_widths=tuple(config.architecture_teacher), dtype=dtype))(jnp.asarray(seeds))
    return splits, 0, teacher
  splits = data_lib.load_dataset(
      config.dataset, data_dir=config.data_dir or None, manual_dir=config.manual_dir or None,
      image_size=config.image_size or None, dtype=dtype, download=config.download,
      val_fraction=config.val_fraction or None)
  return _normalise(_subset(splits, config), config), None, None


def _normalise(splits, config):
  """Images ``(x - input_offset) / input_scale`` (the identity by default)."""
  if config.input_offset == 0 and config.input_scale == 1:
    return splits
  def scale(split):
    return split._replace(x=(split.x - config.input_offset) / config.input_scale)
  return splits._replace(train=scale(splits.train), val=scale(splits.val), test=scale(splits.test))


def _subset(splits, config):
  """The first ``train_set_size`` / ``val_set_size`` / ``test_set_size`` examples of each
  split (0: all of it).

  Raises:
    ConfigError: a size larger than its split (the run would use the whole
      split while its row records the size asked for).
  """
  def take(split, name):
    n, available = config[f"{name}_set_size"], len(split.y)
    if n > available:
      raise ConfigError(f"config field '{name}_set_size' is {n}; the {name} split of "
                        f"{config.dataset} has {available} examples, so it must be at most "
                        f"{available} (0 = all of them)")
    return split if not n else type(split)(*(a[:n] for a in split))
  return splits._replace(train=take(splits.train, "train"), val=take(splits.val, "val"),
                         test=take(splits.test, "test"))


def data_shape(config) -> tuple[tuple[int, ...], int]:
  """``(input_shape, num_classes)`` of a classification data set, from the data.

  The shape of one input as the model takes it (``(H, W, C)`` images resized to
  ``image_size``, ``(D,)`` vectors, ...) and the number of classes, from the
  data set's description (:func:`sparsejax.data.dataset_info`: the image data
  sets' tables, an ``.npz`` file's arrays, a tensorflow-datasets builder's
  features), read without the examples.
  """
  info = data_lib.dataset_info(config.dataset, data_dir=config.data_dir or None,
                               download=config.download)
  shape = info.input_shape
  if config.image_size and len(shape) == 3:
    shape = (config.image_size, config.image_size, shape[2])
  return shape, info.num_classes


def input_shape(config) -> tuple[int, ...]:
  """The shape of one of the model's inputs (:func:`data_shape`)."""
  return data_shape(config)[0]


def model_kwargs(config: ml_collections.ConfigDict) -> dict:
  """``config.model_kwargs`` (a Python dict literal) as a dict.

  Raises:
    ConfigError: it is not a dict literal with string keys.
  """
  try:
    kwargs = ast.literal_eval(config.model_kwargs or "{}")
  except (ValueError, SyntaxError):
    kwargs = None
  if not isinstance(kwargs, dict) or not all(isinstance(k, str) for k in kwargs):
    raise ConfigError(f"config field 'model_kwargs' is {config.model_kwargs!r}; it must be a "
                      "Python dict literal with string keys, e.g. \"{'width': 64}\"")
  return kwargs


def model_spec(config: ml_collections.ConfigDict) -> registry.ModelSpec:
  """What the model is told: the data's input shape and outputs, the dtypes, the run's
  model fields and the ones the method sets (``Recipe.model_options``)."""
  from sparsejax.recipes import get_recipe
  if config.dataset == "teacher_student":
    shape, outputs = (config.architecture_teacher[0],), config.architecture_teacher[-1]
  else:
    shape, outputs = data_shape(config)
  options = dict(widths=tuple(config.architecture_student), activation=config.activation,
                 hidden_layers=config.hidden_layers, hidden_dim=config.hidden_dim,
                 **get_recipe(config.method).model_options(config))
  return registry.ModelSpec(tuple(shape), outputs, compute_dtype_of(config), dtype_of(config),
                            options)


def build_model(config: ml_collections.ConfigDict) -> ModelAdapter:
  """The run's model (:func:`model_name`) as a :class:`~sparsejax.models.ModelAdapter`,
  sized for the data set's inputs and outputs (:func:`model_spec`)."""
  return registry.build(model_name(config), model_spec(config), model_kwargs(config))


def build(config: ml_collections.ConfigDict, seeds: Sequence[int] | None = None) -> Parts:
  """The data (for ``seeds``, default ``[config.seed]``), model and task of a run."""
  seeds = [config.seed] if seeds is None else list(seeds)
  splits, data_axis, teacher = build_data(config, seeds)
  return Parts(
      data=splits,
      data_axis=data_axis,
      model=build_model(config),
      task=REGRESSION if config.dataset == "teacher_student" else CLASSIFICATION,
      prunable=masks_lib.named_prunable(config.prunable),
      teacher_params=teacher,
  )
