"""Entry point: ``python -m sparsejax.main --config=configs/<name>.py [--config.a=v ...]``.

Follows the flax examples: absl flags, an ml_collections config file with
``get_config()``, and a workdir (default ``./workdirs/<experiment_name>``).
Unknown fields and bad values are reported before any compute. With
``--config.seeds=N`` (N > 1) the seeds run as a vmapped sweep
(:mod:`sparsejax.runner.sweep`); ``method="bmrs"`` runs its seeds vmapped
through :mod:`sparsejax.runner.bmrs`.
"""

from __future__ import annotations

import re
import sys

from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Experiment config file (configs/*.py).", lock_config=True)
_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Where runs.csv, checkpoints and artifacts go "
    "(default: workdirs/<experiment_name> under the current directory).")
flags.mark_flags_as_required(["config"])

_OVERRIDE = re.compile(r"^--config\.([A-Za-z0-9_.]+)(=|$)")


def check_overrides(argv: list[str]) -> None:
  """Rejects ``--config.<name>`` overrides that name no field, listing the valid ones."""
  from sparsejax.runner.config import ConfigError, check_field_name
  for arg in argv[1:]:
    match = _OVERRIDE.match(arg)
    if match:
      try:
        check_field_name(match.group(1))
      except ConfigError as error:
        sys.exit(f"error: {error}")


def main(argv):
  del argv
  import os
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
  logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO
  from sparsejax.runner.config import ConfigError
  from sparsejax.runner.experiment import run
  from sparsejax.runner.bmrs import run_bmrs
  from sparsejax.runner.sweep import run_sweep
  config = _CONFIG.value
  workdir = _WORKDIR.value or os.path.join("workdirs", config.experiment_name)
  if config.method == "bmrs":
    runner = run_bmrs  # seeds vmapped in one program
  else:
    runner = run_sweep if config.seeds > 1 else run
  try:
    runner(config, workdir)
  except ConfigError as error:
    sys.exit(f"error: {error}")


if __name__ == "__main__":
  check_overrides(sys.argv)
  app.run(main)
