"""The float32 normal quantile (Wichura's PPND7) against scipy's double precision."""

import jax
import jax.numpy as jnp
import jax.scipy.special
import numpy as np
import pytest
import scipy.special
from scipy import stats

from sparsejax.special import ndtri, ndtri_inside


def _float32_grid():
  """Both tails down to 1e-37 and 6e-8 (the float32 spacing below 1), and the bulk."""
  return np.concatenate([np.geomspace(1e-37, 0.5, 100_001), 1 - np.geomspace(6e-8, 0.5, 50_001),
                         np.linspace(0, 1, 100_001)[1:-1]]).astype(np.float32)


def _relative_error(got, p):
  exact = scipy.special.ndtri(p.astype(np.float64))
  return np.abs(np.asarray(got, np.float64) - exact) / np.maximum(np.abs(exact), 1e-2)


def test_float32_is_as_accurate_as_jax_ndtri():
  p = _float32_grid()
  ours = _relative_error(jax.jit(ndtri)(jnp.asarray(p)), p).max()
  theirs = _relative_error(jax.jit(jax.scipy.special.ndtri)(jnp.asarray(p)), p).max()
  assert ours < 5e-7  # PPND7's "about 1 part in 10^7", at float32 rounding
  assert ours <= 1.1 * theirs
  np.testing.assert_array_equal(ndtri_inside(jnp.asarray(p)), ndtri(jnp.asarray(p)))


@pytest.mark.parametrize("p", [0.5 - 0.425, 0.5 + 0.425, float(np.exp(-25.0))])
def test_continuous_where_the_approximations_hand_over(p):
  below, above = np.nextafter(np.float32(p), np.float32(0)), np.nextafter(np.float32(p), np.float32(1))
  values = np.asarray(ndtri(jnp.asarray([below, p, above], jnp.float32)), np.float64)
  np.testing.assert_allclose(values, scipy.special.ndtri(np.array([below, p, above], np.float64)),
                             rtol=5e-7)
  assert values[0] <= values[1] <= values[2]


def test_edges_as_jax_ndtri():
  p = jnp.asarray([0.0, 1.0, -0.1, 1.1, 0.5], jnp.float32)
  np.testing.assert_array_equal(ndtri(p), [-np.inf, np.inf, np.nan, np.nan, 0.0])


def test_float64_is_jax_ndtri():
  with jax.enable_x64(True):
    p = jnp.asarray(np.linspace(1e-12, 1 - 1e-12, 10_001))
    np.testing.assert_array_equal(ndtri(p), jax.scipy.special.ndtri(p))


@pytest.mark.parametrize("x64", [True, False])
def test_derivative_is_one_over_the_density(x64):
  with jax.enable_x64(x64):
    dtype = jnp.float64 if x64 else jnp.float32
    p = jnp.asarray([1e-9, 1e-5, 0.02, 0.3, 0.5, 0.9, 1 - 1e-5], dtype)
    for function in (ndtri, ndtri_inside):
      got = jax.vmap(jax.grad(function))(p)
      exact = 1 / stats.norm.pdf(scipy.special.ndtri(np.asarray(p, np.float64)))
      np.testing.assert_allclose(got, exact, rtol=1e-12 if x64 else 2e-5)  # float32: n to 4e-7, times n^2
    if x64:  # and against finite differences of the (approximating) function itself
      h = 1e-7 * jnp.minimum(p, 1 - p)
      fd = (ndtri(p + h) - ndtri(p - h)) / (2 * h)
      np.testing.assert_allclose(jax.vmap(jax.grad(ndtri))(p), fd, rtol=1e-4)


def test_quantiles_of_uniforms_are_standard_normal():
  u = jax.random.uniform(jax.random.key(0), (200_000,), jnp.float32, minval=1e-7, maxval=1.0)
  draws = np.asarray(ndtri_inside(u), np.float64)
  assert stats.kstest(draws, "norm").pvalue > 1e-3
  assert abs(draws.mean()) < 5 / np.sqrt(draws.size) and abs(draws.var() - 1) < 0.01
