"""Data sets as on-device arrays: teacher-student regression and image sets.

Every loader returns :class:`Splits` ``(train, val, test)`` of :class:`Split`
``(x, y)`` pairs of device arrays, for training loops that gather batches by
indexing on the device.
"""

from __future__ import annotations

from sparsejax.data.images import (CIFAR10_PYTHON_ARCHIVE, IMAGE_DATASETS, TINY_IMAGENET_ARCHIVE,
                                   DatasetDamagedError, DatasetError, DatasetNotFoundError,
                                   ImageArrays, ImageDatasetSpec,
                                   default_data_dir, default_manual_dir, image_dataset_spec,
                                   image_splits, load_image_dataset, read_cifar10_python,
                                   read_image_dataset)
from sparsejax.data.splits import Split, Splits, train_val_indices
from sparsejax.data.teacher_student import (STUDENT_KEY_OFFSET, STUDENT_WIDTHS, TEACHER_KEY_OFFSET,
                                            TEACHER_WIDTHS, TEST_KEY_OFFSET, TRAIN_KEY_OFFSET,
                                            VAL_KEY_OFFSET, init_teacher, scale_teacher_weights,
                                            teacher_model, teacher_student_data,
                                            teacher_student_data_from_key)

__all__ = [
    "CIFAR10_PYTHON_ARCHIVE",
    "DatasetDamagedError",
    "DatasetError",
    "DatasetNotFoundError",
    "IMAGE_DATASETS",
    "ImageArrays",
    "ImageDatasetSpec",
    "STUDENT_KEY_OFFSET",
    "STUDENT_WIDTHS",
    "Split",
    "Splits",
    "TEACHER_KEY_OFFSET",
    "TEACHER_WIDTHS",
    "TEST_KEY_OFFSET",
    "TINY_IMAGENET_ARCHIVE",
    "TRAIN_KEY_OFFSET",
    "VAL_KEY_OFFSET",
    "default_data_dir",
    "default_manual_dir",
    "image_dataset_spec",
    "image_splits",
    "init_teacher",
    "load_image_dataset",
    "read_cifar10_python",
    "read_image_dataset",
    "scale_teacher_weights",
    "teacher_model",
    "teacher_student_data",
    "teacher_student_data_from_key",
    "train_val_indices",
]
