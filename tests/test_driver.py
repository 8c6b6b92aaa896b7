"""The one phase driver: chunks, on-device checks, freezing, hooks, resuming, readout."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from sparsejax import data as data_lib
from sparsejax import masks, objectives
from sparsejax.models import MLP
from sparsejax.train import REGRESSION, create_train_state, driver, selection, sharding
from sparsejax.train.convergence import is_saturated


def program(seeds=(0, 1, 2)):
  splits, _ = jax.vmap(lambda s: data_lib.teacher_student_data(
      s, n_train=64, n_val=64, n_test=64))(jnp.asarray(seeds))
  return driver.SeedProgram(seeds, splits, 0, MLP(widths=(2, 8, 1)), REGRESSION,
                            train_batch_size=16, eval_batch_size=64)


def states_of(prog, optimizer):
  init = jax.vmap(lambda k: create_train_state(k, prog.model, jnp.zeros((1, 2)),
                                               objectives.plain(), optimizer))
  return init(jax.vmap(jax.random.key)(jnp.asarray(prog.seeds) + 100))


def run(prog, phase, states, start=0, carry=None, curves=None, **kwargs):
  optimizer = phase.optimizer
  carry = carry or driver.init_carry(prog, phase, states, {}, optimizer)
  curves = curves if curves is not None else driver.Curves()
  keys = jax.vmap(jax.random.key)(jnp.asarray(prog.seeds))
  return driver.run_phase(prog, phase, carry, keys, optimizer=optimizer, start_epoch=start,
                          curves=curves, events=[], **kwargs), curves


@pytest.mark.slow  # 7 s or more on 2 cores: the default suite stays under 10 minutes
def test_seeds_converge_at_their_own_epochs_and_frozen_seeds_stay_frozen():
  prog, optimizer = program(), optax.adam(3e-2)
  window, deviation = 8, 1e-3
  phase = driver.Phase("train", objectives.plain(), max_epochs=200, min_epochs=20,
                       chunk_epochs=10, optimizer=optimizer, check_from=window + 3,
                       convergence=driver.Convergence("val_loss", window, deviation))
  result, curves = run(prog, phase, states_of(prog, optimizer))
  epochs = result.epochs
  assert result.converged.all() and len(set(epochs.tolist())) > 1
  assert (epochs >= 20).all() and (epochs % 10 == 0).all()
  val = curves.to_numpy()["val_loss"]
  for i, e in enumerate(epochs):
    # The host test on each seed's own curve agrees with the on-device one: saturated at its
    # last check, not at the one before.
    assert bool(is_saturated(val[i, :e], window, deviation))
    assert e == 20 or not bool(is_saturated(val[i, :e - 10], window, deviation))
  # A frozen seed's parameters are those of its last trained epoch: training it alone for
  # exactly that many epochs gives the same state.
  i = int(np.argmin(epochs))
  alone = program((prog.seeds[i],))
  fixed = phase._replace(convergence=None, min_epochs=0, max_epochs=int(epochs[i]))
  single, _ = run(alone, fixed, states_of(alone, optimizer))
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a[i], b[0], rtol=1e-5, atol=1e-7),
               result.carry.states.params, single.carry.states.params)


def test_resumed_phase_equals_uninterrupted():
  prog, optimizer = program(), optax.adam(1e-2)
  phase = driver.Phase("train", objectives.plain(), max_epochs=30, chunk_epochs=10,
                       optimizer=optimizer, selection=selection.turning_point())
  states = states_of(prog, optimizer)
  full, full_curves = run(prog, phase, states)
  saved = []
  first, curves = run(prog, phase._replace(max_epochs=10), states,
                      on_chunk=lambda carry, epoch: saved.append(carry))
  rest, curves = run(prog, phase, None, start=10, carry=saved[-1],
                     curves=driver.Curves(curves.to_numpy()))
  np.testing.assert_array_equal(curves.to_numpy()["loss"], full_curves.to_numpy()["loss"])
  jax.tree.map(np.testing.assert_array_equal, rest.carry.states.params,
               full.carry.states.params)


def test_a_hook_changes_the_trained_state_and_records_a_curve():
  prog, optimizer = program(), optax.adam(1e-2)

  def prune_first_layer(carry, ctx):
    if ctx.epoch == 10:
      new = jax.tree.map(lambda m: m, carry.states.masks)
      new["Dense_0"]["kernel"] = jnp.zeros_like(new["Dense_0"]["kernel"])
      carry = carry._replace(states=carry.states._replace(
          masks=new, params=masks.apply(new, carry.states.params)))
    ctx.curves.record("marker", np.full(ctx.program.size, ctx.epoch))
    return carry

  phase = driver.Phase("train", objectives.plain(), max_epochs=20, chunk_epochs=10,
                       optimizer=optimizer, between_chunks=prune_first_layer)
  result, curves = run(prog, phase, states_of(prog, optimizer))
  params = result.carry.states.params
  assert float(jnp.abs(params["Dense_0"]["kernel"]).max()) == 0.0
  assert float(jnp.abs(params["Dense_1"]["kernel"]).max()) > 0.0
  marker = curves.to_numpy()["marker"]
  assert marker.shape == (3, 20) and (marker[:, 9] == 10).all() and (marker[:, 19] == 20).all()
  assert np.isnan(marker[:, :9]).all()


def test_best_metric_selection_returns_the_snapshot():
  prog, optimizer = program(), optax.sgd(0.5)  # large steps: the loss jumps about
  phase = driver.Phase("train", objectives.plain(), max_epochs=12, chunk_epochs=1,
                       optimizer=optimizer, selection=selection.best_metric("neg_val"))
  # best_metric maximises: select on the negated validation loss.
  neg = selection.best_metric("val_loss")
  phase = phase._replace(selection=selection.Selection(
      neg.init, lambda s, m, ok: neg.update(s, {"val_loss": -m["val_loss"]}, ok), neg.restore))
  result, curves = run(prog, phase, states_of(prog, optimizer))
  val = curves.to_numpy()["val_loss"]
  assert result.returned_best_state.all()
  final = prog.evaluate(objectives.plain(), result.carry.states, "val")["loss"]
  np.testing.assert_allclose(final, val.min(axis=1), rtol=1e-5)


def test_readout_applies_the_objectives_masks_and_keeps_dense_leaves():
  prog = program((0,))
  states = states_of(prog, optax.sgd(0.1))
  states = states._replace(masks=masks.ones_like(driver.per_seed(states, 0).params,
                                                 masks.kernels_only))
  states = states._replace(masks=jax.tree.map(lambda m: m[None], states.masks))
  threshold = objectives.Objective(
      init=lambda k, p: (), forward=lambda p, s, k, t: (p, None), penalty=lambda p, s: 0.0,
      readout=lambda p, s: (p, jax.tree.map(lambda x: jnp.abs(x) > 0.3, p)))
  out = driver.readout(prog, threshold, states)
  kernel = np.asarray(out.params["Dense_0"]["kernel"])
  assert np.all((np.abs(kernel) > 0.3) | (kernel == 0))
  assert out.masks["Dense_0"]["bias"] is None


@pytest.mark.parametrize("loop", driver.SEED_LOOPS)
@pytest.mark.parametrize("size", [1, 3])
def test_map_seeds_equals_vmap(size, loop):
  fn = lambda x, y: {"sum": (x * y).sum(), "scaled": x * y[0]}
  x, y = jnp.arange(size * 4.0).reshape(size, 4), jnp.arange(1.0, 5.0)
  got = driver.map_seeds(fn, (0, None), size, loop)(x, y)
  want = jax.vmap(fn, in_axes=(0, None))(x, y)
  for name in want:
    np.testing.assert_array_equal(got[name], want[name])


def test_map_seeds_runs_the_seeds_one_after_another_with_map():
  # lax.map runs the unbatched function: a grouped convolution appears only under vmap.
  def conv(kernel, x):
    return jax.lax.conv_general_dilated(x, kernel, (1, 1), "SAME",
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"))
  kernels = jax.random.normal(jax.random.key(0), (3, 3, 3, 2, 4))
  x = jax.random.normal(jax.random.key(1), (3, 1, 5, 5, 2))  # per-seed activations
  hlo = {loop: jax.jit(driver.map_seeds(conv, 0, 3, loop)).lower(kernels, x).as_text()
         for loop in driver.SEED_LOOPS}
  assert "feature_group_count = 3" in hlo["vmap"]
  assert "feature_group_count = 3" not in hlo["map"]
  np.testing.assert_allclose(jax.jit(driver.map_seeds(conv, 0, 3, "map"))(kernels, x),
                             jax.vmap(conv)(kernels, x), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("loop", driver.SEED_LOOPS)
def test_map_seeds_over_a_mesh_gives_each_device_its_own_seeds(loop):
  mesh = sharding.data_mesh(jax.devices()[:4])
  fn = lambda x, y: {"sum": (x * y).sum(), "scaled": x * y[0]}
  x, y = jnp.arange(8 * 4.0).reshape(8, 4), jnp.arange(1.0, 5.0)
  split = driver.map_seeds(fn, (0, None), 8, loop, mesh)
  got = jax.jit(split)(x, y)
  want = jax.vmap(fn, in_axes=(0, None))(x, y)
  for name in want:
    np.testing.assert_array_equal(got[name], want[name])
    assert got[name].sharding.spec[0] == sharding.DATA_AXIS
    assert len(got[name].sharding.device_set) == 4
  # Each device's program holds 2 seeds, and runs them as a batch or one after another.
  program = str(jax.make_jaxpr(split)(x, y))
  assert "shard_map" in program and "f32[2,4]" in program
  assert ("scan" in program) == (loop == "map")
  with pytest.raises(ValueError, match="6 seeds do not split over 4 devices"):
    driver.map_seeds(fn, (0, None), 6, loop, mesh)


def test_map_seeds_rejects_an_unknown_loop_and_axis():
  with pytest.raises(ValueError, match="loop must be one of"):
    driver.map_seeds(lambda x: x, 0, 2, "pmap")
  with pytest.raises(ValueError, match="in_axes must be 0 or None"):
    driver.map_seeds(lambda x: x, 1, 2, "map")(jnp.ones((2, 2)))
