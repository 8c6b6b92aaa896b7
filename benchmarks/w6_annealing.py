"""Workload W6: the simulated-annealing mask search on the bias-free LeNet-300-100 (MNIST).

The EEE 198 MLP search (issues 15 and 35; :mod:`sparsejax.pruning.annealing`
with the MLP schedule): an unstructured mask over the 266,200 weights of the
784-300-100-10 relu MLP without biases at 70 % sparsity, each candidate
evaluated as the top-1 accuracy of the masked initial network on the first
2,000 MNIST training images, through the recipe's evaluation
(:func:`sparsejax.recipes.anneal.weight_evaluator`: the first two layers updated
by the flipped entries). The search is one compiled program.

Two measurements, in one invocation:

* **The whole search** (``--evaluations``, default the study's 100,000), one
  chain, timed once (compilation excluded). The PyTorch peer
  (``benchmarks/peers/torch_anneal_mlp.py``: per candidate a numpy swap move
  and memory check, the network reloaded from disk, masked and evaluated)
  would take hours for it, so it is timed on ``--peer-candidates`` candidates
  at every 100th level (its move size and a full memory; ``--repeats`` times,
  median) and its whole search extrapolated: each level's candidates at the
  cost of the nearest sampled level.
* **Chains** (``--chains``): the cost of a candidate in each of the search's
  move sizes (the last ``--phase-levels`` levels of each), for one chain and
  for the chains vmapped, weighted by the candidates the search spends in
  each: candidates per second over the whole search, both ways.

Usage (from the repository root)::

  .venv/bin/python benchmarks/w6_annealing.py [--evaluations 100000] [--repeats 3] \\
      [--chains 8] [--peer-candidates 20] [--skip-search]

The peer's environment: see :mod:`common`.
"""

from __future__ import annotations

import os
import time

import jax
import jax.numpy as jnp
import numpy as np

import common
from sparsejax import masks as masks_lib
from sparsejax.models import adapter, lenet_300_100_no_bias
from sparsejax.pruning import annealing
from sparsejax.recipes import anneal
from sparsejax.train.state import TrainState

EVAL_EXAMPLES, SPARSITY = 2_000, 0.7
WORKLOAD = "W6_annealing_mlp"
REPO_PEER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "peers",
                         "torch_anneal_mlp.py")


def problem(x, y, evaluations: int):
  """``(evaluator, n_units, schedule, plan)`` of the search at initialisation."""
  model = adapter.as_adapter(lenet_300_100_no_bias(), x[:1])
  params, state = model.init(jax.random.key(0), x[:1])
  masks = masks_lib.ones_like(params)
  trained = TrainState(0, params, (), state, (), masks)
  first = anneal.first_dense_layer(model, params, state, masks, x[:64])
  second = anneal.second_dense_layer(model, params, state, masks, x[:64], first)
  evaluator = anneal.weight_evaluator(model, trained, masks, x, y, first, second)
  n = sum(m.size for m in jax.tree.leaves(masks))
  schedule = annealing.MLP_SCHEDULE._replace(max_evaluations=evaluations)
  return evaluator, n, schedule, annealing.plan_search(n, SPARSITY, schedule)


def whole_search(evaluator, n, schedule, key) -> dict:
  search = jax.jit(lambda k: annealing.anneal(evaluator, k, n, SPARSITY, schedule))
  compiled = search.lower(key).compile()
  start = time.perf_counter()
  result = jax.block_until_ready(compiled(key))
  seconds = time.perf_counter() - start
  return dict(workload=WORKLOAD, impl="jax-compiled-search", chains=1,
              evaluations=int(result.evaluations), seconds=round(seconds, 1),
              evals_per_s=round(int(result.evaluations) / seconds, 1),
              best_mean=round(float(result.best_mean), 2))


def peer_search_seconds(args, plan: annealing.Plan) -> tuple[float, list[dict]]:
  """The peer's whole search, extrapolated from its candidates at every 100th level."""
  sampled = list(range(0, plan.levels, 100))
  rows = []
  for level in sampled:
    runs = [common.run_peer(args.torch_python, args.peer, "--sample-levels", str(level),
                            "--sample-candidates", str(args.peer_candidates),
                            threads=args.peer_threads) for _ in range(args.repeats)]
    rows.append(common.median_row(runs, ("seconds_per_candidate",)))
  cost = np.asarray([r["seconds_per_candidate"] for r in rows])
  nearest = np.abs(np.arange(plan.levels)[:, None] - np.asarray(sampled)[None, :]).argmin(1)
  return float(np.sum(plan.iterations * cost[nearest])), rows


