"""Image-classification data sets (MNIST, Fashion-MNIST, CIFAR-10, Tiny ImageNet), offline.

:func:`load_image_dataset` returns :class:`~sparsejax.data.Splits` of device
arrays: images in ``[0, 1]`` (``pixel / 255``), NHWC (``(28, 28, 1)``,
``(32, 32, 3)`` or ``(64, 64, 3)``), and int32 labels in
``0 .. num_classes - 1`` (10 classes, 200 for Tiny ImageNet; see
:data:`IMAGE_DATASETS`), with no further normalisation and no augmentation, as
in the efficient-compression reference (arXiv 2505.17469, section 7 of its
notes). It is :func:`read_image_dataset` (the official training and test sets
as host arrays) followed by :func:`image_splits`, which draws 5,000 validation
and 45,000 training images from the official training set by a seeded
permutation (:func:`train_val_indices`) and keeps the official test images
(10,000 for MNIST, Fashion-MNIST and CIFAR-10), the reference's split. For
MNIST and Fashion-MNIST this leaves 10,000 of the 60,000 training images
unused, as in the reference (``n_train=None`` uses them).

**BMRS set-up** (Wright et al., "BMRS: Bayesian Model Reduction for Structured
Pruning", NeurIPS 2024): every image is resized to 32 x 32 and the official
training set is split 80 / 20 into train / val, with the official test set
kept; that is ``image_size=32, val_fraction=0.2, n_train=None``, which gives
48,000 / 12,000 / 10,000 images for MNIST and Fashion-MNIST, 40,000 / 10,000 /
10,000 for CIFAR-10 and 80,000 / 20,000 / 10,000 for Tiny ImageNet (whose
official validation set serves as the test set, as in the paper)::

  load_image_dataset("mnist", image_size=32, val_fraction=0.2, n_train=None)

**Resizing** (``image_size``) is bilinear interpolation with antialiasing, as
torchvision's ``Resize`` does on PIL images and tensors (``antialias=True``):
``jax.image.resize(..., method="bilinear", antialias=True)`` of the ``[0, 1]``
float images, computed in at least float32, clipped to ``[0, 1]`` (which only
removes rounding error) and then cast to ``dtype``. It matches PIL's
``Image.resize(..., BILINEAR)`` of float (``"F"``) images to float32 rounding.
Upsampling (28 -> 32) is plain bilinear interpolation with half-pixel centres
and the edge pixels repeated; downsampling (64 -> 32) widens the triangle
kernel by the scale factor. The images go through the device in chunks of at
most ``2**24`` values, so that the memory beyond the result stays bounded.

**Folders.**

* ``manual_dir`` holds the original files as their authors distribute them,
  with their original names and not unpacked:

  - ``mnist``, ``fashion_mnist``: ``train-images-idx3-ubyte.gz``,
    ``train-labels-idx1-ubyte.gz``, ``t10k-images-idx3-ubyte.gz``,
    ``t10k-labels-idx1-ubyte.gz``;
  - ``cifar10``: ``cifar-10-binary.tar.gz`` (prepared by tensorflow-datasets)
    or ``cifar-10-python.tar.gz`` (read directly, see below);
  - ``tiny_imagenet``: ``tiny-imagenet-200.zip``, which only a
    tensorflow-datasets builder for Tiny ImageNet can prepare (see below).

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
4. with ``download=True`` (``--config.download=True`` on the command line),
   tensorflow-datasets downloads the missing originals from their official
   addresses (network) and prepares them into ``data_dir``, keeping the
   downloads in ``<data_dir>/downloads``;
5. otherwise :class:`DatasetNotFoundError` names the missing files and the
   folder to put them in.

**Tiny ImageNet** (200 classes, 64 x 64 x 3; 100,000 training images and
10,000 validation images, the latter used as the test set). The
tensorflow-datasets catalogue of the installed version may have no builder for
it (4.9 has none). Then step 1 still applies, through tensorflow-datasets'
reading of a prepared folder without its builder code: a copy prepared
elsewhere (by a newer tensorflow-datasets or one's own builder, with features
``image`` and ``label`` and splits ``train`` and ``validation`` or ``valid``)
and placed as ``<data_dir>/tiny_imagenet/<version>/`` is read. Steps 2 to 4
need a builder, so without a prepared copy :class:`DatasetNotFoundError` says
what is missing and what to do; nothing is downloaded.

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
version (``tensorflow_datasets/core/hashing.py``); the MNIST, Fashion-MNIST
and CIFAR-10 builders key each example by its index in the original files.
:func:`read_image_dataset` undoes that permutation, so arrays come back in the
order of the original files (``test_images[0]`` is the first image of
``t10k-images-idx3-ubyte.gz``), whichever of the paths above produced them.
Tiny ImageNet's keys are not known to be indices, so it comes back in the
stored order, which is as deterministic
(:attr:`ImageDatasetSpec.keys_are_indices`).

**Split seed.** The default ``split_seed=123`` follows the reference, which
shuffles with seeds 123 and 1234; its Julia generator differs from NumPy's, so
the held-out examples are not the reference's.
"""

