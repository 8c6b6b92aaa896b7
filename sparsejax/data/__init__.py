"""Data sets as on-device arrays: teacher-student regression, image sets, one's own data.

Every loader returns :class:`Splits` ``(train, val, test)`` of :class:`Split`
``(x, y)`` pairs of device arrays, for training loops that gather batches by
indexing on the device. :func:`load_dataset` loads any classification data
set by name: an image data set, ``npz:PATH`` or a tensorflow-datasets name
(:mod:`sparsejax.data.sources`).
"""

from __future__ import annotations

from sparsejax.data.arrays import (ArraySplits, DatasetFormatError, DatasetInfo, array_splits,
                                   check_options)
from sparsejax.data.catalog import ACCEPTED_FORMS, UnknownDatasetError, read_tfds, tfds_info
from sparsejax.data.images import (CIFAR10_PYTHON_ARCHIVE, IMAGE_DATASETS, TINY_IMAGENET_ARCHIVE,
                                   DatasetDamagedError, DatasetError, DatasetNotFoundError,
                                   ImageArrays, ImageDatasetSpec,
                                   default_data_dir, default_manual_dir, image_dataset_spec,
                                   image_splits, images_to_device, load_image_dataset,
                                   read_cifar10_python, read_image_dataset)
from sparsejax.data.npz import NPZ_PREFIX, npz_info, read_npz
from sparsejax.data.sources import dataset_info, load_dataset
from sparsejax.data.splits import Split, Splits, train_val_indices
from sparsejax.data.teacher_student import (STUDENT_KEY_OFFSET, STUDENT_WIDTHS, TEACHER_KEY_OFFSET,
                                            TEACHER_WIDTHS, TEST_KEY_OFFSET, TRAIN_KEY_OFFSET,
                                            VAL_KEY_OFFSET, init_teacher, scale_teacher_weights,
                                            teacher_model, teacher_student_data,
                                            teacher_student_data_from_key)

__all__ = [
    "ACCEPTED_FORMS",
    "ArraySplits",
    "CIFAR10_PYTHON_ARCHIVE",
    "DatasetDamagedError",
    "DatasetError",
    "DatasetFormatError",
    "DatasetInfo",
    "DatasetNotFoundError",
    "IMAGE_DATASETS",
    "ImageArrays",
    "ImageDatasetSpec",
    "NPZ_PREFIX",
    "STUDENT_KEY_OFFSET",
    "STUDENT_WIDTHS",
    "Split",
    "Splits",
    "TEACHER_KEY_OFFSET",
    "TEACHER_WIDTHS",
    "TEST_KEY_OFFSET",
    "TINY_IMAGENET_ARCHIVE",
    "TRAIN_KEY_OFFSET",
    "UnknownDatasetError",
    "VAL_KEY_OFFSET",
    "array_splits",
    "check_options",
    "dataset_info",
    "default_data_dir",
    "default_manual_dir",
    "image_dataset_spec",
    "image_splits",
    "images_to_device",
    "init_teacher",
    "load_dataset",
    "load_image_dataset",
    "npz_info",
    "read_cifar10_python",
    "read_image_dataset",
    "read_npz",
    "read_tfds",
    "scale_teacher_weights",
    "teacher_model",
    "teacher_student_data",
    "teacher_student_data_from_key",
    "tfds_info",
    "train_val_indices",
]
