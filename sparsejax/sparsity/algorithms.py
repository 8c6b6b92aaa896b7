r"""Sparse-training algorithms as pure functions of the step, the parameters and the gradients.

A :class:`SparseTraining` is what a train step needs to keep its masks: the
masks it starts from (``init``), when they change (``is_update_step``), how
(``update``), and how the gradient reaches the weights (straight through or
masked). Every function is traceable: the runner's train step
(:func:`sparsejax.train.step.make_train_step`) and the optax wrapper
(:func:`sparsejax.train.sparse_optax.sparsify`) run them inside the compiled
step, under ``lax.cond`` on the step counter, so a run stays one program and
seeds vmap.

**Pruning during training** (:func:`pruning`, with :func:`magnitude`,
:func:`random`, :func:`saliency`, :func:`snip`): at each update step of a
:class:`~sparsejax.sparsity.schedules.PruningSchedule` every leaf keeps its
scheduled share of the highest-scoring entries among those still kept
(pruned entries are never revived); scores :math:`|\theta|` (Zhu & Gupta,
2018), uniform noise, or :math:`|\theta \odot g|` on the step's gradient
(Mozer & Smolensky, 1989; SNIP, Lee et al., 2019, is its one-shot form at
step 0).

**Straight-through estimators** (:func:`ste`, :func:`sr_ste`): the weights
stay dense, the forward pass uses :math:`m \odot \theta`, and the gradient
:math:`g = \nabla_{m\odot\theta} L` updates every weight (Bengio et al.,
2013), so pruned weights can come back: at each update the masks are
recomputed from the dense weights. SR-STE (Zhou et al., "Learning N:M
fine-grained structured sparse neural networks from scratch", ICLR 2021,
Eq. 5) adds a decay of the pruned weights,

.. math::  \theta \leftarrow \theta - \gamma\,\big(g + \lambda_W\,(\bar m \odot \theta)\big),
           \qquad \bar m = 1 - m,\ \lambda_W = 2\times10^{-4}.

**Sparse from the start** (:func:`static`, :func:`evolutionary`,
:func:`rigl`): the masks start random at the target density (the budget of
:mod:`sparsejax.sparsity.distributions`) and keep it. Static sparse training
never changes them. SET (Mocanu et al., "Scalable training of artificial
neural networks with adaptive sparse connectivity", Nature Communications
2018) and RigL (Evci et al., "Rigging the lottery: making all tickets
winners", ICML 2020, Algorithm 1) update them every :math:`\Delta T` steps
until :math:`T_\text{end}`: in each leaf (or over all leaves, with the
``"global"`` budget) they drop the :math:`k = \mathrm{round}(f(t)\,n_\text{active})`
active weights of smallest :math:`|\theta|` and grow :math:`k` connections
among the others (a just-dropped one included), SET at random and RigL where
:math:`|g|` is largest, :math:`f(t)` the drop fraction
(:func:`~sparsejax.sparsity.schedules.drop_fraction_at`). A connection that
was inactive and is grown starts at exactly 0, with its optimiser moments
reset to 0; at an update step the optimiser takes no step (RigL's
Algorithm 1: the step updates the connections *instead of* the weights).

**Structures** (:mod:`sparsejax.sparsity.structures`): every algorithm
ranks the units of a structure (entries, blocks, channels) instead of
entries; with N:M each group of M along a kernel's input axis keeps N
(SET and RigL drop the :math:`k` weakest active entries of the leaf and
refill each group to N by their grow score), so the density is N/M whatever
the budget.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp

from sparsejax import masks as masks_lib
from sparsejax.sparsity import distributions, schedules, structures
from sparsejax.sparsity.schedules import PruningSchedule

Params = Any
Masks = Any
#: ``(params, grads, key) -> scores``, one score per entry (higher = kept).
ScoreFn = Callable[[Params, Params, jax.Array], Params]


# --------------------------------------------------------------------------
# Scores


def magnitude_score(params: Params, grads: Params, key: jax.Array) -> Params:
  """:math:`|\\theta|`: magnitude pruning (Han et al., 2015; Zhu & Gupta, 2018)."""
  del grads, key
  return jax.tree.map(jnp.abs, params)


def saliency_score(params: Params, grads: Params, key: jax.Array) -> Params:
  """:math:`|\\theta \\odot g|`, the first-order estimate of the loss change when an
  entry is removed (Mozer & Smolensky, 1989; SNIP, Lee et al., 2019)."""
  del key
  return jax.tree.map(lambda p, g: jnp.abs(p * g), params, grads)


def gradient_score(params: Params, grads: Params, key: jax.Array) -> Params:
  """:math:`|g|`: RigL's grow criterion."""
  del params, key
  return jax.tree.map(jnp.abs, grads)


