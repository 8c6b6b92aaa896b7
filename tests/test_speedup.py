"""The speed-up study, the export of compacted models and their reloading."""

import jax
import numpy as np
import pytest
from absl import flags

from sparsejax import masks as masks_lib
from sparsejax.compaction import export
from sparsejax.runner import load_compacted, load_run, run
from sparsejax.studies import speedup
from tests.test_runner import small_config


@pytest.mark.slow
def test_a_finished_run_is_timed_exported_and_reloaded_compacted(tmp_path):
  flags.FLAGS.unparse_flags()
  flags.FLAGS(["speedup"])
  [row] = run(small_config(max_epochs=50, finetuning_max_epochs=20), tmp_path)
  table = speedup.speedup_table(tmp_path, [1, 8], rounds=3)
  assert list(table["batch"]) == [1, 8] and set(table["run_id"]) == {row["run_id"]}
  first = table.iloc[0]
  assert first["dense_params"] == 751 and first["compact_params"] < 751
  assert first["compact_params"] == row["compact_params"]
  assert first["compact_macs"] == row["compact_macs"] < first["dense_macs"]
  assert first["flops_ratio"] == first["dense_flops"] / first["compact_flops"] > 1
  assert (table[["dense_ms", "masked_ms", "compact_ms"]] > 0).all().all()
  assert (tmp_path / "speedup.md").read_text().startswith("| run_id |")

  compacted = load_compacted(tmp_path)
  loaded = load_run(tmp_path)
  x = jax.random.normal(jax.random.key(0), (6, *loaded.parts.model.input_shape))
  masked = masks_lib.apply(loaded.state.masks, loaded.state.params)
  expected = loaded.parts.model.apply(masked, loaded.state.model_state, x, train=False)[0]
  np.testing.assert_allclose(compacted.apply(compacted.variables, x), expected, atol=1e-6)

  # The .npz runs without sparsejax: plain arrays of the same MLP with smaller widths.
  arrays, widths = export.read_npz(tmp_path / "artifacts" / row["run_id"] / "compact" /
                                   "compact.npz")
  kept = widths["Dense_1"][1]
  assert widths["Dense_1"][0] == 25 and kept < 25
  layers = arrays["params"]
  assert layers["Dense_1"]["kernel"].shape == (25, kept)
  h = np.asarray(x, np.float64)
  for name in ("Dense_0", "Dense_1"):
    h = np.tanh(h @ layers[name]["kernel"] + layers[name]["bias"])
  out = h @ layers["Dense_2"]["kernel"] + layers["Dense_2"]["bias"]
  np.testing.assert_allclose(out, expected, atol=1e-5)
