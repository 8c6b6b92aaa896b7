"""The one train step: masking, dual ascent, projection, evaluation, loops."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from sparsejax import masks, objectives
from sparsejax.objectives.base import Objective
from sparsejax.train import (CLASSIFICATION, REGRESSION, create_train_state, make_epoch_fn,
                             make_epochs_fn, make_eval_fn, make_train_step)


class TinyNet(nn.Module):
  """Dense -> relu -> BatchNorm -> Dense: a plain model, gated from outside."""
  width: int = 8
  out: int = 3
  batchnorm: bool = False
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, *, train=False):
    x = nn.Dense(self.width, dtype=self.dtype, param_dtype=self.dtype)(x.reshape(x.shape[0], -1))
    x = nn.relu(x)
    if self.batchnorm:
      x = nn.BatchNorm(use_running_average=not train, dtype=self.dtype, param_dtype=self.dtype)(x)
    return nn.Dense(self.out, dtype=self.dtype, param_dtype=self.dtype)(x)


def data(n=40, d=5, k=3, seed=0):
  kx, ky = jax.random.split(jax.random.key(seed))
  return jax.random.normal(kx, (n, d)), jax.random.randint(ky, (n,), 0, k)


def test_plain_step_equals_hand_written_adam_step():
  model, (x, y) = TinyNet(), data()
  opt = optax.adam(1e-2)
  state = create_train_state(jax.random.key(1), model, x, objectives.plain(), opt)
  step = make_train_step(model, CLASSIFICATION, objectives.plain(), opt)
  new_state, metrics = step(state, (x, y), jax.random.key(2))

  def loss(p):
    return optax.softmax_cross_entropy_with_integer_labels(model.apply({"params": p}, x), y).mean()
  value, g = jax.value_and_grad(loss)(state.params)
  upd, _ = opt.update({"params": g, "objective": ()}, opt.init({"params": state.params, "objective": ()}))
  expected = optax.apply_updates(state.params, upd["params"])
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7),
               new_state.params, expected)
  assert float(metrics["loss"]) == pytest.approx(float(value), rel=1e-6)
  assert int(new_state.step) == 1


def test_pruned_weights_stay_exactly_zero_under_adam():
  model, (x, y) = TinyNet(), data()
  opt = optax.adam(5e-2)
  obj = objectives.l2(1e-3)
  state = create_train_state(jax.random.key(1), model, x, obj, opt, prunable=masks.every_leaf)
  state = state._replace(masks=masks.global_magnitude_density(state.params, state.masks, 0.3))
  pruned = jax.tree.map(jnp.logical_not, state.masks)
  step = make_train_step(model, CLASSIFICATION, obj, opt)
  moved = None
  for i in range(20):
    new_state, _ = step(state, (x, y), jax.random.key(i))
    moved = moved or any(not np.allclose(a, b) for a, b in zip(
        jax.tree.leaves(new_state.params), jax.tree.leaves(state.params)))
    state = new_state
  assert moved
  for p, m in zip(jax.tree.leaves(state.params), jax.tree.leaves(pruned)):
    assert np.all(np.asarray(p)[np.asarray(m)] == 0.0)
  assert masks.density(masks.from_nonzero(state.params), state.params) == pytest.approx(0.3, abs=0.01)


def constrained_objective(budget: float) -> Objective:
  """min L s.t. sum(theta^2) <= budget via a multiplier lam >= 0 (ascended)."""
  def penalty(params, state):
    return state["lam"] * (objectives.tree_sum(jnp.square, params) - budget)
  return Objective(
      init=lambda key, params: {"lam": jnp.zeros(())},
      forward=lambda params, state, key, train: (params, None),
      penalty=penalty,
      readout=lambda params, state: (params, None),
      ascend=lambda state: {"lam": True},
      project=lambda state: {"lam": jnp.maximum(state["lam"], 0.0)},
  )


def test_duals_are_ascended_and_projected():
  model, (x, y) = TinyNet(), data()
  lr = 0.1
  opt = optax.sgd(lr)
  state = create_train_state(jax.random.key(1), model, x, constrained_objective(0.0), opt)
  sq = float(objectives.tree_sum(jnp.square, state.params))
  step = make_train_step(model, CLASSIFICATION, constrained_objective(0.0), opt)
  state1, _ = step(state, (x, y), jax.random.key(0))
  # d penalty / d lam = sum(theta^2) - budget > 0 -> lam rises by lr * violation.
  assert float(state1.objective_state["lam"]) == pytest.approx(lr * sq, rel=1e-5)
  # A slack constraint pushes lam down; the projection keeps it at 0.
  slack = constrained_objective(10 * sq)
  state = create_train_state(jax.random.key(1), model, x, slack, opt)
  state2, _ = make_train_step(model, CLASSIFICATION, slack, opt)(state, (x, y), jax.random.key(0))
  assert float(state2.objective_state["lam"]) == 0.0


def test_penalty_values_and_gradients():
  p = {"w": jnp.array([1.0, -2.0, 0.5])}
  assert float(objectives.l1(0.1).penalty(p, ())) == pytest.approx(0.35)
  assert float(objectives.l2(0.1).penalty(p, ())) == pytest.approx(0.525)
  assert float(objectives.elastic_net(0.1, 0.1).penalty(p, ())) == pytest.approx(0.875)
  g = jax.grad(lambda q: objectives.l2(0.1).penalty(q, ()))(p)
  np.testing.assert_allclose(g["w"], 2 * 0.1 * p["w"], rtol=1e-6)
  g = jax.grad(lambda q: objectives.l1(0.1).penalty(q, ()))(p)
  np.testing.assert_allclose(g["w"], 0.1 * np.sign(p["w"]), rtol=1e-6)
  with pytest.raises(ValueError, match="alpha"):
    objectives.l1(-1.0)


def test_eval_is_exact_mean_over_uneven_batches():
  model, (x, y) = TinyNet(batchnorm=True), data(n=37)
  opt = optax.adam(1e-2)
  state = create_train_state(jax.random.key(1), model, x, objectives.plain(), opt)
  state, _ = make_train_step(model, CLASSIFICATION, objectives.plain(), opt)(
      state, (x, y), jax.random.key(0))
  metrics = make_eval_fn(model, CLASSIFICATION, objectives.plain(), batch_size=10)(state, x, y)
  logits = model.apply({"params": state.params, **state.model_state}, x, train=False)
  ce = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
  acc = (logits.argmax(-1) == y).mean()
  assert float(metrics["loss"]) == pytest.approx(float(ce), rel=1e-5)
  assert float(metrics["accuracy"]) == pytest.approx(float(acc), rel=1e-6)


def test_batchnorm_statistics_update_in_train_steps():
  model, (x, y) = TinyNet(batchnorm=True), data()
  opt = optax.adam(1e-2)
  state = create_train_state(jax.random.key(1), model, x, objectives.plain(), opt)
  new_state, _ = make_train_step(model, CLASSIFICATION, objectives.plain(), opt)(
      state, (x, y), jax.random.key(0))
  before = state.model_state["batch_stats"]["BatchNorm_0"]["mean"]
  after = new_state.model_state["batch_stats"]["BatchNorm_0"]["mean"]
  assert not np.allclose(before, after)


def test_gates_from_the_objective_reach_the_model():
  def gate_objective(open_units):
    return Objective(
        init=lambda key, params: (),
        forward=lambda params, state, key, train: (params, {"Dense_0": open_units}),
        penalty=lambda params, state: jnp.zeros(()),
        readout=lambda params, state: (params, None))
  model, (x, y) = TinyNet(), data()
  opt = optax.sgd(0.1)
  closed = gate_objective(jnp.zeros(8))
  state = create_train_state(jax.random.key(1), model, x, closed, opt)
  new_state, _ = make_train_step(model, CLASSIFICATION, closed, opt)(state, (x, y), jax.random.key(0))
  # With every hidden unit gated off, the first layer receives no gradient.
  np.testing.assert_array_equal(new_state.params["Dense_0"]["kernel"], state.params["Dense_0"]["kernel"])
  assert not np.allclose(new_state.params["Dense_1"]["bias"], state.params["Dense_1"]["bias"])


def test_epoch_scan_equals_python_loop_of_steps():
  model, (x, y) = TinyNet(), data(n=40)
  opt = optax.adam(1e-2)
  state = create_train_state(jax.random.key(1), model, x, objectives.plain(), opt)
  raw = make_train_step(model, CLASSIFICATION, objectives.plain(), opt, jit=False)
  scanned, metrics = make_epoch_fn(raw, batch_size=8)(state, (x, y), jax.random.key(3))
  # The same epoch, step by step on the host.
  from sparsejax.train import epoch_batches
  perm_key, step_key = jax.random.split(jax.random.key(3))
  batches = epoch_batches(perm_key, 40, 8)
  keys = jax.random.split(step_key, batches.shape[0])
  step = jax.jit(raw)
  losses = []
  for idx, k in zip(batches, keys):
    state, m = step(state, (x[idx], y[idx]), k)
    losses.append(float(m["loss"]))
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
               scanned.params, state.params)
  assert float(metrics["loss"]) == pytest.approx(np.mean(losses), rel=1e-5)
  assert int(scanned.step) == 5


def test_full_batch_epochs_scan_and_float64():
  with jax.enable_x64(True):
    model = TinyNet(out=1, dtype=jnp.float64)
    x = jax.random.normal(jax.random.key(0), (30, 2), jnp.float64)
    y = jnp.sin(x[:, :1])
    opt = optax.adam(1e-2)
    state = create_train_state(jax.random.key(1), model, x, objectives.plain(), opt)
    assert state.params["Dense_0"]["kernel"].dtype == jnp.float64
    raw = make_train_step(model, REGRESSION, objectives.plain(), opt, jit=False)
    epochs = make_epochs_fn(make_epoch_fn(raw, batch_size=30, jit=False), n_epochs=50)
    state, curve = epochs(state, (x, y), jax.random.key(2))
    assert curve["loss"].shape == (50,) and curve["loss"].dtype == jnp.float64
    assert float(curve["loss"][-1]) < float(curve["loss"][0])
    assert int(state.step) == 50
