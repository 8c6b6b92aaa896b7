"""What every study command that trains does first (``python -m sparsejax.studies.<name>``)."""

from __future__ import annotations

from typing import Sequence

import ml_collections
from absl import app

from sparsejax.data.quiet import silence_tensorflow
from sparsejax.runner.progress import configure_logging


def start(argv: Sequence[str], config: ml_collections.ConfigDict) -> None:
  """Refuses stray positional arguments, keeps TensorFlow's output off the terminal and
  sets the log level from ``config.quiet`` (as ``sparsejax.main`` does).

  Raises:
    app.UsageError: ``argv`` has arguments beyond the program name.
  """
  if len(argv) != 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}")
  silence_tensorflow()
  configure_logging(config.quiet)
