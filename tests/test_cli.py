"""The command line ``python -m sparsejax.main``: expected failures and quiet output.

An expected failure (unknown field, bad value, missing data set) prints
``error: <message>`` on stderr without a traceback and exits with status 2.
Preparing MNIST from the original files into a fresh ``data_dir`` shows none
of TensorFlow's or tensorflow-datasets' own log lines, prints or progress
bars. The commands run as subprocesses from the repository root, with the
TensorFlow settings of ``conftest.py`` removed from their environment so that
the silencing under test is sparsejax's own. The runs that prepare MNIST
(half a minute each, nearly all of it tensorflow-datasets' preparation) are
marked ``slow``.
"""

import logging
import os
import pathlib
import re
import subprocess
import sys

import pytest
import requests
import tensorflow_datasets as tfds

from sparsejax.data import DatasetNotFoundError, read_image_dataset
from sparsejax.data import quiet

REPO = pathlib.Path(__file__).resolve().parents[1]
LENET300 = "--config=configs/lenet300_mnist.py"
#: Marks of TensorFlow's and tensorflow-datasets' own output.
NOISE = ("oneDNN", "Shuffling", "Generating", "I0000", "W0000", "Dl Completed",
         "Extraction completed", "Downloading and preparing", "downloaded and prepared",
         "absl::InitializeLog", "Traceback")
#: A run of one epoch on 1,000 / 500 / 500 images, no pruning, no finetuning.
TINY_RUN = ("--config.max_epochs=1", "--config.min_epochs=0", "--config.finetuning_max_epochs=0",
            "--config.finetuning_min_epochs=0", "--config.train_set_size=1000",
            "--config.val_set_size=500", "--config.test_set_size=500",
            "--config.pruning.criterion=none")


def clean_env(**extra: str) -> dict[str, str]:
  """This process's environment without the TensorFlow and device settings of the tests."""
  env = {k: v for k, v in os.environ.items()
         if k not in ("TF_CPP_MIN_LOG_LEVEL", "TF_ENABLE_ONEDNN_OPTS", "XLA_FLAGS",
                      quiet.VERBOSE_ENV)}
  env.update(extra)
  return env


def run_python(*args: str, timeout: float = 120, **env: str) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, *args], cwd=REPO, env=clean_env(**env),
                        capture_output=True, text=True, timeout=timeout)


def run_main(*args: str, **env: str) -> subprocess.CompletedProcess:
  return run_python("-m", "sparsejax.main", *args, **env)


#: A line that the C++ side of jaxlib or TensorFlow logs through absl (``W0000 00:00:...``)
#: and absl's preamble to the first one. The machine decides some of them (XLA's
#: ``Allocation of ... exceeds 10% of free system memory`` when memory is short), so
#: they may come before a run's error; they are never sparsejax's own output.
_NATIVE_LOG_LINE = re.compile(r"^([IWEF]\d{4} \d\d:\d\d:\d+\.\d+ |WARNING: All log messages "
                              r"before absl::InitializeLog\(\) is called)")


def own_stderr(result: subprocess.CompletedProcess) -> str:
  """``result.stderr`` without the native libraries' log lines (:data:`_NATIVE_LOG_LINE`)."""
  return "".join(line for line in result.stderr.splitlines(keepends=True)
                 if not _NATIVE_LOG_LINE.match(line))


def assert_expected_failure(result: subprocess.CompletedProcess, *names: str,
                            started: bool = False) -> None:
  """Exit status 2, ``error: ...`` naming ``names`` on stderr, no traceback.

  The error is the first thing sparsejax prints on stderr; the C++ log lines
  the machine may cause before it (:func:`own_stderr`) are left out of the
  check. Nothing is printed to stdout unless the run had ``started`` (its
  progress lines).
  """
  assert result.returncode == 2, result.stderr
  assert own_stderr(result).startswith("error: "), result.stderr
  assert "Traceback" not in result.stderr, result.stderr
  for name in names:
    assert name in result.stderr, (name, result.stderr)
  assert started or result.stdout == "", result.stdout


def assert_no_noise(result: subprocess.CompletedProcess) -> None:
  for mark in NOISE:
    assert mark not in result.stdout + result.stderr, (mark, result.stdout, result.stderr)


def test_bad_value_exits_2_naming_the_field():
  assert_expected_failure(run_main(LENET300, "--config.lr=-1"), "'lr'", "> 0")


def test_unknown_field_exits_2_naming_the_field():
  assert_expected_failure(run_main(LENET300, "--config.no_such_field=1"), "'no_such_field'",
                          "valid fields")


