"""One's own classification data set in an ``.npz`` file (``dataset="npz:PATH"``).

The file is what ``numpy.savez`` (or ``numpy.savez_compressed``) writes, with
the arrays

* ``x_train`` ``(n, ...)``: inputs of any shape per example (``(n, H, W, C)``
  images, ``(n, D)`` vectors), of any real dtype: uint8 inputs are images,
  scaled to ``[0, 1]``; other dtypes are kept as they are;
* ``y_train`` ``(n,)``: integer class labels ``0 .. num_classes - 1``;
* optionally ``x_val`` with ``y_val`` and ``x_test`` with ``y_test``, of the
  same per-example shape and dtype.

No other arrays are accepted, so that a misnamed one is not silently left
out. Without ``x_val`` / ``y_val`` the validation set is held out of the
training set, and without ``x_test`` / ``y_test`` the validation set is the
test set too (:mod:`sparsejax.data.arrays`). The number of classes is the
largest label of all splits plus one.

:func:`npz_info` checks the file before any compute: it reads the inputs'
shapes and dtypes from the ``.npy`` headers in the zip archive, not their
data, and reads the labels alone.
"""

from __future__ import annotations

import os
import pathlib
import zipfile

import numpy as np

from sparsejax.data.arrays import ArraySplits, DatasetFormatError, DatasetInfo
from sparsejax.data.images import DatasetNotFoundError

#: The prefix of a data set name that names an ``.npz`` file.
NPZ_PREFIX = "npz:"
#: The ``(inputs, labels)`` array pairs of the splits; the first is required.
SPLIT_ARRAYS = (("x_train", "y_train"), ("x_val", "y_val"), ("x_test", "y_test"))
_ACCEPTED = ", ".join(name for pair in SPLIT_ARRAYS for name in pair)


def npz_path(name: str) -> pathlib.Path | None:
  """The file a data set name ``npz:PATH`` names (``~`` expanded), else ``None``.

  Raises:
    DatasetFormatError: the name is ``npz:`` without a path.
  """
  if not name.startswith(NPZ_PREFIX):
    return None
  if not name[len(NPZ_PREFIX):]:
    raise DatasetFormatError("'npz:' names no file; write npz:PATH, the path of an .npz file")
  return pathlib.Path(name[len(NPZ_PREFIX):]).expanduser()


def _headers(path: pathlib.Path) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
  """``{array name: (shape, dtype)}`` of an ``.npz`` file, from its ``.npy`` headers."""
  if not path.is_file():
    raise DatasetNotFoundError(f"npz file {path} not found")
  headers = {}
  try:
    with zipfile.ZipFile(path) as archive:
      for member in archive.namelist():
        with archive.open(member) as f:
          version = np.lib.format.read_magic(f)
          read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                  else np.lib.format.read_array_header_2_0)
          shape, _, dtype = read(f)
        headers[member.removesuffix(".npy")] = (shape, dtype)
  except (OSError, ValueError, zipfile.BadZipFile) as error:
    raise DatasetFormatError(
        f"{path} is not an .npz file of arrays (as numpy.savez writes): "
        f"{type(error).__name__}: {str(error).splitlines()[0][:200]}") from None
  return headers


def _check_arrays(path: pathlib.Path, headers: dict) -> list[tuple[str, str]]:
  """The split pairs present in ``headers``, each checked; raises on any fault."""
  unknown = sorted(set(headers) - {name for pair in SPLIT_ARRAYS for name in pair})
  if unknown:
    raise DatasetFormatError(f"{path} has arrays {', '.join(unknown)}, which are not read; "
                             f"the accepted arrays are {_ACCEPTED}")
  pairs = [SPLIT_ARRAYS[0], *(pair for pair in SPLIT_ARRAYS[1:]
                              if pair[0] in headers or pair[1] in headers)]
  for x, y in pairs:
    if x not in headers or y not in headers:
      missing = " and ".join(name for name in (x, y) if name not in headers)
      raise DatasetFormatError(
          f"{path} has no {missing}; it needs x_train and y_train, and optionally x_val with "
          f"y_val and x_test with y_test (it has {', '.join(sorted(headers)) or 'no arrays'})")
  x_shape, x_dtype = headers["x_train"]
  for x, y in pairs:
    (shape, dtype), (y_shape, y_dtype) = headers[x], headers[y]
    if len(shape) < 2 or shape[0] == 0:
      raise DatasetFormatError(f"{path}: {x} has shape {shape}; inputs must be (n, ...), with "
                               f"n >= 1 examples of at least one value each")
    if dtype.kind not in "uif":
      raise DatasetFormatError(f"{path}: {x} has dtype {dtype}; inputs must be real numbers "
                               f"(uint8 images are scaled to [0, 1], other dtypes kept)")
    if (shape[1:], dtype) != (x_shape[1:], x_dtype):
      raise DatasetFormatError(
          f"{path}: {x} has examples of shape {shape[1:]} and dtype {dtype}, but x_train "
          f"{x_shape[1:]} and {x_dtype}; every split must have the same shape and dtype")
    if y_dtype.kind not in "iu":
      raise DatasetFormatError(f"{path}: {y} has dtype {y_dtype}; labels must be integers, "
                               f"the class indices 0 .. num_classes - 1")
    if len(y_shape) != 1:
      raise DatasetFormatError(f"{path}: {y} has shape {y_shape}; labels must be one class "
                               f"index per example, shape (n,) (one-hot labels: their argmax)")
    if y_shape[0] != shape[0]:
      raise DatasetFormatError(f"{path}: {x} has {shape[0]:,} examples but {y} has "
                               f"{y_shape[0]:,} labels; they must be as many")
  return pairs


def npz_info(path: str | os.PathLike) -> DatasetInfo:
  """The description of the data set in ``path``, checked (module docstring).

  Raises:
    DatasetNotFoundError: there is no file ``path``.
    DatasetFormatError: it is not an ``.npz`` file; arrays are missing,
      unknown or do not fit (lengths, shapes, dtypes); the labels are not
      integers, or some are negative.
  """
  path = pathlib.Path(path)
  headers = _headers(path)
  pairs = _check_arrays(path, headers)
  with np.load(path, allow_pickle=False) as arrays:
    labels = {y: arrays[y] for _, y in pairs}
  for y, values in labels.items():
    if values.min() < 0:
      raise DatasetFormatError(f"{path}: {y} has the negative label {values.min()}; labels "
                               f"must be the class indices 0 .. num_classes - 1")
  shape, dtype = headers["x_train"]
  return DatasetInfo(input_shape=tuple(shape[1:]), input_dtype=dtype,
                     num_classes=1 + max(int(values.max()) for values in labels.values()),
                     n_train=shape[0], has_val="y_val" in labels, has_test="y_test" in labels)


def read_npz(path: str | os.PathLike) -> ArraySplits:
  """The splits of the data set in ``path``, checked by :func:`npz_info`, on the host.

  Raises:
    DatasetNotFoundError, DatasetFormatError: as :func:`npz_info`.
  """
  npz_info(path)
  with np.load(path, allow_pickle=False) as arrays:
    return ArraySplits(*((arrays[x], arrays[y]) if x in arrays else None
                         for x, y in SPLIT_ARRAYS))
