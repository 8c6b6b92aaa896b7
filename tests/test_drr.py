"""DRR (smooth l0), its NORM factors, and the RL1 builder."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from sparsejax import objectives
from sparsejax.objectives.drr import drr, norm_factors
from sparsejax.objectives.rl1 import rl1


def two_layers():
  """Layer sizes 6 (Dense_0) and 3 (Dense_1): 9 parameters in 2 layers."""
  return {
      "Dense_0": {"kernel": jnp.array([[0.5, -1.0], [0.2, 0.0]]), "bias": jnp.array([0.3, -0.7])},
      "Dense_1": {"kernel": jnp.array([[1.5], [-0.1]]), "bias": jnp.array([0.05])},
  }


def nested():
  """Block_0 (10 parameters: a Dense of 6 and a BatchNorm of 4) and Dense_1 (3)."""
  return {
      "Block_0": {"Dense_0": {"kernel": jnp.ones((2, 2)), "bias": jnp.ones(2)},
                  "BatchNorm_0": {"scale": jnp.ones(2), "bias": jnp.ones(2)}},
      "Dense_1": {"kernel": jnp.ones((2, 1)), "bias": jnp.ones(1)},
  }


def hand_gradient(params, alpha, beta, rho, factors=None):
  factors = factors or jax.tree.map(lambda _: 1.0, params)
  return jax.tree.map(
      lambda t, c: alpha * beta * np.sign(t) * np.exp(-beta * np.abs(t)) * c + 2 * rho * t,
      params, factors)


def test_penalty_and_gradient_equal_the_hand_formulas():
  alpha, beta, rho = 0.4, 3.0, 0.1
  params = two_layers()
  obj = drr(alpha, beta, rho=rho)
  flat = np.concatenate([np.ravel(x) for x in jax.tree.leaves(params)])
  expected = alpha * np.sum(1 - np.exp(-beta * np.abs(flat))) + rho * np.sum(flat**2)
  assert float(obj.penalty(params, ())) == pytest.approx(expected, rel=1e-6)
  grads = jax.jit(jax.grad(obj.penalty))(params, ())
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7),
               grads, hand_gradient(params, alpha, beta, rho))
  # sign(0) = 0 as in the reference: an exact zero gets no push from alpha.
  assert float(grads["Dense_0"]["kernel"][1, 1]) == 0.0


def test_gradient_matches_central_finite_differences_in_float64():
  with jax.enable_x64(True):
    params = jax.tree.map(lambda x: x.astype(jnp.float64), two_layers())
    params["Dense_0"]["kernel"] = params["Dense_0"]["kernel"].at[1, 1].set(0.4)
    for obj in (drr(0.4, 3.0, rho=0.1), drr(0.4, 3.0, rho=0.1, norm=True)):
      flat, unravel = ravel_pytree(params)
      grads, _ = ravel_pytree(jax.grad(obj.penalty)(params, ()))
      f = jax.jit(lambda v, obj=obj: obj.penalty(unravel(v), ()))
      h = 1e-6
      fd = np.array([(f(flat + h * e) - f(flat - h * e)) / (2 * h) for e in np.eye(flat.size)])
      np.testing.assert_allclose(grads, fd, rtol=1e-7, atol=1e-9)


def test_norm_factors_by_hand():
  layer = norm_factors(two_layers())
  for name, size in (("Dense_0", 6), ("Dense_1", 3)):
    assert layer[name] == {"kernel": pytest.approx(9 / (size * 2)),
                           "bias": pytest.approx(9 / (size * 2))}
  # Flat chains: blocks are layers and each holds one kernel, so both agree.
  assert norm_factors(two_layers(), layer_norm=False) == layer
  # Nested: layers are top-level entries (10 and 3 parameters, L = 2); blocks
  # are the enclosing dicts (6, 4, 3), normalised by B = 2 kernels.
  layer = norm_factors(nested())
  assert layer["Block_0"]["BatchNorm_0"]["scale"] == pytest.approx(13 / (10 * 2))
  assert layer["Dense_1"]["bias"] == pytest.approx(13 / (3 * 2))
  block = norm_factors(nested(), layer_norm=False)
  assert block["Block_0"]["Dense_0"]["kernel"] == pytest.approx(13 / (6 * 2))
  assert block["Block_0"]["BatchNorm_0"]["bias"] == pytest.approx(13 / (4 * 2))
  assert block["Dense_1"]["kernel"] == pytest.approx(13 / (3 * 2))
  with pytest.raises(ValueError, match="kernel"):
    norm_factors({"BatchNorm_0": {"scale": jnp.ones(2)}}, layer_norm=False)


def test_norm_scales_the_alpha_term_only():
  alpha, beta, rho = 0.4, 3.0, 0.1
  params = two_layers()
  factors = norm_factors(params)
  grads = jax.jit(jax.grad(drr(alpha, beta, rho=rho, norm=True).penalty))(params, ())
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7),
               grads, hand_gradient(params, alpha, beta, rho, factors))
  value = drr(alpha, beta, rho=rho, norm=True).penalty(params, ())
  expected = sum(c * alpha * np.sum(1 - np.exp(-beta * np.abs(t))) + rho * np.sum(np.square(t))
                 for t, c in zip(jax.tree.leaves(params), jax.tree.leaves(factors)))
  assert float(value) == pytest.approx(expected, rel=1e-6)


def test_large_beta_tends_to_alpha_times_l0():
  params = two_layers()  # 8 nonzero entries, smallest |theta| = 0.05
  assert float(drr(0.3, 1e4).penalty(params, ())) == pytest.approx(0.3 * 8, rel=1e-6)


def test_invalid_arguments():
  with pytest.raises(ValueError, match="no.*regularised"):
    drr(1.0, 0.0)
  with pytest.raises(ValueError, match="beta"):
    drr(1.0, -5.0)
  with pytest.raises(ValueError, match="alpha"):
    drr(-1.0, 10.0)
  with pytest.raises(ValueError, match="rho"):
    drr(1.0, 10.0, rho=-1.0)


def test_rl1_is_the_elastic_net():
  params = two_layers()
  assert float(rl1(0.2, 0.1).penalty(params, ())) == pytest.approx(
      float(objectives.elastic_net(0.2, 0.1).penalty(params, ())))
  assert float(rl1(0.2).penalty(params, ())) == pytest.approx(
      float(objectives.l1(0.2).penalty(params, ())))


def test_gradient_is_the_reference_formula_to_an_ulp():
  # The reference adds alpha beta sign(theta) exp(-beta |theta|) to the data
  # gradient; the penalty's derivative is that expression, to the rounding of the products.
  theta = jax.random.normal(jax.random.key(0), (784, 300)) * 0.3
  theta = theta.at[0, :5].set(0.0)
  alpha, beta = 1e-5, 10.0
  grad = jax.jit(jax.grad(lambda p: drr(alpha, beta).penalty(p, ())))(theta)
  expected = jax.jit(lambda t: alpha * beta * jnp.sign(t) * jnp.exp(-beta * jnp.abs(t)))(theta)
  np.testing.assert_allclose(grad, expected, rtol=2.4e-7, atol=0)  # the order of the products
  assert np.all(np.asarray(grad[0, :5]) == 0.0)


def test_rho_zero_adds_no_square_to_the_step():
  theta = {"kernel": jnp.ones((4, 3))}
  jaxpr = str(jax.make_jaxpr(lambda p: drr(1e-5, 10.0).penalty(p, ()))(theta))
  assert "integer_pow" not in jaxpr and "square" not in jaxpr
  jaxpr = str(jax.make_jaxpr(lambda p: drr(1e-5, 10.0, rho=0.5).penalty(p, ()))(theta))
  assert "integer_pow" in jaxpr or "square" in jaxpr
