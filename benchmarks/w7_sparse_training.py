"""Workload W7: sparse training of LeNet-300-100 on MNIST, beside jaxpruner.

Both libraries train the same network (sparsejax's ``lenet_300_100``), on
the same data (MNIST, 55,000 training images, batch 100, the same batches
in the same order), with the same optimiser (Adam 1e-3), budget (ERK, 90 %
sparsity of the kernels) and schedule (updates every 100 steps until 75 % of
training), for each algorithm:

* ``rigl``: sparsejax ``method=rigl`` (drop 0.3 with cosine decay) against
  jaxpruner's ``rigl``;
* ``gmp``: sparsejax ``method=gmp`` (Zhu & Gupta's cubic schedule) against
  jaxpruner's ``magnitude`` (its polynomial schedule).

sparsejax runs as its runner does: the compiled epoch of
``make_train_step(..., sparse=algorithm)`` (``make_epoch_fn`` with the
algorithm's update steps: loops of plain steps between the update steps, the
masks updated inside), for one seed and for ``--seeds`` seeds vmapped in one
program. jaxpruner runs as its
README and colab use it, given its best case: ``wrap_optax`` with
``pre_forward_update`` and ``post_gradient_update`` in a ``lax.scan`` over
the same batches, one compiled epoch (``benchmarks/peers/jaxpruner_mnist.py``),
and its seeds one after another (jaxpruner keeps its seed in the updater, so
its seeds cannot be vmapped).

Each repeat runs every epoch of the training once per library, alternating,
compilation excluded; the figures are medians over repeats and epochs: time
per training step, and seed-steps per second of the vmapped seeds (and of
the seeds one after another in one program, the runner's ``"map"`` loop)
against jaxpruner's seeds in sequence, with the most the matrix products
allow (the matrix rate measured on a 1024 x 1024 product, over 6 n B FLOP
per seed-step). After the epochs, both report the test
accuracy of their final masked network (seed 0). The issue's goals: per
step at most 0.8 of jaxpruner's time; the vmapped seeds at least 4x
jaxpruner's seed-steps per second.

Usage (from the repository root, alone on the machine)::

  .venv/bin/python benchmarks/w7_sparse_training.py [--algorithms rigl,gmp] [--epochs 2] \\
      [--repeats 3] [--seeds 8]
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import statistics
import sys
import time

sys.path.insert(0, os.fspath(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from benchmarks import common  # noqa: E402  (sets the XLA CPU options first)
from benchmarks.peers import jaxpruner_mnist as peer  # noqa: E402
from configs import common as configs  # noqa: E402
from sparsejax import keys, objectives  # noqa: E402
from sparsejax import masks as masks_lib  # noqa: E402
from sparsejax.recipes import sparse_training  # noqa: E402
from sparsejax.runner import build  # noqa: E402
from sparsejax.train import loop  # noqa: E402
from sparsejax.train.optimizers import build_optimizer  # noqa: E402
from sparsejax.train.driver import map_seeds  # noqa: E402
from sparsejax.train.state import create_train_state  # noqa: E402
from sparsejax.train.step import make_eval_fn, make_train_step, updates_masks  # noqa: E402

#: sparsejax method -> jaxpruner algorithm.
PEER_ALGORITHMS = {"rigl": "rigl", "gmp": "magnitude"}


def sparsejax_run(method: str, epochs: int, n_seeds: int):
  """The runner's pieces for ``method``: data, one-seed and vmapped epochs, initial states."""
  config = configs.sparse_training(method, "lenet_300_100", epochs=epochs, name="lenet300")
  parts = build.build(config)
  x, y = parts.data.train
  n_train = x.shape[0]
  total = epochs * loop.steps_per_epoch(n_train, config.train_batch_size)
  algorithm = sparse_training.algorithm_of(config, total, parts.model)
  optimizer = build_optimizer(config.optimizer, config.lr)
  step = make_train_step(parts.model, parts.task, objectives.plain(), optimizer, jit=False,
                         sparse=algorithm)
  epoch = loop.make_epoch_fn(step, config.train_batch_size, jit=False,
                             update_steps=functools.partial(updates_masks, algorithm))
  sample = x[:1]

  def init(seed):
    state = create_train_state(keys.model_key(seed), parts.model, sample, objectives.plain(),
                               optimizer, prunable=parts.prunable)
    masks = algorithm.init(keys.stream_key(seed, "sparse"), state.params, state.masks)
    return state._replace(masks=masks, params=masks_lib.apply(masks, state.params))

  one = jax.jit(epoch)
  many = jax.jit(map_seeds(epoch, (0, None, 0, None), n_seeds, "vmap"))
  mapped = jax.jit(map_seeds(epoch, (0, None, 0, None), n_seeds, "map"))
  evaluate = jax.jit(make_eval_fn(parts.model, parts.task, objectives.plain(),
                                  config.eval_batch_size, jit=False))
  seeds = jnp.arange(n_seeds)
  return dict(config=config, parts=parts, data=(x, y), n_train=n_train,
              state=jax.jit(init)(0), states=jax.jit(jax.vmap(init))(seeds),
              one=one, many=many, mapped=mapped, evaluate=evaluate, algorithm=algorithm)


