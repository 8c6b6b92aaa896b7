"""Constrained L0 runs beside the constrained-sparsity repository's results.

``python -m sparsejax.studies.l0_report WORKDIR [WORKDIR ...]`` prints one row
per model, constraint (model-wise ``M`` with one target, layer-wise ``L``
with one per gated layer), formulation (``l0.formulation``: ``lagrangian``
or ``augmented_lagrangian``), set-up (the initial weights, the input scaling
and the number of training images), multiplier learning rate (the augmented
Lagrangian's penalty coefficient) and epochs of the finished constrained
runs: the number of seeds, the final expected density
(the reference's ``l0_model``, %) with the largest distance of a seed from
its target, the test error at the end of training (the reference's
protocol), the test error after finetuning the purged network (runs with
``l0.finetune_epochs``; their set-up names the epochs, as it names
``l0.target_anneal_epochs``), and the purged
model's parameters and multiply-accumulates (% of the dense model), all
mean +- std over seeds;
beside them the reference's numbers for the same model and targets
(reference notes, section 5: the 3-seed MNIST sweeps, and the 5-seed table
rows with purged sizes).
"""

from __future__ import annotations

import ast
import pathlib

import pandas as pd
from absl import app

from sparsejax import results
from sparsejax.data import images
from sparsejax.studies.report import finished, markdown, mean_std

CONSTRAINED = ("lagrangian", "augmented_lagrangian")
#: The official MNIST training set, which ``val_fraction`` splits.
MNIST_TRAIN_IMAGES = 60_000
#: architecture -> the reference's model name.
MODELS = {"lenet_300_100": "MLP", "lenet5_caffe": "LeNet"}
#: (model, kind, targets) -> (l0 %, error %, params %, MACs %) of the reference
#: (section 5; None where the repository has no figure).
REFERENCE = {
    ("MLP", "M", (0.2,)): (22.77, 2.11, None, None),
    ("MLP", "M", (0.33,)): (34.17, 1.768, 26.58, 26.66),
    ("MLP", "M", (0.35,)): (36.25, 1.75, None, None),
    ("MLP", "M", (0.5,)): (50.89, 1.46, None, None),
    ("MLP", "M", (0.65,)): (65.37, 1.50, None, None),
    ("MLP", "M", (0.8,)): (80.02, 1.46, None, None),
    ("MLP", "L", (0.2,) * 3): (23.28, 2.82, None, None),
    ("MLP", "L", (0.3,) * 3): (30.87, 2.192, 7.59, 7.62),
    ("MLP", "L", (0.35,) * 3): (36.02, 2.03, None, None),
    ("MLP", "L", (0.5,) * 3): (50.42, 1.76, None, None),
    ("MLP", "L", (0.65,) * 3): (65.07, 1.72, None, None),
    ("MLP", "L", (0.8,) * 3): (80.08, 1.54, None, None),
    ("LeNet", "M", (0.1,)): (12.24, 1.012, 7.75, 46.47),
    ("LeNet", "M", (0.2,)): (20.27, 0.85, None, None),
    ("LeNet", "M", (0.35,)): (35.06, 0.71, None, None),
    ("LeNet", "M", (0.5,)): (50.58, 0.64, None, None),
    ("LeNet", "M", (0.65,)): (65.47, 0.72, None, None),
    ("LeNet", "M", (0.8,)): (80.36, 0.58, None, None),
    ("LeNet", "L", (0.5, 0.3, 0.7, 0.1)): (67.01, 0.906, 2.35, 14.86),
}


def _targets(value) -> tuple[float, ...]:
  targets = ast.literal_eval(value) if isinstance(value, str) else value
  return tuple(float(t) for t in (targets if isinstance(targets, (list, tuple)) else [targets]))


def _figure(value, digits: int = 2) -> str:
  return "" if value is None else f"{value:.{digits}f}"


