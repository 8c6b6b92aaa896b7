"""Mask pytrees: hand-computed expectations."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sparsejax import masks


def tree():
  return {
      "Dense_0": {"kernel": jnp.array([[0.1, -0.9], [0.5, -0.2], [0.05, 0.3]]),
                  "bias": jnp.array([0.0, 0.7])},
      "Dense_1": {"kernel": jnp.array([[1.0], [-0.4]]), "bias": jnp.array([0.2])},
  }


def test_ones_like_every_leaf_and_kernels_only():
  p = tree()
  all_masks = masks.ones_like(p)
  assert all(m.dtype == bool and m.all() for m in jax.tree.leaves(all_masks))
  k = masks.ones_like(p, masks.kernels_only)
  assert k["Dense_0"]["bias"] is None and k["Dense_0"]["kernel"].shape == (3, 2)
  assert len(jax.tree.leaves(k)) == 2


def test_apply_zeroes_pruned_and_keeps_none_leaves():
  p = tree()
  m = masks.ones_like(p, masks.kernels_only)
  m["Dense_0"]["kernel"] = jnp.array([[True, False], [False, True], [True, True]])
  out = masks.apply(m, p)
  np.testing.assert_array_equal(out["Dense_0"]["kernel"], np.float32([[0.1, 0.0], [0.0, -0.2], [0.05, 0.3]]))
  np.testing.assert_array_equal(out["Dense_0"]["bias"], p["Dense_0"]["bias"])


def test_structure_mismatch_names_the_path():
  p = tree()
  m = masks.ones_like(p)
  m["Dense_1"]["kernel"] = jnp.ones((3, 1), bool)
  with pytest.raises(ValueError, match="Dense_1/kernel"):
    masks.apply(m, p)
  del m["Dense_1"]["bias"]
  with pytest.raises(ValueError, match="Dense_1/bias"):
    masks.apply(m, p)


def test_counts_density_and_compression():
  p = tree()
  m = masks.from_nonzero(p)  # Dense_0/bias has one zero
  s = masks.summary(m, p)
  assert s["Dense_0/bias"] == {"kept": 1, "total": 2, "density": 0.5, "compression": 2.0}
  assert s["total"]["kept"] == 10 and s["total"]["total"] == 11
  assert s["total"]["density"] == pytest.approx(10 / 11)
  assert masks.density(m, p) == pytest.approx(10 / 11)
  assert int(masks.kept_count(m)) == 10
  assert masks.total_count(p) == 11
  # Dense leaves count as kept.
  km = masks.ones_like(p, masks.kernels_only)
  assert int(masks.kept_count(km, p)) == 11
  assert masks.summary(km, p)["Dense_1/bias"]["kept"] == 1


def test_global_threshold_is_global_and_monotone():
  p = tree()
  m = masks.global_magnitude_threshold(p, masks.ones_like(p), 0.3)
  kept = sorted(float(abs(v)) for v in jnp.concatenate(
      [jnp.ravel(jnp.where(mm, pp, 0)) for mm, pp in zip(jax.tree.leaves(m), jax.tree.leaves(p))]) if v != 0)
  np.testing.assert_allclose(kept, [0.3, 0.4, 0.5, 0.7, 0.9, 1.0], rtol=1e-6)
  # Already-pruned entries stay pruned even under a lower threshold.
  again = masks.global_magnitude_threshold(p, m, 0.0)
  assert int(masks.kept_count(again)) == 6
  jitted = jax.jit(masks.global_magnitude_threshold)(p, masks.ones_like(p), 0.3)
  assert int(masks.kept_count(jitted)) == 6


def test_global_density_exact_count_with_ties_and_dense_leaves():
  p = {"a": jnp.array([1.0, 1.0, 1.0, 0.5]), "b": jnp.array([2.0, 0.1]), "c": jnp.array([9.0])}
  m = masks.ones_like(p)
  m["c"] = None
  out = masks.global_magnitude_density(p, m, 0.5)  # 6 prunable entries -> keep 3
  assert out["c"] is None
  np.testing.assert_array_equal(out["b"], [True, False])
  np.testing.assert_array_equal(out["a"], [True, True, False, False])  # ties by index
  with pytest.raises(ValueError, match="density"):
    masks.global_magnitude_density(p, m, 0.0)


def test_per_leaf_fraction_and_std_ratio():
  p = {"a": jnp.array([4.0, -3.0, 2.0, 1.0]), "b": jnp.array([0.1, -0.2])}
  out = masks.per_leaf_fraction(p, masks.ones_like(p), 0.5)
  np.testing.assert_array_equal(out["a"], [True, True, False, False])
  np.testing.assert_array_equal(out["b"], [False, True])
  std_a = float(jnp.std(p["a"]))  # sqrt(7.25) ~ 2.69 -> 1.0 * std keeps |w| >= 2.69
  out = masks.std_ratio(p, masks.ones_like(p), 1.0)
  np.testing.assert_array_equal(out["a"], np.abs(np.array([4.0, -3.0, 2.0, 1.0])) >= std_a)
  np.testing.assert_array_equal(out["a"], [True, True, False, False])


def test_unit_masks_cover_every_weight_of_a_neuron():
  p = tree()  # hidden layer of 2 neurons
  covers = {"hidden": [("Dense_0/kernel", -1), ("Dense_0/bias", 0), ("Dense_1/kernel", 0)]}
  out = masks.unit_masks(p, {"hidden": jnp.array([True, False])}, covers)
  np.testing.assert_array_equal(out["Dense_0"]["kernel"], [[True, False]] * 3)
  np.testing.assert_array_equal(out["Dense_0"]["bias"], [True, False])
  np.testing.assert_array_equal(out["Dense_1"]["kernel"], [[True], [False]])
  np.testing.assert_array_equal(out["Dense_1"]["bias"], [True])
  with pytest.raises(ValueError, match="Dense_9/kernel"):
    masks.unit_masks(p, {"hidden": jnp.array([True, False])}, {"hidden": [("Dense_9/kernel", 0)]})
  with pytest.raises(ValueError, match="does not match"):
    masks.unit_masks(p, {"hidden": jnp.array([True, False, True])}, covers)


def test_unit_masks_conv_channels():
  p = {"conv": {"kernel": jnp.ones((3, 3, 2, 4)), "bias": jnp.ones(4)}}
  out = masks.unit_masks(p, {"c": jnp.array([True, False, True, False])},
                         {"c": [("conv/kernel", -1), ("conv/bias", 0)]})
  assert int(out["conv"]["kernel"].sum()) == 3 * 3 * 2 * 2
  np.testing.assert_array_equal(out["conv"]["kernel"][0, 0, 0], [True, False, True, False])


def test_comparisons():
  a = {"x": jnp.array([True, True, False, False])}
  b = {"x": jnp.array([True, False, True, False])}
  assert float(masks.overlap(a, b)) == pytest.approx(1 / 3)
  assert int(masks.hamming(a, b)) == 2
  assert float(masks.cosine_similarity(a, b)) == pytest.approx(0.5)
  assert float(masks.overlap(a, a)) == 1.0 and int(masks.hamming(a, a)) == 0
  assert float(masks.cosine_similarity(a, a)) == pytest.approx(1.0)


def test_logical_and_treats_none_as_all_true():
  a = {"x": jnp.array([True, False]), "y": None}
  b = {"x": None, "y": jnp.array([False, True])}
  out = masks.logical_and(a, b)
  np.testing.assert_array_equal(out["x"], [True, False])
  np.testing.assert_array_equal(out["y"], [False, True])


def test_vmap_over_a_batch_of_trees():
  p = {"a": jnp.array([[1.0, -0.2, 0.5], [0.1, 2.0, -3.0]])}  # two trees stacked
  m = jax.vmap(lambda q: masks.global_magnitude_threshold(q, masks.ones_like(q), 0.4))(p)
  np.testing.assert_array_equal(m["a"], [[True, False, True], [False, True, True]])
