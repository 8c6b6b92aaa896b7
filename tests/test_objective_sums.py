"""The penalty sums: leaf_sum (a matrix-vector product) and weighted_tree_sum."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sparsejax.objectives import base


@pytest.mark.parametrize("shape", [(), (7,), (784, 300), (5, 5, 3, 6), (3, 1, 2), (5, 0), (0, 4)])
def test_leaf_sum_equals_the_float64_sum(shape):
  x = jax.random.normal(jax.random.key(1), shape) + 0.25
  expected = np.sum(np.asarray(x, np.float64))
  total = jax.jit(base.leaf_sum)(x)
  assert total.dtype == x.dtype
  np.testing.assert_allclose(total, expected, rtol=1e-5, atol=1e-4)
  np.testing.assert_array_equal(jax.grad(base.leaf_sum)(x), np.ones(shape, np.float32))


def test_leaf_sum_of_other_dtypes_is_jnp_sum():
  x = jnp.arange(12, dtype=jnp.bfloat16).reshape(3, 4)
  assert base.leaf_sum(x).dtype == jnp.bfloat16
  assert float(base.leaf_sum(x)) == 66.0
  ints = jnp.arange(12).reshape(3, 4)
  assert int(base.leaf_sum(ints)) == 66


def test_leaf_sum_in_float64():
  with jax.enable_x64(True):
    x = jax.random.normal(jax.random.key(2), (300, 100), jnp.float64)
    np.testing.assert_allclose(base.leaf_sum(x), np.sum(np.asarray(x)), rtol=1e-13)


def test_weighted_tree_sum_skips_a_zero_weight_and_keeps_a_traced_one():
  params = {"a": jnp.ones((2, 3)), "b": jnp.full((4,), 2.0)}
  zero = jax.make_jaxpr(lambda p: base.weighted_tree_sum(0.0, jnp.square, p))(params)
  assert "integer_pow" not in str(zero) and "square" not in str(zero)
  assert float(base.weighted_tree_sum(0, jnp.square, params)) == 0.0
  assert float(base.weighted_tree_sum(0.5, jnp.square, params)) == 0.5 * (6 + 16)
  weights = jnp.array([0.0, 1.0, 2.0])
  swept = jax.vmap(lambda w: base.weighted_tree_sum(w, jnp.square, params))(weights)
  np.testing.assert_allclose(swept, [0.0, 22.0, 44.0])
