"""Any image-classification data set of the tensorflow-datasets catalogue, by name.

A name is what ``tfds.builder`` takes (``"emnist/letters"``, ``"kmnist"``,
``"mnist:3.0.1"``): a builder of the installed tensorflow-datasets, or a copy
prepared in ``data_dir`` (``<data_dir>/<name>/<version>/``, read without its
builder code). The data set must have the features ``image`` (a fixed shape)
and ``label`` (a ``ClassLabel``), which give the input shape and the number
of classes, and a ``train`` split; a ``validation`` split is its validation
set and a ``test`` split its test set, where it has them (without them,
:mod:`sparsejax.data.arrays` holds the validation set out of the training set,
and the validation set serves as the test set too). Examples come in the
stored order, which tensorflow-datasets fixes per data set version.

A copy not prepared in ``data_dir`` is downloaded and prepared by
tensorflow-datasets only with ``download=True`` (network; originals found in
``manual_dir`` are used, as for the image data sets). The names of
:data:`~sparsejax.data.IMAGE_DATASETS` are read by
:mod:`sparsejax.data.images` instead, offline from the original archives.
"""

from __future__ import annotations

import os
import pathlib

import tensorflow_datasets as tfds

from sparsejax.data.arrays import ArraySplits, DatasetFormatError, DatasetInfo
from sparsejax.data.images import (IMAGE_DATASETS, DatasetError, DatasetNotFoundError, PathLike,
                                   default_data_dir, default_manual_dir, prepare, read_prepared)
from sparsejax.data.quiet import silence_tensorflow, tfds_prints_swallowed

#: The splits read as the training, validation and test sets.
TRAIN_SPLIT, VAL_SPLIT, TEST_SPLIT = "train", "validation", "test"
#: What a classification data set's name may be (:mod:`sparsejax.data.sources`).
ACCEPTED_FORMS = (f"{', '.join(IMAGE_DATASETS)}, npz:PATH (an .npz file with x_train, y_train "
                  f"and optionally x_val, y_val, x_test, y_test), or the name of a "
                  f"tensorflow-datasets image-classification data set (features 'image' and "
                  f"'label')")


class UnknownDatasetError(DatasetError, ValueError):
  """A data set name is none of :data:`ACCEPTED_FORMS`.

  Attributes:
    name: the name.
    reason: why tensorflow-datasets, the last form tried, has no such data set.
  """

  def __init__(self, name: str, reason: str):
    super().__init__(f"unknown data set {name!r}; accepted values: {ACCEPTED_FORMS} ({reason})")
    self.name, self.reason = name, reason


def tfds_builder(name: str, data_dir: PathLike | None = None) -> tfds.core.DatasetBuilder:
  """The tensorflow-datasets builder of ``name``, from code or a copy prepared in ``data_dir``.

  Raises:
    UnknownDatasetError: tensorflow-datasets has no such builder and
      ``data_dir`` no such prepared copy, or the name is malformed.
  """
  silence_tensorflow()
  data_dir = pathlib.Path(data_dir).expanduser() if data_dir else default_data_dir()
  try:
    with tfds_prints_swallowed():
      return tfds.builder(name, data_dir=os.fspath(data_dir))
  except Exception as error:  # noqa: BLE001  (tfds raises ValueError, AssertionError, ImportError...)
    raise UnknownDatasetError(
        name, f"tensorflow-datasets {tfds.__version__} has no data set {name!r} and {data_dir} "
        f"holds no prepared copy of it; {type(error).__name__}: "
        f"{str(error).strip().splitlines()[0][:200]}") from None


def _is_prepared(builder: tfds.core.DatasetBuilder) -> bool:
  return builder.data_path.exists() and builder.is_prepared()


def _describe(builder: tfds.core.DatasetBuilder, download: bool) -> DatasetInfo:
  """The :class:`DatasetInfo` of ``builder``'s data set; see :func:`tfds_info`."""
  features = builder.info.features
  image = features["image"] if "image" in features else None
  label = features["label"] if "label" in features else None
  if (image is None or not isinstance(label, tfds.features.ClassLabel)
      or None in image.shape or not image.shape):
    raise DatasetFormatError(
        f"data set {builder.name!r} is not an image-classification data set of fixed shape: "
        f"it needs the features 'image' of a fixed shape and 'label' (a ClassLabel); its "
        f"features are {features}".replace("\n", " "))
  if not _is_prepared(builder):
    if not download:
      raise DatasetNotFoundError(
          f"data set {builder.name!r} is not prepared in {builder.data_path}; pass "
          f"download=True (--config.download=True) to let tensorflow-datasets download and "
          f"prepare it there, or data_dir= (--config.data_dir=) the folder that holds a "
          f"prepared copy")
    return DatasetInfo(tuple(image.shape), image.np_dtype, label.num_classes)
  splits = builder.info.splits
  if TRAIN_SPLIT not in splits:
    raise DatasetFormatError(f"data set {builder.name!r} has no {TRAIN_SPLIT!r} split (its "
                             f"splits: {', '.join(sorted(splits))})")
  return DatasetInfo(tuple(image.shape), image.np_dtype, label.num_classes,
                     n_train=splits[TRAIN_SPLIT].num_examples, has_val=VAL_SPLIT in splits,
                     has_test=TEST_SPLIT in splits)


def tfds_info(name: str, *, data_dir: PathLike | None = None,
              download: bool = False) -> DatasetInfo:
  """The description of data set ``name``, from its builder, without reading examples.

  Args:
    name: a tensorflow-datasets name.
    data_dir: folder of prepared data sets; default
      :func:`~sparsejax.data.default_data_dir`.
    download: whether a copy not prepared may be downloaded; without it, a
      missing copy is an error here. The sizes and splits of a copy still to
      be downloaded are not known (``n_train=None``).

  Raises:
    UnknownDatasetError: no such data set (:func:`tfds_builder`).
    DatasetFormatError: it lacks the ``image`` / ``label`` features or the
      ``train`` split, or its images have no fixed shape.
    DatasetNotFoundError: it is not prepared in ``data_dir``, and ``download``
      is off.
  """
  return _describe(tfds_builder(name, data_dir), download)


def read_tfds(name: str, *, data_dir: PathLike | None = None,
              manual_dir: PathLike | None = None, download: bool = False) -> ArraySplits:
  """Reads data set ``name`` whole, on the host, preparing it first if ``download``.

  Args:
    name: a tensorflow-datasets name.
    data_dir: as :func:`tfds_info`.
    manual_dir: folder of original files the preparation uses; default
      :func:`~sparsejax.data.default_manual_dir`.
    download: let tensorflow-datasets download and prepare a copy not
      prepared in ``data_dir`` (network).

  Returns:
    :class:`~sparsejax.data.arrays.ArraySplits` of the ``image`` and
    ``label`` features: ``train``, and ``validation`` and ``test`` where the
    data set has them.

  Raises:
    As :func:`tfds_info`; DatasetNotFoundError also if the download fails.
  """
  builder = tfds_builder(name, data_dir)
  _describe(builder, download)  # Its features; prepared, or to be downloaded.
  if not _is_prepared(builder):
    prepare(builder, pathlib.Path(manual_dir).expanduser() if manual_dir
            else default_manual_dir(name), offline=False)
    _describe(builder, download)  # Its splits, now known.
  splits = builder.info.splits
  return ArraySplits(*(read_prepared(builder, split, keys_are_indices=False)
                       if split in splits else None
                       for split in (TRAIN_SPLIT, VAL_SPLIT, TEST_SPLIT)))
