"""A compacted model saved two ways: an orbax checkpoint and a plain ``.npz``.

``save(compacted, directory)`` writes

* ``directory/variables/``: the compacted variables as an orbax checkpoint
  (:class:`sparsejax.checkpoint.Checkpointer`, checksummed), read back by
  :func:`load` into the variables of the same compaction
  (:func:`sparsejax.runner.load_compacted` does this for a finished run);
* ``directory/compact.npz``: every variable as a NumPy array under its path
  (``params/Conv_0/kernel``), and ``__widths__``, a JSON string
  ``{group: [units before, units kept]}`` naming each group by the layers that
  produce it. With ``gather=False`` compaction the arrays are those of the same
  architecture with the kept widths, so a model built with those widths (the
  user's own class, or any framework) loads them without sparsejax:
  :func:`read_npz` is twenty lines of NumPy.
"""

from __future__ import annotations

import json
import pathlib

import jax
import numpy as np

from sparsejax import masks as masks_lib
from sparsejax.checkpoint import Checkpointer

WIDTHS_KEY = "__widths__"


def save(compacted, directory: str | pathlib.Path) -> pathlib.Path:
  """Writes ``compacted``'s variables to ``directory`` (module docstring); returns it."""
  directory = pathlib.Path(directory)
  directory.mkdir(parents=True, exist_ok=True)
  widths = {name: list(w) for name, w in compacted.widths.items()}
  with Checkpointer(directory / "variables", max_to_keep=1) as checkpointer:
    step = (checkpointer.latest_step() or 0) + 1
    checkpointer.save(step, compacted.variables, {"widths": widths})
  flat = jax.tree_util.tree_flatten_with_path(compacted.variables)[0]
  arrays = {masks_lib.path_str(path): np.asarray(leaf) for path, leaf in flat}
  np.savez(directory / "compact.npz", **arrays, **{WIDTHS_KEY: np.array(json.dumps(widths))})
  return directory


def load(directory: str | pathlib.Path, like):
  """The variables saved by :func:`save` in ``directory``, restored into the structure
  and shapes of ``like`` (the variables of the same compaction)."""
  with Checkpointer(pathlib.Path(directory) / "variables", read_only=True) as checkpointer:
    variables, _ = checkpointer.restore(like=like)
  return variables


def read_npz(path: str | pathlib.Path) -> tuple[dict, dict[str, list[int]]]:
  """``(variables, widths)`` from a ``compact.npz``: nested dicts of NumPy arrays (the
  tree ``model.apply`` takes) and ``{group: [before, kept]}``."""
  nested: dict = {}
  with np.load(path) as saved:
    widths = json.loads(str(saved[WIDTHS_KEY]))
    for key in saved.files:
      if key == WIDTHS_KEY:
        continue
      *parents, leaf = key.split("/")
      node = nested
      for parent in parents:
        node = node.setdefault(parent, {})
      node[leaf] = saved[key]
  return nested, widths
