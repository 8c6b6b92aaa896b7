"""The saturation test of the efficient-compression reference."""

import jax
import jax.numpy as jnp
import numpy as np

from sparsejax.train.convergence import is_saturated, local_linear_smooth


def test_local_linear_smoother_reproduces_lines_exactly():
  y = jnp.asarray(3.0 - 2.0 * np.linspace(0, 1, 25))
  np.testing.assert_allclose(local_linear_smooth(y), y, atol=1e-5)


def test_noisy_plateau_is_saturated_and_falling_curve_is_not():
  rng = np.random.default_rng(0)
  t = np.arange(400.0)
  plateau = 0.5 + 0.01 * rng.standard_normal(400)
  falling = 1.0 - t / 400 + 0.001 * rng.standard_normal(400)
  assert bool(is_saturated(plateau, 30, 1e-10))
  assert not bool(is_saturated(falling, 30, 1e-10))
  # A large deviation d counts a slow fall as saturated (the shrinking test).
  assert bool(is_saturated(falling, 30, 1.0))


def test_needs_window_plus_two_values():
  assert not bool(is_saturated(np.ones(31), 30, 1e-10))
  assert bool(is_saturated(np.ones(32) + 1e-3 * np.arange(32) % 2, 30, 1e-10))


def test_hand_computed_decision():
  # Halves of 3 points each; for 3 points the local linear fit is exact on a line.
  curve = np.array([9.0, 3.0, 2.0, 1.0, 0.7, 0.4, 0.1])  # last 6: two falling lines
  m1, m2 = 2.0, 0.4                                        # half means, zero residuals
  assert not bool(is_saturated(curve, 5, 1.0))             # 1.6 > 0 + 1.0
  assert bool(is_saturated(curve, 5, 1.7))                 # 1.6 <= 0 + 1.7
  assert m1 - m2 == 1.6


def test_vmaps_over_curves():
  rng = np.random.default_rng(1)
  curves = jnp.stack([0.5 + 0.01 * rng.standard_normal(100), 1.0 - jnp.arange(100.0) / 100])
  out = jax.vmap(lambda c: is_saturated(c, 30, 1e-10))(curves)
  np.testing.assert_array_equal(out, [True, False])


def test_tail_buffer_gives_the_whole_curve_test_for_every_length():
  import jax
  import jax.numpy as jnp
  import numpy as np
  from sparsejax.train.convergence import is_saturated, push_tail, tail_length, tail_saturated
  rng = np.random.default_rng(0)
  curve = np.exp(-np.arange(120) / 30.0) + 0.01 * rng.standard_normal(120)
  window = 31
  tail = jnp.zeros(tail_length(window))
  count = jnp.zeros((), jnp.int32)
  check = jax.jit(lambda t, c, d: tail_saturated(t, c, window, d))
  for start in range(0, 120, 7):  # chunks of 7 values
    tail, count = push_tail(tail, count, jnp.asarray(curve[start:start + 7]))
    seen = curve[:start + 7]
    for deviation in (1e-10, 1e-3, 1e-1):
      assert bool(check(tail, count, deviation)) == bool(is_saturated(seen, window, deviation))
