"""Re-runs every run of a workdir with the current code and compares the results.

``python -m sparsejax.studies.rerun --workdir=NEW OLD_WORKDIR [--rtol=1e-9]``

For each row of ``OLD_WORKDIR/runs.csv`` the run's config is rebuilt from
its ``artifacts/<run_id>/config.json`` (fields renamed since are mapped, see
:data:`RENAMED`; fields added since keep their defaults), run into ``NEW``
and compared: the kept counts, epochs and unit counts must be equal, the
final losses and accuracies equal to ``rtol``. Prints one line per compared
value and the largest relative difference; exits with status 1 if any value
differs. A regression check after changing the library: run a set of
configs in float64 with the old code, then this with the new.
"""

from __future__ import annotations

import json
import math
import pathlib
import sys

import ml_collections
import pandas as pd
from absl import app, flags

from sparsejax import xla_flags
from sparsejax.runner import run
from sparsejax.runner.config import RENAMED_FIELDS, base_config

#: Old dotted name -> new name: BMRS's MLP sizes became run fields, and the
#: efficient-compression family's top-level fields moved to its sub-dict ``ec``
#: (``alpha`` -> ``ec.alpha``, ...); kept in the runner, which reloads old runs too.
RENAMED = RENAMED_FIELDS
#: Columns that must be equal, and columns equal to a relative tolerance.
EXACT = ("kept_params", "train_epochs", "finetune_epochs", "unit_compression", "kept_units")
CLOSE = ("final_train_loss", "final_val_loss", "final_test_loss", "final_train_accuracy",
         "final_val_accuracy", "final_test_accuracy")


def _flat(tree: dict, prefix: str = "") -> dict:
  out = {}
  for key, value in tree.items():
    if isinstance(value, dict):
      out.update(_flat(value, f"{prefix}{key}."))
    else:
      out[f"{prefix}{key}"] = value
  return out


def config_of(saved: dict) -> ml_collections.ConfigDict:
  """A current config with the values of a saved ``config.json``."""
  config = base_config()
  for name, value in _flat(saved).items():
    name = RENAMED.get(name, name)
    *parents, leaf = name.split(".")
    node = config
    for parent in parents:
      node = node[parent]
    node[leaf] = tuple(value) if isinstance(value, list) else value
  return config


def compare(old_workdir: pathlib.Path, new_workdir: pathlib.Path, rtol: float) -> bool:
  """Re-runs and compares (module docstring); returns whether everything agrees."""
  agree, largest = True, 0.0
  for _, old in pd.read_csv(old_workdir / "runs.csv").iterrows():
    saved = json.loads((old_workdir / "artifacts" / old["run_id"] / "config.json").read_text())
    config = config_of(saved)
    config.quiet = True
    [new] = run(config, new_workdir)
    for column in EXACT + CLOSE:
      if column not in old or column not in new or pd.isna(old[column]):
        continue
      a, b = float(old[column]), float(new[column])
      rel = abs(a - b) / max(abs(a), 1e-300)
      ok = a == b if column in EXACT else rel <= rtol
      if column in CLOSE:
        largest = max(largest, rel)
      agree &= ok
      print(f"{old['run_id']} (seed {old['seed']}) {column}: old {a!r} new {b!r} "
            f"rel {rel:.2e}{'' if ok else '  <-- differs'}")
  print(f"largest relative difference of the final losses and accuracies: {largest:.3e}")
  return agree and not math.isnan(largest)


def main(argv):
  if len(argv) != 2:
    raise app.UsageError("give the old workdir after the flags")
  sys.exit(0 if compare(pathlib.Path(argv[1]), pathlib.Path(flags.FLAGS.workdir),
                        flags.FLAGS.rtol) else 1)


if __name__ == "__main__":
  xla_flags.apply()  # before JAX starts a backend: XLA reads XLA_FLAGS once
  flags.DEFINE_string("workdir", None, "Where the re-runs go.", required=True)
  flags.DEFINE_float("rtol", 1e-9, "Relative tolerance of the losses and accuracies.")
  app.run(main)
