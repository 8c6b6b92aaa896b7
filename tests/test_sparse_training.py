"""Sparse training from the first step: RigL, SET, N:M, STE and SR-STE against hand values.

RigL's drop and grow counts and sets per leaf and under the global budget,
its cosine drop fraction, grown weights at exactly 0 with their Adam moments
reset and no optimiser step at an update, SET's regrowth uniform (a
chi-square test), N:M groups keeping exactly N, the straight-through
gradient (and SR-STE's decay) on every weight, vmapped seeds equal to single
ones (train step; the runner behind ``-m slow``), the optax wrapper with
RigL, and the config errors naming their field.
"""

from __future__ import annotations

import math
import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import common
from sparsejax import keys
from sparsejax import masks as masks_lib
from sparsejax import objectives
from sparsejax.fields import ConfigError
from sparsejax.runner import load_run, run
from sparsejax.runner.config import validate
from sparsejax.sparsity import algorithms, schedules, structures
from sparsejax.sparsity.algorithms import Budget
from sparsejax.train.losses import CLASSIFICATION
from sparsejax.train.sparse_optax import forward_params, masks_of, sparsify
from sparsejax.train.state import create_train_state
from sparsejax.train.step import make_train_step
from tests.conftest import data_path

UNIFORM = Budget("uniform")


class TinyNet(nn.Module):
  """Dense(8) -> relu -> Dense(3)."""
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    x = nn.relu(nn.Dense(8, dtype=self.dtype, param_dtype=self.dtype)(x))
    return nn.Dense(3, dtype=self.dtype, param_dtype=self.dtype)(x)


def batch(seed=0, n=32, d=5, dtype=jnp.float32):
  kx, ky = jax.random.split(jax.random.key(seed))
  return jax.random.normal(kx, (n, d), dtype), jax.random.randint(ky, (n,), 0, 3)


def two_kernels():
  """Kernels (8, 6) and (6, 4) with distinct magnitudes, and a bias that is never pruned."""
  rng = np.random.default_rng(0)
  values = rng.permutation(np.arange(1, 73)) / 72.0 * rng.choice([-1.0, 1.0], 72)
  return {"a": {"kernel": jnp.asarray(values[:48].reshape(8, 6), jnp.float32),
                "bias": jnp.asarray(rng.normal(size=6), jnp.float32)},
          "b": {"kernel": jnp.asarray(values[48:].reshape(6, 4), jnp.float32)}}


KERNELS = [("a", "kernel"), ("b", "kernel")]


def leaf(tree, path):
  return np.asarray(tree[path[0]][path[1]])


def cosine_fraction(alpha, end, t):
  """RigL's Eq. 1 by hand: 0.5 alpha (1 + cos(pi t / end)), 0 from end on."""
  return 0.5 * alpha * (1.0 + math.cos(math.pi * min(t, end) / end))


def drop_grow_reference(active, w, g, k):
  """RigL by hand on flat arrays: drop the k active entries of least |w|, grow the k of
  largest |g| among the rest (a just-dropped one included). Returns (new, dropped, grown)."""
  active_idx = np.flatnonzero(active)
  dropped = active_idx[np.argsort(np.abs(w[active_idx]), kind="stable")[:k]]
  keep = active.copy()
  keep[dropped] = False
  rest = np.flatnonzero(~keep)
  grown = rest[np.argsort(-np.abs(g[rest]), kind="stable")[:k]]
  new = keep.copy()
  new[grown] = True
  return new, set(dropped.tolist()), set(grown.tolist())


def adam_state(opt_state):
  (inner, *_) = opt_state
  assert isinstance(inner, optax.ScaleByAdamState)
  return inner


# --------------------------------------------------------------------------
# RigL: drop and grow by hand


@pytest.mark.parametrize("t", [0, 30, 50, 75, 100, 130])
def test_rigl_drops_and_grows_exact_counts_per_leaf_and_keeps_the_density(t):
  """Per leaf: round(f(t) n_active) lowest-|w| active entries dropped, as many highest-|g|
  inactive ones grown (f the cosine drop fraction by hand); kept counts unchanged."""
  params = two_kernels()
  alg = algorithms.rigl(0.5, start=10, end=100, frequency=10, budget=UNIFORM)
  masks = alg.init(jax.random.key(0), params, masks_lib.ones_like(params))
  assert masks["a"]["bias"] is None
  assert int(masks["a"]["kernel"].sum()) == 24 and int(masks["b"]["kernel"].sum()) == 12
  rng = np.random.default_rng(1)
  # Inactive entries get |g| in [1, 2), active ones in [1e-3, 2e-3): nothing dropped regrows.
  grads = masks_lib.map_masked(
      lambda m, p: jnp.ones_like(p) if m is None else jnp.asarray(
          np.where(m, 1e-3, 1.0) * rng.uniform(1.0, 2.0, p.shape), jnp.float32),
      masks, params)
  new = alg.update(t, jax.random.key(1), params, grads, masks)
  assert new["a"]["bias"] is None
  f = cosine_fraction(0.3, 100, t)
  # round(f * 24), round(f * 12); f = 0.3, 0.2382, 0.15, 0.0439, 0, 0 at t = 0, 30, ..., 130.
  expected_k = {0: (7, 4), 30: (6, 3), 50: (4, 2), 75: (1, 1), 100: (0, 0), 130: (0, 0)}[t]
  for path, k_hand in zip(KERNELS, expected_k):
    old, now = leaf(masks, path), leaf(new, path)
    k = round(f * old.sum())
    assert k == k_hand
    dropped, grown = old & ~now, now & ~old
    assert dropped.sum() == k and grown.sum() == k
    assert now.sum() == old.sum()  # the density is unchanged
    w, g = leaf(params, path).ravel(), leaf(grads, path).ravel()
    ref, ref_dropped, ref_grown = drop_grow_reference(old.ravel(), w, g, k)
    assert set(np.flatnonzero(dropped.ravel()).tolist()) == ref_dropped
    assert set(np.flatnonzero(grown.ravel()).tolist()) == ref_grown
    np.testing.assert_array_equal(now.ravel(), ref)
    if k:
      # The dropped are exactly the weakest active ones, the grown the strongest rest.
      assert np.abs(w[dropped.ravel()]).max() < np.abs(w[(old & now).ravel()]).min()
      assert np.abs(g[grown.ravel()]).min() > np.abs(g[(~old & ~now).ravel()]).max()