def epoch_key(seed: int, epoch: int) -> jax.Array:
  """The key of a seed's epoch (the train phase's stream, as the runner folds it)."""
  return jax.random.fold_in(keys.stream_key(seed, "train"), epoch)


def batches_of(key: jax.Array, n: int, batch_size: int) -> jax.Array:
  """The batches ``make_epoch_fn`` draws from ``key`` (its permutation key is the first half)."""
  return loop.epoch_batches(jax.random.split(key)[0], n, batch_size)


def peer_setup(method: str, config, epochs: int) -> peer.PeerSetup:
  s = config.sparse
  return peer.PeerSetup(
      architecture="lenet_300_100", algorithm=PEER_ALGORITHMS[method],
      sparsity=1.0 - config.pruning.density, dist_type=s.distribution,
      update_freq=s.frequency, update_start_step=0, update_end_step=s.end_fraction,
      drop_fraction=s.drop_fraction, lr=config.lr, batch_size=config.train_batch_size,
      epochs=epochs, val_fraction=config.val_fraction)


def timed(fn, *args):
  start = time.perf_counter()
  out = jax.block_until_ready(fn(*args))
  return out, time.perf_counter() - start


def run(method: str, epochs: int, repeats: int, n_seeds: int, rate: float) -> dict:
  """Times both libraries on ``method`` and reports accuracies and ratios."""
  ours = sparsejax_run(method, epochs, n_seeds)
  x, y = ours["data"]
  n, bs = ours["n_train"], ours["config"].train_batch_size
  steps = loop.steps_per_epoch(n, bs)
  setup = peer_setup(method, ours["config"], epochs)
  model = ours["parts"].model
  updater = peer.make_updater(setup, model.param_shapes, n, 0)
  init_carry, peer_epoch = peer.make_epoch(setup, model, n, seed=0, updater=updater)
  carry0 = init_carry(jax.random.key(0))
  key_list = [epoch_key(0, e) for e in range(epochs)]
  seed_keys = [jax.vmap(lambda s, e=e: epoch_key(s, e))(jnp.arange(n_seeds))
               for e in range(epochs)]
  batch_list = [batches_of(k, n, bs) for k in key_list]
  # Compile ahead.
  one = ours["one"].lower(ours["state"], (x, y), key_list[0], 0).compile()
  many = ours["many"].lower(ours["states"], (x, y), seed_keys[0], 0).compile()
  mapped = ours["mapped"].lower(ours["states"], (x, y), seed_keys[0], 0).compile()
  theirs = peer_epoch.lower(carry0, (x, y), batch_list[0]).compile()

  times = {"sparsejax": [], "sparsejax_seeds": [], "sparsejax_seeds_map": [], "jaxpruner": []}
  for r in range(repeats):
    state, states, carry = ours["state"], ours["states"], carry0
    for e in range(epochs):
      (state, _), t = timed(one, state, (x, y), key_list[e], e)
      times["sparsejax"].append(t / steps)
      (carry, _), t = timed(theirs, carry, (x, y), batch_list[e])
      times["jaxpruner"].append(t / steps)
      (states, _), t = timed(many, states, (x, y), seed_keys[e], e)
      times["sparsejax_seeds"].append(t / steps)
      _, t = timed(mapped, states, (x, y), seed_keys[e], e)
      times["sparsejax_seeds_map"].append(t / steps)
    if r == 0:
      ours_final, peer_final = state, carry

  ours_accuracy = float(ours["evaluate"](ours_final, *ours["parts"].data.test)["accuracy"])
  masks = peer.final_masks(updater, peer_final.params, peer_final.opt_state)
  peer_accuracy = peer.make_accuracy(model)(updater.apply_masks(peer_final.params, masks),
                                            peer_final.model_state, tuple(ours["parts"].data.test))
  ours_masks = jax.tree.leaves(ours_final.masks)
  ours_density = float(sum(jnp.sum(m) for m in ours_masks) / sum(m.size for m in ours_masks))
  med = {k: statistics.median(v) for k, v in times.items()}
  # The most seed-steps per second the matrix products allow: 6 n B FLOP per seed-step
  # (forward, and the two products of the backward pass) for n kernel entries, batch B.
  kernel_entries = sum(m.size for m in jax.tree.leaves(ours_final.masks))
  bound = rate * 1e9 / (6 * kernel_entries * bs)
  return {
      "algorithm": method, "peer_algorithm": setup.algorithm, "epochs": epochs,
      "steps_per_epoch": steps, "repeats": repeats, "seeds": n_seeds,
      "ms_per_step": {"sparsejax": 1e3 * med["sparsejax"], "jaxpruner": 1e3 * med["jaxpruner"],
                      f"sparsejax_{n_seeds}_seeds_vmapped": 1e3 * med["sparsejax_seeds"]},
      "time_ratio_sparsejax_over_jaxpruner": med["sparsejax"] / med["jaxpruner"],
      "seed_steps_per_s": {"sparsejax_vmapped": n_seeds / med["sparsejax_seeds"],
                           "jaxpruner_in_sequence": 1 / med["jaxpruner"]},
      "ms_per_step_seeds_map": 1e3 * med["sparsejax_seeds_map"],
      "seed_throughput_ratio": (n_seeds / med["sparsejax_seeds"]) * med["jaxpruner"],
      "seed_throughput_ratio_map": (n_seeds / med["sparsejax_seeds_map"]) * med["jaxpruner"],
      "matmul_gflops": rate,
      "seed_throughput_ratio_bound": bound * med["jaxpruner"],
      "test_accuracy": {"sparsejax": ours_accuracy, "jaxpruner": peer_accuracy},
      "kernel_density": {"sparsejax": ours_density,
                         "jaxpruner": peer.density_report(model.param_shapes, masks)[0]},
  }


def main(argv=None) -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--algorithms", default="rigl,gmp")
  p.add_argument("--epochs", type=int, default=2)
  p.add_argument("--repeats", type=int, default=3)
  p.add_argument("--seeds", type=int, default=8)
  args = p.parse_args(argv)
  methods = args.algorithms.split(",")
  unknown = sorted(set(methods) - set(PEER_ALGORITHMS))
  if unknown:
    p.error(f"--algorithms: unknown {unknown}; accepted: {', '.join(PEER_ALGORITHMS)}")
  print(json.dumps({"machine": platform.processor() or platform.machine(),
                    "cores": os.cpu_count(), "jax": jax.__version__,
                    "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}))
  # The matrix rate (a 1024 x 1024 product: the best case; this workload's are smaller).
  rate = common.matmul_gflops(n=1024)
  for method in methods:
    print(json.dumps(run(method, args.epochs, args.repeats, args.seeds, rate)), flush=True)


if __name__ == "__main__":
  main()
