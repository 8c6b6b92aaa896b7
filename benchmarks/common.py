"""Shared pieces of the side-by-side benchmarks (shared BENCHMARKS.md).

Each benchmark runs one workload in sparsejax and its PyTorch peer (from the
shared ``peers/`` folder, in a separate Python environment) in the same
invocation, alternating the repeats, and prints one JSON line per
implementation (medians over the repeats) and one line of ratios.

The peers' environment: ``python3 -m venv benchmarks/.torch-venv &&
benchmarks/.torch-venv/bin/pip install torch==2.13.0 numpy``.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import statistics
import subprocess
import sys
import time
from typing import Any, Callable, Iterable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from sparsejax import xla_flags
from sparsejax.data import read_image_dataset

# The benchmarks time sparsejax as its command line runs it, with the XLA CPU options of
# sparsejax.xla_flags (W5), set here before the first JAX computation.
xla_flags.apply()

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
#: Parameters of LeNet-300-100 (784*300 + 300 + 300*100 + 100 + 100*10 + 10).
LENET300_PARAMS = 266_610

Pair = tuple[jax.Array, jax.Array]


def parser(description: str, peer: str) -> argparse.ArgumentParser:
  """The command line every benchmark shares; ``peer`` is the peer's file name.

  Options: ``--repeats``, ``--torch-python`` (the peer environment's Python),
  ``--peer`` (the peer script), ``--peer-threads`` (``OMP_NUM_THREADS`` for the
  peer; by default unset, the peer as written) and ``--mnist-dir`` (the
  original MNIST files).
  """
  p = argparse.ArgumentParser(description=description)
  p.add_argument("--repeats", type=int, default=3,
                 help="alternating JAX / peer repeats; the figures are medians")
  p.add_argument("--torch-python",
                 default=os.fspath(REPO / "benchmarks/.torch-venv/bin/python"))
  p.add_argument("--peer", default=os.fspath(SHARED / "peers" / peer))
  p.add_argument("--peer-threads", type=int, default=None,
                 help="OMP_NUM_THREADS for the peer (default: unset, torch's own choice)")
  p.add_argument("--mnist-dir", default=os.fspath(
      pathlib.Path(os.environ.get("SPARSEJAX_DATA_DIR", SHARED / "data")) / "mnist"))
  return p


def listed(p: argparse.ArgumentParser, option: str, value: str,
           accepted: Iterable[str]) -> list[str]:
  """The comma-separated entries of ``value``; a parser error names unknown ones.

  Args:
    p: the parser (for the error).
    option: the option's name, as the user typed it (``"--dtypes"``).
    value: its value.
    accepted: the accepted entries.
  """
  entries, accepted = value.split(","), list(accepted)
  unknown = sorted(set(entries) - set(accepted))
  if unknown:
    p.error(f"{option}: unknown {unknown}; accepted: {', '.join(accepted)}")
  return entries


def first_mnist_images(n: int, manual_dir: os.PathLike | str) -> tuple[Pair, Pair]:
  """The first ``n`` official MNIST training images and the 10,000 test images.

  Images are float32 in ``[0, 1]``, ``pixel / 255`` divided on the host as the
  peers do (bit for bit the peers' inputs; XLA's division may differ by an
  ulp), in the order of the original files; labels int32; all on the device.

  Returns:
    ``((x_train, y_train), (x_test, y_test))``.
  """
  arrays = read_image_dataset("mnist", manual_dir=pathlib.Path(manual_dir))

  def pair(images, labels):
    return (jnp.asarray(np.asarray(images, np.float32) / np.float32(255)),
            jnp.asarray(labels, jnp.int32))

  return (pair(arrays.train_images[:n], arrays.train_labels[:n]),
          pair(arrays.test_images, arrays.test_labels))


def timed(fn: Callable, *args) -> tuple[Any, float]:
  """``(fn(*args), seconds)``, blocking until the result is ready."""
  start = time.perf_counter()
  out = jax.block_until_ready(fn(*args))
  return out, time.perf_counter() - start


def median_time(fn: Callable, *args, times: int = 3) -> float:
  """Median seconds of ``times`` blocking calls of ``fn(*args)``."""
  return statistics.median(timed(fn, *args)[1] for _ in range(times))


def matmul_gflops(n: int = 2048, times: int = 11, dtype=jnp.float32) -> float:
  """The matrix-product rate in ``dtype``, GFLOP/s: median of ``times`` ``n x n`` products."""
  a = jax.random.normal(jax.random.key(1), (n, n), dtype)
  b = jax.random.normal(jax.random.key(2), (n, n), dtype)
  product = jax.jit(jnp.matmul)
  timed(product, a, b)  # Compiles.
  return 2 * n**3 / median_time(product, a, b, times=times) / 1e9


def run_peer(torch_python: str, peer: os.PathLike | str, *args: str,
             threads: int | None = None) -> dict:
  """Runs a PyTorch peer once and returns its JSON line.

  Args:
    torch_python: the Python of the peer's environment.
    peer: the peer script.
    *args: its command-line arguments.
    threads: ``OMP_NUM_THREADS`` for the peer, or ``None`` to leave it unset.

  Raises:
    RuntimeError: the peer failed (its stderr is in the message).
  """
  env = dict(os.environ)
  if threads is not None:
    env["OMP_NUM_THREADS"] = str(threads)
  done = subprocess.run([torch_python, os.fspath(peer), *args], capture_output=True,
                        text=True, check=False, env=env)
  if done.returncode != 0:
    raise RuntimeError(f"peer {peer} failed ({done.returncode}):\n{done.stderr}")
  return json.loads(done.stdout.strip().splitlines()[-1])


def median(values: Iterable[float], digits: int = 4) -> float:
  """The median, rounded to ``digits`` decimals."""
  return round(statistics.median(values), digits)


def median_row(rows: Sequence[dict], fields: Sequence[str]) -> dict:
  """The last of ``rows`` with each of ``fields`` replaced by its median over all rows.

  Adds ``repeats`` and, for each field, ``<field>_all`` (every repeat's value).
  """
  row = dict(rows[-1], repeats=len(rows))
  for field in fields:
    row[field] = median(r[field] for r in rows)
    row[f"{field}_all"] = [r[field] for r in rows]
  return row


def loadavg() -> list[float]:
  """``os.getloadavg()`` rounded (1, 5 and 15 minutes)."""
  return [round(v, 2) for v in os.getloadavg()]


def machine() -> dict:
  """Cores, CPU model, JAX version and device of this machine."""
  model = platform.processor() or "unknown"
  try:
    with open("/proc/cpuinfo") as f:
      model = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
  except (OSError, StopIteration):
    pass
  return dict(nproc=len(os.sched_getaffinity(0)), cpu=model, jax=jax.__version__,
              device=str(jax.devices()[0].device_kind))


def emit(**fields) -> None:
  """Prints one JSON line and flushes."""
  print(json.dumps(fields))
  sys.stdout.flush()


def wait_for_processes(pattern: str, poll_s: float = 30.0, log: bool = True) -> float:
  """Waits until no process matches ``pgrep -f pattern`` (other than this one).

  Args:
    pattern: the extended regular expression for ``pgrep -f``.
    poll_s: seconds between checks.
    log: print one line to stderr when waiting starts.

  Returns:
    The seconds waited.
  """
  start = time.perf_counter()
  announced = False
  while True:
    done = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True, check=False)
    others = [p for p in done.stdout.split() if int(p) != os.getpid()]
    if not others:
      return time.perf_counter() - start
    if log and not announced:
      print(f"waiting for processes matching {pattern!r}: {' '.join(others)}", file=sys.stderr)
      announced = True
    time.sleep(poll_s)
