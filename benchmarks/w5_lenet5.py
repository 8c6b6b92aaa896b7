"""Workload W5: LeNet-5-Caffe and BMRS LeNet-5 training steps on the CPU, beside PyTorch.

Three train steps, each timed as the runner runs it (its compiled epoch, a
``lax.scan`` of ``make_train_step`` over the batches, one call per repeat):

* ``lenet5_caffe``: LeNet-5-Caffe on 28x28x1 images, batch 100, Adam 1e-3,
  cross-entropy (:mod:`sparsejax.models.lenet`);
* ``bmrs_lenet5/per_batch`` and ``bmrs_lenet5/per_element``: the BMRS
  LeNet-5 on 32x32x1 images, batch 128, Adam 1.4e-3, cross-entropy plus the
  layer-mean KL of the log-uniform gates, the gate noise drawn once per unit
  and batch or per activation element
  (:func:`sparsejax.objectives.log_uniform.log_uniform_gates`).

Images and labels are drawn once at random. The PyTorch peer
(``benchmarks/peers/torch_lenet5.py``) trains the same networks with the same
batches, optimiser and objective (the same truncated log-normal noise), once
with ``OMP_NUM_THREADS=1`` and once with 2. Each JAX epoch is compiled once;
then every repeat is a round over all cases (JAX, then the peer with each
thread count), so that the machine's drift through a run (its speed varies
by 10 % over minutes) falls on every case alike. Figures: milliseconds per
step and images per second (medians over the repeats, compilation
excluded), the ratios JAX / PyTorch (> 1: JAX faster), and the per-element
step's time over the per-batch step's (the ratio of the medians, and each
round's own ratio). The issue's goals:
JAX at least as fast as the one-thread peer, per-element at most 1.5x
per-batch.

Usage (from the repository root, alone on the machine)::

  .venv/bin/python benchmarks/w5_lenet5.py [--steps 50] [--repeats 5] [--threads 1,2] \\
      [--cases lenet5_caffe,bmrs_lenet5/per_batch,bmrs_lenet5/per_element] [--no-peer]
"""

from __future__ import annotations

import time
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

import common
from sparsejax import masks, objectives
from sparsejax.models import get_model
from sparsejax.objectives.log_uniform import log_uniform_gates
from sparsejax.train import CLASSIFICATION, create_train_state, make_epoch_fn, make_train_step

CLASSES = 10
PER_ELEMENT_GOAL, PEER_GOAL = 1.5, 1.0


class Case(NamedTuple):
  architecture: str
  noise: str | None
  batch: int
  side: int
  lr: float


CASES = {
    "lenet5_caffe": Case("lenet5_caffe", None, 100, 28, 1e-3),
    "bmrs_lenet5/per_batch": Case("bmrs_lenet5", "per_batch", 128, 32, 1.4e-3),
    "bmrs_lenet5/per_element": Case("bmrs_lenet5", "per_element", 128, 32, 1.4e-3),
}


def make_epoch(case: Case):
  model = get_model(case.architecture)
  if case.noise is None:
    objective = objectives.plain()
  else:
    objective = log_uniform_gates(model.gate_sites(), noise=case.noise)
  optimizer = optax.adam(case.lr)
  step = make_train_step(model, CLASSIFICATION, objective, optimizer, jit=False)
  epoch = jax.jit(make_epoch_fn(step, case.batch, shuffle=False, jit=False), donate_argnums=0)

  def init(key, x):
    return create_train_state(key, model, x[:1], objective, optimizer,
                              prunable=masks.every_leaf)
  return init, epoch


