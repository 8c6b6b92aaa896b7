"""PMMP: the Bernoulli closed form, the reference's hand-coded gradients, the step."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.flatten_util import ravel_pytree

from sparsejax import masks
from sparsejax.models.mlp import MLP
from sparsejax.objectives.pmmp import (PMMPState, expected_squared_gap, gamma_saturated, pmmp,
                                       prune_state)
from sparsejax.train import REGRESSION, create_train_state, make_train_step


def random_point(seed=0, shape=(4, 3)):
  """theta, w, gamma in (0, 1), u > 0 as a one-leaf tree each."""
  k = jax.random.split(jax.random.key(seed), 4)
  theta = {"Dense_0": {"kernel": jax.random.normal(k[0], shape)}}
  state = PMMPState(
      w={"Dense_0": {"kernel": jax.random.normal(k[1], shape)}},
      gamma={"Dense_0": {"kernel": jax.random.uniform(k[2], shape, minval=0.05, maxval=0.95)}},
      u={"Dense_0": {"kernel": jax.random.uniform(k[3], shape, minval=0.1, maxval=2.0)}},
  )
  return theta, state


def as_applied(objective, grads_state):
  """The step's convention: the gradient of the ascended (dual) leaves is negated."""
  return jax.tree.map(lambda g, dual: -g if dual else g, grads_state, objective.ascend(grads_state))


def test_bracket_is_the_bernoulli_expectation_monte_carlo():
  theta, w, gamma = (np.array([0.7, -1.2, 0.3, 2.0]), np.array([1.5, -0.4, -2.0, 0.9]),
                     np.array([0.2, 0.5, 0.9, 0.65]))
  n = 200_000
  z = np.random.default_rng(0).random((n, 4)) < gamma
  samples = (theta - w * z) ** 2
  mc, se = samples.mean(0), samples.std(0) / np.sqrt(n)
  closed = np.asarray(expected_squared_gap(theta, w, gamma))
  assert np.all(np.abs(mc - closed) < 5 * se), (mc, closed, se)


def test_bracket_is_the_bernoulli_expectation_exact_enumeration():
  theta, w = np.array([0.7, -1.2, 0.3]), np.array([1.5, -0.4, -2.0])
  gamma = np.array([0.2, 0.5, 0.9])
  exact = 0.0
  for z in itertools.product([0, 1], repeat=3):
    z = np.array(z)
    prob = np.prod(np.where(z == 1, gamma, 1 - gamma))
    exact += prob * np.sum((theta - w * z) ** 2)
  assert float(jnp.sum(expected_squared_gap(theta, w, gamma))) == pytest.approx(exact, rel=1e-6)
  # Zero exactly at gamma in {0, 1} with theta = w gamma.
  np.testing.assert_array_equal(expected_squared_gap(theta, theta, np.ones(3)), 0.0)
  np.testing.assert_array_equal(expected_squared_gap(np.zeros(3), w, np.zeros(3)), 0.0)


def test_gradients_equal_the_reference_hand_coded_ones():
  alpha, mf, l1_alpha, rho = 0.3, 1.7, 0.05, 0.2
  obj = pmmp(alpha, u_value_multiply_factor=mf, l1_alpha=l1_alpha, rho=rho)
  theta, state = random_point()
  g_theta, g_state = jax.jit(jax.grad(obj.penalty, argnums=(0, 1)))(theta, state)
  g_state = as_applied(obj, g_state)
  t = theta["Dense_0"]["kernel"]
  w, gm, u = (leaf["Dense_0"]["kernel"] for leaf in state)
  d = t - w * gm
  expected = {
      "theta": 2 * mf * u * d + 2 * rho * t + l1_alpha * jnp.sign(t),
      "w": -2 * mf * u * d * gm + 2 * mf * u * w * gm * (1 - gm),
      "gamma": -2 * mf * u * d * w + mf * u * w**2 * (1 - 2 * gm) + alpha,
      "u": -mf * (d**2 + w**2 * gm * (1 - gm)),
  }
  got = {"theta": g_theta["Dense_0"]["kernel"],
         **{k: getattr(g_state, k)["Dense_0"]["kernel"] for k in PMMPState._fields}}
  for name in expected:
    np.testing.assert_allclose(got[name], expected[name], rtol=1e-5, atol=1e-6, err_msg=name)
  # The applied u-gradient is never positive, so u only grows.
  assert np.all(np.asarray(got["u"]) <= 0)


