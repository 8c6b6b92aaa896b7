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

**A candidate costs what it changes** (:func:`plan_search`). The move size of
every level is known before the search, so each level runs one of a few
compiled moves, picked by ``lax.switch`` on an index that is the same for
every vmapped chain (so it stays a branch, not a select):

* a move of at most ``c`` entries per pool (``c`` in :data:`CAPACITIES`) draws
  them by position in ``Chain.order`` (the ones first) with
  :func:`_distinct_positions`: O(c) work, the same distribution as
  :func:`swap_move`; the memory's distances are updated from the flipped
  entries alone (the Hamming distance changes by +-1 per flipped entry);
* an :class:`Evaluator` may update the accuracy from the flipped entries
  (:func:`first_layer_evaluator`: the first layer's pre-activations, kept in
  the chain, change by one input column per flipped weight) for moves of at
  most :data:`INCREMENTAL_CAPACITY` entries per pool (larger ones are evaluated
  in full); moves of at most :data:`REVERT_CAPACITY` undo a rejected
  candidate's changes in place rather than keep two copies of the mask and
  the cache; the cache is recomputed in full about every :data:`REFRESH_FLIPS`
  flipped entries, so rounding does not accumulate;
  :func:`two_layer_evaluator` updates the second layer's pre-activations too,
  through the units the flipped first-layer entries feed;
* moves larger than every capacity use :func:`swap_move` over every entry and
  the full evaluation.

:func:`run_levels` runs any range of levels from a chain, so a long search
checkpoints between levels and resumes with the chain it would have had.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Callable, NamedTuple, Sequence

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
  has more tied entries than room. Its work is O(N) whatever ``n``: the
  search uses it for large moves only (:func:`_propose_small` for the others).
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


# --------------------------------------------------------------------------
# Evaluation: full, or updated by the flipped entries


class Flips(NamedTuple):
  """The entries a small move flips (static capacity; unused slots hold ``n_units``).

  Attributes:
    index: int32, the flipped entries of the flat mask (``n_units``: an unused slot).
    turn_on: bool, ``True`` where the entry goes 0 -> 1, ``False`` where 1 -> 0.
  """
  index: jax.Array
  turn_on: jax.Array


class Evaluator(NamedTuple):
  """A candidate's accuracy, computed in full or updated from the current mask's cache.

  Attributes:
    full: ``mask -> (accuracy %, cache)``.
    update: ``(cache of the current mask, candidate mask, Flips) -> (accuracy %, cache)``;
      the candidate differs from the current mask in exactly the flipped entries.
    incremental: whether ``update`` is cheaper than ``full`` (then the cache is
      recomputed in full whenever about :data:`REFRESH_FLIPS` entries have been
      flipped since the last time, so rounding never accumulates).
    revert: ``(cache after update, kept mask, Flips, accepted) -> cache``: undoes
      ``update``'s change where the candidate is rejected (the kept mask is then
      the current one), so the search keeps one cache and changes it in place
      instead of keeping both and selecting one (``None``: it selects). Small
      moves use it (:data:`REVERT_CAPACITY`).
    partial_above: moves of more flip slots than this keep only part of the cache
      current (``None``: none does); the cache is recomputed at the end of their
      levels.
  """
  full: Callable[[jax.Array], tuple[jax.Array, Any]]
  update: Callable[[Any, jax.Array, Flips], tuple[jax.Array, Any]]
  incremental: bool = False
  revert: Callable[[Any, jax.Array, Flips, jax.Array], Any] | None = None
  partial_above: int | None = None


def plain_evaluator(evaluate: Callable[[jax.Array], jax.Array]) -> Evaluator:
  """An :class:`Evaluator` that evaluates every candidate in full."""
  return Evaluator(full=lambda mask: (evaluate(mask), ()),
                   update=lambda cache, mask, flips: (evaluate(mask), ()))


