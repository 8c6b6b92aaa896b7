"""Image data sets: offline tfds preparation from the original files, splits.

The MNIST and Fashion-MNIST tests use the original IDX files (fixtures
``mnist_dir`` / ``fashion_mnist_dir`` from ``conftest.py``; skipped where
absent). Each data set is prepared once per session, into a temporary
``data_dir``, with Python's socket layer refusing connections so that any
network access fails the preparation. Preparing Fashion-MNIST as well takes
another half minute, so that test is marked ``slow``. CIFAR-10 is exercised
with a small fake ``cifar-10-python.tar.gz`` in the real format.

The BMRS set-up (32 x 32 images, 80 / 20 train / val) is checked on real MNIST
and on small synthetic images, with PIL's bilinear resize of float images as
the reference (skipped without PIL). Tiny ImageNet has no builder in
tensorflow-datasets 4.9: its error is checked with empty folders, and its
reading with a small fake prepared copy stored by tensorflow-datasets.
"""

import contextlib
import fcntl
import functools
import gzip
import io
import os
import pathlib
import pickle
import socket
import tarfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow_datasets as tfds

from sparsejax.data import (IMAGE_DATASETS, TINY_IMAGENET_ARCHIVE, DatasetNotFoundError,
                            ImageArrays, Splits, image_splits, load_image_dataset,
                            read_cifar10_python, read_image_dataset, train_val_indices)

IDX_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
             "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")


@contextlib.contextmanager
def no_network():
  """Makes every socket connection and name lookup fail; yields the attempts."""
  attempts = []

  def refuse(*args, **kwargs):
    attempts.append(args)
    raise OSError("network access during an offline test")

  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(socket.socket, "connect", refuse)
    patch.setattr(socket.socket, "connect_ex", refuse)
    patch.setattr(socket, "getaddrinfo", refuse)
    yield attempts


def read_idx(path: pathlib.Path) -> np.ndarray:
  """Reads a gzipped IDX file (LeCun et al.): big-endian header, then uint8."""
  with gzip.open(path) as f:
    data = f.read()
  ndim = data[3]
  shape = np.frombuffer(data, ">u4", count=ndim, offset=4)
  return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(shape)


@pytest.fixture(scope="session")
def tfds_dir(tmp_path_factory) -> pathlib.Path:
  """The session's tensorflow-datasets ``data_dir``, shared by all reads.

  Under pytest-xdist the workers share one folder (beside their own
  temporary folders), so a data set is prepared once, not once per worker.
  """
  if "PYTEST_XDIST_WORKER" not in os.environ:
    return tmp_path_factory.mktemp("tensorflow_datasets")
  shared = tmp_path_factory.getbasetemp().parent / "tensorflow_datasets"
  shared.mkdir(exist_ok=True)
  return shared


@functools.cache
def read_offline(name: str, manual_dir: pathlib.Path, data_dir: pathlib.Path) -> ImageArrays:
  """Prepares ``name`` from the originals (once per session) and reads it.

  A lock on ``data_dir`` keeps a second pytest-xdist worker from reading a
  half-prepared copy: it waits, then reads the prepared one.
  """
  with open(data_dir / f".{name}.lock", "w") as lock, no_network() as attempts:
    fcntl.flock(lock, fcntl.LOCK_EX)
    arrays = read_image_dataset(name, data_dir=data_dir, manual_dir=manual_dir)
  assert not attempts
  assert (data_dir / name).is_dir()  # Prepared by tfds, not read around it.
  return arrays


@functools.cache
def default_splits(name: str, manual_dir: pathlib.Path, data_dir: pathlib.Path) -> Splits:
  return image_splits(read_offline(name, manual_dir, data_dir))


@pytest.fixture
def mnist_arrays(mnist_dir, tfds_dir) -> ImageArrays:
  return read_offline("mnist", mnist_dir, tfds_dir)


@pytest.fixture
def mnist(mnist_dir, tfds_dir) -> Splits:
  return default_splits("mnist", mnist_dir, tfds_dir)


def test_mnist_shapes_dtypes_and_ranges(mnist):
  for (x, y), n in zip(mnist, (45000, 5000, 10000)):
    assert x.shape == (n, 28, 28, 1) and x.dtype == jnp.float32
    assert y.shape == (n,) and y.dtype == jnp.int32
    assert float(x.min()) == 0.0 and float(x.max()) == 1.0
    np.testing.assert_array_equal(np.unique(np.asarray(y)), np.arange(10))


