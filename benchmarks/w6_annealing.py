"""Workload W6: the simulated-annealing mask search on the bias-free LeNet-300-100 (MNIST).

The EEE 198 MLP search (issue 15; :mod:`sparsejax.pruning.annealing` with the
MLP schedule): an unstructured mask over the 266,200 weights of the
784-300-100-10 relu MLP without biases at 70 % sparsity, each candidate
evaluated as the top-1 accuracy of the masked initial network on the first
2,000 MNIST training images. The search is one compiled program (a
``lax.scan`` over temperature levels of loops over candidates), run for one
chain and for 8 chains vmapped into one program.

The PyTorch peer (``benchmarks/peers/torch_anneal_mlp.py``) runs the
reference's loop: per candidate a numpy swap move and memory check, the
network reloaded from its checkpoint on disk, masked and evaluated. Both stop
after ``--evaluations`` candidates per chain; the figure is candidate
evaluations per second (all chains together), medians over the repeats,
compilation excluded (one warm-up call), with the ratios.

Usage (from the repository root)::

  .venv/bin/python benchmarks/w6_annealing.py [--repeats 3] [--evaluations 1000] \\
      [--peer-threads N]

The peer's environment: see :mod:`common`.
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp

import common
from sparsejax import masks as masks_lib
from sparsejax.models import lenet_300_100_no_bias
from sparsejax.pruning import annealing

EVAL_EXAMPLES, SPARSITY, CHAINS = 2_000, 0.7, 8
WORKLOAD = "W6_annealing_mlp"
REPO_PEER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "peers",
                         "torch_anneal_mlp.py")


def make_search(x, y, evaluations: int):
  model = lenet_300_100_no_bias()
  params = model.init(jax.random.key(0), x[:1])["params"]
  masks = masks_lib.ones_like(params)
  n = sum(leaf.size for leaf in jax.tree.leaves(params))
  schedule = annealing.MLP_SCHEDULE._replace(max_evaluations=evaluations)

  def evaluate(flat_mask):
    masked = masks_lib.apply(masks_lib.unflatten_like(flat_mask, masks), params)
    return 100.0 * jnp.mean(jnp.argmax(model.apply({"params": masked}, x), -1) == y)

  def search(key):
    return annealing.anneal(evaluate, key, n, SPARSITY, schedule)
  return jax.jit(search), jax.jit(jax.vmap(search))


def main():
  p = common.parser(__doc__.splitlines()[0], "torch_anneal_mlp.py")
  p.add_argument("--evaluations", type=int, default=1000, help="candidates per chain")
  p.set_defaults(peer=REPO_PEER)
  args = p.parse_args()
  load_start = common.loadavg()
  (x, y), _ = common.first_mnist_images(EVAL_EXAMPLES, args.mnist_dir)
  one, many = make_search(x, y, args.evaluations)
  keys = jax.random.split(jax.random.key(1), CHAINS)
  jax.block_until_ready(one(keys[0]))    # Warm-up (compiles).
  jax.block_until_ready(many(keys))

  rows = {1: [], CHAINS: []}
  torch_rows = []
  for repeat in range(args.repeats):
    for chains, fn, arg in ((1, one, keys[repeat % CHAINS]), (CHAINS, many, keys)):
      result, seconds = common.timed(fn, arg)
      evaluations = int(jnp.sum(result.evaluations))
      rows[chains].append(dict(
          workload=WORKLOAD, impl="jax-compiled-search", chains=chains, evaluations=evaluations,
          seconds=round(seconds, 3), evals_per_s=round(evaluations / seconds, 2),
          best_mean=round(float(jnp.max(result.best_mean)), 2)))
    torch_rows.append(common.run_peer(args.torch_python, args.peer, "--evaluations",
                                      str(args.evaluations), threads=args.peer_threads))

  fields = ("seconds", "evals_per_s")
  single, vmapped = (common.median_row(rows[c], fields) for c in (1, CHAINS))
  single.update(common.machine())
  torch_row = common.median_row(torch_rows, fields)
  for row in (single, vmapped, torch_row):
    common.emit(**row)
  common.emit(
      workload=WORKLOAD,
      evals_per_s_ratio_1_chain_jax_over_torch=round(single["evals_per_s"]
                                                     / torch_row["evals_per_s"], 2),
      evals_per_s_ratio_8_chains_jax_over_torch=round(vmapped["evals_per_s"]
                                                      / torch_row["evals_per_s"], 2),
      target_met=single["evals_per_s"] >= 20 * torch_row["evals_per_s"],
      peer_threads=args.peer_threads, nproc=single["nproc"], loadavg_start=load_start,
      loadavg_end=common.loadavg())


if __name__ == "__main__":
  main()
