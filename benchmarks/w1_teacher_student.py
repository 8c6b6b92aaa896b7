"""Workload W1 (shared BENCHMARKS.md): DRR training of teacher-student MLPs over many seeds.

Per seed: a teacher ``[2, 5, 8, 1]`` and 300 training points from
:func:`sparsejax.data.teacher_student_data` (``x ~ U[-1, 1]^2``, targets
``teacher(x) + 0.08 N(0, 1)``), a student ``[2, 25, 25, 1]`` tanh
(:class:`sparsejax.models.MLP`) initialised from the seed's own key, and
full-batch Adam (lr 5e-4) on MSE + DRR (:func:`sparsejax.objectives.drr`,
alpha = 1e-4, beta = 10, over every parameter) through the library's train
step (:func:`sparsejax.train.make_train_step`, ``jit=False``). One step per
epoch, the epochs a ``lax.scan``. All seeds are one compiled program:
``jax.jit(jax.vmap(one_seed))`` over an array of seeds, data generation and
initialisation included (as in the peer, whose timing includes them too). The
seed array is placed as the runner places a teacher-student sweep's seeds
(``parallel="auto"``: split over the CPU devices, one per core, which
:func:`sparsejax.xla_flags.apply` makes), so the program is the library's
default path.

Rows (JAX): the W1 figure (``--seeds``, 64, x ``--epochs``, 2000); scaling rows
for ``--scaling`` seeds (8, 64, 256; the row for ``--seeds`` is the W1 row);
and, for reference, one seed at a time: a single-seed compiled scan called for
``--sequential-seeds`` seeds one after another. ``--groups G`` splits the seeds
of the vmapped program into G independent vmapped scans inside the same
compiled program (XLA's CPU runtime may run them on different cores).

Every JAX row is measured twice, alternating: compiled with XLA's defaults and
compiled with the XLA options of ``--tuned`` (``.lower(...).compile(options)``,
rows ``*-tuned``; default :data:`TUNED`: elementwise ops and reductions go to
YNNPACK too, fused with the products). ``--tuned`` with no value drops the
tuned rows.

The PyTorch peers (``peers/torch_teacher_student.py --impl loop`` and
``--impl batched``, 64 seeds x 2000 epochs) run in the same invocation as
subprocesses of a separate Python environment, alternating with the JAX
repeats. Prints one JSON line per row with the peer's fields (medians over the
repeats), then one line with the ratios jax / loop and jax / batched in
seed_epochs_per_s for both compilations, the targets checked on the faster one
(>= 15x the loop peer, >= 2x the batched peer; goals 30x and 4x) and the load
average at start and end. The JAX timings exclude compilation (one warm-up
call) and block on the results.

Before measuring, the benchmark waits until no process matching
``--wait-for`` (the other benchmarks) is running.

Usage (from the repository root)::

  .venv/bin/python benchmarks/w1_teacher_student.py [--repeats 3] [--groups 1] \\
      [--tuned NAME=VALUE ...] [--torch-python benchmarks/.torch-venv/bin/python] \\
      [--peer-threads N]

The peer's environment: see :mod:`common`.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import optax

import common
from sparsejax import masks, objectives
from sparsejax.data.teacher_student import (STUDENT_KEY_OFFSET, STUDENT_WIDTHS,
                                            teacher_student_data)
from sparsejax.models import MLP
from sparsejax.train import REGRESSION, create_train_state, make_train_step, sharding

N_TRAIN, LR, ALPHA, BETA = 300, 5e-4, 1e-4, 10.0
WORKLOAD = "W1_teacher_student_drr"
TARGET_LOOP, GOAL_LOOP, TARGET_BATCHED, GOAL_BATCHED = 15.0, 30.0, 2.0, 4.0
RATE_FIELDS = ("seconds", "seed_epochs_per_s")
#: XLA compile options of the tuned rows: XLA hands elementwise ops and
#: reductions to YNNPACK as well, which fuses the bias add and tanh (tanh') with
#: the small batched products and takes the Adam / DRR updates (by default only
#: the products go to YNNPACK, one fusion each); 1.4x to 1.6x faster here.
TUNED = ("xla_cpu_experimental_ynn_fusion_type="
         "LIBRARY_FUSION_TYPE_ELTWISE,LIBRARY_FUSION_TYPE_REDUCE",)


def make_one_seed(epochs: int):
  """``one_seed(seed) -> final data loss``: data, init and ``epochs`` steps of one seed.

  Vmappable over an integer seed array. The data come from
  ``teacher_student_data(seed)`` (only the 300 training points are used), the
  student's key is ``fold_in(key(seed), STUDENT_KEY_OFFSET)``. The loss is the
  mean squared error the last step saw (before its update), as the peers
  report it.
  """
  model = MLP(widths=STUDENT_WIDTHS, activation="tanh")
  objective, optimizer = objectives.drr(ALPHA, BETA), optax.adam(LR)
  step = make_train_step(model, REGRESSION, objective, optimizer, jit=False)

  def one_seed(seed):
    splits, _ = teacher_student_data(seed, n_train=N_TRAIN, n_val=1, n_test=1)
    batch = splits.train
    state = create_train_state(jax.random.fold_in(jax.random.key(seed), STUDENT_KEY_OFFSET),
                               model, batch[0][:1], objective, optimizer,
                               prunable=masks.every_leaf)
    key = jax.random.key(0)  # Unused by DRR and the MLP (no dropout): full batch, no noise.

    def body(state, _):
      state, metrics = step(state, batch, key)
      return state, metrics["loss"]

    _, losses = jax.lax.scan(body, state, None, length=epochs)
    return losses[-1]

  return one_seed


def make_sweep(epochs: int, groups: int = 1):
  """``sweep(seeds) -> final losses``: all seeds as one compiled program.

  With ``groups > 1`` the seeds are split into that many equal parts, each its
  own ``jax.vmap`` of the scan inside the one ``jax.jit``.
  """
  vmapped = jax.vmap(make_one_seed(epochs))

  def sweep(seeds):
    if groups == 1:
      return vmapped(seeds)
    return jnp.concatenate([vmapped(part) for part in jnp.split(seeds, groups)])

  return jax.jit(sweep)


def rate_row(impl: str, seeds: int, epochs: int, seconds: float, final_loss: float,
             **extra) -> dict:
  """One row with the peer's fields."""
  return dict(workload=WORKLOAD, impl=impl, seeds=seeds, epochs=epochs,
              seconds=round(seconds, 3), seed_epochs_per_s=round(seeds * epochs / seconds, 1),
              final_loss=final_loss, **extra)