def test_rigl_regrows_a_just_dropped_connection_with_the_largest_gradient():
  """A dropped weight whose |g| is the largest is grown back: one fewer entry changes."""
  params = two_kernels()
  alg = algorithms.rigl(0.5, start=10, end=100, frequency=10, budget=UNIFORM)
  masks = alg.init(jax.random.key(0), params, masks_lib.ones_like(params))
  old = leaf(masks, ("a", "kernel"))
  w = leaf(params, ("a", "kernel"))
  weakest = np.unravel_index(np.argmin(np.where(old, np.abs(w), np.inf)), w.shape)
  g = np.where(old, 0.0, np.random.default_rng(2).uniform(1.0, 2.0, w.shape))
  g[weakest] = 10.0
  grads = {"a": {"kernel": jnp.asarray(g, jnp.float32), "bias": jnp.zeros(6)},
           "b": {"kernel": jnp.zeros((6, 4))}}
  new = leaf(alg.update(50, jax.random.key(1), params, grads, masks), ("a", "kernel"))
  k = round(cosine_fraction(0.3, 100, 50) * 24)  # 4
  assert new[weakest] and new.sum() == 24
  assert (old & ~new).sum() == k - 1 and (new & ~old).sum() == k - 1
  ref, _, _ = drop_grow_reference(old.ravel(), w.ravel(), g.ravel(), k)
  np.testing.assert_array_equal(new.ravel(), ref)


@pytest.mark.parametrize("with_bias", [False, True])
@pytest.mark.parametrize("t, k_hand", [(0, 11), (30, 9), (60, 4)])
def test_rigl_global_budget_drops_and_grows_over_all_leaves(t, k_hand, with_bias):
  """Global budget: round(f(t) * 36) weakest active entries over both kernels dropped, as
  many strongest-|g| others grown; the total count is unchanged, leaves may trade entries
  (with and without a never-pruned bias beside the kernels)."""
  params = two_kernels()
  if not with_bias:
    del params["a"]["bias"]
  alg = algorithms.rigl(0.5, start=10, end=100, frequency=10, budget=Budget("global"))
  masks = alg.init(jax.random.key(3), params, masks_lib.ones_like(params))
  old = np.concatenate([leaf(masks, p).ravel() for p in KERNELS])
  assert old.sum() == 36  # round(0.5 * 72) over both kernels
  rng = np.random.default_rng(4)
  g_flat = rng.permutation(np.arange(1, 73)) / 72.0  # distinct, a dropped one may regrow
  grads = {"a": {"kernel": jnp.asarray(g_flat[:48].reshape(8, 6), jnp.float32)},
           "b": {"kernel": jnp.asarray(g_flat[48:].reshape(6, 4), jnp.float32)}}
  if with_bias:
    grads["a"]["bias"] = jnp.zeros(6)
  new_tree = alg.update(t, jax.random.key(5), params, grads, masks)
  new = np.concatenate([leaf(new_tree, p).ravel() for p in KERNELS])
  k = round(cosine_fraction(0.3, 100, t) * 36)
  assert k == k_hand
  w = np.concatenate([leaf(params, p).ravel() for p in KERNELS])
  ref, _, _ = drop_grow_reference(old, w, g_flat, k)
  np.testing.assert_array_equal(new, ref)
  assert new.sum() == 36


# --------------------------------------------------------------------------
# The drop fraction


def test_drop_fraction_cosine_and_constant_by_hand():
  """f(t) = 0.15 (1 + cos(pi t / 200)): 0.3 at 0, 0.15 at end/2, 0 at end and beyond;
  0.256066 at end/4; "constant" gives alpha at every step."""
  end = 200
  hand = {0: 0.3, 50: 0.15 * (1 + math.sqrt(0.5)), 100: 0.15, 200: 0.0, 350: 0.0}
  for t, value in hand.items():
    assert float(schedules.drop_fraction_at(0.3, "cosine", end, t)) == pytest.approx(
        value, abs=1e-7)
  assert hand[50] == pytest.approx(0.2560660, abs=1e-7)
  for t in (0, 100, 200, 350):
    assert float(schedules.drop_fraction_at(0.3, "constant", end, t)) == pytest.approx(0.3)
  traced = jax.jit(lambda t: schedules.drop_fraction_at(0.3, "cosine", end, t))
  assert float(traced(100)) == pytest.approx(0.15, abs=1e-7)