def random_score(params: Params, grads: Params, key: jax.Array) -> Params:
  """Uniform noise on [0, 1), one independent draw per leaf (``fold_in(key, leaf index)``)."""
  del grads
  leaves, treedef = jax.tree_util.tree_flatten(params)
  return jax.tree_util.tree_unflatten(
      treedef, [jax.random.uniform(jax.random.fold_in(key, i), p.shape, jnp.float32)
                for i, p in enumerate(leaves)])


SCORES = {"magnitude": magnitude_score, "saliency": saliency_score, "random": random_score}


# --------------------------------------------------------------------------
# Budgets


#: The budgets: layer-wise distributions and one ranking over all leaves.
BUDGETS = (*distributions.DISTRIBUTIONS, "global")


class Budget(NamedTuple):
  """How the target density is shared among the prunable leaves.

  Attributes:
    distribution: ``"uniform"``, ``"er"``, ``"erk"`` (layer-wise,
      :func:`sparsejax.sparsity.distributions.leaf_densities`) or
      ``"global"`` (one ranking over all leaves; unstructured only).
    power: ERK's exponent (RigL's ``erk_power_scale``).
    overrides: ``(glob pattern, density)`` pairs fixing leaves' densities
      outside the budget.
    dense_first, dense_last: keep the first / last prunable leaf dense.
    order: the leaf paths in network order (for first and last; default the
      tree's order with numbers sorted naturally).
  """
  distribution: str = "erk"
  power: float = 1.0
  overrides: Sequence[tuple[str, float]] = ()
  dense_first: bool = False
  dense_last: bool = False
  order: Sequence[str] | None = None

  def check(self, structure) -> None:
    if self.distribution not in BUDGETS:
      raise ValueError(f"distribution must be one of {BUDGETS}, got {self.distribution!r}")
    if self.distribution == "global" and not isinstance(structure, structures.Unstructured):
      raise ValueError("the 'global' budget ranks entries over all leaves: it takes the "
                       "'unstructured' structure only; use a layer-wise distribution "
                       f"(uniform, er, erk) with {structure!r}")
    if self.distribution == "global" and (self.overrides or self.dense_first or self.dense_last):
      raise ValueError("overrides, dense_first and dense_last fix single leaves: they take a "
                       "layer-wise distribution (uniform, er, erk), not 'global'")

  def densities(self, masks: Masks, density: float) -> Masks:
    """The final density of each prunable leaf (``None`` for the global budget)."""
    if self.distribution == "global":
      return None
    return distributions.leaf_densities(
        masks, density, self.distribution, power=self.power, overrides=tuple(self.overrides),
        dense_first=self.dense_first, dense_last=self.dense_last, order=self.order)


# --------------------------------------------------------------------------
# The algorithm contract


