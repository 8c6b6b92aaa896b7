"""Measured inference latency of the dense, masked and compacted models of finished runs.

``python -m sparsejax.studies.speedup WORKDIR [WORKDIR ...]`` reloads every healthy
finished run of each workdir (:func:`sparsejax.runner.load_run`), compacts its masked
model (:func:`sparsejax.compaction.compact`) and times one forward pass (evaluation
mode, ``jax.jit``, inputs on the device) of

* the **dense** model: the trained parameters as they are, unmasked;
* the **masked** model: the same program with the pruned entries at zero (what
  masks alone give: the same cost);
* the **compacted** model: the smaller dense one,

at each ``--batch_sizes`` (default 1 and 256): the median over ``--rounds`` calls
after three warm-up calls, on the default JAX device (the CPU here; a GPU where
there is one). The table (``WORKDIR/speedup.md`` and ``speedup.csv``) gives the
parameters, multiply-accumulates and XLA FLOPs per example of the dense and compacted
models (:mod:`sparsejax.compaction.cost`), the three latencies, the measured speed-up
dense / compacted and the one the FLOPs predict. Each run's compacted model is also
exported to ``WORKDIR/artifacts/RUN_ID/compact`` (:mod:`sparsejax.compaction.export`:
an orbax checkpoint that :func:`sparsejax.runner.load_compacted` reloads, and a
``compact.npz`` with the widths), compacted with ``gather=False`` so that its
variables fit the same architecture with smaller widths.
"""

from __future__ import annotations

import pathlib
import statistics
import time
from typing import Callable, Sequence

import jax
import pandas as pd
from absl import app, flags

from sparsejax import masks as masks_lib
from sparsejax import results
from sparsejax.compaction import compact, cost, export
from sparsejax.runner import load_run
from sparsejax.runner.reload import compact_dir
from sparsejax.studies.report import finished, markdown

_BATCH_SIZES = flags.DEFINE_list("batch_sizes", ["1", "256"], "Batch sizes to time.")
_ROUNDS = flags.DEFINE_integer("rounds", 50, "Timed calls per model and batch size.")
_RUN_IDS = flags.DEFINE_list("run_ids", None, "Only these runs (default: every finished one).")

COLUMNS = ("run_id", "method", "model", "device", "batch", "dense_params", "compact_params",
           "dense_macs", "compact_macs", "dense_flops", "compact_flops", "dense_ms", "masked_ms",
           "compact_ms", "speedup", "flops_ratio")


def median_latency(fn: Callable, *args, rounds: int) -> float:
  """The median wall time of ``fn(*args)`` (seconds, results awaited) over ``rounds``
  calls, after three warm-up calls (the first compiles)."""
  for _ in range(3):
    jax.block_until_ready(fn(*args))
  times = []
  for _ in range(rounds):
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def measure_run(workdir: pathlib.Path, run_id: str, batch_sizes: Sequence[int],
                rounds: int) -> list[dict]:
  """The table's rows of one run (module docstring), exporting its compacted model."""
  run = load_run(workdir, run_id)
  model, state = run.parts.model, run.state
  dense = {"params": state.params, **state.model_state}
  masked = {**dense, "params": masks_lib.apply(state.masks, state.params)}
  dtype = jax.tree.leaves(state.params)[0].dtype
  example = jax.ShapeDtypeStruct((1, *model.input_shape), dtype)
  compacted = compact(model, masked, example=example)
  export.save(compact(model, masked, example=example, gather=False),
              compact_dir(workdir, run_id))
  forward, small = jax.jit(compacted.forward), jax.jit(compacted.apply)
  sizes = {}
  for name, fn, variables in (("dense", compacted.forward, dense),
                              ("compact", compacted.apply, compacted.variables)):
    sizes.update({f"{name}_{k}": v for k, v in cost.summary(fn, variables, example).items()})
  rows = []
  for batch in batch_sizes:
    x = jax.random.normal(jax.random.key(batch), (batch, *model.input_shape), dtype)
    ms = {name: 1e3 * median_latency(fn, variables, x, rounds=rounds) for name, fn, variables in
          (("dense", forward, dense), ("masked", forward, masked),
           ("compact", small, compacted.variables))}
    rows.append({"run_id": run_id, "method": run.config.method,
                 "model": run.config.model or type(model.module).__name__,
                 "device": jax.devices()[0].device_kind, "batch": batch, **sizes,
                 **{f"{k}_ms": v for k, v in ms.items()},
                 "speedup": ms["dense"] / ms["compact"],
                 "flops_ratio": sizes["dense_flops"] / sizes["compact_flops"]})
  return rows


def speedup_table(workdir: pathlib.Path, batch_sizes: Sequence[int], rounds: int,
                  run_ids: Sequence[str] | None = None) -> pd.DataFrame:
  """Measures every healthy finished run of ``workdir`` (or ``run_ids``) and writes
  ``speedup.csv`` and ``speedup.md`` there; returns the table."""
  runs = finished(results.read_runs(workdir))
  ids = list(run_ids) if run_ids else list(runs["run_id"])
  rows = [row for run_id in ids for row in measure_run(workdir, run_id, batch_sizes, rounds)]
  table = pd.DataFrame(rows, columns=list(COLUMNS))
  table.to_csv(workdir / "speedup.csv", index=False)
  (workdir / "speedup.md").write_text(markdown(table) + "\n")
  return table


def main(argv):
  workdirs = [pathlib.Path(w) for w in argv[1:]]
  if not workdirs:
    raise app.UsageError("give one or more workdirs")
  batch_sizes = [int(b) for b in _BATCH_SIZES.value]
  for workdir in workdirs:
    table = speedup_table(workdir, batch_sizes, _ROUNDS.value, _RUN_IDS.value)
    print(f"{workdir}:\n{markdown(table)}\n")


if __name__ == "__main__":
  app.run(main)
