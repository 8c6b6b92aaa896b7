"""Workload W2 (shared BENCHMARKS.md): LeNet-300-100 on MNIST with the DRR penalty.

The first 45,000 MNIST training images in ``[0, 1]``, batch 500 (90 steps an
epoch), reshuffled every epoch, Adam lr 1e-3, loss = mean cross-entropy + DRR
(:func:`sparsejax.objectives.drr`, alpha = 1e-5, beta = 10, over every
parameter), masks (all ones) applied after every step by the library's train
step (:func:`sparsejax.train.make_train_step`). An epoch is one compiled
program (:func:`sparsejax.train.make_epoch_fn`: a ``lax.scan`` over the steps,
batches gathered on the device from a permutation drawn on the device), jitted
here with the train state donated so its buffers are updated in place. One
warm-up epoch (which also compiles, on the first repeat), then ``--epochs``
timed epochs blocked on at the end, then the test accuracy.

The PyTorch peer (``peers/torch_lenet300.py``) runs in the same invocation as a
subprocess of a separate Python environment, alternating with the JAX repeats;
each repeat also measures the float32 matrix-product rate of the machine (a
jitted 2048 x 2048 ``jnp.matmul``, median of 11). Prints one JSON line per
implementation with the peer's fields (medians over the repeats), then one line
with the ratio of images/s (JAX over PyTorch), each side's achieved FLOP rate
(images/s x 6 x 266,610) and its fraction of the measured matmul rate, the
targets and the load average at start and end.

Usage (from the repository root)::

  .venv/bin/python benchmarks/w2_lenet300_drr.py [--repeats 3] [--epochs 3] \\
      [--torch-python benchmarks/.torch-venv/bin/python] [--peer-threads N]
"""

from __future__ import annotations

import time

import jax
import optax

import common
from sparsejax import masks, objectives
from sparsejax.models import lenet_300_100
from sparsejax.train import (CLASSIFICATION, create_train_state, make_epoch_fn, make_eval_fn,
                             make_train_step)

N_TRAIN, BATCH, LR, ALPHA, BETA = 45_000, 500, 1e-3, 1e-5, 10.0
WORKLOAD = "W2_lenet300_mnist_drr"
#: Forward plus backward FLOP per image (BENCHMARKS.md).
FLOP_PER_IMAGE = 6 * common.LENET300_PARAMS
TARGET, GOAL = 1.2, 1.5


def main():
  parser = common.parser(__doc__.splitlines()[0], "torch_lenet300.py")
  parser.add_argument("--epochs", type=int, default=3, help="timed epochs after the warm-up")
  args = parser.parse_args()
  load_start = common.loadavg()

  train, (x_test, y_test) = common.first_mnist_images(N_TRAIN, args.mnist_dir)
  model, objective, opt = lenet_300_100(), objectives.drr(ALPHA, BETA), optax.adam(LR)
  step = make_train_step(model, CLASSIFICATION, objective, opt, jit=False)
  epoch = jax.jit(make_epoch_fn(step, BATCH, jit=False), donate_argnums=0)
  evaluate = make_eval_fn(model, CLASSIFICATION, objective, x_test.shape[0])

  def run_jax(seed: int) -> dict:
    init_key, key = jax.random.split(jax.random.key(seed))
    state = create_train_state(init_key, model, train[0][:1], objective, opt,
                               prunable=masks.every_leaf)
    warm_key, *keys = jax.random.split(key, args.epochs + 1)
    (state, _), _ = common.timed(epoch, state, train, warm_key)
    start = time.perf_counter()
    for key in keys:
      state, _ = epoch(state, train, key)
    jax.block_until_ready(state)
    seconds = time.perf_counter() - start
    accuracy = float(evaluate(state, x_test, y_test)["accuracy"])
    return dict(workload=WORKLOAD, impl="jax-lax-scan", epochs=args.epochs,
                seconds=round(seconds, 3), images_per_s=round(args.epochs * N_TRAIN / seconds, 1),
                test_accuracy=round(accuracy, 4))

  jax_rows, torch_rows, matmul = [], [], []
  for _ in range(args.repeats):
    jax_rows.append(run_jax(0))
    matmul.append(common.matmul_gflops())
    torch_rows.append(common.run_peer(args.torch_python, args.peer, "--epochs",
                                      str(args.epochs), threads=args.peer_threads))

  fields = ("images_per_s", "seconds", "test_accuracy")
  jax_row = common.median_row(jax_rows, fields)
  jax_row.update(common.machine())
  torch_row = common.median_row(torch_rows, fields)
  peak = common.median(matmul, 1)
  ratio = jax_row["images_per_s"] / torch_row["images_per_s"]
  rates = {impl: row["images_per_s"] * FLOP_PER_IMAGE / 1e9
           for impl, row in (("jax", jax_row), ("torch", torch_row))}
  common.emit(**jax_row)
  common.emit(**torch_row)
  common.emit(
      workload=WORKLOAD, images_per_s_ratio_jax_over_torch=round(ratio, 3),
      ratio_all=[round(j["images_per_s"] / t["images_per_s"], 3)
                 for j, t in zip(jax_rows, torch_rows)],
      target=TARGET, goal=GOAL, target_met=ratio >= TARGET, goal_met=ratio >= GOAL,
      matmul_gflops=peak, matmul_gflops_all=[round(g, 1) for g in matmul],
      achieved_gflops_jax=round(rates["jax"], 1), achieved_gflops_torch=round(rates["torch"], 1),
      fraction_of_matmul_jax=round(rates["jax"] / peak, 3),
      fraction_of_matmul_torch=round(rates["torch"] / peak, 3),
      peer_threads=args.peer_threads, nproc=jax_row["nproc"], loadavg_start=load_start,
      loadavg_end=common.loadavg())


if __name__ == "__main__":
  main()
