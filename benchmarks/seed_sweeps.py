"""Seed sweeps on the CPU: seeds vmapped into one program, or run one after another.

The runner trains ``sweep.chunk_size`` seeds as one vmapped program
(``jax.vmap`` over the seed axis of the train state). For dense layers that
turns the seeds' matrix products into batched ones, which is what makes a
seed sweep of MLPs cheap. For convolutions, ``vmap`` over per-seed kernels
becomes one convolution with ``feature_group_count = seeds``, and XLA's CPU
backend runs grouped convolutions (and their gradients) more slowly than
the same convolutions one seed at a time. This benchmark measures
both for the W5 train steps (``benchmarks/w5_lenet5.py``) and, for
contrast, LeNet-300-100: milliseconds per seed and step of ``jit(vmap(epoch))``
over ``--seeds`` seeds against ``--seeds`` calls of the one-seed ``epoch``
(the arithmetic of ``--config.sweep.seed_loop=map``), and their ratio (> 1: one after
another is faster).

Usage (from the repository root, alone on the machine)::

  .venv/bin/python benchmarks/seed_sweeps.py [--seeds 3] [--steps 20] [--repeats 3] \\
      [--cases lenet5_caffe,bmrs_lenet5/per_batch,bmrs_lenet5/per_element,lenet_300_100]
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp

import common
import w5_lenet5

CASES = {**w5_lenet5.CASES,
         "lenet_300_100": w5_lenet5.Case("lenet_300_100", None, 100, 28, 1e-3)}


def _copy(tree):
  return jax.block_until_ready(jax.tree.map(jnp.copy, tree))


def run_case(name: str, seeds: int, steps: int, repeats: int) -> dict:
  """Median seconds per seed and step, vmapped and one seed after another."""
  case = CASES[name]
  key = jax.random.key(0)
  x = jax.random.uniform(key, (case.batch * steps, case.side, case.side, 1), jnp.float32)
  y = jax.random.randint(jax.random.fold_in(key, 1), (case.batch * steps,), 0, 10)
  init, epoch = w5_lenet5.make_epoch(case)
  init_keys = jax.random.split(jax.random.fold_in(key, 2), seeds)
  epoch_keys = jax.random.split(jax.random.fold_in(key, 3), seeds)
  states = jax.vmap(lambda k: init(k, x))(init_keys)
  singles = [jax.tree.map(lambda leaf, i=i: leaf[i], states) for i in range(seeds)]
  vmapped = jax.jit(jax.vmap(lambda state, k: epoch(state, (x, y), k)), donate_argnums=0)

  def run_vmapped():
    fresh = _copy(states)
    start = time.perf_counter()
    jax.block_until_ready(vmapped(fresh, epoch_keys))
    return time.perf_counter() - start

  def run_sequential():
    fresh = [_copy(s) for s in singles]
    start = time.perf_counter()
    for state, k in zip(fresh, epoch_keys):
      jax.block_until_ready(epoch(state, (x, y), k))
    return time.perf_counter() - start

  run_vmapped(), run_sequential()  # Compiles both.
  vmapped_s, sequential_s = [], []
  for _ in range(repeats):
    vmapped_s.append(run_vmapped())
    sequential_s.append(run_sequential())
  per = seeds * steps
  vm, seq = statistics.median(vmapped_s) / per, statistics.median(sequential_s) / per
  return dict(workload=f"seed_sweep_{name}", seeds=seeds, steps=steps, batch=case.batch,
              vmapped_ms_per_seed_step=round(1e3 * vm, 3),
              sequential_ms_per_seed_step=round(1e3 * seq, 3),
              vmapped_over_sequential=round(vm / seq, 3))


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--seeds", type=int, default=3)
  p.add_argument("--steps", type=int, default=20, help="training steps per seed and repeat")
  p.add_argument("--repeats", type=int, default=3)
  p.add_argument("--cases", default=",".join(CASES))
  args = p.parse_args()
  names = common.listed(p, "--cases", args.cases, CASES)
  load_start, machine = common.loadavg(), common.machine()
  for name in names:
    common.emit(**run_case(name, args.seeds, args.steps, args.repeats), **machine,
                loadavg_start=load_start, loadavg_end=common.loadavg())


if __name__ == "__main__":
  main()