class SparseTraining(NamedTuple):
  """A sparse-training algorithm (module docstring); build one with the functions below.

  Attributes:
    name: its name.
    init: ``(key, params, masks) -> masks``, the masks training starts from.
    update: ``(step, key, params, grads, masks) -> masks`` at an update step,
      with ``grads`` the dense gradient :math:`\\nabla_{m\\odot\\theta} L` of the
      step's batch. A straight-through algorithm's update runs after the
      optimiser step instead, on the new weights with ``step + 1`` and
      ``grads=None``: it makes the masks of the next forward pass (as
      jaxpruner's ``pre_forward_update``), and ``init`` those of the first.
    is_update_step: ``step -> bool`` (traceable).
    straight_through: the weights stay dense and take the dense gradient.
    decay: SR-STE's :math:`\\lambda_W` on the pruned weights (0: none).
    skip_update: the optimiser takes no step at an update step (SET, RigL).
  """
  name: str
  init: Callable[[jax.Array, Params, Masks], Masks]
  update: Callable[[jax.Array, jax.Array, Params, Params, Masks], Masks]
  is_update_step: Callable[[jax.Array], jax.Array]
  straight_through: bool = False
  decay: float = 0.0
  skip_update: bool = False


def _keep_count(density, n: int):
  return jnp.clip(jnp.round(density * n), 0, n).astype(jnp.int32)


def _leaf_top(structure, scores: jax.Array, density) -> jax.Array:
  """The mask keeping ``density`` of the units of one leaf by ``scores``."""
  units = structure.pool(scores)
  keep = structure.top(units, _keep_count(density, units.size))
  return structure.expand(keep, scores.shape)


def _select(structure, scores: Params, masks: Masks, densities: Masks, final_density: float,
            fraction, overall_density) -> Masks:
  """Top units per leaf at :math:`1 - \\varphi(1 - d_l)` (``overall_density`` for a leaf
  at the final density), or globally at ``overall_density`` (``densities`` ``None``)."""
  if densities is None:
    n = sum(m.size for m in jax.tree_util.tree_leaves(masks))
    flat = _flatten(_over_masks(lambda m, s: jnp.where(m, s, -jnp.inf), masks, scores), masks)
    return masks_lib.unflatten_like(masks_lib.top_k(flat, _keep_count(overall_density, n)),
                                    masks)
  def leaf_density(d):
    # A leaf at the overall target follows the schedule's density exactly.
    return overall_density if d == final_density else 1.0 - fraction * (1.0 - d)
  return _over_masks(
      lambda m, s, d: _leaf_top(structure, jnp.where(m, s, -jnp.inf), leaf_density(d)),
      masks, scores, densities)


def _all_kept(masks: Masks) -> Masks:
  return jax.tree.map(jnp.ones_like, masks)


def random_masks(key: jax.Array, masks: Masks, density: float, *, budget: Budget = Budget(),
                 structure=structures.Unstructured()) -> Masks:
  """Random masks at ``density`` under ``budget`` and ``structure`` (static, SET, RigL's start).

  Each leaf keeps exactly ``round(d_l * units)`` of its units (N:M: N of each
  group) drawn uniformly without replacement; ``None`` leaves stay ``None``.
  """
  budget.check(structure)
  scores = random_score(masks, None, key)
  return _select(structure, scores, _all_kept(masks), budget.densities(masks, density), density,
                 1.0, density)


