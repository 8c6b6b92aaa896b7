"""Mask structures and compressed N:M storage: hand-computed expectations."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sparsejax.sparsity import structures as st

INF = np.inf


def rng(seed=0):
  return np.random.default_rng(seed)


# --------------------------------------------------------------------------
# N:M


@pytest.mark.parametrize("n, m, shape", [(2, 4, (8, 5)), (1, 4, (12, 3)), (2, 4, (3, 3, 8, 4)),
                                         (3, 8, (16, 2))])
def test_every_nm_group_keeps_exactly_n(n, m, shape):
  structure = st.NByM(n, m)
  mask = st.keep_mask(structure, rng().normal(size=shape), n_keep=None)
  assert mask.shape == shape and mask.dtype == bool
  per_group = np.asarray(structure.groups(mask)).sum(-1)
  assert per_group.shape == shape[:-2] + (shape[-2] // m, shape[-1], )
  np.testing.assert_array_equal(per_group, n)
  assert mask.mean() == pytest.approx(structure.fixed_density)


def test_nm_keeps_the_top_n_along_axis_minus_two_with_ties_low_and_partial_groups():
  # One column, axis -2 of length 6 at 2:4: groups rows 0-3 and rows 4-5 (partial).
  scores = np.array([[1.0], [5.0], [5.0], [5.0], [2.0], [3.0]])
  mask = st.NByM(2, 4).top(scores)
  np.testing.assert_array_equal(mask[:, 0], [False, True, True, False, True, True])
  # 3:4 on the partial group of 2 keeps min(3, 2) = 2.
  mask = st.NByM(3, 4).top(scores)
  np.testing.assert_array_equal(mask[:, 0], [False, True, True, True, True, True])
  # -inf and NaN are never kept: the group keeps fewer.
  scores = np.array([[-INF], [np.nan], [-INF], [4.0]])
  np.testing.assert_array_equal(st.NByM(2, 4).top(scores)[:, 0], [False, False, False, True])
  # n_keep is ignored.
  scores = rng().normal(size=(8, 3))
  np.testing.assert_array_equal(st.NByM(2, 4).top(scores, 1), st.NByM(2, 4).top(scores, 20))


def test_nm_groups_and_ungroup_are_inverse():
  structure = st.NByM(2, 4)
  x = jnp.arange(2 * 6 * 3, dtype=jnp.float32).reshape(2, 6, 3)
  g = structure.groups(x, fill=-1.0)
  assert g.shape == (2, 2, 3, 4)
  # entry [..., g, o, k] is x[..., g * m + k, o]; padding rows 6, 7 are the fill.
  np.testing.assert_array_equal(g[1, 0, 2], x[1, 0:4, 2])
  np.testing.assert_array_equal(g[1, 1, 2], [x[1, 4, 2], x[1, 5, 2], -1.0, -1.0])
  np.testing.assert_array_equal(structure.ungroup(g, x.shape), x)
  with pytest.raises(ValueError, match="expected"):
    structure.ungroup(g, (2, 9, 3))


@pytest.mark.parametrize("make", [lambda: st.NByM(2, 4).top(np.ones(8)),
                                  lambda: st.NByM(2, 4).groups(np.ones(8)),
                                  lambda: st.NByM(2, 4).unit_count((8,))])
def test_nm_needs_two_axes(make):
  with pytest.raises(ValueError, match=r"\(8,\)"):
    make()


# --------------------------------------------------------------------------
# Unstructured, Block, Channel


def test_unstructured_keeps_exactly_n_keep_ties_to_the_lower_index():
  structure = st.Unstructured()
  scores = jnp.array([[3.0, 1.0, 3.0], [-INF, 3.0, 2.0]])
  np.testing.assert_array_equal(structure.top(structure.pool(scores), 2),
                                [[True, False, True], [False, False, False]])
  np.testing.assert_array_equal(st.keep_mask(structure, scores, 4),
                                [[True, False, True], [False, True, True]])
  # -inf never kept, however large n_keep.
  assert int(st.keep_mask(structure, scores, 6).sum()) == 5
  assert structure.unit_count((2, 3)) == 6 and structure.fixed_density is None
  scores = rng().normal(size=(7, 9))
  for k in (0, 1, 30, 63):
    assert int(st.keep_mask(structure, scores, k).sum()) == k


def test_block_pool_means_partial_edges_and_expand():
  structure = st.Block(2, 3)
  x = jnp.arange(5 * 4, dtype=jnp.float32).reshape(5, 4)
  pooled = structure.pool(x)
  assert pooled.shape == (3, 2) == structure.unit_shape((5, 4))
  assert structure.unit_count((5, 4)) == 6
  # rows 0-1 x cols 0-2: (0+1+2+4+5+6)/6 = 3; cols 3 only: (3+7)/2 = 5;
  # row 4 (partial) x cols 0-2: (16+17+18)/3 = 17; x col 3: 19.
  np.testing.assert_allclose(pooled, [[3.0, 5.0], [11.0, 13.0], [17.0, 19.0]])
  unit = jnp.array([[True, False], [False, False], [False, True]])
  mask = structure.expand(unit, (5, 4))
  np.testing.assert_array_equal(mask, [[1, 1, 1, 0], [1, 1, 1, 0], [0, 0, 0, 0],
                                       [0, 0, 0, 0], [0, 0, 0, 1]])
  # The two highest blocks: 19 (bottom right), 17.
  np.testing.assert_array_equal(st.keep_mask(structure, x, 2)[4], [True, True, True, True])
  assert int(st.keep_mask(structure, x, 2).sum()) == 4


def test_block_is_per_spatial_position_of_a_conv_kernel():
  structure = st.Block(2, 2)
  scores = rng().normal(size=(3, 3, 4, 6))
  pooled = structure.pool(scores)
  assert pooled.shape == (3, 3, 2, 3)
  np.testing.assert_allclose(pooled[1, 2, 1, 0], scores[1, 2, 2:4, 0:2].mean(), rtol=1e-6)
  mask = st.keep_mask(structure, scores, 5)
  assert mask.shape == scores.shape and int(mask.sum()) == 5 * 4
  with pytest.raises(ValueError, match="does not fit"):
    structure.expand(jnp.ones((3, 3), bool), scores.shape)


def test_channel_pools_over_all_but_the_last_axis():
  structure = st.Channel()
  scores = rng().normal(size=(3, 3, 2, 5))
  pooled = structure.pool(scores)
  assert pooled.shape == (5,) and structure.unit_count(scores.shape) == 5
  np.testing.assert_allclose(pooled, scores.reshape(-1, 5).mean(0), rtol=1e-5, atol=1e-6)
  mask = st.keep_mask(structure, scores, 2)
  kept = np.argsort(-pooled, stable=True)[:2]
  np.testing.assert_array_equal(mask.all(axis=(0, 1, 2)), np.isin(np.arange(5), kept))
  np.testing.assert_array_equal(mask.any(axis=(0, 1, 2)), mask.all(axis=(0, 1, 2)))
  # Ties to the lower channel.
  np.testing.assert_array_equal(structure.top(jnp.array([1.0, 2.0, 2.0, 2.0]), 2),
                                [False, True, True, False])


@pytest.mark.parametrize("structure", [st.Unstructured(), st.Block(2, 2), st.Channel()])
def test_traced_n_keep_under_jit_and_vmap(structure):
  scores = jnp.asarray(rng(1).normal(size=(4, 6, 4)), jnp.float32)  # a batch of 4 leaves
  n_keep = jnp.array([0, 1, 2, 3])
  masks = jax.jit(jax.vmap(lambda s, k: st.keep_mask(structure, s, k)))(scores, n_keep)
  units_per_entry = np.prod(scores.shape[1:]) // structure.unit_count(scores.shape[1:])
  np.testing.assert_array_equal(masks.sum(axis=(1, 2)), np.asarray(n_keep) * units_per_entry)
  for i in range(4):
    np.testing.assert_array_equal(masks[i], st.keep_mask(structure, scores[i], int(n_keep[i])))


def test_nm_under_jit_and_vmap():
  structure = st.NByM(2, 4)
  scores = jnp.asarray(rng(2).normal(size=(3, 8, 5)), jnp.float32)
  masks = jax.jit(jax.vmap(structure.top))(scores)
  np.testing.assert_array_equal(np.asarray(jax.vmap(structure.groups)(masks)).sum(-1), 2)
  np.testing.assert_array_equal(masks[1], structure.top(scores[1]))


# --------------------------------------------------------------------------
# parse


def test_parse_round_trips_and_rejects():
  assert st.parse("unstructured") == st.Unstructured()
  assert st.parse(" 2:4 ") == st.NByM(2, 4)
  assert st.parse("block:4x2") == st.Block(4, 2)
  assert st.parse("Channel") == st.Channel()
  for s in (st.Unstructured(), st.NByM(1, 4), st.Block(3, 5), st.Channel()):
    assert st.parse(str(s)) == s and st.parse(s) is s
  for bad in ("4:4", "0:4", "5:4", "block:0x2", "rows", "2-4", ""):
    with pytest.raises(ValueError, match="N:M|block|unstructured"):
      st.parse(bad)
  with pytest.raises(ValueError, match="n < m"):
    st.NByM(4, 2)
  with pytest.raises(ValueError, match="rows"):
    st.Block(0, 2)


# --------------------------------------------------------------------------
# Compressed N:M


def nm_sparse(shape, n, m, dtype, seed):
  """A random kernel with n random nonzeros in every group of m along axis -2 (NumPy)."""
  w = rng(seed).normal(size=shape).astype(dtype)
  r = rng(seed + 1).random(shape)
  keep = np.zeros(shape, bool)
  for start in range(0, shape[-2], m):
    block = r[..., start:start + m, :]
    keep[..., start:start + m, :] = np.argsort(np.argsort(-block, axis=-2), axis=-2) < n
  return np.where(keep, w, 0).astype(dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_compressed_round_trip_is_bit_exact(dtype):
  with jax.enable_x64(dtype == np.float64):
    for shape in [(8, 6), (3, 3, 10, 4)]:  # Dense; conv with a partial last group
      for n in (1, 2):
        w = nm_sparse(shape, n, 4, dtype, seed=3)
        assert (np.count_nonzero(w) == n * (np.prod(shape) // shape[-2])
                * -(-shape[-2] // 4))
        # Groups with fewer than n nonzeros, one with a negative zero.
        w[..., 0:4, 0] = 0.0
        w[..., 1, 0] = -0.0
        c = st.compress_nm(w, n, 4)
        groups = -(-shape[-2] // 4)
        assert c.values.shape == shape[:-2] + (groups * n, shape[-1])
        assert c.values.dtype == dtype and c.indices.dtype == jnp.uint8
        assert c.shape == shape and (c.n, c.m) == (n, 4)
        back = np.asarray(st.decompress_nm(c))
        assert back.dtype == dtype
        np.testing.assert_array_equal(back.view(np.uint8), w.view(np.uint8))


def test_compress_and_decompress_under_jit():
  w = nm_sparse((3, 3, 8, 4), 2, 4, np.float32, seed=4)
  c = jax.jit(st.compress_nm, static_argnums=(1, 2))(w, 2, 4)  # the check is skipped
  assert isinstance(c, st.NMCompressed) and c.shape == w.shape
  np.testing.assert_array_equal(jax.jit(st.decompress_nm)(c), w)


def test_compressed_layout_by_hand():
  w = np.array([[0.0], [7.0], [0.0], [-2.0], [0.0], [3.0]], np.float32)  # 2:4, groups 0-3, 4-5
  c = st.compress_nm(w, 2, 4)
  np.testing.assert_array_equal(c.values[:, 0], [7.0, -2.0, 0.0, 3.0])
  np.testing.assert_array_equal(c.indices[:, 0], [1, 3, 0, 1])
  leaves = jax.tree.leaves(c)
  assert len(leaves) == 2  # shape, n, m are static


def test_compress_rejects_a_group_with_too_many_nonzeros():
  w = np.ones((4, 2), np.float32)
  with pytest.raises(ValueError, match="3 nonzeros|4 nonzeros"):
    st.compress_nm(w, 2, 4)
  with pytest.raises(ValueError, match="at least two axes"):
    st.compress_nm(np.ones(4), 2, 4)


def test_memory_of_a_784_by_300_kernel_at_2_to_4():
  c = st.compress_nm(nm_sparse((784, 300), 2, 4, np.float32, seed=5), 2, 4)
  mem = st.nm_memory(c)
  assert mem["dense_bytes"] == 784 * 300 * 4 == 940_800
  assert mem["values_bytes"] == 392 * 300 * 4 == 470_400
  assert mem["index_bits"] == 2
  assert mem["index_bytes"] == 117_600 * 2 // 8 == 29_400
  assert mem["compressed_bytes"] == 499_800
  assert mem["ratio"] == 499_800 / 940_800 == 0.53125
  # Against a float16 dense copy, and 1:8 (3-bit indices).
  assert st.nm_memory(c, jnp.float16)["dense_bytes"] == 470_400
  c = st.compress_nm(nm_sparse((16, 3), 1, 8, np.float32, seed=6), 1, 8)
  mem = st.nm_memory(c)
  assert (mem["index_bits"], mem["index_bytes"]) == (3, 3)  # 6 indices x 3 bits = 18 bits
