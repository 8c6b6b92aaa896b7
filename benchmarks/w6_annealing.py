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
  move sizes (the last ``--phase-levels`` levels of each), for one chain, for
  the chains vmapped on one device, and for the chains as the recipe runs
  them on a CPU (``anneal.chain_loop="auto"``: split over the cores, which
  :mod:`sparsejax.xla_flags` makes devices, one after another on each),
  weighted by the candidates the search spends in each: candidates per second
  over the whole search, each way.

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
from sparsejax.train import driver, sharding
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


#: How the chains run: ``(loop, over the cores)`` (:func:`sparsejax.train.driver.map_seeds`).
CHAIN_WAYS = {"vmapped": ("vmap", False), "cores": ("map", True)}


def phase_costs(evaluator, n, schedule, plan, chains: int, way: str, levels: int,
                repeats: int) -> dict:
  """Seconds per candidate (per chain) in each of the plan's moves, for ``chains`` run
  ``way`` (:data:`CHAIN_WAYS`): vmapped on one device, or one after another on each
  core with the chains split over the cores (the recipe's way on a CPU,
  ``anneal.chain_loop="auto"``)."""
  loop, spread = CHAIN_WAYS[way]
  mesh = sharding.layout_for("seeds", chains).mesh if spread else None
  keys = jax.random.split(jax.random.key(1), chains)
  init = jax.jit(driver.map_seeds(lambda k: annealing.init_chain(evaluator, k, plan, schedule),
                                  0, chains, loop, mesh))
  run = jax.jit(driver.map_seeds(
      lambda k, c, i: annealing.run_levels(evaluator, k, c, plan, schedule, i),
      (0, 0, None), chains, loop, mesh))
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
  ways = {"1_chain": (1, "vmapped")}
  ways.update({f"{args.chains}_chains_{way}": (args.chains, way) for way in CHAIN_WAYS})
  costs = {name: phase_costs(evaluator, n, schedule, plan, chains, way, args.phase_levels,
                             args.repeats) for name, (chains, way) in ways.items()}
  for t, count in per_tier.items():
    common.emit(workload=WORKLOAD, move=capacities[t], candidates=count,
                **{f"ms_per_candidate_{name}": round(1e3 * costs[name][t], 3) for name in ways})
  rate = {name: float(plan.iterations.sum()) / sum(count * costs[name][t]
                                                   for t, count in per_tier.items())
          for name in ways}
  cores = f"{args.chains}_chains_cores"
  summary = dict(workload=WORKLOAD, devices=len(jax.devices()),
                 **{f"search_evals_per_s_{name}": round(rate[name], 1) for name in ways},
                 **{f"chains_ratio_{name}": round(rate[name] / rate["1_chain"], 2)
                    for name in ways if name != "1_chain"},
                 chains_target_met=bool(rate[cores] >= rate["1_chain"]))
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
