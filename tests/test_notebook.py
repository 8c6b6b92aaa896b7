"""notebooks/explore.ipynb executes on a finished tiny run (so it never rots)."""

import pathlib

import nbformat
import pytest
from nbclient import NotebookClient

from sparsejax.runner import run
from tests.test_runner import small_config

NOTEBOOK = pathlib.Path(__file__).resolve().parents[1] / "notebooks" / "explore.ipynb"


@pytest.mark.slow
def test_explore_notebook_runs_on_a_workdir(tmp_path, monkeypatch):
  workdir = tmp_path / "workdir"
  run(small_config(max_epochs=100, finetuning_max_epochs=50), workdir)
  monkeypatch.setenv("SPARSEJAX_WORKDIR", str(workdir))
  notebook = nbformat.read(NOTEBOOK, as_version=4)
  NotebookClient(notebook, timeout=300, kernel_name="python3",
                 resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute()
  outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
  assert not [o for o in outputs if o.output_type == "error"]
  images = [o for o in outputs if "image/png" in o.get("data", {})]
  assert len(images) >= 2  # the loss curves and the masks
  assert "recomputed" in str(notebook.cells[5].outputs)
