"""The post-training compression-vs-accuracy sweep (BMRS Fig. 2)."""

import numpy as np
import pandas as pd
import pytest

from configs import bmrs_mlp_mnist
from sparsejax import results
from sparsejax.pruning import bmr
from sparsejax.studies import bmrs_posthoc
from tests.conftest import data_path


def test_posthoc_units_bmr_never_pass_the_stopping_point():
  scores = {"a": np.array([-3.0, -1.0, 0.5, 2.0]), "b": np.array([-2.0, 1.0])}
  bmrs_n = bmr.Criterion("bmrs_n")
  snr = bmr.Criterion("snr")
  for lam in (0.0, 50.0, 100.0):
    keep = bmrs_posthoc.posthoc_units(bmrs_n, scores, lam)
    # score = -dF: a unit with dF < 0 (score > 0) is always kept.
    assert keep["a"][2] and keep["a"][3] and keep["b"][1]
  assert sum(int(k.sum()) for k in bmrs_posthoc.posthoc_units(bmrs_n, scores, 100.0).values()) == 3
  assert sum(int(k.sum()) for k in bmrs_posthoc.posthoc_units(snr, scores, 100.0).values()) == 0
  assert sum(int(k.sum()) for k in bmrs_posthoc.posthoc_units(snr, scores, 50.0).values()) == 3


def test_mask_key_tells_masks_apart():
  a = {"x": np.array([True, False, True]), "y": np.array([False])}
  same = {"y": np.array([False]), "x": np.array([True, False, True])}
  other = {"x": np.array([True, True, True]), "y": np.array([False])}
  assert bmrs_posthoc.mask_key(a) == bmrs_posthoc.mask_key(same)
  assert bmrs_posthoc.mask_key(a) != bmrs_posthoc.mask_key(other)


def test_summarise_finds_the_knee_and_the_stop():
  def rows(criterion, seed, compression, accuracy, stop=float("nan")):
    return pd.DataFrame(dict(criterion=criterion, seed=seed, percentile=np.arange(len(accuracy)),
                             unit_compression=compression, test_accuracy=accuracy,
                             stopping_point=stop))
  frame = pd.concat([
      # A dip of more than 1 point at 40 % ends the knee at 20 %, though 60 % recovers.
      rows("snr", 1, [0, 20, 40, 60, 80], [0.95, 0.945, 0.93, 0.95, 0.10]),
      rows("snr", 2, [0, 20, 40, 60, 80], [0.90, 0.90, 0.895, 0.891, 0.50]),
      # BMR: the percentiles past the stop (30 %) give its mask; the knee is at its end.
      rows("bmrs_n", 1, [0, 30, 30, 30], [0.95, 0.94, 0.94, 0.94], stop=30.0),
  ], ignore_index=True)
  summary = bmrs_posthoc.summarise(frame)
  assert summary.loc["snr", "holds_to"] == pytest.approx((20 + 60) / 2)
  assert summary.loc["snr", "acc_holds_to"] == pytest.approx((94.5 + 89.1) / 2)
  assert summary.loc["snr", "unpruned"] == pytest.approx(92.5)
  assert np.isnan(summary.loc["snr", "stop"]) and np.isnan(summary.loc["snr", "acc_stop"])
  assert summary.loc["snr", "seeds"] == 2
  assert summary.loc["bmrs_n", "holds_to"] == 30 and summary.loc["bmrs_n", "stop"] == 30
  assert summary.loc["bmrs_n", "acc_stop"] == pytest.approx(94.0)


class _Interrupted(Exception):
  """Stands for the end of a session in the middle of a sweep."""


def _count_finetunings(monkeypatch, fail_after: list[int | None]) -> list[int]:
  """Patches the sweep's finetuning to record how many masks each call finetunes,
  and to raise :class:`_Interrupted` at the call after ``fail_after[0]`` calls."""
  counts = []
  make = bmrs_posthoc.make_finetune

  def counting(*args):
    finetune = make(*args)

    def wrapped(state, units, key):
      if fail_after[0] is not None and len(counts) == fail_after[0]:
        raise _Interrupted
      counts.append(next(iter(units.values())).shape[0])
      return finetune(state, units, key)
    return wrapped
  monkeypatch.setattr(bmrs_posthoc, "make_finetune", counting)
  return counts


