"""Your own training loop: the sparsify optax wrapper and the one-line penalty.

Hand-computed masks, exact zeros under Adam, Zhu & Gupta's densities, one
compilation for every step, a plain user loop reaching its density with good
accuracy (synthetic data; real MNIST behind ``-m slow``), an orbax round trip
that resumes identically, the regularised loss equal to the train step's
(PMMP's duals ascended and projected), the sparse result, and the README
snippet.
"""

from __future__ import annotations

import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from sparsejax import masks as masks_lib
from sparsejax import models, objectives
from sparsejax.checkpoint import Checkpointer
from sparsejax.objectives.base import Objective, identity_readout, no_state
from sparsejax.train import (CLASSIFICATION, apply_masks, ascend_duals, create_train_state,
                             cross_entropy, density_at, density_of, gradual, make_train_step,
                             masks_of, one_shot, project, regularized, sparse_result, sparsify,
                             trainables, under)
from sparsejax.train.sparse_optax import SparseState, is_update_step, saliency_score
from tests.conftest import REPO


def tiny_params():
  return {"a": {"kernel": jnp.array([[0.1, -0.5], [0.3, 0.05]]), "bias": jnp.array([9.0, 9.0])},
          "b": {"kernel": jnp.array([1.0, -0.9, 0.8, 0.7])}}


def leaves_with_none(tree):
  return jax.tree.leaves(tree, is_leaf=lambda x: x is None)


def one_update(tx, params, grads):
  state = tx.init(params)
  updates, state = tx.update(grads, state, params)
  return optax.apply_updates(params, updates), state


# --------------------------------------------------------------------------
# Masks by hand


@pytest.mark.parametrize("scope, a_kernel, b_kernel", [
    # 4 of the 8 kernel entries: 1.0, -0.9, 0.8, 0.7 (all of b) over both leaves ...
    ("global", [[False, False], [False, False]], [True, True, True, True]),
    # ... or 2 of 4 in each leaf: -0.5, 0.3 of a; 1.0, -0.9 of b.
    ("layer", [[False, True], [True, False]], [True, True, False, False]),
])
def test_one_shot_masks_and_updates_by_hand(scope, a_kernel, b_kernel):
  params = tiny_params()
  grads = jax.tree.map(jnp.ones_like, params)
  tx = sparsify(optax.sgd(0.1), one_shot(0.5, step=0), scope=scope)
  new_params, state = one_update(tx, params, grads)
  m = masks_of(state)
  np.testing.assert_array_equal(m["a"]["kernel"], a_kernel)
  np.testing.assert_array_equal(m["b"]["kernel"], b_kernel)
  assert m["a"]["bias"] is None  # kernels_only: the bias is never pruned
  expected_a = np.where(a_kernel, np.asarray(params["a"]["kernel"]) - 0.1, 0.0)
  expected_b = np.where(b_kernel, np.asarray(params["b"]["kernel"]) - 0.1, 0.0)
  np.testing.assert_allclose(new_params["a"]["kernel"], expected_a, rtol=1e-6)
  np.testing.assert_allclose(new_params["b"]["kernel"], expected_b, rtol=1e-6)
  np.testing.assert_allclose(new_params["a"]["bias"], [8.9, 8.9], rtol=1e-6)
  assert int(state.count) == 1
  assert float(density_of(state)) == 0.5
  assert float(density_of(state, params)) == pytest.approx(6 / 10)  # the biases count as kept


def test_own_score_every_leaf_and_a_chain_around_the_wrapper():
  params = tiny_params()
  grads = jax.tree.map(jnp.ones_like, params)
  smallest = lambda p, g: jax.tree.map(lambda x: -jnp.abs(x), p)  # keeps the smallest |w|
  tx = optax.chain(optax.clip_by_global_norm(1e9),
                   sparsify(optax.sgd(0.0), one_shot(0.4, step=0), score=smallest,
                            prunable=masks_lib.every_leaf))
  new_params, state = one_update(tx, params, grads)
  m = masks_of(state)  # found inside the chain's state
  # 4 of 10: 0.05, 0.1, 0.3, -0.5; the biases (9) are pruned too.
  np.testing.assert_array_equal(m["a"]["kernel"], [[True, True], [True, True]])
  np.testing.assert_array_equal(m["a"]["bias"], [False, False])
  np.testing.assert_array_equal(m["b"]["kernel"], [False] * 4)
  np.testing.assert_array_equal(new_params["a"]["bias"], [0.0, 0.0])
  np.testing.assert_array_equal(new_params["a"]["kernel"], params["a"]["kernel"])


