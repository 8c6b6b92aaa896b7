"""Best-state return: keep the state of the best validation check.

The efficient-compression reference (``procedure.jl``; notes section 6)
watches the validation loss at every check (every ``prune_window`` epochs) of
a phase:

* a check whose validation loss is :math:`\\ge` the previous check's is a
  *turning point*; for PMMP a turning point also needs the keep-probabilities
  to have settled (:func:`sparsejax.objectives.gamma_saturated`);
* the state is snapshotted whenever its validation loss is :math:`\\le` the
  minimum over the turning points so far (every check qualifies until the
  first turning point: the minimum over none is :math:`+\\infty`);
* at the end of the phase the snapshot is returned if the final validation
  loss is worse than the snapshot's.

A check is first recorded as a turning point (updating the minimum) and then
compared with the minimum, so a turning point's own state is snapshotted when
it is the lowest turning point so far.

:class:`BestState` holds the scalars on the host (they go into the run's JSON
metadata, :meth:`BestState.to_json`) and the snapshot as a state pytree (it
goes into the checkpoint beside the current state), so a resumed phase
returns the same state as an uninterrupted one.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

State = Any


class BestState(NamedTuple):
  """The tracker's scalars; the snapshot itself is held by the caller.

  Attributes:
    snapshot_val_loss: validation loss of the snapshot (``inf``: none yet).
    previous_val_loss: the previous check's validation loss (``inf``: none).
    turning_min: minimum validation loss over the turning points (``inf``).
  """
  snapshot_val_loss: float = math.inf
  previous_val_loss: float = math.inf
  turning_min: float = math.inf

  def to_json(self) -> dict[str, float | None]:
    """JSON-ready scalars (``None`` for ``inf``)."""
    return {k: (None if math.isinf(v) else v) for k, v in self._asdict().items()}

  @classmethod
  def from_json(cls, values: dict | None) -> "BestState":
    values = values or {}
    return cls(**{k: (math.inf if values.get(k) is None else float(values[k]))
                  for k in cls._fields})


def check(tracker: BestState, val_loss: float, *, may_turn: bool = True) -> tuple[BestState, bool]:
  """Records one check; returns the new tracker and whether to snapshot now.

  Args:
    tracker: the tracker before the check.
    val_loss: the validation loss at the check.
    may_turn: whether this check may count as a turning point (PMMP's
      :math:`\\gamma` rule; always true for the other methods).
  """
  turning_min = tracker.turning_min
  if may_turn and val_loss >= tracker.previous_val_loss:
    turning_min = min(turning_min, val_loss)
  snapshot = val_loss <= turning_min
  return BestState(
      snapshot_val_loss=val_loss if snapshot else tracker.snapshot_val_loss,
      previous_val_loss=val_loss,
      turning_min=turning_min,
  ), snapshot


def should_restore(tracker: BestState, final_val_loss: float) -> bool:
  """Whether the phase ends worse than its snapshot (then the snapshot is returned)."""
  return final_val_loss > tracker.snapshot_val_loss


def select(tracker: BestState, state: State, snapshot: State, final_val_loss: float
           ) -> tuple[State, bool]:
  """``(snapshot, True)`` if the final validation loss is worse than the snapshot's, else
  ``(state, False)``."""
  if snapshot is not None and should_restore(tracker, final_val_loss):
    return snapshot, True
  return state, False
