"""DeepHoyer's regularisers: hand-computed values, finite differences, zeros, conv groups."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sparsejax.objectives import hoyer as H

W = np.array([[3.0, -4.0, 0.0], [0.0, 0.0, 0.0]])  # Dense (in=2, out=3); input 1 is all zero


def test_elementwise_values_by_hand():
  w = jnp.asarray(W)
  assert float(H.l1(w)) == 7.0
  assert float(H.hoyer(w)) == pytest.approx(7.0 / 5.0)
  assert float(H.hoyer_square(w)) == pytest.approx(49.0 / 25.0)
  assert float(H.transformed_l1(w, 1.0)) == pytest.approx(2 * 3 / 4 + 2 * 4 / 5)
  assert float(H.transformed_l1(w, 2.0)) == pytest.approx(3 * 3 / 5 + 3 * 4 / 6)
  # HS is scale invariant and lies in [1, n].
  assert float(H.hoyer_square(10 * w)) == pytest.approx(float(H.hoyer_square(w)))
  v = jnp.asarray(np.random.default_rng(0).standard_normal(50))
  assert 1 <= float(H.hoyer_square(v)) <= 50


def test_dense_groups_by_hand():
  w = jnp.asarray(W)
  inputs, outputs = H.group_norms(w)
  np.testing.assert_allclose(inputs, [5.0, 0.0])   # rows: input neurons
  np.testing.assert_allclose(outputs, [3.0, 4.0, 0.0])  # columns: output neurons
  assert float(H.group_lasso(w)) == pytest.approx(5.0 + 7.0)
  assert float(H.group_hoyer_square(w)) == pytest.approx((25.0 + 49.0) / 25.0)


def test_conv_groups_are_input_channels_and_filters():
  rng = np.random.default_rng(1)
  w = rng.standard_normal((3, 3, 4, 5))  # (kh, kw, in, out)
  inputs, outputs = H.group_norms(jnp.asarray(w))
  expected_in = [np.linalg.norm(w[:, :, c, :]) for c in range(4)]
  expected_out = [np.linalg.norm(w[:, :, :, f]) for f in range(5)]
  np.testing.assert_allclose(inputs, expected_in, rtol=1e-6)
  np.testing.assert_allclose(outputs, expected_out, rtol=1e-6)
  # The reference's MNIST CNN bug grouped (in, kh, kw) fibres per output and
  # (out, kh, kw) per input position: a different quantity.
  buggy = np.linalg.norm(w, axis=(0,)).sum()
  assert not np.isclose(float(H.group_lasso(jnp.asarray(w))), buggy)


@pytest.mark.parametrize("name", H.REGULARISERS)
def test_gradients_match_finite_differences(name):
  with jax.enable_x64(True):
    rng = np.random.default_rng(2)
    shape = (4, 3) if name in H.STRUCTURAL else (7,)
    w = jnp.asarray(rng.standard_normal(shape))
    fn = H.per_tensor(name, a=1.5)
    grad = np.asarray(jax.grad(fn)(w))
    eps = 1e-6
    numeric = np.zeros(w.size)
    for i in range(w.size):
      e = np.zeros(w.size)
      e[i] = eps
      e = e.reshape(shape)
      numeric[i] = (float(fn(w + e)) - float(fn(w - e))) / (2 * eps)
    np.testing.assert_allclose(grad.ravel(), numeric, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("name", H.REGULARISERS)
def test_an_all_zero_tensor_contributes_nothing_with_zero_gradient(name):
  shape = (4, 3) if name in H.STRUCTURAL else (7,)
  fn = H.per_tensor(name)
  zero = jnp.zeros(shape)
  assert float(fn(zero)) == 0.0
  grad = jax.grad(fn)(zero)
  assert np.all(np.isfinite(grad)) and np.all(np.asarray(grad) == 0)
  # A tensor with a zero group has finite gradients everywhere too.
  partial = jnp.asarray(W if name in H.STRUCTURAL else W[0].tolist() + [0.0] * 4)
  assert np.all(np.isfinite(jax.grad(fn)(partial)))


def test_the_objective_sums_per_tensor_over_the_chosen_leaves():
  params = {"Dense_0": {"kernel": jnp.asarray(W), "bias": jnp.asarray([1.0, -2.0, 0.0])},
            "Dense_1": {"kernel": jnp.zeros((3, 2)), "bias": jnp.zeros(2)}}
  every = H.deephoyer("hoyer", 0.5, tensors="all")
  kernels = H.deephoyer("hoyer", 0.5, tensors="kernels")
  expected_bias = 3.0 / np.sqrt(5.0)
  assert float(every.penalty(params, ())) == pytest.approx(0.5 * (7 / 5 + expected_bias))
  assert float(kernels.penalty(params, ())) == pytest.approx(0.5 * 7 / 5)
  group = H.deephoyer("group_lasso", 2.0)  # kernels only, whatever ``tensors`` says
  assert float(group.penalty(params, ())) == pytest.approx(2.0 * 12.0)
  with pytest.raises(ValueError, match="accepted"):
    H.deephoyer("hessian", 1.0)
