"""Classification data sets by name: the image data sets, ``npz:PATH`` or a tensorflow-datasets name.

A name is, first match wins,

1. one of :data:`~sparsejax.data.IMAGE_DATASETS` (``mnist``,
   ``fashion_mnist``, ``cifar10``, ``tiny_imagenet``): read offline from the
   original archives (:mod:`sparsejax.data.images`), with the reference's
   splits;
2. ``npz:PATH``: one's own arrays in an ``.npz`` file
   (:mod:`sparsejax.data.npz`);
3. any other tensorflow-datasets name (:mod:`sparsejax.data.catalog`).

:func:`dataset_info` describes the data set (input shape, classes) before
anything is read; :func:`load_dataset` loads it as
:class:`~sparsejax.data.Splits` on the device.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from sparsejax.data import catalog, npz
from sparsejax.data.arrays import DatasetInfo, array_splits
from sparsejax.data.images import IMAGE_DATASETS, Dtype, PathLike, load_image_dataset
from sparsejax.data.splits import Splits


def dataset_info(name: str, *, data_dir: PathLike | None = None,
                 download: bool = False) -> DatasetInfo:
  """The description of data set ``name``, checked, before its examples are read.

  Args:
    name: a data set name (module docstring).
    data_dir: folder of prepared tensorflow-datasets data sets.
    download: whether a tensorflow-datasets data set may still be downloaded.

  Returns:
    The :class:`~sparsejax.data.arrays.DatasetInfo`; for the image data sets,
    their native shape and classes, the official training set's size unknown.

  Raises:
    UnknownDatasetError: ``name`` is no data set; the message lists the
      accepted forms (:data:`~sparsejax.data.catalog.ACCEPTED_FORMS`).
    DatasetError: its file or prepared copy is missing, or its arrays are
      malformed (:func:`~sparsejax.data.npz.npz_info`,
      :func:`~sparsejax.data.catalog.tfds_info`).
  """
  if name in IMAGE_DATASETS:
    spec = IMAGE_DATASETS[name]
    return DatasetInfo(spec.input_shape, np.dtype(np.uint8), spec.num_classes)
  path = npz.npz_path(name)
  if path is not None:
    return npz.npz_info(path)
  return catalog.tfds_info(name, data_dir=data_dir, download=download)


def load_dataset(
    name: str,
    *,
    data_dir: PathLike | None = None,
    manual_dir: PathLike | None = None,
    download: bool = False,
    split_seed: int = 123,
    dtype: Dtype = jnp.float32,
    image_size: int | None = None,
    val_fraction: float | None = None,
) -> Splits:
  """Loads data set ``name`` as train / val / test arrays on the device.

  The image data sets by :func:`~sparsejax.data.load_image_dataset` (5,000
  validation and 45,000 training images of the official training set, or
  ``val_fraction`` of it for validation and all the rest for training); the
  others by :func:`~sparsejax.data.arrays.array_splits` (their own
  validation and test sets where they have them).

  Args:
    name: a data set name (module docstring).
    data_dir: folder of prepared tensorflow-datasets data sets.
    manual_dir: folder of the original files of a tensorflow-datasets data set.
    download: let tensorflow-datasets download a data set it cannot find.
    split_seed: seed of the permutation that holds out the validation set.
    dtype: dtype of the inputs.
    image_size: resize images to ``(image_size, image_size)``; ``None`` keeps
      their size.
    val_fraction: the share of the training set held out for validation;
      ``None`` for the default.

  Raises:
    DatasetError: as :func:`dataset_info`, or the data cannot be read.
  """
  if name in IMAGE_DATASETS:
    split = dict(val_fraction=val_fraction, n_train=None) if val_fraction else {}
    return load_image_dataset(name, data_dir=data_dir, manual_dir=manual_dir, download=download,
                              split_seed=split_seed, dtype=dtype, image_size=image_size, **split)
  path = npz.npz_path(name)
  arrays = (npz.read_npz(path) if path is not None else
            catalog.read_tfds(name, data_dir=data_dir, manual_dir=manual_dir, download=download))
  return array_splits(arrays, split_seed=split_seed, val_fraction=val_fraction, dtype=dtype,
                      image_size=image_size)
