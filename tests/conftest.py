"""Test configuration: four fake CPU devices and the location of real data.

The data sets are found through one setting, the environment variable
``SPARSEJAX_DATA_DIR`` (default ``../shared/data`` beside the repository).
Tests that need a data set skip, with the reason, where it is absent.
"""

import atexit
import os
import pathlib
import shutil
import tempfile

# Must be set before JAX initialises its backend.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

# One persistent XLA compilation cache per test session, unless the caller
# names its own. Set before JAX is imported, in the environment, so that the
# pytest-xdist workers and the subprocesses the tests start inherit it: the
# many small runs of one configuration across tests then compile once (the
# runner builds new closures per run, which JAX's in-memory cache cannot
# share). JAX writes an entry in place, so a worker may read one that another
# is still writing: JAX then warns and compiles it itself (pyproject.toml
# filters that warning). A size limit would make JAX lock the folder, but
# it then totals the folder's size at every write, which costs more than
# the cache saves. The process that made the folder removes it at exit.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
  _XLA_CACHE = tempfile.mkdtemp(prefix="sparsejax-tests-xla-cache-")
  os.environ["JAX_COMPILATION_CACHE_DIR"] = _XLA_CACHE
  os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
  atexit.register(shutil.rmtree, _XLA_CACHE, ignore_errors=True)

# The tests compute with the command line's XLA CPU options, so that a run in this
# process and one of ``python -m sparsejax.main`` give the same numbers (imported here,
# after the settings above, which JAX reads when it is imported).
from sparsejax import xla_flags  # noqa: E402

xla_flags.apply()

import pytest  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]
DATA_DIR = pathlib.Path(os.environ.get("SPARSEJAX_DATA_DIR", REPO.parent / "shared" / "data"))


def data_path(name: str) -> pathlib.Path:
  """Folder of the original files of data set ``name``; skips if absent."""
  path = DATA_DIR / name
  if not path.is_dir():
    if os.environ.get("SPARSEJAX_REQUIRE_DATA"):
      pytest.fail(f"data set {name!r} not found in {path}, and SPARSEJAX_REQUIRE_DATA is set")
    pytest.skip(f"data set {name!r} not found in {path} (set SPARSEJAX_DATA_DIR)")
  return path


@pytest.fixture
def mnist_dir() -> pathlib.Path:
  return data_path("mnist")


@pytest.fixture
def fashion_mnist_dir() -> pathlib.Path:
  return data_path("fashion_mnist")
