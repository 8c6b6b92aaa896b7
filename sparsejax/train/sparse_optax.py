r"""Sparse training in one's own loop: an optax wrapper that keeps the masks.

:func:`sparsify` turns any ``optax.GradientTransformation`` into one whose
state carries the mask tree (:class:`SparseState`), so an ordinary training
loop becomes a sparse one by changing the line that builds the optimiser::

  tx = sparsify(optax.adam(1e-3), gradual(0.1, start=1000, end=9000, frequency=100))
  opt_state = tx.init(params)
  ...
  updates, opt_state = tx.update(grads, opt_state, params)   # params required
  params = optax.apply_updates(params, updates)               # pruned entries: exactly 0

At update :math:`t` (the number of updates taken before, kept in the state),
with gradients :math:`g`, parameters :math:`\theta` and masks :math:`m`:

1. if :math:`t` is an update step of the :class:`PruningSchedule`, the masks
   keep the ``round(d_t n)`` highest-scoring prunable entries, over all
   prunable leaves together (:func:`sparsejax.masks.global_top_k`) or
   ``round(d_t n_l)`` within each leaf :math:`l`
   (:func:`sparsejax.masks.top_k`), where :math:`n` counts the prunable
   entries and :math:`d_t` is the scheduled density (:func:`density_at`);
   entries already pruned are never revived, and ties go to the lower index;
2. the inner transformation receives :math:`m \odot g`;
3. its updates :math:`u` are replaced by :math:`-\theta` on the pruned
   entries, so that ``optax.apply_updates`` gives
   :math:`\theta + (-\theta) = 0` exactly there, whatever the inner state
   holds (Adam's moments of a freshly pruned entry are not zero).

Everything runs inside the compiled ``update``: the schedule is read from the
traced step count with ``jnp.where`` and the mask update sits in a
``lax.cond``, so one compiled step serves every step, with no transfer to
the host. The peer is jaxpruner's ``BaseUpdater.wrap_optax``
(google-research/jaxpruner), whose ``post_gradient_update`` the re-masking of
step 3 makes unnecessary here.

The gradual schedule is Zhu & Gupta's cubic one (M. Zhu and S. Gupta, "To
prune, or not to prune: exploring the efficacy of pruning for model
compression", ICLR workshop 2018, Eq. 1), written for the density
:math:`d = 1 - s`:

.. math::  d_t = d_f + (d_i - d_f)\Big(1 - \frac{t - t_0}{t_1 - t_0}\Big)^3,
           \qquad t = t_0,\ t_0 + \Delta t,\ \dots,\ t_1,

from the initial density :math:`d_i` at :math:`t_0` (``start``) to the final
:math:`d_f` at :math:`t_1` (``end``), the masks changing every
:math:`\Delta t` (``frequency``) steps and at :math:`t_1`.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

from sparsejax import masks as masks_lib

Params = Any
Masks = Any
#: ``(params, grads) -> scores``: a tree shaped like ``params`` of importances,
#: one per entry (higher = kept).
ScoreFn = Callable[[Params, Params], Params]



# --------------------------------------------------------------------------
# Schedules


class PruningSchedule(NamedTuple):
  """When the masks change, and to which density of the prunable entries.

  The masks are recomputed at the steps ``start + k * frequency`` up to
  ``end``, and at ``end``; the target density of each is :func:`density_at`.
  Build one with :func:`one_shot` or :func:`gradual`.

  Attributes:
    start: the first update step :math:`t_0`.
    end: the last update step :math:`t_1 \\ge t_0`, where ``final_density``
      is reached.
    frequency: steps between two updates, :math:`\\Delta t \\ge 1`.
    initial_density: :math:`d_i`, the density of the update at ``start``.
    final_density: :math:`d_f`, the density from ``end`` on.
  """
  start: int
  end: int
  frequency: int
  initial_density: float
  final_density: float


def _check_density(name: str, value) -> None:
  if not 0.0 < value <= 1.0:
    raise ValueError(f"{name} must be in (0, 1], got {value}")


def _check_step(name: str, value) -> None:
  if isinstance(value, bool) or not isinstance(value, int) or value < 0:
    raise ValueError(f"{name} must be an int >= 0, got {value!r}")


def one_shot(density: float, step: int) -> PruningSchedule:
  """Prunes once, at update ``step``, to ``density`` of the prunable entries.

  Args:
    density: the kept fraction, in (0, 1].
    step: the update (0-based count of ``update`` calls) that prunes; the
      masks are scored on the parameters that this update receives.
  """
  _check_density("density", density)
  _check_step("step", step)
  return PruningSchedule(start=step, end=step, frequency=1,
                         initial_density=float(density), final_density=float(density))


def gradual(final_density: float, *, start: int, end: int, frequency: int,
            initial_density: float = 1.0) -> PruningSchedule:
  r"""Zhu & Gupta's cubic schedule from ``initial_density`` to ``final_density``.

  .. math::  d_t = d_f + (d_i - d_f)\,(1 - (t - t_0)/(t_1 - t_0))^3

  at the update steps :math:`t_0, t_0 + \Delta t, \dots` and :math:`t_1`
  (M. Zhu and S. Gupta, "To prune, or not to prune", ICLR workshop 2018,
  Eq. 1, with sparsity :math:`s = 1 - d`). It prunes fast while many weights
  are redundant and slowly near the end, giving the network time to recover.

  Args:
    final_density: :math:`d_f`, in (0, 1].
    start: :math:`t_0`, the first update step (>= 0).
    end: :math:`t_1 \ge t_0`, the last update step.
    frequency: :math:`\Delta t \ge 1`, steps between updates (the paper's
      examples prune every 100 to 1000 steps).
    initial_density: :math:`d_i \ge d_f`, in (0, 1] (default 1: dense).
  """
  _check_density("final_density", final_density)
  _check_density("initial_density", initial_density)
  if final_density > initial_density:
    raise ValueError(f"final_density ({final_density}) must be <= initial_density "
                     f"({initial_density}): masks only ever lose entries")
  _check_step("start", start)
  _check_step("end", end)
  if end < start:
    raise ValueError(f"end must be >= start, got start={start}, end={end}")
  if isinstance(frequency, bool) or not isinstance(frequency, int) or frequency < 1:
    raise ValueError(f"frequency must be an int >= 1, got {frequency!r}")
  return PruningSchedule(start=start, end=end, frequency=frequency,
                         initial_density=float(initial_density),
                         final_density=float(final_density))


def density_at(schedule: PruningSchedule, step) -> jax.Array:
  r"""The scheduled density :math:`d_t` (traceable in ``step``).

  :math:`d_i` before ``start``, :math:`d_f` from ``end`` on, Zhu & Gupta's
  cubic in between (see :func:`gradual`); the masks take this density at the
  update steps only (:func:`is_update_step`).
  """
  d_i, d_f = schedule.initial_density, schedule.final_density
  length = schedule.end - schedule.start
  if length == 0:
    progress = (jnp.asarray(step) >= schedule.start).astype(jnp.float32)
  else:
    progress = jnp.clip((jnp.asarray(step, jnp.float32) - schedule.start) / length, 0.0, 1.0)
  return d_f + (d_i - d_f) * (1.0 - progress) ** 3


def is_update_step(schedule: PruningSchedule, step) -> jax.Array:
  """Whether the masks are recomputed at ``step`` (a traceable boolean)."""
  step = jnp.asarray(step)
  periodic = (step - schedule.start) % schedule.frequency == 0
  inside = (step >= schedule.start) & (step <= schedule.end)
  return inside & (periodic | (step == schedule.end))


# --------------------------------------------------------------------------
# Scores


def magnitude_score(params: Params, grads: Params) -> Params:
  """:math:`|\\theta|`: magnitude pruning (Han et al., 2015; Zhu & Gupta, 2018)."""
  del grads
  return jax.tree.map(jnp.abs, params)


def saliency_score(params: Params, grads: Params) -> Params:
  """:math:`|\\theta \\odot g|`: the first-order Taylor estimate of the loss change
  when an entry is removed (Mozer & Smolensky, 1989; SNIP, Lee et al., 2019),
  on the gradient of the current batch."""
  return jax.tree.map(lambda p, g: jnp.abs(p * g), params, grads)


# --------------------------------------------------------------------------
# The wrapper


class SparseState(NamedTuple):
  """The state of :func:`sparsify` (a pytree; no PRNG key lives here).

  Attributes:
    count: the number of updates taken (int32 scalar).
    masks: the mask tree over the parameters (``True`` = kept, ``None`` for
      the leaves that are never pruned).
    inner_state: the wrapped transformation's state.
  """
  count: jax.Array
  masks: Masks
  inner_state: optax.OptState


def under(key: str, predicate: masks_lib.PrunablePredicate = masks_lib.kernels_only
          ) -> masks_lib.PrunablePredicate:
  """A predicate for leaves below the top-level ``key`` that satisfy ``predicate``.

  For an optimiser over a larger tree than the model's parameters, such as
  ``{"params": ..., "objective": ...}`` (:func:`sparsejax.train.regularized.regularized`):
  ``prunable=under("params")`` masks the model's kernels and leaves the
  objective's variables dense.
  """
  def prunable(path, leaf):
    return bool(path) and path[0] == key and predicate(tuple(path[1:]), leaf)
  return prunable


def sparsify(inner: optax.GradientTransformation, schedule: PruningSchedule, *,
             scope: str = "global", score: ScoreFn = magnitude_score,
             prunable: masks_lib.PrunablePredicate = masks_lib.kernels_only,
             ) -> optax.GradientTransformationExtraArgs:
  """Wraps ``inner`` so that it trains under masks that it keeps in its state.

  See the module docstring for what one update does. ``update`` must receive
  the parameters (``tx.update(grads, opt_state, params)``); extra keyword
  arguments go to ``inner``.

  Args:
    inner: any optax transformation (Adam, SGD, a chain, ...).
    schedule: when and to which density the masks change (:func:`one_shot`,
      :func:`gradual`).
    scope: ``"global"`` (one ranking over all prunable leaves) or ``"layer"``
      (the scheduled density in each leaf).
    score: ``(params, grads) -> scores``, a tree shaped like ``params``
      (:func:`magnitude_score` by default; :func:`saliency_score`, or one's
      own): higher scores are kept, ties go to the lower index.
    prunable: which leaves get a mask, from their path and value (default
      :func:`sparsejax.masks.kernels_only`; :func:`sparsejax.masks.every_leaf`
      includes biases and norm parameters; :func:`under` for a tree around
      the parameters).

  Returns:
    An ``optax.GradientTransformationExtraArgs`` whose state is a
    :class:`SparseState`; read its masks with :func:`masks_of`.
  """
  if not isinstance(schedule, PruningSchedule):
    raise ValueError(f"schedule must be a PruningSchedule (from one_shot or gradual), "
                     f"got {type(schedule).__name__}")
  if scope not in masks_lib.SCOPES:
    raise ValueError(f"scope must be one of {masks_lib.SCOPES}, got {scope!r}")
  if not callable(score):
    raise ValueError(f"score must be a function (params, grads) -> scores, got {score!r}")
  inner = optax.with_extra_args_support(inner)

  def init(params: Params) -> SparseState:
    masks = masks_lib.ones_like(params, prunable)
    if not jax.tree_util.tree_leaves(masks):
      raise ValueError("prunable selects no leaf of the parameters (the default, "
                       "sparsejax.masks.kernels_only, selects leaves named 'kernel'); "
                       "pass prunable=sparsejax.masks.every_leaf or a predicate of your own")
    return SparseState(count=jnp.zeros((), jnp.int32), masks=masks,
                       inner_state=inner.init(params))

  def update(updates: Params, state: SparseState, params: Params | None = None, **extra_args):
    if params is None:
      raise ValueError("the sparsify update needs params: call "
                       "tx.update(grads, opt_state, params)")

    def prune(masks):
      return masks_lib.top_density(score(params, updates), masks,
                                   density_at(schedule, state.count), scope)

    masks = jax.lax.cond(is_update_step(schedule, state.count), prune, lambda m: m,
                         state.masks)
    grads = masks_lib.apply(masks, updates)
    inner_updates, inner_state = inner.update(grads, state.inner_state, params, **extra_args)
    # -theta on the pruned entries: theta + (-theta) is exactly 0.
    new_updates = masks_lib.map_masked(
        lambda m, u, p: u if m is None else jnp.where(m, u, jnp.negative(p).astype(u.dtype)),
        masks, inner_updates, params)
    return new_updates, SparseState(count=optax.safe_int32_increment(state.count),
                                    masks=masks, inner_state=inner_state)

  return optax.GradientTransformationExtraArgs(init, update)


# --------------------------------------------------------------------------
# Reading the state


def sparse_state_of(opt_state: optax.OptState) -> SparseState:
  """The one :class:`SparseState` inside ``opt_state`` (itself, or within a chain).

  Raises:
    ValueError: if ``opt_state`` holds no :class:`SparseState`, or several.
  """
  def is_sparse(x):
    return isinstance(x, SparseState)
  found = [x for x in jax.tree_util.tree_leaves(opt_state, is_leaf=is_sparse) if is_sparse(x)]
  if len(found) != 1:
    raise ValueError(f"opt_state must hold exactly one SparseState (the state of a "
                     f"sparsify transformation), found {len(found)}")
  return found[0]


def masks_of(opt_state: optax.OptState) -> Masks:
  """The current masks kept in ``opt_state`` (``None`` leaves: never pruned)."""
  return sparse_state_of(opt_state).masks


def density_of(opt_state: optax.OptState, params: Params | None = None) -> jax.Array:
  """The fraction of kept entries (traceable).

  Args:
    opt_state: a state holding a :class:`SparseState`.
    params: without them, the density of the prunable entries (the quantity
      the schedule sets); with them, of all parameters, the never-pruned
      leaves counting as kept.
  """
  masks = masks_of(opt_state)
  if params is not None:
    return masks_lib.kept_count(masks, params) / masks_lib.total_count(masks, params)
  return (sum(jnp.sum(m, dtype=jnp.int32) for m in jax.tree_util.tree_leaves(masks))
          / sum(m.size for m in jax.tree_util.tree_leaves(masks)))


def apply_masks(opt_state: optax.OptState, params: Params) -> Params:
  """``params`` with the entries pruned in ``opt_state`` set to zero.

  The updates of :func:`sparsify` already keep pruned entries at zero; this
  serves parameters from elsewhere (an initialisation, a checkpoint written
  before the masks, an exponential moving average) for inference or export.
  """
  return masks_lib.apply(masks_of(opt_state), params)