def compiled_jax(name: str, steps: int, seed: int = 0) -> Callable[[], dict]:
  """Compiles the case's epoch once; the returned function times one more epoch per call.

  Every call continues training from the last call's state, on the same
  ``steps`` batches, with the same key (the noise draws repeat: timing only).
  """
  case = CASES[name]
  data_key, init_key, warm_key, key = jax.random.split(jax.random.key(seed), 4)
  x = jax.random.uniform(data_key, (case.batch * steps, case.side, case.side, 1), jnp.float32)
  y = jax.random.randint(jax.random.fold_in(data_key, 1), (case.batch * steps,), 0, CLASSES)
  init, epoch = make_epoch(case)
  state, _ = jax.block_until_ready(epoch(init(init_key, x), (x, y), warm_key))  # Compiles.
  box = [state]

  def run() -> dict:
    start = time.perf_counter()
    box[0], metrics = jax.block_until_ready(epoch(box[0], (x, y), key))
    seconds = time.perf_counter() - start
    return dict(workload=f"W5_{name}", impl="jax-lax-scan", batch=case.batch, steps=steps,
                seconds=round(seconds, 4), ms_per_step=round(1e3 * seconds / steps, 3),
                images_per_s=round(case.batch * steps / seconds, 1),
                loss=round(float(metrics["loss"]), 4))
  return run


def peer_args(name: str, steps: int) -> list[str]:
  case = CASES[name]
  args = ["--model", case.architecture, "--batch", str(case.batch), "--steps", str(steps)]
  return args + (["--noise", case.noise] if case.noise else [])


def main():
  p = common.parser(__doc__.splitlines()[0], "torch_lenet5.py")
  p.add_argument("--steps", type=int, default=50, help="timed training steps per repeat")
  p.add_argument("--cases", default=",".join(CASES))
  p.add_argument("--threads", default="1,2", help="OMP_NUM_THREADS values for the peer")
  p.add_argument("--no-peer", action="store_true", help="JAX only (the smoke test)")
  p.set_defaults(peer=str(common.REPO / "benchmarks" / "peers" / "torch_lenet5.py"), repeats=5)
  args = p.parse_args()
  names = common.listed(p, "--cases", args.cases, CASES)
  threads = [int(t) for t in args.threads.split(",")]
  load_start = common.loadavg()
  machine = common.machine()
  runs = {name: compiled_jax(name, args.steps) for name in names}
  jax_rows = {name: [] for name in names}
  peer_rows = {name: {t: [] for t in threads} for name in names}
  for _ in range(args.repeats):  # Rounds over every case, so that drift hits all alike.
    for name in names:
      jax_rows[name].append(runs[name]())
      if not args.no_peer:
        for t in threads:
          peer_rows[name][t].append(common.run_peer(
              args.torch_python, args.peer, *peer_args(name, args.steps), threads=t))
  ms = {}
  for name in names:
    jax_row = common.median_row(jax_rows[name], ("ms_per_step", "images_per_s", "seconds"))
    jax_row.update(machine)
    common.emit(**jax_row)
    ms[name] = jax_row["ms_per_step"]
    summary = dict(workload=f"W5_{name}", jax_ms_per_step=jax_row["ms_per_step"])
    for t, rows in peer_rows[name].items():
      if not rows:
        continue
      peer_row = common.median_row(rows, ("ms_per_step", "images_per_s", "seconds"))
      common.emit(**peer_row, omp_num_threads=t)
      ratio = peer_row["ms_per_step"] / jax_row["ms_per_step"]
      summary[f"torch_{t}t_ms_per_step"] = peer_row["ms_per_step"]
      summary[f"speed_ratio_jax_over_torch_{t}t"] = round(ratio, 3)
      if t == 1:
        summary["peer_goal_met"] = ratio >= PEER_GOAL
    common.emit(**summary, loadavg_start=load_start, loadavg_end=common.loadavg())
  if {"bmrs_lenet5/per_batch", "bmrs_lenet5/per_element"} <= ms.keys():
    ratio = ms["bmrs_lenet5/per_element"] / ms["bmrs_lenet5/per_batch"]
    paired = [e["ms_per_step"] / b["ms_per_step"] for e, b in zip(
        jax_rows["bmrs_lenet5/per_element"], jax_rows["bmrs_lenet5/per_batch"])]
    common.emit(workload="W5_bmrs_lenet5_noise", per_element_over_per_batch=round(ratio, 3),
                per_element_goal_met=ratio <= PER_ELEMENT_GOAL,
                per_round_ratios=[round(r, 3) for r in paired], device=machine["device"],
                loadavg_start=load_start, loadavg_end=common.loadavg())


if __name__ == "__main__":
  main()
