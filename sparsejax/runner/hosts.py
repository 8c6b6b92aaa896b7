"""Several processes (multi-host) through ``jax.distributed``.

One command, several processes, one program: every process runs the same
compiled computations over the global device mesh (all devices of all
processes), the global batch split over the ``data`` axis; XLA inserts the
cross-process collectives (gloo on CPUs, NCCL on GPUs).

* **Start** (:func:`initialize`, before any computation):
  ``jax.distributed.initialize`` with the ``distributed.*`` fields
  (``coordinator_address`` ``host:port``, ``num_processes``, ``process_id``:
  any launcher), or with nothing when SLURM started more than one task
  (``SLURM_NTASKS > 1``: JAX reads the coordinator, the process count and
  the rank from SLURM's variables). Otherwise the run is one process.
* **Data**: every process reads the whole data set (the data sets here are
  at most a few hundred MB) and puts its copy on its own devices
  (:func:`sparsejax.train.sharding.put`): the data set is replicated, and
  every step gathers the global batch in the compiled program and splits it
  over all devices of all processes, so no example crosses the network. A
  data set too large for one host's memory would need per-process shards
  and a cross-host gather; none of the supported ones is.
* **Writes**: every process takes part in the computations and in the orbax
  checkpoints (orbax coordinates them: one copy on disk, restored by all);
  only process 0 (:func:`is_writer`) writes ``runs.csv``, artifacts, sweep
  summaries and progress lines and holds the run locks. The others write
  the recipe's artifacts to a scratch folder that is thrown away.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import tempfile
from typing import Iterator

import jax
import ml_collections
from jax.experimental import multihost_utils


def wanted(config: ml_collections.ConfigDict) -> bool:
  """Whether ``config`` (or SLURM's environment) asks for several processes."""
  if config.distributed.coordinator_address:
    return True
  return int(os.environ.get("SLURM_NTASKS", "1") or 1) > 1


def initialize(config: ml_collections.ConfigDict) -> None:
  """Starts ``jax.distributed`` when :func:`wanted` (module docstring); idempotent.

  Must run before the first JAX computation of the process.
  """
  if not wanted(config) or jax.distributed.is_initialized():
    return
  # CPUs need a collectives library for computations that span processes.
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  d = config.distributed
  if d.coordinator_address:
    jax.distributed.initialize(coordinator_address=d.coordinator_address,
                               num_processes=d.num_processes, process_id=d.process_id)
  else:
    jax.distributed.initialize()  # SLURM: everything from its environment


def several() -> bool:
  """Whether this run spans several processes."""
  return jax.process_count() > 1


def is_writer() -> bool:
  """Whether this process writes the run's files (process 0)."""
  return jax.process_index() == 0


def barrier(name: str) -> None:
  """Waits until every process gets here (nothing to wait for with one process)."""
  if several():
    multihost_utils.sync_global_devices(name)


@contextlib.contextmanager
def writer_only(context) -> Iterator[None]:
  """``context`` on the writing process, nothing on the others."""
  if is_writer():
    with context:
      yield
  else:
    yield


def artifact_dir(path: pathlib.Path) -> pathlib.Path:
  """``path`` for the writer; a throw-away folder for the other processes."""
  if is_writer():
    return path
  scratch = pathlib.Path(tempfile.gettempdir()) / f"sparsejax-p{jax.process_index()}" / path.name
  scratch.mkdir(parents=True, exist_ok=True)
  return scratch
