"""The optimiser factory: optax's Adam, SGD and Adadelta by name, with coupled weight decay."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from sparsejax.train.optimizers import OPTIMIZERS, build_optimizer

PARAMS = {"w": jnp.asarray([1.0, -2.0, 3.0])}
GRADS = {"w": jnp.asarray([0.5, 0.25, -1.0])}


def updates(optimizer, steps=3):
  """The updates of ``steps`` steps on the same gradient (moments matter after the first)."""
  state = optimizer.init(PARAMS)
  out = []
  for _ in range(steps):
    update, state = optimizer.update(GRADS, state, PARAMS)
    out.append(np.asarray(update["w"]))
  return np.stack(out)


@pytest.mark.parametrize("name, reference", [
    ("adam", optax.adam(0.1)),
    ("sgd", optax.sgd(0.1)),
    ("adadelta", optax.adadelta(0.1, rho=0.9, eps=1e-6)),
])
def test_each_name_is_optaxs_own_optimiser_with_its_state(name, reference):
  optimizer = build_optimizer(name, 0.1)
  np.testing.assert_array_equal(updates(optimizer), updates(reference))
  assert (jax.tree.structure(optimizer.init(PARAMS))
          == jax.tree.structure(reference.init(PARAMS)))


def test_adadelta_has_pytorchs_rho_and_eps_by_hand():
  # First step from zero accumulators (Zeiler 2012; torch.optim.Adadelta):
  # E[g^2] = (1 - rho) g^2, update = -lr sqrt(eps) / sqrt(E[g^2] + eps) g.
  g = np.asarray(GRADS["w"], np.float64)
  expected = -0.1 * np.sqrt(1e-6) / np.sqrt(0.1 * g ** 2 + 1e-6) * g
  np.testing.assert_allclose(updates(build_optimizer("adadelta", 0.1), 1)[0], expected, rtol=1e-5)


def test_sgd_momentum_and_coupled_weight_decay_by_hand():
  g, w = np.asarray(GRADS["w"]), np.asarray(PARAMS["w"])
  # Heavy ball: m_t = 0.9 m_{t-1} + g, so the second update is -lr (1.9 g).
  np.testing.assert_allclose(updates(build_optimizer("sgd", 0.1, momentum=0.9), 2),
                             [-0.1 * g, -0.1 * 1.9 * g], rtol=1e-6)
  # Coupled decay: the optimiser sees g + wd * w.
  np.testing.assert_allclose(updates(build_optimizer("sgd", 0.1, weight_decay=0.01), 1)[0],
                             -0.1 * (g + 0.01 * w), rtol=1e-6)
  np.testing.assert_array_equal(
      updates(build_optimizer("adam", 0.1, weight_decay=0.01)),
      updates(optax.chain(optax.add_decayed_weights(0.01), optax.adam(0.1))))


def test_a_schedule_is_a_learning_rate():
  schedule = optax.piecewise_constant_schedule(0.1, {1: 0.5})
  np.testing.assert_allclose(updates(build_optimizer("sgd", schedule), 2),
                             [-0.1 * np.asarray(GRADS["w"]), -0.05 * np.asarray(GRADS["w"])],
                             rtol=1e-6)


def test_an_unknown_name_or_a_momentum_without_sgd_is_refused():
  assert OPTIMIZERS == ("adam", "sgd", "adadelta")
  with pytest.raises(ValueError, match="optimizer is 'rmsprop'; accepted values: adam, sgd, "
                                       "adadelta$"):
    build_optimizer("rmsprop", 0.1)
  with pytest.raises(ValueError, match="momentum.*'adam'"):
    build_optimizer("adam", 0.1, momentum=0.9)
