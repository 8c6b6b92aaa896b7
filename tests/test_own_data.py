"""One's own data on the command line: ``dataset=npz:PATH`` and tensorflow-datasets names.

The data are a subset of real MNIST (read through :mod:`sparsejax.data` as
``test_images.py`` does, prepared once per session), written in a temporary
folder as an ``.npz`` file and as a tensorflow-datasets copy prepared there
(``store_as_tfds_dataset``), which is read by name without its builder code.
Both run end to end through the runner on a small LeNet-300-100 and reach an
accuracy far above chance. A tensorflow-datasets builder registered here
prepares its data set from a manual folder, so that ``download=True`` is
exercised without network. Every malformed file and unknown name is a
:class:`ConfigError` naming ``dataset`` and what is wrong, raised by
``validate`` before any data is read; on the command line it is ``error:
...`` with exit status 2.
"""

import numpy as np
import pytest
import tensorflow_datasets as tfds

from sparsejax import data
from sparsejax.runner import run
from sparsejax.runner.build import data_shape
from sparsejax.runner.config import ConfigError, base_config, validate
from tests.conftest import data_path
from tests.test_cli import LENET300, assert_expected_failure, run_main
from tests.test_images import no_network, read_offline, tfds_dir  # noqa: F401  (fixture)

#: Training and test images taken from MNIST.
N_TRAIN, N_TEST = 3000, 1000


@pytest.fixture(scope="module")
def digits(tfds_dir) -> dict[str, np.ndarray]:  # noqa: F811  (the imported fixture)
  """The first MNIST training and test images (uint8 ``(n, 28, 28, 1)``) and labels."""
  arrays = read_offline("mnist", data_path("mnist"), tfds_dir)
  return dict(x_train=arrays.train_images[:N_TRAIN], y_train=arrays.train_labels[:N_TRAIN],
              x_test=arrays.test_images[:N_TEST], y_test=arrays.test_labels[:N_TEST])


def save_npz(path, **arrays) -> str:
  """Writes ``arrays`` to ``path`` (``numpy.savez``) and returns the data set name."""
  np.savez(path, **arrays)
  return f"npz:{path}"


def small_config(dataset: str, **overrides):
  """LeNet-300-100, three epochs of plain training in batches of 100, no pruning."""
  c = base_config()
  c.experiment_name = "own_data"
  c.dataset = dataset
  c.architecture = "lenet_300_100"
  c.method = "none"
  c.train_batch_size = 100
  c.eval_batch_size = 1000
  c.min_epochs = 0
  c.max_epochs = 3
  c.prune_window = 3
  c.finetuning_min_epochs = 0
  c.finetuning_max_epochs = 0
  c.pruning.criterion = "none"
  c.pruning.random_gradient_pruning = False
  c.quiet = True
  for key, value in overrides.items():
    c[key] = value
  return c


@pytest.mark.slow  # 7 s or more on 2 cores: the default suite stays under 10 minutes
def test_npz_runs_end_to_end_above_chance(digits, tmp_path):
  dataset = save_npz(tmp_path / "digits.npz", **digits)
  config = small_config(dataset, val_fraction=0.2)
  assert data_shape(config) == ((28, 28, 1), 10)
  [row] = run(config, tmp_path / "work")
  assert row["dataset"] == dataset
  assert row["final_test_accuracy"] > 0.7  # chance: 0.1


def test_npz_splits_scaling_and_test_equal_to_val(digits, tmp_path):
  dataset = save_npz(tmp_path / "digits.npz", x_train=digits["x_train"],
                     y_train=digits["y_train"])
  splits = data.load_dataset(dataset, val_fraction=0.1)
  assert [len(split.y) for split in splits] == [2700, 300, 300]
  assert splits.test is splits.val  # No test set: the validation set is the test set.
  train_idx, val_idx = data.train_val_indices(N_TRAIN, 300, seed=123)
  np.testing.assert_array_equal(splits.val.y, digits["y_train"][val_idx])
  np.testing.assert_allclose(splits.train.x, digits["x_train"][train_idx] / np.float32(255))
  # Own validation set, float vectors kept as they are (not divided by 255).
  features = digits["x_train"].reshape(N_TRAIN, -1).astype(np.float32)
  dataset = save_npz(tmp_path / "vectors.npz", x_train=features[:2000],
                     y_train=digits["y_train"][:2000], x_val=features[2000:],
                     y_val=digits["y_train"][2000:])
  assert data.dataset_info(dataset).input_shape == (784,)
  splits = data.load_dataset(dataset)
  assert [len(split.y) for split in splits] == [2000, 1000, 1000]
  np.testing.assert_array_equal(splits.val.x, features[2000:])
  assert splits.train.y.dtype == np.int32
  config = small_config(dataset)
  validate(config)
  assert data_shape(config) == ((784,), 10)


