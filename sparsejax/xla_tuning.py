"""Choosing XLA's CPU options by measuring them on the CPU at hand.

XLA's CPU compiler hands parts of a program to libraries (YNNPACK for the
matrix products, the convolutions, element-wise ops and reductions), and
which choice is fastest depends on the processor: on a 2-core Intel Xeon
(AVX-512) YNNPACK's convolutions made a LeNet-5-Caffe step 1.4x slower
(docs/benchmarks.md, W5), so sparsejax gave YNNPACK the products only; on
the 2-core AMD EPYC (Zen 4) of issue 40 YNNPACK's products were the slower
choice too: turning it off entirely made a vmapped seed sweep 1.2x and a
dense step with a penalty 1.1x faster (docs/benchmarks.md, "XLA options per
machine"). So sparsejax does not set one option for every machine:

* :data:`sparsejax.xla_flags.MEASURED` holds the choice measured on each kind
  of CPU (vendor and vector width) for a jaxlib version;
* ``python -m sparsejax.xla_tuning`` measures the :data:`CANDIDATES` on the
  machine at hand and writes the winner to the options cache
  (:func:`sparsejax.xla_flags.cache_path`), which
  :func:`sparsejax.xla_flags.apply` prefers for this exact CPU model and
  jaxlib.

The measurement: three probe programs, each a compiled ``lax.scan`` of the
library's train step (:data:`PROBES`: a convolutional network's steps, a
dense network's steps under a penalty, and a vmapped seed sweep of a small
MLP), are timed under every candidate, each candidate in its own process
(XLA reads its options once, when its backend starts), in alternating
rounds so that the machine's drift falls on every candidate alike. A
candidate's score is the geometric mean over the probes of its median time
over XLA's own default's; the lowest score wins if it beats XLA's default by
at least ``margin`` and is slower on no probe by more than ``margin``;
otherwise XLA's default is kept (no option is set). Run it alone on the
machine: a measurement under load chooses at random.

Usage::

  python -m sparsejax.xla_tuning [--rounds 3] [--margin 0.05] [--dry-run]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import optax

from sparsejax import masks, objectives, xla_flags
from sparsejax.models import MLP, get_model, lenet_300_100
from sparsejax.train import (CLASSIFICATION, REGRESSION, create_train_state, make_epoch_fn,
                             make_train_step)

YNN = "xla_cpu_experimental_ynn_fusion_type"
#: Candidate name -> the XLA options it sets (``{}``: XLA's own defaults).
CANDIDATES = {
    "xla_default": {},
    "ynn_dot": {YNN: "dot"},
    "ynn_off": {YNN: ""},
}
#: Every option a candidate may set.
OPTION_NAMES = sorted({name for options in CANDIDATES.values() for name in options})
#: The probe programs, timed in every candidate's process.
PROBES = ("conv_steps", "dense_penalty_steps", "mlp_seed_sweep")


def _probe_programs():
  """``{probe: (init, run, data)}``: ``init(key or keys)`` makes the state,
  ``run(state, data, key)`` is the compiled probe."""

  def scan_program(model, task, objective, x, y, batch):
    optimizer = optax.adam(1e-3)
    step = make_train_step(model, task, objective, optimizer, jit=False)
    epoch = make_epoch_fn(step, batch, shuffle=False, jit=False)

    def init(key):
      return create_train_state(key, model, x[:1], objective, optimizer,
                                prunable=masks.every_leaf)
    return init, epoch

  key = jax.random.key(0)
  programs = {}
  images = jax.random.uniform(key, (20 * 100, 28, 28, 1))
  labels = jax.random.randint(key, (20 * 100,), 0, 10)
  init, epoch = scan_program(get_model("lenet5_caffe"), CLASSIFICATION, objectives.plain(),
                             images, labels, 100)
  programs["conv_steps"] = (init, jax.jit(epoch), (images, labels))
  images = jax.random.uniform(key, (20 * 500, 784))
  labels = jax.random.randint(key, (20 * 500,), 0, 10)
  init, epoch = scan_program(lenet_300_100(), CLASSIFICATION, objectives.drr(1e-5, 10.0),
                             images, labels, 500)
  programs["dense_penalty_steps"] = (init, jax.jit(epoch), (images, labels))
  inputs = jax.random.uniform(key, (300, 2), minval=-1, maxval=1)
  targets = jnp.sin(3 * inputs[:, :1]) * inputs[:, 1:]
  init, epoch = scan_program(MLP(widths=(2, 25, 25, 1), activation="tanh"), REGRESSION,
                             objectives.drr(1e-4, 10.0), inputs, targets, 300)

  def sweep(states, data, key):
    def epochs(state):
      return jax.lax.scan(lambda s, k: (epoch(s, data, k)[0], None), state,
                          jax.random.split(key, 200))[0]
    return jax.vmap(epochs)(states)

  programs["mlp_seed_sweep"] = (jax.vmap(init), jax.jit(sweep), (inputs, targets))
  return programs


def measure_here(calls: int = 5) -> dict[str, float]:
  """Median seconds of one call of each probe in this process (compilation excluded)."""
  programs = _probe_programs()
  seconds = {}
  for name in PROBES:
    init, run, data = programs[name]
    keys = jax.random.split(jax.random.key(1), 64)
    state = init(keys if name == "mlp_seed_sweep" else keys[0])
    jax.block_until_ready(run(state, data, jax.random.key(2)))
    times = []
    for _ in range(calls):
      start = time.perf_counter()
      jax.block_until_ready(run(state, data, jax.random.key(2)))
      times.append(time.perf_counter() - start)
    seconds[name] = statistics.median(times)
  return seconds


def flags_for(options: dict[str, str], environ=os.environ) -> str:
  """``XLA_FLAGS`` for a candidate: the caller's device count (or one per core) and ``options``."""
  present = [f for f in environ.get("XLA_FLAGS", "").split()
             if not any(f.startswith(f"--{name}=") for name in OPTION_NAMES)]
  if not any(f.startswith(f"--{xla_flags.DEVICE_COUNT}=") for f in present):
    present.append(f"--{xla_flags.DEVICE_COUNT}={xla_flags.host_device_count()}")
  return " ".join(present + [f"--{name}={value}" for name, value in options.items()])