from __future__ import annotations

import codecs
import functools
import hashlib
import numbers
import os
import pathlib
import pickle
import tarfile
import tempfile
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import tensorflow_datasets as tfds
from tensorflow_datasets.core.download import download_manager

from sparsejax.data.quiet import silence_tensorflow, tfds_prints_swallowed
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
#: The distributed Tiny ImageNet archive (Stanford CS231N).
TINY_IMAGENET_ARCHIVE = "tiny-imagenet-200.zip"
#: Upper bound on the values (images x height x width x channels) of one
#: chunk of :func:`image_splits`' resizing, before or after it.
_RESIZE_CHUNK_VALUES = 1 << 24


class DatasetError(Exception):
  """A data set cannot be read; the message says which files or folder and what to do."""


class DatasetNotFoundError(DatasetError, FileNotFoundError):
  """The files of a data set are neither prepared nor in ``manual_dir``."""


class DatasetDamagedError(DatasetError):
  """An original file fails its checksum, or the prepared copy cannot be read."""


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
    input_shape: ``(H, W, C)`` of one image, as distributed (before any
      ``image_size`` resizing).
    num_classes: number of labels, ``0 .. num_classes - 1``.
    files: the original files tensorflow-datasets prepares from ``manual_dir``.
    homepage: where the original files are distributed.
    direct_file: an original file read without tensorflow-datasets, if any.
    direct_reader: reads ``direct_file``.
    train_split: the tensorflow-datasets split read as the training set.
    test_splits: the tensorflow-datasets split read as the test set: the first
      of these names that the prepared copy has.
    keys_are_indices: whether the tensorflow-datasets builder keys each
      example by its index in the original files, so that
      :func:`read_image_dataset` can restore the files' order; otherwise the
      examples come in the stored order.
  """
  name: str
  input_shape: tuple[int, int, int]
  num_classes: int
  files: tuple[str, ...]
  homepage: str
  direct_file: str | None = None
  direct_reader: Callable[[pathlib.Path], ImageArrays] | None = None
  train_split: str = "train"
  test_splits: tuple[str, ...] = ("test",)
  keys_are_indices: bool = True


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
    # No builder in tensorflow-datasets 4.9: read only from a prepared copy.
    "tiny_imagenet": ImageDatasetSpec(
        name="tiny_imagenet", input_shape=(64, 64, 3), num_classes=200,
        files=(TINY_IMAGENET_ARCHIVE,),
        homepage="http://cs231n.stanford.edu/tiny-imagenet-200.zip",
        test_splits=("validation", "valid"), keys_are_indices=False),
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


def prepare(builder: tfds.core.DatasetBuilder, manual_dir: pathlib.Path, offline: bool) -> None:
  """Prepares ``builder`` from ``manual_dir``; downloads only if not ``offline``.

  Raises:
    DatasetNotFoundError: the download (not ``offline``) failed, e.g. without
      network.
  """
  config = tfds.download.DownloadConfig(manual_dir=os.fspath(manual_dir),
                                        try_download_gcs=False)
  if not offline:
    try:
      with tfds_prints_swallowed():
        builder.download_and_prepare(download_config=config)
    except (OSError, tfds.download.DownloadError) as error:  # requests' errors are OSErrors.
      raise DatasetNotFoundError(
          f"data set {builder.name!r} not found in {manual_dir}, and tensorflow-datasets "
          f"could not download it: {error}") from error
    return
  with tempfile.TemporaryDirectory(prefix=f"sparsejax_{builder.name}_") as scratch:
    try:
      with tfds_prints_swallowed():
        builder.download_and_prepare(download_dir=scratch, download_config=config)
    except download_manager.NonMatchingChecksumError as error:
      raise DatasetDamagedError(
          f"an original file of data set {builder.name!r} in {manual_dir} is damaged or not "
          f"the published one (its checksum differs): {str(error).splitlines()[0]} Replace it "
          "with the original file and run again") from None


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


def read_prepared(builder: tfds.core.DatasetBuilder, split: str,
                  keys_are_indices: bool = True) -> tuple[np.ndarray, np.ndarray]:
  """Reads a prepared split whole.

  In the order of the original files if ``keys_are_indices``, else in the
  stored order.
  """
  try:
    data = tfds.as_numpy(builder.as_dataset(
        split=split, batch_size=-1, read_config=tfds.ReadConfig(interleave_cycle_length=1)))
  except Exception as error:  # noqa: BLE001  (TensorFlow's DataLossError, OpError, ...)
    raise DatasetDamagedError(
        f"the prepared copy of data set {builder.name!r} in {builder.data_path} cannot be "
        f"read ({type(error).__name__}: {str(error).splitlines()[0][:200]}); delete the folder "
        f"{builder.data_path} and run again to prepare it anew") from None
  images, labels = data["image"], data["label"].astype(np.int32)
  if builder.info.disable_shuffling or not keys_are_indices:
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
      f"manual_dir= (--config.manual_dir=) the folder that holds them, or set "
      f"SPARSEJAX_DATA_DIR to its parent folder; or pass download=True "
      f"(--config.download=True) to let tensorflow-datasets download them. "
      f"No prepared copy was found in {builder.data_path}.")


def _no_builder_message(spec: ImageDatasetSpec, data_dir: pathlib.Path,
                        manual_dir: pathlib.Path) -> str:
  present = [f for f in spec.files if (manual_dir / f).is_file()]
  found = (f" The original files in {manual_dir} ({', '.join(present)}) cannot be prepared "
           f"without a builder." if present else "")
  test = " or ".join(repr(s) for s in spec.test_splits)
  return (
      f"data set {spec.name!r} not found: tensorflow-datasets {tfds.__version__} has no "
      f"builder for {spec.name!r}, so it cannot be prepared from the original files "
      f"({', '.join(spec.files)}, from {spec.homepage}) nor downloaded, and no prepared copy "
      f"was found in {data_dir}.{found} Prepare it with a tensorflow-datasets builder (a "
      f"newer tensorflow-datasets or your own; features 'image' {spec.input_shape} uint8 and "
      f"'label' in 0..{spec.num_classes - 1}, splits {spec.train_split!r} and {test}, the "
      f"latter used as the test set), place the prepared folder as "
      f"{data_dir / spec.name}/<version>/, and pass data_dir= (--config.data_dir=) its "
      f"parent folder or set TFDS_DATA_DIR to it.")


def _builder(spec: ImageDatasetSpec, data_dir: pathlib.Path) -> tfds.core.DatasetBuilder | None:
  """The tensorflow-datasets builder of ``spec``, from code or from a prepared copy.

  ``None`` if the installed tensorflow-datasets has no builder for it and
  ``data_dir`` holds no prepared copy (``tfds.builder`` searches only the
  given ``data_dir`` for one, without network).
  """
  try:
    return tfds.builder(spec.name, data_dir=os.fspath(data_dir))
  except tfds.core.registered.DatasetNotFoundError:
    return None


def _test_split(spec: ImageDatasetSpec, builder: tfds.core.DatasetBuilder) -> str:
  """The first of ``spec.test_splits`` that the prepared copy has."""
  for split in spec.test_splits:
    if split in builder.info.splits:
      return split
  raise DatasetNotFoundError(
      f"the prepared copy of data set {spec.name!r} in {builder.data_path} has the splits "
      f"{sorted(builder.info.splits)}, but none of {list(spec.test_splits)} for the test set")


def read_image_dataset(
    name: str,
    *,
    data_dir: PathLike | None = None,
    manual_dir: PathLike | None = None,
    download: bool = False,
) -> ImageArrays:
  """Reads the official training and test sets of a data set, on the host.

  Finds, prepares (offline) and reads the data set by the rules of the module
  docstring. TensorFlow's and tensorflow-datasets' own log lines, prints and
  progress bars are kept off the terminal
  (:func:`sparsejax.data.quiet.silence_tensorflow`; ``SPARSEJAX_VERBOSE=1``
  lets them through).

  Args:
    name: ``"mnist"``, ``"fashion_mnist"``, ``"cifar10"`` or
      ``"tiny_imagenet"``.
    data_dir: folder of prepared tensorflow-datasets data sets; default
      :func:`default_data_dir`.
    manual_dir: folder of the original files; default
      :func:`default_manual_dir`.
    download: let tensorflow-datasets download missing originals (network).

  Returns:
    :class:`ImageArrays`, uint8 images and int32 labels in the order of the
    original files (Tiny ImageNet: in the stored order).

  Raises:
    ValueError: ``name`` is not supported.
    DatasetNotFoundError: the data set is neither prepared nor in
      ``manual_dir`` (and ``download`` is off, or the download failed), or,
      for a data set without a tensorflow-datasets builder (Tiny ImageNet),
      not prepared in ``data_dir``.
  """
  spec = image_dataset_spec(name)
  silence_tensorflow()
  data_dir = pathlib.Path(data_dir).expanduser() if data_dir is not None else default_data_dir()
  manual_dir = (pathlib.Path(manual_dir).expanduser() if manual_dir is not None
                else default_manual_dir(name))
  builder = _builder(spec, data_dir)
  if builder is None:
    if spec.direct_file and (manual_dir / spec.direct_file).is_file():
      return spec.direct_reader(manual_dir / spec.direct_file)
    raise DatasetNotFoundError(_no_builder_message(spec, data_dir, manual_dir))
  if not (builder.data_path.exists() and builder.is_prepared()):
    if all((manual_dir / f).is_file() for f in spec.files):
      prepare(builder, manual_dir, offline=True)
    elif spec.direct_file and (manual_dir / spec.direct_file).is_file():
      return spec.direct_reader(manual_dir / spec.direct_file)
    elif download:
      prepare(builder, manual_dir, offline=False)
    else:
      raise DatasetNotFoundError(_not_found_message(spec, manual_dir, builder))
  return ImageArrays(*read_prepared(builder, spec.train_split, spec.keys_are_indices),
                     *read_prepared(builder, _test_split(spec, builder), spec.keys_are_indices))


def _to_device(images: np.ndarray, labels: np.ndarray, dtype: Dtype) -> Split:
  """Uint8 images to ``dtype`` in ``[0, 1]``, labels to int32, on the device."""
  return Split(jnp.asarray(images).astype(dtype) / 255, jnp.asarray(labels, jnp.int32))


@functools.partial(jax.jit, static_argnames=("size", "dtype"))
def _resize_chunk(images: jax.Array, size: int, dtype: Dtype) -> jax.Array:
  """Uint8 NHWC images to ``[0, 1]``, resized to ``(size, size)``, as ``dtype``."""
  x = images.astype(jnp.promote_types(dtype, jnp.float32)) / 255
  n, _, _, channels = x.shape
  x = jax.image.resize(x, (n, size, size, channels), method="bilinear", antialias=True)
  return jnp.clip(x, 0, 1).astype(dtype)


def _to_device_resized(images: np.ndarray, labels: np.ndarray, dtype: Dtype,
                       size: int) -> Split:
  """As :func:`_to_device`, with the images resized to ``(size, size)``.

  The images go to the device and through the resize in chunks of at most
  ``_RESIZE_CHUNK_VALUES`` values, in and out; the last chunk is padded to the
  same number of images, so that the resize compiles once per chunk shape.
  """
  n, height, width, channels = images.shape
  chunk = max(1, min(n, _RESIZE_CHUNK_VALUES // (max(height * width, size * size) * channels)))
  parts = []
  for start in range(0, n, chunk):
    part = images[start:start + chunk]
    padded = np.pad(part, ((0, chunk - len(part)), (0, 0), (0, 0), (0, 0)))
    parts.append(_resize_chunk(jnp.asarray(padded), size, dtype)[:len(part)])
  x = jnp.concatenate(parts) if parts else jnp.zeros((0, size, size, channels), dtype)
  return Split(x, jnp.asarray(labels, jnp.int32))


def images_to_device(images: np.ndarray, labels: np.ndarray, dtype: Dtype,
                     image_size: int | None = None) -> Split:
  """Uint8 images to ``dtype`` in ``[0, 1]`` (``pixel / 255``) and labels to int32, on the device.

  Args:
    images: uint8 ``(n, H, W, C)`` images (or ``(n, ...)`` arrays without
      ``image_size``).
    labels: ``(n,)`` integer labels.
    dtype: dtype of the images.
    image_size: resize every image to ``(image_size, image_size)`` (bilinear,
      antialiased; see the module docstring); ``None``, or the native size,
      keeps the images as they are.
  """
  if image_size is None or images.shape[1:3] == (image_size, image_size):
    return _to_device(images, labels, dtype)
  return _to_device_resized(images, labels, dtype, int(image_size))


#: The default split of the official training set (the efficient-compression
#: reference's): 5,000 validation images, 45,000 training images of the rest.
DEFAULT_N_VAL = 5000
DEFAULT_N_TRAIN = 45000


def _check_image_size(image_size: int | None) -> None:
  if image_size is not None and not (
      isinstance(image_size, numbers.Integral) and not isinstance(image_size, bool)
      and image_size > 0):
    raise ValueError(f"image_size must be a positive int or None, got {image_size!r}")


def _check_val_fraction(val_fraction: float | None, n_val: int, n_train: int | None) -> None:
  if val_fraction is None:
    return
  if (not isinstance(val_fraction, numbers.Real) or isinstance(val_fraction, bool)
      or not 0 < val_fraction < 1):
    raise ValueError(f"val_fraction must be a number in (0, 1), got {val_fraction!r}")
  if n_val != DEFAULT_N_VAL:
    raise ValueError(f"give either n_val or val_fraction, not both (got n_val={n_val}, "
                     f"val_fraction={val_fraction})")
  if n_train not in (None, DEFAULT_N_TRAIN):
    raise ValueError(f"val_fraction takes all the rest of the training set for training; "
                     f"leave n_train at its default or None, got n_train={n_train}")


def image_splits(
    arrays: ImageArrays,
    *,
    split_seed: int = 123,
    n_val: int = DEFAULT_N_VAL,
    n_train: int | None = DEFAULT_N_TRAIN,
    dtype: Dtype = jnp.float32,
    image_size: int | None = None,
    val_fraction: float | None = None,
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
    image_size: resize every image to ``(image_size, image_size)`` (bilinear,
      antialiased; see the module docstring); ``None``, or the native size,
      keeps the images as they are.
    val_fraction: the fraction of the official training set held out for
      validation, in ``(0, 1)``, instead of ``n_val``: ``n_val =
      round(val_fraction * n_official_train)`` and all the rest is training
      data (``n_train=None``). ``n_val`` and ``n_train`` must then be left at
      their defaults (``n_train=None`` is accepted too). The BMRS set-up
      uses ``val_fraction=0.2, n_train=None``: 48,000 / 12,000 / 10,000 for
      MNIST.

  Returns:
    :class:`Splits` with images ``(n, H, W, C)`` (``H = W = image_size`` if
    given) of ``dtype`` in ``[0, 1]`` (``pixel / 255``, then resized) and int32
    labels; ``train`` and ``val`` keep the order of the original training
    files, ``test`` is the official test set.

  Raises:
    ValueError: ``image_size`` is not a positive int, ``val_fraction`` is not
      in ``(0, 1)`` or is given with ``n_val`` or ``n_train``, or a split size
      is out of range.
  """
  _check_image_size(image_size)
  _check_val_fraction(val_fraction, n_val, n_train)
  n_official = len(arrays.train_labels)
  if val_fraction is not None:
    n_val, n_train = round(val_fraction * n_official), None
  train_idx, val_idx = train_val_indices(n_official, n_val, split_seed, n_train)
  return Splits(*(images_to_device(images, labels, dtype, image_size) for images, labels in (
      (arrays.train_images[train_idx], arrays.train_labels[train_idx]),
      (arrays.train_images[val_idx], arrays.train_labels[val_idx]),
      (arrays.test_images, arrays.test_labels))))