def test_gradients_match_central_finite_differences_in_float64():
  with jax.enable_x64(True):
    obj = pmmp(0.3, u_value_multiply_factor=1.7, l1_alpha=0.05, rho=0.2)
    theta, state = random_point(seed=3, shape=(2, 2))
    theta, state = jax.tree.map(lambda x: x.astype(jnp.float64), (theta, state))
    g_theta, g_state = jax.jit(jax.grad(obj.penalty, argnums=(0, 1)))(theta, state)
    flat, unravel = ravel_pytree((theta, state))
    grads, _ = ravel_pytree((g_theta, g_state))
    f = jax.jit(lambda v: obj.penalty(*unravel(v)))
    h = 1e-6
    eye = np.eye(flat.size)
    fd = np.array([(f(flat + h * e) - f(flat - h * e)) / (2 * h) for e in eye])
    np.testing.assert_allclose(grads, fd, rtol=1e-7, atol=1e-8)


def test_initial_state_is_feasible():
  params = {"Dense_0": {"kernel": jnp.arange(6.0).reshape(2, 3) - 2.5, "bias": jnp.zeros(3)}}
  obj = pmmp(0.25)
  state = obj.init(jax.random.key(0), params)
  assert isinstance(state, PMMPState)
  jax.tree.map(np.testing.assert_array_equal, state.w, params)
  assert float(obj.penalty(params, state)) == pytest.approx(0.25 * 9)
  # Feasible: the coupling gives u no gradient, and gamma only alpha.
  g = jax.jit(jax.grad(obj.penalty, argnums=1))(params, state)
  jax.tree.map(lambda x: np.testing.assert_array_equal(x, 0.0), g.u)
  jax.tree.map(lambda x: np.testing.assert_allclose(x, 0.25), g.gamma)
  # Only u is ascended.
  dual = obj.ascend(state)
  assert isinstance(dual, PMMPState)
  assert jax.tree.structure(dual) == jax.tree.structure(state)
  assert jax.tree.leaves(dual) == [False] * 4 + [True] * 2


def test_alpha_zero_is_plain_training_with_the_optional_terms():
  theta, state = random_point()
  obj = pmmp(0.0, l1_alpha=0.1, rho=0.2)
  t = theta["Dense_0"]["kernel"]
  assert float(obj.penalty(theta, state)) == pytest.approx(
      float(0.1 * jnp.sum(jnp.abs(t)) + 0.2 * jnp.sum(t**2)), rel=1e-6)
  g_state = jax.jit(jax.grad(obj.penalty, argnums=1))(theta, state)
  jax.tree.map(lambda x: np.testing.assert_array_equal(x, 0.0), g_state)


def step_setup(obj, lr):
  model = MLP(widths=(3, 4, 1))
  k1, k2, k3 = jax.random.split(jax.random.key(0), 3)
  x = jax.random.normal(k1, (16, 3))
  y = jax.random.normal(k2, (16, 1))
  opt = optax.sgd(lr)
  state = create_train_state(k3, model, x, obj, opt)
  step = make_train_step(model, REGRESSION, obj, opt)
  return state, step(state, (x, y), jax.random.key(1))[0]


def test_train_step_ascends_u_and_clamps_gamma_below():
  lr, mf, alpha = 0.1, 2.0, 10.0
  obj = pmmp(alpha, initial_p_value=0.5, u_value_multiply_factor=mf)
  before, after = step_setup(obj, lr)
  s0, s1 = before.objective_state, after.objective_state
  # u rises by lr * mf * bracket at the old point (w = theta, gamma = 0.5).
  expected_u = jax.tree.map(lambda t, w, g: lr * mf * expected_squared_gap(t, w, g),
                            before.params, s0.w, s0.gamma)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-8),
               s1.u, expected_u)
  # With u = 0 gamma's gradient is alpha: 0.5 - lr * alpha = -0.5, clamped to 0.
  jax.tree.map(lambda g: np.testing.assert_array_equal(g, 0.0), s1.gamma)
  jax.tree.map(np.testing.assert_array_equal, s1.w, s0.w)