def expect_config_error(dataset: str, *fragments: str, **overrides) -> None:
  """``validate`` names ``dataset`` and each of ``fragments``, without network."""
  with no_network() as attempts, pytest.raises(ConfigError) as error:
    validate(small_config(dataset, **overrides))
  assert not attempts
  message = str(error.value)
  assert message.startswith(f"config field 'dataset' is {dataset!r}"), message
  for fragment in fragments:
    assert fragment in message, (fragment, message)


def test_npz_errors_name_dataset_and_what_is_wrong(tmp_path):
  x, y = np.zeros((20, 4, 4, 1), np.uint8), np.arange(20) % 3
  expect_config_error(f"npz:{tmp_path / 'absent.npz'}", "not found", "absent.npz")
  expect_config_error("npz:", "names no file")
  (tmp_path / "text.npz").write_text("not a zip archive")
  expect_config_error(f"npz:{tmp_path / 'text.npz'}", "is not an .npz file")
  expect_config_error(save_npz(tmp_path / "no_y.npz", x_train=x), "has no y_train")
  expect_config_error(save_npz(tmp_path / "half_val.npz", x_train=x, y_train=y, x_val=x),
                      "has no y_val")
  expect_config_error(save_npz(tmp_path / "typo.npz", x_train=x, y_train=y, x_valid=x),
                      "x_valid", "accepted arrays are x_train, y_train")
  expect_config_error(save_npz(tmp_path / "lengths.npz", x_train=x, y_train=y[:15]),
                      "x_train has 20 examples but y_train has 15 labels")
  expect_config_error(save_npz(tmp_path / "float.npz", x_train=x, y_train=y.astype(np.float32)),
                      "y_train has dtype float32", "labels must be integers")
  expect_config_error(save_npz(tmp_path / "onehot.npz", x_train=x, y_train=np.eye(3)[y]),
                      "y_train has dtype float64")
  expect_config_error(save_npz(tmp_path / "negative.npz", x_train=x, y_train=y - 1),
                      "negative label -1")
  expect_config_error(save_npz(tmp_path / "shapes.npz", x_train=x, y_train=y,
                               x_test=x[:, :2], y_test=y), "x_test has examples of shape")
  # Too few examples for the default 5,000 validation examples; a share works.
  small = save_npz(tmp_path / "small.npz", x_train=x, y_train=y)
  expect_config_error(small, "5,000 are held out of its 20 training examples", "val_fraction")
  validate(small_config(small, architecture="mlp", architecture_student=(16, 8, 3),
                        val_fraction=0.25))
  vectors = save_npz(tmp_path / "vectors.npz", x_train=x.reshape(20, 16).astype(np.float32),
                     y_train=y)
  expect_config_error(vectors, "image_size=32 resizes uint8 images of shape (H, W, C) only",
                      "float32 of shape (16,)", val_fraction=0.25, image_size=32)
  with_val = save_npz(tmp_path / "with_val.npz", x_train=x, y_train=y, x_val=x, y_val=y)
  expect_config_error(with_val, "its own validation set, so val_fraction must be 0",
                      val_fraction=0.2)


def test_npz_error_on_the_command_line_exits_2(tmp_path):
  np.savez(tmp_path / "bad.npz", x_train=np.zeros((5, 3), np.float32), y_train=np.zeros(4, int))
  result = run_main(LENET300, f"--config.dataset=npz:{tmp_path / 'bad.npz'}")
  assert_expected_failure(result, "'dataset'", "x_train has 5 examples but y_train has 4")


