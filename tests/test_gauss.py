"""The Gaussian code length with a learnable sigma, and its objective wrapper."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from sparsejax import objectives
from sparsejax.models.mlp import MLP
from sparsejax.objectives.base import Objective
from sparsejax.objectives.gauss import GaussState, gauss_code_length, with_gauss_loss
from sparsejax.train import REGRESSION, create_train_state, make_eval_fn, make_train_step

needs_loss_transform = pytest.mark.skipif(
    "loss_transform" not in Objective._fields,
    reason="needs Objective.loss_transform and its use in sparsejax/train/step.py")


def test_code_length_formula():
  se = jnp.array([0.01, 0.04])
  expected = 0.025 / (2 * 0.01 * math.log(2)) + 0.5 * math.log2(0.01)
  assert float(jnp.mean(gauss_code_length(se, 0.1))) == pytest.approx(expected, rel=1e-6)
  # Affine in the squared error: the mean code length is that of the MSE.
  assert float(gauss_code_length(jnp.mean(se), 0.1)) == pytest.approx(expected, rel=1e-6)
  # Even in sigma.
  assert float(gauss_code_length(0.02, -0.3)) == pytest.approx(float(gauss_code_length(0.02, 0.3)))


def test_gradient_in_sigma():
  mse, sigma = 0.02, 0.1
  g = jax.grad(gauss_code_length, argnums=1)(mse, sigma)
  assert float(g) == pytest.approx((1 / sigma - mse / sigma**3) / math.log(2), rel=1e-5)
  with jax.enable_x64(True):
    s, h = jnp.float64(0.3), 1e-6
    fd = (gauss_code_length(mse, s + h) - gauss_code_length(mse, s - h)) / (2 * h)
    g = jax.grad(gauss_code_length, argnums=1)(mse, s)
    assert float(g) == pytest.approx(float(fd), rel=1e-8)


def test_optimum_is_sigma_squared_equal_to_mse():
  mse = 0.0064
  sigmas = jnp.linspace(0.01, 0.3, 2901)
  best = sigmas[jnp.argmin(gauss_code_length(mse, sigmas))]
  assert float(best) ** 2 == pytest.approx(mse, rel=3e-3)
  optimum = math.sqrt(mse)
  assert float(jax.grad(gauss_code_length, argnums=1)(mse, optimum)) == pytest.approx(0.0, abs=1e-4)
  assert float(gauss_code_length(mse, optimum)) == pytest.approx(0.5 * math.log2(math.e * mse))


def test_initial_sigma_must_be_positive():
  with pytest.raises(ValueError, match="initial_sigma"):
    with_gauss_loss(objectives.plain(), initial_sigma=0.0)


@needs_loss_transform
def test_wrapper_delegates_and_owns_sigma():
  params = {"w": jnp.array([1.0, -2.0])}
  obj = with_gauss_loss(objectives.l1(0.5))
  state = obj.init(jax.random.key(0), params)
  assert isinstance(state, GaussState)
  assert float(state.sigma) == pytest.approx(0.1) and state.sigma.dtype == jnp.float32
  assert float(obj.penalty(params, state)) == pytest.approx(1.5)
  assert obj.ascend(state) == GaussState(inner=(), sigma=False)
  se = jnp.array([0.01, 0.03])
  np.testing.assert_allclose(obj.loss_transform(se, state), gauss_code_length(se, 0.1), rtol=1e-6)


@needs_loss_transform
def test_train_step_descends_on_sigma_and_evaluation_reports_bits():
  model = MLP(widths=(2, 3, 1))
  k1, k2, k3 = jax.random.split(jax.random.key(0), 3)
  x, y = jax.random.normal(k1, (8, 2)), jax.random.normal(k2, (8, 1))
  lr, obj = 1e-4, with_gauss_loss(objectives.plain())
  opt = optax.sgd(lr)
  state = create_train_state(k3, model, x, obj, opt)
  step = make_train_step(model, REGRESSION, obj, opt)
  new_state, metrics = step(state, (x, y), jax.random.key(1))
  mse = float(jnp.mean((model.apply({"params": state.params}, x) - y) ** 2))
  assert float(metrics["loss"]) == pytest.approx(float(gauss_code_length(mse, 0.1)), rel=1e-5)
  g = (1 / 0.1 - mse / 0.1**3) / math.log(2)
  assert float(new_state.objective_state.sigma) == pytest.approx(0.1 - lr * g, rel=1e-5)
  evaluation = make_eval_fn(model, REGRESSION, obj, batch_size=3)(state, x, y)
  assert float(evaluation["loss"]) == pytest.approx(float(gauss_code_length(mse, 0.1)), rel=1e-5)