def test_train_step_clamps_gamma_above():
  lr, alpha, u0 = 0.1, 1e-3, 5.0
  obj = pmmp(alpha, initial_u_value=u0)
  before, after = step_setup(obj, lr)
  s0, s1 = before.objective_state, after.objective_state
  # At gamma = 1, theta = w: g_gamma = alpha - u w^2, so the raw update is
  # 1 + lr (u w^2 - alpha), above 1 wherever u w^2 > alpha (not at zero biases).
  raw = jax.tree.map(lambda w: 1 + lr * (u0 * w**2 - alpha), s0.w)
  assert any(np.any(r > 1) for r in jax.tree.leaves(raw))
  jax.tree.map(lambda g, r: np.testing.assert_allclose(g, np.minimum(r, 1.0), rtol=1e-6),
               s1.gamma, raw)


def test_readout_masks_the_nonzero_entries():
  params = {"a": jnp.array([0.0, 1.0, -2.0])}
  obj = pmmp(0.1)
  out, m = obj.readout(params, obj.init(jax.random.key(0), params))
  np.testing.assert_array_equal(out["a"], params["a"])
  np.testing.assert_array_equal(m["a"], [False, True, True])


def test_prune_state_zeroes_gamma_and_w_where_pruned():
  params = {"a": jnp.array([0.0, 1.0, -2.0]), "b": jnp.array([3.0, 0.0])}
  obj = pmmp(0.1, initial_p_value=0.7, initial_u_value=0.5)
  state = obj.init(jax.random.key(0), params)
  m = masks.from_nonzero(params, {"a": jnp.ones(3, bool), "b": None})
  pruned = prune_state(state, m)
  assert isinstance(pruned, PMMPState)
  np.testing.assert_allclose(pruned.gamma["a"], [0.0, 0.7, 0.7], rtol=1e-6)
  np.testing.assert_array_equal(pruned.w["a"], [0.0, 1.0, -2.0])
  np.testing.assert_allclose(pruned.gamma["b"], [0.7, 0.7], rtol=1e-6)  # dense leaf untouched
  jax.tree.map(np.testing.assert_array_equal, pruned.u, state.u)
  # A pruned entry's coupling vanishes: only alpha acts on its gamma.
  g = jax.jit(jax.grad(obj.penalty, argnums=1))(params, pruned)
  assert float(g.gamma["a"][0]) == pytest.approx(0.1)
  assert float(g.w["a"][0]) == 0.0 and float(g.u["a"][0]) == 0.0


def test_gamma_saturated_counts_entries_strictly_inside():
  def state(n_inside, n=1000):
    g = np.concatenate([np.full(n_inside, 0.5), np.zeros(n - n_inside - 2), [0.1, 0.9]])
    gamma = {"x": jnp.asarray(g[:600]), "y": jnp.asarray(g[600:])}
    return PMMPState(w=jax.tree.map(jnp.ones_like, gamma), gamma=gamma,
                     u=jax.tree.map(jnp.zeros_like, gamma))
  assert bool(gamma_saturated(state(10)))  # 10 / 1000 = 1 %; 0.1 and 0.9 are not inside
  assert not bool(gamma_saturated(state(11)))
  assert bool(gamma_saturated(state(11), max_fraction=0.02))
  assert bool(jax.jit(gamma_saturated)(state(0)))


def test_invalid_arguments():
  with pytest.raises(ValueError, match="alpha"):
    pmmp(-1.0)
  with pytest.raises(ValueError, match="initial_p_value"):
    pmmp(0.1, initial_p_value=1.5)
  with pytest.raises(ValueError, match="rho"):
    pmmp(0.1, rho=-1.0)