@pytest.mark.slow
def test_posthoc_sweep_writes_monotone_curves_and_the_plot(tmp_path, monkeypatch):
  config = bmrs_mlp_mnist.get_config("none")
  config.manual_dir = str(data_path("mnist"))
  config.hidden_layers, config.hidden_dim = 1, 16
  config.train_set_size, config.val_set_size, config.test_set_size = 1024, 256, 512
  config.max_epochs = 2
  config.bmrs.posthoc_points = 4
  config.quiet = True
  fail_after = [2]
  counts = _count_finetunings(monkeypatch, fail_after)
  # Interrupted in its first criterion after two groups of one mask: they are kept...
  with pytest.raises(_Interrupted):
    bmrs_posthoc.run_posthoc(config, tmp_path, ["snr", "l2", "bmrs_n"], group_size=1)
  assert counts == [1, 1]
  store = tmp_path / f"posthoc_{config.experiment_name}_finetuned.csv"
  assert len(pd.read_csv(store)) == 2
  assert not (tmp_path / f"posthoc_{config.experiment_name}.csv").exists()
  # ... and the next call finetunes only the others, in groups of at most 3.
  fail_after[0] = None
  frame = bmrs_posthoc.run_posthoc(config, tmp_path, ["snr", "l2", "bmrs_n"], group_size=3)
  assert max(counts[2:]) <= 3
  finetuned = pd.read_csv(store)
  assert len(finetuned) == sum(counts) <= 3 * 4  # each mask once
  assert not finetuned.duplicated(["seed", "mask"]).any()
  assert set(frame.test_accuracy) == set(finetuned.test_accuracy)
  assert (tmp_path / f"posthoc_{config.experiment_name}.png").stat().st_size > 0
  assert len(frame) == 3 * 4
  for name, group in frame.groupby("criterion"):
    group = group.sort_values("percentile")
    assert group.unit_compression.iloc[0] == 0.0, name
    assert (np.diff(group.unit_compression) >= 0).all(), name
    assert group.test_accuracy.iloc[0] > 0.5, name  # unpruned and finetuned: well above chance
  snr = frame[frame.criterion == "snr"].sort_values("percentile")
  assert snr.unit_compression.iloc[-1] == 100.0  # keep iff score > the maximum: none
  assert snr.test_accuracy.iloc[-1] <= 0.3  # the output layer's bias alone
  bmrs_n = frame[frame.criterion == "bmrs_n"]
  assert (bmrs_n.unit_compression <= bmrs_n.stopping_point + 1e-9).all()
  # The same call again resumes: nothing is trained or finetuned, the table is the same.
  counts.clear()
  again = bmrs_posthoc.run_posthoc(config, tmp_path, ["snr", "l2", "bmrs_n"])
  assert counts == []
  pd.testing.assert_frame_equal(again, frame)
  # A later call adds its criterion's rows and keeps the others.
  frame = bmrs_posthoc.run_posthoc(config, tmp_path, ["bmrs_n_code"])
  assert sorted(frame.criterion.unique()) == ["bmrs_n", "bmrs_n_code", "l2", "snr"]
  code = frame[frame.criterion == "bmrs_n_code"]
  assert (code.stopping_point >= bmrs_n.stopping_point.iloc[0]).all()  # dF_code >= dF_paper
  # Another resolution reuses the training (one run in the table) and replaces the rows.
  config.bmrs.posthoc_points = 3
  counts.clear()
  frame = bmrs_posthoc.run_posthoc(config, tmp_path, ["snr"])
  assert sum(counts) <= 1  # the masks of percentiles 0 and 100 are finetuned already
  assert len(results.read_runs(tmp_path)) == 1
  assert sorted(frame[frame.criterion == "snr"].percentile) == [0.0, 50.0, 100.0]
  assert len(frame[frame.criterion == "l2"]) == 4
  with pytest.raises(ValueError, match="unknown criteria"):
    bmrs_posthoc.run_posthoc(config, tmp_path, ["hessian"])
  with pytest.raises(ValueError, match="group_size"):
    bmrs_posthoc.run_posthoc(config, tmp_path, ["snr"], group_size=0)
