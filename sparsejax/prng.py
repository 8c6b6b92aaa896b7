"""Uniform draws that XLA fuses into their consumer, bit for bit ``jax.random.uniform``.

``jax.random.uniform`` with the default Threefry-2x32 key lowers, on the CPU,
to a rolled loop over the hash's five groups of four rounds: every group
reads and writes the whole counter array, and the draws are materialised
before the ops that use them. For the per-element gate noise of
:mod:`sparsejax.objectives.log_uniform` (one draw per activation, ~830k per
BMRS LeNet-5 batch) that memory traffic costs more than the transform itself.

:func:`uniform` computes the same hash as straight-line element-wise ops
(Salmon et al., 2011, "Parallel random numbers: as easy as 1, 2, 3":
Threefry-2x32 with 20 rounds, the key schedule and rotation constants of
JAX's ``threefry2x32``) over the same counters JAX uses with
``jax_threefry_partitionable`` (the flat index ``i`` of each element as the
pair ``(hi, lo) = (i >> 32, i & 0xffffffff)``; ``bits = x1 ^ x2``), and the
same mantissa trick for the floats. The result equals ``jax.random.uniform``
bit for bit (tested), so seeds and results do not change; XLA fuses the
rounds with the consumer into one loop. For other key implementations
(``rbg``, ``unsafe_rbg``), with ``jax_threefry_partitionable`` off, or for
other dtypes it returns ``jax.random.uniform`` itself.

Measured on the 2-core CPU (``docs/benchmarks.md``, W5) for the BMRS
LeNet-5 per-element train step; this is also why the gate noise keeps the
default Threefry key rather than ``rbg``.
"""

from __future__ import annotations

import math
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

#: Rotation constants of the two alternating groups of four rounds.
ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))
#: The key-schedule parity constant of Threefry.
KEY_PARITY = np.uint32(0x1BD11BDA)
#: float dtype -> (unsigned int dtype, mantissa bits, bit pattern of 1.0).
_FLOAT_LAYOUT = {
    np.dtype(np.float32): (np.uint32, 23, 0x3F800000),
    np.dtype(np.float64): (np.uint64, 52, 0x3FF0000000000000),
}


def _rotate_left(x: jax.Array, d: int) -> jax.Array:
  return (x << np.uint32(d)) | (x >> np.uint32(32 - d))


def threefry2x32(k1: jax.Array, k2: jax.Array, x1: jax.Array, x2: jax.Array
                 ) -> tuple[jax.Array, jax.Array]:
  """Threefry-2x32 (20 rounds) of the counter words ``(x1, x2)`` under the key ``(k1, k2)``.

  Straight-line ``uint32`` arithmetic (add, rotate, xor); a key injection
  after every group of four rounds.
  """
  schedule = (k1, k2, k1 ^ k2 ^ KEY_PARITY)
  x1, x2 = x1 + schedule[0], x2 + schedule[1]
  for group in range(5):
    for rotation in ROTATIONS[group % 2]:
      x1 = x1 + x2
      x2 = _rotate_left(x2, rotation) ^ x1
    x1 = x1 + schedule[(group + 1) % 3]
    x2 = x2 + schedule[(group + 2) % 3] + np.uint32(group + 1)
  return x1, x2


def _flat_index(shape: Sequence[int]) -> jax.Array:
  """The row-major index of every element of ``shape`` as ``uint32``, element-wise (fusible)."""
  index = jnp.zeros(shape, np.uint32)
  for axis, size in enumerate(shape):
    stride = math.prod(shape[axis + 1:])
    index = index + lax.broadcasted_iota(np.uint32, shape, axis) * np.uint32(stride)
  return index


def inline_threefry(key: jax.Array) -> bool:
  """Whether draws from ``key`` are computed inline (a Threefry key, partitionable counters)."""
  return (jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key)
          and str(jax.random.key_impl(key)) == "threefry2x32"
          and jax.config.jax_threefry_partitionable)


def fusible(key: jax.Array, dtype) -> bool:
  """Whether :func:`uniform` computes the draws inline for this key and dtype."""
  return inline_threefry(key) and np.dtype(dtype) in _FLOAT_LAYOUT


def random_bits(key: jax.Array, shape: Sequence[int], bit_width: int) -> jax.Array:
  """``jax.random.bits(key, shape, uint{bit_width})``, computed inline for a Threefry key.

  ``bit_width`` is 32 or 64; other keys go to ``jax.random.bits``.
  """
  shape = tuple(shape)
  if bit_width not in (32, 64):
    raise ValueError(f"bit_width must be 32 or 64, got {bit_width}")
  if not inline_threefry(key):
    return jax.random.bits(key, shape, np.dtype(f"uint{bit_width}"))
  if math.prod(shape) >= 2**32:
    raise ValueError(f"shape {shape}: at most 2**32 - 1 elements are drawn inline")
  k1, k2 = jax.random.key_data(key)
  x1, x2 = threefry2x32(k1, k2, jnp.zeros(shape, np.uint32), _flat_index(shape))
  if bit_width == 32:
    return x1 ^ x2
  return (x1.astype(np.uint64) << np.uint64(32)) | x2.astype(np.uint64)


def uniform(key: jax.Array, shape: Sequence[int], dtype=jnp.float32) -> jax.Array:
  """``jax.random.uniform(key, shape, dtype)`` on ``[0, 1)``, fusible into its consumer.

  Args:
    key: a typed PRNG key (``jax.random.key``).
    shape: the shape of the draws.
    dtype: a float dtype.

  Returns:
    The draws; bit for bit ``jax.random.uniform(key, shape, dtype)``.
  """
  dtype = jax.dtypes.canonicalize_dtype(dtype)
  if not fusible(key, dtype):
    return jax.random.uniform(key, shape, dtype)
  uint, mantissa, one = _FLOAT_LAYOUT[np.dtype(dtype)]
  bits = random_bits(key, shape, np.dtype(uint).itemsize * 8)
  floats = lax.bitcast_convert_type(
      (bits >> uint(np.dtype(uint).itemsize * 8 - mantissa)) | uint(one), dtype)
  return floats - jnp.asarray(1, dtype)
