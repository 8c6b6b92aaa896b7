"""Pairwise cosine similarity of the masks that different criteria chose.

``python -m sparsejax.studies.mask_similarity WORKDIR [WORKDIR ...]
--sparsity=0.7 --random=5 --out=DIR`` reads the final mask (``masks.npz``)
of every finished ``method="anneal"`` run at that sparsity, adds ``--random``
fresh uniformly random masks with the same number of kept entries, and
writes the matrix of cosine similarities x 100 (EEE 198, reference notes
``jax_ecosystem_and_annealing.md``, section 2.7) as
``<name>_<sparsity>.csv`` and a heatmap ``<name>_<sparsity>.png`` in
``DIR`` (``--name``, default ``mask_similarity``).

Each mask is one 0/1 vector over every prunable entry; the similarity of
``a`` and ``b`` is :math:`100 |a \\wedge b| / \\sqrt{|a| |b|}`
(:func:`sparsejax.masks.cosine_similarity`). For two masks keeping ``k`` of
``N`` entries it is ``100 * overlap / k``, so two independent random masks
score about ``100 (1 - sparsity)``.
"""

from __future__ import annotations

import pathlib
from typing import Mapping

import numpy as np
import pandas as pd
from absl import app, flags
from matplotlib import figure
from matplotlib.backends import backend_agg

from sparsejax import masks as masks_lib
from sparsejax import results
from sparsejax.studies.report import finished

_SPARSITY = flags.DEFINE_float("sparsity", 0.7, "the runs' anneal.sparsity")
_RANDOM = flags.DEFINE_integer("random", 5, "fresh random masks of equal density to add")
_SEED = flags.DEFINE_integer("seed", 0, "seed of the fresh random masks")
_OUT = flags.DEFINE_string("out", ".", "folder for the CSV and the heatmap")
_NAME = flags.DEFINE_string("name", "mask_similarity", "file name of the CSV and the heatmap, "
                            "before _<sparsity>")


def run_masks(runs: pd.DataFrame, workdir: pathlib.Path,
              sparsity: float) -> dict[str, dict[str, np.ndarray]]:
  """``{label: mask tree}`` of the finished anneal runs at ``sparsity`` in ``workdir``.

  Labels are ``"<criterion> K=<k_epochs> s<seed>"`` in the order of the runs table.
  """
  if runs.empty or "anneal.criterion" not in runs:
    return {}
  runs = runs[(runs["method"] == "anneal") & ((runs["anneal.sparsity"] - sparsity).abs() < 1e-9)]
  runs = finished(runs)
  return {f"{r['anneal.criterion']} K={int(r['anneal.k_epochs'])} s{int(r['seed'])}":
          results.read_masks(workdir / results.ARTIFACTS_DIR / r["run_id"])
          for _, r in runs.iterrows()}


def random_masks(like: Mapping[str, np.ndarray], count: int, seed: int) -> dict[str, dict]:
  """``count`` uniformly random masks shaped as ``like`` with as many kept entries."""
  names = sorted(like)
  sizes = [like[name].size for name in names]
  kept = int(sum(np.count_nonzero(like[name]) for name in names))
  rng = np.random.default_rng(seed)
  out = {}
  for i in range(count):
    flat = np.zeros(sum(sizes), bool)
    flat[rng.choice(flat.size, kept, replace=False)] = True
    parts = np.split(flat, np.cumsum(sizes)[:-1])
    out[f"random mask {i}"] = {name: part.reshape(like[name].shape)
                               for name, part in zip(names, parts)}
  return out


def similarity_matrix(masks: Mapping[str, Mapping[str, np.ndarray]]) -> pd.DataFrame:
  """Cosine similarity x 100 of every pair of mask trees, labelled both ways."""
  labels = list(masks)
  matrix = np.empty((len(labels), len(labels)))
  for i, a in enumerate(labels):
    for j in range(i, len(labels)):
      matrix[i, j] = matrix[j, i] = 100 * float(
          masks_lib.cosine_similarity(dict(masks[a]), dict(masks[labels[j]])))
  return pd.DataFrame(matrix, index=labels, columns=labels)


def draw_heatmap(matrix: pd.DataFrame, path: pathlib.Path, title: str) -> None:
  """The matrix as an annotated heatmap PNG (its own Agg canvas; no pyplot state)."""
  size = 1.2 + 0.45 * len(matrix)
  fig = figure.Figure(figsize=(size + 1.5, size), layout="constrained")
  backend_agg.FigureCanvasAgg(fig)
  ax = fig.add_subplot()
  image = ax.imshow(matrix.to_numpy(), vmin=0, vmax=100, cmap="viridis")
  ax.set_xticks(range(len(matrix)), matrix.columns, rotation=90, fontsize="small")
  ax.set_yticks(range(len(matrix)), matrix.index, fontsize="small")
  for i in range(len(matrix)):
    for j in range(len(matrix)):
      value = matrix.iat[i, j]
      ax.text(j, i, f"{value:.0f}", ha="center", va="center", fontsize="x-small",
              color="black" if value > 60 else "white")
  ax.set_title(title)
  fig.colorbar(image, ax=ax, label="cosine similarity x 100")
  fig.savefig(path, format="png", dpi=100)


def main(argv):
  if len(argv) < 2:
    raise app.UsageError("give one or more workdirs")
  masks = {}
  for workdir in argv[1:]:
    workdir = pathlib.Path(workdir)
    masks.update(run_masks(results.read_runs(workdir), workdir, _SPARSITY.value))
  if not masks:
    raise app.UsageError(f"no finished anneal runs at sparsity {_SPARSITY.value} in {argv[1:]}")
  masks.update(random_masks(next(iter(masks.values())), _RANDOM.value, _SEED.value))
  matrix = similarity_matrix(masks)
  out = pathlib.Path(_OUT.value)
  out.mkdir(parents=True, exist_ok=True)
  stem = f"{_NAME.value}_{_SPARSITY.value:g}"
  matrix.round(3).to_csv(out / f"{stem}.csv")
  draw_heatmap(matrix, out / f"{stem}.png",
               f"Mask cosine similarity x 100, sparsity {100 * _SPARSITY.value:g} %")
  print(matrix.round(1).to_string())
  print(f"wrote {out / stem}.csv and .png")


if __name__ == "__main__":
  app.run(main)