def parse_options(items) -> dict:
  """``["name=value", ...]`` as XLA compile options (``true`` / ``false`` become booleans)."""
  options = {}
  for item in items:
    name, _, value = item.partition("=")
    options[name] = {"true": True, "false": False}.get(value.lower(), value)
  return options


def main():
  parser = common.parser(__doc__.splitlines()[0], "torch_teacher_student.py")
  parser.add_argument("--seeds", type=int, default=64, help="seeds of the W1 figure")
  parser.add_argument("--epochs", type=int, default=2000)
  parser.add_argument("--scaling", type=int, nargs="*", default=[8, 64, 256],
                      help="seed counts of the JAX scaling rows")
  parser.add_argument("--sequential-seeds", type=int, default=4,
                      help="seeds of the one-seed-at-a-time JAX rows (0: skip)")
  parser.add_argument("--groups", type=int, default=1,
                      help="independent vmapped scans the seeds are split into")
  parser.add_argument("--tuned", nargs="*", default=list(TUNED),
                      help="XLA compile options NAME=VALUE of the tuned rows (none: no tuned rows)")
  parser.add_argument("--peer-seeds", type=int, default=None,
                      help="seeds of the peers (default: --seeds)")
  parser.add_argument("--wait-for", default="w2_lenet300|w3_tamade",
                      help="pgrep -f pattern of processes to wait for before measuring")
  args = parser.parse_args()
  waited = common.wait_for_processes(args.wait_for) if args.wait_for else 0.0
  load_start = common.loadavg()

  variants = {"default": {}}
  if args.tuned:
    variants["tuned"] = parse_options(args.tuned)
  counts = sorted(set(args.scaling) | {args.seeds})
  # The runner's default layout for these problems (module docstring).
  seed_arrays = {n: sharding.layout_for("seeds", n).place(jnp.arange(n, dtype=jnp.int32))
                 for n in counts}
  programs = {}  # (variant, seeds or "sequential") -> compiled program
  for variant, options in variants.items():
    for n in counts:
      groups = args.groups if n % args.groups == 0 else 1
      programs[variant, n] = make_sweep(args.epochs, groups).lower(seed_arrays[n]).compile(options)
      jax.block_until_ready(programs[variant, n](seed_arrays[n]))  # Warm-up.
    if args.sequential_seeds:
      single = jax.jit(make_one_seed(args.epochs)).lower(jnp.int32(0)).compile(options)
      jax.block_until_ready(single(jnp.int32(0)))  # Warm-up.
      programs[variant, "sequential"] = single

  def run_sequential(single):
    start = time.perf_counter()
    loss = 0.0
    for seed in range(args.sequential_seeds):
      loss = float(jax.block_until_ready(single(jnp.int32(seed))))
    return time.perf_counter() - start, loss

  peer_args = ("--seeds", str(args.peer_seeds or args.seeds), "--epochs", str(args.epochs))
  rows: dict[str, list[dict]] = {}
  for _ in range(args.repeats):
    for variant, options in variants.items():
      suffix = "" if variant == "default" else "-tuned"
      for n in counts:
        losses, seconds = common.timed(programs[variant, n], seed_arrays[n])
        rows.setdefault(f"{variant}-{n}", []).append(rate_row(
            f"jax-vmap-scan{suffix}", n, args.epochs, seconds, float(jnp.mean(losses)),
            groups=args.groups if n % args.groups == 0 else 1, xla_options=options))
      if args.sequential_seeds:
        seconds, loss = run_sequential(programs[variant, "sequential"])
        rows.setdefault(f"{variant}-sequential", []).append(rate_row(
            f"jax-one-seed-at-a-time{suffix}", args.sequential_seeds, args.epochs, seconds, loss,
            xla_options=options))
    for impl in ("loop", "batched"):
      rows.setdefault(impl, []).append(common.run_peer(
          args.torch_python, args.peer, "--impl", impl, *peer_args, threads=args.peer_threads))

  medians = {name: common.median_row(r, RATE_FIELDS) for name, r in rows.items()}
  medians[f"default-{args.seeds}"].update(common.machine())
  for name in rows:
    common.emit(**medians[name])
  ratios = {}
  for variant in variants:
    rate = medians[f"{variant}-{args.seeds}"]["seed_epochs_per_s"]
    for peer in ("loop", "batched"):
      ratios[f"ratio_jax_{variant}_over_{peer}"] = round(
          rate / medians[peer]["seed_epochs_per_s"], 2)
      ratios[f"ratio_jax_{variant}_over_{peer}_per_repeat"] = [
          round(j["seed_epochs_per_s"] / p["seed_epochs_per_s"], 2)
          for j, p in zip(rows[f"{variant}-{args.seeds}"], rows[peer])]
  best = max(variants, key=lambda v: medians[f"{v}-{args.seeds}"]["seed_epochs_per_s"])
  over_loop = ratios[f"ratio_jax_{best}_over_loop"]
  over_batched = ratios[f"ratio_jax_{best}_over_batched"]
  common.emit(
      workload=WORKLOAD, seeds=args.seeds, epochs=args.epochs, **ratios, best=best,
      loop_target_met=over_loop >= TARGET_LOOP, loop_goal_met=over_loop >= GOAL_LOOP,
      batched_target_met=over_batched >= TARGET_BATCHED,
      batched_goal_met=over_batched >= GOAL_BATCHED,
      groups=args.groups, peer_threads=args.peer_threads, nproc=common.machine()["nproc"],
      waited_s=round(waited, 1), loadavg_start=load_start, loadavg_end=common.loadavg())


if __name__ == "__main__":
  main()
