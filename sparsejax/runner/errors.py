"""Expected failures of a run, each reported as one message naming what and where.

``python -m sparsejax.main`` prints ``error: <message>`` for these (and for
:class:`~sparsejax.fields.ConfigError` and missing data sets) without
a traceback and exits with status 2.
"""

from __future__ import annotations


class RunError(RuntimeError):
  """A run cannot go on for a reason the user can act on."""


class Diverged(RunError):
  """Every seed of the task stopped at a non-finite value (the message names each)."""


class Collapsed(RunError):
  """Every seed of the task finished collapsed: every prunable parameter pruned, or a
  final test loss worse than its initial network's (the message names each)."""


class RunLocked(RunError):
  """Another process is training one of the task's runs in the same workdir."""


class WorkdirError(RunError):
  """The workdir (or a file or folder in it) cannot be created or written."""


class FinalStateDamaged(RunError):
  """A finished run's final state fails its checksum or cannot be read."""


class IncompatibleCheckpoint(RunError):
  """An intact checkpoint of the run was written by another version of the code; it is
  kept as it is."""