def test_saliency_score_uses_the_gradients():
  params = tiny_params()
  grads = {"a": {"kernel": jnp.array([[100.0, 0.0], [0.0, 50.0]]), "bias": jnp.zeros(2)},
           "b": {"kernel": jnp.array([1.0, 0.0, 1.0, 0.0])}}
  tx = sparsify(optax.sgd(0.0), one_shot(0.25, step=0), score=saliency_score)
  _, state = one_update(tx, params, grads)
  # |w g|: a 10, 0, 0, 2.5; b 1, 0, 0.8, 0; the 2 largest are a[0,0] and a[1,1].
  m = masks_of(state)
  np.testing.assert_array_equal(m["a"]["kernel"], [[True, False], [False, True]])
  np.testing.assert_array_equal(m["b"]["kernel"], [False] * 4)


def test_apply_masks_zeroes_pruned_entries_of_other_params():
  params = tiny_params()
  _, state = one_update(sparsify(optax.sgd(0.1), one_shot(0.5, 0), scope="layer"), params,
                        jax.tree.map(jnp.ones_like, params))
  other = jax.tree.map(lambda p: p + 10.0, params)
  masked = apply_masks(state, other)
  np.testing.assert_allclose(masked["a"]["kernel"], [[0.0, 9.5], [10.3, 0.0]], rtol=1e-6)
  assert masked["a"]["kernel"][0, 0] == 0.0 and masked["a"]["kernel"][1, 1] == 0.0
  np.testing.assert_array_equal(masked["a"]["bias"], [19.0, 19.0])


# --------------------------------------------------------------------------
# Exact zeros under Adam


def test_pruned_entries_are_exactly_zero_after_adam_updates():
  k1, k2, k3 = jax.random.split(jax.random.key(0), 3)
  params = {"l1": {"kernel": jax.random.normal(k1, (6, 5)), "bias": jnp.zeros(5)},
            "l2": {"kernel": jax.random.normal(k2, (5, 3))}}
  target = jax.tree.map(lambda p: jax.random.normal(k3, p.shape), params)
  loss = lambda p: sum(jnp.sum((a - b) ** 2) for a, b in zip(jax.tree.leaves(p),
                                                            jax.tree.leaves(target)))
  tx = sparsify(optax.adam(0.05), one_shot(0.3, step=3))
  inner = optax.adam(0.05)

  @jax.jit
  def step(params, state):
    updates, state = tx.update(jax.grad(loss)(params), state, params)
    return optax.apply_updates(params, updates), state

  state = tx.init(params)
  for t in range(10):
    before, inner_before = params, state.inner_state
    params, state = step(params, state)
    m = masks_of(state)
    if t < 3:
      assert all(bool(jnp.all(x)) for x in jax.tree.leaves(m))
      continue
    assert int(sum(jnp.sum(x) for x in jax.tree.leaves(m))) == round(0.3 * 45)
    for p, mask in zip(jax.tree.leaves(params["l1"]["kernel"]) + [params["l2"]["kernel"]],
                       [m["l1"]["kernel"], m["l2"]["kernel"]]):
      assert np.all(np.asarray(p)[~np.asarray(mask)] == 0.0)
    # The kept entries took exactly the inner Adam step on the masked gradients ...
    grads = masks_lib.apply(m, jax.grad(loss)(before))
    reference, _ = inner.update(grads, inner_before, before)
    got = np.asarray(params["l1"]["kernel"])[np.asarray(m["l1"]["kernel"])]
    want = np.asarray(before["l1"]["kernel"] + reference["l1"]["kernel"])[
        np.asarray(m["l1"]["kernel"])]
    np.testing.assert_allclose(got, want, rtol=1e-6)
    # ... and on the pruned ones Adam's momentum alone would have moved them.
    if t == 4:
      assert np.any(np.asarray(reference["l1"]["kernel"])[~np.asarray(m["l1"]["kernel"])] != 0)