def load_image_dataset(
    name: str,
    *,
    data_dir: PathLike | None = None,
    manual_dir: PathLike | None = None,
    split_seed: int = 123,
    n_val: int = DEFAULT_N_VAL,
    n_train: int | None = DEFAULT_N_TRAIN,
    dtype: Dtype = jnp.float32,
    download: bool = False,
    image_size: int | None = None,
    val_fraction: float | None = None,
) -> Splits:
  """Loads an image data set as train / val / test arrays on the device.

  :func:`read_image_dataset` followed by :func:`image_splits`; the arguments
  are theirs. The defaults give the reference's 45,000 / 5,000 / 10,000
  images; ``image_size=32, val_fraction=0.2, n_train=None`` gives the BMRS
  set-up (32 x 32 images, 80 / 20 train / val; 48,000 / 12,000 / 10,000 for
  MNIST).

  Raises:
    ValueError: ``name`` is not supported, ``image_size`` or ``val_fraction``
      is invalid (checked before reading), or a split size is out of range.
    DatasetNotFoundError: the data set is neither prepared nor in
      ``manual_dir`` (and ``download`` is off, or the download failed).
  """
  _check_image_size(image_size)
  _check_val_fraction(val_fraction, n_val, n_train)
  arrays = read_image_dataset(name, data_dir=data_dir, manual_dir=manual_dir, download=download)
  return image_splits(arrays, split_seed=split_seed, n_val=n_val, n_train=n_train, dtype=dtype,
                      image_size=image_size, val_fraction=val_fraction)