# --------------------------------------------------------------------------
# SET: uniform regrowth


#: The 0.999 quantile of chi-square with 13 degrees of freedom, hard-coded from the
#: tables (scipy.stats.chi2.ppf(0.999, 13) = 34.5282; scipy is not a dependency).
CHI2_13_0999 = 34.528


def test_set_regrows_uniformly_over_the_free_positions():
  """20000 independent SET updates (vmapped keys) on one (4, 5) leaf with 8 active entries:
  the 2 weakest are always dropped, and the 2 grown ones are uniform over the 14 free
  positions (12 inactive + the 2 dropped): chi-square below its 0.999 quantile."""
  active = np.zeros(20, bool)
  active[[0, 3, 5, 7, 11, 12, 16, 19]] = True
  w = np.linspace(0.1, 2.0, 20)  # the weakest active ones: 0 and 3
  params = {"l": {"kernel": jnp.asarray(w.reshape(4, 5), jnp.float32)}}
  masks = {"l": {"kernel": jnp.asarray(active.reshape(4, 5))}}
  grads = jax.tree.map(jnp.zeros_like, params)
  alg = algorithms.evolutionary(0.4, start=0, end=100, frequency=1, drop_fraction=0.25,
                                drop_decay="constant", budget=UNIFORM)
  n = 20_000
  new = jax.jit(jax.vmap(lambda key: alg.update(10, key, params, grads, masks)["l"]["kernel"]))(
      jax.random.split(jax.random.key(0), n))
  new = np.asarray(new).reshape(n, 20)
  kept = active.copy()
  kept[[0, 3]] = False
  k, free = 2, np.flatnonzero(~kept)  # round(0.25 * 8) = 2 grown among 14
  assert np.all(new[:, kept])  # the 6 strongest active entries always stay
  assert np.all(new.sum(axis=1) == 8)
  counts = new[:, free].sum(axis=0)
  assert counts.sum() == n * k
  n_free = free.size
  expected = n * k / n_free
  # A uniform k-subset makes the counts' Pearson statistic (F - k)/(F - 1) chi2(F - 1)
  # (the draws within one update are without replacement): rescaled to chi2(F - 1).
  statistic = np.sum((counts - expected) ** 2 / expected) * (n_free - 1) / (n_free - k)
  assert n_free - 1 == 13
  assert statistic < CHI2_13_0999, (statistic, counts)
  # Sanity of the test itself: always growing the first free positions would fail it.
  biased = np.zeros(n_free)
  biased[:k] = n
  assert np.sum((biased - expected) ** 2 / expected) > CHI2_13_0999


# --------------------------------------------------------------------------
# N:M


def groups_of(mask, m=4):
  """(..., L, O) -> (..., L/m, m, O): groups of m consecutive entries along axis -2."""
  mask = np.asarray(mask)
  return mask.reshape(mask.shape[:-2] + (mask.shape[-2] // m, m, mask.shape[-1]))


def nm_params(seed=0):
  rng = np.random.default_rng(seed)
  return {"Dense_0": {"kernel": jnp.asarray(rng.normal(size=(16, 8)), jnp.float32),
                      "bias": jnp.asarray(rng.normal(size=8), jnp.float32)},
          "Conv_0": {"kernel": jnp.asarray(rng.normal(size=(3, 3, 8, 4)), jnp.float32)}}


NM_PATHS = [("Dense_0", "kernel"), ("Conv_0", "kernel")]


def test_n_by_m_pruning_keeps_the_two_largest_of_every_four():
  """One-shot 2:4 magnitude pruning of a (16, 8) Dense and a (3, 3, 8, 4) conv kernel:
  every group of 4 along axis -2 keeps exactly 2, its two largest |w|."""
  params = nm_params()
  alg = algorithms.pruning(schedules.one_shot(0.5, 0), structure=structures.NByM(2, 4),
                           budget=UNIFORM)
  assert bool(alg.is_update_step(0)) and not bool(alg.is_update_step(1))
  grads = jax.tree.map(jnp.ones_like, params)
  new = alg.update(0, jax.random.key(0), params, grads, masks_lib.ones_like(params))
  assert new["Dense_0"]["bias"] is None
  for path in NM_PATHS:
    g = groups_of(leaf(new, path))
    np.testing.assert_array_equal(g.sum(axis=-2), 2)
    w = groups_of(np.abs(leaf(params, path)))
    second = np.sort(w, axis=-2)[..., -2:-1, :]  # the second largest of each group
    np.testing.assert_array_equal(g, w >= second)


def nm_drop_grow_reference(active, w, g, k, n=2, m=4):
  """RigL under N:M by hand: drop the k weakest active entries of the leaf, then refill
  each group to n by |g| among its entries not kept."""
  active = np.asarray(active)
  flat = np.flatnonzero(active.ravel())
  keep = active.ravel().copy()
  keep[flat[np.argsort(np.abs(w.ravel()[flat]), kind="stable")[:k]]] = False
  keep = groups_of(keep.reshape(active.shape), m).copy()
  score = groups_of(np.abs(g), m)
  it = np.nditer(np.zeros(keep.shape[:-2] + keep.shape[-1:]), flags=["multi_index"])
  for _ in it:
    *lead, o = it.multi_index
    group, s = keep[(*lead, slice(None), o)], score[(*lead, slice(None), o)]
    deficit = n - group.sum()
    order = [i for i in np.argsort(-s, kind="stable") if not group[i]]
    for i in order[:deficit]:
      group[i] = True
    keep[(*lead, slice(None), o)] = group
  return keep.reshape(active.shape)


@pytest.mark.slow  # 7 s or more on 2 cores: the default suite stays under 10 minutes
def test_rigl_with_n_by_m_keeps_exactly_two_of_four_after_drop_and_grow():
  """RigL under 2:4: the random start and the masks after a drop-and-grow update both have
  exactly 2 of every 4; the update drops the k weakest active entries of each leaf and
  refills every group by |g| (a hand reference)."""
  params = nm_params(1)
  alg = algorithms.rigl(0.5, start=0, end=100, frequency=1, budget=UNIFORM,
                        structure=structures.NByM(2, 4))
  masks = alg.init(jax.random.key(0), params, masks_lib.ones_like(params))
  for path in NM_PATHS:
    np.testing.assert_array_equal(groups_of(leaf(masks, path)).sum(axis=-2), 2)
  rng = np.random.default_rng(2)
  grads = jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape), jnp.float32), params)
  new = alg.update(30, jax.random.key(1), params, grads, masks)
  f = cosine_fraction(0.3, 100, 30)
  for path in NM_PATHS:
    now, old = leaf(new, path), leaf(masks, path)
    np.testing.assert_array_equal(groups_of(now).sum(axis=-2), 2)
    assert (now != old).any()  # the update changed the masks
    k = round(f * old.sum())  # Dense: round(0.238 * 64) = 15; conv: round(0.238 * 144) = 34
    ref = nm_drop_grow_reference(old, leaf(params, path), leaf(grads, path), k)
    np.testing.assert_array_equal(now, ref)


