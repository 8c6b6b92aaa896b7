"""The best-state rules of the phases (reference: procedure.jl turning points; BMRS)."""

import jax
import jax.numpy as jnp
import numpy as np

from sparsejax.train import selection


def run_checks(rule, values, settled=None, metric="val_loss"):
  state = rule.init(jnp.float32)
  snapshots = []
  for i, value in enumerate(values):
    ok = jnp.asarray(True if settled is None else settled[i])
    state, snap = jax.jit(rule.update)(state, {metric: jnp.float32(value)}, ok)
    if snap:
      snapshots.append(i)
  return state, snapshots


def test_every_check_is_snapshotted_until_the_first_turning_point():
  state, snapshots = run_checks(selection.turning_point(), [5.0, 4.0, 3.0])
  assert snapshots == [0, 1, 2]
  assert state.turning_min == np.inf and state.snapshot_val_loss == 3.0


def test_after_a_turning_point_only_checks_at_or_below_the_turning_minimum():
  # 3.0 -> 3.5 is a turning point (min 3.5); 3.2 <= 3.5 snapshots; 4.0 turns
  # (min stays 3.5) and is not snapshotted; 3.6 > 3.5 is not.
  state, snapshots = run_checks(selection.turning_point(), [4.0, 3.0, 3.5, 3.2, 4.0, 3.6])
  assert snapshots == [0, 1, 2, 3]
  assert state.turning_min == 3.5
  assert state.snapshot_val_loss == np.float32(3.2)
  assert state.previous_val_loss == np.float32(3.6)


def test_pmmp_checks_that_may_not_turn_never_lower_the_minimum():
  state, snapshots = run_checks(selection.turning_point(), [3.0, 3.5, 3.2, 3.3],
                                settled=[True, False, False, True])
  # Without the turning point at 3.5 every check is snapshotted until 3.3 turns.
  assert snapshots == [0, 1, 2, 3]
  assert state.turning_min == np.float32(3.3)


def test_turning_point_restores_the_snapshot_only_when_the_end_is_worse():
  rule = selection.turning_point()
  state = selection.TurningPointState(jnp.float32(1.0), jnp.float32(2.0), jnp.float32(1.5))
  assert rule.restore(state, {"val_loss": jnp.float32(1.2)})
  assert not rule.restore(state, {"val_loss": jnp.float32(1.0)})
  assert not rule.restore(rule.init(jnp.float32), {"val_loss": jnp.float32(5.0)})


def test_best_metric_snapshots_strict_improvements_and_returns_the_best():
  rule = selection.best_metric("val_accuracy")
  state, snapshots = run_checks(rule, [0.5, 0.7, 0.7, 0.6, 0.8], metric="val_accuracy")
  assert snapshots == [0, 1, 4] and state == np.float32(0.8)
  assert rule.restore(state, {})
  assert not rule.restore(rule.init(jnp.float32), {})


def test_rules_vmap_over_seeds():
  rule = selection.turning_point()
  states = jax.vmap(lambda _: rule.init(jnp.float32))(jnp.arange(3))
  values = jnp.array([3.0, 2.0, 1.0])
  states, snap = jax.vmap(rule.update)(states, {"val_loss": values}, jnp.ones(3, bool))
  np.testing.assert_array_equal(snap, [True, True, True])
  np.testing.assert_array_equal(states.snapshot_val_loss, values)
