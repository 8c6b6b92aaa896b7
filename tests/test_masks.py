"""Mask pytrees: hand-computed expectations."""

import re

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


def test_ones_like_kernels_by_default_every_leaf_on_request():
  p = tree()
  all_masks = masks.ones_like(p, masks.every_leaf)
  assert len(jax.tree.leaves(all_masks)) == 4
  assert all(m.dtype == bool and m.all() for m in jax.tree.leaves(all_masks))
  k = masks.ones_like(p)
  assert k["Dense_0"]["bias"] is None and k["Dense_0"]["kernel"].shape == (3, 2)
  assert len(jax.tree.leaves(k)) == 2


def test_a_default_90_percent_global_prune_keeps_every_bias():
  p = tree()  # 8 kernel entries, 3 biases
  pruned = masks.apply(masks.global_magnitude_density(p, masks.ones_like(p), 0.1), p)
  np.testing.assert_array_equal(pruned["Dense_0"]["bias"], p["Dense_0"]["bias"])
  np.testing.assert_array_equal(pruned["Dense_1"]["bias"], p["Dense_1"]["bias"])
  kept = [float(v) for v in jnp.concatenate([pruned["Dense_0"]["kernel"].ravel(),
                                             pruned["Dense_1"]["kernel"].ravel()]) if v != 0]
  assert kept == [1.0]  # round(0.1 * 8) = 1: the largest |w|


def test_prunable_paths_from_globs_and_regular_expressions():
  p = tree()
  m = masks.ones_like(p, masks.prunable_paths("*/kernel", re.compile(r"Dense_1/b\w+")))
  assert m["Dense_0"]["bias"] is None
  assert {"Dense_0/kernel", "Dense_1/kernel", "Dense_1/bias"} == {
      masks.path_str(path) for path, leaf in jax.tree_util.tree_flatten_with_path(m)[0]}
  assert masks.ones_like(p, masks.prunable_paths("Dense_0/*"))["Dense_1"]["kernel"] is None
  with pytest.raises(ValueError, match="at least one pattern"):
    masks.prunable_paths()
  with pytest.raises(TypeError, match="patterns must be"):
    masks.prunable_paths(3)


def test_apply_zeroes_pruned_and_keeps_none_leaves():
  p = tree()
  m = masks.ones_like(p, masks.kernels_only)
  m["Dense_0"]["kernel"] = jnp.array([[True, False], [False, True], [True, True]])
  out = masks.apply(m, p)
  np.testing.assert_array_equal(out["Dense_0"]["kernel"], np.float32([[0.1, 0.0], [0.0, -0.2], [0.05, 0.3]]))
  np.testing.assert_array_equal(out["Dense_0"]["bias"], p["Dense_0"]["bias"])


def test_structure_mismatch_names_the_path():
  p = tree()
  m = masks.ones_like(p, masks.every_leaf)
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
  assert int(masks.kept_count(m, p)) == 10
  assert masks.total_count(m, p) == 11
  # Dense leaves count as kept; every counting function takes (masks, params).
  km = masks.ones_like(p, masks.kernels_only)
  km["Dense_0"]["kernel"] = km["Dense_0"]["kernel"].at[0, 0].set(False)
  assert int(masks.kept_count(km, p)) == 10 and masks.total_count(km, p) == 11
  assert int(jax.jit(masks.kept_count)(km, p)) == 10
  assert masks.summary(km, p)["Dense_1/bias"]["kept"] == 1
  with pytest.raises(ValueError, match="Dense_1/bias"):
    masks.kept_count({"Dense_0": km["Dense_0"]}, p)


def test_global_threshold_is_global_and_monotone():
  p = tree()
  m = masks.global_magnitude_threshold(p, masks.ones_like(p, masks.every_leaf), 0.3)
  kept = sorted(float(abs(v)) for v in jnp.concatenate(
      [jnp.ravel(jnp.where(mm, pp, 0)) for mm, pp in zip(jax.tree.leaves(m), jax.tree.leaves(p))]) if v != 0)
  np.testing.assert_allclose(kept, [0.3, 0.4, 0.5, 0.7, 0.9, 1.0], rtol=1e-6)
  # Already-pruned entries stay pruned even under a lower threshold.
  again = masks.global_magnitude_threshold(p, m, 0.0)
  assert int(masks.kept_count(again, p)) == 6
  jitted = jax.jit(masks.global_magnitude_threshold)(p, masks.ones_like(p, masks.every_leaf), 0.3)
  assert int(masks.kept_count(jitted, p)) == 6


def test_global_density_exact_count_with_ties_and_dense_leaves():
  p = {"a": jnp.array([1.0, 1.0, 1.0, 0.5]), "b": jnp.array([2.0, 0.1]), "c": jnp.array([9.0])}
  m = masks.ones_like(p, masks.prunable_paths("a", "b"))
  out = masks.global_magnitude_density(p, m, 0.5)  # 6 prunable entries -> keep 3
  assert out["c"] is None
  np.testing.assert_array_equal(out["b"], [True, False])
  np.testing.assert_array_equal(out["a"], [True, True, False, False])  # ties by index
  with pytest.raises(ValueError, match="density"):
    masks.global_magnitude_density(p, m, 0.0)


