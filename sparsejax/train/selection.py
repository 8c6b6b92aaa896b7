"""Which state a phase returns: the best-state rules, traceable and per seed.

A :class:`Selection` watches a phase at its checks (chunk ends) and decides
when to snapshot the state and, at the end, whether to return the snapshot
instead of the final state. Its functions are pure and traceable, so the
phase driver runs them vmapped over seeds on the device, inside the compiled
chunk (:mod:`sparsejax.train.driver`). Two rules:

* :func:`turning_point`, the efficient-compression reference's rule
  (``procedure.jl``; notes section 6), on the validation loss:

  - a check whose validation loss is :math:`\\ge` the previous check's is a
    *turning point*; for PMMP a turning point also needs the
    keep-probabilities to have settled (the phase's ``settled`` rule);
  - the state is snapshotted whenever its validation loss is :math:`\\le`
    the minimum over the turning points so far (every check qualifies until
    the first turning point: the minimum over none is :math:`+\\infty`); a
    check is first recorded as a turning point and then compared;
  - at the end the snapshot is returned if the final validation loss is
    worse than the snapshot's.

* :func:`best_metric`, the BMRS reference's rule: snapshot whenever the
  validation accuracy beats every earlier check (strictly), and return the
  snapshot at the end (the finetuning epoch with the best validation
  accuracy is the one tested).
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, NamedTuple

import jax
import jax.numpy as jnp

Metrics = Mapping[str, jax.Array]


class Selection(NamedTuple):
  """A best-state rule; every function is traceable and acts on one seed.

  Attributes:
    init: ``dtype -> state``, the rule's scalars before the first check.
    update: ``(state, metrics, settled) -> (state, snapshot)``: one check,
      with the metrics of the chunk's last epoch and the phase's ``settled``
      flag; ``snapshot`` says whether to keep the current train state.
    restore: ``(state, metrics) -> bool``: at the end of the phase, with the
      last epoch's metrics, whether to return the snapshot.
  """
  init: Callable[[Any], Any]
  update: Callable[[Any, Metrics, jax.Array], tuple[Any, jax.Array]]
  restore: Callable[[Any, Metrics], jax.Array]


class TurningPointState(NamedTuple):
  """The scalars of :func:`turning_point` (``inf``: none yet)."""
  snapshot_val_loss: jax.Array
  previous_val_loss: jax.Array
  turning_min: jax.Array


def turning_point(metric: str = "val_loss") -> Selection:
  """The efficient-compression reference's best-state return (module docstring)."""

  def init(dtype) -> TurningPointState:
    inf = jnp.asarray(jnp.inf, dtype)
    return TurningPointState(inf, inf, inf)

  def update(state: TurningPointState, metrics: Metrics, settled):
    value = metrics[metric]
    turns = settled & (value >= state.previous_val_loss)
    turning_min = jnp.where(turns, jnp.minimum(state.turning_min, value), state.turning_min)
    snapshot = value <= turning_min
    return TurningPointState(
        snapshot_val_loss=jnp.where(snapshot, value, state.snapshot_val_loss),
        previous_val_loss=value,
        turning_min=turning_min), snapshot

  def restore(state: TurningPointState, metrics: Metrics):
    return metrics[metric] > state.snapshot_val_loss

  return Selection(init, update, restore)


def best_metric(metric: str = "val_accuracy") -> Selection:
  """Snapshot every strict improvement of ``metric`` (higher is better); return the best."""

  def init(dtype):
    return jnp.asarray(-jnp.inf, dtype)

  def update(best, metrics: Metrics, settled):
    del settled
    better = metrics[metric] > best
    return jnp.where(better, metrics[metric], best), better

  def restore(best, metrics: Metrics):
    del metrics
    return jnp.isfinite(best)

  return Selection(init, update, restore)