def pruning(schedule: PruningSchedule, *, score: ScoreFn | str = "magnitude",
            budget: Budget = Budget(), structure=structures.Unstructured(),
            straight_through: bool = False, decay: float = 0.0,
            name: str | None = None) -> SparseTraining:
  """Prunes on ``schedule`` by ``score`` (module docstring).

  Without ``straight_through`` the masks only lose entries; with it they are
  recomputed from all (dense) weights at each update step.

  Args:
    schedule: when, and to which overall density.
    score: ``"magnitude"``, ``"saliency"``, ``"random"`` or a
      ``(params, grads, key) -> scores`` function.
    budget: the layer-wise distribution of the density (default ERK).
    structure: the unit of pruning (default entries).
    straight_through: keep dense weights (STE).
    decay: SR-STE's :math:`\\lambda_W` (with ``straight_through``).
    name: the algorithm's name (default from the score).
  """
  if isinstance(score, str):
    if score not in SCORES:
      raise ValueError(f"score must be one of {tuple(SCORES)} or a function, got {score!r}")
    name = name or score
    score = SCORES[score]
  if not callable(score):
    raise ValueError(f"score must be a function (params, grads, key) -> scores, got {score!r}")
  if decay and not straight_through:
    raise ValueError(f"decay (SR-STE's lambda_W) acts on the pruned weights that a "
                     f"straight-through estimator keeps: it needs straight_through=True, got "
                     f"decay={decay}")
  if decay < 0:
    raise ValueError(f"decay must be >= 0, got {decay}")
  if straight_through and score in (saliency_score, gradient_score):
    raise ValueError("a straight-through algorithm recomputes its masks from the updated "
                     "weights, before the next gradient: it takes a score of the weights "
                     "(magnitude, random), not the saliency")
  budget.check(structure)
  final = schedule.final_density

  def update(step, key, params, grads, masks):
    candidates = _all_kept(masks) if straight_through else masks
    scores = score(params, grads, key)
    return _select(structure, scores, candidates, budget.densities(masks, final), final,
                   schedules.sparsity_fraction(schedule, step), schedules.density_at(schedule, step))

  def is_update_step(step):
    return schedules.is_update_step(schedule, step)

  def init(key, params, masks):
    if not straight_through:
      return masks
    # The masks of the first forward pass, from the initial weights.
    return jax.lax.cond(is_update_step(0), lambda: update(0, key, params, None, masks),
                        lambda: masks)

  return SparseTraining(
      name=name or "pruning", init=init, update=update, is_update_step=is_update_step,
      straight_through=straight_through, decay=float(decay))


def magnitude(schedule: PruningSchedule, **kwargs) -> SparseTraining:
  """Magnitude pruning on ``schedule`` (Zhu & Gupta's gradual pruning with :func:`~schedules.gradual`)."""
  return pruning(schedule, score="magnitude", **kwargs)


def random(schedule: PruningSchedule, **kwargs) -> SparseTraining:
  """Random pruning on ``schedule`` (the baseline every method must beat)."""
  return pruning(schedule, score="random", **kwargs)


def saliency(schedule: PruningSchedule, **kwargs) -> SparseTraining:
  """Pruning by :math:`|\\theta \\odot g|` on ``schedule``."""
  return pruning(schedule, score="saliency", **kwargs)


def snip(density: float, **kwargs) -> SparseTraining:
  """SNIP (Lee et al., ICLR 2019): saliency pruning once, on the first step's batch."""
  return pruning(schedules.one_shot(density, 0), score="saliency", name="snip", **kwargs)


def ste(schedule: PruningSchedule, **kwargs) -> SparseTraining:
  """Magnitude masks with the straight-through estimator (Bengio et al., 2013)."""
  return pruning(schedule, score="magnitude", straight_through=True, name="ste", **kwargs)


def sr_ste(schedule: PruningSchedule, *, decay: float = 2e-4, **kwargs) -> SparseTraining:
  """SR-STE (Zhou et al., ICLR 2021): STE plus :math:`\\lambda_W` decay of the pruned weights."""
  return pruning(schedule, score="magnitude", straight_through=True, decay=decay,
                 name="sr_ste", **kwargs)


def static(density: float, *, budget: Budget = Budget(),
           structure=structures.Unstructured()) -> SparseTraining:
  """Static sparse training: random masks at initialisation, never changed."""
  budget.check(structure)
  return SparseTraining(
      name="static",
      init=lambda key, params, masks: masks_lib.logical_and(
          masks, random_masks(key, masks, density, budget=budget, structure=structure)),
      update=lambda step, key, params, grads, masks: masks,
      is_update_step=lambda step: jnp.zeros(jnp.shape(step), bool))


def _drop_grow_units(structure, magnitudes, grow_scores, active, fraction):
  """One leaf's (or the flattened global) drop and grow over units."""
  n_active = jnp.sum(active, dtype=jnp.int32)
  k = jnp.round(fraction * n_active).astype(jnp.int32)
  keep = structure.top(jnp.where(active, magnitudes, -jnp.inf), n_active - k)
  grow = structure.top(jnp.where(keep, -jnp.inf, grow_scores), k)
  return keep | grow


