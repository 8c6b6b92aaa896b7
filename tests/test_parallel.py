"""Programs spread over several (fake CPU) devices: data parallelism and sharded seed sweeps.

Each run is a ``python -m sparsejax.main`` subprocess with its own device
count (``XLA_FLAGS=--xla_force_host_platform_device_count=N``), so one run
on 4 devices is compared with the same run on 1.
"""

import json
import signal
import socket
import subprocess
import sys
import time

import pandas as pd
import pytest

from tests.conftest import data_path
from tests.test_cli import REPO, assert_expected_failure, clean_env

#: LeNet-300-100 on 2,000 MNIST images for 2 epochs, then 1 finetuning epoch, data-parallel.
LENET300 = ("--config=configs/lenet300_mnist.py:none", "--config.train_set_size=2000",
            "--config.val_set_size=500", "--config.test_set_size=500",
            "--config.max_epochs=2", "--config.min_epochs=2", "--config.prune_window=1",
            "--config.finetuning_max_epochs=1", "--config.finetuning_min_epochs=1",
            "--config.train_batch_size=100", "--config.eval_batch_size=500",
            "--config.parallel=data", "--config.quiet=True")


def main(devices: int, workdir, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
  env = clean_env(XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
                  SPARSEJAX_DATA_DIR=str(data_path("mnist").parent))
  return subprocess.run([sys.executable, "-m", "sparsejax.main", *args, f"--workdir={workdir}"],
                        cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


def final_row(workdir) -> dict:
  return pd.read_csv(workdir / "runs.csv").iloc[-1].to_dict()


def compare(one: dict, four: dict, rtol: float) -> None:
  assert one["run_id"] == four["run_id"]  # the layout does not change what a run computes
  assert one["kept_params"] == four["kept_params"]
  for name in ("final_train_loss", "final_val_loss", "final_test_loss", "final_test_accuracy"):
    assert four[name] == pytest.approx(one[name], rel=rtol), name


@pytest.mark.slow
@pytest.mark.parametrize("dtype, rtol", [("float32", 1e-4), ("float64", 1e-10)])
def test_data_parallel_training_matches_one_device(tmp_path, dtype, rtol):
  rows = {}
  for devices in (1, 4):
    done = main(devices, tmp_path / str(devices), *LENET300, f"--config.dtype={dtype}")
    assert done.returncode == 0, done.stderr
    rows[devices] = final_row(tmp_path / str(devices))
  compare(rows[1], rows[4], rtol)


@pytest.mark.slow  # about 55 s on 2 busy cores: the default suite stays under 10 minutes
def test_the_batch_is_split_over_the_devices():
  """The compiled chunk of a 4-device run holds the gradient all-reduce, and the
  data and states live on all 4 devices."""
  script = f"""
import json, jax
from configs import lenet300_mnist
from sparsejax.runner.program import Program
from sparsejax.train import driver
config = lenet300_mnist.get_config("none")
config.manual_dir = {str(data_path("mnist"))!r}
config.train_set_size, config.val_set_size, config.test_set_size = 1000, 500, 500
config.train_batch_size = 100
config.parallel = "data"
program = Program(config, [42])
phase = program.plan.steps[0]
states = driver.start_states(program.initial_states(), phase)
carry = driver.init_carry(program.program, phase, states, {{}}, phase.optimizer)
keys = jax.vmap(jax.random.key)(jax.numpy.arange(1))
chunk = driver._chunk_fn(program.program, phase, 1)
hlo = chunk.lower(carry, keys, 0, program.program.data).compile().as_text()
x = program.program.data.train.x
print(json.dumps({{"devices": len(jax.devices()), "layout": program.program.layout.kind,
                  "data_devices": len(x.sharding.device_set),
                  "state_devices": len(jax.tree.leaves(states.params)[0].sharding.device_set),
                  "all_reduce": "all-reduce" in hlo}}))
"""
  env = clean_env(XLA_FLAGS="--xla_force_host_platform_device_count=4")
  done = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True,
                        text=True, timeout=600)
  assert done.returncode == 0, done.stderr
  facts = json.loads(done.stdout.strip().splitlines()[-1])
  assert facts == {"devices": 4, "layout": "data", "data_devices": 4, "state_devices": 4,
                   "all_reduce": True}


@pytest.mark.slow  # about 16 s: a subprocess with fake devices
def test_a_batch_the_devices_do_not_divide_is_named_before_compute(tmp_path):
  done = main(4, tmp_path, *LENET300, "--config.train_batch_size=50", "--config.parallel=data")
  assert_expected_failure(done, "train_batch_size", "multiple of 4", "parallel='seeds'")


@pytest.mark.slow
def test_a_64_seed_sweep_sharded_over_4_devices_gives_each_seeds_result(tmp_path):
  args = ("--config=configs/teacher_student.py:drr", "--config.seeds=64",
          "--config.max_epochs=300", "--config.min_epochs=100",
          "--config.finetuning_max_epochs=100", "--config.finetuning_min_epochs=50",
          "--config.dtype=float64", "--config.quiet=True")
  rows = {}
  for devices in (1, 4):
    done = main(devices, tmp_path / str(devices), *args, timeout=1800)
    assert done.returncode == 0, done.stderr
    rows[devices] = pd.read_csv(tmp_path / str(devices) / "runs.csv").sort_values("seed")
  one, four = rows[1], rows[4]
  assert list(one["seed"]) == list(four["seed"]) and len(one) == 64
  assert list(one["kept_params"]) == list(four["kept_params"])
  assert list(one["train_epochs"]) == list(four["train_epochs"])
  pd.testing.assert_series_equal(one["final_test_loss"], four["final_test_loss"], rtol=1e-10)


# -- several processes (jax.distributed on localhost) ------------------------------------------

#: LENET300 in float64 for 12 epochs, checkpointed every 2: long enough to kill mid-run.
#: (In float32 the summation order of the gradient all-reduce, which differs between
#: one process and two, moves a few weights across the pruning threshold by epoch 24.)
LONGER = LENET300 + ("--config.dtype=float64", "--config.max_epochs=12",
                     "--config.min_epochs=12", "--config.checkpoint_every_epochs=2")


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def start_processes(workdir, *args: str, processes: int = 2,
                    devices: int = 2) -> list[subprocess.Popen]:
  """``processes`` copies of one command, ``devices`` fake CPU devices each, meeting
  at a localhost coordinator."""
  env = clean_env(XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
                  SPARSEJAX_DATA_DIR=str(data_path("mnist").parent))
  address = f"localhost:{free_port()}"
  return [subprocess.Popen(
      [sys.executable, "-m", "sparsejax.main", *args, f"--workdir={workdir}",
       f"--config.distributed.coordinator_address={address}",
       f"--config.distributed.num_processes={processes}",
       f"--config.distributed.process_id={rank}"],
      cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
      for rank in range(processes)]


def finish(procs: list[subprocess.Popen], timeout: float = 600) -> list[str]:
  """Waits for every process; returns their stdout (each must exit 0)."""
  outs = []
  for proc in procs:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err[-3000:]
    outs.append(out)
  return outs


def saved_checkpoints(workdir) -> int:
  """How many program checkpoints have been completely written (orbax renames a
  step's folder to its number when it is complete)."""
  return len([p for p in (workdir / "checkpoints").glob("*+1/*") if p.name.isdigit()])


@pytest.mark.slow
def test_two_processes_match_one_process_and_resume_after_a_kill(tmp_path):
  reference = main(4, tmp_path / "one", *LONGER)
  assert reference.returncode == 0, reference.stderr
  one = final_row(tmp_path / "one")

  # Two processes x two devices: the row of one process x four devices, written once.
  outs = finish(start_processes(tmp_path / "two", *LONGER))
  runs = pd.read_csv(tmp_path / "two" / "runs.csv")
  assert len(runs) == 1
  compare(one, runs.iloc[0].to_dict(), 1e-9)
  # Only process 0 reports (gloo's own connection lines aside).
  assert one["run_id"] in outs[0] and one["run_id"] not in outs[1] and "kept" not in outs[1]
  assert (tmp_path / "two" / "artifacts" / one["run_id"] / "masks.npz").exists()

  # Both killed (-9) mid-run, then restarted: they resume and end with the same row.
  workdir = tmp_path / "killed"
  procs = start_processes(workdir, *LONGER)
  deadline = time.monotonic() + 600
  while (saved_checkpoints(workdir) < 1 and time.monotonic() < deadline
         and all(p.poll() is None for p in procs)):
    time.sleep(0.05)
  assert all(p.poll() is None for p in procs), "the run ended before it could be killed"
  for proc in procs:
    proc.send_signal(signal.SIGKILL)
    proc.wait()
  assert not (workdir / "runs.csv").exists()
  finish(start_processes(workdir, *LONGER, "--config.quiet=False"))
  runs = pd.read_csv(workdir / "runs.csv")
  assert len(runs) == 1
  compare(one, runs.iloc[0].to_dict(), 1e-9)
