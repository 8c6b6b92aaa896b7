"""The notebooks execute (so they never rot): explore.ipynb on a finished tiny run,
your_model.ipynb on real Fashion-MNIST."""

import json
import pathlib

import nbformat
import pytest
from nbclient import NotebookClient

from sparsejax.runner import run
from tests.test_runner import small_config

NOTEBOOK = pathlib.Path(__file__).resolve().parents[1] / "notebooks" / "explore.ipynb"
YOUR_MODEL = NOTEBOOK.parent / "your_model.ipynb"


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


@pytest.mark.slow  # 30 to 60 s: the default suite stays under 10 minutes
def test_your_model_notebook_prunes_a_linen_cnn_and_an_nnx_mlp(fashion_mnist_dir, monkeypatch):
  """Every family on the notebook's own models: densities near their targets, accuracies
  far above chance (0.1), pruned weights exactly zero. About 1.5 minutes on 2 busy cores."""
  monkeypatch.setenv("SPARSEJAX_DATA_DIR", str(fashion_mnist_dir.parent))
  notebook = nbformat.read(YOUR_MODEL, as_version=4)
  notebook.cells.append(nbformat.v4.new_code_cell(
      "import json\n"
      "print(json.dumps({'rows': summary.to_dict('records'), 'l0': l0_expected_density,\n"
      "                  'anneal': anneal_eval_accuracy, 'random': random_eval_accuracy,\n"
      "                  'annealed_units': int(result.best_mask.sum()), 'n_units': n_units,\n"
      "                  'bmrs_kept': bmrs_kept, 'own_loop_density': own_loop_density}))"))
  NotebookClient(notebook, timeout=600, kernel_name="python3",
                 resources={"metadata": {"path": str(YOUR_MODEL.parent)}}).execute()
  outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
  assert not [o for o in outputs if o.output_type == "error"]
  found = json.loads(notebook.cells[-1].outputs[-1].text)
  rows = {(r["model"], r["method"]): r for r in found["rows"]}
  assert len(rows) == 8
  for row in rows.values():
    assert row["pruned weights == 0"] is True
    assert row["accuracy before"] > 0.78 and row["after"] > 0.7
  for key in [("cnn", "magnitude"), ("mlp", "magnitude"), ("cnn", "sparsify (gradual magnitude)")]:
    assert rows[key]["kernel density"] == pytest.approx(0.1, abs=1e-3)
  assert found["own_loop_density"] == pytest.approx(0.1, abs=1e-3)
  assert rows[("mlp", "DeepHoyer (HS)")]["kernel density"] < 0.3
  assert found["l0"] < 0.33 and rows[("cnn", "constrained L0")]["kernel density"] < 0.4
  assert sum(found["bmrs_kept"]["bmrs_u"].values()) < 0.5 * (256 + 128)
  assert rows[("mlp", "BMRS (bmrs_u)")]["kernel density"] < 0.5
  assert found["annealed_units"] == found["n_units"] - found["n_units"] // 2
  assert found["anneal"] > found["random"]