# --------------------------------------------------------------------------
# Zhu & Gupta's schedule


def zhu_gupta(t, d_i, d_f, t0, t1):
  """Eq. 1 of Zhu & Gupta (2018) in densities, written out independently."""
  if t <= t0:
    return d_i
  if t >= t1:
    return d_f
  return d_f + (d_i - d_f) * (1 - (t - t0) / (t1 - t0)) ** 3


def test_density_at_matches_hand_computed_values():
  s = gradual(0.1, start=0, end=100, frequency=10)
  for t, d in [(-5, 1.0), (0, 1.0), (25, 0.1 + 0.9 * 0.75 ** 3), (50, 0.2125), (100, 0.1),
               (150, 0.1)]:
    assert float(density_at(s, t)) == pytest.approx(d, abs=1e-7), t
  s = gradual(0.2, start=3, end=20, frequency=5)
  updates = [t for t in range(30) if bool(is_update_step(s, t))]
  assert updates == [3, 8, 13, 18, 20]  # every 5 steps from 3, and the end
  s = one_shot(0.3, step=7)
  assert [t for t in range(20) if bool(is_update_step(s, t))] == [7]
  assert float(density_at(s, 7)) == pytest.approx(0.3)


@pytest.mark.parametrize("scope", ["global", "layer"])
def test_gradual_schedule_densities_during_training(scope):
  # 990 prunable entries: 600 + 390; t0 = 0, t1 = 40, every 10 steps, 1 -> 0.1.
  k1, k2 = jax.random.split(jax.random.key(1))
  params = {"x": {"kernel": jax.random.normal(k1, (30, 20)), "bias": jnp.ones(20)},
            "y": {"kernel": jax.random.normal(k2, (39, 10))}}
  schedule = gradual(0.1, start=0, end=40, frequency=10)
  tx = sparsify(optax.sgd(0.01), schedule, scope=scope)
  state = tx.init(params)

  @jax.jit
  def step(params, state, t):
    grads = jax.tree.map(lambda p: jax.random.normal(jax.random.fold_in(k1, t), p.shape), params)
    updates, state = tx.update(grads, state, params)
    return optax.apply_updates(params, updates), state

  kept_after = {}
  for t in range(50):
    params, state = step(params, state, t)
    m = masks_of(state)
    kept_after[t] = {name: int(jnp.sum(m[name]["kernel"])) for name in ("x", "y")}
  last_update = 0
  for t in range(50):
    if t % 10 == 0 and t <= 40:
      last_update = t
    d = zhu_gupta(last_update, 1.0, 0.1, 0, 40)
    if scope == "global":
      assert sum(kept_after[t].values()) == round(d * 990), (t, d)
    else:
      assert kept_after[t] == {"x": round(d * 600), "y": round(d * 390)}, (t, d)
  # The hand-computed values at the update steps (global): 990, 475, 210, 113, 99.
  if scope == "global":
    assert [sum(kept_after[t].values()) for t in (0, 10, 20, 30, 40)] == [990, 475, 210, 113, 99]


def test_the_wrapped_step_compiles_once_and_stays_on_the_device():
  params = tiny_params()
  tx = sparsify(optax.adam(1e-2), gradual(0.25, start=2, end=12, frequency=3))
  traces = []

  @jax.jit
  def step(params, state, grads):
    traces.append(1)
    updates, state = tx.update(grads, state, params)
    return optax.apply_updates(params, updates), state

  grads = [jax.tree.map(lambda p: jax.random.normal(jax.random.key(t), p.shape), params)
           for t in range(25)]
  state = tx.init(params)
  params, state = step(params, state, grads[0])
  with jax.transfer_guard("disallow"):  # no host round trip inside the steps
    for t in range(1, 25):
      params, state = step(params, state, grads[t])
  assert len(traces) == 1
  assert step._cache_size() == 1
  assert float(density_of(state)) == 0.25  # 2 of the 8 kernel entries


