"""sparsejax.models.pooling: the reshaped max pool against Flax's, value and gradient."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sparsejax.models.pooling import max_pool, tiles_exactly


@pytest.mark.parametrize("shape,window", [((4, 24, 24, 20), (2, 2)), ((3, 10, 10, 16), (2, 2)),
                                          ((2, 9, 6, 3), (3, 2))])
def test_value_and_gradient_equal_flax_max_pool(shape, window):
  x = jax.random.normal(jax.random.key(0), shape)  # continuous: no ties
  head = jax.random.normal(jax.random.key(1), (shape[0], shape[1] // window[0],
                                               shape[2] // window[1], shape[3]))
  ours = lambda x: jnp.sum(head * max_pool(x, window))
  flax = lambda x: jnp.sum(head * nn.max_pool(x, window, strides=window))
  np.testing.assert_array_equal(max_pool(x, window), nn.max_pool(x, window, strides=window))
  np.testing.assert_array_equal(jax.grad(ours)(x), jax.grad(flax)(x))


def test_the_gradient_has_no_select_and_scatter():
  x = jnp.ones((2, 8, 8, 3))
  text = jax.jit(jax.grad(lambda x: jnp.sum(max_pool(x, (2, 2))))).lower(x).as_text()
  assert "select_and_scatter" not in text and "reduce_window" not in text


def test_windows_that_do_not_tile_go_to_flax():
  x = jax.random.normal(jax.random.key(2), (2, 7, 7, 3))
  assert not tiles_exactly(x.shape, (2, 2), (2, 2), "VALID")  # 7 is odd
  np.testing.assert_array_equal(max_pool(x, (2, 2)), nn.max_pool(x, (2, 2), strides=(2, 2)))
  overlapping = max_pool(x, (3, 3), (2, 2), padding=((1, 1), (1, 1)))
  np.testing.assert_array_equal(
      overlapping, nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1))))


def test_ties_after_relu_carry_no_gradient_either_way():
  x = jnp.concatenate([jnp.full((1, 2, 2, 1), -1.0), jnp.full((1, 2, 2, 1), 2.0)], axis=2)
  f = lambda pool: lambda x: jnp.sum(pool(jax.nn.relu(x)))
  ours = jax.grad(f(lambda h: max_pool(h, (2, 2))))(x)
  flax = jax.grad(f(lambda h: nn.max_pool(h, (2, 2), strides=(2, 2))))(x)
  # The zero window: no gradient. The window of four equal maxima: the total is 1 either way.
  np.testing.assert_array_equal(ours[..., :2, :], flax[..., :2, :])
  assert float(jnp.sum(ours[..., 2:, :])) == float(jnp.sum(flax[..., 2:, :])) == 1.0
