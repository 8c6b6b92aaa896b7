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
VERIFIED = xla_flags.VERIFIED_JAXLIB[0]
XEON = {"vendor": "GenuineIntel", "model": "Intel(R) Xeon(R) CPU @ 2.20GHz",
        "vector_width": "avx512"}
UNMEASURED = {"vendor": "GenuineIntel", "model": "Intel(R) Core(TM) i5", "vector_width": "avx2"}


def no_cache(tmp_path) -> dict:
  """An environment whose options cache is an absent file under ``tmp_path``."""
  return {xla_flags.CACHE_VARIABLE: str(tmp_path / "absent.json")}


def test_added_for_a_verified_jaxlib_beside_other_flags(tmp_path):
  env = {"XLA_FLAGS": f"{COUNT}=4", **no_cache(tmp_path)}
  added = xla_flags.apply(env, version=VERIFIED, devices=2, signature=XEON)
  assert added == [f"{FLAG}=dot"]  # the user's device count wins
  assert env["XLA_FLAGS"] == f"{COUNT}=4 {FLAG}=dot"
  assert xla_flags.apply(env, version=VERIFIED, signature=XEON) == []  # idempotent


def test_one_cpu_device_per_core_whatever_the_version(tmp_path):
  env = no_cache(tmp_path)
  assert xla_flags.apply(env, version=VERIFIED, devices=2, signature=XEON) == [
      f"{COUNT}=2", f"{FLAG}=dot"]
  env = no_cache(tmp_path)
  assert xla_flags.apply(env, version=(0, 6), devices=8, signature=XEON) == [f"{COUNT}=8"]
  env = no_cache(tmp_path)
  assert xla_flags.apply(env, version=(0, 6), devices=1, signature=XEON) == []
  assert "XLA_FLAGS" not in env  # one core
  assert xla_flags.host_device_count() == len(os.sched_getaffinity(0))


def test_the_users_value_wins_and_unverified_versions_are_left_alone(tmp_path):
  env = {"XLA_FLAGS": f"{FLAG}=individual_dot", **no_cache(tmp_path)}
  assert xla_flags.apply(env, version=VERIFIED, devices=1, signature=XEON) == []
  assert env["XLA_FLAGS"] == f"{FLAG}=individual_dot"
  env = no_cache(tmp_path)
  assert xla_flags.apply(env, version=(0, 6), devices=1, signature=XEON) == []
  assert "XLA_FLAGS" not in env


def test_a_cpu_nobody_measured_gets_xlas_defaults(tmp_path):
  env = no_cache(tmp_path)
  assert xla_flags.apply(env, version=VERIFIED, devices=1, signature=UNMEASURED) == []
  assert xla_flags.cpu_options(VERIFIED, UNMEASURED, env) == {}


def test_the_cache_of_this_cpu_model_and_jaxlib_wins_over_the_table(tmp_path):
  env = {xla_flags.CACHE_VARIABLE: str(tmp_path / "sub" / "options.json")}
  path = xla_flags.record_choice({}, XEON, measured={"scores": {}}, version=VERIFIED,
                                 environ=env)
  assert path == tmp_path / "sub" / "options.json"
  assert xla_flags.cpu_options(VERIFIED, XEON, env) == {}  # measured: XLA's defaults here
  xla_flags.record_choice({FLAG[2:]: "individual_dot"}, UNMEASURED, measured={},
                          version=VERIFIED, environ=env)
  assert xla_flags.cpu_options(VERIFIED, UNMEASURED, env) == {FLAG[2:]: "individual_dot"}
  assert xla_flags.cpu_options(VERIFIED, XEON, env) == {}  # the first entry is kept
  other_model = dict(XEON, model="Intel(R) Xeon(R) Platinum 8480")
  assert xla_flags.cpu_options(VERIFIED, other_model, env) == {FLAG[2:]: "dot"}  # the table
  assert xla_flags.cpu_options((0, 11), UNMEASURED, env) == {}  # another jaxlib: not this entry
  added = xla_flags.apply(env, version=VERIFIED, devices=1, signature=UNMEASURED)
  assert added == [f"{FLAG}=individual_dot"]


def test_a_damaged_cache_is_ignored(tmp_path):
  path = tmp_path / "options.json"
  path.write_text("{not json")
  env = {xla_flags.CACHE_VARIABLE: str(path)}
  assert xla_flags.cpu_options(VERIFIED, XEON, env) == {FLAG[2:]: "dot"}
  path.write_text("[1, 2]")
  assert xla_flags.cpu_options(VERIFIED, XEON, env) == {FLAG[2:]: "dot"}


def test_the_default_cache_lives_under_xdg_cache_home(tmp_path):
  assert xla_flags.cache_path({"XDG_CACHE_HOME": str(tmp_path)}) == (
      tmp_path / "sparsejax" / "xla_options.json")
  assert xla_flags.cache_path({}).parts[-3:] == (".cache", "sparsejax", "xla_options.json")


INTEL_CPUINFO = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) CPU @ 2.20GHz
flags\t\t: fpu sse sse2 avx avx2 avx512f avx512dq
processor\t: 1
vendor_id\t: GenuineIntel
"""
ARM_CPUINFO = """processor\t: 0
Features\t: fp asimd evtstrm aes pmull
CPU implementer\t: 0x41
"""


def test_cpu_signature_reads_vendor_model_and_vector_width():
  assert xla_flags.cpu_signature(INTEL_CPUINFO) == XEON
  assert xla_flags.cpu_signature(INTEL_CPUINFO.replace(" avx512f avx512dq", "")) == dict(
      XEON, vector_width="avx2")
  arm = xla_flags.cpu_signature(ARM_CPUINFO)
  assert arm["vendor"] == "0x41" and arm["vector_width"] == "neon"
  assert xla_flags.cpu_signature("")["vector_width"] == "unknown"
  here = xla_flags.cpu_signature()
  assert set(here) == {"vendor", "model", "vector_width"} and all(here.values())


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
  chosen = xla_flags.cpu_options(xla_flags.jaxlib_version(), xla_flags.cpu_signature())
  expected += [f"--{name}={value}" for name, value in chosen.items()]
  assert flags.split() == expected