# --------------------------------------------------------------------------
# A plain user loop


class UserMLP(nn.Module):
  """The user's own model: nothing sparsejax-specific."""

  @nn.compact
  def __call__(self, x):
    x = nn.relu(nn.Dense(64)(x))
    x = nn.relu(nn.Dense(64)(x))
    return nn.Dense(5)(x)


def synthetic(n=4096, n_test=512, d=20, classes=5, seed=0):
  """Labels from a random linear teacher: ``argmax(x W)``."""
  kx, kw = jax.random.split(jax.random.key(seed))
  x = jax.random.normal(kx, (n + n_test, d))
  y = jnp.argmax(x @ jax.random.normal(kw, (d, classes)), axis=1)
  return (x[:n], y[:n]), (x[n:], y[n:])


def make_user_step(model, tx):
  def loss(params, x, y):
    return optax.softmax_cross_entropy_with_integer_labels(
        model.apply({"params": params}, x), y).mean()

  @jax.jit
  def step(params, opt_state, x, y):
    grads = jax.grad(loss)(params, x, y)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state
  return step


def accuracy(model, params, x, y):
  return float(jnp.mean(jnp.argmax(model.apply({"params": params}, x), 1) == y))


def train_user_loop(model, tx, x, y, steps):
  params = model.init(jax.random.key(1), x[:1])["params"]
  opt_state = tx.init(params)
  step = make_user_step(model, tx)
  for t in range(steps):
    i = (t % (len(x) // 128)) * 128
    params, opt_state = step(params, opt_state, x[i:i + 128], y[i:i + 128])
  return params, opt_state


def test_a_plain_user_loop_reaches_the_target_density_with_good_accuracy():
  (x, y), (x_test, y_test) = synthetic()
  model = UserMLP()
  dense, _ = train_user_loop(model, optax.adam(3e-3), x, y, 960)
  tx = sparsify(optax.adam(3e-3), gradual(0.1, start=120, end=600, frequency=20))
  params, opt_state = train_user_loop(model, tx, x, y, 960)
  n_kernel = 20 * 64 + 64 * 64 + 64 * 5
  assert float(density_of(opt_state)) == pytest.approx(round(0.1 * n_kernel) / n_kernel)
  m = masks_of(opt_state)
  for name in ("Dense_0", "Dense_1", "Dense_2"):
    assert m[name]["bias"] is None
    assert np.all(np.asarray(params[name]["kernel"])[~np.asarray(m[name]["kernel"])] == 0.0)
  # Measured: dense 0.936, at 10 % density 0.928 (jax 0.10.2, CPU).
  sparse_accuracy = accuracy(model, params, x_test, y_test)
  dense_accuracy = accuracy(model, dense, x_test, y_test)
  assert sparse_accuracy >= 0.9 and sparse_accuracy >= dense_accuracy - 0.03, (
      sparse_accuracy, dense_accuracy)


@pytest.mark.slow
def test_a_plain_user_loop_on_real_mnist(mnist_dir, tmp_path):
  """LeNet-300-100, Adam 1e-3, batch 100, 4 epochs, gradual 1 -> 0.1 over steps 100-1200.

  Measured 0.9736 test accuracy (jax 0.10.2, CPU; ``pytest -m slow -k real_mnist -s``).
  """
  from sparsejax.data import load_image_dataset
  data = load_image_dataset("mnist", manual_dir=mnist_dir, data_dir=tmp_path)

  class LeNet300(nn.Module):
    @nn.compact
    def __call__(self, x):
      x = nn.relu(nn.Dense(300)(x.reshape(x.shape[0], -1)))
      x = nn.relu(nn.Dense(100)(x))
      return nn.Dense(10)(x)

  model = LeNet300()
  x, y = data.train
  params = model.init(jax.random.key(0), x[:1])["params"]
  tx = sparsify(optax.adam(1e-3), gradual(0.1, start=100, end=1200, frequency=100))
  opt_state = tx.init(params)
  step = make_user_step(model, tx)
  order = np.concatenate([np.random.default_rng(e).permutation(450) for e in range(4)])
  for t in range(4 * 450):  # 4 epochs of 450 shuffled batches of 100
    i = int(order[t]) * 100
    params, opt_state = step(params, opt_state, x[i:i + 100], y[i:i + 100])
  assert float(density_of(opt_state)) == pytest.approx(0.1, abs=1e-4)
  test_accuracy = accuracy(model, params, *data.test)
  print(f"LeNet-300-100 at 10 % density, own loop: test accuracy {test_accuracy:.4f}")
  assert test_accuracy >= 0.97, test_accuracy


# --------------------------------------------------------------------------
# Checkpoints


def test_masks_survive_an_orbax_round_trip_and_training_resumes_identically(tmp_path):
  (x, y), _ = synthetic(n=1536)
  model = UserMLP()
  params = model.init(jax.random.key(1), x[:1])["params"]
  tx = sparsify(optax.adam(3e-3), gradual(0.2, start=0, end=40, frequency=5))
  step = make_user_step(model, tx)

  def train(params, opt_state, steps):
    for t in steps:
      i = (t % 12) * 128
      params, opt_state = step(params, opt_state, x[i:i + 128], y[i:i + 128])
    return params, opt_state

  params, opt_state = train(params, tx.init(params), range(0, 17))
  with Checkpointer(tmp_path / "ckpt") as ckpt:
    ckpt.save(17, (params, opt_state))
  straight = train(params, opt_state, range(17, 50))

  fresh = model.init(jax.random.key(99), x[:1])["params"]
  with Checkpointer(tmp_path / "ckpt") as ckpt:
    restored, _ = ckpt.restore(like=(fresh, tx.init(fresh)))
  assert isinstance(restored[1], SparseState) and int(restored[1].count) == 17
  for a, b in zip(leaves_with_none(masks_of(opt_state)), leaves_with_none(masks_of(restored[1]))):
    assert (a is None and b is None) or (a.dtype == b.dtype == jnp.bool_ and np.array_equal(a, b))
  assert 0.2 < float(density_of(restored[1])) < 1.0  # pruning has begun, not ended
  resumed = train(*restored, range(17, 50))
  for a, b in zip(jax.tree.leaves(straight), jax.tree.leaves(resumed)):
    np.testing.assert_array_equal(a, b)
  assert float(density_of(resumed[1])) == pytest.approx(0.2, abs=1e-3)


# --------------------------------------------------------------------------
# Errors


def test_bad_arguments_are_named():
  with pytest.raises(ValueError, match="density must be in"):
    one_shot(0.0, 3)
  with pytest.raises(ValueError, match="step must be an int"):
    one_shot(0.5, -1)
  with pytest.raises(ValueError, match="end must be >= start"):
    gradual(0.1, start=10, end=5, frequency=1)
  with pytest.raises(ValueError, match="frequency must be an int >= 1"):
    gradual(0.1, start=0, end=5, frequency=0)
  with pytest.raises(ValueError, match="final_density .* must be <= initial_density"):
    gradual(0.5, start=0, end=5, frequency=1, initial_density=0.4)
  with pytest.raises(ValueError, match=r"scope must be one of \('global', 'layer'\)"):
    sparsify(optax.sgd(0.1), one_shot(0.5, 0), scope="row")
  with pytest.raises(ValueError, match="algorithm must be a SparseTraining .* or a PruningSchedule"):
    sparsify(optax.sgd(0.1), 0.5)
  with pytest.raises(ValueError, match="prunable selects no leaf"):
    sparsify(optax.sgd(0.1), one_shot(0.5, 0)).init({"w": jnp.ones(3)})
  tx = sparsify(optax.sgd(0.1), one_shot(0.5, 0))
  with pytest.raises(ValueError, match="needs params"):
    tx.update(tiny_params(), tx.init(tiny_params()))
  with pytest.raises(ValueError, match="exactly one SparseState"):
    masks_of(optax.adam(1e-3).init(tiny_params()))


# --------------------------------------------------------------------------
# The one-line penalty


class SmallNet(nn.Module):

  @nn.compact
  def __call__(self, x):
    return nn.Dense(3)(nn.tanh(nn.Dense(6)(x)))


def test_regularized_adds_the_penalty_and_its_gradient():
  params = tiny_params()
  objective = objectives.drr(0.1, 10.0)
  data = lambda p, c: sum(jnp.sum((leaf - c) ** 2) for leaf in jax.tree.leaves(p))
  loss = regularized(data, objective)
  tv = trainables(params, objective.init(jax.random.key(0), params))
  value, grads = jax.value_and_grad(loss)(tv, 0.5)
  penalty = objective.penalty(params, ())
  assert float(value) == pytest.approx(float(data(params, 0.5) + penalty), rel=1e-6)
  want = jax.tree.map(jnp.add, jax.grad(data)(params, 0.5),
                      jax.grad(lambda p: objective.penalty(p, ()))(params))
  for a, b in zip(jax.tree.leaves(grads["params"]), jax.tree.leaves(want)):
    np.testing.assert_allclose(a, b, rtol=1e-6)
  aux_loss = regularized(lambda p, c: (data(p, c), {"c": c}), objective, has_aux=True)
  (value_aux, aux), _ = jax.value_and_grad(aux_loss, has_aux=True)(tv, 0.5)
  assert float(value_aux) == pytest.approx(float(value)) and float(aux["c"]) == 0.5


@pytest.mark.parametrize("optimizer", [optax.sgd(0.3), optax.adam(0.05)])
def test_own_loop_with_pmmp_equals_the_train_step(optimizer):
  """regularized + ascend_duals + project is make_train_step, duals and all."""
  kx, ky = jax.random.split(jax.random.key(3))
  x, y = jax.random.normal(kx, (32, 4)), jax.random.randint(ky, (32,), 0, 3)
  net = SmallNet()
  model = models.adapt(net, x[:1])
  objective = objectives.pmmp(1e-3, initial_p_value=0.7, initial_u_value=0.5,
                              u_value_multiply_factor=2.0, l1_alpha=1e-3)
  state = create_train_state(jax.random.key(0), model, x[:1], objective, optimizer,
                             prunable=masks_lib.every_leaf)
  # w = theta would make w's gradient vanish analytically (rounding noise, which
  # Adam scales to a full step); start off the coupling instead.
  w = jax.tree.map(lambda p: 1.5 * p + 0.1, state.params)
  state = state._replace(objective_state=state.objective_state._replace(w=w))
  train_step = make_train_step(model, CLASSIFICATION, objective, optimizer)

  loss = regularized(
      lambda p, x, y: jnp.mean(cross_entropy(net.apply({"params": p}, x), y)), objective)
  tx = optax.chain(ascend_duals(objective), optimizer)
  tv = trainables(state.params, state.objective_state)
  opt_state = tx.init(tv)
  u_start = state.objective_state.u

  @jax.jit
  def own_step(tv, opt_state):
    updates, opt_state = tx.update(jax.grad(loss)(tv, x, y), opt_state, tv)
    return project(objective, optax.apply_updates(tv, updates)), opt_state

  for t in range(4):
    state, _ = train_step(state, (x, y), jax.random.key(t))
    tv, opt_state = own_step(tv, opt_state)
  for a, b in zip(jax.tree.leaves((state.params, state.objective_state)),
                  jax.tree.leaves((tv["params"], tv["objective"]))):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  # The multipliers were ascended: they never decrease, and some grew.
  du = [np.asarray(a - b) for a, b in zip(jax.tree.leaves(tv["objective"].u),
                                          jax.tree.leaves(u_start))]
  assert all(np.all(d >= 0) for d in du) and any(np.any(d > 0) for d in du)
  gammas = np.concatenate([np.ravel(g) for g in jax.tree.leaves(tv["objective"].gamma)])
  assert gammas.min() >= 0 and gammas.max() <= 1


def test_sparsify_over_trainables_masks_only_the_params():
  params = {"Dense_0": {"kernel": jnp.array([[1.0, -0.1], [0.2, 3.0]]), "bias": jnp.zeros(2)}}
  objective = objectives.pmmp(1e-3)
  tv = trainables(params, objective.init(jax.random.key(0), params))
  tx = sparsify(optax.chain(ascend_duals(objective), optax.sgd(0.0)), one_shot(0.5, 0),
                prunable=under("params"))
  updates, opt_state = tx.update(jax.tree.map(jnp.zeros_like, tv), tx.init(tv), tv)
  m = masks_of(opt_state)
  np.testing.assert_array_equal(m["params"]["Dense_0"]["kernel"], [[True, False], [False, True]])
  assert all(leaf is None for leaf in leaves_with_none(m["objective"]))
  assert m["params"]["Dense_0"]["bias"] is None
  new = optax.apply_updates(tv, updates)
  np.testing.assert_array_equal(new["params"]["Dense_0"]["kernel"], [[1.0, 0.0], [0.0, 3.0]])


def test_sparse_result_through_the_readout():
  params = {"d": {"kernel": jnp.array([[1.0, 0.0], [0.5, -2.0]]), "bias": jnp.array([0.0, 1.0])}}
  pmmp = objectives.pmmp(1e-3)
  state = pmmp.init(jax.random.key(0), params)
  # PMMP keeps the nonzero entries of theta ...
  out, m = sparse_result(pmmp, params, state)
  np.testing.assert_array_equal(m["d"]["kernel"], [[True, False], [True, True]])
  np.testing.assert_array_equal(m["d"]["bias"], [False, True])
  # ... intersected with given masks, whose None leaves stay None.
  given = {"d": {"kernel": jnp.array([[True, True], [False, True]]), "bias": None}}
  out, m = sparse_result(pmmp, params, state, given)
  np.testing.assert_array_equal(m["d"]["kernel"], [[True, False], [False, True]])
  assert m["d"]["bias"] is None
  np.testing.assert_array_equal(out["d"]["kernel"], [[1.0, 0.0], [0.0, -2.0]])
  np.testing.assert_array_equal(out["d"]["bias"], [0.0, 1.0])
  # An objective that prunes nothing returns the given masks, applied.
  drr = objectives.drr(0.1, 10.0)
  out, m = sparse_result(drr, params, (), given)
  assert m is given
  np.testing.assert_array_equal(out["d"]["kernel"], [[1.0, 0.0], [0.0, -2.0]])
  out, m = sparse_result(drr, params, ())
  assert m is None and out is params


def test_regularized_refuses_unit_level_objectives():
  with pytest.raises(ValueError, match="loss_transform"):
    regularized(lambda p: 0.0, objectives.with_gauss_loss(objectives.drr(0.1, 10.0)))
  gated = Objective(init=no_state, forward=lambda p, s, k, t: (p, {"Dense_0": jnp.ones(3)}),
                    penalty=lambda p, s: jnp.zeros(()), readout=identity_readout)
  loss = regularized(lambda p: jnp.zeros(()), gated)
  with pytest.raises(ValueError, match="unit gates"):
    loss(trainables(tiny_params(), ()))
  with pytest.raises(ValueError, match=r"trainables \{'params': ..., 'objective': ...\}"):
    regularized(lambda p: jnp.zeros(()), objectives.drr(0.1, 10.0))(tiny_params())


# --------------------------------------------------------------------------
# The README


def test_the_readme_snippet_runs_and_reaches_its_density(capsys):
  text = (REPO / "README.md").read_text()
  section = text.split("\n## Your own training loop\n", 1)[1].split("\n## ", 1)[0]
  code = re.findall(r"```python\n(.+?)\n```", section, re.S)[0]
  assert len([line for line in code.splitlines() if line.strip()]) <= 15
  namespace = {}
  exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102
  opt_state, params = namespace["opt_state"], namespace["params"]
  assert float(density_of(opt_state)) == pytest.approx(154 / 1536)  # 20*64 + 64*4 kernels
  m = masks_of(opt_state)
  kernel = np.asarray(params["layers_0"]["kernel"])
  assert np.all(kernel[~np.asarray(m["layers_0"]["kernel"])] == 0.0)
  density, acc = capsys.readouterr().out.split()
  assert float(acc) >= 0.85