def first_layer_evaluator(x: jax.Array, kernel: jax.Array, offset: int,
                          rest: Callable[[jax.Array, jax.Array], jax.Array]) -> Evaluator:
  """Incremental evaluation through a first Dense layer on the flattened input.

  The masked network's first pre-activations :math:`H = X (W \\odot M)` (without
  the bias) are the cache, stored transposed (units, examples). A candidate
  that flips entries :math:`(i, j)` of :math:`M` changes column :math:`j` of
  :math:`H` by :math:`\\pm W_{ij} X_{:, i}`: a gather of the flipped entries'
  input columns and a scatter-add, :math:`O(B)` per flipped entry instead of
  :math:`O(B \\cdot d_{in} d_{out})` for the layer; the rest of the network is
  computed as usual from :math:`H`.

  Args:
    x: the evaluation inputs, flattened ``(B, d_in)``.
    kernel: the first layer's kernel ``(d_in, d_out)``.
    offset: where the kernel's entries start in the flat mask (row-major).
    rest: ``(H (B, d_out), mask) -> accuracy %``: the network from the first
      layer's output on (adding its bias, if any).
  """
  d_in, d_out = kernel.shape
  size = d_in * d_out
  x_rows = x.T  # (d_in, B): a flipped entry's input column is a contiguous row

  def first(mask):
    m = jax.lax.dynamic_slice_in_dim(mask, offset, size).reshape(d_in, d_out)
    return (x @ jnp.where(m, kernel, 0)).T

  def full(mask):
    h = first(mask)
    return rest(h.T, mask), h

  def update(h, mask, flips: Flips):
    h = _add_flipped(h, x_rows, kernel, offset, flips, 1.0)
    return rest(h.T, mask), h

  def revert(h, mask, flips: Flips, accepted):
    del mask
    return _add_flipped(h, x_rows, kernel, offset, flips,
                        jnp.where(accepted, 0.0, -1.0).astype(h.dtype))
  return Evaluator(full=full, update=update, incremental=True, revert=revert)


