"""Classification data sets held as host arrays: their description and their splits.

One's own data sets (an ``.npz`` file, :mod:`sparsejax.data.npz`; a
tensorflow-datasets name, :mod:`sparsejax.data.catalog`) are described by a
:class:`DatasetInfo` before their examples are read, and read as
:class:`ArraySplits`: a training set and, where the data set has them, a
validation and a test set. :func:`array_splits` makes the
:class:`~sparsejax.data.Splits` of them, on the device:

* **validation**: the data set's own if it has one (``val_fraction`` must
  then be unset); otherwise held out of the training set by the seeded
  permutation of the image data sets (:func:`~sparsejax.data.train_val_indices`):
  ``round(val_fraction * n)`` examples with ``val_fraction``, else 5,000 (the
  image data sets' default), and all the rest trains (the image data sets' cap
  of 45,000 training examples, the MNIST reference's, does not apply);
* **test**: the data set's own if it has one; otherwise the validation set
  serves as the test set too, so the test metrics are the validation metrics;
* **inputs**: uint8 arrays are images, scaled to ``[0, 1]`` (``x / 255``) and,
  with ``image_size``, resized as the image data sets are
  (:func:`~sparsejax.data.images_to_device`; ``(n, H, W, C)`` only); any other
  numeric arrays are cast to ``dtype`` unchanged. Labels become int32.
"""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp
import numpy as np

from sparsejax.data.images import DEFAULT_N_VAL, DatasetError, Dtype, images_to_device
from sparsejax.data.splits import Split, Splits, train_val_indices

#: Inputs and integer labels of one split, on the host.
HostSplit = tuple[np.ndarray, np.ndarray]


class DatasetFormatError(DatasetError, ValueError):
  """A data set's arrays do not fit together, or do not fit the options asked of them."""


class DatasetInfo(NamedTuple):
  """What a classification data set is, known before its examples are read.

  Attributes:
    input_shape: the shape of one input: ``(H, W, C)`` images, ``(D,)``
      vectors, any shape.
    input_dtype: the stored inputs' dtype (uint8 inputs are scaled to
      ``[0, 1]``).
    num_classes: the labels are ``0 .. num_classes - 1``.
    n_train: the examples of the training set; ``None`` where unknown before
      reading (a tensorflow-datasets set still to be downloaded).
    has_val: whether the data set has its own validation set.
    has_test: whether the data set has its own test set.
  """
  input_shape: tuple[int, ...]
  input_dtype: np.dtype
  num_classes: int
  n_train: int | None = None
  has_val: bool = False
  has_test: bool = True


class ArraySplits(NamedTuple):
  """A data set's splits as read, on the host: ``(inputs, labels)`` pairs.

  Attributes:
    train: the training set.
    val: the data set's own validation set, or ``None``.
    test: the data set's own test set, or ``None``.
  """
  train: HostSplit
  val: HostSplit | None = None
  test: HostSplit | None = None


def n_held_out(n_train: int, val_fraction: float | None) -> int:
  """The validation examples held out of ``n_train`` training examples.

  ``round(val_fraction * n_train)`` with ``val_fraction``, else
  :data:`~sparsejax.data.images.DEFAULT_N_VAL` (5,000).

  Raises:
    DatasetFormatError: that leaves no validation or no training example.
  """
  n_val = round(val_fraction * n_train) if val_fraction else DEFAULT_N_VAL
  if not 1 <= n_val < n_train:
    left = "none for validation" if n_val < 1 else "none for training"
    asked = (f"val_fraction={val_fraction} holds out {n_val:,}" if val_fraction
             else f"without val_fraction, {DEFAULT_N_VAL:,} are held out")
    raise DatasetFormatError(
        f"the data set has no validation set of its own, and {asked} of its {n_train:,} "
        f"training examples for validation, which leaves {left}; set val_fraction "
        f"(--config.val_fraction=) in (0, 1) so that both keep examples, or give the data "
        f"set a validation set (x_val and y_val in an .npz file)")
  return n_val


def check_options(info: DatasetInfo, *, val_fraction: float | None = None,
                  image_size: int | None = None) -> None:
  """Checks that :func:`array_splits` can split and resize a data set as asked.

  Args:
    info: the data set's description.
    val_fraction: the share of the training set held out for validation;
      ``None`` or ``0`` for the default (module docstring).
    image_size: the size images are resized to, ``None`` or ``0`` for none.

  Raises:
    DatasetFormatError: ``val_fraction`` is given for a data set with its own
      validation set; the training set is too small to hold out the
      validation set (where its size is known); or ``image_size`` is given
      for inputs that are not uint8 ``(H, W, C)`` images.
  """
  if info.has_val and val_fraction:
    raise DatasetFormatError(
        f"the data set has its own validation set, so val_fraction must be 0 (it is "
        f"{val_fraction}); leave the validation set out of the data to hold out a share of "
        f"the training set instead")
  if not info.has_val and info.n_train is not None:
    n_held_out(info.n_train, val_fraction)
  if image_size and not (info.input_dtype == np.uint8 and len(info.input_shape) == 3):
    raise DatasetFormatError(
        f"image_size={image_size} resizes uint8 images of shape (H, W, C) only, and the "
        f"data set's inputs are {info.input_dtype} of shape {info.input_shape}; set "
        f"image_size to 0 and store the inputs at the size the model takes")


def info_of(arrays: ArraySplits) -> DatasetInfo:
  """The description of data read as :class:`ArraySplits`."""
  x, _ = arrays.train
  labels = [split[1] for split in arrays if split is not None]
  return DatasetInfo(input_shape=tuple(x.shape[1:]), input_dtype=x.dtype,
                     num_classes=int(max(y.max(initial=0) for y in labels)) + 1,
                     n_train=len(x), has_val=arrays.val is not None,
                     has_test=arrays.test is not None)


def _to_device(split: HostSplit, dtype: Dtype, image_size: int | None) -> Split:
  x, y = split
  if x.dtype == np.uint8:
    return images_to_device(x, y, dtype, image_size or None)
  return Split(jnp.asarray(x, dtype), jnp.asarray(y, jnp.int32))


def array_splits(
    arrays: ArraySplits,
    *,
    split_seed: int = 123,
    val_fraction: float | None = None,
    dtype: Dtype = jnp.float32,
    image_size: int | None = None,
) -> Splits:
  """The train / val / test splits of ``arrays`` on the device (module docstring).

  Args:
    arrays: the data set as read.
    split_seed: seed of the permutation that holds out the validation set
      where the data set has none (:func:`~sparsejax.data.train_val_indices`).
    val_fraction: the share of the training set held out for validation in
      that case; ``None`` or ``0`` for 5,000 examples.
    dtype: dtype of the inputs.
    image_size: resize uint8 ``(n, H, W, C)`` images to ``(image_size,
      image_size)``; ``None`` or ``0`` keeps the inputs' size.

  Returns:
    :class:`~sparsejax.data.Splits` of ``dtype`` inputs and int32 labels;
    ``test`` is ``val`` where the data set has no test set.

  Raises:
    DatasetFormatError: as :func:`check_options`.
  """
  check_options(info_of(arrays), val_fraction=val_fraction, image_size=image_size)
  train, val, test = arrays
  if val is None:
    x, y = train
    train_idx, val_idx = train_val_indices(len(y), n_held_out(len(y), val_fraction), split_seed)
    train, val = (x[train_idx], y[train_idx]), (x[val_idx], y[val_idx])
  val_split = _to_device(val, dtype, image_size)
  return Splits(train=_to_device(train, dtype, image_size), val=val_split,
                test=val_split if test is None else _to_device(test, dtype, image_size))
