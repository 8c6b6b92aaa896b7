"""Magnitude pruning: traceable masks equal the static ones; Zhu & Gupta's schedule."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sparsejax import masks as masks_lib
from sparsejax.pruning.magnitude import gradual_density, magnitude_masks
from configs import common
from tests.conftest import REPO


def tree():
  key = jax.random.key(0)
  k1, k2 = jax.random.split(key)
  params = {"a": {"kernel": jax.random.normal(k1, (6, 5)), "bias": jnp.zeros(5)},
            "b": {"kernel": jax.random.normal(k2, (5, 3)), "bias": jnp.arange(3.0)}}
  return params, masks_lib.ones_like(params, masks_lib.kernels_only)


@pytest.mark.parametrize("density", [1.0, 0.5, 0.3, 0.07])
def test_traced_masks_equal_the_static_global_and_per_leaf_masks(density):
  params, masks = tree()
  for scope, static in (("global", masks_lib.global_magnitude_density),
                        ("layer", masks_lib.per_leaf_fraction)):
    traced = jax.jit(lambda p, m, d: magnitude_masks(p, m, d, scope))(params, masks, density)
    expected = static(params, masks, density)
    assert jax.tree.structure(traced, is_leaf=lambda x: x is None) == jax.tree.structure(
        expected, is_leaf=lambda x: x is None)
    for a, b in zip(jax.tree.leaves(traced), jax.tree.leaves(expected)):
      np.testing.assert_array_equal(a, b)


def test_global_keeps_the_largest_magnitudes_and_never_revives():
  params = {"w": jnp.array([0.1, -3.0, 2.0, 0.5]), "v": jnp.array([[-1.0, 4.0]])}
  masks = {"w": jnp.array([True, False, True, True]), "v": jnp.array([[True, True]])}
  kept = magnitude_masks(params, masks, 0.5)  # 3 of 6 prunable: 4.0, 2.0, -1.0 (-3.0 is pruned)
  np.testing.assert_array_equal(kept["w"], [False, False, True, False])
  np.testing.assert_array_equal(kept["v"], [[True, True]])


def test_zhu_gupta_schedule():
  # s_j = s_f (1 - (1 - j/k)^3) with s_i = 0: density 1 at 0, the target at k.
  d = [float(gradual_density(j, 4, 0.1)) for j in range(5)]
  expected = [1 - 0.9 * (1 - (1 - j / 4) ** 3) for j in range(5)]
  np.testing.assert_allclose(d, expected, rtol=1e-6)
  assert d[0] == 1.0 and d[-1] == pytest.approx(0.1)
  assert all(a > b for a, b in zip(d, d[1:]))
  # Most of the pruning happens early: half the sparsity within the first 21% of steps.
  assert float(gradual_density(0.21 * 4, 4, 0.0)) < 0.51


def magnitude_config(**overrides):
  from sparsejax.runner.config import base_config
  from tests.test_runner import small_config
  config = small_config(method="magnitude", max_epochs=60, finetuning_max_epochs=30, seeds=2,
                        dtype="float64")
  config.ec.alpha = base_config().ec.alpha  # an rl1 field: it does nothing here
  config.pruning.density = 0.2
  common.set_fields(config, overrides)
  return config


@pytest.mark.slow
@pytest.mark.parametrize("scope", ["global", "layer"])
def test_the_recipe_prunes_to_the_density_and_keeps_the_zeros(tmp_path, scope):
  from sparsejax.runner import load_run, run
  rows = run(magnitude_config(**{"magnitude.scope": scope}), tmp_path)
  assert len(rows) == 2
  for row in rows:
    assert row["pruning_kept"] == row["kept_params"] == round(0.2 * 751)
    assert row["train_epochs"] == 60 and row["finetune_epochs"] == 30
  for row in rows[:1]:
    loaded = load_run(tmp_path, row["run_id"])
    for p, m in zip(jax.tree.leaves(loaded.state.params), jax.tree.leaves(loaded.state.masks)):
      assert np.all(np.asarray(p)[~np.asarray(m)] == 0)
    if scope == "layer":  # every leaf keeps its own 20 %
      for m in jax.tree.leaves(loaded.state.masks):
        assert int(np.sum(m)) == round(0.2 * np.size(m))


@pytest.mark.slow   # about 30 s: two programs compiled and run
def test_gradual_pruning_follows_the_schedule_and_rewind_restores_the_initial_weights(tmp_path):
  from sparsejax.runner import load_run, run
  from sparsejax.runner.program import Program
  config = magnitude_config(**{"magnitude.schedule": "gradual", "magnitude.steps": 4,
                               "magnitude.epochs_per_step": 5, "magnitude.rewind": True},
                            finetuning_max_epochs=0, finetuning_min_epochs=0, seeds=1)
  [row] = run(config, tmp_path)
  assert row["gradual_epochs"] == 20 and row["kept_params"] == round(0.2 * 751)
  loaded = load_run(tmp_path, row["run_id"])
  with jax.enable_x64(True):
    initial = Program(config, [config.seed]).initial_states()
  for p, p0, m in zip(jax.tree.leaves(loaded.state.params), jax.tree.leaves(initial.params),
                      jax.tree.leaves(loaded.state.masks)):
    np.testing.assert_array_equal(np.asarray(p), np.where(m, np.asarray(p0)[0], 0.0))
  # The curves of the gradual phase show the density falling step by step.
  import pandas as pd
  curves = pd.read_csv(tmp_path / "artifacts" / row["run_id"] / "curves.csv")
  assert sorted(curves["phase"].unique()) == [0, 1]


def test_bad_magnitude_fields_are_named():
  from sparsejax.fields import ConfigError
  from sparsejax.runner.config import validate
  config = magnitude_config(**{"magnitude.scope": "row"})
  with pytest.raises(ConfigError, match="magnitude.scope.*global, layer"):
    validate(config)
  config = magnitude_config(**{"magnitude.steps": 0})
  with pytest.raises(ConfigError, match="magnitude.steps"):
    validate(config)


@pytest.mark.slow
def test_lenet300_magnitude_on_real_mnist_reaches_97_5_percent_at_10_percent(mnist_dir,
                                                                             tmp_path):
  """configs/lenet300_mnist.py:magnitude on a CPU schedule: 8 dense epochs, 10 % density, 4
  finetuning epochs (batch 100)."""
  import sys
  from sparsejax.runner import run
  sys.path.insert(0, str(REPO))
  from configs import lenet300_mnist
  config = lenet300_mnist.get_config("magnitude")
  config.manual_dir, config.data_dir = str(mnist_dir), str(tmp_path / "tfds")
  config.train_batch_size = 100
  config.min_epochs, config.max_epochs, config.prune_window = 0, 8, 4
  config.finetuning_min_epochs, config.finetuning_max_epochs = 0, 4
  config.quiet = True
  [row] = run(config, tmp_path)
  assert row["density"] == pytest.approx(0.10, abs=1e-5)
  assert row["final_test_accuracy"] >= 0.975, row["final_test_accuracy"]
  print(f"magnitude 10 %: test accuracy {row['final_test_accuracy']:.4f}")