def test_mnist_is_read_in_the_order_of_the_original_files(mnist_arrays, mnist, mnist_dir):
  for split in ("train", "t10k"):
    images = read_idx(mnist_dir / f"{split}-images-idx3-ubyte.gz")
    labels = read_idx(mnist_dir / f"{split}-labels-idx1-ubyte.gz")
    prefix = "train" if split == "train" else "test"
    np.testing.assert_array_equal(getattr(mnist_arrays, f"{prefix}_images")[..., 0], images)
    np.testing.assert_array_equal(getattr(mnist_arrays, f"{prefix}_labels"), labels)
  first = read_idx(mnist_dir / "t10k-images-idx3-ubyte.gz")[0]
  np.testing.assert_allclose(mnist.test.x[0, ..., 0], first / np.float32(255), rtol=1e-6)


def test_mnist_train_and_val_are_disjoint_parts_of_the_training_files(mnist, mnist_dir):
  images = read_idx(mnist_dir / "train-images-idx3-ubyte.gz")
  labels = read_idx(mnist_dir / "train-labels-idx1-ubyte.gz")
  train_idx, val_idx = train_val_indices(60000, 5000, seed=123, n_train=45000)
  assert not set(train_idx) & set(val_idx)
  for (x, y), idx in ((mnist.train, train_idx), (mnist.val, val_idx)):
    np.testing.assert_array_equal(np.rint(np.asarray(x[..., 0]) * 255).astype(np.uint8),
                                  images[idx])
    np.testing.assert_array_equal(np.asarray(y), labels[idx])


def test_mnist_split_seed_and_sizes(mnist_arrays, mnist):
  again = image_splits(mnist_arrays, split_seed=123)
  jax.tree.map(np.testing.assert_array_equal, again, mnist)
  other = image_splits(mnist_arrays, split_seed=7, n_train=None, dtype=jnp.bfloat16)
  assert other.train.x.shape[0] == 55000 and other.val.x.dtype == jnp.bfloat16
  assert not np.array_equal(other.val.y, mnist.val.y)
  np.testing.assert_array_equal(other.test.y, mnist.test.y)


@pytest.mark.slow  # 7 s or more on 2 cores: the default suite stays under 10 minutes
def test_mnist_prepared_copy_is_read_without_the_originals(mnist, mnist_dir, tfds_dir,
                                                           tmp_path):
  read_offline("mnist", mnist_dir, tfds_dir)  # Prepared in this session.
  with no_network() as attempts:
    splits = load_image_dataset("mnist", data_dir=tfds_dir, manual_dir=tmp_path)
  assert not attempts
  jax.tree.map(np.testing.assert_array_equal, splits, mnist)


@pytest.mark.slow
def test_fashion_mnist(fashion_mnist_dir, tfds_dir):
  arrays = read_offline("fashion_mnist", fashion_mnist_dir, tfds_dir)
  np.testing.assert_array_equal(
      arrays.test_images[..., 0], read_idx(fashion_mnist_dir / "t10k-images-idx3-ubyte.gz"))
  np.testing.assert_array_equal(
      arrays.train_labels, read_idx(fashion_mnist_dir / "train-labels-idx1-ubyte.gz"))
  splits = image_splits(arrays)
  assert [x.shape[0] for x, _ in splits] == [45000, 5000, 10000]
  assert splits.train.x.shape[1:] == IMAGE_DATASETS["fashion_mnist"].input_shape


def test_train_val_indices():
  train, val = train_val_indices(10, 3, seed=0)
  assert len(train) == 7 and len(val) == 3
  assert len(train_val_indices(10, 3, seed=0, n_train=4)[0]) == 4
  np.testing.assert_array_equal(np.sort(np.concatenate([train, val])), np.arange(10))
  assert np.all(np.diff(train) > 0) and np.all(np.diff(val) > 0)
  np.testing.assert_array_equal(train_val_indices(10, 3, seed=0)[1], val)
  assert any(not np.array_equal(train_val_indices(100, 10, seed=s)[1],
                                train_val_indices(100, 10, seed=0)[1]) for s in (1, 2))
  with pytest.raises(ValueError):
    train_val_indices(10, 10, seed=0)
  with pytest.raises(ValueError):
    train_val_indices(10, 3, seed=0, n_train=8)


