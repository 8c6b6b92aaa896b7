"""Workload W3 (shared BENCHMARKS.md): TAMADE threshold search on LeNet-300-100 / MNIST.

LeNet-300-100 is trained for one epoch on the first 45,000 MNIST training
images (batch 500, reshuffled, Adam 1e-3, plain cross-entropy: W2 without the
penalty). Then TAMADE (:mod:`sparsejax.pruning.tamade`) searches one global
magnitude threshold in ``[0, 2 max|theta|]`` over every parameter: the largest
whose mean cross-entropy over all 45,000 training images, evaluated in batches
of 5,000, is at most 1.01 x the unpruned loss, down to ``high - low <= 1e-7``.
The search is one compiled ``lax.while_loop`` around the full-data loss (a
``lax.scan`` over the batches).

The PyTorch peer (``peers/torch_tamade.py``, a Python loop around no-grad
evaluations) runs in the same invocation as a subprocess of a separate Python
environment, alternating with the JAX repeats. Prints one JSON line per
implementation with the peer's fields (medians over the repeats) and one line
of ratios. As in the peer, the search time excludes the unpruned (target)
evaluation, and the JAX timings exclude compilation (one warm-up call) and
block on the results.

Each repeat times the JAX one-evaluation (median of 3 calls) next to its
search, so ``overhead_ratio`` is, on both sides, the median over the repeats of
the per-repeat ratio. The images are divided by 255 on the host, as the peer
does, so both see bit-identical inputs.

Usage (from the repository root)::

  .venv/bin/python benchmarks/w3_tamade.py [--repeats 3] \\
      [--torch-python benchmarks/.torch-venv/bin/python] [--peer-threads N]

The peer's environment: see :mod:`common`.
"""

from __future__ import annotations

import jax
import optax

import common
from sparsejax import masks, objectives
from sparsejax.models import lenet_300_100
from sparsejax.pruning.tamade import make_tamade_fn
from sparsejax.train import (CLASSIFICATION, create_train_state, data_loss_fn, make_epoch_fn,
                             make_train_step)

N_TRAIN, BATCH, EVAL_BATCH, DELTA, RES = 45_000, 500, 5_000, 0.01, 1e-7
WORKLOAD = "W3_tamade_lenet300"


def main():
  args = common.parser(__doc__.splitlines()[0], "torch_tamade.py").parse_args()
  load_start = common.loadavg()

  (x, y), _ = common.first_mnist_images(N_TRAIN, args.mnist_dir)
  model, objective, opt = lenet_300_100(), objectives.plain(), optax.adam(1e-3)
  init_key, epoch_key = jax.random.split(jax.random.key(0))
  state = create_train_state(init_key, model, x[:1], objective, opt, prunable=masks.every_leaf)
  epoch = make_epoch_fn(make_train_step(model, CLASSIFICATION, objective, opt, jit=False), BATCH)
  state, _ = jax.block_until_ready(epoch(state, (x, y), epoch_key))

  loss = jax.jit(data_loss_fn(model, CLASSIFICATION, objective, EVAL_BATCH))
  search = make_tamade_fn(model, CLASSIFICATION, objective, EVAL_BATCH, delta=DELTA,
                          resolution=RES)
  target = jax.block_until_ready(loss(state.params, state, x, y))  # Warm-up (compiles).
  result = jax.block_until_ready(search(state, x, y, target))  # Warm-up (compiles).

  jax_rows, torch_rows = [], []
  for _ in range(args.repeats):
    one = common.median_time(loss, state.params, state, x, y)
    result, seconds = common.timed(search, state, x, y, target)
    evals = int(result.evaluations)
    jax_rows.append(dict(
        workload=WORKLOAD, impl="jax-lax-while-loop", seconds=round(seconds, 3),
        evaluations=evals, one_eval_s=round(one, 4),
        overhead_ratio=round(seconds / (evals * one), 3), threshold=float(result.threshold),
        kept=int(masks.kept_count(result.masks, state.params)),
        total=masks.total_count(result.masks, state.params)))
    torch_rows.append(common.run_peer(args.torch_python, args.peer, threads=args.peer_threads))

  fields = ("seconds", "one_eval_s", "overhead_ratio")
  jax_row = common.median_row(jax_rows, fields)
  jax_row.update(common.machine())
  torch_row = common.median_row(torch_rows, fields)
  common.emit(**jax_row)
  common.emit(**torch_row)
  common.emit(
      workload=WORKLOAD,
      search_time_ratio_jax_over_torch=round(jax_row["seconds"] / torch_row["seconds"], 3),
      overhead_ratio_jax=jax_row["overhead_ratio"],
      overhead_ratio_torch=torch_row["overhead_ratio"],
      one_eval_ratio_jax_over_torch=round(jax_row["one_eval_s"] / torch_row["one_eval_s"], 3),
      overhead_target_met=jax_row["overhead_ratio"] <= 1.05,
      search_time_target_met=jax_row["seconds"] <= torch_row["seconds"],
      peer_threads=args.peer_threads, nproc=jax_row["nproc"], loadavg_start=load_start,
      loadavg_end=common.loadavg())


if __name__ == "__main__":
  main()
