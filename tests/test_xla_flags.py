"""sparsejax.xla_flags: the CPU options added to XLA_FLAGS, only when safe and only when asked.

Importing sparsejax changes no environment variable; the command line applies the
options itself before JAX starts a backend.
"""

import os
import subprocess
import sys

from sparsejax import xla_flags
from tests.conftest import REPO

FLAG = "--xla_cpu_experimental_ynn_fusion_type"


COUNT = "--xla_force_host_platform_device_count"


def test_added_for_a_verified_jaxlib_beside_other_flags():
  env = {"XLA_FLAGS": f"{COUNT}=4"}
  added = xla_flags.apply(env, version=xla_flags.VERIFIED_JAXLIB[0], devices=2)
  assert added == [f"{FLAG}=dot"]  # the user's device count wins
  assert env["XLA_FLAGS"] == f"{COUNT}=4 {FLAG}=dot"
  assert xla_flags.apply(env, version=xla_flags.VERIFIED_JAXLIB[0]) == []  # idempotent


def test_one_cpu_device_per_core_whatever_the_version():
  env = {}
  assert xla_flags.apply(env, version=xla_flags.VERIFIED_JAXLIB[0], devices=2) == [
      f"{COUNT}=2", f"{FLAG}=dot"]
  env = {}
  assert xla_flags.apply(env, version=(0, 6), devices=8) == [f"{COUNT}=8"]
  env = {}
  assert xla_flags.apply(env, version=(0, 6), devices=1) == [] and env == {}  # one core
  assert xla_flags.host_device_count() == len(os.sched_getaffinity(0))


def test_the_users_value_wins_and_unverified_versions_are_left_alone():
  env = {"XLA_FLAGS": f"{FLAG}=individual_dot"}
  assert xla_flags.apply(env, version=xla_flags.VERIFIED_JAXLIB[0], devices=1) == []
  assert env["XLA_FLAGS"] == f"{FLAG}=individual_dot"
  env = {}
  assert xla_flags.apply(env, version=(0, 6), devices=1) == [] and env == {}


def python(code: str) -> str:
  """Runs ``code`` in a fresh interpreter (repository root, no XLA_FLAGS); its stdout."""
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  done = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True,
                        text=True, timeout=300)
  assert done.returncode == 0, done.stderr[-3000:]
  return done.stdout


def test_importing_sparsejax_changes_no_environment_and_starts_no_backend():
  # jax sets a few variables of its own when imported: the snapshot is taken after it.
  out = python(
      "import os, sys\n"
      "import jax\n"
      "from jax._src import xla_bridge\n"
      "before = dict(os.environ)\n"
      "import sparsejax\n"
      "changed = sorted(k for k in set(before) | set(os.environ)\n"
      "                 if before.get(k) != os.environ.get(k))\n"
      "print(changed, xla_bridge.backends_are_initialized(), 'tensorflow' in sys.modules)\n")
  assert out.split() == ["[]", "False", "False"]


def test_the_command_line_applies_it_before_jax_starts():
  # python -m sparsejax.main, stopped where absl would start main(): the options are set
  # and no JAX backend has started yet.
  out = python(
      "import os, runpy, sys\n"
      "from absl import app\n"
      "from jax._src import xla_bridge\n"
      "app.run = lambda *args, **kwargs: print(os.environ.get('XLA_FLAGS', ''), '|',\n"
      "                                        xla_bridge.backends_are_initialized())\n"
      "sys.argv = ['sparsejax.main']\n"
      "runpy.run_module('sparsejax.main', run_name='__main__')\n")
  flags, started = out.split("|")
  assert started.split() == ["False"]
  cores = xla_flags.host_device_count()
  expected = [f"{COUNT}={cores}"] if cores > 1 else []
  if xla_flags.jaxlib_version() in xla_flags.VERIFIED_JAXLIB:
    expected.append(f"{FLAG}=dot")
  assert flags.split() == expected