def test_missing_file_names_file_and_folder(mnist_dir, tmp_path):
  manual = tmp_path / "mnist"
  manual.mkdir()
  for name in IDX_FILES[:3]:
    (manual / name).symlink_to(mnist_dir / name)
  with pytest.raises(DatasetNotFoundError) as error:
    load_image_dataset("mnist", data_dir=tmp_path / "tfds", manual_dir=manual)
  message = str(error.value)
  assert "t10k-labels-idx1-ubyte.gz" in message and str(manual) in message
  assert isinstance(error.value, FileNotFoundError)


def test_missing_cifar10_names_both_archives(tmp_path):
  with pytest.raises(DatasetNotFoundError,
                     match=r"cifar-10-binary\.tar\.gz.*cifar-10-python\.tar\.gz"):
    load_image_dataset("cifar10", data_dir=tmp_path / "tfds", manual_dir=tmp_path)


def test_unknown_name():
  with pytest.raises(ValueError, match="cifar10.*fashion_mnist.*mnist"):
    load_image_dataset("imagenet")


def fake_cifar_images(n: int, offset: int) -> np.ndarray:
  """NHWC uint8 images whose value identifies (example, row, column, channel)."""
  k, h, w, c = np.meshgrid(np.arange(offset, offset + n), np.arange(32), np.arange(32),
                           np.arange(3), indexing="ij")
  return ((k + 2 * h + 3 * w + 100 * c) % 256).astype(np.uint8)


def write_fake_cifar10(path: pathlib.Path, per_batch: int, n_test: int,
                       bad_global: bool = False) -> None:
  """A ``cifar-10-python.tar.gz`` in the original format, with few images.

  Each batch is a protocol-2 pickle of a dict with bytes keys; ``b"data"``
  holds one image per row as red, green and blue 32 x 32 planes.
  """
  batches = [(f"data_batch_{i + 1}", i * per_batch, per_batch) for i in range(5)]
  batches.append(("test_batch", 1000, n_test))
  with tarfile.open(path, "w:gz") as tar:
    for name, offset, n in batches:
      planes = fake_cifar_images(n, offset).transpose(0, 3, 1, 2).reshape(n, 3072)
      batch = {b"batch_label": name.encode(), b"data": planes,
               b"labels": [(offset + j) % 10 for j in range(n)],
               b"filenames": [f"{offset + j}.png".encode() for j in range(n)]}
      if bad_global:
        batch[b"extra"] = pathlib.PurePosixPath("/")
      payload = pickle.dumps(batch, protocol=2)
      info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
      info.size = len(payload)
      tar.addfile(info, io.BytesIO(payload))


def test_cifar10_python_archive(tmp_path):
  write_fake_cifar10(tmp_path / "cifar-10-python.tar.gz", per_batch=60, n_test=20)
  splits = load_image_dataset("cifar10", data_dir=tmp_path / "tfds", manual_dir=tmp_path,
                              n_val=50, n_train=None, split_seed=5)
  source = fake_cifar_images(300, 0) / np.float32(255)
  source_labels = np.arange(300) % 10
  train_idx, val_idx = train_val_indices(300, 50, seed=5)
  assert len(train_idx) == 250
  for (x, y), idx in ((splits.train, train_idx), (splits.val, val_idx)):
    assert x.shape == (len(idx), 32, 32, 3) and x.dtype == jnp.float32 and y.dtype == jnp.int32
    np.testing.assert_allclose(x, source[idx], rtol=1e-6)
    np.testing.assert_array_equal(y, source_labels[idx])
  np.testing.assert_allclose(splits.test.x, fake_cifar_images(20, 1000) / np.float32(255),
                             rtol=1e-6)
  np.testing.assert_array_equal(splits.test.y, (1000 + np.arange(20)) % 10)
  # Channel c of pixel (h, w) of image k is (k + 2h + 3w + 100c) % 256.
  assert round(float(splits.test.x[0, 1, 2, 1]) * 255) == (1000 + 2 + 6 + 100) % 256


def test_cifar10_reader_refuses_other_pickled_objects(tmp_path):
  archive = tmp_path / "cifar-10-python.tar.gz"
  write_fake_cifar10(archive, per_batch=2, n_test=2, bad_global=True)
  with pytest.raises(pickle.UnpicklingError, match="pathlib"):
    read_cifar10_python(archive)


