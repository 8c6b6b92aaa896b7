"""TAMADE: binary search of the largest global magnitude threshold in tolerance."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from sparsejax import masks, objectives
from sparsejax.models import MLP
from sparsejax.pruning.tamade import make_tamade_fn, tamade
from sparsejax.train import REGRESSION, create_train_state, data_loss_fn


def quadratic_problem(seed=0):
  """``f(theta) = 1 + sum (theta_a - a)^2 + sum (theta_b - b)^2``.

  Pruning entry i costs ``theta_i^2``, so the loss at threshold t,
  ``1 + sum_{|theta_i| < t} theta_i^2``, grows with t and the accepted
  thresholds form an interval ``[0, t*]``: the search must find ``t*``. Leaf
  ``free`` does not enter the loss; leaf ``dense`` has a ``None`` mask.
  """
  ka, kb, kf = jax.random.split(jax.random.key(seed), 3)
  params = {
      "a": jax.random.uniform(ka, (3, 4), minval=-2.0, maxval=2.0),
      "b": jax.random.uniform(kb, (5,), minval=-2.0, maxval=2.0),
      "free": jax.random.uniform(kf, (4,), minval=0.001, maxval=0.01),
      "dense": jnp.array([1e-4, -3.0]),
  }
  mask_tree = {"a": jnp.ones((3, 4), bool), "b": jnp.ones(5, bool),
               "free": jnp.ones(4, bool), "dense": None}
  ref = {k: params[k] for k in ("a", "b")}

  def loss_fn(p):
    return 1.0 + sum(jnp.sum(jnp.square(p[k] - ref[k])) for k in ref)
  return loss_fn, params, mask_tree


def loss_at(loss_fn, params, mask_tree, threshold):
  pruned = masks.global_magnitude_threshold(params, mask_tree, threshold)
  return loss_fn(masks.apply(pruned, params))


def test_threshold_matches_brute_force_grid():
  loss_fn, params, mask_tree = quadratic_problem()
  delta, resolution = 0.5, 1e-6
  result = jax.jit(lambda p, m: tamade(loss_fn, p, m, delta=delta, resolution=resolution))(
      params, mask_tree)

  high = 2 * max(float(jnp.abs(params[k]).max()) for k in ("a", "b", "free"))
  grid = jnp.linspace(0.0, high, 100_001)
  losses = jax.vmap(lambda t: loss_at(loss_fn, params, mask_tree, t))(grid)
  target = float(loss_fn(params))
  best = float(grid[np.flatnonzero(np.asarray(losses) <= (1 + delta) * target).max()])
  step = float(grid[1] - grid[0])
  assert abs(float(result.threshold) - best) <= max(step, resolution)
  brute_masks = masks.global_magnitude_threshold(params, mask_tree, best)
  jax.tree.map(np.testing.assert_array_equal, result.masks, brute_masks)
  assert float(result.final_loss) <= (1 + delta) * target
  assert float(result.final_loss) == pytest.approx(
      float(loss_at(loss_fn, params, mask_tree, result.threshold)))
  assert float(result.target_loss) == pytest.approx(target)


def test_evaluation_count_is_log2_of_range_over_resolution():
  loss_fn, params, mask_tree = quadratic_problem()
  for resolution in (1e-3, 1e-5, 1e-7):
    result = tamade(loss_fn, params, mask_tree, delta=0.5, resolution=resolution)
    high = 2 * max(float(jnp.abs(params[k]).max()) for k in ("a", "b", "free"))
    expected = math.ceil(math.log2(high / resolution))
    assert abs(int(result.evaluations) - expected) <= 1, (resolution, int(result.evaluations))


def test_given_target_loss_is_used():
  loss_fn, params, mask_tree = quadratic_problem()
  computed = tamade(loss_fn, params, mask_tree, delta=0.5, resolution=1e-4)
  given = tamade(loss_fn, params, mask_tree, delta=0.5, resolution=1e-4,
                 target_loss=computed.target_loss)
  assert float(given.threshold) == float(computed.threshold)
  loose = tamade(loss_fn, params, mask_tree, delta=0.5, resolution=1e-4, target_loss=100.0)
  assert float(loose.threshold) > float(computed.threshold)


def test_delta_zero_never_increases_the_loss():
  loss_fn, params, mask_tree = quadratic_problem()
  result = tamade(loss_fn, params, mask_tree, delta=0.0, resolution=1e-7)
  assert float(result.final_loss) <= float(result.target_loss)
  assert float(loss_at(loss_fn, params, mask_tree, result.threshold)) <= float(result.target_loss)
  # Every entry of ``free`` (which the loss ignores) goes, nothing of ``a`` or ``b``.
  smallest = min(float(jnp.abs(params[k]).min()) for k in ("a", "b"))
  assert smallest - 1e-7 < float(result.threshold) <= smallest
  assert not np.any(result.masks["free"])
  assert np.all(result.masks["a"]) and np.all(result.masks["b"])


def test_none_leaves_are_untouched_and_not_in_the_range():
  loss_fn, params, mask_tree = quadratic_problem()
  params = {**params, "dense": jnp.array([1e-4, -300.0])}
  result = tamade(loss_fn, params, mask_tree, delta=0.5, resolution=1e-5)
  assert result.masks["dense"] is None
  high = 2 * max(float(jnp.abs(params[k]).max()) for k in ("a", "b", "free"))
  assert abs(int(result.evaluations) - math.ceil(math.log2(high / 1e-5))) <= 1


def test_already_pruned_entries_stay_pruned():
  loss_fn, params, mask_tree = quadratic_problem()
  big = jnp.unravel_index(jnp.argmax(jnp.abs(params["a"])), (3, 4))
  mask_tree = {**mask_tree, "a": mask_tree["a"].at[big].set(False)}
  result = tamade(loss_fn, params, mask_tree, delta=0.0, resolution=1e-6)
  assert not bool(result.masks["a"][big])
  # The target is the loss of the masked parameters, so delta = 0 accepts the
  # entries the loss ignores.
  assert float(result.target_loss) == pytest.approx(
      float(loss_fn(masks.apply(mask_tree, params))))
  assert float(result.threshold) > 0.0


def regression_problem():
  model = MLP(widths=(3, 8, 8, 2), activation="tanh")
  kx, kw = jax.random.split(jax.random.key(3))
  x = jax.random.normal(kx, (64, 3))
  y = jnp.sin(x[:, :2]) + 0.1 * jax.random.normal(kw, (64, 2))
  return model, x, y


def test_vmap_over_parameter_trees_equals_each_search():
  model, x, y = regression_problem()
  state = create_train_state(jax.random.key(0), model, x, objectives.plain(), optax.sgd(0.1))
  # Three different trees; their scales give different ranges, hence
  # different numbers of iterations.
  scales = jnp.array([1.0, 3.0, 0.4])
  trees = jax.tree.map(
      lambda p: scales.reshape((3,) + (1,) * p.ndim) * jnp.stack([p, -p, p[::-1]]), state.params)
  loss = data_loss_fn(model, REGRESSION, objectives.plain(), batch_size=16)

  def search(p):
    return tamade(lambda q: loss(q, state, x, y), p, state.masks, delta=0.05, resolution=1e-4)

  batched = jax.jit(jax.vmap(search))(trees)
  single_search = jax.jit(search)
  singles = [single_search(jax.tree.map(lambda p, i=i: p[i], trees)) for i in range(3)]
  assert len({int(s.evaluations) for s in singles}) > 1
  for i, single in enumerate(singles):
    assert float(batched.threshold[i]) == float(single.threshold)
    assert int(batched.evaluations[i]) == int(single.evaluations)
    assert float(batched.final_loss[i]) == pytest.approx(float(single.final_loss), rel=1e-6)
    jax.tree.map(lambda b, s, i=i: np.testing.assert_array_equal(b[i], s),
                 batched.masks, single.masks)


def test_make_tamade_fn_searches_the_state_on_the_given_data():
  model, x, y = regression_problem()
  state = create_train_state(jax.random.key(0), model, x, objectives.plain(), optax.sgd(0.1))
  search = make_tamade_fn(model, REGRESSION, objectives.plain(), batch_size=10,
                          delta=0.05, resolution=1e-5)
  result = search(state, x, y)
  full = jnp.mean(jnp.mean(jnp.square(model.apply({"params": state.params}, x) - y), axis=-1))
  assert float(result.target_loss) == pytest.approx(float(full), rel=1e-5)
  pruned = masks.apply(result.masks, state.params)
  pruned_loss = jnp.mean(jnp.mean(jnp.square(model.apply({"params": pruned}, x) - y), axis=-1))
  assert float(result.final_loss) == pytest.approx(float(pruned_loss), rel=1e-5)
  assert float(pruned_loss) <= 1.05 * float(full) * (1 + 1e-6)
  assert 0.0 < float(result.threshold)
  assert masks.density(result.masks, state.params) < 1.0
