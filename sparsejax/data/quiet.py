"""Keeps TensorFlow's and tensorflow-datasets' own output off the terminal.

TensorFlow serves only to prepare and read the data sets, and its chatter
(the oneDNN notice, absl ``I0000`` / ``W0000`` lines, tensorflow-datasets'
``Downloading and preparing ...`` prints and its ``Dl Completed`` /
``Generating splits...`` / ``Shuffling ...`` progress bars) says nothing a
sparsejax user acts on. :func:`silence_tensorflow` turns it off, through:

* ``TF_CPP_MIN_LOG_LEVEL=3`` and ``TF_ENABLE_ONEDNN_OPTS=0`` in the
  environment, read when TensorFlow is first imported (tensorflow-datasets
  imports it lazily, on first use; TensorFlow 2.21 logs the oneDNN notice
  whatever ``TF_CPP_MIN_LOG_LEVEL`` says, and oneDNN's custom operations do
  not matter for decoding and reading records);
* ``tfds.disable_progress_bar()`` for the progress bars;
* the Python logger ``tensorflow`` at ``ERROR``, and a filter on absl's
  logger that drops the records below ``ERROR`` logged from TensorFlow's and
  tensorflow-datasets' own code;

and :func:`tfds_prints_swallowed` takes the two lines tensorflow-datasets
prints to stdout around a preparation.

Environment variables already set are left as they are, except
``TF_CPP_MIN_LOG_LEVEL=1``: importing JAX sets that when it is unset (JAX's
own default for the C++ logs), and sparsejax imports JAX before any data
set is read, so at ``1`` TensorFlow's C++ warnings (such as the
``dataset.take(k).cache().repeat()`` advice printed when a damaged record
stops a read) would reach the terminal. ``SPARSEJAX_VERBOSE=1`` leaves
everything as TensorFlow has it. TensorFlow imported before
:func:`silence_tensorflow` has read its environment already.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import pathlib
from typing import Iterator

#: Set to ``1`` to let TensorFlow's and tensorflow-datasets' output through.
VERBOSE_ENV = "SPARSEJAX_VERBOSE"

_QUIET_ENV = {"TF_CPP_MIN_LOG_LEVEL": "3", "TF_ENABLE_ONEDNN_OPTS": "0"}
# The values that importing JAX sets where they are unset: taken as unset.
_JAX_DEFAULTS = {"TF_CPP_MIN_LOG_LEVEL": "1"}
# The folders of the packages whose log records the absl filter drops.
_NOISY_PACKAGES = ("tensorflow", "tensorflow_datasets")


def verbose() -> bool:
  """Whether ``SPARSEJAX_VERBOSE`` asks for TensorFlow's own output."""
  return os.environ.get(VERBOSE_ENV, "").strip().lower() not in ("", "0", "false", "no")


def _from_noisy_package(record: logging.LogRecord) -> bool:
  parts = pathlib.PurePath(record.pathname).parts
  return any(name in parts for name in _NOISY_PACKAGES)


class _DropTensorFlowRecords(logging.Filter):
  """Drops the records below ``ERROR`` that TensorFlow or tensorflow-datasets logged."""

  def filter(self, record: logging.LogRecord) -> bool:
    return record.levelno >= logging.ERROR or not _from_noisy_package(record)


_FILTER = _DropTensorFlowRecords()


def silence_tensorflow() -> None:
  """Turns TensorFlow's and tensorflow-datasets' own output off (see the module docstring).

  Idempotent; call it before TensorFlow is first used. Does nothing when
  ``SPARSEJAX_VERBOSE=1``.
  """
  if verbose():
    return
  for name, value in _QUIET_ENV.items():
    if os.environ.get(name) in (None, _JAX_DEFAULTS.get(name)):
      os.environ[name] = value
  import tensorflow_datasets as tfds  # Does not import TensorFlow itself.
  tfds.disable_progress_bar()
  logging.getLogger("tensorflow").setLevel(logging.ERROR)
  absl_logger = logging.getLogger("absl")
  if _FILTER not in absl_logger.filters:
    absl_logger.addFilter(_FILTER)


@contextlib.contextmanager
def tfds_prints_swallowed() -> Iterator[None]:
  """Discards what is printed to stdout inside (unless ``SPARSEJAX_VERBOSE=1``).

  tensorflow-datasets prints ``Downloading and preparing dataset ...`` and
  ``Dataset ... downloaded and prepared to ...`` with ``print``, outside its
  logging.
  """
  if verbose():
    yield
    return
  with contextlib.redirect_stdout(io.StringIO()):
    yield
