"""Image-classification data sets (MNIST, Fashion-MNIST, CIFAR-10), offline.

:func:`load_image_dataset` returns :class:`~sparsejax.data.Splits` of device
arrays: images in ``[0, 1]`` (``pixel / 255``), NHWC (``(28, 28, 1)`` or
``(32, 32, 3)``), and int32 labels in ``0..9``, with no further normalisation
and no augmentation, as in the efficient-compression reference (arXiv
2505.17469, section 7 of its notes). It is :func:`read_image_dataset` (the
official training and test sets as host arrays) followed by
:func:`image_splits`, which draws 5,000 validation and 45,000 training images
from the official training set by a seeded permutation
(:func:`train_val_indices`) and keeps the official 10,000 test images, the
reference's split. For MNIST and Fashion-MNIST this leaves 10,000 of the
60,000 training images unused, as in the reference (``n_train=None`` uses
them).

**Folders.**

* ``manual_dir`` holds the original files as their authors distribute them,
  with their original names and not unpacked:

  - ``mnist``, ``fashion_mnist``: ``train-images-idx3-ubyte.gz``,
    ``train-labels-idx1-ubyte.gz``, ``t10k-images-idx3-ubyte.gz``,
    ``t10k-labels-idx1-ubyte.gz``;
  - ``cifar10``: ``cifar-10-binary.tar.gz`` (prepared by tensorflow-datasets)
    or ``cifar-10-python.tar.gz`` (read directly, see below).

  Default: ``$SPARSEJAX_DATA_DIR/<name>``, or ``~/sparsejax_data/<name>``
  when ``SPARSEJAX_DATA_DIR`` is unset.
* ``data_dir`` is where tensorflow-datasets keeps prepared data sets
  (``<data_dir>/<name>/<version>/``). Default: ``$TFDS_DATA_DIR``, or
  ``~/tensorflow_datasets`` when unset (the tensorflow-datasets default).

**How a data set is found**, first match wins:

1. a prepared copy in ``data_dir`` is read;
2. the original files in ``manual_dir`` are prepared into ``data_dir`` by
   tensorflow-datasets, offline, then read;
3. CIFAR-10 only: ``cifar-10-python.tar.gz`` in ``manual_dir`` is read
   directly by :func:`read_cifar10_python`, as tensorflow-datasets' CIFAR-10
   builder reads the binary version only;
4. with ``download=True``, tensorflow-datasets downloads the missing originals
   from their official addresses (network) and prepares them into
   ``data_dir``, keeping the downloads in ``<data_dir>/downloads``;
5. otherwise :class:`DatasetNotFoundError` names the missing files and the
   folder to put them in.

**Offline preparation.** For every address a builder asks for, the
tensorflow-datasets download manager first looks for
``manual_dir/<file name>``, the file name registered with the address in its
checksum list, and uses that file after checking its size and SHA-256 against
the registered values. Only addresses without such a file are downloaded, so
the files are checked to be all present before preparation starts; copies
prepared on Google Cloud Storage are not looked for
(``try_download_gcs=False``). The decompressed intermediates go to a temporary
folder deleted afterwards; only the prepared records stay in ``data_dir``.

**Order.** tensorflow-datasets stores the examples of a split sorted by
``md5(split_name + str(key))``, a deterministic shuffle fixed per data set
version (``tensorflow_datasets/core/hashing.py``); these builders key each
example by its index in the original files. :func:`read_image_dataset` undoes
that permutation, so arrays come back in the order of the original files
(``test_images[0]`` is the first image of ``t10k-images-idx3-ubyte.gz``),
whichever of the paths above produced them.

**Split seed.** The default ``split_seed=123`` follows the reference, which
shuffles with seeds 123 and 1234; its Julia generator differs from NumPy's, so
the held-out examples are not the reference's.
"""

from __future__ import annotations

import codecs
import hashlib
import os
import pathlib
import pickle
import tarfile
import tempfile
from typing import Any, Callable, NamedTuple

import jax.numpy as jnp
import numpy as np
import tensorflow_datasets as tfds

from sparsejax.data.splits import Split, Splits, train_val_indices

Dtype = Any
PathLike = str | os.PathLike

_IDX_FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)
#: The python version of CIFAR-10, read without tensorflow-datasets.
CIFAR10_PYTHON_ARCHIVE = "cifar-10-python.tar.gz"
_CIFAR10_PYTHON_FOLDER = "cifar-10-batches-py"
_CIFAR10_TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
_CIFAR10_TEST_BATCH = "test_batch"


