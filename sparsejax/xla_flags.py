"""XLA CPU options sparsejax sets before JAX starts its backends.

XLA's CPU compiler hands convolutions, dots, reductions and element-wise ops
to the YNNPACK library when ``--xla_cpu_experimental_ynn_fusion_type`` lists
their kind, and which choice is fastest depends on the processor. On the
2-core Intel Xeon (AVX-512) where sparsejax's CNN steps were first profiled
(``docs/benchmarks.md``, W5), one YNNPACK convolution, the kernel gradient of
the BMRS LeNet-5's first convolution, took 6.4 ms of a step of about 20 ms;
with ``dot`` only (YNNPACK keeps the matrix products) a LeNet-5-Caffe step
went from 44 to 31 ms. On the 2-core AMD EPYC (Zen 4) of issue 40 YNNPACK
off entirely was fastest (a vmapped seed sweep 1.2x, a dense step with a
penalty 1.1x faster than with ``dot``; ``docs/benchmarks.md``, "XLA options
per machine"). The options are therefore chosen per machine
(:func:`cpu_options`), first match wins:

1. the options cache (:func:`cache_path`), which ``python -m
   sparsejax.xla_tuning`` writes after measuring the candidates on this exact
   CPU model and jaxlib;
2. :data:`MEASURED`, the choices measured on each kind of CPU (vendor and
   vector width) for a jaxlib version;
3. nothing: XLA's own defaults, for a CPU or jaxlib nobody measured.

:func:`apply` adds them to ``XLA_FLAGS`` when it is safe:

* never over the user's own value of the same option;
* only for the jaxlib version the options were measured on: an option XLA
  does not know is a fatal error when the backend starts;
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
import json
import os
import pathlib
import platform
from typing import Mapping, MutableMapping

YNN = "xla_cpu_experimental_ynn_fusion_type"
#: ``(vendor, vector width) -> options``, measured on that kind of CPU with the
#: jaxlib versions of :data:`VERIFIED_JAXLIB` (docs/benchmarks.md: W5 for the
#: Intel Xeon, "XLA options per machine" for the AMD EPYC).
MEASURED = {
    ("GenuineIntel", "avx512"): {YNN: "dot"},
    ("AuthenticAMD", "avx512"): {YNN: ""},  # every YNNPACK fusion off
}
#: jaxlib (major, minor) versions the :data:`MEASURED` options were measured on.
VERIFIED_JAXLIB = ((0, 10),)
#: The environment variable naming the options cache file.
CACHE_VARIABLE = "SPARSEJAX_XLA_OPTIONS_CACHE"
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


def cpu_signature(cpuinfo: str | None = None) -> dict[str, str]:
  """``{"vendor", "model", "vector_width"}`` of this machine's CPU.

  From ``/proc/cpuinfo`` (or the text given): the vendor id, the model name,
  and the widest vector extension among ``avx512`` (``avx512f``), ``avx2``,
  ``sse`` and ``neon`` (``asimd``); ``"unknown"`` where it cannot be read.
  """
  if cpuinfo is None:
    try:
      cpuinfo = pathlib.Path("/proc/cpuinfo").read_text()
    except OSError:
      cpuinfo = ""
  fields: dict[str, str] = {}
  for line in cpuinfo.splitlines():
    name, sep, value = line.partition(":")
    if sep:
      fields.setdefault(name.strip().lower(), value.strip())
  flags = set((fields.get("flags") or fields.get("features") or "").split())
  width = ("avx512" if "avx512f" in flags else "avx2" if "avx2" in flags
           else "neon" if "asimd" in flags else "sse" if "sse2" in flags else "unknown")
  return {"vendor": fields.get("vendor_id") or fields.get("cpu implementer") or "unknown",
          "model": fields.get("model name") or platform.processor() or "unknown",
          "vector_width": width}


def cache_path(environ: Mapping[str, str] = os.environ) -> pathlib.Path:
  """The options cache: ``$SPARSEJAX_XLA_OPTIONS_CACHE``, else
  ``$XDG_CACHE_HOME/sparsejax/xla_options.json`` (``~/.cache`` by default)."""
  if environ.get(CACHE_VARIABLE):
    return pathlib.Path(environ[CACHE_VARIABLE])
  base = environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  return pathlib.Path(base) / "sparsejax" / "xla_options.json"


def _cache_key(signature: Mapping[str, str], version: tuple[int, int] | None) -> str:
  return "|".join([signature["vendor"], signature["model"], signature["vector_width"],
                   "jaxlib %d.%d" % version if version else "jaxlib unknown"])


def read_cache(path: pathlib.Path) -> dict:
  """The cache's entries, ``{}`` when it is absent or unreadable (it is only a cache)."""
  try:
    entries = json.loads(path.read_text())
  except (OSError, ValueError):
    return {}
  return entries if isinstance(entries, dict) else {}


def record_choice(options: Mapping[str, str], signature: Mapping[str, str], *, measured: dict,
                  version: tuple[int, int] | None = None,
                  environ: Mapping[str, str] = os.environ) -> pathlib.Path:
  """Writes ``options`` as this CPU model's and jaxlib's choice into the cache; its path."""
  version = jaxlib_version() if version is None else version
  path = cache_path(environ)
  entries = read_cache(path)
  entries[_cache_key(signature, version)] = {"options": dict(options), "measured": measured}
  path.parent.mkdir(parents=True, exist_ok=True)
  partial = path.with_name(path.name + ".partial")
  partial.write_text(json.dumps(entries, indent=1, sort_keys=True))
  partial.replace(path)
  return path


def cpu_options(version: tuple[int, int] | None, signature: Mapping[str, str],
                environ: Mapping[str, str] = os.environ) -> dict[str, str]:
  """The options for this CPU and jaxlib: the cache's, else :data:`MEASURED`'s, else none."""
  entry = read_cache(cache_path(environ)).get(_cache_key(signature, version))
  if isinstance(entry, dict) and isinstance(entry.get("options"), dict):
    return {str(k): str(v) for k, v in entry["options"].items()}
  if version in VERIFIED_JAXLIB:
    return dict(MEASURED.get((signature["vendor"], signature["vector_width"]), {}))
  return {}


def apply(environ: MutableMapping[str, str] = os.environ,
          version: tuple[int, int] | None = None, devices: int | None = None,
          signature: Mapping[str, str] | None = None) -> list[str]:
  """Appends the options the user has not set to ``environ["XLA_FLAGS"]``: one CPU device
  per core (:data:`DEVICE_COUNT`, with more than one core), and the options chosen for
  this CPU and jaxlib (:func:`cpu_options`).

  Args:
    environ: the environment to update (and read the cache's location from).
    version: jaxlib's ``(major, minor)``; by default the installed one.
    devices: the CPU devices to make; by default :func:`host_device_count`.
    signature: the CPU (:func:`cpu_signature`); by default this machine's.

  Returns:
    The flags added.
  """
  version = jaxlib_version() if version is None else version
  devices = host_device_count() if devices is None else devices
  signature = cpu_signature() if signature is None else signature
  options: dict = {DEVICE_COUNT: devices} if devices > 1 else {}
  options.update(cpu_options(version, signature, environ))
  present = environ.get("XLA_FLAGS", "")
  added = [f"--{name}={value}" for name, value in options.items()
           if f"--{name}=" not in present]
  if added:
    environ["XLA_FLAGS"] = " ".join([present, *added]).strip()
  return added
