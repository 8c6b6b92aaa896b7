"""W5 (benchmarks/w5_lenet5.py) and the seed-sweep benchmark at a tiny size, without
the peer: they run and report."""

import json
import subprocess
import sys

import pytest

from tests.test_cli import REPO, clean_env


@pytest.mark.slow  # about a minute: three programs compiled in a subprocess
def test_w5_runs_at_a_tiny_size():
  done = subprocess.run(
      [sys.executable, "benchmarks/w5_lenet5.py", "--steps", "2", "--repeats", "1", "--no-peer"],
      cwd=REPO, env=clean_env(), capture_output=True, text=True, timeout=600)
  assert done.returncode == 0, done.stderr[-3000:]
  rows = [json.loads(line) for line in done.stdout.splitlines()]
  runs = [r for r in rows if r.get("impl") == "jax-lax-scan"]
  assert [r["workload"] for r in runs] == [
      "W5_lenet5_caffe", "W5_bmrs_lenet5/per_batch", "W5_bmrs_lenet5/per_element"]
  for run in runs:
    assert run["ms_per_step"] > 0
    assert run["loss"] == pytest.approx(2.3, abs=0.5)  # ten random classes: about ln 10
  noise = rows[-1]
  assert noise["workload"] == "W5_bmrs_lenet5_noise" and noise["per_element_over_per_batch"] > 0


def test_unknown_cases_are_named():
  done = subprocess.run(
      [sys.executable, "benchmarks/w5_lenet5.py", "--cases", "lenet7", "--no-peer"],
      cwd=REPO, env=clean_env(), capture_output=True, text=True, timeout=120)
  assert done.returncode != 0 and "lenet7" in done.stderr and "lenet5_caffe" in done.stderr


@pytest.mark.slow  # about a minute: two cases, each vmapped and one seed at a time
def test_seed_sweeps_benchmark_runs_at_a_tiny_size():
  done = subprocess.run(
      [sys.executable, "benchmarks/seed_sweeps.py", "--seeds", "2", "--steps", "2", "--repeats",
       "1", "--cases", "lenet_300_100,lenet5_caffe"],
      cwd=REPO, env=clean_env(), capture_output=True, text=True, timeout=600)
  assert done.returncode == 0, done.stderr[-3000:]
  rows = [json.loads(line) for line in done.stdout.splitlines()]
  assert [r["workload"] for r in rows] == ["seed_sweep_lenet_300_100", "seed_sweep_lenet5_caffe"]
  for row in rows:
    assert row["vmapped_ms_per_seed_step"] > 0 and row["sequential_ms_per_seed_step"] > 0
    assert row["vmapped_over_sequential"] == pytest.approx(
        row["vmapped_ms_per_seed_step"] / row["sequential_ms_per_seed_step"], rel=0.01)
