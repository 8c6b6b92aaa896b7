"""runs.csv and artifacts: exact round trips and concurrent writers."""

import csv
import json
import os
import pathlib
import subprocess
import sys
import textwrap
import time

import jax.numpy as jnp
import ml_collections
import numpy as np
import pandas as pd
import pytest

from sparsejax import results

REPO = pathlib.Path(__file__).resolve().parents[1]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def config():
  return ml_collections.ConfigDict({
      "seed": 42,
      "architecture": [2, 25, 25, 1],
      "objective": {"name": "rl1", "alpha": 1e-3, "shape": (3, 4), "extra": None},
      "train": {"optimizer": {"lr": 0.001}},
  })


def header_and_rows(path):
  with open(path, newline="") as f:
    rows = list(csv.reader(f))
  return rows[0], rows[1:]


def test_flatten_config_dotted_keys_and_scalars():
  flat = results.flatten_config(config())
  assert flat == {
      "seed": 42,
      "architecture": "[2, 25, 25, 1]",
      "objective.name": "rl1",
      "objective.alpha": 1e-3,
      "objective.shape": "[3, 4]",
      "objective.extra": "",
      "train.optimizer.lr": 0.001,
  }
  plain = results.flatten_config({"a": {"b": np.float32(0.5), "c": jnp.int32(3)}})
  assert plain == {"a.b": 0.5, "a.c": 3}
  assert type(plain["a.b"]) is float and type(plain["a.c"]) is int


def test_new_run_id_unique_and_time_sortable():
  ids = [results.new_run_id() for _ in range(200)]
  assert len(set(ids)) == len(ids)
  assert [i.split("-")[0] for i in ids] == sorted(i.split("-")[0] for i in ids)
  time.sleep(0.002)
  assert results.new_run_id() > ids[-1]


def test_append_and_read_back_exact(tmp_path):
  row = {"run_id": results.new_run_id(), **results.flatten_config(config()),
         "timestamp": results.utc_timestamp(), "final_train_loss": 0.1 + 0.2,
         "final_test_loss": np.float32(1 / 3), "kept_params": 777,
         "compression": float("inf"), "converged": True}
  results.append_run(tmp_path, row)
  df = results.read_runs(tmp_path)
  assert list(df.columns) == list(row)
  got = df.iloc[0]
  assert got["run_id"] == row["run_id"]
  assert got["final_train_loss"] == 0.1 + 0.2  # exact float round trip
  assert got["final_test_loss"] == float(np.float32(1 / 3))
  assert got["kept_params"] == 777 and got["seed"] == 42
  assert got["compression"] == np.inf
  assert got["architecture"] == "[2, 25, 25, 1]"
  assert got["objective.alpha"] == 1e-3 and got["train.optimizer.lr"] == 0.001
  assert pd.isna(got["objective.extra"])
  assert bool(got["converged"])
  pd.Timestamp(got["timestamp"])  # ISO 8601


def test_nested_row_is_flattened(tmp_path):
  results.append_run(tmp_path, {"run_id": "r", "config": config()})
  assert results.read_runs(tmp_path).loc[0, "config.objective.alpha"] == 1e-3


def test_union_of_columns(tmp_path):
  results.append_run(tmp_path, {"run_id": "a", "x": 1})
  results.append_run(tmp_path, {"run_id": "b", "y": 2.5})
  results.append_run(tmp_path, {"x": 3, "run_id": "c"})
  header, rows = header_and_rows(tmp_path / "runs.csv")
  assert header == ["run_id", "x", "y"]
  assert rows == [["a", "1", ""], ["b", "", "2.5"], ["c", "3", ""]]
  assert sorted(p.name for p in tmp_path.iterdir()) == ["runs.csv", "runs.csv.lock"]


def test_read_runs_of_missing_table_is_empty(tmp_path):
  assert results.read_runs(tmp_path).empty


WRITER = textwrap.dedent("""
    import os, sys, time
    from sparsejax import results
    workdir, proc, go = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    while not os.path.exists(go):
      time.sleep(0.001)
    for i in range(50):
      row = {"run_id": f"{results.new_run_id()}-p{proc}", "proc": proc, "i": i,
             "loss": (proc + 1) / (i + 7), "name": f"p{proc},i{i} \\"q\\""}
      if i % 10 == 3:  # a new column now and then: forces a header rewrite
        row[f"extra_{proc}_{i}"] = i * 1.5
      results.append_run(workdir, row)
""")


@pytest.mark.slow  # 7 s or more on 2 cores: the default suite stays under 10 minutes
def test_concurrent_processes_lose_nothing(tmp_path):
  n_procs, go = 4, tmp_path / "go"
  workdir = tmp_path / "work"
  env = dict(os.environ, PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu")
  procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(workdir), str(p), str(go)],
                            env=env, stderr=subprocess.PIPE)
           for p in range(n_procs)]
  time.sleep(0.5)
  go.touch()  # start them together
  for p in procs:
    _, err = p.communicate(timeout=120)
    assert p.returncode == 0, err.decode()

  text = (workdir / "runs.csv").read_text()
  assert text.count("run_id,") == 1  # header once
  df = results.read_runs(workdir)
  assert len(df) == n_procs * 50
  assert df["run_id"].is_unique
  extras = {f"extra_{p}_{i}" for p in range(n_procs) for i in range(3, 50, 10)}
  assert set(df.columns) == {"run_id", "proc", "i", "loss", "name"} | extras
  for _, row in df.iterrows():
    p, i = int(row["proc"]), int(row["i"])
    assert row["run_id"].endswith(f"-p{p}")
    assert row["loss"] == (p + 1) / (i + 7)
    assert row["name"] == f'p{p},i{i} "q"'
    for extra in extras:
      expected = i * 1.5 if extra == f"extra_{p}_{i}" else None
      assert (row[extra] == expected) if expected is not None else pd.isna(row[extra])
  for p in range(n_procs):
    assert sorted(df.loc[df["proc"] == p, "i"]) == list(range(50))
  assert not list(workdir.glob(".*.tmp"))