def test_global_density_under_jit_with_a_traced_density_keeps_the_ties():
  p = {"a": jnp.array([1.0, 1.0, 1.0, 0.5]), "b": jnp.array([2.0, 0.1]), "c": jnp.array([9.0])}
  m = masks.ones_like(p, masks.prunable_paths("a", "b"))
  m["b"] = jnp.array([False, True])  # 2.0 is pruned already and stays pruned
  prune = jax.jit(masks.global_magnitude_density)
  for density in (0.5, 0.34, 1.0):  # keep round(6 d) = 3, 2, 6 (of which 5 are still kept)
    traced, static = prune(p, m, density), masks.global_magnitude_density(p, m, density)
    assert traced["c"] is None
    for name in ("a", "b"):
      np.testing.assert_array_equal(traced[name], static[name])
  np.testing.assert_array_equal(prune(p, m, 0.34)["a"], [True, True, False, False])  # ties
  np.testing.assert_array_equal(prune(p, m, 1.0)["b"], [False, True])
  per_leaf = jax.jit(masks.per_leaf_fraction)(p, m, 0.5)
  np.testing.assert_array_equal(per_leaf["a"], [True, True, False, False])
  np.testing.assert_array_equal(per_leaf["b"], [False, True])


def test_keep_count_rounds_halves_to_even_for_numbers_and_arrays():
  assert masks.keep_count(0.5, 5) == 2 and masks.keep_count(0.7, 5) == 4
  assert isinstance(masks.keep_count(0.5, 5), int)
  assert int(masks.keep_count(jnp.float32(0.5), 5)) == 2
  assert int(jax.jit(masks.keep_count, static_argnums=1)(0.7, 5)) == 4


def test_top_k_by_hand():
  scores = jnp.array([3.0, 1.0, 3.0, -jnp.inf, jnp.nan, 5.0])
  np.testing.assert_array_equal(masks.top_k(scores, 2), [True, False, False, False, False, True])
  np.testing.assert_array_equal(masks.top_k(scores, 3), [True, False, True, False, False, True])
  # -inf and NaN are never kept, even when there is room.
  np.testing.assert_array_equal(masks.top_k(scores, 6), [True, True, True, False, False, True])


def test_global_top_k_ranks_all_prunable_leaves_together():
  scores = {"x": jnp.array([[0.5, -2.0]]), "y": jnp.array([1.0, 0.5, 0.7]), "z": jnp.array([9.0])}
  m = {"x": jnp.array([[True, True]]), "y": jnp.array([True, True, False]), "z": None}
  kept = masks.global_top_k(scores, m, 2)  # 1.0, then 0.5 of x (lower index); 0.7 is pruned
  assert kept["z"] is None
  np.testing.assert_array_equal(kept["x"], [[True, False]])
  np.testing.assert_array_equal(kept["y"], [True, False, False])


def test_per_leaf_fraction_and_std_ratio():
  p = {"a": jnp.array([4.0, -3.0, 2.0, 1.0]), "b": jnp.array([0.1, -0.2])}
  out = masks.per_leaf_fraction(p, masks.ones_like(p, masks.every_leaf), 0.5)
  np.testing.assert_array_equal(out["a"], [True, True, False, False])
  np.testing.assert_array_equal(out["b"], [False, True])
  std_a = float(jnp.std(p["a"]))  # sqrt(7.25) ~ 2.69 -> 1.0 * std keeps |w| >= 2.69
  out = masks.std_ratio(p, masks.ones_like(p, masks.every_leaf), 1.0)
  np.testing.assert_array_equal(out["a"], np.abs(np.array([4.0, -3.0, 2.0, 1.0])) >= std_a)
  np.testing.assert_array_equal(out["a"], [True, True, False, False])


def test_unit_masks_cover_every_weight_of_a_neuron():
  p = tree()  # hidden layer of 2 neurons
  covers = {"hidden": [("Dense_0/kernel", -1), ("Dense_0/bias", 0), ("Dense_1/kernel", 0)]}
  out = masks.unit_masks(p, {"hidden": jnp.array([True, False])}, covers)
  np.testing.assert_array_equal(out["Dense_0"]["kernel"], [[True, False]] * 3)
  np.testing.assert_array_equal(out["Dense_0"]["bias"], [True, False])
  np.testing.assert_array_equal(out["Dense_1"]["kernel"], [[True], [False]])
  assert out["Dense_1"]["bias"] is None  # covered by no unit, not a kernel: dense
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
  m = jax.vmap(lambda q: masks.global_magnitude_threshold(
      q, masks.ones_like(q, masks.every_leaf), 0.4))(p)
  np.testing.assert_array_equal(m["a"], [[True, False, True], [False, True, True]])