class DatasetNotFoundError(FileNotFoundError):
  """The files of a data set are neither prepared nor in ``manual_dir``."""


class ImageArrays(NamedTuple):
  """A data set's official training and test sets, as read, on the host.

  Attributes:
    train_images: uint8 ``(n_train, H, W, C)``.
    train_labels: int32 ``(n_train,)``.
    test_images: uint8 ``(n_test, H, W, C)``.
    test_labels: int32 ``(n_test,)``.

  Examples are in the order of the original files.
  """
  train_images: np.ndarray
  train_labels: np.ndarray
  test_images: np.ndarray
  test_labels: np.ndarray


class ImageDatasetSpec(NamedTuple):
  """Description of a supported image data set.

  Attributes:
    name: the sparsejax and tensorflow-datasets name.
    input_shape: ``(H, W, C)`` of one image.
    num_classes: number of labels.
    files: the original files tensorflow-datasets prepares from ``manual_dir``.
    homepage: where the original files are distributed.
    direct_file: an original file read without tensorflow-datasets, if any.
    direct_reader: reads ``direct_file``.
  """
  name: str
  input_shape: tuple[int, int, int]
  num_classes: int
  files: tuple[str, ...]
  homepage: str
  direct_file: str | None = None
  direct_reader: Callable[[pathlib.Path], ImageArrays] | None = None


