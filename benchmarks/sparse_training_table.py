"""The sparse-training table: sparsejax's methods beside jaxpruner's on the same set-up.

For each network (``lenet300``: LeNet-300-100, 20 epochs; ``lenet5``:
LeNet-5-Caffe, 5 epochs; both MNIST, ``configs/sparse_training_*_mnist.py``)
and each row:

* at 90, 95 and 98 % sparsity with the ERK budget: static, SET, RigL,
  gradual magnitude (gmp) and STE;
* 2:4 (uniform budget: N:M keeps 2 of every 4 in every kernel): magnitude
  and SR-STE,

sparsejax runs the row's config with 3 seeds vmapped (``python -m
sparsejax.main``, its workdir under ``--workdir``, so an interrupted row
resumes from its checkpoints), and jaxpruner the same network, data, split,
optimiser, epochs, budget and schedule with the same 3 seeds one after
another (``benchmarks/peers/jaxpruner_mnist.py``; jaxpruner has no SR-STE,
so the SR-STE row's peer is its STE at 2:4). Each finished row (both sides)
is appended to ``<workdir>/rows.jsonl`` and skipped when the command is run
again; ``--report`` prints the markdown table of the rows so far.

Usage (from the repository root)::

  .venv/bin/python benchmarks/sparse_training_table.py --network lenet300 [--workdir workdirs/sparse_training]
  .venv/bin/python benchmarks/sparse_training_table.py --network lenet300 --report
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, os.fspath(REPO))

from benchmarks import common  # noqa: E402,F401  (the XLA CPU options, before JAX starts)

#: network -> (config file, architecture).
NETWORKS = {"lenet300": ("configs/sparse_training_lenet300_mnist.py", "lenet_300_100"),
            "lenet5": ("configs/sparse_training_lenet5_mnist.py", "lenet5_caffe")}
#: sparsejax method -> jaxpruner algorithm.
PEER = {"static": "static_sparse", "set": "set", "rigl": "rigl", "gmp": "magnitude",
        "ste": "magnitude_ste", "sr_ste": "magnitude_ste"}
SEEDS = 3


def rows() -> list[dict]:
  """The table's rows: ``{"method", "density", "structure"}``."""
  out = [{"method": m, "density": d, "structure": "unstructured"}
         for d in (0.1, 0.05, 0.02) for m in ("static", "set", "rigl", "gmp", "ste")]
  out += [{"method": m, "density": 0.5, "structure": "2:4"} for m in ("gmp", "sr_ste")]
  return out


def row_key(network: str, row: dict) -> str:
  return f"{network}/{row['method']}/{row['structure']}/{row['density']}"


def overrides(row: dict) -> list[str]:
  """The row's config fields (beyond its method's own)."""
  fields = [f"--config.pruning.density={row['density']}", f"--config.seeds={SEEDS}",
            f"--config.sparse.structure={row['structure']}", "--config.quiet=True"]
  if row["structure"] != "unstructured":
    fields.append("--config.sparse.distribution=uniform")
  return fields


def run_sparsejax(network: str, row: dict, workdir: pathlib.Path) -> dict:
  """Runs the row with ``python -m sparsejax.main`` and reads its seeds' rows."""
  config_file = NETWORKS[network][0]
  folder = workdir / "sparsejax" / row_key(network, row).replace("/", "_")
  command = [sys.executable, "-m", "sparsejax.main", f"--config={config_file}:{row['method']}",
             f"--workdir={folder}", *overrides(row)]
  start = time.time()
  subprocess.run(command, check=True, cwd=REPO)
  import csv  # pylint: disable=import-outside-toplevel
  with open(folder / "runs.csv", newline="") as f:
    records = [r for r in csv.DictReader(f) if r["status"] == "finished"]
  records = records[-SEEDS:]
  accuracy = [100 * float(r["final_test_accuracy"]) for r in records]
  return {"test_accuracy": accuracy, "density": [float(r["sparse_density"]) for r in records],
          "seeds": [int(r["seed"]) for r in records], "wall_s": time.time() - start,
          "command": " ".join(["python -m sparsejax.main", *command[3:]])}


