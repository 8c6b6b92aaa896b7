"""Entry point: ``python -m sparsejax.main --config=configs/<name>.py [--config.a=v ...]``.

Follows the flax examples: absl flags, an ml_collections config file with
``get_config()``, and a workdir (default ``./workdirs/<experiment_name>``).
Unknown fields and bad values are reported before any compute.

An expected failure (:data:`EXPECTED_ERRORS`: an unknown field, a bad value, a
config file that cannot be loaded, a missing or damaged data set, a workdir
that cannot be written, a run another process is training, a run whose every
seed diverged, a damaged final state, a checkpoint that another version of
the code wrote; and an ``OSError`` while writing, such as a full disk)
prints ``error: <message>`` on stderr, without a traceback, and exits with
status 2; anything else is a bug and keeps its traceback. TensorFlow's and
tensorflow-datasets' own output stays off the terminal (:mod:`sparsejax.data.quiet`;
``SPARSEJAX_VERBOSE=1`` lets it through). Log lines are shown from
``WARNING`` up, from ``ERROR`` up with ``--config.quiet=True`` (where Python
warnings are logged, so hidden too), unless ``--verbosity`` is given.

Before anything starts JAX, the command adds the XLA CPU options of
:mod:`sparsejax.xla_flags` to ``XLA_FLAGS`` (importing the package does not).
"""

from __future__ import annotations

import os
import re
import sys
from typing import NoReturn

from absl import app, flags
from ml_collections import config_flags

from sparsejax import xla_flags
from sparsejax.data import DatasetError
from sparsejax.data.quiet import silence_tensorflow
from sparsejax.fields import ConfigError
from sparsejax.runner.config import check_field_name
from sparsejax.runner.errors import RunError
from sparsejax.runner.progress import configure_logging

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Experiment config file (configs/*.py).", lock_config=True)
_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Where runs.csv, checkpoints and artifacts go "
    "(default: workdirs/<experiment_name> under the current directory).")
flags.mark_flags_as_required(["config"])

#: Failures that are the user's to fix: reported as ``error: <message>``, exit 2.
EXPECTED_ERRORS = (ConfigError, DatasetError, RunError)

_OVERRIDE = re.compile(r"^--config\.([A-Za-z0-9_.]+)(=|$)")


def _fail(message: str) -> NoReturn:
  """Reports an expected failure: ``error: <message>`` on stderr, exit status 2."""
  print(f"error: {message}", file=sys.stderr, flush=True)
  sys.exit(2)


def _expected_cause(error: BaseException) -> BaseException | None:
  """The innermost of :data:`EXPECTED_ERRORS` that ``error`` was raised from, if any.

  absl wraps an error of the config file's ``get_config()`` in a flags error
  whose message holds the traceback; the original error has the message.
  """
  found, seen = None, set()
  while error is not None and id(error) not in seen:
    seen.add(id(error))
    if isinstance(error, EXPECTED_ERRORS):
      found = error
    error = error.__cause__ or error.__context__
  return found


def check_overrides(argv: list[str]) -> None:
  """Rejects ``--config.<name>`` overrides that name no field, listing the valid ones.

  Raises:
    ConfigError: an override names no field.
  """
  for arg in argv[1:]:
    match = _OVERRIDE.match(arg)
    if match:
      check_field_name(match.group(1))


def _parse_flags(argv: list[str]) -> list[str]:
  """Parses the command line; a bad flag or config file is an expected failure.

  Returns:
    The arguments left after the flags.
  """
  try:
    check_overrides(argv)
    rest = flags.FLAGS(argv)
  except EXPECTED_ERRORS as error:
    _fail(str(error))
  except flags.Error as error:
    _fail(str(_expected_cause(error) or error))
  try:
    getattr(_CONFIG.value, "experiment_name", None)  # A file that failed to load raises here.
  except OSError as error:
    _fail(f"cannot load the config file: {error.__cause__ or error}")
  return rest


def _repository_root_on_path(argv: list[str]) -> None:
  """Puts the folder above the config file's folder on ``sys.path``.

  Config files import their shared set-ups as ``from configs import common``;
  this makes that work wherever the command runs from.
  """
  for arg in argv[1:]:
    if arg.startswith("--config="):
      path = arg.split("=", 1)[1].split(":", 1)[0]
      root = os.path.dirname(os.path.dirname(os.path.abspath(path)))
      if root not in sys.path:
        sys.path.insert(0, root)


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    _fail(f"unexpected arguments {' '.join(argv[1:])!r}; fields are set as --config.<field>=<value>")
  silence_tensorflow()
  config = _CONFIG.value
  configure_logging(config.quiet)
  workdir = _WORKDIR.value or os.path.join("workdirs", config.experiment_name)
  from sparsejax.runner import hosts, run
  from sparsejax.runner.config import validate
  try:
    validate(config)  # before the processes meet: a bad field fails alone, at once
    hosts.initialize(config)
    run(config, workdir)
  except EXPECTED_ERRORS as error:
    _fail(str(error))
  except OSError as error:  # a full disk, a folder that became read-only, ...
    _fail(f"cannot write the run's files: {error}")


if __name__ == "__main__":
  xla_flags.apply()  # before JAX starts a backend: XLA reads XLA_FLAGS once
  _repository_root_on_path(sys.argv)
  app.run(main, flags_parser=_parse_flags)