# Resizing (image_size), the 80 / 20 split (val_fraction) and Tiny ImageNet, for the BMRS
# set-up (Wright et al., NeurIPS 2024).


def fake_arrays(images: np.ndarray, n_test: int = 2) -> ImageArrays:
  """``ImageArrays`` whose training set is ``images`` and test set its first images."""
  labels = np.arange(len(images), dtype=np.int32) % 7
  return ImageArrays(images, labels, images[:n_test], labels[:n_test])


def pil_resize(images: np.ndarray, size: int) -> np.ndarray:
  """Reference: PIL's bilinear (antialiased) resize of each float32 channel ("F" mode)."""
  image_lib = pytest.importorskip("PIL.Image")
  return np.stack([
      np.stack([np.asarray(image_lib.fromarray(np.ascontiguousarray(img[..., c]))
                           .resize((size, size), image_lib.BILINEAR))
                for c in range(img.shape[-1])], axis=-1)
      for img in images.astype(np.float32)])


@pytest.mark.parametrize("shape", [(28, 28, 1), (64, 64, 3), (20, 20, 3)])
def test_resize_matches_pil_bilinear(shape):
  images = np.random.default_rng(0).integers(0, 256, (6, *shape), dtype=np.uint8)
  splits = image_splits(fake_arrays(images), n_val=2, n_train=None, image_size=32)
  train_idx, val_idx = train_val_indices(6, 2, seed=123)
  for (x, _), idx in ((splits.train, train_idx), (splits.val, val_idx), (splits.test, [0, 1])):
    assert x.shape == (len(idx), 32, 32, shape[-1]) and x.dtype == jnp.float32
    np.testing.assert_allclose(x, pil_resize(images[idx] / np.float32(255), 32), atol=2e-6)


@pytest.mark.parametrize("shape", [(28, 28, 1), (64, 64, 3)])
def test_resize_of_a_constant_image_is_the_constant(shape):
  images = np.full((5, *shape), 77, np.uint8)
  for dtype in (jnp.float32, jnp.bfloat16):
    splits = image_splits(fake_arrays(images), n_val=1, n_train=None, image_size=32, dtype=dtype)
    for x, _ in splits:
      assert x.shape[1:] == (32, 32, shape[-1]) and x.dtype == dtype
      np.testing.assert_allclose(np.asarray(x, np.float32), 77 / 255,
                                 rtol=1e-6 if dtype == jnp.float32 else 4e-3)


def test_resize_in_chunks_equals_resize_at_once(monkeypatch):
  images = np.random.default_rng(1).integers(0, 256, (11, 28, 28, 1), dtype=np.uint8)
  # 3 images per chunk: 4 chunks, the last one padded.
  monkeypatch.setattr("sparsejax.data.images._RESIZE_CHUNK_VALUES", 3 * 32 * 32)
  splits = image_splits(fake_arrays(images), n_val=1, n_train=None, image_size=32)
  train_idx, _ = train_val_indices(11, 1, seed=123)
  whole = jax.image.resize(images[train_idx] / np.float32(255), (10, 32, 32, 1), "bilinear",
                           antialias=True)
  np.testing.assert_allclose(splits.train.x, whole, atol=1e-6)
  np.testing.assert_array_equal(splits.train.y, np.arange(11)[train_idx] % 7)


def test_empty_split_is_resized_to_an_empty_array():
  images = np.zeros((3, 28, 28, 1), np.uint8)
  splits = image_splits(fake_arrays(images), n_val=0, n_train=None, image_size=32)
  assert splits.val.x.shape == (0, 32, 32, 1) and splits.val.y.shape == (0,)


def test_mnist_resized_to_32(mnist_arrays, mnist):
  splits = image_splits(mnist_arrays, image_size=32)
  for (x, y), (x28, y28) in zip(splits, mnist):
    assert x.shape == (x28.shape[0], 32, 32, 1) and x.dtype == jnp.float32
    assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0
    assert float(x.max()) > 0.99  # Stroke interiors stay white.
    np.testing.assert_array_equal(y, y28)
    # Upsampling keeps the mean ink within a few per cent.
    np.testing.assert_allclose(float(x.mean()), float(x28.mean()), rtol=0.03)
  np.testing.assert_allclose(splits.test.x[:20],
                             pil_resize(np.asarray(mnist.test.x[:20]), 32), atol=2e-6)