# The globals a pickled NumPy array refers to (NumPy 1 and 2 module names), and
# the function Python 3 writes bytes with at pickle protocol 2.
_ARRAY_GLOBALS = {
    ("_codecs", "encode"): codecs.encode,
    ("numpy.core.multiarray", "_reconstruct"): np.empty(0).__reduce__()[0],
    ("numpy._core.multiarray", "_reconstruct"): np.empty(0).__reduce__()[0],
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


class _ArrayUnpickler(pickle.Unpickler):
  """Unpickles plain containers and NumPy arrays, and nothing executable.

  A pickle may name any importable callable; this unpickler resolves only the
  globals a NumPy array needs (Python ``pickle`` documentation, "Restricting
  Globals").
  """

  def find_class(self, module: str, name: str) -> Any:
    if (module, name) not in _ARRAY_GLOBALS:
      raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a data file")
    return _ARRAY_GLOBALS[module, name]


def read_cifar10_python(archive: PathLike) -> ImageArrays:
  """Reads the python version of CIFAR-10, ``cifar-10-python.tar.gz``.

  The archive holds ``cifar-10-batches-py/data_batch_1 .. data_batch_5`` and
  ``test_batch``, each a pickled dict whose ``b"data"`` is a uint8 array
  ``(10000, 3072)``, one image per row as three 32 x 32 colour planes (red,
  green, blue, each row-major), and whose ``b"labels"`` is a list of ints
  (Krizhevsky, 2009, https://www.cs.toronto.edu/~kriz/cifar.html). Only
  NumPy arrays and plain containers are unpickled.

  Args:
    archive: path of ``cifar-10-python.tar.gz``.

  Returns:
    Images uint8 ``(n, 32, 32, 3)`` and int32 labels, in the archive's order
    (the training batches concatenated in order).
  """
  def read_batches(tar: tarfile.TarFile, names: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    images, labels = [], []
    for name in names:
      with tar.extractfile(f"{_CIFAR10_PYTHON_FOLDER}/{name}") as f:
        batch = _ArrayUnpickler(f, encoding="bytes").load()
      images.append(np.asarray(batch[b"data"], np.uint8).reshape(-1, 3, 32, 32))
      labels.append(np.asarray(batch[b"labels"], np.int32))
    return np.concatenate(images).transpose(0, 2, 3, 1), np.concatenate(labels)

  with tarfile.open(archive, "r:gz") as tar:
    return ImageArrays(*read_batches(tar, _CIFAR10_TRAIN_BATCHES),
                       *read_batches(tar, (_CIFAR10_TEST_BATCH,)))


#: The supported data sets by name.
IMAGE_DATASETS: dict[str, ImageDatasetSpec] = {
    "mnist": ImageDatasetSpec(
        name="mnist", input_shape=(28, 28, 1), num_classes=10, files=_IDX_FILES,
        homepage="http://yann.lecun.com/exdb/mnist/"),
    "fashion_mnist": ImageDatasetSpec(
        name="fashion_mnist", input_shape=(28, 28, 1), num_classes=10, files=_IDX_FILES,
        homepage="https://github.com/zalandoresearch/fashion-mnist"),
    "cifar10": ImageDatasetSpec(
        name="cifar10", input_shape=(32, 32, 3), num_classes=10,
        files=("cifar-10-binary.tar.gz",),
        homepage="https://www.cs.toronto.edu/~kriz/cifar.html",
        direct_file=CIFAR10_PYTHON_ARCHIVE, direct_reader=read_cifar10_python),
}


def image_dataset_spec(name: str) -> ImageDatasetSpec:
  """The description of data set ``name``; ``ValueError`` if unsupported."""
  if name not in IMAGE_DATASETS:
    raise ValueError(f"unknown image data set {name!r}; valid names: {sorted(IMAGE_DATASETS)}")
  return IMAGE_DATASETS[name]


def default_data_dir() -> pathlib.Path:
  """``$TFDS_DATA_DIR``, else ``~/tensorflow_datasets``."""
  return pathlib.Path(os.environ.get("TFDS_DATA_DIR") or "~/tensorflow_datasets").expanduser()


def default_manual_dir(name: str) -> pathlib.Path:
  """``$SPARSEJAX_DATA_DIR/<name>``, else ``~/sparsejax_data/<name>``."""
  root = os.environ.get("SPARSEJAX_DATA_DIR") or "~/sparsejax_data"
  return pathlib.Path(root).expanduser() / name


def _prepare(builder: tfds.core.DatasetBuilder, manual_dir: pathlib.Path, offline: bool) -> None:
  """Prepares ``builder`` from ``manual_dir``; downloads only if not ``offline``."""
  config = tfds.download.DownloadConfig(manual_dir=os.fspath(manual_dir),
                                        try_download_gcs=False)
  if not offline:
    builder.download_and_prepare(download_config=config)
    return
  with tempfile.TemporaryDirectory(prefix=f"sparsejax_{builder.name}_") as scratch:
    builder.download_and_prepare(download_dir=scratch, download_config=config)


def _source_order(split: str, n: int) -> np.ndarray:
  """The original index of each stored example of a tensorflow-datasets split.

  The examples are stored sorted by the 128-bit ``md5(split + str(key))``,
  and the keys of these builders are the indices ``0 .. n-1`` in the original
  files, so the ``j``-th stored example is the original example
  ``order[j]``.
  """
  digests = [int.from_bytes(hashlib.md5(f"{split}{key}".encode()).digest(), "big")
             for key in range(n)]
  return np.array(sorted(range(n), key=digests.__getitem__))


def _read_prepared(builder: tfds.core.DatasetBuilder, split: str) -> tuple[np.ndarray, np.ndarray]:
  """Reads a prepared split whole, in the order of the original files."""
  data = tfds.as_numpy(builder.as_dataset(
      split=split, batch_size=-1, read_config=tfds.ReadConfig(interleave_cycle_length=1)))
  images, labels = data["image"], data["label"].astype(np.int32)
  if builder.info.disable_shuffling:
    return images, labels
  order = _source_order(split, len(labels))
  source_images, source_labels = np.empty_like(images), np.empty_like(labels)
  source_images[order], source_labels[order] = images, labels
  return source_images, source_labels


def _not_found_message(spec: ImageDatasetSpec, manual_dir: pathlib.Path,
                       builder: tfds.core.DatasetBuilder) -> str:
  missing = [f for f in spec.files if not (manual_dir / f).is_file()]
  expected = ", ".join(spec.files)
  if spec.direct_file:
    missing_text = f"{' and '.join(missing)} (or {spec.direct_file})"
    expected = f"{expected} (read by tensorflow-datasets), or {spec.direct_file}"
  else:
    missing_text = ", ".join(missing)
  return (
      f"data set {spec.name!r} not found: missing {missing_text} in folder {manual_dir}. "
      f"Put the original files there ({expected}; from {spec.homepage}), or pass "
      f"manual_dir= the folder that holds them, or set SPARSEJAX_DATA_DIR to its parent "
      f"folder; or pass download=True to let tensorflow-datasets download them. "
      f"No prepared copy was found in {builder.data_path}.")


def read_image_dataset(
    name: str,
    *,
    data_dir: PathLike | None = None,
    manual_dir: PathLike | None = None,
    download: bool = False,
) -> ImageArrays:
  """Reads the official training and test sets of a data set, on the host.

  Finds, prepares (offline) and reads the data set by the rules of the module
  docstring.

  Args:
    name: ``"mnist"``, ``"fashion_mnist"`` or ``"cifar10"``.
    data_dir: folder of prepared tensorflow-datasets data sets; default
      :func:`default_data_dir`.
    manual_dir: folder of the original files; default
      :func:`default_manual_dir`.
    download: let tensorflow-datasets download missing originals (network).

  Returns:
    :class:`ImageArrays`, uint8 images and int32 labels in the order of the
    original files.

  Raises:
    ValueError: ``name`` is not supported.
    DatasetNotFoundError: the data set is neither prepared nor in
      ``manual_dir`` (and ``download`` is off).
  """
  spec = image_dataset_spec(name)
  data_dir = pathlib.Path(data_dir).expanduser() if data_dir is not None else default_data_dir()
  manual_dir = (pathlib.Path(manual_dir).expanduser() if manual_dir is not None
                else default_manual_dir(name))
  builder = tfds.builder(spec.name, data_dir=os.fspath(data_dir))
  if not (builder.data_path.exists() and builder.is_prepared()):
    if all((manual_dir / f).is_file() for f in spec.files):
      _prepare(builder, manual_dir, offline=True)
    elif spec.direct_file and (manual_dir / spec.direct_file).is_file():
      return spec.direct_reader(manual_dir / spec.direct_file)
    elif download:
      _prepare(builder, manual_dir, offline=False)
    else:
      raise DatasetNotFoundError(_not_found_message(spec, manual_dir, builder))
  return ImageArrays(*_read_prepared(builder, "train"), *_read_prepared(builder, "test"))


def _to_device(images: np.ndarray, labels: np.ndarray, dtype: Dtype) -> Split:
  """Uint8 images to ``dtype`` in ``[0, 1]``, labels to int32, on the device."""
  return Split(jnp.asarray(images).astype(dtype) / 255, jnp.asarray(labels, jnp.int32))


def image_splits(
    arrays: ImageArrays,
    *,
    split_seed: int = 123,
    n_val: int = 5000,
    n_train: int | None = 45000,
    dtype: Dtype = jnp.float32,
) -> Splits:
  """Splits the official training set into train / val and moves all to the device.

  Args:
    arrays: the data set as read by :func:`read_image_dataset`.
    split_seed: seed of the permutation that picks the validation and
      training examples (:func:`train_val_indices`).
    n_val: validation examples taken from the official training set.
    n_train: training examples taken from the rest, ``None`` for all of it.
      The default 45,000 follows the reference, which leaves 10,000 of the
      60,000 MNIST / Fashion-MNIST training images unused.
    dtype: dtype of the images.

  Returns:
    :class:`Splits` with images ``(n, H, W, C)`` of ``dtype`` in ``[0, 1]``
    (``pixel / 255``) and int32 labels; ``train`` and ``val`` keep the order
    of the original training files, ``test`` is the official test set.
  """
  train_idx, val_idx = train_val_indices(len(arrays.train_labels), n_val, split_seed, n_train)
  return Splits(
      train=_to_device(arrays.train_images[train_idx], arrays.train_labels[train_idx], dtype),
      val=_to_device(arrays.train_images[val_idx], arrays.train_labels[val_idx], dtype),
      test=_to_device(arrays.test_images, arrays.test_labels, dtype),
  )


def load_image_dataset(
    name: str,
    *,
    data_dir: PathLike | None = None,
    manual_dir: PathLike | None = None,
    split_seed: int = 123,
    n_val: int = 5000,
    n_train: int | None = 45000,
    dtype: Dtype = jnp.float32,
    download: bool = False,
) -> Splits:
  """Loads an image data set as train / val / test arrays on the device.

  :func:`read_image_dataset` followed by :func:`image_splits`; the arguments
  are theirs. The defaults give the reference's 45,000 / 5,000 / 10,000
  images.

  Raises:
    ValueError: ``name`` is not supported, or a split size is out of range.
    DatasetNotFoundError: the data set is neither prepared nor in
      ``manual_dir`` (and ``download`` is off).
  """
  arrays = read_image_dataset(name, data_dir=data_dir, manual_dir=manual_dir, download=download)
  return image_splits(arrays, split_seed=split_seed, n_val=n_val, n_train=n_train, dtype=dtype)
