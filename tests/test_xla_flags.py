"""sparsejax.xla_flags: the CPU options added to XLA_FLAGS, only when safe."""

import os

from sparsejax import xla_flags

FLAG = "--xla_cpu_experimental_ynn_fusion_type"


def test_added_for_a_verified_jaxlib_beside_other_flags():
  env = {"XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
  added = xla_flags.apply(env, version=xla_flags.VERIFIED_JAXLIB[0])
  assert added == [f"{FLAG}=dot"]
  assert env["XLA_FLAGS"] == f"--xla_force_host_platform_device_count=4 {FLAG}=dot"
  assert xla_flags.apply(env, version=xla_flags.VERIFIED_JAXLIB[0]) == []  # idempotent


def test_the_users_value_wins_and_unverified_versions_are_left_alone():
  env = {"XLA_FLAGS": f"{FLAG}=individual_dot"}
  assert xla_flags.apply(env, version=xla_flags.VERIFIED_JAXLIB[0]) == []
  assert env["XLA_FLAGS"] == f"{FLAG}=individual_dot"
  env = {}
  assert xla_flags.apply(env, version=(0, 6)) == [] and env == {}


def test_importing_sparsejax_set_it_in_this_process():
  if xla_flags.jaxlib_version() in xla_flags.VERIFIED_JAXLIB:
    assert f"{FLAG}=" in os.environ["XLA_FLAGS"]