def test_image_size_none_or_native_changes_nothing(mnist_arrays, mnist):
  for image_size in (None, 28):
    jax.tree.map(np.testing.assert_array_equal,
                 image_splits(mnist_arrays, image_size=image_size), mnist)


def test_mnist_val_fraction_gives_the_bmrs_split(mnist_arrays, mnist_dir):
  splits = image_splits(mnist_arrays, val_fraction=0.2, n_train=None)
  assert [x.shape[0] for x, _ in splits] == [48000, 12000, 10000]
  assert [y.shape[0] for _, y in splits] == [48000, 12000, 10000]
  # The default n_train is replaced by "all the rest" as well.
  jax.tree.map(np.testing.assert_array_equal, image_splits(mnist_arrays, val_fraction=0.2),
               splits)
  train_idx, val_idx = train_val_indices(60000, 12000, seed=123)
  np.testing.assert_array_equal(np.sort(np.concatenate([train_idx, val_idx])), np.arange(60000))
  images = read_idx(mnist_dir / "train-images-idx3-ubyte.gz")
  labels = read_idx(mnist_dir / "train-labels-idx1-ubyte.gz")
  for (x, y), idx in ((splits.train, train_idx), (splits.val, val_idx)):
    np.testing.assert_array_equal(np.rint(np.asarray(x[..., 0]) * 255).astype(np.uint8),
                                  images[idx])
    np.testing.assert_array_equal(y, labels[idx])
  np.testing.assert_array_equal(splits.test.y, mnist_arrays.test_labels)


def test_load_image_dataset_passes_image_size_and_val_fraction(tmp_path):
  write_fake_cifar10(tmp_path / "cifar-10-python.tar.gz", per_batch=60, n_test=20)
  splits = load_image_dataset("cifar10", data_dir=tmp_path / "tfds", manual_dir=tmp_path,
                              image_size=16, val_fraction=0.2, n_train=None, split_seed=5)
  assert [x.shape for x, _ in splits] == [(240, 16, 16, 3), (60, 16, 16, 3), (20, 16, 16, 3)]
  train_idx, val_idx = train_val_indices(300, 60, seed=5)
  np.testing.assert_array_equal(splits.val.y, val_idx % 10)
  np.testing.assert_allclose(splits.train.x,
                             pil_resize(fake_cifar_images(300, 0)[train_idx] / np.float32(255),
                                        16), atol=2e-6)


@pytest.mark.parametrize("image_size", [0, -32, 32.0, "32", True])
def test_bad_image_size(image_size, tmp_path):
  images = np.zeros((4, 28, 28, 1), np.uint8)
  with pytest.raises(ValueError, match="image_size must be a positive int"):
    image_splits(fake_arrays(images), n_val=1, n_train=None, image_size=image_size)
  with pytest.raises(ValueError, match="image_size"):  # Before looking for the data.
    load_image_dataset("mnist", data_dir=tmp_path, manual_dir=tmp_path, image_size=image_size)


@pytest.mark.parametrize("val_fraction", [0, 0.0, 1, 1.0, -0.2, 1.5, float("nan"), True, "0.2"])
def test_bad_val_fraction(val_fraction, tmp_path):
  images = np.zeros((10, 28, 28, 1), np.uint8)
  with pytest.raises(ValueError, match=r"val_fraction must be a number in \(0, 1\)"):
    image_splits(fake_arrays(images), val_fraction=val_fraction)
  with pytest.raises(ValueError, match="val_fraction"):  # Before looking for the data.
    load_image_dataset("mnist", data_dir=tmp_path, manual_dir=tmp_path,
                       val_fraction=val_fraction)


def test_val_fraction_excludes_n_val_and_n_train():
  arrays = fake_arrays(np.zeros((10, 28, 28, 1), np.uint8))
  with pytest.raises(ValueError, match="either n_val or val_fraction"):
    image_splits(arrays, n_val=2, val_fraction=0.2)
  with pytest.raises(ValueError, match="n_train"):
    image_splits(arrays, n_train=5, val_fraction=0.2)
  splits = image_splits(arrays, val_fraction=0.3)
  assert [x.shape[0] for x, _ in splits] == [7, 3, 2]


