"""One process per run: an exclusive lock on each run id in the workdir.

``hold(workdir, run_ids)`` takes a non-blocking ``fcntl.flock`` on
``<workdir>/locks/<run_id>.lock`` for every run a process is about to train
and keeps them until it leaves the ``with`` block (or dies: the kernel
releases a dead process's locks, so a ``kill -9`` leaves nothing to clean
up). If another process holds one of them, this one stops at once with
:class:`~sparsejax.runner.errors.RunLocked`, naming the runs and the lock
files, before any compute: two copies of one command never train one run
twice, and the first one's rows are what a later re-run reports. Locks are
per host where the file system's ``flock`` is (local disks, NFS; Lustre
mounted with ``-o flock``).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import pathlib
from typing import Iterator, Sequence

from sparsejax.runner.errors import RunLocked

LOCKS_DIR = "locks"


@contextlib.contextmanager
def hold(workdir: pathlib.Path, run_ids: Sequence[str]) -> Iterator[None]:
  """Holds the locks of ``run_ids`` for the ``with`` block (module docstring)."""
  folder = pathlib.Path(workdir) / LOCKS_DIR
  folder.mkdir(parents=True, exist_ok=True)
  held, busy = [], []
  try:
    for run_id in run_ids:
      path = folder / f"{run_id}.lock"
      fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
      try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
      except BlockingIOError:
        os.close(fd)
        busy.append(path)
        continue
      held.append(fd)
    if busy:
      raise RunLocked(
          f"{len(busy)} of these runs are being trained by another process right now "
          f"(lock files {', '.join(str(p) for p in busy[:3])}{' ...' if len(busy) > 3 else ''}); "
          "this process stops without training them. Run the command again once the other "
          "has finished: it then reports their rows")
    yield
  finally:
    for fd in held:
      os.close(fd)  # closing the descriptor releases its lock