def test_merge_and_remerge_replaces_rows(tmp_path):
  task_a, task_b, dest = tmp_path / "a", tmp_path / "b", tmp_path / "all"
  results.append_run(task_a, {"run_id": "a1", "loss": 0.5})
  results.append_run(task_a, {"run_id": "a2", "loss": 0.25})
  results.append_run(task_b, {"run_id": "b1", "loss": 0.125, "acc": 0.9})
  results.merge_runs(dest, [task_a / "runs.csv", task_b])
  df = results.read_runs(dest)
  assert list(df["run_id"]) == ["a1", "a2", "b1"]
  assert list(df.columns) == ["run_id", "loss", "acc"]

  # Task a is re-run: a2 changes, a3 appears; re-merging replaces, no duplicates.
  results.replace_runs(task_a, [{"run_id": "a2", "loss": 0.75, "note": "rerun"}])
  results.append_run(task_a, {"run_id": "a3", "loss": 1.0})
  results.merge_runs(dest, [task_a / "runs.csv"])
  results.merge_runs(dest, [task_a / "runs.csv"])
  df = results.read_runs(dest).set_index("run_id")
  assert list(df.index) == ["a1", "a2", "b1", "a3"]
  assert df.loc["a2", "loss"] == 0.75 and df.loc["a2", "note"] == "rerun"
  assert df.loc["b1", "acc"] == 0.9 and df.loc["a3", "loss"] == 1.0


def test_replace_runs_requires_key(tmp_path):
  try:
    results.replace_runs(tmp_path, [{"loss": 1.0}])
  except ValueError as e:
    assert "run_id" in str(e)
  else:
    raise AssertionError("expected ValueError")


def test_curves_csv_and_plots(tmp_path):
  curves = {
      "train_loss": [1.0, 0.5, 0.25],
      "val_loss": [1.5, 0.75],
      "train_accuracy": [0.1, 0.5, 0.9],
      "density": [1.0, 0.5, 0.3],
      "kept": [100, 50, 30],
      "sigma": [0.1, 0.09, 0.08],
  }
  results.write_curves(tmp_path, curves)
  header, rows = header_and_rows(tmp_path / "curves.csv")
  assert header == ["epoch"] + list(curves)
  assert rows[0] == ["1", "1.0", "1.5", "0.1", "1.0", "100.0", "0.1"]
  assert rows[2][:3] == ["3", "0.25", ""]  # the short curve is padded
  for name in ("loss", "accuracy", "density"):
    assert (tmp_path / f"{name}.png").read_bytes()[:8] == PNG_MAGIC


def test_curves_given_x_and_skipped_plots(tmp_path):
  results.write_curves(tmp_path, {"step": [0, 10, 20], "train_loss": [-1.0, -2.0, -3.0]},
                       x_name="step")
  header, rows = header_and_rows(tmp_path / "curves.csv")
  assert header == ["step", "train_loss"] and [r[0] for r in rows] == ["0", "10", "20"]
  assert (tmp_path / "loss.png").exists()  # negative losses: linear axis
  assert not (tmp_path / "accuracy.png").exists()
  assert not (tmp_path / "density.png").exists()


def test_layer_counts(tmp_path):
  summary = {
      "Dense_0/kernel": {"kept": 3, "total": 6, "density": 0.5, "compression": 2.0},
      "Dense_0/bias": {"kept": 2, "total": 2, "density": 1.0, "compression": 1.0},
      "total": {"kept": 5, "total": 8, "density": 0.625, "compression": 1.6},
  }
  results.write_layer_counts(tmp_path, summary)
  header, rows = header_and_rows(tmp_path / "layers.csv")
  assert header == ["layer", "kept", "total", "density", "compression"]
  assert rows == [["Dense_0/kernel", "3", "6", "0.5", "2.0"],
                  ["Dense_0/bias", "2", "2", "1.0", "1.0"],
                  ["total", "5", "8", "0.625", "1.6"]]


def test_config_json_round_trip(tmp_path):
  cfg = config()
  results.write_config(tmp_path, cfg)
  loaded = json.loads((tmp_path / "config.json").read_text())
  assert loaded == json.loads(json.dumps(cfg.to_dict()))
  assert loaded["objective"]["shape"] == [3, 4]
  assert ml_collections.ConfigDict(loaded).objective.alpha == 1e-3


def test_masks_npz_round_trip(tmp_path):
  masks = {
      "Dense_0": {"kernel": jnp.array([[True, False], [False, True]]), "bias": None},
      "Dense_1": {"kernel": np.array([True, True, False])},
  }
  directory = results.artifact_dir(tmp_path, "run")
  results.write_masks(directory, masks)
  got = results.read_masks(directory / "masks.npz")
  assert set(got) == {"Dense_0/kernel", "Dense_1/kernel"}
  np.testing.assert_array_equal(got["Dense_0/kernel"], masks["Dense_0"]["kernel"])
  np.testing.assert_array_equal(got["Dense_1/kernel"], masks["Dense_1"]["kernel"])
  assert all(v.dtype == bool for v in got.values())
  assert results.read_masks(directory).keys() == got.keys()
  assert directory == tmp_path / "artifacts" / "run"