def test_unknown_and_unprepared_tfds_names(tmp_path):
  data_dir = str(tmp_path / "tfds")
  expect_config_error("no_such_data_set", "tensorflow-datasets", "no data set 'no_such_data_set'",
                      "teacher_student", "mnist, fashion_mnist, cifar10, tiny_imagenet",
                      "npz:PATH", data_dir=data_dir)
  expect_config_error("Not A Name!", "npz:PATH", data_dir=data_dir)
  # A catalogue builder, not prepared: download=True is needed (and nothing is downloaded here).
  expect_config_error("kmnist", "not prepared", "--config.download=True", data_dir=data_dir)


@pytest.fixture(scope="module")
def prepared_digits(digits, tmp_path_factory):
  """``(name, data_dir)`` of a tensorflow-datasets copy of :func:`digits`, prepared there."""
  data_dir = tmp_path_factory.mktemp("own_tfds")
  features = tfds.features.FeaturesDict({
      "image": tfds.features.Image(shape=(28, 28, 1)),
      "label": tfds.features.ClassLabel(num_classes=10)})
  tfds.dataset_builders.store_as_tfds_dataset(
      "sparsejax_stored_digits", "1.0.0", features, data_dir=data_dir,
      split_datasets={split: [(i, {"image": image, "label": int(label)}) for i, (image, label)
                              in enumerate(zip(digits[f"x_{split}"], digits[f"y_{split}"]))]
                      for split in ("train", "test")})
  return "sparsejax_stored_digits", str(data_dir)


def test_tfds_name_runs_end_to_end_above_chance(prepared_digits, tmp_path):
  name, data_dir = prepared_digits
  config = small_config(name, data_dir=data_dir, val_fraction=0.2)
  with no_network() as attempts:
    assert data_shape(config) == ((28, 28, 1), 10)
    [row] = run(config, tmp_path / "work")
  assert not attempts
  assert row["final_test_accuracy"] > 0.7  # chance: 0.1
  info = data.dataset_info(name, data_dir=data_dir)
  assert (info.n_train, info.has_val, info.has_test) == (N_TRAIN, False, True)


class SparsejaxManualDigits(tfds.core.GeneratorBasedBuilder):
  """A registered builder that prepares its data set from ``digits.npz`` in ``manual_dir``."""

  VERSION = tfds.core.Version("1.0.0")
  MANUAL_DOWNLOAD_INSTRUCTIONS = "Place digits.npz in manual_dir."

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(features=tfds.features.FeaturesDict({
        "image": tfds.features.Image(shape=(28, 28, 1)),
        "label": tfds.features.ClassLabel(num_classes=10)}))

  def _split_generators(self, dl_manager):
    with np.load(dl_manager.manual_dir / "digits.npz") as arrays:
      arrays = dict(arrays)
    return {"train": self._generate_examples(arrays["x_train"], arrays["y_train"]),
            "validation": self._generate_examples(arrays["x_test"], arrays["y_test"])}

  def _generate_examples(self, images, labels):
    for i, (image, label) in enumerate(zip(images, labels)):
      yield i, {"image": image, "label": int(label)}


def test_tfds_download_prepares_a_registered_builder(digits, tmp_path):
  name, data_dir = "sparsejax_manual_digits", str(tmp_path / "tfds")
  np.savez(tmp_path / "digits.npz", x_train=digits["x_train"][:500],
           y_train=digits["y_train"][:500], x_test=digits["x_test"][:200],
           y_test=digits["y_test"][:200])
  expect_config_error(name, "not prepared", data_dir=data_dir, manual_dir=str(tmp_path))
  with no_network() as attempts:
    validate(small_config(name, data_dir=data_dir, manual_dir=str(tmp_path), download=True))
    splits = data.load_dataset(name, data_dir=data_dir, manual_dir=tmp_path, download=True)
  assert not attempts
  # Its validation split is the validation set; without a test split, it is the test set too.
  assert [len(split.y) for split in splits] == [500, 200, 200]
  assert splits.test is splits.val
  assert sorted(np.asarray(splits.val.y)) == sorted(digits["y_test"][:200])
  info = data.dataset_info(name, data_dir=data_dir)
  assert (info.n_train, info.has_val, info.has_test) == (500, True, False)
  expect_config_error(name, "its own validation set", data_dir=data_dir, val_fraction=0.1)
