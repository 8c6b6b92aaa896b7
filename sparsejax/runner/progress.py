"""Progress lines for long phases, throttled in time; silent in quiet mode."""

from __future__ import annotations

import logging as std_logging
import sys
import time
from typing import Mapping, Sequence

from absl import flags, logging


def configure_logging(quiet: bool) -> None:
  """Log lines from ``WARNING`` up (``ERROR`` up when quiet), unless ``--verbosity`` is given.

  orbax logs every save at INFO. Quiet also routes Python warnings into
  the log, so they are hidden too. For the command-line entry points.
  """
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.ERROR if quiet else logging.WARNING)
  if quiet:
    std_logging.captureWarnings(True)


class Progress:
  """Prints ``[phase] epoch e/max  loss ..  val ..  density ..  elapsed, left``.

  At most one line every ``every_s`` seconds (and always the last one), so a
  fast phase does not flood the terminal. The time left is the upper bound
  ``(max_epochs - epoch) * seconds per epoch``: phases usually stop earlier,
  at convergence.
  """

  def __init__(self, quiet: bool = False, every_s: float = 5.0, stream=None,
               warnings: bool = True):
    self.quiet = quiet
    self.warnings = warnings
    self.every_s = every_s
    self.stream = stream or sys.stdout
    self._last_print = 0.0
    self._phase_start = time.monotonic()
    self._start_epoch = 0

  def start_phase(self, name: str, start_epoch: int) -> None:
    self._phase_start = time.monotonic()
    self._start_epoch = start_epoch
    self.log(f"[{name}] starting at epoch {start_epoch}")

  def due(self) -> bool:
    """Whether a progress line would print now (not quiet, ``every_s`` since the last)."""
    return not self.quiet and time.monotonic() - self._last_print >= self.every_s

  def update(self, name: str, epoch: int, max_epochs: int,
             curves: Mapping[str, Sequence[float]], density: float | None,
             force: bool = False) -> None:
    now = time.monotonic()
    if self.quiet or (not force and now - self._last_print < self.every_s):
      return
    self._last_print = now
    elapsed = now - self._phase_start
    done = max(epoch - self._start_epoch, 1)
    left = elapsed / done * (max_epochs - epoch)
    parts = [f"[{name}] epoch {epoch}/{max_epochs}"]
    for key in ("loss", "val_loss", "val_accuracy"):
      if curves.get(key):
        parts.append(f"{key} {curves[key][-1]:.5g}")
    if density is not None:
      parts.append(f"density {density:.4f}")
    parts.append(f"{elapsed:.1f}s elapsed, <= {left:.0f}s left")
    self.log("  ".join(parts))

  def warn(self, message: str) -> None:
    """A warning: printed to stderr even when quiet (unless ``warnings`` is off)."""
    if self.warnings:
      print(f"warning: {message}", file=sys.stderr, flush=True)

  def log(self, message: str) -> None:
    if not self.quiet:
      print(message, file=self.stream, flush=True)