def _drop_grow_n_by_m(structure, magnitudes, grow_scores, active, fraction):
  """Drop the ``k`` weakest active entries of the leaf, refill every group to N."""
  n_active = jnp.sum(active, dtype=jnp.int32)
  k = jnp.round(fraction * n_active).astype(jnp.int32)
  keep = masks_lib.top_k(jnp.where(active, magnitudes, -jnp.inf).ravel(),
                         n_active - k).reshape(active.shape)
  kept = structure.groups(keep, fill=True)
  deficit = structure.n - jnp.sum(structure.groups(keep, fill=False), axis=-1, keepdims=True)
  score = jnp.where(kept, -jnp.inf, structure.groups(grow_scores, fill=-jnp.inf))
  order = jnp.argsort(-score, axis=-1, stable=True)
  rank = jnp.argsort(order, axis=-1, stable=True)
  grow = (rank < deficit) & (score > -jnp.inf)
  return keep | structure.ungroup(grow, active.shape)


def dynamic(density: float, *, grow: str, start: int, end: int, frequency: int,
            drop_fraction: float = 0.3, drop_decay: str = "cosine",
            budget: Budget = Budget(), structure=structures.Unstructured(),
            name: str | None = None) -> SparseTraining:
  """Drop by magnitude and grow by ``grow`` every ``frequency`` steps up to ``end``.

  Args:
    density: the density, at the start and after every update.
    grow: ``"gradient"`` (RigL) or ``"random"`` (SET).
    start: the first update step (RigL: :math:`\\Delta T`).
    end: :math:`T_\\text{end}` (RigL: 75 % of training): updates happen at
      ``start + k * frequency < end`` (RigL's Algorithm 1: :math:`t < T_\\text{end}`),
      where the cosine decay reaches 0.
    frequency: :math:`\\Delta T` (RigL: 100).
    drop_fraction: :math:`\\alpha` (RigL: 0.3; SET's :math:`\\zeta`: 0.3).
    drop_decay: ``"cosine"`` (RigL) or ``"constant"`` (SET).
    budget, structure: as :func:`pruning`.
    name: default ``"rigl"`` or ``"set"``.
  """
  if grow not in ("gradient", "random"):
    raise ValueError(f"grow must be 'gradient' (RigL) or 'random' (SET), got {grow!r}")
  if not 0.0 <= drop_fraction <= 1.0:
    raise ValueError(f"drop_fraction must be in [0, 1], got {drop_fraction}")
  if drop_decay not in schedules.DROP_DECAYS:
    raise ValueError(f"drop_decay must be one of {schedules.DROP_DECAYS}, got {drop_decay!r}")
  budget.check(structure)
  schedule = schedules.periodic(density, start=start, end=max(start, end), frequency=frequency)
  grow_score = gradient_score if grow == "gradient" else random_score
  n_by_m = isinstance(structure, structures.NByM)

  def update(step, key, params, grads, masks):
    fraction = schedules.drop_fraction_at(drop_fraction, drop_decay, end, step)
    magnitudes = magnitude_score(params, grads, key)
    growth = grow_score(params, grads, key)
    if budget.distribution == "global":
      flat = _drop_grow_units(structures.Unstructured(), _flatten(magnitudes, masks),
                              _flatten(growth, masks), _flatten(masks, masks), fraction)
      return masks_lib.unflatten_like(flat, masks)

    def leaf(m, mag, g):
      if n_by_m:
        return _drop_grow_n_by_m(structure, mag, g, m, fraction)
      units = _drop_grow_units(structure, structure.pool(mag), structure.pool(g),
                               structure.pool(m.astype(jnp.float32)) > 0.5, fraction)
      return structure.expand(units, m.shape)
    return _over_masks(leaf, masks, magnitudes, growth)

  return SparseTraining(
      name=name or ("rigl" if grow == "gradient" else "set"),
      init=lambda key, params, masks: masks_lib.logical_and(
          masks, random_masks(key, masks, density, budget=budget, structure=structure)),
      update=update,
      is_update_step=lambda step: schedules.is_update_step(schedule, step) & (step < end),
      skip_update=True)


