"""sparsejax.studies.anneal_report and mask_similarity: the MLP table and the mask matrix."""

import numpy as np
import pandas as pd
import pytest

from sparsejax import results
from sparsejax.studies import anneal_report, mask_similarity


def _run(criterion, sparsity, seed, rewind, trained, os_sum=0.014, run_id=None):
  return {"method": "anneal", "anneal.units": "weights", "anneal.criterion": criterion,
          "anneal.sparsity": sparsity, "anneal.k_epochs": 50 if criterion == "lth" else 0,
          "anneal.max_evaluations": 10000, "sa_evaluations": 10000 if criterion == "sa" else 0,
          "sa_best_mean": 60.0 + seed if criterion == "sa" else float("nan"),
          "seed": seed, "rewind_test_accuracy": rewind, "final_test_accuracy": trained,
          "os_Dense_0": os_sum / 2, "os_Dense_1": os_sum / 2, "os_sum": os_sum,
          "status": "finished", "run_id": run_id or f"{criterion}-{sparsity}-{seed}"}


def test_rows_per_criterion_and_sparsity_beside_the_reference():
  runs = pd.DataFrame([
      _run("lth", 0.7, 0, 0.40, 0.984), _run("lth", 0.7, 1, 0.42, 0.986),
      _run("sa", 0.7, 0, 0.60, 0.982), _run("random", 0.9, 0, 0.1, 0.97),
      {**_run("snip", 0.7, 0, 0.1, 0.98), "status": "failed"},
      {**_run("lth", 0.7, 2, 0.5, 0.99), "method": "l0"}])
  table = anneal_report.table(runs)
  assert list(zip(table["criterion"], table["sparsity %"])) == [
      ("sa", "70"), ("lth", "70"), ("random", "90")]  # the reference's order; failed runs out
  lth = table.set_index("criterion").loc["lth"]
  assert lth["seeds"] == 2 and lth["K epochs"] == 50
  assert lth["rewind accuracy %"] == "41.00 +- 1.41"
  assert lth["trained accuracy %"] == "98.50 +- 0.14"
  assert (lth["reference rewind %"], lth["reference trained %"]) == ("41.03", "98.48")
  assert lth["SA evaluations"] == "" and lth["SA best level mean %"] == ""
  sa = table.set_index("criterion").loc["sa"]
  assert sa["SA evaluations"] == "10,000" and sa["SA best level mean %"] == "60.00 +- 0.00"


def test_orthogonality_per_layer_at_one_sparsity():
  runs = pd.DataFrame([_run("lth", 0.7, 0, 0.4, 0.98, os_sum=0.0136),
                       _run("lth", 0.7, 1, 0.4, 0.98, os_sum=0.0138),
                       _run("random", 0.8, 0, 0.1, 0.98, os_sum=0.02)])
  table = anneal_report.orthogonality_table(runs, 0.7)
  assert list(table["criterion"]) == ["lth"]
  row = table.iloc[0]
  assert row["sum"] == "0.01370 +- 0.00014" and row["Dense_0"] == "0.00685 +- 0.00007"
  assert row["reference sum"] == "0.01366"


def test_no_anneal_runs_give_empty_tables():
  assert anneal_report.table(pd.DataFrame()).empty
  other = pd.DataFrame([{**_run("lth", 0.7, 0, 0.4, 0.98), "method": "l0"}])
  assert anneal_report.table(other).empty
  assert anneal_report.orthogonality_table(other, 0.7).empty


def test_similarity_matrix_values_by_hand():
  a = {"w": np.array([1, 1, 0, 0], bool)}
  b = {"w": np.array([0, 0, 1, 1], bool)}
  c = {"w": np.array([1, 0, 1, 0], bool)}
  matrix = mask_similarity.similarity_matrix({"a": a, "b": b, "c": c})
  np.testing.assert_allclose(matrix.to_numpy(), [[100, 0, 50], [0, 100, 50], [50, 50, 100]])


def test_random_masks_keep_the_count_and_score_one_minus_sparsity():
  rng = np.random.default_rng(1)
  like = {"Dense_0/kernel": rng.random((300, 200)) < 0.3, "Dense_1/kernel": rng.random((50, 20)) < 0.3}
  kept = sum(int(m.sum()) for m in like.values())
  fresh = mask_similarity.random_masks(like, 3, seed=0)
  assert len(fresh) == 3
  for mask in fresh.values():
    assert {k: v.shape for k, v in mask.items()} == {k: v.shape for k, v in like.items()}
    assert sum(int(m.sum()) for m in mask.values()) == kept
  matrix = mask_similarity.similarity_matrix({"run": like, **fresh}).to_numpy()
  off_diagonal = matrix[~np.eye(len(matrix), dtype=bool)]
  density = kept / sum(m.size for m in like.values())
  assert off_diagonal == pytest.approx(100 * density, abs=1.0)  # independent masks: 100 k / N


def test_runs_masks_read_from_artifacts_and_the_heatmap(tmp_path):
  masks = {"lth-0.7-0": {"w": np.array([1, 1, 0, 0], bool)},
           "sa-0.7-0": {"w": np.array([1, 0, 1, 0], bool)},
           "sa-0.8-0": {"w": np.array([1, 0, 0, 0], bool)}}
  for run_id, tree in masks.items():
    results.write_masks(results.artifact_dir(tmp_path, run_id), tree)
  runs = pd.DataFrame([_run("lth", 0.7, 0, 0.4, 0.98), _run("sa", 0.7, 0, 0.6, 0.98),
                       _run("sa", 0.8, 0, 0.6, 0.98)])
  found = mask_similarity.run_masks(runs, tmp_path, 0.7)
  assert list(found) == ["lth K=50 s0", "sa K=0 s0"]
  matrix = mask_similarity.similarity_matrix(found)
  assert matrix.loc["lth K=50 s0", "sa K=0 s0"] == pytest.approx(50.0)
  path = tmp_path / "heatmap.png"
  mask_similarity.draw_heatmap(matrix, path, "test")
  assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
