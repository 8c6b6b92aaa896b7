"""The runner's regularised phase against the bare vmapped scan of W1, same work.

Workload: W1's (shared BENCHMARKS.md): 64 teacher-student seeds x 2000 epochs of
full-batch DRR training of the [2, 25, 25, 1] student on 300 points (Adam
5e-4, alpha 1e-4, beta 10). Three measurements, alternating over the repeats:

* ``bare``: W1's program (:func:`w1_teacher_student.make_sweep`): data,
  initialisation and 2000 train steps per seed, one ``jax.jit(jax.vmap(...))``
  of a ``lax.scan``, its seeds split over the CPU devices as the runner
  splits them (``parallel="auto"``);
* ``bare+val``: the same with each seed's validation loss (1000 points)
  evaluated after every epoch inside the scan, the work the runner's phase
  does besides the steps (its checks watch the validation loss);
* ``runner``: ``sparsejax.runner.run`` on the teacher-student config with
  DRR at W1's hyperparameters and 64 seeds, checks on (the saturation test and
  the best-state rule every 50 epochs on the device, the host's one transfer
  per chunk, checkpoints every 1000 epochs), ``min_epochs = max_epochs`` so
  every seed trains every epoch, no pruning and no finetuning. Its phase time
  is the wall time of a 2000-epoch run minus that of a 50-epoch run (one
  chunk), which cancels what does not scale with the epochs (data,
  records); one untimed 50-epoch run first compiles the runner's programs.

Prints one JSON line per measurement (medians) and the ratios runner / bare+val
(the runner's own overhead; target <= 1.3) and runner / bare.

Usage (from the repository root; nothing else running)::

  .venv/bin/python benchmarks/runner_overhead.py [--repeats 3] [--seeds 64] [--epochs 2000]
"""

from __future__ import annotations

import argparse
import pathlib
import shutil
import statistics
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import optax

import common
import w1_teacher_student as w1
from sparsejax import masks, objectives
from sparsejax.data.teacher_student import STUDENT_KEY_OFFSET, STUDENT_WIDTHS, teacher_student_data
from sparsejax.models import MLP
from sparsejax.runner import run
from sparsejax.train import (REGRESSION, create_train_state, make_eval_fn, make_train_step,
                             sharding)

sys.path.insert(0, str(common.REPO))
from configs import teacher_student  # noqa: E402

TARGET = 1.3
N_VAL = 1000


def make_sweep_with_validation(epochs: int):
  """W1's program with the validation loss of every epoch (the runner's work)."""
  model = MLP(widths=STUDENT_WIDTHS, activation="tanh")
  objective, optimizer = objectives.drr(w1.ALPHA, w1.BETA), optax.adam(w1.LR)
  step = make_train_step(model, REGRESSION, objective, optimizer, jit=False)
  evaluate = make_eval_fn(model, REGRESSION, objective, 5000, jit=False)

  def one_seed(seed):
    splits, _ = teacher_student_data(seed, n_train=w1.N_TRAIN, n_val=N_VAL, n_test=1)
    state = create_train_state(jax.random.fold_in(jax.random.key(seed), STUDENT_KEY_OFFSET),
                               model, splits.train.x[:1], objective, optimizer,
                               prunable=masks.every_leaf)  # as the runner's prunable="all"
    key = jax.random.key(0)

    def body(state, _):
      state, metrics = step(state, tuple(splits.train), key)
      return state, (metrics["loss"], evaluate(state, *splits.val)["loss"])

    _, (losses, val_losses) = jax.lax.scan(body, state, None, length=epochs)
    return losses[-1], val_losses[-1]

  return jax.jit(jax.vmap(one_seed))


def runner_config(seeds: int, epochs: int):
  config = teacher_student.get_config("drr")
  # W1's objective: DRR at a fixed alpha on the MSE (the config's default is the code length).
  config.ec.strength, config.ec.bits_scale, config.ec.gauss_loss = "fixed", 1.0, False
  config.ec.alpha, config.ec.beta, config.lr = w1.ALPHA, w1.BETA, w1.LR
  config.seeds, config.sweep.chunk_size = seeds, seeds
  config.min_epochs = config.max_epochs = epochs
  config.finetuning_min_epochs = config.finetuning_max_epochs = 0
  config.pruning.criterion = "none"
  config.pruning.random_gradient_pruning = False
  config.quiet = True
  return config


def time_runner(seeds: int, epochs: int) -> float:
  workdir = pathlib.Path(tempfile.mkdtemp(prefix="runner_overhead_"))
  try:
    start = time.perf_counter()
    run(runner_config(seeds, epochs), workdir)
    return time.perf_counter() - start
  finally:
    shutil.rmtree(workdir, ignore_errors=True)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--seeds", type=int, default=64)
  parser.add_argument("--epochs", type=int, default=2000)
  args = parser.parse_args()
  chunk = teacher_student.get_config("drr").prune_window
  # Placed as the runner places them (W1's module docstring): the same devices for all three.
  seeds = sharding.layout_for("seeds", args.seeds).place(jnp.arange(args.seeds, dtype=jnp.int32))
  bare = w1.make_sweep(args.epochs)
  with_val = make_sweep_with_validation(args.epochs)
  for program in (bare, with_val):
    jax.block_until_ready(program(seeds))  # compile
  # The runner's programs compile on its first run, and the short run that follows hits
  # the warm cache: without this untimed run the first repeat's difference includes
  # the compilation (about 10 s of 22 s on the 2-core AMD EPYC).
  time_runner(args.seeds, chunk)
  load_start = common.loadavg()
  times = {"bare": [], "bare+val": [], "runner": []}
  for _ in range(args.repeats):
    times["bare"].append(common.timed(bare, seeds)[1])
    times["bare+val"].append(common.timed(with_val, seeds)[1])
    times["runner"].append(time_runner(args.seeds, args.epochs) - time_runner(args.seeds, chunk))
  medians = {name: statistics.median(values) for name, values in times.items()}
  for name, values in times.items():
    epochs = args.epochs if name != "runner" else args.epochs - chunk
    common.emit(workload="runner_overhead", impl=name, seeds=args.seeds, epochs=epochs,
                seconds=round(medians[name], 3),
                seed_epochs_per_s=round(args.seeds * epochs / medians[name], 1),
                repeats=[round(v, 3) for v in values])
  per_epoch = {name: medians[name] / (args.epochs if name != "runner" else args.epochs - chunk)
               for name in medians}
  ratio_val = per_epoch["runner"] / per_epoch["bare+val"]
  ratio_bare = per_epoch["runner"] / per_epoch["bare"]
  common.emit(workload="runner_overhead", ratio_runner_over_bare_val=round(ratio_val, 3),
              ratio_runner_over_bare=round(ratio_bare, 3), target=TARGET,
              meets_target=ratio_val <= TARGET, load_start=load_start,
              load_end=common.loadavg(), machine=common.machine())


if __name__ == "__main__":
  main()
