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

Importing sparsejax changes no process-wide setting, this one included. The
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


def jaxlib_version() -> tuple[int, int] | None:
  """The installed jaxlib's ``(major, minor)``, or ``None`` if unknown."""
  try:
    major, minor = importlib.metadata.version("jaxlib").split(".")[:2]
    return int(major), int(minor)
  except (importlib.metadata.PackageNotFoundError, ValueError):
    return None


def apply(environ: MutableMapping[str, str] = os.environ,
          version: tuple[int, int] | None = None) -> list[str]:
  """Appends the :data:`CPU_OPTIONS` the user has not set to ``environ["XLA_FLAGS"]``.

  Args:
    environ: the environment to update.
    version: jaxlib's ``(major, minor)``; by default the installed one.

  Returns:
    The flags added (none for an unverified jaxlib).
  """
  version = jaxlib_version() if version is None else version
  if version not in VERIFIED_JAXLIB:
    return []
  present = environ.get("XLA_FLAGS", "")
  added = [f"--{name}={value}" for name, value in CPU_OPTIONS.items()
           if f"--{name}=" not in present]
  if added:
    environ["XLA_FLAGS"] = " ".join([present, *added]).strip()
  return added