def rigl(density: float, **kwargs) -> SparseTraining:
  """RigL (Evci et al., 2020): grow where :math:`|g|` is largest; see :func:`dynamic`."""
  return dynamic(density, grow="gradient", **kwargs)


def evolutionary(density: float, **kwargs) -> SparseTraining:
  """SET (Mocanu et al., 2018): grow at random; see :func:`dynamic`."""
  return dynamic(density, grow="random", **kwargs)


# --------------------------------------------------------------------------
# Inside a train step


def step_masks(algorithm: SparseTraining, step, key: jax.Array, params: Params,
               grads: Params, masks: Masks) -> tuple[Masks, jax.Array, Masks]:
  """The masks after ``step``'s update, whether it was an update step, and the grown entries.

  ``grads`` is the dense gradient at the masked weights. The update runs
  under ``lax.cond`` (only at update steps; ``step`` should be the same for
  every seed of a vmapped program, so that the condition stays a branch).
  ``grown`` marks the entries kept now and not before (``None`` leaves stay).
  """
  updating = algorithm.is_update_step(step)
  new = jax.lax.cond(updating, lambda: algorithm.update(step, key, params, grads, masks),
                     lambda: masks)
  grown = jax.tree.map(lambda old, m: None if old is None else m & ~old, masks, new,
                       is_leaf=_none)
  return new, updating, grown


def gradients(algorithm: SparseTraining, masks: Masks, params: Params, grads: Params) -> Params:
  """The gradient the optimiser receives: masked, or straight through (plus SR-STE's decay)."""
  if not algorithm.straight_through:
    return masks_lib.apply(masks, grads)
  if not algorithm.decay:
    return grads
  return masks_lib.map_masked(
      lambda m, g, p: g if m is None else g + algorithm.decay * jnp.where(m, 0, p).astype(g.dtype),
      masks, grads, params)


def reset_moments(opt_state, grown: Masks, like: Params):
  """``opt_state`` with every per-entry leaf zeroed where ``grown`` (RigL's new connections).

  The optimiser's per-entry states (Adam's moments, SGD's momentum) are the
  subtrees of ``opt_state`` with the structure of ``like`` (the tree the
  optimiser updates); ``grown`` is a prefix of ``like``'s structure whose
  ``None`` leaves (a leaf never pruned, or a whole subtree) are left as they are.
  """
  target = jax.tree.structure(like)

  def is_moments(x):
    return jax.tree.structure(x) == target

  def reset(sub):
    if not is_moments(sub):
      return sub
    return jax.tree.map(lambda g, s: s if g is None else jnp.where(g, jnp.zeros_like(s), s),
                        grown, sub, is_leaf=_none)
  return jax.tree.map(reset, opt_state, is_leaf=is_moments)


def _none(x) -> bool:
  return x is None


def _flatten(tree, masks: Masks) -> jax.Array:
  """The entries of ``tree`` under the prunable leaves of ``masks``, raveled in leaf order
  (``tree`` has the masks' structure or the parameters'; the inverse is
  :func:`sparsejax.masks.unflatten_like`)."""
  return jnp.concatenate(jax.tree_util.tree_leaves(
      _over_masks(lambda m, x: jnp.ravel(x), masks, tree)))


def _over_masks(fn: Callable, masks: Masks, *trees) -> Masks:
  """``fn(mask, *leaves)`` for every mask leaf, ``None`` where the mask is ``None``
  (``trees`` have the masks' structure, or the parameters' with more leaves)."""
  return jax.tree.map(lambda m, *rest: None if m is None else fn(m, *rest), masks, *trees,
                      is_leaf=_none)