def measure_candidate(options: dict[str, str]) -> dict[str, float]:
  """:func:`measure_here` in a fresh process whose XLA_FLAGS are :func:`flags_for` ``options``."""
  env = dict(os.environ, XLA_FLAGS=flags_for(options))
  done = subprocess.run([sys.executable, "-m", "sparsejax.xla_tuning", "--probe"],
                        env=env, capture_output=True, text=True, check=False)
  if done.returncode != 0:
    raise RuntimeError(f"the probe with XLA options {options} failed:\n{done.stderr[-2000:]}")
  return json.loads(done.stdout.strip().splitlines()[-1])


def choose(medians: dict[str, dict[str, float]], margin: float) -> tuple[str, dict[str, float]]:
  """The winning candidate and every candidate's score (geometric mean of time / XLA default's).

  The lowest score wins if it is below ``1 - margin`` and no probe of it is slower than
  ``1 + margin`` times XLA's default; otherwise ``"xla_default"``.
  """
  base = medians["xla_default"]
  ratios = {name: {p: t / base[p] for p, t in probes.items()} for name, probes in medians.items()}
  scores = {name: math.exp(statistics.fmean(math.log(r) for r in rs.values()))
            for name, rs in ratios.items()}
  eligible = [name for name in scores
              if scores[name] <= 1 - margin and max(ratios[name].values()) <= 1 + margin]
  return (min(eligible, key=scores.get) if eligible else "xla_default"), scores


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--rounds", type=int, default=3, help="alternating rounds of candidates")
  parser.add_argument("--margin", type=float, default=0.05,
                      help="the fraction a candidate must gain over XLA's default to be chosen")
  parser.add_argument("--candidates", default=",".join(CANDIDATES),
                      help=f"comma-separated, among {', '.join(CANDIDATES)}")
  parser.add_argument("--dry-run", action="store_true", help="measure, but write no cache")
  parser.add_argument("--probe", action="store_true", help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  if args.probe:
    print(json.dumps(measure_here()))
    return
  names = [n for n in args.candidates.split(",") if n]
  unknown = sorted(set(names) - set(CANDIDATES))
  if unknown or "xla_default" not in names:
    parser.error(f"--candidates must include xla_default and name only {', '.join(CANDIDATES)}; "
                 f"got {args.candidates!r}")
  runs = {name: {p: [] for p in PROBES} for name in names}
  for round_ in range(args.rounds):
    for name in names:
      for probe, seconds in measure_candidate(CANDIDATES[name]).items():
        runs[name][probe].append(seconds)
    print(f"round {round_ + 1} of {args.rounds} done", flush=True)
  medians = {name: {p: statistics.median(ts) for p, ts in probes.items()}
             for name, probes in runs.items()}
  winner, scores = choose(medians, args.margin)
  for name in names:
    times = ", ".join(f"{p} {1e3 * medians[name][p]:.1f} ms" for p in PROBES)
    print(f"{name:12s} score {scores[name]:.3f}  ({times})")
  machine = xla_flags.cpu_signature()
  print(f"chosen for {machine['model']} ({machine['vendor']}, {machine['vector_width']}): "
        f"{winner} {CANDIDATES[winner]}")
  if not args.dry_run:
    path = xla_flags.record_choice(CANDIDATES[winner], machine, measured={
        "scores": scores, "median_seconds": medians, "rounds": args.rounds,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())})
    print(f"written to {path}")


if __name__ == "__main__":
  main()