def run_jaxpruner(network: str, row: dict) -> dict:
  """Runs the row's peer set-up with jaxpruner, seed after seed."""
  from benchmarks.peers import jaxpruner_mnist as peer  # pylint: disable=import-outside-toplevel
  from sparsejax.runner import config as config_lib  # pylint: disable=import-outside-toplevel
  module = __import__(NETWORKS[network][0][:-3].replace("/", "."), fromlist=["get_config"])
  config = module.get_config(row["method"])
  config.pruning.density = row["density"]
  config.sparse.structure = row["structure"]
  if row["structure"] != "unstructured":
    config.sparse.distribution = "uniform"
  config_lib.validate(config)
  s, method = config.sparse, row["method"]
  if method in ("static", "ste", "sr_ste"):
    start, end = None, s.end_fraction  # static masks; STE recomputes every step
  elif method in ("set", "rigl"):
    start, end = s.frequency, s.end_fraction
  else:
    start, end = 0, s.end_fraction
  nm = row["structure"] != "unstructured"
  setup = peer.PeerSetup(
      architecture=NETWORKS[network][1], algorithm=PEER[method],
      sparsity=1.0 - row["density"], dist_type=s.distribution,
      sparsity_type="nm_2,4" if nm else None, update_freq=s.frequency,
      update_start_step=start, update_end_step=end, drop_fraction=s.drop_fraction,
      lr=config.lr, batch_size=config.train_batch_size, epochs=config.max_epochs,
      val_fraction=config.val_fraction, nm_axis=-2,
      dense_first=nm and network == "lenet5")
  start_time = time.time()
  results = [peer.train(setup, seed) for seed in range(SEEDS)]
  return {"test_accuracy": [100 * r["test_accuracy"] for r in results],
          "density": [r["density"] for r in results], "setup": setup._asdict(),
          "seconds_per_step": [r["seconds_per_step"] for r in results],
          "wall_s": time.time() - start_time}


def selected(row: dict, only: set[str]) -> bool:
  """Whether ``--only`` (methods, or ``method@density``; empty: every row) names the row."""
  return not only or row["method"] in only or f"{row['method']}@{row['density']}" in only


def mean_std(values: list[float]) -> str:
  if len(values) < 2:
    return f"{values[0]:.2f}"
  return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


def report(network: str, done: dict) -> str:
  lines = ["| sparsity | structure | method | sparsejax test acc. (%) | jaxpruner test acc. "
           "(%) | difference | density sparsejax / jaxpruner |",
           "|---|---|---|---|---|---|---|"]
  for row in rows():
    record = done.get(row_key(network, row))
    if record is None:
      continue
    ours, theirs = record["sparsejax"], record["jaxpruner"]
    diff = statistics.mean(ours["test_accuracy"]) - statistics.mean(theirs["test_accuracy"])
    lines.append(
        f"| {100 * (1 - row['density']):.0f} % | {row['structure']} | {row['method']} "
        f"({PEER[row['method']]}) | {mean_std(ours['test_accuracy'])} | "
        f"{mean_std(theirs['test_accuracy'])} | {diff:+.2f} | "
        f"{statistics.mean(ours['density']):.4f} / {statistics.mean(theirs['density']):.4f} |")
  return "\n".join(lines)


def main(argv=None) -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--network", choices=sorted(NETWORKS), required=True)
  p.add_argument("--workdir", default="workdirs/sparse_training")
  p.add_argument("--report", action="store_true", help="print the table of the rows so far")
  p.add_argument("--only", default="",
                 help="comma-separated rows to run, each a method (every density) or "
                      "method@density, e.g. 'ste@0.05,sr_ste' (default all)")
  args = p.parse_args(argv)
  workdir = pathlib.Path(args.workdir).resolve()
  workdir.mkdir(parents=True, exist_ok=True)
  table = workdir / "rows.jsonl"
  done = {}
  if table.exists():
    for line in table.read_text().splitlines():
      record = json.loads(line)
      done[record["key"]] = record
  if args.report:
    print(report(args.network, done))
    return
  only = set(filter(None, args.only.split(",")))
  # The straight-through rows last: jaxpruner sorts every kernel at every step (a
  # LeNet-300-100 STE row takes it about 40 minutes on 2 cores).
  for row in sorted(rows(), key=lambda r: r["method"] in ("ste", "sr_ste")):
    key = row_key(args.network, row)
    if key in done or not selected(row, only):
      continue
    print(f"{key}: sparsejax ...", flush=True)
    ours = run_sparsejax(args.network, row, workdir)
    print(f"{key}: jaxpruner ...", flush=True)
    theirs = run_jaxpruner(args.network, row)
    record = {"key": key, **row, "sparsejax": ours, "jaxpruner": theirs,
              "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    with open(table, "a") as f:
      f.write(json.dumps(record) + "\n")
    print(f"{key}: sparsejax {mean_std(ours['test_accuracy'])}, jaxpruner "
          f"{mean_std(theirs['test_accuracy'])}", flush=True)


if __name__ == "__main__":
  main()
