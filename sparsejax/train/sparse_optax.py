r"""Sparse training in one's own loop: an optax wrapper that keeps the masks.

:func:`sparsify` turns any ``optax.GradientTransformation`` into one whose
state carries the mask tree (:class:`SparseState`), so an ordinary training
loop becomes a sparse one by changing the line that builds the optimiser::

  tx = sparsify(optax.adam(1e-3), gradual(0.1, start=1000, end=9000, frequency=100))
  tx = sparsify(optax.adam(1e-3), sparsejax.sparsity.rigl(0.1, start=100, end=7500,
                                                          frequency=100), key=key)
  opt_state = tx.init(params)
  ...
  updates, opt_state = tx.update(grads, opt_state, params)   # params required
  params = optax.apply_updates(params, updates)               # pruned entries: exactly 0

The algorithm is any :class:`~sparsejax.sparsity.algorithms.SparseTraining`
(RigL, SET, static, STE, SR-STE, magnitude, saliency, random pruning, with a
layer-wise or global budget and any structure), or a schedule alone for
pruning by a score. At update :math:`t` (the number of updates taken before,
kept in the state), with gradients :math:`g` (taken at the masked weights),
parameters :math:`\theta` and masks :math:`m`:

1. if :math:`t` is an update step of the algorithm, its masks change
   (:func:`sparsejax.sparsity.algorithms.step_masks`: pruning keeps the
   ``round(d_t n)`` highest-scoring entries still kept, over all prunable
   leaves or in each leaf, ties to the lower index; RigL and SET drop and
   grow; the optimiser moments of grown entries are reset to 0);
2. the inner transformation receives :math:`m \odot g` (or :math:`g`
   itself, straight through, plus SR-STE's decay); at a drop-and-grow step
   it takes no step;
3. its updates :math:`u` are replaced by :math:`-\theta` on the pruned
   entries, so that ``optax.apply_updates`` gives
   :math:`\theta + (-\theta) = 0` exactly there, whatever the inner state
   holds (Adam's moments of a freshly pruned entry are not zero); the
   straight-through algorithms keep the dense weights instead, and the
   forward pass uses :func:`forward_params`.

Everything runs inside the compiled ``update``: the schedule is read from the
traced step count and the mask update sits in a ``lax.cond``, so one
compiled step serves every step, with no transfer to the host. The peer is
jaxpruner's ``BaseUpdater.wrap_optax`` (google-research/jaxpruner), whose
``post_gradient_update`` the re-masking of step 3 makes unnecessary here.
The schedules are those of :mod:`sparsejax.sparsity.schedules` (Zhu &
Gupta's gradual one among them).
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

from sparsejax import masks as masks_lib
from sparsejax.sparsity import algorithms
from sparsejax.sparsity.algorithms import Budget, SparseTraining
from sparsejax.sparsity.schedules import (PruningSchedule, density_at, gradual, is_update_step,
                                          one_shot, periodic, polynomial)

Params = Any
Masks = Any
#: ``(params, grads) -> scores``: a tree shaped like ``params`` of importances,
#: one per entry (higher = kept).
ScoreFn = Callable[[Params, Params], Params]

__all__ = ["PruningSchedule", "SparseState", "apply_masks", "density_at", "density_of",
           "forward_params", "gradual", "is_update_step", "magnitude_score", "masks_of",
           "one_shot", "periodic", "polynomial", "saliency_score", "sparse_state_of", "sparsify",
           "under"]


# --------------------------------------------------------------------------
# Scores


def magnitude_score(params: Params, grads: Params) -> Params:
  """:math:`|\\theta|`: magnitude pruning (:func:`sparsejax.sparsity.algorithms.magnitude_score`)."""
  return algorithms.magnitude_score(params, grads, None)


def saliency_score(params: Params, grads: Params) -> Params:
  """:math:`|\\theta \\odot g|` on the current batch's gradient
  (:func:`sparsejax.sparsity.algorithms.saliency_score`)."""
  return algorithms.saliency_score(params, grads, None)


# --------------------------------------------------------------------------
# The wrapper


class SparseState(NamedTuple):
  """The state of :func:`sparsify` (a pytree).

  Attributes:
    count: the number of updates taken (int32 scalar), the algorithm's clock.
    masks: the mask tree over the parameters (``True`` = kept, ``None`` for
      the leaves that are never pruned).
    inner_state: the wrapped transformation's state.
    key: the raw data (``jax.random.key_data``, so that a checkpoint holds
      plain integers) of the PRNG key of the algorithm's random draws (random
      masks, SET's regrowth); update ``t`` draws from ``fold_in(key, t)``, as
      optax's ``add_noise`` keeps its key in its state.
  """
  count: jax.Array
  masks: Masks
  inner_state: optax.OptState
  key: jax.Array


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


def sparsify(inner: optax.GradientTransformation, algorithm: SparseTraining | PruningSchedule,
             *, scope: str = "global", score: ScoreFn = magnitude_score,
             prunable: masks_lib.PrunablePredicate = masks_lib.kernels_only,
             key: jax.Array | None = None) -> optax.GradientTransformationExtraArgs:
  """Wraps ``inner`` so that it trains under masks that it keeps in its state.

  See the module docstring for what one update does. ``update`` must receive
  the parameters (``tx.update(grads, opt_state, params)``); extra keyword
  arguments go to ``inner``. ``grads`` is the gradient at the masked weights:
  the parameters themselves (their pruned entries are 0) or, for a
  straight-through algorithm (:func:`sparsejax.sparsity.algorithms.ste`),
  ``forward_params(opt_state, params)``, with the dense weights updated.

  Args:
    inner: any optax transformation (Adam, SGD, a chain, ...).
    algorithm: a sparse-training algorithm (:mod:`sparsejax.sparsity.algorithms`:
      RigL, SET, static, STE, SR-STE, magnitude, saliency, random, with any
      budget and structure), or a schedule (:func:`one_shot`, :func:`gradual`,
      ...) for pruning by ``score`` within ``scope``.
    scope: with a schedule: ``"global"`` (one ranking over all prunable
      leaves) or ``"layer"`` (the scheduled density in each leaf).
    score: with a schedule: ``(params, grads) -> scores``, a tree shaped like
      ``params`` (:func:`magnitude_score` by default; :func:`saliency_score`,
      or one's own): higher scores are kept, ties go to the lower index.
    prunable: which leaves get a mask, from their path and value (default
      :func:`sparsejax.masks.kernels_only`; :func:`sparsejax.masks.every_leaf`
      includes biases and norm parameters; :func:`under` for a tree around
      the parameters).
    key: the PRNG key of the algorithm's random draws (default ``key(0)``).

  Returns:
    An ``optax.GradientTransformationExtraArgs`` whose state is a
    :class:`SparseState`; read its masks with :func:`masks_of`.
  """
  if isinstance(algorithm, PruningSchedule):
    if scope not in masks_lib.SCOPES:
      raise ValueError(f"scope must be one of {masks_lib.SCOPES}, got {scope!r}")
    if not callable(score):
      raise ValueError(f"score must be a function (params, grads) -> scores, got {score!r}")
    algorithm = algorithms.pruning(
        algorithm, score=lambda params, grads, _: score(params, grads),
        budget=Budget("global" if scope == "global" else "uniform"), name="pruning")
  elif not isinstance(algorithm, SparseTraining):
    raise ValueError(f"algorithm must be a SparseTraining (sparsejax.sparsity.algorithms) or a "
                     f"PruningSchedule (one_shot, gradual, ...), got {type(algorithm).__name__}")
  inner = optax.with_extra_args_support(inner)
  base_key = jax.random.key(0) if key is None else key

  def init(params: Params) -> SparseState:
    masks = masks_lib.ones_like(params, prunable)
    if not jax.tree_util.tree_leaves(masks):
      raise ValueError("prunable selects no leaf of the parameters (the default, "
                       "sparsejax.masks.kernels_only, selects leaves named 'kernel'); "
                       "pass prunable=sparsejax.masks.every_leaf or a predicate of your own")
    init_key, state_key = jax.random.split(base_key)
    return SparseState(count=jnp.zeros((), jnp.int32),
                       masks=algorithm.init(init_key, params, masks),
                       inner_state=inner.init(params), key=jax.random.key_data(state_key))

  def update(updates: Params, state: SparseState, params: Params | None = None, **extra_args):
    if params is None:
      raise ValueError("the sparsify update needs params: call "
                       "tx.update(grads, opt_state, params)")
    key = jax.random.fold_in(jax.random.wrap_key_data(state.key), state.count)
    if algorithm.straight_through:
      # The forward pass used state.masks; the next one's come from the new weights.
      grads = algorithms.gradients(algorithm, state.masks, params, updates)
      inner_updates, inner_state = inner.update(grads, state.inner_state, params, **extra_args)
      masks = algorithms.step_masks(
          algorithm, state.count + 1, key, optax.apply_updates(params, inner_updates), None,
          state.masks)[0]
      return inner_updates, SparseState(count=optax.safe_int32_increment(state.count),
                                        masks=masks, inner_state=inner_state, key=state.key)
    masks, updating, grown = algorithms.step_masks(algorithm, state.count, key, params, updates,
                                                   state.masks)
    grads = algorithms.gradients(algorithm, masks, params, updates)
    if algorithm.skip_update:
      inner_updates, inner_state = jax.lax.cond(
          updating, lambda: (jax.tree.map(jnp.zeros_like, grads), state.inner_state),
          lambda: inner.update(grads, state.inner_state, params, **extra_args))
    else:
      inner_updates, inner_state = inner.update(grads, state.inner_state, params, **extra_args)
    inner_state = jax.lax.cond(
        updating, lambda: algorithms.reset_moments(inner_state, grown, params),
        lambda: inner_state)
    # -theta on the pruned entries: theta + (-theta) is exactly 0.
    new_updates = masks_lib.map_masked(
        lambda m, u, p: u if m is None else jnp.where(m, u, jnp.negative(p).astype(u.dtype)),
        masks, inner_updates, params)
    return new_updates, SparseState(count=optax.safe_int32_increment(state.count),
                                    masks=masks, inner_state=inner_state, key=state.key)

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


def forward_params(opt_state: optax.OptState, params: Params) -> Params:
  """The weights the forward pass uses: ``params`` under the current masks.

  For the straight-through algorithms the parameters stay dense and the loss
  is evaluated (and differentiated) at these; for the others they equal
  ``params``.
  """
  return masks_lib.apply(masks_of(opt_state), params)


def apply_masks(opt_state: optax.OptState, params: Params) -> Params:
  """``params`` with the entries pruned in ``opt_state`` set to zero.

  The updates of :func:`sparsify` already keep pruned entries at zero; this
  serves parameters from elsewhere (an initialisation, a checkpoint written
  before the masks, an exponential moving average) for inference or export.
  """
  return masks_lib.apply(masks_of(opt_state), params)