# --------------------------------------------------------------------------
# RigL inside the train step: grown weights, moments, skipped step


def test_rigl_step_grows_at_zero_resets_adam_moments_and_skips_the_optimiser():
  """make_train_step with RigL and Adam: at the update step the grown entries are exactly 0
  with mu = nu = 0, the optimiser takes no step (kept weights, the bias, the other
  moments and Adam's count unchanged), and the density stays; between updates the masks
  do not change and the weights move."""
  model, (x, y) = TinyNet(), batch()
  opt = optax.adam(1e-2)
  alg = algorithms.rigl(0.5, start=2, end=100, frequency=2, budget=UNIFORM)
  state = create_train_state(jax.random.key(0), model, x, objectives.plain(), opt)
  masks = alg.init(jax.random.key(1), state.params, state.masks)
  inner = adam_state(state.opt_state)
  # Nonzero moments everywhere, so that a reset is visible (masked gradients alone
  # would leave the moments of never-active entries at 0).
  inner = inner._replace(mu=jax.tree.map(jnp.ones_like, inner.mu),
                         nu=jax.tree.map(jnp.ones_like, inner.nu))
  state = state._replace(masks=masks, params=masks_lib.apply(masks, state.params),
                         opt_state=(inner, *state.opt_state[1:]))
  step = make_train_step(model, CLASSIFICATION, objectives.plain(), opt, sparse=alg, jit=True)
  counts = {name: int(masks[name]["kernel"].sum()) for name in ("Dense_0", "Dense_1")}
  assert counts == {"Dense_0": 20, "Dense_1": 12}  # round(0.5 * 40), round(0.5 * 24)
  with pytest.raises(ValueError, match="clock"):
    step(state, (x, y), jax.random.key(2))
  for clock in range(5):
    new, _ = step(state, (x, y), jax.random.key(10 + clock), clock)
    updating = bool(alg.is_update_step(clock))
    assert updating == (clock in (2, 4))
    before, after = adam_state(state.opt_state), adam_state(new.opt_state)
    old_mu, old_nu = before.mu["params"], before.nu["params"]
    new_mu, new_nu = after.mu["params"], after.nu["params"]
    total_grown = 0
    for name in ("Dense_0", "Dense_1"):
      m0, m1 = np.asarray(state.masks[name]["kernel"]), np.asarray(new.masks[name]["kernel"])
      p0, p1 = np.asarray(state.params[name]["kernel"]), np.asarray(new.params[name]["kernel"])
      assert m1.sum() == counts[name]
      np.testing.assert_array_equal(p1[~m1], 0.0)  # pruned entries are exactly 0
      if not updating:
        np.testing.assert_array_equal(m1, m0)
        assert np.all(p1[m1] != p0[m1])  # Adam moved every active weight
        continue
      grown = m1 & ~m0
      total_grown += grown.sum()
      np.testing.assert_array_equal(p1[grown], 0.0)
      np.testing.assert_array_equal(p1[m0 & m1], p0[m0 & m1])  # no optimiser step
      np.testing.assert_array_equal(new.params[name]["bias"], state.params[name]["bias"])
      for old_t, new_t in ((old_mu, new_mu), (old_nu, new_nu)):
        o, n = np.asarray(old_t[name]["kernel"]), np.asarray(new_t[name]["kernel"])
        assert np.all(o[grown] != 0)  # the reset is visible
        np.testing.assert_array_equal(n[grown], 0.0)
        np.testing.assert_array_equal(n[~grown], o[~grown])
        np.testing.assert_array_equal(new_t[name]["bias"], old_t[name]["bias"])
    if updating:
      assert total_grown > 0
      assert int(after.count) == int(before.count)
    else:
      assert int(after.count) == int(before.count) + 1
    assert int(new.step) == int(state.step) + 1
    state = new


