"""Every PRNG key of a run, derived from its seed in one place.

A run is a pure function of ``(config, seed)``: each random stream is
``fold_in(key(seed), stream)`` with a fixed stream number, and epoch ``e`` of
a phase folds ``e`` into the phase's stream. All functions are traceable and
vmap over an integer seed array, so a sweep of seeds draws exactly the keys of
each seed's single run.

The stream numbers are those of the efficient-compression runs recorded in
``docs/results/efficient_compression.md`` (train 0, finetune 1, shrinking 3,
the final pruning 4; the student's initialisation 43, the reference's
``seed + 43``), so those results reproduce bit for bit.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

#: Stream name -> the number folded into the seed's key.
STREAMS = {
    "train": 0,
    "finetune": 1,
    "shrinking": 3,
    "prune": 4,
    "gradual": 5,
    "posthoc": 7,
    "search": 8,
    "reinit": 9,
    "sparse": 10,
    "model": 43,
}


def stream_id(name: str) -> int:
  """The stream number of ``name``; a :class:`KeyError` names the known streams."""
  if name not in STREAMS:
    raise KeyError(f"unknown key stream {name!r}; known streams: {', '.join(STREAMS)} "
                   "(add new ones to sparsejax.keys.STREAMS)")
  return STREAMS[name]


def stream_key(seed, name: str) -> jax.Array:
  """``fold_in(key(seed), STREAMS[name])``."""
  return jax.random.fold_in(jax.random.key(seed), stream_id(name))


def model_key(seed) -> jax.Array:
  """The key that initialises the model and the objective's variables."""
  return stream_key(seed, "model")


def stream_keys(seeds, name: str) -> jax.Array:
  """:func:`stream_key` for an array of seeds (leading axis)."""
  return jax.vmap(lambda s: stream_key(s, name))(jnp.asarray(seeds))


def event_keys(seeds, name: str, index: int) -> jax.Array:
  """``fold_in(stream_key(seed, name), index)`` per seed: the ``index``-th event of a stream
  (the shrinking pruning at epoch ``index``, say)."""
  return jax.vmap(lambda k: jax.random.fold_in(k, index))(stream_keys(seeds, name))
