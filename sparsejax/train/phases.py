"""Phases: compiled chunks of epochs with host-level checks between them.

A phase (regularised training, finetuning) runs ``chunk`` epochs as one
compiled program (a ``lax.scan`` of epochs, each a ``lax.scan`` of steps, with
the validation loss evaluated on the device after every epoch). Between chunks
the host appends the curves, asks the convergence rule whether to stop, and
hands the state to a callback (checkpointing, progress). This matches the
reference, whose checks run every ``prune_window`` epochs.

Epoch ``e`` of a phase always uses the key ``fold_in(phase_key, e)``, so a
phase resumed from a checkpoint at any chunk boundary continues exactly as an
uninterrupted one.
"""

from __future__ import annotations

from typing import Callable, Mapping, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from sparsejax.train.state import TrainState

Curves = dict[str, list[float]]
ConvergenceRule = Callable[[TrainState, Mapping[str, Sequence[float]], int], bool]
ChunkCallback = Callable[[TrainState, Curves, int], TrainState]


class PhaseResult(NamedTuple):
  state: TrainState
  curves: Curves
  epochs: int
  converged: bool


def make_chunk_fn(epoch_fn, n_epochs: int, eval_fn=None):
  """``chunk(state, train, val, phase_key, first_epoch) -> (state, curves)``.

  ``curves`` holds, per epoch, the train-step means (``loss``, ``penalty``,
  ...) and, with ``eval_fn``, the validation metrics prefixed ``val_``.
  """

  def chunk(state, train_data, val_data, phase_key, first_epoch):
    def body(state, epoch):
      state, metrics = epoch_fn(state, train_data, jax.random.fold_in(phase_key, epoch))
      if eval_fn is not None:
        metrics.update({f"val_{k}": v for k, v in eval_fn(state, *val_data).items()})
      return state, metrics
    return jax.lax.scan(body, state, first_epoch + jnp.arange(n_epochs))

  return jax.jit(chunk)


def run_phase(state: TrainState, epoch_fn, train_data, *, phase_key: jax.Array,
              max_epochs: int, min_epochs: int = 0, chunk: int = 10,
              eval_fn=None, val_data=None, converged: ConvergenceRule | None = None,
              on_chunk: ChunkCallback | None = None, start_epoch: int = 0,
              curves: Curves | None = None) -> PhaseResult:
  """Trains until ``converged`` says so (checked after ``min_epochs``) or ``max_epochs``.

  Args:
    state: the train state (at ``start_epoch`` epochs into the phase).
    epoch_fn: an *unjitted* epoch function (``make_epoch_fn(..., jit=False)``).
    train_data: ``(x, y)`` on the device.
    phase_key: the phase's key; epoch ``e`` uses ``fold_in(phase_key, e)``.
    max_epochs, min_epochs: bounds on the epochs of the phase.
    chunk: epochs per compiled call (the check interval, ``prune_window``).
    eval_fn, val_data: an *unjitted* evaluation and the validation data.
    converged: ``(state, curves, epoch) -> bool``, asked at each chunk
      boundary once ``epoch >= min_epochs``.
    on_chunk: ``(state, curves, epoch) -> state`` after each chunk and the
      convergence check: checkpoints, logs, and host-level changes of the
      state between chunks (pruning during training, the reference's
      ``shrinking``). Masks are part of the state, so a changed mask does not
      recompile the chunk.
    start_epoch, curves: where a resumed phase picks up.
  """
  if chunk < 1:
    raise ValueError(f"chunk must be >= 1, got {chunk}")
  curves = {k: list(v) for k, v in (curves or {}).items()}
  compiled: dict[int, Callable] = {}
  epoch = start_epoch
  done = False
  while epoch < max_epochs and not done:
    n = min(chunk, max_epochs - epoch)
    if n not in compiled:
      compiled[n] = make_chunk_fn(epoch_fn, n, eval_fn)
    state, metrics = compiled[n](state, train_data, val_data, phase_key, epoch)
    for name, values in jax.device_get(metrics).items():
      curves.setdefault(name, []).extend(np.asarray(values, dtype=float).tolist())
    epoch += n
    done = converged is not None and epoch >= min_epochs and converged(state, curves, epoch)
    if on_chunk is not None:
      state = on_chunk(state, curves, epoch)
  return PhaseResult(state, curves, epoch, done)
