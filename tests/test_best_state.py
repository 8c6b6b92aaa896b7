"""The best-state tracker of the phases (reference: procedure.jl turning points)."""

import math

from sparsejax.train import best_state


def run_checks(losses, may_turn=None):
  tracker = best_state.BestState()
  snapshots = []
  for i, loss in enumerate(losses):
    turn = True if may_turn is None else may_turn[i]
    tracker, snap = best_state.check(tracker, loss, may_turn=turn)
    if snap:
      snapshots.append(i)
  return tracker, snapshots


def test_every_check_is_snapshotted_until_the_first_turning_point():
  tracker, snapshots = run_checks([5.0, 4.0, 3.0])
  assert snapshots == [0, 1, 2]
  assert tracker.turning_min == math.inf and tracker.snapshot_val_loss == 3.0


def test_after_a_turning_point_only_checks_at_or_below_the_turning_minimum():
  # 3.0 -> 3.5 is a turning point (min 3.5); 3.2 <= 3.5 snapshots; 4.0 turns
  # (min stays 3.5) and is not snapshotted; 3.6 > 3.5 is not.
  tracker, snapshots = run_checks([4.0, 3.0, 3.5, 3.2, 4.0, 3.6])
  assert snapshots == [0, 1, 2, 3]
  assert tracker.turning_min == 3.5
  assert tracker.snapshot_val_loss == 3.2
  assert tracker.previous_val_loss == 3.6


def test_pmmp_checks_that_may_not_turn_never_lower_the_minimum():
  tracker, snapshots = run_checks([3.0, 3.5, 3.2, 3.3], may_turn=[True, False, False, True])
  # Without the turning point at 3.5 every check is snapshotted until 3.3 turns.
  assert snapshots == [0, 1, 2, 3]
  assert tracker.turning_min == 3.3


def test_select_returns_the_snapshot_only_when_the_end_is_worse():
  tracker = best_state.BestState(snapshot_val_loss=1.0, previous_val_loss=2.0, turning_min=1.5)
  assert best_state.select(tracker, "end", "snap", 1.2) == ("snap", True)
  assert best_state.select(tracker, "end", "snap", 1.0) == ("end", False)
  assert best_state.select(tracker, "end", None, 5.0) == ("end", False)


def test_json_round_trip_keeps_infinities():
  tracker = best_state.BestState(snapshot_val_loss=0.5)
  again = best_state.BestState.from_json(tracker.to_json())
  assert again == tracker
  assert tracker.to_json()["turning_min"] is None
  assert best_state.BestState.from_json(None) == best_state.BestState()
