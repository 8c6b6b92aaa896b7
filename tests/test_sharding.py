"""Data-parallel training over fake CPU devices (conftest sets four)."""

import jax
import numpy as np
import optax
import pytest

from sparsejax import objectives
from sparsejax.train import (CLASSIFICATION, batch_constraint, create_train_state, data_mesh,
                             make_epoch_fn, make_eval_fn, make_train_step, replicate, shard_batch)
from tests.test_train_step import TinyNet, data

pytestmark = pytest.mark.skipif(jax.device_count() < 4, reason="needs 4 (fake) devices")


def run_epochs(mesh, n_epochs=3):
  model, (x, y) = TinyNet(batchnorm=True), data(n=64)
  opt = optax.adam(1e-2)
  obj = objectives.l1(1e-4)
  state = replicate(create_train_state(jax.random.key(1), model, x, obj, opt), mesh)
  x, y = replicate((x, y), mesh)
  step = make_train_step(model, CLASSIFICATION, obj, opt, jit=False,
                         batch_constraint=batch_constraint(mesh))
  epoch = make_epoch_fn(step, batch_size=16, mesh=mesh)
  losses = []
  for e in range(n_epochs):
    state, m = epoch(state, (x, y), jax.random.key(e))
    losses.append(float(m["loss"]))
  return state, losses, make_eval_fn(model, CLASSIFICATION, obj, 16)(state, x, y)


def test_four_devices_match_one_device():
  state1, losses1, eval1 = run_epochs(data_mesh(jax.devices()[:1]))
  state4, losses4, eval4 = run_epochs(data_mesh(jax.devices()[:4]))
  np.testing.assert_allclose(losses1, losses4, rtol=1e-5)
  assert float(eval1["loss"]) == pytest.approx(float(eval4["loss"]), rel=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
               state1.params, state4.params)
  leaf = jax.tree.leaves(state4.params)[0]
  assert len(leaf.sharding.device_set) == 4 and leaf.sharding.is_fully_replicated


def test_batch_is_split_over_the_data_axis():
  mesh = data_mesh(jax.devices()[:4])
  x, y = data(n=16)
  xs, ys = shard_batch((x, y), mesh)
  assert {s.data.shape for s in xs.addressable_shards} == {(4, 5)}
  assert {s.data.shape for s in ys.addressable_shards} == {(4,)}
  # Inside the compiled step the batch is constrained to the same split.
  model = TinyNet()
  opt = optax.sgd(0.1)
  state = replicate(create_train_state(jax.random.key(0), model, x, objectives.plain(), opt), mesh)
  step = make_train_step(model, CLASSIFICATION, objectives.plain(), opt,
                         batch_constraint=batch_constraint(mesh))
  hlo = step.lower(state, (x, y), jax.random.key(0)).compile().as_text()
  assert "all-reduce" in hlo  # gradients are summed across the four shards


def test_indivisible_batch_is_a_clear_error():
  mesh = data_mesh(jax.devices()[:4])
  with pytest.raises(ValueError, match="not divisible by the 4 devices"):
    make_epoch_fn(lambda s, b, k: (s, {}), batch_size=10, mesh=mesh)