@pytest.mark.slow  # 7 s or more on 2 cores: the default suite stays under 10 minutes
def test_unparsable_value_and_bad_config_argument_exit_2():
  assert_expected_failure(run_main(LENET300, "--config.lr=abc"), "--config.lr=abc")
  # get_config()'s own ConfigError, reported by its message (absl's carries a traceback).
  assert_expected_failure(run_main(f"{LENET300}:no_such_method"), "'method'", "no_such_method")
  assert_expected_failure(run_main("--config=configs/no_such_config.py"), "no_such_config.py")


def test_missing_data_set_exits_2_naming_the_folder_and_download(tmp_path):
  manual_dir, data_dir = tmp_path / "manual", tmp_path / "tfds"
  manual_dir.mkdir()
  data_dir.mkdir()
  result = run_main(LENET300, f"--config.manual_dir={manual_dir}",
                    f"--config.data_dir={data_dir}")
  assert_expected_failure(result, "'mnist'", str(manual_dir), "train-images-idx3-ubyte.gz",
                          "--config.download=True", started=True)
  assert_no_noise(result)


def test_failed_download_is_a_missing_data_set(tmp_path, monkeypatch):
  def no_network(self, *args, **kwargs):
    raise requests.ConnectionError("no network")

  monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", no_network)
  with pytest.raises(DatasetNotFoundError, match="could not download it: no network"):
    read_image_dataset("mnist", data_dir=tmp_path / "tfds", manual_dir=tmp_path, download=True)


def test_verbose_env(monkeypatch):
  for value, verbose in [("", False), ("0", False), ("false", False), ("1", True),
                         ("true", True)]:
    monkeypatch.setenv(quiet.VERBOSE_ENV, value)
    assert quiet.verbose() is verbose
  monkeypatch.delenv(quiet.VERBOSE_ENV)
  assert not quiet.verbose()


def test_absl_filter_drops_tensorflow_records_below_error():
  def record(path: str, level: int) -> logging.LogRecord:
    return logging.LogRecord("absl", level, path, 1, "message", None, None)

  tfds_file = str(pathlib.Path("site-packages", "tensorflow_datasets", "core", "writer.py"))
  ours = str(REPO / "sparsejax" / "runner" / "config.py")
  drop = quiet._DropTensorFlowRecords()
  assert not drop.filter(record(tfds_file, logging.INFO))
  assert not drop.filter(record(tfds_file, logging.WARNING))
  assert drop.filter(record(tfds_file, logging.ERROR))
  assert drop.filter(record(ours, logging.INFO))


@pytest.mark.slow
def test_preparing_mnist_shows_no_tensorflow_output(mnist_dir, tmp_path):
  """The library alone: ``read_image_dataset`` into a fresh ``data_dir``."""
  code = ("import sys; from sparsejax.data import read_image_dataset; "
          "a = read_image_dataset('mnist', data_dir=sys.argv[1], manual_dir=sys.argv[2]); "
          "print(a.train_images.shape)")
  result = run_python("-c", code, str(tmp_path / "tfds"), str(mnist_dir))
  assert result.returncode == 0, result.stderr
  assert result.stdout == "(60000, 28, 28, 1)\n"
  assert result.stderr == ""


@pytest.mark.slow
def test_quiet_run_preparing_mnist_prints_at_most_the_summary(mnist_dir, tmp_path):
  """A tiny quiet run that prepares MNIST into a fresh ``data_dir``: no TensorFlow output."""
  result = run_main(LENET300, *TINY_RUN, "--config.quiet=True",
                    f"--config.data_dir={tmp_path / 'tfds'}", f"--workdir={tmp_path / 'work'}",
                    SPARSEJAX_DATA_DIR=str(mnist_dir.parent))
  assert result.returncode == 0, result.stderr
  assert_no_noise(result)
  assert result.stderr == ""
  lines = result.stdout.splitlines()
  assert len(lines) <= 1, result.stdout
  assert all("kept" in line and "test accuracy" in line for line in lines), result.stdout


def test_native_log_lines_are_left_out_of_the_error_check():
  # The stderr of a CI run whose machine was short of memory (jaxlib's allocator warning).
  stderr = ("WARNING: All log messages before absl::InitializeLog() is called are written to "
            "STDERR\nW0000 00:00:1796131343.175890   31378 cpu_allocator_impl.cc:82] Allocation "
            "of 47040000 exceeds 10% of free system memory.\nerror: config field 'lr' is -1\n")
  done = subprocess.CompletedProcess([], 2, stdout="", stderr=stderr)
  assert own_stderr(done) == "error: config field 'lr' is -1\n"
  assert_expected_failure(done, "'lr'")
  # sparsejax's own lines stay, wherever they are.
  done = subprocess.CompletedProcess([], 2, stdout="", stderr="warning: x\nerror: y\n")
  assert own_stderr(done) == done.stderr
  with pytest.raises(AssertionError):
    assert_expected_failure(done, "y")