def tfds_has_builder(name: str) -> bool:
  try:
    tfds.builder_cls(name)
  except tfds.core.registered.DatasetNotFoundError:
    return False
  return True


def test_tiny_imagenet_absent_says_what_is_missing(tmp_path):
  assert IMAGE_DATASETS["tiny_imagenet"].num_classes == 200
  assert IMAGE_DATASETS["tiny_imagenet"].input_shape == (64, 64, 3)
  data_dir, manual_dir = tmp_path / "tfds", tmp_path / "manual"
  data_dir.mkdir()
  manual_dir.mkdir()
  with no_network() as attempts, pytest.raises(DatasetNotFoundError) as error:
    load_image_dataset("tiny_imagenet", data_dir=data_dir, manual_dir=manual_dir,
                       image_size=32, val_fraction=0.2, n_train=None)
  assert not attempts
  message = str(error.value)
  assert "'tiny_imagenet'" in message and TINY_IMAGENET_ARCHIVE in message
  assert str(data_dir) in message
  assert isinstance(error.value, FileNotFoundError)
  if not tfds_has_builder("tiny_imagenet"):
    assert "has no builder" in message and "data_dir=" in message
    # The archive alone cannot be prepared, nor is anything downloaded.
    (manual_dir / TINY_IMAGENET_ARCHIVE).write_bytes(b"")
    with no_network() as attempts, pytest.raises(DatasetNotFoundError,
                                                  match="cannot be prepared without a builder"):
      read_image_dataset("tiny_imagenet", data_dir=data_dir, manual_dir=manual_dir,
                         download=True)
    assert not attempts


def fake_tiny_imagenet(n: int, label_offset: int) -> dict[int, tuple[np.ndarray, int]]:
  """Images by label; each label (of 200) once, each image marked with its label."""
  rng = np.random.default_rng(label_offset)
  return {(7 * i + label_offset) % 200: rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
          for i in range(n)}


@pytest.mark.skipif(tfds_has_builder("tiny_imagenet"),
                    reason="tensorflow-datasets has a tiny_imagenet builder")
def test_tiny_imagenet_prepared_copy_is_read_without_a_builder(tmp_path):
  data_dir = tmp_path / "tfds"
  train, valid = fake_tiny_imagenet(30, 3), fake_tiny_imagenet(10, 100)
  features = tfds.features.FeaturesDict({
      "image": tfds.features.Image(shape=(64, 64, 3)),
      "label": tfds.features.ClassLabel(num_classes=200)})
  tfds.dataset_builders.store_as_tfds_dataset(
      "tiny_imagenet", "1.0.0", features, data_dir=data_dir,
      # Keyed by file name, as the examples of the original archive are named.
      split_datasets={split: [(f"{split}_{i}.JPEG", {"image": image, "label": label})
                              for i, (label, image) in enumerate(images.items())]
                      for split, images in (("train", train), ("validation", valid))})
  with no_network() as attempts:
    arrays = read_image_dataset("tiny_imagenet", data_dir=data_dir, manual_dir=tmp_path / "none")
  assert not attempts
  stored = tfds.builder("tiny_imagenet", data_dir=data_dir)
  for images, labels, source, split in (
      (arrays.train_images, arrays.train_labels, train, "train"),
      (arrays.test_images, arrays.test_labels, valid, "validation")):
    assert images.shape == (len(source), 64, 64, 3) and labels.dtype == np.int32
    assert sorted(labels) == sorted(source)
    for image, label in zip(images, labels):
      np.testing.assert_array_equal(image, source[label])
    # The keys are not indices: the stored order is kept.
    stored_labels = tfds.as_numpy(stored.as_dataset(split=split, batch_size=-1))["label"]
    np.testing.assert_array_equal(labels, stored_labels)
  assert arrays.train_labels.max() > 10  # 200 classes, not 10.
  splits = image_splits(arrays, image_size=32, val_fraction=0.2, n_train=None)
  assert [x.shape for x, _ in splits] == [(24, 32, 32, 3), (6, 32, 32, 3), (10, 32, 32, 3)]
  np.testing.assert_array_equal(splits.test.y, arrays.test_labels)
  np.testing.assert_allclose(splits.test.x, pil_resize(arrays.test_images / np.float32(255), 32),
                             atol=2e-6)
