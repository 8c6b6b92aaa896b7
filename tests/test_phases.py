"""run_phase: compiled chunks, convergence checks, host changes between chunks, resuming."""

import jax
import jax.numpy as jnp
import numpy as np
import optax

from sparsejax import masks, objectives
from sparsejax.models import MLP
from sparsejax.train import REGRESSION, create_train_state, make_epoch_fn, make_train_step
from sparsejax.train.phases import run_phase


def setup():
  model = MLP(widths=(2, 6, 1))
  x = jax.random.uniform(jax.random.key(0), (32, 2), minval=-1, maxval=1)
  y = jnp.sin(3 * x[:, :1])
  opt = optax.adam(1e-2)
  state = create_train_state(jax.random.key(1), model, x[:1], objectives.plain(), opt)
  step = make_train_step(model, REGRESSION, objectives.plain(), opt, jit=False)
  return state, make_epoch_fn(step, 8, jit=False), (x, y)


def test_resumed_phase_equals_uninterrupted_and_convergence_waits_for_min_epochs():
  state, epoch_fn, data = setup()
  key = jax.random.key(7)
  asked = []

  def converged(state, curves, epoch):
    asked.append(epoch)
    return epoch >= 30

  full = run_phase(state, epoch_fn, data, phase_key=key, max_epochs=50, min_epochs=20, chunk=10,
                   converged=converged)
  assert full.converged and full.epochs == 30 and asked == [20, 30]
  assert len(full.curves["loss"]) == 30
  first = run_phase(state, epoch_fn, data, phase_key=key, max_epochs=10, chunk=10)
  rest = run_phase(first.state, epoch_fn, data, phase_key=key, max_epochs=30, chunk=10,
                   start_epoch=10, curves=first.curves)
  np.testing.assert_allclose(rest.curves["loss"], full.curves["loss"], rtol=1e-6)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6),
               rest.state.params, full.state.params)


def test_the_state_returned_by_on_chunk_is_trained_on():
  state, epoch_fn, data = setup()

  def prune_first_layer(state, curves, epoch):
    if epoch == 10:
      new_masks = jax.tree.map(lambda m: m, state.masks)
      new_masks["Dense_0"]["kernel"] = jnp.zeros_like(new_masks["Dense_0"]["kernel"])
      return state._replace(masks=new_masks, params=masks.apply(new_masks, state.params))
    return state

  result = run_phase(state, epoch_fn, data, phase_key=jax.random.key(0), max_epochs=20, chunk=10,
                     on_chunk=prune_first_layer)
  assert float(jnp.abs(result.state.params["Dense_0"]["kernel"]).max()) == 0.0
  assert float(jnp.abs(result.state.params["Dense_1"]["kernel"]).max()) > 0.0