# --------------------------------------------------------------------------
# Straight-through estimators


def cross_entropy_at(model, x, y):
  def loss(p):
    return optax.softmax_cross_entropy_with_integer_labels(model.apply({"params": p}, x), y).mean()
  return loss


def magnitude_top_half(params):
  """Per kernel, the round(0.5 n) largest |w| (no ties among random floats)."""
  out = {}
  for name, sub in params.items():
    w = np.abs(np.asarray(sub["kernel"])).ravel()
    keep = np.zeros(w.size, bool)
    keep[np.argsort(-w)[:round(0.5 * w.size)]] = True
    out[name] = keep.reshape(sub["kernel"].shape)
  return out


@pytest.mark.parametrize("decay", [0.0, 0.1])
def test_ste_passes_the_dense_gradient_and_sr_ste_decays_the_pruned(decay):
  """One SGD step with STE (decay 0) or SR-STE (decay 0.1): every weight, pruned ones
  included, moves by -lr g with g the gradient at the masked weights (jax.grad here),
  plus -lr decay theta on the entries the step's masks prune; the weights stay dense and
  the next step's masks are the top half of the updated |theta| per kernel (float64)."""
  lr = 0.5
  with jax.enable_x64(True):
    model, (x, y) = TinyNet(jnp.float64), batch(dtype=jnp.float64)
    opt = optax.sgd(lr)
    schedule = schedules.periodic(0.5, start=0, end=100, frequency=1)
    alg = (algorithms.sr_ste(schedule, decay=decay, budget=UNIFORM) if decay
           else algorithms.ste(schedule, budget=UNIFORM))
    assert alg.straight_through and alg.decay == decay
    state = create_train_state(jax.random.key(0), model, x, objectives.plain(), opt)
    masks = algorithms.random_masks(jax.random.key(1), state.masks, 0.5, budget=UNIFORM)
    state = state._replace(masks=masks)  # dense weights, random masks
    step = make_train_step(model, CLASSIFICATION, objectives.plain(), opt, sparse=alg, jit=True)
    new, metrics = step(state, (x, y), jax.random.key(2), 0)
    masked = masks_lib.apply(masks, state.params)
    loss = cross_entropy_at(model, x, y)
    value, grads = jax.value_and_grad(loss)(masked)
  assert float(metrics["loss"]) == pytest.approx(float(value), rel=1e-12)
  expected_masks = magnitude_top_half(new.params)
  for name in ("Dense_0", "Dense_1"):
    np.testing.assert_array_equal(np.asarray(new.masks[name]["kernel"]), expected_masks[name])
    m = np.asarray(masks[name]["kernel"])
    theta = np.asarray(state.params[name]["kernel"])
    g = np.asarray(grads[name]["kernel"])
    assert np.any(g[~m] != 0)  # pruned entries get a gradient
    change = np.asarray(new.params[name]["kernel"]) - theta
    np.testing.assert_allclose(change, -lr * (g + decay * np.where(m, 0.0, theta)),
                               rtol=1e-10, atol=1e-14)
    assert np.all(np.asarray(new.params[name]["kernel"])[~m] != 0)  # not zeroed: dense
    bias_change = np.asarray(new.params[name]["bias"]) - np.asarray(state.params[name]["bias"])
    np.testing.assert_allclose(bias_change,
                               -lr * np.asarray(grads[name]["bias"]), rtol=1e-10, atol=1e-14)


# --------------------------------------------------------------------------
# Seeds: vmapped equals single


@pytest.mark.slow  # 7 s or more on 2 cores: the default suite stays under 10 minutes
def test_vmapped_rigl_steps_over_four_seeds_equal_the_single_steps():
  """jax.vmap of the jitted RigL step over 4 seeds' states, batches and keys (the clock
  shared) equals the 4 separate calls: masks exactly, weights to 1e-12 (float64), through
  two drop-and-grow updates."""
  with jax.enable_x64(True):
    model = TinyNet(jnp.float64)
    opt = optax.adam(1e-2)
    alg = algorithms.rigl(0.5, start=2, end=100, frequency=2, budget=UNIFORM)
    step = make_train_step(model, CLASSIFICATION, objectives.plain(), opt, sparse=alg, jit=True)
    states, batches = [], []
    for s in range(4):
      xb, yb = batch(seed=s, dtype=jnp.float64)
      state = create_train_state(jax.random.key(s), model, xb, objectives.plain(), opt)
      m = alg.init(jax.random.key(100 + s), state.params, state.masks)
      states.append(state._replace(masks=m, params=masks_lib.apply(m, state.params)))
      batches.append((xb, yb))
    start = states
    stack = lambda trees: jax.tree.map(lambda *a: jnp.stack(a), *trees)
    stacked, stacked_batch = stack(states), stack(batches)
    vstep = jax.vmap(step, in_axes=(0, 0, 0, None))
    for clock in range(5):
      step_keys = [jax.random.fold_in(jax.random.key(50 + s), clock) for s in range(4)]
      states = [step(st, b, k, clock)[0] for st, b, k in zip(states, batches, step_keys)]
      stacked, _ = vstep(stacked, stacked_batch, jnp.stack(step_keys), clock)
    # To NumPy inside the float64 context (a JAX op outside it would truncate).
    start, states, stacked = jax.tree.map(np.asarray, (start, states, stacked))
  changed = False
  for s in range(4):
    single = states[s]
    one = jax.tree.map(lambda a: a[s], stacked)
    for a, b in zip(jax.tree.leaves(single.masks), jax.tree.leaves(one.masks)):
      np.testing.assert_array_equal(a, b)
    for a, b in zip(jax.tree.leaves(single.params), jax.tree.leaves(one.params)):
      np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)
    for a, b in zip(jax.tree.leaves(single.opt_state), jax.tree.leaves(one.opt_state)):
      np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)
    changed |= any(bool(np.any(a != b)) for a, b in zip(jax.tree.leaves(start[s].masks),
                                                         jax.tree.leaves(single.masks)))
  assert changed  # the updates changed the masks