def phase_costs(evaluator, n, schedule, plan, chains: int, levels: int, repeats: int) -> dict:
  """Seconds per candidate (per chain) in each of the plan's moves, ``chains`` vmapped."""
  keys = jax.random.split(jax.random.key(1), chains)
  init = jax.jit(jax.vmap(lambda k: annealing.init_chain(evaluator, k, plan, schedule)))
  run = jax.jit(jax.vmap(lambda k, c, i: annealing.run_levels(evaluator, k, c, plan, schedule, i),
                         in_axes=(0, 0, None)))
  chain = init(keys)
  everything = annealing.level_inputs(plan)
  costs = {}
  for tier in annealing.plan_moves(plan):
    picked = np.flatnonzero(plan.tier == tier)[-levels:]
    inputs = jax.tree.map(lambda a: a[picked], everything)
    # The start's order and cache hold.
    inputs = inputs._replace(rebuild=jnp.zeros_like(inputs.rebuild),
                             refresh=jnp.zeros_like(inputs.refresh))
    jax.block_until_ready(run(keys, chain, inputs))
    times = [common.timed(run, keys, chain, inputs)[1] for _ in range(repeats)]
    costs[tier] = float(np.median(times)) / (chains * int(plan.iterations[picked].sum()))
  return costs


def main():
  p = common.parser(__doc__.splitlines()[0], "torch_anneal_mlp.py")
  p.add_argument("--evaluations", type=int, default=100_000, help="candidates of the search")
  p.add_argument("--chains", type=int, default=8)
  p.add_argument("--phase-levels", type=int, default=4)
  p.add_argument("--peer-candidates", type=int, default=20)
  p.add_argument("--skip-search", action="store_true", help="only the chains' measurement")
  p.set_defaults(peer=REPO_PEER)
  args = p.parse_args()
  load_start = common.loadavg()
  (x, y), _ = common.first_mnist_images(EVAL_EXAMPLES, args.mnist_dir)
  evaluator, n, schedule, plan = problem(x, y, args.evaluations)

  per_tier = {int(t): int(plan.iterations[plan.tier == t].sum()) for t in annealing.plan_moves(plan)}
  capacities = plan.capacities + ("full",)
  costs = {c: phase_costs(evaluator, n, schedule, plan, c, args.phase_levels, args.repeats)
           for c in (1, args.chains)}
  for t, count in per_tier.items():
    common.emit(workload=WORKLOAD, move=capacities[t], candidates=count,
                ms_per_candidate_1_chain=round(1e3 * costs[1][t], 3),
                **{f"ms_per_candidate_{args.chains}_chains": round(1e3 * costs[args.chains][t], 3)})
  rate = {c: float(plan.iterations.sum()) / sum(count * costs[c][t] for t, count in per_tier.items())
          for c in costs}
  summary = dict(workload=WORKLOAD, search_evals_per_s_1_chain=round(rate[1], 1),
                 **{f"search_evals_per_s_{args.chains}_chains": round(rate[args.chains], 1)},
                 chains_ratio=round(rate[args.chains] / rate[1], 2),
                 chains_target_met=bool(rate[args.chains] >= rate[1]))
  if not args.skip_search:
    row = whole_search(evaluator, n, schedule, jax.random.key(1))
    row.update(common.machine())
    common.emit(**row)
    peer_seconds, peer_rows = peer_search_seconds(args, plan)
    for r in peer_rows:
      common.emit(**r)
    summary.update(peer_search_seconds_extrapolated=round(peer_seconds, 1),
                   time_ratio_jax_over_torch=round(row["seconds"] / peer_seconds, 3),
                   time_target_met=bool(row["seconds"] <= peer_seconds / 5))
  common.emit(**summary, peer_threads=args.peer_threads, loadavg_start=load_start,
              loadavg_end=common.loadavg())


if __name__ == "__main__":
  main()