def table(runs: pd.DataFrame) -> pd.DataFrame:
  """One row per model, targets, formulation and multiplier learning rate (module docstring)."""
  if runs.empty or "l0.formulation" not in runs:
    return pd.DataFrame()
  runs = finished(runs)
  runs = runs[runs["l0.formulation"].isin(CONSTRAINED)].copy()
  runs["targets"] = runs["l0.target_density"].map(_targets)
  runs["set-up"] = _setups(runs)
  rows = []
  for (architecture, targets, formulation, dual_lr, epochs, setup), group in sorted(
      runs.groupby(["architecture", "targets", "l0.formulation", "l0.dual_lr", "max_epochs",
                    "set-up"]),
      key=lambda item: item[0]):
    model = MODELS.get(architecture, architecture)
    kind = "M" if len(targets) == 1 else "L"
    density = 100 * group["l0_density"]
    layer_targets = [100 * t for t in targets]
    miss = (density - 100 * targets[0]).abs().max() if kind == "M" else max(
        (100 * group[f"l0_density_{column}"] - target).abs().max()
        for column, target in zip(_gated_layers(group), layer_targets))
    ref = REFERENCE.get((model, kind, targets), (None,) * 4)
    rows.append({
        "model": model, "constraint": f"{kind} {', '.join(f'{t:g}' for t in targets)}",
        "formulation": formulation, "set-up": setup, "dual lr": f"{dual_lr:g}",
        "epochs": int(epochs),
        "seeds": len(group),
        "expected density %": mean_std(density),
        "largest miss (points)": f"{miss:.2f}",
        "test error %": mean_std(100 * (1 - _trained_accuracy(group))),
        "after finetuning %": (mean_std(100 * (1 - group["final_test_accuracy"]))
                               if _finetune_epochs(group).gt(0).all() else ""),
        "purged params %": mean_std(group["purged_params_pct"]),
        "purged MACs %": mean_std(group["purged_macs_pct"]),
        "reference density %": _figure(ref[0]), "reference error %": _figure(ref[1], 3),
        "reference params %": _figure(ref[2]), "reference MACs %": _figure(ref[3])})
  return pd.DataFrame(rows)


def _column(runs: pd.DataFrame, name: str, default) -> pd.Series:
  """``runs[name]`` with ``default`` for runs from before the field (or without it)."""
  return runs[name].fillna(default) if name in runs else pd.Series(default, runs.index)


def _finetune_epochs(runs: pd.DataFrame) -> pd.Series:
  """``l0.finetune_epochs`` per run (0 for runs from before the field)."""
  return _column(runs, "l0.finetune_epochs", 0).astype(int)


def _trained_accuracy(group: pd.DataFrame) -> pd.Series:
  """The test accuracy at the end of training: before finetuning where a run finetuned."""
  return _column(group, "gated_test_accuracy", group["final_test_accuracy"])


def _setups(runs: pd.DataFrame) -> pd.Series:
  """Per run, ``"<weights>, <inputs>, <n> train"``: ``l0.weight_init``
  (``flax`` for runs from before the field), the input scaling (``[0, 1]``
  pixels or ``(x - offset) / scale``) and the number of training images
  (:func:`_training_images`); ``", gates per example"`` added for
  ``l0.sampling`` ``per_example``, ``", targets annealed over <n> epochs"``
  for ``l0.target_anneal_epochs``, ``", finetuned <n> epochs"`` for
  ``l0.finetune_epochs``."""
  weights = _column(runs, "l0.weight_init", "flax")
  offset, scale = _column(runs, "input_offset", 0.0), _column(runs, "input_scale", 1.0)
  inputs = [("[0, 1]" if o == 0 and s == 1 else f"(x - {o:g}) / {s:g}")
            for o, s in zip(offset, scale)]
  images = [_training_images(f, n) for f, n in zip(_column(runs, "val_fraction", 0.0),
                                                   _column(runs, "train_set_size", 0))]
  sampling = _column(runs, "l0.sampling", "per_batch")
  anneal = _column(runs, "l0.target_anneal_epochs", 0).astype(int)
  finetune = _finetune_epochs(runs)
  return pd.Series([f"{w}, {i}, {n:,} train" + (", gates per example" if s == "per_example"
                                                 else "")
                    + (f", targets annealed over {a} epochs" if a else "")
                    + (f", finetuned {f} epochs" if f else "")
                    for w, i, n, s, a, f in zip(weights, inputs, images, sampling, anneal,
                                                finetune)],
                   index=runs.index)


def _training_images(val_fraction: float, train_set_size: int) -> int:
  """The MNIST training images of a run: the rest of the 60,000 after
  ``val_fraction``, or the data module's default split (45,000 / 5,000) when
  it is 0; at most ``train_set_size`` when that is set."""
  n = (MNIST_TRAIN_IMAGES - round(val_fraction * MNIST_TRAIN_IMAGES) if val_fraction
       else images.DEFAULT_N_TRAIN)
  return min(n, int(train_set_size)) if train_set_size else n


def _gated_layers(group: pd.DataFrame) -> list[str]:
  """The gated layers with a density column, in the order of the layer-wise targets."""
  columns = [c[len("l0_density_"):] for c in group if c.startswith("l0_density_")
             and group[c].notna().all()]
  return sorted(columns, key=lambda name: (not name.startswith("Conv"), name))


def main(argv):
  if len(argv) < 2:
    raise app.UsageError("give one or more workdirs")
  runs = pd.concat([results.read_runs(pathlib.Path(w)) for w in argv[1:]], ignore_index=True)
  print(markdown(table(runs)))


if __name__ == "__main__":
  app.run(main)
