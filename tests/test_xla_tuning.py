"""sparsejax.xla_tuning: measuring XLA's CPU options and keeping the winner."""

import json
import os
import subprocess
import sys

import pytest

from sparsejax import xla_flags, xla_tuning
from tests.conftest import REPO

YNN = xla_tuning.YNN


def medians(**candidates):
  return {name: dict(zip(xla_tuning.PROBES, times)) for name, times in candidates.items()}


def test_the_fastest_candidate_wins_only_by_the_margin_and_on_no_probe_slower():
  winner, scores = xla_tuning.choose(
      medians(xla_default=(1.0, 1.0, 1.0), ynn_dot=(0.5, 1.0, 1.0), ynn_off=(0.9, 0.9, 0.9)),
      margin=0.05)
  assert winner == "ynn_dot"
  assert scores["xla_default"] == pytest.approx(1.0)
  assert scores["ynn_dot"] == pytest.approx(0.5 ** (1 / 3))
  # A large gain on one probe does not buy a loss beyond the margin on another.
  winner, _ = xla_tuning.choose(
      medians(xla_default=(1.0, 1.0, 1.0), ynn_dot=(0.5, 1.2, 1.0), ynn_off=(0.97, 0.97, 0.97)),
      margin=0.05)
  assert winner == "xla_default"
  winner, _ = xla_tuning.choose(
      medians(xla_default=(1.0, 1.0, 1.0), ynn_dot=(0.5, 1.2, 1.0), ynn_off=(0.9, 0.93, 0.92)),
      margin=0.05)
  assert winner == "ynn_off"


def test_a_candidates_flags_keep_the_callers_device_count_and_replace_the_options():
  env = {"XLA_FLAGS": f"--{xla_flags.DEVICE_COUNT}=3 --{YNN}=dot --xla_other=1"}
  assert xla_tuning.flags_for({}, env) == f"--{xla_flags.DEVICE_COUNT}=3 --xla_other=1"
  assert xla_tuning.flags_for({YNN: ""}, env) == (
      f"--{xla_flags.DEVICE_COUNT}=3 --xla_other=1 --{YNN}=")
  cores = xla_flags.host_device_count()
  assert xla_tuning.flags_for({YNN: "dot"}, {}) == (
      f"--{xla_flags.DEVICE_COUNT}={cores} --{YNN}=dot")


def test_bad_candidates_are_named():
  with pytest.raises(SystemExit):
    xla_tuning.main(["--candidates", "ynn_dot,fastest"])
  with pytest.raises(SystemExit):
    xla_tuning.main(["--candidates", "ynn_dot"])  # XLA's default is the yardstick


@pytest.mark.slow
def test_the_command_measures_each_candidate_and_writes_the_cache(tmp_path):
  cache = tmp_path / "options.json"
  env = dict(os.environ, **{xla_flags.CACHE_VARIABLE: str(cache)})
  done = subprocess.run(
      [sys.executable, "-m", "sparsejax.xla_tuning", "--rounds", "1",
       "--candidates", "xla_default,ynn_dot"],
      cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
  assert done.returncode == 0, done.stderr[-3000:]
  assert "chosen for" in done.stdout
  entries = json.loads(cache.read_text())
  (key, entry), = entries.items()
  signature = xla_flags.cpu_signature()
  assert signature["model"] in key and f"jaxlib {'%d.%d' % xla_flags.jaxlib_version()}" in key
  assert entry["options"] in ({}, {YNN: "dot"})
  seconds = entry["measured"]["median_seconds"]
  assert set(seconds) == {"xla_default", "ynn_dot"}
  assert all(0 < seconds[c][p] < 60 for c in seconds for p in xla_tuning.PROBES)
  assert xla_flags.cpu_options(xla_flags.jaxlib_version(), signature, env) == entry["options"]
