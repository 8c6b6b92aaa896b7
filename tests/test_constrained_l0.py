"""Hard-concrete L0 gates, the constrained and penalised objectives, purging."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import traverse_util

from sparsejax import models
from sparsejax.objectives import constrained_l0
from sparsejax.objectives import hard_concrete as hc
from sparsejax import compaction
from sparsejax.pruning import purge

# --------------------------------------------------------------------------
# The distribution


@pytest.mark.parametrize("log_alpha", [-3.0, -1.0, 0.0, 0.7, 2.5])
def test_prob_nonzero_and_median_match_monte_carlo(log_alpha):
  n = 400_000
  u = jax.random.uniform(jax.random.key(0), (n,), minval=hc.U_EPS, maxval=1 - hc.U_EPS)
  z = hc.sample_gates(jnp.full((n,), log_alpha), u)
  assert float(jnp.mean(z > 0)) == pytest.approx(float(hc.prob_nonzero(log_alpha)), abs=3e-3)
  # The median gate is the stretched median of s = sigmoid((logit u + log alpha) / beta).
  median = float(jnp.median(z))
  assert median == pytest.approx(float(hc.test_gates(jnp.asarray(log_alpha), "median")),
                                 abs=3e-3)
  assert float(jnp.min(z)) >= 0 and float(jnp.max(z)) <= 1


def test_closed_forms_against_the_reference_values():
  # P(active) at initialisation for d = 0.5, 0.2, 0.3, 0.05 (reference notes, section 2).
  for d, expected in [(0.5, 0.832), (0.2, 0.952), (0.3, 0.920), (0.05, 0.990)]:
    assert float(hc.prob_nonzero(math.log((1 - d) / d))) == pytest.approx(expected, abs=1e-3)
  assert hc.L0_SHIFT == pytest.approx(1.599, abs=1e-3)
  # The clamp range keeps P(active) in [0.047, 0.998].
  assert float(hc.prob_nonzero(hc.LOG_ALPHA_MIN)) == pytest.approx(0.047, abs=1e-3)
  assert float(hc.prob_nonzero(hc.LOG_ALPHA_MAX)) == pytest.approx(0.998, abs=1e-3)
  # Louizos Eq. 13 at log alpha = 0: sigmoid(0) * 1.2 - 0.1 = 0.5.
  assert float(hc.test_gates(jnp.zeros(()), "mean")) == pytest.approx(0.5)
  # The median gate is positive exactly when log alpha > -1.599.
  assert float(hc.test_gates(jnp.asarray(-hc.L0_SHIFT + 1e-3), "median")) > 0
  assert float(hc.test_gates(jnp.asarray(-hc.L0_SHIFT - 1e-3), "median")) == 0


def test_gate_gradient_is_the_reparameterised_one():
  u = jnp.asarray([0.2, 0.5, 0.9])
  f = lambda a: jnp.sum(hc.sample_gates(a, u))  # noqa: E731
  a = jnp.asarray([0.1, -0.3, 0.4])
  eps = 1e-3
  numeric = [(f(a.at[i].add(eps)) - f(a.at[i].add(-eps))) / (2 * eps) for i in range(3)]
  np.testing.assert_allclose(jax.grad(f)(a), numeric, rtol=1e-2)


def test_init_log_alpha_mean_and_spread():
  a = hc.init_log_alpha(jax.random.key(1), 20_000, 0.2)
  assert float(jnp.mean(a)) == pytest.approx(math.log(4.0), abs=1e-3)
  assert float(jnp.std(a)) == pytest.approx(0.01, rel=0.05)


# --------------------------------------------------------------------------
# Placement, expected L2, densities


def lenet5_params(key=0):
  model = models.LeNet5Caffe()
  return model, model.init(jax.random.key(key), jnp.zeros((1, 28, 28, 1)))["params"]


def test_gated_layers_of_lenet5_follow_the_reference_groups():
  _, params = lenet5_params()
  layers = {l.name: l for l in hc.gated_layers(params)}
  assert list(layers) == ["Conv_0", "Conv_1", "Dense_0", "Dense_1"]
  assert (layers["Conv_0"].n_gates, layers["Conv_0"].group_size) == (20, 26)
  assert (layers["Conv_1"].n_gates, layers["Conv_1"].group_size) == (50, 501)
  assert (layers["Dense_0"].n_gates, layers["Dense_0"].group_size) == (800, 500)
  assert (layers["Dense_1"].n_gates, layers["Dense_1"].group_size) == (500, 10)
  unstructured = hc.gated_layers(params, "unstructured")
  assert sum(l.n_params for l in unstructured) == 431_080


def test_gate_params_and_expected_l2_by_hand():
  params = {"Dense_0": {"kernel": jnp.arange(6.0).reshape(3, 2), "bias": jnp.asarray([1.0, 2.0])},
            "Conv_0": {"kernel": jnp.ones((1, 1, 2, 3)), "bias": jnp.asarray([1.0, 2.0, 3.0])}}
  layers = hc.gated_layers(params)
  z = {"Dense_0": jnp.asarray([0.0, 0.5, 1.0]), "Conv_0": jnp.asarray([1.0, 0.0, 2.0])}
  gated = hc.gate_params(layers, params, z)
  np.testing.assert_allclose(gated["Dense_0"]["kernel"], [[0, 0], [1, 1.5], [4, 5]])
  np.testing.assert_allclose(gated["Dense_0"]["bias"], [1, 2])          # not gated
  np.testing.assert_allclose(gated["Conv_0"]["kernel"][0, 0], [[1, 0, 2], [1, 0, 2]])
  np.testing.assert_allclose(gated["Conv_0"]["bias"], [1, 0, 6])
  # 1/2 sum_g P_g |theta_g|^2 + 1/2 |ungated|^2.
  probs = {"Dense_0": jnp.asarray([0.1, 0.2, 0.3]), "Conv_0": jnp.asarray([0.5, 0.5, 1.0])}
  expected = 0.5 * (0.1 * 1 + 0.2 * 13 + 0.3 * 41 + (1 + 4)
                    + 0.5 * (2 + 1) + 0.5 * (2 + 4) + 1.0 * (2 + 9))
  assert float(hc.expected_l2(layers, params, probs)) == pytest.approx(expected)


def test_densities_by_hand():
  params = {"Dense_0": {"kernel": jnp.zeros((4, 3)), "bias": jnp.zeros(3)},
            "Dense_1": {"kernel": jnp.zeros((3, 1)), "bias": jnp.zeros(1)}}
  layers = hc.gated_layers(params)
  log_alpha = {"Dense_0": jnp.full(4, 5.0), "Dense_1": jnp.full(3, -5.0)}
  p_hi, p_lo = float(hc.prob_nonzero(5.0)), float(hc.prob_nonzero(-5.0))
  np.testing.assert_allclose(hc.layer_densities(layers, log_alpha), [p_hi, p_lo], rtol=1e-6)
  assert float(hc.model_density(layers, log_alpha)) == pytest.approx(
      (12 * p_hi + 3 * p_lo) / 15, rel=1e-6)


def test_detached_expected_l2_does_not_move_the_gates():
  params = {"Dense_0": {"kernel": jnp.ones((3, 2)), "bias": jnp.zeros(2)}}
  layers = hc.gated_layers(params)
  state = constrained_l0.L0State({"Dense_0": jnp.zeros(3)}, jnp.zeros(1))
  for detach, moves in [(True, False), (False, True)]:
    objective = constrained_l0.hard_concrete_l0(layers, weight_decay=0.1, l2_detach_gates=detach)
    grad = jax.grad(lambda s: objective.penalty(params, s))(state).log_alpha["Dense_0"]
    assert bool(jnp.any(grad != 0)) == moves


# --------------------------------------------------------------------------
# Constrained optimisation on a toy problem with a known solution

def toy(formulation, target=0.5, k=0.01, steps=6000, restarts=True, lr=0.5, anneal_steps=0):
  """min -k * log_alpha  s.t.  P(z != 0) <= target, one gate.

  KKT: P(a*) = target, so a* = logit(target) - 1.599, and
  -k + lambda* P'(a*) = 0, so lambda* = k / (target (1 - target)).
  """
  params = {"Dense_0": {"kernel": jnp.ones((1, 1)), "bias": jnp.zeros(1)}}
  layers = hc.gated_layers(params)
  objective = constrained_l0.hard_concrete_l0(
      layers, formulation=formulation, targets=(target,), dual_restarts=restarts,
      penalty_coefficient=lr, anneal_steps=anneal_steps)
  state = objective.init(jax.random.key(0), params)
  optimizer = constrained_l0.optimizer(optax.sgd(lr), optax.sgd(lr), optax.sgd(lr))
  opt_state = optimizer.init({"params": {}, "objective": state})

  def loss(s):
    return -k * jnp.sum(s.log_alpha["Dense_0"]) + objective.penalty(params, s)

  @jax.jit
  def step(carry, _):
    s, o = carry
    g = jax.grad(loss)(s)
    g = jax.tree.map(lambda x, dual: -x if dual else x, g, objective.ascend(g))
    updates, o = optimizer.update({"params": {}, "objective": g}, o, {"params": {}, "objective": s})
    s = objective.project(optax.apply_updates(s, updates["objective"]))
    return (s, o), (s.multipliers[0], s.log_alpha["Dense_0"][0])
  (state, _), trace = jax.lax.scan(step, (state, opt_state), None, length=steps)
  return objective, state, trace


@pytest.mark.parametrize("formulation", ["lagrangian", "augmented_lagrangian"])
def test_descent_ascent_reaches_the_kkt_point(formulation):
  target, k = 0.5, 0.01
  _, state, (lam, a) = toy(formulation, target, k)
  a_star = math.log(target / (1 - target)) - hc.L0_SHIFT
  lam_star = k / (target * (1 - target))
  # Average over the last steps (descent-ascent oscillates around the saddle).
  assert float(jnp.mean(a[-1000:])) == pytest.approx(a_star, abs=0.05)
  assert float(jnp.mean(lam[-1000:])) == pytest.approx(lam_star, rel=0.1)
  assert float(jnp.min(lam)) >= 0


def test_annealed_targets_follow_the_cubic_schedule():
  targets = jnp.asarray([0.2, 0.6])
  at = lambda t: np.asarray(constrained_l0.annealed_targets(targets, jnp.asarray(t), 100))  # noqa: E731
  np.testing.assert_allclose(at(0.0), [1.0, 1.0])
  np.testing.assert_allclose(at(50.0), [0.2 + 0.8 / 8, 0.6 + 0.4 / 8], rtol=1e-6)
  np.testing.assert_allclose(at(90.0), [0.2 + 0.8e-3, 0.6 + 0.4e-3], rtol=1e-5)
  np.testing.assert_allclose(at(100.0), [0.2, 0.6])
  np.testing.assert_allclose(at(1e6), [0.2, 0.6])


def test_annealed_targets_set_the_defect_and_the_restarts_and_the_step_is_counted():
  params = {"Dense_0": {"kernel": jnp.ones((2, 1)), "bias": jnp.zeros(1)}}
  layers = hc.gated_layers(params)
  objective = constrained_l0.hard_concrete_l0(layers, targets=(0.5,), anneal_steps=10)
  state = objective.init(jax.random.key(0), params)
  assert float(state.step) == 0
  density = float(hc.prob_nonzero(0.0))     # 0.832 at log alpha = 0
  for step, target in [(0.0, 1.0), (5.0, 0.5 + 0.5 / 8), (10.0, 0.5), (30.0, 0.5)]:
    s = constrained_l0.L0State({"Dense_0": jnp.zeros(2)}, jnp.asarray([0.3]), jnp.asarray(step))
    grads = jax.grad(objective.penalty, argnums=1)(params, s)
    # The multiplier's gradient is the defect at the step's target; the count has none.
    assert float(grads.multipliers[0]) == pytest.approx(density - target, abs=1e-6)
    assert float(grads.step) == 0
  # project counts the update and restarts against the next step's target:
  # at step 1 the target (0.5 + 0.5 * 0.9^3 = 0.86) is above the density, at step 10 below.
  early = objective.project(constrained_l0.L0State({"Dense_0": jnp.zeros(2)}, jnp.asarray([0.3]),
                                                   jnp.asarray(0.0)))
  assert (float(early.step), float(early.multipliers[0])) == (1.0, 0.0)
  late = objective.project(constrained_l0.L0State({"Dense_0": jnp.zeros(2)}, jnp.asarray([0.3]),
                                                  jnp.asarray(9.0)))
  assert (float(late.step), float(late.multipliers[0])) == (10.0, pytest.approx(0.3))
  assert objective.ascend(state).step is False
  # Without annealing the state holds no count.
  assert constrained_l0.hard_concrete_l0(layers).init(jax.random.key(0), params).step is None
  with pytest.raises(ValueError, match="anneal_steps"):
    constrained_l0.hard_concrete_l0(layers, formulation="penalized", anneal_steps=10)


def test_annealed_descent_ascent_tracks_the_schedule_to_the_kkt_point():
  target, k, anneal = 0.5, 0.01, 3000
  _, state, (lam, a) = toy("lagrangian", target, k, steps=8000, anneal_steps=anneal)
  density = np.asarray(hc.prob_nonzero(a))
  scheduled = np.asarray(constrained_l0.annealed_targets(
      jnp.asarray(target), jnp.arange(1, 8001, dtype=jnp.float32), anneal))
  # The gate wants to open, so the density follows the falling target ...
  assert np.max(np.abs(density[500:anneal] - scheduled[500:anneal])) < 0.03
  assert density[anneal // 3] > target + 0.05
  # ... and ends at the constant-target KKT point.
  a_star = math.log(target / (1 - target)) - hc.L0_SHIFT
  assert float(np.mean(a[-1000:])) == pytest.approx(a_star, abs=0.05)
  assert float(np.mean(lam[-1000:])) == pytest.approx(k / (target * (1 - target)), rel=0.1)
  assert float(state.step) == 8000


def test_dual_restart_resets_a_satisfied_constraint():
  params = {"Dense_0": {"kernel": jnp.ones((2, 1)), "bias": jnp.zeros(1)}}
  layers = hc.gated_layers(params)
  for restarts, expected in [(True, 0.0), (False, 0.3)]:
    objective = constrained_l0.hard_concrete_l0(layers, targets=(0.9,), dual_restarts=restarts)
    # P(active) at log alpha = -2 is 0.4 < 0.9: strictly satisfied.
    state = constrained_l0.L0State({"Dense_0": jnp.full(2, -2.0)}, jnp.asarray([0.3]))
    assert float(objective.project(state).multipliers[0]) == pytest.approx(expected)
    # Violated (P = 0.99 > 0.9): kept either way; negative multipliers are clamped.
    violated = constrained_l0.L0State({"Dense_0": jnp.full(2, 4.6)}, jnp.asarray([0.3]))
    assert float(objective.project(violated).multipliers[0]) == pytest.approx(0.3)
    negative = violated._replace(multipliers=jnp.asarray([-0.2]))
    assert float(objective.project(negative).multipliers[0]) == 0.0
  # log alpha is clamped to [log 0.01, log 100].
  clamped = objective.project(constrained_l0.L0State({"Dense_0": jnp.asarray([-9.0, 9.0])},
                                                     jnp.zeros(1)))
  np.testing.assert_allclose(clamped.log_alpha["Dense_0"], [hc.LOG_ALPHA_MIN, hc.LOG_ALPHA_MAX],
                             rtol=1e-6)


def test_the_optimizer_gives_each_group_its_own_transform_and_leaves_the_counter_alone():
  train_vars = {"params": {"Dense_0": {"kernel": jnp.ones((2, 1))}},
                "objective": constrained_l0.L0State({"Dense_0": jnp.zeros(2)}, jnp.zeros(1),
                                                    jnp.asarray(3.0))}

  def updates(optimizer, tree=train_vars):
    return optimizer.update(jax.tree.map(jnp.ones_like, tree), optimizer.init(tree), tree)[0]
  # SGD at a rate per group on gradients of ones: each update, -lr, names its transform.
  got = updates(constrained_l0.optimizer(optax.sgd(0.1), optax.sgd(0.2), optax.sgd(0.3)))
  np.testing.assert_allclose(got["params"]["Dense_0"]["kernel"], [[-0.1], [-0.1]])
  np.testing.assert_allclose(got["objective"].log_alpha["Dense_0"], [-0.2, -0.2])
  np.testing.assert_allclose(got["objective"].multipliers, [-0.3])
  assert float(got["objective"].step) == 0   # its gradient is 1: project alone counts
  # None freezes a group (the penalised multipliers; the gates and multipliers in finetuning).
  got = updates(constrained_l0.optimizer(optax.sgd(0.1), None, None))
  np.testing.assert_allclose(got["params"]["Dense_0"]["kernel"], [[-0.1], [-0.1]])
  assert not any(np.any(leaf) for leaf in jax.tree.leaves(got["objective"]))
  # Without annealed targets the state holds no counter.
  plain = {**train_vars, "objective": train_vars["objective"]._replace(step=None)}
  got = updates(constrained_l0.optimizer(optax.sgd(0.1), optax.sgd(0.2), optax.sgd(0.3)), plain)
  assert got["objective"].step is None


def test_penalized_and_layerwise_penalties_by_hand():
  params = {"Dense_0": {"kernel": jnp.ones((2, 3)), "bias": jnp.zeros(3)},
            "Dense_1": {"kernel": jnp.ones((3, 1)), "bias": jnp.zeros(1)}}
  layers = hc.gated_layers(params)
  log_alpha = {"Dense_0": jnp.asarray([0.0, 1.0]), "Dense_1": jnp.asarray([-1.0, 0.0, 2.0])}
  densities = np.asarray(hc.layer_densities(layers, log_alpha))
  penalized = constrained_l0.hard_concrete_l0(layers, formulation="penalized", penalty=(0.1, 0.2))
  state = penalized.init(jax.random.key(0), params)._replace(log_alpha=log_alpha)
  np.testing.assert_allclose(state.multipliers, [0.1, 0.2])
  assert float(penalized.penalty(params, state)) == pytest.approx(
      0.1 * densities[0] + 0.2 * densities[1], rel=1e-6)
  assert not jax.tree.leaves(penalized.ascend(state))[-1]
  layerwise = constrained_l0.hard_concrete_l0(layers, targets=(0.3, 0.4))
  state = constrained_l0.L0State(log_alpha, jnp.asarray([2.0, 3.0]))
  assert float(layerwise.penalty(params, state)) == pytest.approx(
      2 * (densities[0] - 0.3) + 3 * (densities[1] - 0.4), rel=1e-6)
  with pytest.raises(ValueError, match="one per gated layer"):
    constrained_l0.hard_concrete_l0(layers, targets=(0.3, 0.4, 0.5))


# --------------------------------------------------------------------------
# Purging


def random_log_alpha(layers, key):
  keys = jax.random.split(jax.random.key(key), len(layers))
  return {l.name: 2.0 * jax.random.normal(k, (l.n_gates,)) for k, l in zip(keys, layers)}


def gated_model(architecture, batch=16):
  """``(model, x, params, layers)``: a model on random 28x28 inputs and its gated layers."""
  model = models.get_model(architecture)
  x = jax.random.uniform(jax.random.key(3), (batch, 28, 28, 1))
  params = model.init(jax.random.key(0), x[:1])["params"]
  return model, x, params, hc.gated_layers(params)


@pytest.mark.parametrize("architecture", ["lenet_300_100", "lenet5_caffe"])
@pytest.mark.parametrize("test_gate", ["median", "mean"])
def test_purged_network_equals_the_gated_one(architecture, test_gate):
  model, x, params, layers = gated_model(architecture)
  log_alpha = random_log_alpha(layers, 1)
  gates = {l.name: hc.test_gates(log_alpha[l.name], test_gate) for l in layers}
  effective = hc.gate_params(layers, params, gates)
  alive = {name: np.asarray(g) > 0 for name, g in gates.items()}
  net = purge.purge(model, effective, alive, x[:1])
  expected = model.apply({"params": effective}, x)
  np.testing.assert_allclose(net.apply(net.variables, x), expected, rtol=1e-4, atol=1e-5)
  dense = purge.count(purge.purge(model, params, {l.name: np.ones(l.n_gates, bool)
                                                  for l in layers}, x[:1]), x[:1])
  small = purge.count(net, x[:1])
  assert 0 < small["params"] < dense["params"] and 0 < small["macs"] < dense["macs"]


@pytest.mark.parametrize("architecture", ["lenet_300_100", "lenet5_caffe"])
def test_folded_test_gates_give_the_gated_networks_test_outputs(architecture):
  model, x, params, layers = gated_model(architecture)
  objective = constrained_l0.hard_concrete_l0(layers, targets=(0.5,), test_gate="median")
  state = objective.init(jax.random.key(1), params)._replace(
      log_alpha=random_log_alpha(layers, 2))
  gated, _ = objective.forward(params, state, jax.random.key(4), False)
  folded, masks = hc.fold_test_gates(layers, params, state.log_alpha, "median")
  np.testing.assert_allclose(model.apply({"params": folded}, x),
                             model.apply({"params": gated}, x), rtol=1e-6, atol=1e-6)
  for layer in layers:
    gates = np.asarray(hc.test_gates(state.log_alpha[layer.name], "median"))
    assert 0 < (gates == 0).sum() < gates.size      # some groups dead, some alive
    dead_groups = hc._leaf_factors(layer, jnp.asarray(gates == 0),
                                   traverse_util.flatten_dict(params))
    for (module, name), dead in dead_groups.items():
      leaf_mask, leaf = np.asarray(masks[module][name]), np.asarray(folded[module][name])
      dead = np.broadcast_to(np.asarray(dead), leaf.shape)
      np.testing.assert_array_equal(leaf_mask, ~dead)   # masked exactly where the gate is 0
      assert np.all(leaf[dead] == 0)


def test_dense_counts():
  for architecture, params, macs in [("lenet_300_100", 266_610, 266_200),
                                     ("lenet5_caffe", 431_080,
                                      24 * 24 * 25 * 20 + 8 * 8 * 500 * 50 + 800 * 500 + 5000)]:
    model = models.get_model(architecture)
    p = model.init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)))["params"]
    x = jnp.zeros((1, 28, 28, 1))
    net = purge.purge(model, p, {l.name: np.ones(l.n_gates, bool) for l in hc.gated_layers(p)},
                      x)
    assert purge.count(net, x) == {"params": params, "macs": macs}


def test_purge_removes_units_by_the_next_layers_gates():
  model = models.get_model("lenet_300_100")
  params = model.init(jax.random.key(0), jnp.zeros((1, 784)))["params"]
  alive = {"Dense_0": np.arange(784) < 100, "Dense_1": np.arange(300) < 30,
           "Dense_2": np.arange(100) < 7}
  net = purge.purge(model, params, alive, jnp.zeros((1, 784)))
  assert [net.variables["params"][f"Dense_{i}"]["kernel"].shape for i in range(3)] == [
      (100, 30), (30, 7), (7, 10)]
  [features] = [g for g in net.groups
                if compaction.Member("params/Dense_0/kernel", 0) in g.group.members]
  np.testing.assert_array_equal(features.kept, np.arange(100))  # the input's, gathered


# --------------------------------------------------------------------------
# L0 BatchNorm


def test_l0_batchnorm_normalises_active_channels_only():
  from flax import linen as nn
  from sparsejax.models.batchnorm import L0BatchNorm
  x = jax.random.normal(jax.random.key(0), (8, 4, 4, 3)) * 2 + 1
  x = x.at[..., 1].set(0.0)                       # channel 1 gated off
  l0_bn, bn = L0BatchNorm(momentum=0.9), nn.BatchNorm(momentum=0.9, use_running_average=False)
  variables = l0_bn.init(jax.random.key(1), x)
  variables = {"params": {"scale": jnp.asarray([1.5, 2.0, 0.5]),
                          "bias": jnp.asarray([0.1, 0.7, -0.2])},
               "batch_stats": variables["batch_stats"]}
  y, new = l0_bn.apply(variables, x, mutable=["batch_stats"])
  expected, expected_stats = bn.apply(variables, x, mutable=["batch_stats"])
  live = np.asarray([0, 2])
  np.testing.assert_allclose(y[..., live], expected[..., live], rtol=1e-5, atol=1e-5)
  np.testing.assert_array_equal(y[..., 1], 0.0)   # a plain BatchNorm gives the offset 0.7
  assert float(jnp.max(jnp.abs(expected[..., 1] - 0.7))) < 1e-6
  stats, plain = new["batch_stats"], expected_stats["batch_stats"]
  np.testing.assert_allclose(stats["mean"][live], plain["mean"][live], rtol=1e-5)
  np.testing.assert_allclose(stats["var"][live], plain["var"][live], rtol=1e-5)
  assert float(stats["mean"][1]) == 0.0 and float(stats["var"][1]) == 1.0  # not updated
  # Evaluation: the running statistics, and the dead channel still passes its zeros.
  evaluated = L0BatchNorm(use_running_average=True).apply({**variables, **new}, x)
  np.testing.assert_array_equal(evaluated[..., 1], 0.0)
  np.testing.assert_allclose(
      evaluated[..., 0],
      (x[..., 0] - stats["mean"][0]) / jnp.sqrt(stats["var"][0] + 1e-5) * 1.5 + 0.1, rtol=1e-5)


@pytest.mark.slow  # 7 s or more on 2 cores: the default suite stays under 10 minutes
def test_a_gated_resnet_with_l0_batchnorm_ignores_its_dead_channels():
  model = models.ResNet(stage_sizes=(1, 1), width=4, batchnorm="l0")
  x = jax.random.normal(jax.random.key(0), (4, 8, 8, 3))
  variables = model.init(jax.random.key(1), x)
  params, stats = variables["params"], variables["batch_stats"]
  layers = hc.gated_layers(params)
  assert all(l.kind in ("conv", "dense") for l in layers)
  gates = {l.name: jnp.ones(l.n_gates).at[0].set(0.0) if l.kind == "conv" else jnp.ones(l.n_gates)
           for l in layers}
  effective = hc.gate_params(layers, params, gates)
  out, _ = model.apply({"params": effective, "batch_stats": stats}, x, train=True,
                       mutable=["batch_stats"])
  # Whatever the dead channels' BatchNorm scale and offset, the output is the same.
  changed = jax.tree_util.tree_map_with_path(
      lambda path, p: p.at[0].add(3.0) if "BatchNorm" in str(path[0]) else p, effective)
  out2, _ = model.apply({"params": changed, "batch_stats": stats}, x, train=True,
                        mutable=["batch_stats"])
  np.testing.assert_allclose(out, out2, rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------
# Per-example gates


@pytest.mark.parametrize("architecture", ["lenet_300_100", "lenet5_caffe"])
def test_per_example_gates_are_each_examples_gated_weights(architecture):
  from sparsejax.train.step import apply_model
  model, x, params, layers = gated_model(architecture, batch=5)
  log_alpha = random_log_alpha(layers, 2)
  key = jax.random.key(7)
  gates = hc.per_example_gates(layers, log_alpha, key, hc.chain_sites(layers))
  out, _ = apply_model(model, params, {}, x, train=True, gates=gates)
  # The same draws, example by example, on the weights.
  keys = jax.random.split(key, len(layers))
  z = {l.name: hc.draw_gates(k, jnp.broadcast_to(log_alpha[l.name], (5, l.n_gates)))
       for k, l in zip(keys, layers)}
  for b in range(5):
    gated = hc.gate_params(layers, params, {name: zs[b] for name, zs in z.items()})
    np.testing.assert_allclose(out[b], model.apply({"params": gated}, x[b:b + 1])[0],
                               rtol=1e-4, atol=1e-5)
  assert not np.allclose(out[0], out[1])


def test_per_example_gates_need_a_chain():
  model = models.ResNet(stage_sizes=(1,), width=4)
  params = model.init(jax.random.key(0), jnp.zeros((1, 8, 8, 3)))["params"]
  nested = {"Block_0": params}
  with pytest.raises(ValueError, match="chain"):
    hc.chain_sites(hc.gated_layers(nested))
  with pytest.raises(ValueError, match="chain"):
    hc.chain_sites(hc.gated_layers(params, "unstructured"))