def small_rigl_config(**fields):
  config = common.sparse_training("rigl", "lenet_300_100", epochs=1, name="lenet300")
  config.manual_dir = str(data_path("mnist"))
  config.train_set_size, config.val_set_size, config.test_set_size = 600, 200, 200
  # 6 steps of 100 images: updates at steps 2 and 4 = T_end (where f(T_end) = 0 drops none).
  config.sparse.frequency = 2
  config.sparse.distribution = "uniform"
  config.dtype = "float64"
  config.quiet = True
  common.set_fields(config, fields)
  return config


@pytest.mark.slow
def test_runner_four_vmapped_rigl_seeds_equal_the_four_single_runs(tmp_path):
  """The runner: a 4-seed vmapped RigL run (float64, LeNet-300-100, 600 MNIST images,
  one epoch, a drop-and-grow update at step 2) gives each seed's single run: the same
  run ids, kept counts, accuracies and losses to 1e-10."""
  vmapped = run(small_rigl_config(seeds=4), tmp_path / "sweep")
  assert len(vmapped) == 4
  for s, row in enumerate(vmapped):
    single = run(small_rigl_config(seed=42 + s), tmp_path / f"seed{s}")[0]
    assert single["run_id"] == row["run_id"]
    # Uniform 10 %: round(0.1 * 235200) + round(0.1 * 30000) + round(0.1 * 1000).
    assert single["sparse_kept"] == row["sparse_kept"] == 23520 + 3000 + 100
    for column in ("final_test_accuracy", "final_val_accuracy", "final_train_accuracy"):
      assert single[column] == row[column], column
    for column in ("final_test_loss", "final_val_loss", "final_train_loss"):
      assert abs(single[column] - row[column]) <= 1e-10, column


@pytest.mark.slow
def test_runner_rigl_run_keeps_each_layers_count_and_changes_its_masks(tmp_path):
  """One RigL run of the runner (600 MNIST images, one epoch, uniform 10 %): each kernel
  keeps exactly round(0.1 n), its pruned weights are exactly 0, and its final masks
  differ from the random start (drawn from the seed's 'sparse' stream) by as many
  grown as dropped entries."""
  config = small_rigl_config(dtype="float32")
  row = run(config, tmp_path)[0]
  assert row["status"] == "finished" and row["sparse_kept"] == 26620
  assert row["sparse_density"] == pytest.approx(26620 / 266200)
  loaded = load_run(tmp_path, row["run_id"])
  final_masks, params = loaded.state.masks, loaded.state.params
  alg = algorithms.rigl(0.1, start=2, end=4, frequency=2, budget=UNIFORM)
  start = alg.init(keys.stream_key(config.seed, "sparse"), params,
                   masks_lib.ones_like(params))
  changed = 0
  for path, m in jax.tree_util.tree_flatten_with_path(final_masks)[0]:
    name = masks_lib.path_str(path)
    m = np.asarray(m)
    assert m.sum() == round(0.1 * m.size), name
    p = np.asarray(params[name.split("/")[0]]["kernel"])
    np.testing.assert_array_equal(p[~m], 0.0)
    m0 = np.asarray(start[name.split("/")[0]]["kernel"])
    assert (m & ~m0).sum() == (m0 & ~m).sum()
    changed += (m != m0).sum()
  assert changed > 0


# --------------------------------------------------------------------------
# The optax wrapper


def test_sparsify_with_rigl_keeps_the_density_and_exact_zeros():
  """sparsify(adam, rigl) in a plain loop: per-kernel counts constant at round(0.5 n), the
  pruned weights exactly 0 after every update, grown weights 0 after an update step, the
  masks changing only at the update steps (1, 3, 5, 7) and the bias dense."""
  model, (x, y) = TinyNet(), batch()
  params = model.init(jax.random.key(0), x)["params"]
  alg = algorithms.rigl(0.5, start=1, end=20, frequency=2, budget=UNIFORM)
  tx = sparsify(optax.adam(1e-2), alg, key=jax.random.key(3))
  opt_state = tx.init(params)
  assert masks_of(opt_state)["Dense_0"]["bias"] is None
  loss = jax.jit(jax.grad(cross_entropy_at(model, x, y)))
  update = jax.jit(tx.update)
  changes = []
  for count in range(8):
    old = masks_of(opt_state)
    updates, opt_state = update(loss(params), opt_state, params)
    new_params = optax.apply_updates(params, updates)
    new = masks_of(opt_state)
    changed = False
    for name, n in (("Dense_0", 40), ("Dense_1", 24)):
      m0, m1 = np.asarray(old[name]["kernel"]), np.asarray(new[name]["kernel"])
      p1 = np.asarray(new_params[name]["kernel"])
      assert m1.sum() == n // 2
      np.testing.assert_array_equal(p1[~m1], 0.0)
      if count in (1, 3, 5, 7):
        np.testing.assert_array_equal(p1[m1 & ~m0], 0.0)  # grown at exactly 0
      changed |= bool((m0 != m1).any())
    assert np.all(np.asarray(new_params["Dense_0"]["bias"]) != 0)
    changes.append(changed)
    params = new_params
  assert not any(changes[0::2])  # steps 0, 2, 4, 6: no update
  assert all(changes[1::2])      # steps 1, 3, 5, 7: drop and grow


