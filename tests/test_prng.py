"""sparsejax.prng: inline Threefry draws, bit for bit jax.random's."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sparsejax import prng


@pytest.mark.parametrize("shape", [(1,), (7,), (3, 5, 2), (128, 28, 28, 6)])
def test_uniform_equals_jax_random_uniform_bit_for_bit(shape):
  key = jax.random.key(5)
  np.testing.assert_array_equal(prng.uniform(key, shape), jax.random.uniform(key, shape))
  np.testing.assert_array_equal(prng.random_bits(key, shape, 32), jax.random.bits(key, shape))


def test_uniform_in_float64_and_under_vmap_and_jit():
  keys = jax.random.split(jax.random.key(11), 4)
  with jax.enable_x64(True):
    for dtype in (jnp.float64, jnp.float32):
      got = jax.jit(jax.vmap(lambda k: prng.uniform(k, (6, 5), dtype)))(keys)
      want = jax.vmap(lambda k: jax.random.uniform(k, (6, 5), dtype))(keys)
      assert got.dtype == dtype
      np.testing.assert_array_equal(got, want)


def test_other_key_implementations_fall_back_to_jax_random():
  key = jax.random.key(3, impl="rbg")
  assert not prng.fusible(key, jnp.float32)
  np.testing.assert_array_equal(prng.uniform(key, (4, 3)), jax.random.uniform(key, (4, 3)))
  assert not prng.fusible(jax.random.key(3), jnp.bfloat16)


def test_the_hash_is_threefry_2x32_known_answer():
  # Salmon et al. (2011), Random123 known-answer vector for Threefry-2x32-20:
  # key (0x13198a2e, 0x03707344), counter (0x243f6a88, 0x85a308d3).
  x1, x2 = prng.threefry2x32(np.uint32(0x13198A2E), np.uint32(0x03707344),
                             jnp.uint32(0x243F6A88), jnp.uint32(0x85A308D3))
  assert (int(x1), int(x2)) == (0xC4923A9C, 0x483DF7A0)


def test_too_many_elements_are_refused():
  with pytest.raises(ValueError, match="2\\*\\*32"):
    prng.random_bits(jax.random.key(0), (2**16, 2**16), 32)
