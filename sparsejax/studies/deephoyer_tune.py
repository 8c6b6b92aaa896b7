"""Tunes DeepHoyer's (decay, sensitivity) on the validation split.

``python -m sparsejax.studies.deephoyer_tune --config=CONFIG --workdir=DIR
--decays=2e-4,1e-4 --sensitivities=0.03,0.05,0.1 [--max_nonzero=2.0]``

For every decay, one run trains the regularised network (``max_epochs``,
nothing pruned: the threshold rule at 0, no finetuning) in
``DIR/train_<decay>``; for every sensitivity, a run starts from it
(``init_from``), prunes by the config's rule at that sensitivity and
finetunes, in ``DIR/prune_<decay>``. The regularised training is shared by
all sensitivities of a decay, so a grid of D decays and S sensitivities
costs D trainings and D x S finetunings, and a later grid with other
finetuning settings (``--config.deephoyer.finetune_lr=...``) reuses the
trainings. Every run resumes and is skipped when finished, as any run.

The table lists each pair's nonzero %, validation accuracy and test
accuracy (mean over the config's seeds) and marks the pair with the best
validation accuracy among those at most ``--max_nonzero`` % nonzero: the
choice uses the validation split only (the test column is printed, never
used).
"""

from __future__ import annotations

import pathlib

import ml_collections
import pandas as pd
from absl import app, flags
from ml_collections import config_flags

from sparsejax import xla_flags
from sparsejax.recipes import deephoyer
from sparsejax.runner import run
from sparsejax.studies import cli
from sparsejax.studies.report import markdown


def training_config(config: ml_collections.ConfigDict, decay: float) -> ml_collections.ConfigDict:
  """The regularised training alone: nothing pruned, no finetuning.

  The pruning and finetuning fields are set to fixed values, so grids that
  differ only there (another rule, finetuning rate or length) share it.
  """
  config = config.copy_and_resolve_references()
  config.experiment_name = f"{config.experiment_name}_train"
  config.deephoyer.decay = decay
  config.deephoyer.rule, config.deephoyer.sensitivity = "threshold", 0.0
  unused = deephoyer.defaults()["deephoyer"]
  config.deephoyer.finetune_lr = unused.finetune_lr
  config.deephoyer.finetune_weight_decay = unused.finetune_weight_decay
  config.finetuning_max_epochs = config.finetuning_min_epochs = 0
  return config


def pruning_config(config: ml_collections.ConfigDict, decay: float, sensitivity: float,
                   trained: pathlib.Path) -> ml_collections.ConfigDict:
  """Prune the trained runs of ``trained`` at ``sensitivity``, then finetune."""
  config = config.copy_and_resolve_references()
  config.deephoyer.decay = decay  # recorded in the row; no regularised epoch runs
  config.deephoyer.sensitivity = sensitivity
  config.init_from = str(trained)
  config.max_epochs = config.min_epochs = 0
  return config


def grid(config: ml_collections.ConfigDict, workdir: pathlib.Path, decays, sensitivities
         ) -> pd.DataFrame:
  """Runs the grid (resuming); one row per (decay, sensitivity), means over seeds."""
  rows = []
  for decay in decays:
    trained = workdir / f"train_{decay:g}"
    run(training_config(config, decay), trained)
    for sensitivity in sensitivities:
      seeds = pd.DataFrame(run(pruning_config(config, decay, sensitivity, trained),
                               workdir / f"prune_{decay:g}"))
      rows.append({"decay": decay, "sensitivity": sensitivity, "seeds": len(seeds),
                   "nonzero %": 100 * seeds["density"].mean(),
                   "val accuracy %": 100 * seeds["final_val_accuracy"].mean(),
                   "test accuracy %": 100 * seeds["final_test_accuracy"].mean()})
  return pd.DataFrame(rows)


def choose(frame: pd.DataFrame, max_nonzero: float) -> pd.DataFrame:
  """Marks the best validation accuracy at most ``max_nonzero`` % nonzero."""
  frame = frame.copy()
  frame["chosen"] = ""
  allowed = frame[frame["nonzero %"] <= max_nonzero]
  if not allowed.empty:
    frame.loc[allowed["val accuracy %"].idxmax(), "chosen"] = "<-"
  return frame.round({"nonzero %": 3, "val accuracy %": 2, "test accuracy %": 2})


def main(argv):
  cli.start(argv, _CONFIG.value)
  f = flags.FLAGS
  frame = grid(_CONFIG.value, pathlib.Path(f.workdir), [float(d) for d in f.decays],
               [float(s) for s in f.sensitivities])
  print(markdown(choose(frame, f.max_nonzero)))


if __name__ == "__main__":
  xla_flags.apply()  # before JAX starts a backend: XLA reads XLA_FLAGS once
  _CONFIG = config_flags.DEFINE_config_file("config", None, "A DeepHoyer config file.")
  flags.DEFINE_string("workdir", None, "Where the grid's runs go.")
  flags.DEFINE_list("decays", None, "Regulariser decays to train with.")
  flags.DEFINE_list("sensitivities", None, "Pruning sensitivities to try on each.")
  flags.DEFINE_float("max_nonzero", 100.0, "Choose among pairs at most this nonzero %.")
  flags.mark_flags_as_required(["config", "workdir", "decays", "sensitivities"])
  app.run(main)
