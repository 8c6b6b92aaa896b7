"""XLA CPU options sparsejax sets before JAX starts its backends.

XLA's CPU compiler hands convolutions, dots, reductions and element-wise ops
to the YNNPACK library when ``--xla_cpu_experimental_ynn_fusion_type`` lists
their kind. Its default includes the convolutions, whose YNNPACK versions are
the slowest part of a small CNN's train step on the CPU. Profiled with
``jax.profiler`` on the 2-core machine (``docs/benchmarks.md``, W5): one
YNNPACK convolution, the kernel gradient of the BMRS LeNet-5's first
convolution (one input channel), took 6.4 ms of a step of about 20 ms; with
``dot`` only (YNNPACK keeps the matrix products and their element-wise
neighbours) no convolution took more than 2.3 ms, a LeNet-5-Caffe step went
from 44 to 31 ms and a BMRS LeNet-5 step from 19 to 12.5 ms (single steps,
indicative), and LeNet-300-100 and VGG-16 steps did not change.

:func:`apply` adds the option to ``XLA_FLAGS`` when it can matter and is
safe:

* only for the jaxlib versions it was measured on (:data:`VERIFIED_JAXLIB`):
  an option XLA does not know is a fatal error when the backend starts;
* never over the user's own value of the same option;
* only before JAX has started its backends (XLA reads ``XLA_FLAGS`` once):
  call it before the first JAX computation, or set the option yourself.

It also gives XLA one CPU device per core the process may use
(``--xla_force_host_platform_device_count``, :func:`host_device_count`),
unless the user set a count: XLA:CPU runs one device's small operations on
about one core, so a vmapped seed sweep of small networks left the other
cores idle, and the runner's ``parallel="auto"`` splits a sweep's seeds over
these devices (:func:`sparsejax.runner.program.layout_of`). A program on one
device (one seed, or the ``jax.jit`` of a user's own step) is unchanged:
its operations still use every core through XLA's thread pool. This option
is known to every jaxlib, so it is set whatever the version.

Importing sparsejax changes no process-wide setting, these included. The
command line (``python -m sparsejax.main``), the studies that train
(``rerun``, ``bmrs_posthoc``, ``deephoyer_tune``, ``l0_bisection``) and the
benchmarks call :func:`apply` before JAX starts; a library user opts in the
same way, so that their own process computes as the command line does::

  import sparsejax
  sparsejax.xla_flags.apply()   # before the first JAX computation
"""

from __future__ import annotations

import importlib.metadata
import os
from typing import MutableMapping

#: The CPU options and their values.
CPU_OPTIONS = {"xla_cpu_experimental_ynn_fusion_type": "dot"}
#: jaxlib (major, minor) versions the options were measured on.
VERIFIED_JAXLIB = ((0, 10),)
#: The option that sets how many CPU devices XLA makes.
DEVICE_COUNT = "xla_force_host_platform_device_count"


def host_device_count() -> int:
  """The cores this process may run on (its CPU affinity; all cores where unknown)."""
  try:
    return len(os.sched_getaffinity(0))
  except AttributeError:  # not on Linux
    return os.cpu_count() or 1


def jaxlib_version() -> tuple[int, int] | None:
  """The installed jaxlib's ``(major, minor)``, or ``None`` if unknown."""
  try:
    major, minor = importlib.metadata.version("jaxlib").split(".")[:2]
    return int(major), int(minor)
  except (importlib.metadata.PackageNotFoundError, ValueError):
    return None


def apply(environ: MutableMapping[str, str] = os.environ,
          version: tuple[int, int] | None = None, devices: int | None = None) -> list[str]:
  """Appends the options the user has not set to ``environ["XLA_FLAGS"]``: one CPU device
  per core (:data:`DEVICE_COUNT`, with more than one core), and the :data:`CPU_OPTIONS`
  for a verified jaxlib.

  Args:
    environ: the environment to update.
    version: jaxlib's ``(major, minor)``; by default the installed one.
    devices: the CPU devices to make; by default :func:`host_device_count`.

  Returns:
    The flags added.
  """
  version = jaxlib_version() if version is None else version
  devices = host_device_count() if devices is None else devices
  options = {DEVICE_COUNT: devices} if devices > 1 else {}
  if version in VERIFIED_JAXLIB:
    options.update(CPU_OPTIONS)
  present = environ.get("XLA_FLAGS", "")
  added = [f"--{name}={value}" for name, value in options.items()
           if f"--{name}=" not in present]
  if added:
    environ["XLA_FLAGS"] = " ".join([present, *added]).strip()
  return added
