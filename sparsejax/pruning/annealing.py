"""Simulated-annealing search for a pruning mask, as one compiled program.

The EEE 198 search (Sanchez and Reyes, 2020, "Heuristic Approach Towards
Early Pruning of Neural Networks"; reference notes
``jax_ecosystem_and_annealing.md``, sections 2.2 and 2.3) looks for a binary
mask over ``N`` prunable units (960 conv filters, or the 266,200 weights of a
bias-free MLP) with a fixed number of zeros that maximises the accuracy of
the masked network on a fixed evaluation subset of the training set. There
is no training during the search.

* **Start**: a uniformly random mask with ``int(N * sparsity)`` zeros; the
  running accuracy starts at 5 (per cent).
* **Move** (:func:`swap_move`): ``n`` random ones become zeros and ``n``
  random zeros become ones (both cut to the smaller pool), so the sparsity is
  kept and the Hamming distance is ``2n``.
* **Tabu memory**: the last ``tabu_size`` evaluated candidates; a proposal
  within Hamming distance ``< 1`` (``tabu="exact"``, the CNN search) or
  ``< n`` (``"within_n"``, the MLP search) of one of them is redrawn, at most
  ``tabu_attempts`` times, after which the last proposal is used anyway.
* **Neighbourhood size** (:func:`neighbourhood_sizes`): ``n_0`` = the number
  of kept units; after every temperature level ``n <- max(1, floor(0.99 n))``
  and, if then ``n`` is strictly below half the current peak, the peak
  becomes ``floor(0.75 peak)`` and ``n`` restarts there: a decaying sawtooth
  (for ``n_0 = 480`` the resets fall at levels 62, 121, 177, 228 with peaks
  360, 270, 202, 151).
* **Temperature** ``T_l = T_0 d^l``; **iterations per level**: a float
  counter ``x`` from ``x_0``, level ``l`` runs ``int(x)`` candidates, then
  ``x <- min(cap, g x)`` (:func:`level_schedule`); the MLP search stops
  after ``max_evaluations`` candidates.
* **Acceptance** against the running mean ``ave`` of the accuracies
  accepted within the level (each level starts from the previous level's
  final mean): with :math:`\\Delta = (\\mathrm{ave} - \\mathrm{acc}) / 100`,
  accept if :math:`\\Delta < 0`, else with probability
  :math:`e^{-\\Delta / T}` (so ties are accepted).
* **Best mask**: at the end of each level, the current mask if the level's
  mean beats the best so far.

The reference reloads the network from disk and masks it for every
candidate; here the whole search is a ``lax.scan`` over levels of
``lax.while_loop`` s over candidates around a compiled masked evaluation, so
it never leaves the device, and independent chains are one ``jax.vmap``.
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from sparsejax import prng

TABU_RULES = ("exact", "within_n")


class Schedule(NamedTuple):
  """The search's constants (defaults: the CNN search, section 2.2).

  Attributes:
    t0, t_decay: the temperature ``T_l = t0 * t_decay**l``.
    levels: the most temperature levels.
    iters_start, iters_growth, iters_cap: the iterations-per-level counter.
    max_evaluations: stop after this many candidates (0: no limit).
    n_decay, reset_below, reset_to: the sawtooth (``0.99``, ``0.5``, ``0.75``).
    tabu_size, tabu_attempts, tabu: the memory of recent candidates.
    start_accuracy: the running accuracy before the first candidate (%).
  """
  t0: float = 0.005
  t_decay: float = 0.995
  levels: int = 1000
  iters_start: float = 2.0
  iters_growth: float = 1.005
  iters_cap: float = 10.0
  max_evaluations: int = 0
  n_decay: float = 0.99
  reset_below: float = 0.5
  reset_to: float = 0.75
  tabu_size: int = 60
  tabu_attempts: int = 30
  tabu: str = "exact"
  start_accuracy: float = 5.0


#: The MLP search (section 2.3).
MLP_SCHEDULE = Schedule(t0=0.006, t_decay=0.999, levels=100_000, iters_start=1.0,
                        iters_cap=50.0, max_evaluations=100_000, tabu_size=50, tabu="within_n")
#: The CNN search (section 2.2).
CNN_SCHEDULE = Schedule()


def neighbourhood_sizes(n0: int, levels: int, decay: float = 0.99, reset_below: float = 0.5,
                        reset_to: float = 0.75) -> np.ndarray:
  """The move size ``n`` of every level (the decaying sawtooth; module docstring)."""
  sizes = np.empty(levels, np.int64)
  n = peak = int(n0)
  for level in range(levels):
    sizes[level] = n
    n = max(1, math.floor(decay * n))
    if n < reset_below * peak:
      peak = math.floor(reset_to * peak)
      n = peak
  return sizes


def level_schedule(schedule: Schedule) -> tuple[np.ndarray, np.ndarray]:
  """``(iterations, temperatures)`` per level, cut at ``max_evaluations``.

  The last level runs only the candidates left when the budget ends inside it.
  """
  iterations, temperatures = [], []
  x, total = schedule.iters_start, 0
  for level in range(schedule.levels):
    count = int(x)
    if schedule.max_evaluations:
      count = min(count, schedule.max_evaluations - total)
      if count <= 0:
        break
    iterations.append(count)
    temperatures.append(schedule.t0 * schedule.t_decay ** level)
    total += count
    x = min(schedule.iters_cap, schedule.iters_growth * x)
  return np.asarray(iterations, np.int32), np.asarray(temperatures, np.float32)


def random_mask(key: jax.Array, n_units: int, n_pruned: int) -> jax.Array:
  """A uniformly random boolean mask with exactly ``n_pruned`` zeros."""
  return jax.random.permutation(key, jnp.arange(n_units) >= n_pruned)


def _digit_threshold(digits, group, wanted, before):
  """Per group, the first 16-bit digit whose running count reaches ``wanted``.

  ``digits`` (int32 in [0, 2^16)) and ``group`` (0, 1, or -1 for neither)
  are per entry; returns the digits ``(2,)`` and the counts below them.
  """
  hist = jnp.zeros((3, 1 << 16), jnp.int32).at[group, digits].add(1)[:2]
  cumulative = jnp.cumsum(hist, axis=1) + before[:, None]
  digit = jnp.argmax(cumulative >= wanted[:, None], axis=1)
  below = jnp.take_along_axis(cumulative, digit[:, None], axis=1)[:, 0] - hist[
      jnp.arange(2), digit]
  return digit, below


def swap_move(key: jax.Array, mask: jax.Array, n) -> jax.Array:
  """``n`` random ones -> zeros and ``n`` random zeros -> ones (cut to the smaller pool).

  Every entry draws 32 random bits (:func:`sparsejax.prng.random_bits`, bit
  for bit ``jax.random.bits``, fused); in each pool (ones, zeros) the ``n``
  entries with the smallest bits flip, so the choice is uniform. The two
  thresholds are found by a two-digit radix select (a histogram of the high
  16 bits, then of the low 16 bits within the threshold's bin; no sort: a
  sort of the MLP's 266,200 entries costs about 80 ms on a CPU core).
  Entries tied at a threshold are taken in index order; the ranks that
  needs (two prefix sums over every entry) are computed only when a pool
  has more tied entries than room.
  """
  return swap_by_bits(mask, prng.random_bits(key, mask.shape, 32), n)


def swap_by_bits(mask: jax.Array, bits: jax.Array, n) -> jax.Array:
  """:func:`swap_move` for given per-entry ``bits`` (uint32): the ``n`` smallest per pool flip."""
  kept = jnp.sum(mask)
  n = jnp.minimum(n, jnp.minimum(kept, mask.size - kept))
  group = jnp.where(mask, 0, 1)
  high = (bits >> 16).astype(jnp.int32)
  low = (bits & 0xFFFF).astype(jnp.int32)
  wanted = jnp.stack([n, n])
  top, before = _digit_threshold(high, group, wanted, jnp.zeros(2, jnp.int32))
  in_bin = high == top[group]
  bottom, _ = _digit_threshold(low, jnp.where(in_bin, group, 2), wanted, before)
  threshold = (top.astype(jnp.uint32) << 16) | bottom.astype(jnp.uint32)
  limit = threshold[group]
  below = bits < limit
  tied = bits == limit
  room = n - jnp.stack([jnp.sum(below & mask), jnp.sum(below & ~mask)])
  tied_count = jnp.stack([jnp.sum(tied & mask), jnp.sum(tied & ~mask)])

  def first_tied_by_index():
    rank = jnp.where(mask, jnp.cumsum(tied & mask), jnp.cumsum(tied & ~mask))
    return tied & (rank <= room[group])

  take = jax.lax.cond(jnp.any(tied_count > room), first_tied_by_index, lambda: tied)
  return mask ^ (below | take)


class Chain(NamedTuple):
  """A chain's state between candidates."""
  mask: jax.Array          # the current mask
  ave: jax.Array           # the running mean of the level's accepted accuracies
  level_sum: jax.Array
  level_count: jax.Array
  best_mask: jax.Array
  best_mean: jax.Array
  tabu: jax.Array          # (tabu_size, ceil(N / 8)) recent candidates, bit-packed
  tabu_filled: jax.Array   # (tabu_size,) which rows hold a candidate
  tabu_next: jax.Array     # the row the next candidate goes to
  evaluations: jax.Array
  accepted: jax.Array


class Result(NamedTuple):
  """The search's outcome (one chain; a leading axis for vmapped chains).

  Attributes:
    best_mask: the mask saved at the level end with the best level mean.
    best_mean: that level mean (%).
    mask: the mask at the end.
    level_means: the running mean at the end of every level (%).
    evaluations: candidates evaluated.
    accepted: candidates accepted.
  """
  best_mask: jax.Array
  best_mean: jax.Array
  mask: jax.Array
  level_means: jax.Array
  evaluations: jax.Array
  accepted: jax.Array


def accept(key: jax.Array, ave, accuracy, temperature) -> jax.Array:
  """Accept if ``Delta = (ave - accuracy)/100 < 0``, else with probability ``exp(-Delta/T)``."""
  delta = (ave - accuracy) / 100.0
  return (delta < 0) | (jax.random.uniform(key) < jnp.exp(-delta / temperature))


def pack(mask: jax.Array) -> jax.Array:
  """A boolean mask as bytes (8 entries each), as the tabu memory stores it."""
  return jnp.packbits(mask)


def _is_tabu(chain: Chain, candidate: jax.Array, threshold) -> jax.Array:
  """Whether a stored candidate lies within Hamming distance ``< threshold``."""
  differing = jax.lax.population_count(chain.tabu ^ pack(candidate)[None, :])
  distances = jnp.sum(differing.astype(jnp.int32), axis=1)
  return jnp.any(chain.tabu_filled & (distances < threshold))


def _propose(key, chain: Chain, n, schedule: Schedule) -> jax.Array:
  """A swap move outside the tabu memory (or the last of ``tabu_attempts`` tries)."""
  threshold = 1 if schedule.tabu == "exact" else n

  def cond(carry):
    attempt, _, candidate = carry
    return (attempt < schedule.tabu_attempts) & _is_tabu(chain, candidate, threshold)

  def body(carry):
    attempt, k, _ = carry
    k, sub = jax.random.split(k)
    return attempt + 1, k, swap_move(sub, chain.mask, n)

  key, sub = jax.random.split(key)
  _, _, candidate = jax.lax.while_loop(cond, body, (1, key, swap_move(sub, chain.mask, n)))
  return candidate


def anneal(evaluate: Callable[[jax.Array], jax.Array], key: jax.Array, n_units: int,
           sparsity: float, schedule: Schedule = CNN_SCHEDULE) -> Result:
  """Runs one chain of the search (module docstring); traceable, vmappable over ``key``.

  Args:
    evaluate: ``mask (bool[N]) -> accuracy in %`` of the masked network on
      the evaluation subset (compiled into the loop).
    key: the chain's PRNG key.
    n_units: ``N``.
    sparsity: the share of zeros; the mask has ``int(N * sparsity)`` of them.
    schedule: the constants (:data:`CNN_SCHEDULE`, :data:`MLP_SCHEDULE`).
  """
  if schedule.tabu not in TABU_RULES:
    raise ValueError(f"tabu must be one of {TABU_RULES}, got {schedule.tabu!r}")
  n_pruned = int(n_units * sparsity)
  iterations, temperatures = level_schedule(schedule)
  sizes = neighbourhood_sizes(n_units - n_pruned, len(iterations), schedule.n_decay,
                              schedule.reset_below, schedule.reset_to)
  start_key, key = jax.random.split(key)
  mask = random_mask(start_key, n_units, n_pruned)
  dtype = jnp.float32
  chain = Chain(mask=mask, ave=jnp.asarray(schedule.start_accuracy, dtype),
                level_sum=jnp.zeros((), dtype), level_count=jnp.zeros((), jnp.int32),
                best_mask=mask, best_mean=jnp.asarray(-jnp.inf, dtype),
                tabu=jnp.zeros((schedule.tabu_size, -(-n_units // 8)), jnp.uint8),
                tabu_filled=jnp.zeros(schedule.tabu_size, bool),
                tabu_next=jnp.zeros((), jnp.int32), evaluations=jnp.zeros((), jnp.int32),
                accepted=jnp.zeros((), jnp.int32))

  def candidate_step(level_key, n, temperature):
    def step(i, chain: Chain) -> Chain:
      propose_key, accept_key = jax.random.split(jax.random.fold_in(level_key, i))
      candidate = _propose(propose_key, chain, n, schedule)
      accuracy = evaluate(candidate).astype(dtype)
      ok = accept(accept_key, chain.ave, accuracy, temperature)
      level_sum = chain.level_sum + jnp.where(ok, accuracy, 0)
      level_count = chain.level_count + ok
      return chain._replace(
          mask=jnp.where(ok, candidate, chain.mask),
          ave=jnp.where(ok, level_sum / jnp.maximum(level_count, 1), chain.ave),
          level_sum=level_sum, level_count=level_count,
          tabu=chain.tabu.at[chain.tabu_next].set(pack(candidate)),
          tabu_filled=chain.tabu_filled.at[chain.tabu_next].set(True),
          tabu_next=(chain.tabu_next + 1) % schedule.tabu_size,
          evaluations=chain.evaluations + 1, accepted=chain.accepted + ok)
    return step

  def level(chain: Chain, inputs):
    index, count, n, temperature = inputs
    chain = chain._replace(level_sum=jnp.zeros((), dtype), level_count=jnp.zeros((), jnp.int32))
    chain = jax.lax.fori_loop(0, count, candidate_step(jax.random.fold_in(key, index), n,
                                                       temperature), chain)
    better = chain.ave > chain.best_mean
    chain = chain._replace(best_mask=jnp.where(better, chain.mask, chain.best_mask),
                           best_mean=jnp.where(better, chain.ave, chain.best_mean))
    return chain, chain.ave

  chain, level_means = jax.lax.scan(
      level, chain, (jnp.arange(len(iterations)), jnp.asarray(iterations),
                     jnp.asarray(sizes, jnp.int32), jnp.asarray(temperatures)))
  return Result(best_mask=chain.best_mask, best_mean=chain.best_mean, mask=chain.mask,
                level_means=level_means, evaluations=chain.evaluations,
                accepted=chain.accepted)
