"""The simulated-annealing mask search: moves, schedules, acceptance, vmapped chains."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from sparsejax.pruning import annealing
from sparsejax.train import driver, sharding


@pytest.mark.parametrize("n", [1, 7, 30, 200])
def test_the_swap_move_keeps_the_sparsity_at_hamming_distance_2n(n):
  mask = annealing.random_mask(jax.random.key(0), 100, 70)
  assert int(mask.sum()) == 30
  for i in range(5):
    moved = annealing.swap_move(jax.random.key(i), mask, n)
    assert int(moved.sum()) == 30
    # Both sides are cut to the smaller pool (30 ones here).
    assert int(jnp.sum(moved ^ mask)) == 2 * min(n, 30)


def test_the_sawtooth_resets_where_the_reference_does():
  sizes = annealing.neighbourhood_sizes(480, 600)
  assert sizes[0] == 480 and sizes[1] == 475
  resets = [level for level in range(1, 600) if sizes[level] > sizes[level - 1]]
  assert resets[:4] == [62, 121, 177, 228]
  assert [int(sizes[level]) for level in resets[:4]] == [360, 270, 202, 151]
  assert sizes.min() == 1


def test_level_schedules_match_the_reference_counts():
  iterations, temperatures = annealing.level_schedule(annealing.CNN_SCHEDULE)
  assert len(iterations) == 1000 and int(iterations.sum()) == 8219
  assert iterations[0] == 2 and iterations.max() == 10
  assert temperatures[0] == pytest.approx(0.005)
  assert temperatures[-1] == pytest.approx(0.005 * 0.995 ** 999, rel=1e-4)  # about 3.3e-5
  iterations, temperatures = annealing.level_schedule(annealing.MLP_SCHEDULE)
  assert int(iterations.sum()) == 100_000 and iterations.max() == 50
  assert 2590 <= len(iterations) <= 2600          # "about 2,596 levels"
  assert temperatures[1] / temperatures[0] == pytest.approx(0.999)


def test_acceptance_rule():
  key = jax.random.key(0)
  assert bool(annealing.accept(key, 60.0, 61.0, 1e-9))      # better: always
  assert bool(annealing.accept(key, 60.0, 60.0, 1e-9))      # ties: always
  assert not bool(annealing.accept(key, 60.0, 59.0, 1e-9))  # worse at T -> 0: never
  # A 0.5-point drop at T0 = 0.005 is accepted with probability e^-1.
  keys = jax.random.split(jax.random.key(1), 20_000)
  rate = jnp.mean(jax.vmap(lambda k: annealing.accept(k, 60.0, 59.5, 0.005))(keys))
  assert float(rate) == pytest.approx(np.exp(-1), abs=0.01)


def tiny(levels=1, iterations=3, t0=1e-6):
  return annealing.Schedule(t0=t0, t_decay=1.0, levels=levels, iters_start=iterations,
                            iters_growth=1.0, iters_cap=iterations, tabu_size=4)


def test_the_running_mean_starts_at_5_and_averages_the_accepted():
  # Every candidate scores 50 > 5: the first is accepted outright, the rest are ties.
  result = annealing.anneal(lambda m: jnp.asarray(50.0), jax.random.key(0), 20, 0.5, tiny())
  assert int(result.accepted) == 3 and int(result.evaluations) == 3
  assert float(result.best_mean) == 50.0
  # Every candidate scores 3 < 5: at T ~ 0 nothing is accepted; the start mask stays.
  start = annealing.random_mask(jax.random.split(jax.random.key(0))[0], 20, 10)
  result = annealing.anneal(lambda m: jnp.asarray(3.0), jax.random.key(0), 20, 0.5, tiny())
  assert int(result.accepted) == 0 and float(result.level_means[0]) == 5.0
  np.testing.assert_array_equal(result.mask, start)


@pytest.mark.slow  # 7 s or more on 2 cores: the default suite stays under 10 minutes
def test_the_search_finds_a_planted_mask():
  target = annealing.random_mask(jax.random.key(9), 40, 20)

  def evaluate(mask):  # accuracy % = overlap with the planted mask
    return 100.0 * jnp.sum(mask & target) / 20
  schedule = annealing.Schedule(t0=0.05, t_decay=0.97, levels=150, iters_start=5,
                                iters_cap=5, tabu_size=10)
  result = annealing.anneal(evaluate, jax.random.key(1), 40, 0.5, schedule)
  assert int(result.evaluations) == 750
  assert float(evaluate(result.best_mask)) >= 90.0
  assert int(result.best_mask.sum()) == 20


@pytest.mark.slow  # 7 s or more on 2 cores: the default suite stays under 10 minutes
def test_vmapped_chains_equal_single_chains():
  weights = jax.random.normal(jax.random.key(3), (64,))
  evaluate = lambda mask: 50.0 + jnp.sum(jnp.where(mask, weights, 0.0))  # noqa: E731
  schedule = annealing.Schedule(levels=20, iters_start=3, iters_cap=5, tabu_size=8,
                                tabu="within_n")
  keys = jax.random.split(jax.random.key(5), 3)
  run = jax.jit(lambda key: annealing.anneal(evaluate, key, 64, 0.7, schedule))
  vmapped = jax.jit(jax.vmap(lambda key: annealing.anneal(evaluate, key, 64, 0.7, schedule)))(
      keys)
  for i in range(3):
    single = run(keys[i])
    for a, b in zip(jax.tree.leaves(single), jax.tree.leaves(vmapped)):
      np.testing.assert_allclose(a, b[i], rtol=1e-6)


def test_chains_run_one_after_another_on_each_core_equal_single_chains():
  # The CPU's way (anneal.chain_loop "map" over the seeds' devices): each device runs
  # the unbatched search on its chains, so every chain is its single run bit for bit.
  weights = jax.random.normal(jax.random.key(3), (64,))
  evaluate = lambda mask: 50.0 + jnp.sum(jnp.where(mask, weights, 0.0))  # noqa: E731
  schedule = annealing.Schedule(levels=12, iters_start=3, iters_cap=5, tabu_size=8,
                                tabu="within_n")
  one = lambda key: annealing.anneal(evaluate, key, 64, 0.7, schedule)  # noqa: E731
  keys = jax.random.split(jax.random.key(5), 4)
  mesh = sharding.data_mesh(jax.devices()[:2])
  spread = jax.jit(driver.map_seeds(one, 0, 4, "map", mesh))(keys)
  assert len(spread.best_mask.sharding.device_set) == 2
  run = jax.jit(one)
  for i in range(4):
    for a, b in zip(jax.tree.leaves(run(keys[i])), jax.tree.leaves(spread)):
      np.testing.assert_array_equal(a, b[i])


def chain_at(mask, schedule, stored=()):
  """A chain at ``mask`` whose memory holds ``stored`` (and the matching bookkeeping)."""
  plan = annealing.plan_search(mask.shape[0], 1 - float(mask.mean()), schedule, (8,))
  chain = annealing.init_chain(lambda m: jnp.asarray(0.0), jax.random.key(0), plan, schedule)
  tabu = chain.tabu
  if stored:
    tabu = tabu.at[:len(stored)].set(jnp.stack([annealing.pack(m) for m in stored]))
  filled = jnp.arange(schedule.tabu_size) < len(stored)
  return chain._replace(mask=mask, packed=annealing.pack(mask), order=annealing._ones_first(mask),
                        tabu=tabu, tabu_filled=filled,
                        tabu_distance=annealing._distances(tabu, annealing.pack(mask)))


def small_candidate(key, chain, n, schedule, ones, threshold=1, count_distances=False):
  move = annealing._propose_small(key, chain, n, threshold, 8, ones, schedule, count_distances)
  return chain.mask.at[move.flips.index].set(move.flips.turn_on, mode="drop"), move


def test_the_tabu_memory_redraws_repeats():
  # From [1, 1, 0, 0] a one-swap move has 4 neighbours; with 3 of them in the
  # memory, every proposal (enough attempts allowed) is the fourth, by either move.
  current = jnp.asarray([True, True, False, False])
  neighbours = [jnp.asarray(m) for m in ([0, 1, 1, 0], [0, 1, 0, 1], [1, 0, 1, 0], [1, 0, 0, 1])]
  neighbours = [m.astype(bool) for m in neighbours]
  schedule = annealing.Schedule(tabu_size=3, tabu_attempts=200)
  chain = chain_at(current, schedule, neighbours[:3])
  full = jax.jit(lambda k: annealing._propose_full(k, chain, 1, 1, schedule)[0])
  small = jax.jit(lambda k, count: small_candidate(k, chain, 1, schedule, 2, 1, count),
                  static_argnums=1)
  for i in range(10):
    proposal = full(jax.random.key(i))
    np.testing.assert_array_equal(proposal, neighbours[3])
    for count in (False, True):
      proposal, move = small(jax.random.key(i), count)
      np.testing.assert_array_equal(proposal, neighbours[3])
      np.testing.assert_array_equal(move.packed, annealing.pack(proposal))
      # The small move's distances to the rows (from the current ones, or counted) are the
      # true ones.
      np.testing.assert_array_equal(move.distances, annealing._distances(
          chain.tabu, annealing.pack(proposal)))
  # Within-n: a memory entry at Hamming distance 2 < n = 3 blocks candidates near it.
  near = annealing._distances(jnp.stack([annealing.pack(current)] * 3),
                              annealing.pack(neighbours[0]))
  assert bool(jnp.any(near < 3)) and not bool(jnp.any(near < 1))


@pytest.mark.slow  # 7 s or more on 2 cores: the default suite stays under 10 minutes
def test_the_small_move_has_the_swap_moves_distribution():
  # 12 ones and 28 zeros, n = 3: every candidate flips exactly 3 of each pool, each one
  # with probability 3/12 and each zero with 3/28, as the select over every entry does.
  mask = annealing.random_mask(jax.random.key(2), 40, 28)
  schedule = annealing.Schedule(tabu_size=2)
  chain = chain_at(mask, schedule)
  keys = jax.random.split(jax.random.key(4), 2000)
  flips = jax.jit(jax.vmap(lambda k: small_candidate(k, chain, 3, schedule, 12)[0] ^ mask))(keys)
  reference = jax.jit(jax.vmap(lambda k: annealing.swap_move(k, mask, 3) ^ mask))(keys)
  for moved in (flips, reference):
    moved = np.asarray(moved)
    np.testing.assert_array_equal(moved[:, np.asarray(mask)].sum(1), 3)
    np.testing.assert_array_equal(moved[:, ~np.asarray(mask)].sum(1), 3)
    # Uniform within each pool: a chi-square test on the flip counts (p > 0.001).
    for pool in (np.asarray(mask), ~np.asarray(mask)):
      counts = moved[:, pool].sum(0)
      assert stats.chisquare(counts).pvalue > 1e-3
  # Flip sets are distinct within a candidate even when collisions are likely (n = 8 of 12).
  many = jax.jit(jax.vmap(lambda k: small_candidate(k, chain, 8, schedule, 12)[0] ^ mask))(
      keys[:200])
  np.testing.assert_array_equal(np.asarray(many)[:, np.asarray(mask)].sum(1), 8)


@pytest.mark.parametrize("count,high", [(600, 700), (600, 100_000), (40, 45)])
def test_distinct_positions_by_table_equal_those_by_sort(count, high):
  # The table finds the repeats the sort finds: the same draws, bit for bit, distinct,
  # with unused slots left as drawn; 600 of 700 forces many redraws.
  for i in range(3):
    valid = jnp.arange(count + 24) < count
    by = [jax.jit(functools.partial(annealing._distinct_positions, low=5, high=high,
                                    by_table=t))(jax.random.key(i), valid) for t in (False, True)]
    np.testing.assert_array_equal(by[0], by[1])
    used = np.asarray(by[0])[:count]
    assert len(set(used.tolist())) == count and used.min() >= 5 and used.max() < high


def _mlp(dtype):
  """A 12-10-6-3 MLP's kernels, a first-layer bias, data, and the masked kernels of a flat
  mask."""
  k1, k2, k3, k4, k5, k6 = jax.random.split(jax.random.key(7), 6)
  w = [jax.random.normal(k, shape, dtype) / np.sqrt(shape[0])
       for k, shape in ((k1, (12, 10)), (k2, (10, 6)), (k3, (6, 3)))]
  b1 = 0.3 * jax.random.normal(k6, (10,), dtype)
  x = jax.random.normal(k4, (200, 12), dtype)
  y = jax.random.randint(k5, (200,), 0, 3)
  sizes = np.cumsum([0] + [a.size for a in w])

  def layers(flat):
    return [jnp.where(flat[a:b].reshape(m.shape), m, 0) for a, b, m in zip(sizes, sizes[1:], w)]
  return w, b1, x, y, sizes, layers


def _accuracy(outputs, y):
  return 100.0 * jnp.mean(jnp.argmax(outputs, -1) == y)


def mlp_problem(dtype=jnp.float32):
  """A bias-free 12-10-6-3 relu MLP, its data, and its flat-mask evaluation both ways."""
  w, _, x, y, sizes, layers = _mlp(dtype)

  def rest(h, flat):
    _, w2, w3 = layers(flat)
    return _accuracy(jax.nn.relu(jax.nn.relu(h) @ w2) @ w3, y)

  def evaluate(flat):
    return rest(x @ layers(flat)[0], flat)
  return int(sizes[-1]), evaluate, annealing.first_layer_evaluator(x, w[0], 0, rest)


def two_layer_mlp_problem(dtype=jnp.float32):
  """The MLP with a first-layer bias and tanh, evaluated through the first two layers
  (moves of up to 8 slots, the capacity 4, update the second layer incrementally; the
  capacity 16 computes it in full)."""
  w, b1, x, y, sizes, layers = _mlp(dtype)

  def rest(h2, flat):
    return _accuracy(jax.nn.relu(h2) @ layers(flat)[2], y)

  def evaluate(flat):
    w1, w2, _ = layers(flat)
    return rest(jnp.tanh(x @ w1 + b1) @ w2, flat)
  fast = annealing.two_layer_evaluator(x, w[0], b1, 0, "tanh", w[1], int(sizes[1]), rest,
                                       rows_limit=8)
  return int(sizes[-1]), evaluate, fast


#: Moves of 99 entries down to 1 and back up (a reset at 5): full moves, then small moves
#: of every capacity (4, 16, 32; the 32 evaluated in full), then full ones again.
MLP_SCHEDULE = annealing.Schedule(t0=0.02, t_decay=0.97, levels=60, iters_start=2,
                                  iters_growth=1.05, iters_cap=12, n_decay=0.8,
                                  reset_below=0.05, tabu_size=6, tabu="within_n")


CAPACITIES = (4, 16, 32)


@pytest.mark.slow  # two whole searches in float64 (three compiled moves each)
@pytest.mark.parametrize("problem", [mlp_problem, two_layer_mlp_problem])
def test_incremental_evaluation_equals_the_full_one_through_a_search(problem):
  # In float64 rounding cannot flip an argmax: every accuracy, hence every acceptance,
  # is the full evaluation's, through full moves and small ones of every capacity.
  with jax.enable_x64(True):
    n, evaluate, incremental = problem(jnp.float64)
    plan = annealing.plan_search(n, 0.5, MLP_SCHEDULE, CAPACITIES, 16)
    assert set(plan.tier.tolist()) == {0, 1, 2, 3} and plan.rebuild.sum() >= 2
    run = lambda e: jax.jit(lambda k: annealing.anneal(
        e, k, n, 0.5, MLP_SCHEDULE, CAPACITIES, 16))(jax.random.key(3))  # noqa: E731
    full, fast = run(evaluate), run(incremental)
    assert int(full.accepted) > 20
    for a, b in zip(full, fast):
      np.testing.assert_array_equal(a, b)


@pytest.mark.slow  # a search compiled whole and in two chunk lengths
def test_the_bookkeeping_holds_and_a_search_resumes_between_levels():
  n, _, incremental = mlp_problem()
  plan = annealing.plan_search(n, 0.7, MLP_SCHEDULE, CAPACITIES, 16)
  key = jax.random.key(11)

  @jax.jit
  def whole(key):
    chain = annealing.init_chain(incremental, key, plan, MLP_SCHEDULE)
    return annealing.run_levels(incremental, key, chain, plan, MLP_SCHEDULE)

  @jax.jit
  def in_parts(key):
    chain = annealing.init_chain(incremental, key, plan, MLP_SCHEDULE)
    # 25 levels, then the other 35 as two runs of 20 (the last padded with 5 idle levels).
    means = []
    for start, stop in ((0, 25), (25, 45), (45, 60)):
      inputs = annealing.level_inputs(plan, start, stop, 25 if start == 0 else 20)
      chain, part = annealing.run_levels(incremental, key, chain, plan, MLP_SCHEDULE, inputs)
      means.append(part[:stop - start])
    return chain, jnp.concatenate(means)
  chain, means = whole(key)
  for a, b in zip(jax.tree.leaves((chain, means)), jax.tree.leaves(in_parts(key))):
    np.testing.assert_array_equal(a, b)
  # The packed mask, the distances to the memory and the ones-first order match the mask.
  np.testing.assert_array_equal(chain.packed, annealing.pack(chain.mask))
  np.testing.assert_array_equal(chain.tabu_distance,
                                annealing._distances(chain.tabu, chain.packed))
  ones = n - int(n * 0.7)
  assert bool(chain.mask[chain.order[:ones]].all()) and not bool(chain.mask[chain.order[ones:]].any())
  assert sorted(np.asarray(chain.order).tolist()) == list(range(n))
  assert int(chain.mask.sum()) == ones and int(chain.best_mask.sum()) == ones


@pytest.mark.slow  # 7 s or more on 2 cores: the default suite stays under 10 minutes
def test_the_swap_move_picks_uniformly():
  mask = jnp.arange(20) < 10
  keys = jax.random.split(jax.random.key(4), 1000)
  flips = jax.vmap(lambda k: annealing.swap_move(k, mask, 3) ^ mask)(keys)
  rate = np.asarray(jnp.mean(flips, axis=0))
  # Each of the 10 ones and 10 zeros flips with probability 3/10 (sd 0.0145).
  np.testing.assert_allclose(rate, 0.3, atol=0.05)
  assert np.all(np.asarray(jnp.sum(flips, axis=1)) == 6)


def test_ties_at_the_threshold_are_taken_in_index_order():
  mask = jnp.array([True, False, True, True, False, False, True, False])
  # Every entry tied: the first n of each pool by index flip.
  flipped = annealing.swap_by_bits(mask, jnp.full(8, 7, jnp.uint32), 2) ^ mask
  np.testing.assert_array_equal(flipped, [True, True, True, False, True, False, False, False])
  # One smaller entry per pool, then ties: it and the first tied entry flip.
  bits = jnp.array([9, 9, 9, 1, 9, 9, 9, 1], jnp.uint32)
  flipped = annealing.swap_by_bits(mask, bits, 2) ^ mask
  np.testing.assert_array_equal(flipped, [True, True, False, True, False, False, False, True])
  # No tie beyond the room: the cheap branch gives the same as the ranked one.
  bits = jnp.arange(8, dtype=jnp.uint32)[::-1]
  flipped = annealing.swap_by_bits(mask, bits, 2) ^ mask
  np.testing.assert_array_equal(flipped, [False, False, False, True, False, True, True, True])


def test_the_two_layer_cache_follows_a_move_and_its_undo():
  with jax.enable_x64(True):
    n, evaluate, fast = two_layer_mlp_problem(jnp.float64)
    mask = jnp.arange(n) % 3 != 0
    accuracy, cache = fast.full(mask)
    assert float(accuracy) == float(evaluate(mask))
    # Two entries of unit 4 of the first layer (rows 0 and 7), one of unit 9, one
    # entry of the second layer, one unused slot (index n).
    index = jnp.asarray([0 * 10 + 4, 7 * 10 + 4, 3 * 10 + 9, 120 + 2 * 6 + 5, n], jnp.int32)
    flips = annealing.Flips(index, ~mask[jnp.minimum(index, n - 1)])
    candidate = mask.at[index].set(flips.turn_on, mode="drop")
    accuracy, moved = fast.update(cache, candidate, flips)
    _, expected = fast.full(candidate)
    assert float(accuracy) == float(evaluate(candidate))
    for a, b in zip(moved, expected):
      np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
    undone = fast.revert(moved, mask, flips, jnp.asarray(False))
    for a, b in zip(undone, cache):
      np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
    kept = fast.revert(moved, candidate, flips, jnp.asarray(True))
    for a, b in zip(kept, moved):
      np.testing.assert_array_equal(a, b)
