"""The post-training compression-vs-accuracy sweep (BMRS Fig. 2)."""

import numpy as np
import pytest

from sparsejax.pruning import bmr
from configs import bmrs_mlp_mnist
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


@pytest.mark.slow
def test_posthoc_sweep_writes_monotone_curves_and_the_plot(tmp_path):
  config = bmrs_mlp_mnist.get_config("none")
  config.manual_dir = str(data_path("mnist"))
  config.hidden_layers, config.hidden_dim = 1, 16
  config.train_set_size, config.val_set_size, config.test_set_size = 1024, 256, 512
  config.max_epochs = 2
  config.bmrs.posthoc_points = 4
  config.quiet = True
  frame = bmrs_posthoc.run_posthoc(config, tmp_path, ["snr", "l2", "bmrs_n"])
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
  # A later call adds its criterion's rows and keeps the others.
  frame = bmrs_posthoc.run_posthoc(config, tmp_path, ["bmrs_n_code"])
  assert sorted(frame.criterion.unique()) == ["bmrs_n", "bmrs_n_code", "l2", "snr"]
  code = frame[frame.criterion == "bmrs_n_code"]
  assert (code.stopping_point >= bmrs_n.stopping_point.iloc[0]).all()  # dF_code >= dF_paper
  with pytest.raises(ValueError, match="unknown criteria"):
    bmrs_posthoc.run_posthoc(config, tmp_path, ["hessian"])