def _add_flipped(h: jax.Array, inputs: jax.Array, kernel: jax.Array, offset: int, flips: Flips,
                 sign) -> jax.Array:
  r"""A Dense layer's transposed pre-activations ``h`` (units, examples) plus ``sign`` times
  the change of the flipped entries of its kernel (at ``offset`` in the flat mask):
  :math:`\pm W_{ij}` times input row ``i`` (``inputs`` transposed, (d_in, examples)) added
  to row ``j``; flips outside the kernel add nothing."""
  d_in, d_out = kernel.shape
  local = flips.index - offset
  inside = (local >= 0) & (local < d_in * d_out)
  i, j = jnp.where(inside, local // d_out, 0), jnp.where(inside, local % d_out, 0)
  weight = sign * jnp.where(flips.turn_on, kernel[i, j], -kernel[i, j])
  return h.at[jnp.where(inside, j, d_out)].add(weight[:, None] * inputs[i], mode="drop")


#: The activations :func:`two_layer_evaluator` takes, by name.
ACTIVATIONS = {"relu": jax.nn.relu, "tanh": jnp.tanh, "sigmoid": jax.nn.sigmoid,
               "identity": lambda h: h}


class TwoLayers(NamedTuple):
  """:func:`two_layer_evaluator`'s cache, transposed (units, examples): the first
  layer's pre-activations (no bias) and activations, the second's pre-activations (no
  bias). Moves above the evaluator's ``rows_limit`` keep only ``h1`` current within a
  level (the others are rebuilt at its end, before another move reads them)."""
  h1: jax.Array
  a1: jax.Array
  h2: jax.Array


def two_layer_evaluator(x: jax.Array, kernel1: jax.Array, bias1: jax.Array | None,
                        offset1: int, activation: str, kernel2: jax.Array, offset2: int,
                        rest: Callable[[jax.Array, jax.Array], jax.Array],
                        rows_limit: int | None = None) -> Evaluator:
  r"""Incremental evaluation through the first two Dense layers of a chain.

  :math:`H_1 = X (W_1 \odot M_1)`, :math:`A_1 = \phi(H_1 + b_1)` and
  :math:`H_2 = A_1 (W_2 \odot M_2)` are the cache. A candidate changes
  :math:`H_1` by one input column per flipped first-layer entry (as
  :func:`first_layer_evaluator`), hence :math:`A_1` only in the units
  :math:`J` those entries feed; then

  .. math::  H_2' = H_2 + \textstyle\sum_{(i,j) \text{ flipped in } W_2}
             \pm W_{2,ij} A_{1,:i}\, e_j^\top
             + (A_1' - A_1)_{:J}\, (W_2 \odot M_2')_{J,:},

  :math:`O(B (|flips| + |J| d_2))` instead of :math:`O(B d_1 d_2)` for the
  second layer, and the rest of the network is computed from :math:`H_2`. A
  move that changes more than ``rows_limit`` units (default :math:`d_1/4`)
  updates :math:`H_1` alone and computes the second layer in full. A rejected
  candidate is undone by the inverse move, applied the same way.

  Args:
    x: the evaluation inputs, flattened ``(B, d_in)``.
    kernel1, bias1, offset1: the first layer's kernel ``(d_in, d_1)``, its bias
      (``None``: none) and where the kernel starts in the flat mask (row-major).
    activation: the elementwise map between the layers (:data:`ACTIVATIONS`).
    kernel2, offset2: the second layer's kernel ``(d_1, d_2)`` and its offset.
    rest: ``(H_2 (B, d_2), mask) -> accuracy %``: the network from the second
      layer's output on (adding its bias, if any).
    rows_limit: the most changed units updated incrementally.
  """
  if activation not in ACTIVATIONS:
    raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
  act = ACTIVATIONS[activation]
  d_in, d1 = kernel1.shape
  d2 = kernel2.shape[1]
  size1 = d_in * d1
  rows_limit = max(1, d1 // 4) if rows_limit is None else rows_limit
  x_rows = x.T
  b1 = jnp.zeros((d1, 1), x.dtype) if bias1 is None else bias1[:, None]

  def layer(mask, offset, kernel):
    d, e = kernel.shape
    m = jax.lax.dynamic_slice_in_dim(mask, offset, d * e).reshape(d, e)
    return jnp.where(m, kernel, 0)

  def second(a1, mask):
    return layer(mask, offset2, kernel2).T @ a1

  def full(mask):
    h1 = (x @ layer(mask, offset1, kernel1)).T
    a1 = act(h1 + b1)
    h2 = second(a1, mask)
    return rest(h2.T, mask), TwoLayers(h1, a1, h2)

  def advance(cache: TwoLayers, mask, flips: Flips) -> TwoLayers:
    """The cache of ``mask``, which differs from the cache's mask by ``flips``."""
    h1 = _add_flipped(cache.h1, x_rows, kernel1, offset1, flips, 1.0)
    local = flips.index - offset1
    slots = jnp.arange(flips.index.shape[0], dtype=jnp.int32)
    unit = jnp.where((local >= 0) & (local < size1), local % d1, d1)
    # Each changed unit once: the first slot that names it.
    first_slot = jnp.full(d1 + 1, slots.shape[0], jnp.int32).at[unit].min(slots)
    first = (unit < d1) & (first_slot[unit] == slots)
    rows = jnp.where(first, unit, 0)
    a1_rows = act(h1[rows] + b1[rows])
    delta = jnp.where(first[:, None], a1_rows - cache.a1[rows], 0)
    # The second layer's flipped entries, with the activations before the move.
    h2 = _add_flipped(cache.h2, cache.a1, kernel2, offset2, flips, 1.0)
    columns = offset2 + rows[:, None] * d2 + jnp.arange(d2)
    w2_rows = jnp.where(mask[columns], kernel2[rows], 0)
    h2 = h2 + w2_rows.T @ delta
    a1 = cache.a1.at[jnp.where(first, unit, d1)].set(a1_rows, mode="drop")
    return TwoLayers(h1, a1, h2)

  def incremental(flips: Flips) -> bool:
    return flips.index.shape[0] <= rows_limit

  def update(cache: TwoLayers, mask, flips: Flips):
    if incremental(flips):
      cache = advance(cache, mask, flips)
      return rest(cache.h2.T, mask), cache
    h1 = _add_flipped(cache.h1, x_rows, kernel1, offset1, flips, 1.0)
    return rest(second(act(h1 + b1), mask).T, mask), cache._replace(h1=h1)

  def revert(cache: TwoLayers, mask, flips: Flips, accepted):
    if incremental(flips):
      inverse = Flips(jnp.where(accepted, jnp.iinfo(jnp.int32).max, flips.index),
                      ~flips.turn_on)
      return advance(cache, mask, inverse)
    sign = jnp.where(accepted, 0.0, -1.0).astype(cache.h1.dtype)
    return cache._replace(h1=_add_flipped(cache.h1, x_rows, kernel1, offset1, flips, sign))
  return Evaluator(full=full, update=update, incremental=True, revert=revert,
                   partial_above=rows_limit)


# --------------------------------------------------------------------------
# The chain


class Chain(NamedTuple):
  """A chain's state between candidates.

  The mask is also kept bit-packed (the tabu memory's rows are packed masks),
  with its Hamming distance to every row of the memory, and as ``order``, a
  permutation of the entries with the ones first (positions ``[0, K)``), so a
  small move draws its entries by position.
  """
  mask: jax.Array          # the current mask
  ave: jax.Array           # the running mean of the level's accepted accuracies
  level_sum: jax.Array
  level_count: jax.Array
  best_mask: jax.Array
  best_mean: jax.Array
  tabu: jax.Array          # (tabu_size, ceil(N / 8)) recent candidates, bit-packed
  tabu_filled: jax.Array   # (tabu_size,) which rows hold a candidate
  tabu_next: jax.Array     # the row the next candidate goes to
  tabu_distance: jax.Array  # (tabu_size,) Hamming distance from the mask to each row
  packed: jax.Array        # the mask, bit-packed
  order: jax.Array         # int32[N], the ones' entries first
  cache: Any               # the evaluator's cache for the mask
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
  """A boolean mask as bytes (8 entries each, the first in the high bit), as the tabu
  memory stores it."""
  return jnp.packbits(mask)


def _distances(tabu: jax.Array, packed: jax.Array) -> jax.Array:
  """Hamming distance from a packed mask to every row of the memory."""
  return jnp.sum(jax.lax.population_count(tabu ^ packed[None, :]), axis=1, dtype=jnp.int32)


def _tabu_threshold(schedule: Schedule, n):
  return 1 if schedule.tabu == "exact" else n


def _propose_full(key, chain: Chain, n, threshold, schedule: Schedule):
  """A swap move outside the tabu memory (or the last of ``tabu_attempts`` tries), by
  :func:`swap_move` over every entry: ``(candidate, candidate packed, its distances to
  the memory's rows)``."""
  def draw(k):
    candidate = swap_move(k, chain.mask, n)
    packed = pack(candidate)
    return candidate, packed, _distances(chain.tabu, packed)
  return _outside_memory(key, draw, lambda proposal: proposal[2], chain, threshold, schedule)


def _outside_memory(key, draw, distances_of, chain: Chain, threshold, schedule: Schedule):
  """``draw(key)``, drawn again (new keys) while the proposal lies within Hamming distance
  ``< threshold`` of a stored candidate (``distances_of(proposal)``), at most
  ``tabu_attempts`` draws in all; the last proposal."""
  def cond(carry):
    attempt, _, proposal = carry
    return (attempt < schedule.tabu_attempts) & jnp.any(
        chain.tabu_filled & (distances_of(proposal) < threshold))

  def body(carry):
    attempt, k, _ = carry
    k, sub = jax.random.split(k)
    return attempt + 1, k, draw(sub)

  key, sub = jax.random.split(key)
  _, _, proposal = jax.lax.while_loop(cond, body, (1, key, draw(sub)))
  return proposal


def _distinct_positions(key, valid: jax.Array, low: int, high: int,
                        by_table: bool | None = None) -> jax.Array:
  """Uniform draws from ``[low, high)``, distinct over the ``valid`` slots.

  Every slot draws at random; a valid slot whose value an earlier valid slot
  already holds draws again, until none does. The result is a uniformly random
  set of ``sum(valid)`` positions: the procedure treats every position alike,
  so its distribution over sets is invariant under their permutations.

  The repeats are found by a stable sort of the draws for a few slots, and for
  many (:data:`_TABLE_FROM` or more) by a table over ``[low, high)`` that keeps
  the earliest slot per value (a scatter-min, O(slots) plus a fill of the
  table): the same repeats, without the sort's O(slots log slots).
  ``by_table`` forces one way (default: by the number of slots).
  """
  slots = jnp.arange(valid.shape[0], dtype=jnp.int32)

  def repeated_by_sort(values):
    v = jnp.where(valid, values, high + slots)  # unused slots: distinct sentinels
    order = jnp.argsort(v, stable=True)
    sorted_v = v[order]
    later = jnp.concatenate([jnp.zeros(1, bool), sorted_v[1:] == sorted_v[:-1]])
    return jnp.zeros_like(valid).at[order].set(later)

  def repeated_by_table(values):
    local = jnp.where(valid, values - low, high - low)  # unused slots: dropped
    earliest = jnp.full(high - low, slots.shape[0], jnp.int32).at[local].min(slots, mode="drop")
    return valid & (earliest.at[local].get(mode="fill", fill_value=-1) != slots)

  if by_table is None:
    by_table = valid.shape[0] >= _TABLE_FROM
  repeated = repeated_by_table if by_table else repeated_by_sort

  def body(carry):
    k, values, again = carry
    k, sub = jax.random.split(k)
    values = jnp.where(again, jax.random.randint(sub, values.shape, low, high), values)
    return k, values, repeated(values)

  key, sub = jax.random.split(key)
  values = jax.random.randint(sub, valid.shape, low, high)
  _, values, _ = jax.lax.while_loop(lambda c: jnp.any(c[2]), body,
                                    (key, values, repeated(values)))
  return values


#: From this many slots, :func:`_distinct_positions` finds repeats by a table, not a sort.
_TABLE_FROM = 512


class _SmallMove(NamedTuple):
  off: jax.Array        # positions in [0, K) of the ones switched off
  on: jax.Array         # positions in [K, N) of the zeros switched on
  flips: Flips
  packed: jax.Array     # the candidate, bit-packed
  distances: jax.Array  # the candidate's Hamming distances to the memory's rows


def _propose_small(key, chain: Chain, n_eff, threshold, capacity: int, n_ones: int,
                   schedule: Schedule, count_distances: bool = False) -> _SmallMove:
  """A swap move of ``n_eff <= capacity`` entries per pool in O(capacity) work.

  The ``n_eff`` ones switched off are distinct uniform positions of ``order``'s
  first ``K`` entries, the zeros switched on distinct positions of the rest, so
  the move has :func:`swap_move`'s distribution. The distances to the memory's
  rows follow from the current ones: flipping an entry adds 1 where the row
  agrees with the current mask and subtracts 1 where it does not (a gather of
  ``2 capacity`` bits per row); with ``count_distances`` (for large capacities)
  they are counted on the packed candidate instead.
  """
  n_units = chain.mask.shape[0]
  valid = jnp.arange(capacity) < n_eff
  both = jnp.concatenate([valid, valid])
  turn_on = jnp.concatenate([jnp.zeros(capacity, bool), jnp.ones(capacity, bool)])

  def draw(k):
    k_off, k_on = jax.random.split(k)
    off = _distinct_positions(k_off, valid, 0, n_ones)
    on = _distinct_positions(k_on, valid, n_ones, n_units)
    index = chain.order[jnp.concatenate([off, on])]
    flips = Flips(jnp.where(both, index, n_units), turn_on)
    packed = _flip_packed(chain.packed, flips)
    if count_distances:
      distances = _distances(chain.tabu, packed)
    else:
      stored = (chain.tabu[:, index >> 3] >> (7 - (index & 7)).astype(jnp.uint8)) & 1
      disagree = jnp.sum(both & (stored.astype(bool) == turn_on), axis=1, dtype=jnp.int32)
      distances = chain.tabu_distance + (2 * n_eff - 2 * disagree).astype(jnp.int32)
    return _SmallMove(off, on, flips, packed, distances)
  return _outside_memory(key, draw, lambda move: move.distances, chain, threshold, schedule)


def _flip_packed(packed: jax.Array, flips: Flips) -> jax.Array:
  """The packed mask with ``flips`` applied (distinct bits: adding them modulo 256 sets or
  clears each)."""
  bit = (jnp.uint8(1) << (7 - (flips.index & 7)).astype(jnp.uint8))
  delta = jnp.where(flips.turn_on, bit, jnp.uint8(0) - bit)
  return packed.at[flips.index >> 3].add(delta, mode="drop")


# --------------------------------------------------------------------------
# The search

#: The small moves' capacities: a level whose move flips ``n`` entries per pool
#: uses the smallest capacity ``>= n`` (its work is proportional to it), or the
#: full :func:`swap_move` above the largest.
CAPACITIES = (8, 32, 128, 512, 1024, 2048, 4096, 8192)
#: Small moves of a larger capacity than this are evaluated in full: an
#: incremental update costs O(B) per flipped entry, and beyond about 4,096
#: flipped entries (2,048 per pool) it costs more than the full first layer.
INCREMENTAL_CAPACITY = 2048
#: Small moves of at most this capacity undo a rejected candidate's change to the
#: evaluator's cache (:attr:`Evaluator.revert`) rather than keep two caches and
#: select one: O(flips) work instead of copying the cache, which dominates the
#: smallest moves, the more so for vmapped chains whose caches leave the CPU's cache.
REVERT_CAPACITY = 128
#: With an incremental evaluator, the cache is recomputed in full whenever the
#: candidates of a level have flipped this many entries since the last time.
REFRESH_FLIPS = 1 << 16


class Plan(NamedTuple):
  """The search's per-level inputs, fixed before it starts (numpy arrays over levels).

  Attributes:
    iterations, temperatures: :func:`level_schedule`.
    sizes: the move size ``n`` (:func:`neighbourhood_sizes`).
    flips: ``n`` cut to the smaller pool (the entries flipped per pool).
    tier: the index in ``capacities`` of the level's small move, or
      ``len(capacities)`` for the full :func:`swap_move`.
    rebuild: whether ``order`` is rebuilt at the level's start (a small move after
      full ones, which do not maintain it).
    n_units, n_pruned: ``N`` and the zeros of the mask.
    capacities: the small moves' capacities.
    incremental_capacity: small moves of a larger capacity are evaluated in full.
  """
  iterations: np.ndarray
  temperatures: np.ndarray
  sizes: np.ndarray
  flips: np.ndarray
  tier: np.ndarray
  rebuild: np.ndarray
  n_units: int
  n_pruned: int
  capacities: tuple[int, ...]
  incremental_capacity: int = INCREMENTAL_CAPACITY

  @property
  def levels(self) -> int:
    return len(self.iterations)


def plan_search(n_units: int, sparsity: float, schedule: Schedule,
                capacities: Sequence[int] = CAPACITIES,
                incremental_capacity: int = INCREMENTAL_CAPACITY) -> Plan:
  """The per-level inputs of a search over ``n_units`` entries at ``sparsity``."""
  if schedule.tabu not in TABU_RULES:
    raise ValueError(f"tabu must be one of {TABU_RULES}, got {schedule.tabu!r}")
  capacities = tuple(sorted(capacities))
  n_pruned = int(n_units * sparsity)
  iterations, temperatures = level_schedule(schedule)
  sizes = neighbourhood_sizes(n_units - n_pruned, len(iterations), schedule.n_decay,
                              schedule.reset_below, schedule.reset_to)
  flips = np.minimum(sizes, min(n_pruned, n_units - n_pruned))
  tier = np.searchsorted(np.asarray(capacities, np.int64), flips).astype(np.int32)
  small = tier < len(capacities)
  rebuild = small & ~np.concatenate([[False], small[:-1]])
  return Plan(iterations, temperatures, sizes.astype(np.int32), flips.astype(np.int32), tier,
              rebuild, n_units, n_pruned, capacities, incremental_capacity)


def init_chain(evaluate: Evaluator | Callable, key: jax.Array, plan: Plan,
               schedule: Schedule) -> Chain:
  """A chain at its start: a uniformly random mask (from ``key``'s first split)."""
  evaluator = _as_evaluator(evaluate)
  start_key, _ = jax.random.split(key)
  mask = random_mask(start_key, plan.n_units, plan.n_pruned)
  dtype = jnp.float32
  tabu_size = schedule.tabu_size
  return Chain(mask=mask, ave=jnp.asarray(schedule.start_accuracy, dtype),
               level_sum=jnp.zeros((), dtype), level_count=jnp.zeros((), jnp.int32),
               best_mask=mask, best_mean=jnp.asarray(-jnp.inf, dtype),
               tabu=jnp.zeros((tabu_size, -(-plan.n_units // 8)), jnp.uint8),
               tabu_filled=jnp.zeros(tabu_size, bool), tabu_next=jnp.zeros((), jnp.int32),
               tabu_distance=jnp.zeros(tabu_size, jnp.int32), packed=pack(mask),
               order=_ones_first(mask), cache=evaluator.full(mask)[1],
               evaluations=jnp.zeros((), jnp.int32), accepted=jnp.zeros((), jnp.int32))


def _as_evaluator(evaluate) -> Evaluator:
  return evaluate if isinstance(evaluate, Evaluator) else plain_evaluator(evaluate)


def _ones_first(mask: jax.Array) -> jax.Array:
  return jnp.argsort(~mask, stable=True).astype(jnp.int32)


def _select(ok, new, old):
  return jax.tree.map(lambda a, b: jnp.where(ok, a, b), new, old)


def _record(chain: Chain, ok, accuracy, n_eff, packed_candidate, distances) -> Chain:
  """The running mean, the counters and the memory after a candidate (``ok``: accepted)."""
  level_sum = chain.level_sum + jnp.where(ok, accuracy, 0)
  level_count = chain.level_count + ok
  row = chain.tabu_next
  distance = jnp.where(ok, distances, chain.tabu_distance).at[row].set(
      jnp.where(ok, 0, 2 * n_eff))
  return chain._replace(
      ave=jnp.where(ok, level_sum / jnp.maximum(level_count, 1), chain.ave),
      level_sum=level_sum, level_count=level_count,
      tabu=chain.tabu.at[row].set(packed_candidate),
      tabu_filled=chain.tabu_filled.at[row].set(True),
      tabu_next=(row + 1) % chain.tabu_filled.shape[0], tabu_distance=distance,
      evaluations=chain.evaluations + 1, accepted=chain.accepted + ok)


class LevelInputs(NamedTuple):
  """The per-level inputs of a run of consecutive levels (arrays over those levels).

  ``count`` is 0 on padding levels, which run no candidate.
  """
  index: jax.Array
  count: jax.Array
  n: jax.Array
  n_eff: jax.Array
  temperature: jax.Array
  move: jax.Array      # index into the plan's moves (:func:`plan_moves`)
  rebuild: jax.Array
  refresh: jax.Array   # an incremental level after one that left the cache stale


def plan_moves(plan: Plan) -> list[int]:
  """The tiers the plan's levels use, in order: a level's ``move`` indexes this list."""
  return sorted(set(plan.tier.tolist()))


def level_inputs(plan: Plan, start: int = 0, stop: int | None = None,
                 length: int | None = None) -> LevelInputs:
  """The inputs of levels ``[start, stop)``, padded to ``length`` levels (default: none)."""
  stop = plan.levels if stop is None else stop
  length = stop - start if length is None else length
  levels = np.arange(start, start + length)
  real = levels < stop
  at = np.minimum(levels, plan.levels - 1)
  moves = np.searchsorted(plan_moves(plan), plan.tier[at])
  keeps = keeps_cache(plan)
  stale = keeps & ~np.concatenate([[True], keeps[:-1]])
  return LevelInputs(
      index=jnp.asarray(levels, jnp.int32),
      count=jnp.asarray(np.where(real, plan.iterations[at], 0), jnp.int32),
      n=jnp.asarray(plan.sizes[at], jnp.int32), n_eff=jnp.asarray(plan.flips[at], jnp.int32),
      temperature=jnp.asarray(plan.temperatures[at], jnp.float32),
      move=jnp.asarray(moves, jnp.int32), rebuild=jnp.asarray(real & plan.rebuild[at]),
      refresh=jnp.asarray(real & stale[at]))


def keeps_cache(plan: Plan) -> np.ndarray:
  """Per level, whether its move updates the evaluator's cache (a small move of at most
  the incremental capacity); the others evaluate in full and leave the cache stale."""
  capacities = np.asarray(plan.capacities + (np.iinfo(np.int64).max,), np.int64)
  return capacities[plan.tier] <= plan.incremental_capacity


def run_levels(evaluate: Evaluator | Callable, key: jax.Array, chain: Chain, plan: Plan,
               schedule: Schedule, inputs: LevelInputs | None = None
               ) -> tuple[Chain, jax.Array]:
  """The levels of ``inputs`` (default: every level) from ``chain``; returns the chain and
  their level means. Traceable, vmappable over ``key`` and ``chain``; running the levels
  in several calls gives the chain of one call (every candidate's key derives from
  ``key``, its level and its index), so a search resumes between levels. ``inputs`` may
  be traced: one compiled program serves every run of the same length."""
  evaluator = _as_evaluator(evaluate)
  inputs = level_inputs(plan) if inputs is None else inputs
  n_ones = plan.n_units - plan.n_pruned
  dtype = jnp.float32
  _, key = jax.random.split(key)

  def finish(chain: Chain, ok, accuracy, n_eff, candidate_packed, distances, kept) -> Chain:
    """The chain after a candidate: ``kept`` is the mask it keeps (the candidate if
    ``ok``), bit-packed and as the evaluator's cache: ``(mask, packed, cache)``."""
    chain = _record(chain, ok, accuracy, n_eff, candidate_packed, distances)
    mask, packed, cache = kept
    return chain._replace(mask=mask, packed=packed, cache=cache)

  def full_step(level_key, n, n_eff, temperature):
    threshold = _tabu_threshold(schedule, n)

    def step(i, chain: Chain) -> Chain:
      propose_key, accept_key = jax.random.split(jax.random.fold_in(level_key, i))
      candidate, packed, distances = _propose_full(propose_key, chain, n, threshold, schedule)
      accuracy = evaluator.full(candidate)[0].astype(dtype)
      ok = accept(accept_key, chain.ave, accuracy, temperature)
      kept = _select(ok, (candidate, packed), (chain.mask, chain.packed)) + (chain.cache,)
      return finish(chain, ok, accuracy, n_eff, packed, distances, kept)
    return step

  def small_step(capacity, level_key, n, n_eff, temperature):
    threshold = _tabu_threshold(schedule, n)
    # Larger moves than the incremental capacity are evaluated in full (and their
    # distances to the memory counted on the packed candidate).
    incremental = evaluator.incremental and capacity <= plan.incremental_capacity
    revert = incremental and evaluator.revert is not None and capacity <= REVERT_CAPACITY
    every = jnp.maximum(1, REFRESH_FLIPS // (2 * jnp.maximum(n_eff, 1)))

    def step(i, chain: Chain) -> Chain:
      propose_key, accept_key = jax.random.split(jax.random.fold_in(level_key, i))
      move = _propose_small(propose_key, chain, n_eff, threshold, capacity, n_ones, schedule,
                            count_distances=capacity > plan.incremental_capacity)
      flips = move.flips
      candidate = chain.mask.at[flips.index].set(flips.turn_on, mode="drop")
      if incremental:
        accuracy, cache = evaluator.update(chain.cache, candidate, flips)
      else:  # evaluated in full; the cache is left stale (``LevelInputs.refresh``)
        accuracy, cache = evaluator.full(candidate)[0], chain.cache
      accuracy = accuracy.astype(dtype)
      ok = accept(accept_key, chain.ave, accuracy, temperature)
      if revert:  # undo a rejected candidate's changes in place (no copy of mask or cache)
        undone = candidate.at[flips.index].set(flips.turn_on == ok, mode="drop")
        kept = (undone, jnp.where(ok, move.packed, chain.packed),
                evaluator.revert(cache, undone, flips, ok))
      elif incremental:
        kept = _select(ok, (candidate, move.packed, cache),
                       (chain.mask, chain.packed, chain.cache))
      else:
        kept = _select(ok, (candidate, move.packed), (chain.mask, chain.packed)) + (cache,)
      chain = finish(chain, ok, accuracy, n_eff, move.packed, move.distances, kept)
      taken = ok & (jnp.arange(capacity) < n_eff)
      off_entries, on_entries = flips.index[:capacity], flips.index[capacity:]
      order = chain.order.at[jnp.where(taken, move.off, plan.n_units)].set(
          on_entries, mode="drop").at[jnp.where(taken, move.on, plan.n_units)].set(
              off_entries, mode="drop")
      chain = chain._replace(order=order)
      if not incremental:
        return chain
      return jax.lax.cond((i + 1) % every == 0, refresh, lambda c: c, chain)
    return step

  def refresh(chain: Chain) -> Chain:
    return chain._replace(cache=evaluator.full(chain.mask)[1])

  most = int(plan.iterations.max())

  def level_end(tier: int, index, chain: Chain) -> Chain:
    """The cache after a level of move ``tier``: recomputed where that move leaves part of
    it stale, and every so many levels of incremental moves (about
    :data:`REFRESH_FLIPS` flipped entries). Moves evaluated in full leave all of it
    stale; the next incremental level recomputes it first (``LevelInputs.refresh``)."""
    if (tier == len(plan.capacities) or not evaluator.incremental
        or plan.capacities[tier] > plan.incremental_capacity):
      return chain
    slots = 2 * plan.capacities[tier]
    if evaluator.partial_above is not None and slots > evaluator.partial_above:
      return refresh(chain)
    every = max(1, REFRESH_FLIPS // (slots * most))
    return jax.lax.cond(index % every == 0, refresh, lambda c: c, chain)

  def level(chain: Chain, inputs):
    # A padding level (no candidate) leaves the chain as it is.
    chain = jax.lax.cond(inputs[1] > 0, lambda c: run_level(c, inputs), lambda c: c, chain)
    return chain, chain.ave

  def run_level(chain: Chain, inputs) -> Chain:
    index, count, n, n_eff, temperature, move, rebuild, stale = inputs
    level_key = jax.random.fold_in(key, index)
    if evaluator.incremental:
      chain = jax.lax.cond(stale, refresh, lambda c: c, chain)
    chain = chain._replace(level_sum=jnp.zeros((), dtype), level_count=jnp.zeros((), jnp.int32))
    chain = jax.lax.cond(rebuild, lambda c: c._replace(order=_ones_first(c.mask)),
                         lambda c: c, chain)
    makes = [functools.partial(small_step, capacity) for capacity in plan.capacities]
    makes.append(full_step)
    branches = [lambda c, make=makes[t], t=t: level_end(t, index, jax.lax.fori_loop(
        0, count, make(level_key, n, n_eff, temperature), c)) for t in plan_moves(plan)]
    chain = jax.lax.switch(move, branches, chain) if len(branches) > 1 else branches[0](chain)
    better = chain.ave > chain.best_mean
    return chain._replace(best_mask=jnp.where(better, chain.mask, chain.best_mask),
                          best_mean=jnp.where(better, chain.ave, chain.best_mean))

  return jax.lax.scan(level, chain, tuple(inputs))


def result(chain: Chain, level_means: jax.Array) -> Result:
  """The :class:`Result` of a finished chain and its level means."""
  return Result(best_mask=chain.best_mask, best_mean=chain.best_mean, mask=chain.mask,
                level_means=level_means, evaluations=chain.evaluations,
                accepted=chain.accepted)


def anneal(evaluate: Evaluator | Callable[[jax.Array], jax.Array], key: jax.Array,
           n_units: int, sparsity: float, schedule: Schedule = CNN_SCHEDULE,
           capacities: Sequence[int] = CAPACITIES,
           incremental_capacity: int = INCREMENTAL_CAPACITY) -> Result:
  """Runs one chain of the search (module docstring); traceable, vmappable over ``key``.

  Args:
    evaluate: ``mask (bool[N]) -> accuracy in %`` of the masked network on
      the evaluation subset (compiled into the loop), or an :class:`Evaluator`
      that updates it from the flipped entries (:func:`first_layer_evaluator`).
    key: the chain's PRNG key.
    n_units: ``N``.
    sparsity: the share of zeros; the mask has ``int(N * sparsity)`` of them.
    schedule: the constants (:data:`CNN_SCHEDULE`, :data:`MLP_SCHEDULE`).
    capacities: the small moves' capacities (``()``: every move by :func:`swap_move`).
    incremental_capacity: small moves of a larger capacity are evaluated in full.
  """
  plan = plan_search(n_units, sparsity, schedule, capacities, incremental_capacity)
  chain = init_chain(evaluate, key, plan, schedule)
  chain, level_means = run_levels(evaluate, key, chain, plan, schedule)
  return result(chain, level_means)