def test_sparsify_with_sr_ste_keeps_dense_weights_and_two_of_four():
  """sparsify(sgd, sr_ste 2:4) in a plain loop, the gradient taken at forward_params:
  the masks start as 2:4 of the initial |theta| and after each update are 2:4 of the
  updated |theta| (every group of 4 inputs keeps 2), the weights stay dense, and each
  update is -lr (g + decay theta) with the decay on the entries the step's masks prune."""
  lr, decay = 0.1, 0.05
  with jax.enable_x64(True):
    model, (x, y) = TinyNet(jnp.float64), batch(d=8, dtype=jnp.float64)
    params = model.init(jax.random.key(0), x)["params"]
    alg = algorithms.sr_ste(schedules.periodic(0.5, start=0, end=50, frequency=1), decay=decay,
                            budget=UNIFORM, structure=structures.NByM(2, 4))
    tx = sparsify(optax.sgd(lr), alg)
    opt_state = tx.init(params)
    grad = jax.grad(cross_entropy_at(model, x, y))

    def two_of_four(p):
      top = np.argsort(-np.abs(p).reshape(p.shape[0] // 4, 4, p.shape[1]), axis=1, kind="stable")
      keep = np.zeros((p.shape[0] // 4, 4, p.shape[1]), bool)
      np.put_along_axis(keep, top[:, :2], True, axis=1)
      return keep.reshape(p.shape)

    for _ in range(3):
      masks = masks_of(opt_state)
      kernel = np.asarray(params["Dense_0"]["kernel"])
      np.testing.assert_array_equal(np.asarray(masks["Dense_0"]["kernel"]), two_of_four(kernel))
      g = grad(forward_params(opt_state, params))
      updates, opt_state = tx.update(g, opt_state, params)
      m = np.asarray(masks["Dense_0"]["kernel"])
      expected = -lr * (np.asarray(g["Dense_0"]["kernel"]) + decay * np.where(m, 0.0, kernel))
      np.testing.assert_allclose(np.asarray(updates["Dense_0"]["kernel"]), expected,
                                 rtol=1e-10, atol=1e-14)
      params = optax.apply_updates(params, updates)
      assert np.all(np.asarray(params["Dense_0"]["kernel"]) != 0)  # dense weights


@pytest.mark.parametrize("structure", [structures.Block(2, 2), structures.Channel()],
                         ids=["block2x2", "channel"])
def test_rigl_with_blocks_and_channels_drops_and_grows_whole_units(structure):
  """RigL over blocks (2 x 2) or channels (output units) of an (8, 6) kernel: the masks
  start and stay unit-uniform (every block / column all kept or all pruned), the kept
  unit count is unchanged by the update, and the update changes some units."""
  params = {"k": {"kernel": jax.random.normal(jax.random.key(0), (8, 6))}}
  alg = algorithms.rigl(0.5, start=1, end=100, frequency=1, budget=UNIFORM, structure=structure,
                        drop_fraction=0.5)
  masks = alg.init(jax.random.key(2), params, masks_lib.ones_like(params))
  # The largest gradients on the pruned units: RigL grows there.
  grads = {"k": {"kernel": jnp.where(masks["k"]["kernel"], 0.1, 1.0)}}
  new = alg.update(1, jax.random.key(3), masks_lib.apply(masks, params), grads, masks)

  def units(m):
    m = np.asarray(m["k"]["kernel"])
    if isinstance(structure, structures.Block):
      blocks = m.reshape(4, 2, 3, 2).transpose(0, 2, 1, 3).reshape(12, 4)
      assert np.all(blocks.all(axis=1) | ~blocks.any(axis=1))  # whole blocks
      return blocks[:, 0]
    assert np.all(m.all(axis=0) | ~m.any(axis=0))  # whole columns
    return m[0]

  before, after = units(masks), units(new)
  assert before.sum() == after.sum() == round(0.5 * before.size)
  assert np.any(before != after)


# --------------------------------------------------------------------------
# Config errors


@pytest.mark.parametrize("method, fields, named", [
    ("rigl", {"sparse.distribution": "foo"}, "sparse.distribution"),
    ("rigl", {"sparse.structure": "3:2"}, "sparse.structure"),
    ("rigl", {"sparse.structure": "2:4", "pruning.density": 0.1}, "pruning.density"),
    ("rigl", {"sparse.overrides": ("nonsense",)}, "sparse.overrides"),
    ("rigl", {"sparse.sr_ste_decay": 1e-3}, "sparse.sr_ste_decay"),
    ("static", {"sparse.frequency": 50}, "sparse.frequency"),
    ("gmp", {"sparse.drop_fraction": 0.5}, "sparse.drop_fraction"),
    ("snip", {"sparse.end_fraction": 0.5}, "sparse.end_fraction"),
    ("set", {"sparse.distribution": "global", "sparse.structure": "2:4",
             "pruning.density": 0.5}, "sparse.distribution"),
    ("rigl", {"sparse.drop_decay": "linear"}, "sparse.drop_decay"),
])
def test_bad_sparse_fields_are_named(method, fields, named):
  """Each bad value raises ConfigError naming its field; the config is valid without it."""
  config = common.sparse_training(method, "lenet_300_100", epochs=1, name="lenet300")
  validate(config)
  common.set_fields(config, fields)
  with pytest.raises(ConfigError, match=re.escape(f"'{named}'")):
    validate(config)


# --------------------------------------------------------------------------
# The epoch loop


@pytest.mark.parametrize("kind", ["rigl", "static", pytest.param("gmp", marks=pytest.mark.slow),
                                  pytest.param("ste", marks=pytest.mark.slow)])
def test_segmented_epoch_equals_the_epoch_of_conditional_steps(kind):
  """make_epoch_fn with update_steps (plain-step loops between the update steps) gives the
  states of the scan whose every step decides under lax.cond, in epochs 0 and 1 (updates
  at different positions), bit for bit; the metric means agree to rounding."""
  from functools import partial
  from sparsejax.train import loop
  from sparsejax.train.step import updates_masks
  model = TinyNet()
  x, y = batch(n=96)
  opt = optax.adam(1e-2)
  alg = {"rigl": algorithms.rigl(0.5, start=3, end=20, frequency=3, budget=UNIFORM),
         "static": algorithms.static(0.5, budget=UNIFORM),
         "gmp": algorithms.magnitude(schedules.gradual(0.3, start=1, end=15, frequency=4),
                                     budget=UNIFORM),
         "ste": algorithms.ste(schedules.periodic(0.5, start=0, end=40, frequency=2),
                               budget=UNIFORM)}[kind]
  step = make_train_step(model, CLASSIFICATION, objectives.plain(), opt, jit=False, sparse=alg)
  state = create_train_state(jax.random.key(0), model, x, objectives.plain(), opt)
  masks = alg.init(jax.random.key(1), state.params, state.masks)
  state = state._replace(masks=masks, params=masks_lib.apply(masks, state.params))
  scanned = jax.jit(loop.make_epoch_fn(step, 8, jit=False))
  segmented = jax.jit(loop.make_epoch_fn(step, 8, jit=False,
                                         update_steps=partial(updates_masks, alg)))
  a = b = state
  for epoch in range(2):
    a, metrics_a = scanned(a, (x, y), jax.random.key(10 + epoch), epoch)
    b, metrics_b = segmented(b, (x, y), jax.random.key(10 + epoch), epoch)
    for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
      np.testing.assert_array_equal(np.asarray(u), np.asarray(v))
    for name in metrics_a:
      np.testing.assert_allclose(metrics_a[name], metrics_b[name], rtol=1e-5, atol=1e-7)
  changed = not all(np.array_equal(m0, m1) for m0, m1 in
                    zip(jax.tree.leaves(state.masks), jax.tree.leaves(a.masks)))
  assert changed == (kind != "static")


def test_rigl_and_ste_steps_train_an_nnx_model():
  """A user's NNX module (a class taking rngs) through make_train_step with RigL and STE:
  RigL keeps each kernel's count and its pruned weights at 0 across an update step; STE
  keeps dense weights and the 2:4 masks of the updated kernel."""
  from flax import nnx

  class Net(nnx.Module):
    def __init__(self, rngs):
      self.hidden = nnx.Linear(8, 12, rngs=rngs)
      self.out = nnx.Linear(12, 3, rngs=rngs)

    def __call__(self, x):
      return self.out(nnx.relu(self.hidden(x)))

  x, y = batch(d=8)
  opt = optax.adam(1e-2)
  model = Net  # the class: each key initialises anew
  for alg in (algorithms.rigl(0.5, start=1, end=10, frequency=1, budget=UNIFORM),
              algorithms.ste(schedules.periodic(0.5, start=0, end=10, frequency=1),
                             budget=UNIFORM, structure=structures.NByM(2, 4))):
    state = create_train_state(jax.random.key(0), model, x, objectives.plain(), opt)
    masks = alg.init(jax.random.key(1), state.params, state.masks)
    dense = state.params if alg.straight_through else masks_lib.apply(masks, state.params)
    state = state._replace(masks=masks, params=dense)
    step = make_train_step(model, CLASSIFICATION, objectives.plain(), opt, sparse=alg)
    before = state.masks
    for clock in range(3):
      state, _ = step(state, (x, y), jax.random.key(10 + clock), clock)
    kernels = [(m, p) for m, p in zip(jax.tree.leaves(state.masks), jax.tree.leaves(
        masks_lib.map_masked(lambda m, p: None if m is None else p, state.masks, state.params)))]
    assert len(kernels) == 2
    for (m, p), m0 in zip(kernels, jax.tree.leaves(before)):
      m, p = np.asarray(m), np.asarray(p)
      assert m.sum() == m.size // 2 == np.asarray(m0).sum()
      if alg.straight_through:
        assert np.all(p != 0)  # dense weights
        groups = m.reshape(m.shape[0] // 4, 4, m.shape[1])
        assert np.all(groups.sum(axis=1) == 2)
      else:
        np.testing.assert_array_equal(p[~m], 0.0)
    if not alg.straight_through:
      assert any(np.any(np.asarray(a) != np.asarray(b)) for a, b in
                 zip(jax.tree.leaves(before), jax.tree.leaves(state.masks)))
