r"""A sparsejax objective in one's own loss, and its sparse result.

For a weight-level :class:`~sparsejax.objectives.Objective` (RL1, DRR, PMMP,
the DeepHoyer regularisers, L1 / L2 / elastic net), one's own loss
:math:`L(\theta, \text{batch})` becomes

.. math::  L_R(\theta, s) = L(\phi(\theta, s), \text{batch}) + R(\theta, s)

over the trainables ``{"params": theta, "objective": s}`` (the tree of
:func:`sparsejax.train.trainables`), where :math:`\phi` is
``objective.forward`` (the identity for these objectives) and :math:`R` is
``objective.penalty``::

  loss = regularized(my_loss, objectives.drr(1e-4, 10.0))
  train_vars = trainables(params, objective.init(key, params))
  grads = jax.grad(loss)(train_vars, batch)

Objectives with **dual variables** (PMMP's multipliers :math:`u`, the
constrained L0 multipliers) are a saddle-point problem, min over
:math:`(\theta, w, \gamma)` and max over :math:`u`. The optimiser must
*ascend* on the duals and the state must be projected back onto its
feasible set after each update, as :func:`sparsejax.train.make_train_step`
does. In one's own loop that is two more pieces::

  tx = optax.chain(ascend_duals(objective), optax.adam(1e-3))
  ...
  train_vars = project(objective, optax.apply_updates(train_vars, updates))

(for objectives without duals both are the identity, so they can always be
used). :func:`sparse_result` reads the deterministic sparse result through
``objective.readout``, as the phase driver does.

Unit-level objectives (log-uniform and hard-concrete gates at the units, the
Gaussian code length's ``loss_transform``) need the model adapter and the
per-example loss; they run through :func:`sparsejax.train.make_train_step`,
and :func:`regularized` refuses them with that message.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import optax

from sparsejax import masks as masks_lib
from sparsejax.objectives.base import Objective
from sparsejax.train.step import ascent_signs

Params = Any
Masks = Any

_IDENTITY_LOSS_TRANSFORM = Objective._field_defaults["loss_transform"]


def _check_trainables(train_vars, where: str) -> None:
  if not isinstance(train_vars, dict) or set(train_vars) != {"params", "objective"}:
    keys = sorted(train_vars) if isinstance(train_vars, dict) else type(train_vars).__name__
    raise ValueError(f"{where} must be the trainables {{'params': ..., 'objective': ...}} "
                     f"(sparsejax.train.trainables(params, objective.init(key, params))), "
                     f"got {keys}")


def regularized(loss_fn: Callable[..., Any], objective: Objective, *,
                has_aux: bool = False) -> Callable[..., Any]:
  r"""``loss(trainables, *args, key=None, **kwargs)``: one's loss plus the objective's penalty.

  .. math::  L_R(\{\theta, s\}) = L(\phi(\theta, s), \dots) + R(\theta, s)

  with :math:`\phi` = ``objective.forward(theta, s, key, True)`` and
  :math:`R` = ``objective.penalty(theta, s)`` (the penalty is taken at
  :math:`\theta`, not at the effective parameters, as in the train step).

  Args:
    loss_fn: ``loss_fn(params, *args, **kwargs)``, a scalar (or
      ``(scalar, aux)`` with ``has_aux``); ``args`` and ``kwargs`` (the
      batch, say) are passed through.
    objective: a weight-level objective: its ``forward`` returns no unit
      gates and it has no ``loss_transform``.
    has_aux: ``loss_fn`` returns ``(loss, aux)``; the result then returns
      ``(loss + penalty, aux)``.

  Returns:
    The regularised loss over ``{"params": theta, "objective": s}``. Its
    ``key`` keyword goes to ``objective.forward``; it is needed only by
    objectives that draw noise there (weight-level hard-concrete gates),
    a fresh one for every step.

  Raises:
    ValueError: if ``objective`` has a ``loss_transform`` (at once), or its
      ``forward`` returns unit gates (when the loss is traced).
  """
  if objective.loss_transform is not _IDENTITY_LOSS_TRANSFORM:
    raise ValueError("objective transforms the per-example loss (loss_transform, e.g. "
                     "with_gauss_loss), which a scalar loss_fn cannot take; use "
                     "sparsejax.train.make_train_step")

  def loss(train_vars, *args, key: jax.Array | None = None, **kwargs):
    _check_trainables(train_vars, "the first argument of the regularized loss")
    params, state = train_vars["params"], train_vars["objective"]
    effective, gates = objective.forward(params, state, key, True)
    if gates is not None:
      raise ValueError("objective returns unit gates from forward, which need the model "
                       "adapter; regularized takes weight-level objectives only, use "
                       "sparsejax.train.make_train_step")
    out = loss_fn(effective, *args, **kwargs)
    penalty = objective.penalty(params, state)
    if has_aux:
      value, aux = out
      return value + penalty, aux
    return out + penalty

  return loss


def ascend_duals(objective: Objective) -> optax.GradientTransformation:
  """Negates the gradients of the objective's dual variables (``objective.ascend``).

  Chain it first, ``optax.chain(ascend_duals(objective), optax.adam(1e-3))``,
  on gradients over ``{"params", "objective"}``: the optimiser then descends
  on the primal variables and ascends on the duals, as
  :func:`sparsejax.train.make_train_step` (the same
  :func:`sparsejax.train.step.ascent_signs`). Stateless.
  """
  def init(params):
    del params
    return optax.EmptyState()

  def update(updates, state, params=None):
    del params
    _check_trainables(updates, "the gradients given to ascend_duals")
    return ({"params": updates["params"],
             "objective": ascent_signs(objective, updates["objective"])}, state)

  return optax.GradientTransformation(init, update)


def project(objective: Objective, train_vars: dict) -> dict:
  """The trainables with ``objective.project`` applied to the objective's state.

  Call it after ``optax.apply_updates``, as the train step does (PMMP clamps
  :math:`\\gamma` to [0, 1] and :math:`u \\ge 0`, the constrained L0 its
  multipliers to :math:`\\ge 0`); the identity for objectives without
  constraints.
  """
  _check_trainables(train_vars, "train_vars")
  return {"params": train_vars["params"], "objective": objective.project(train_vars["objective"])}


def sparse_result(objective: Objective, params: Params, objective_state: Any,
                  masks: Masks | None = None) -> tuple[Params, Masks]:
  """The deterministic sparse result ``(params, masks)`` through ``objective.readout``.

  As the phase driver (:func:`sparsejax.train.driver.readout`): the
  objective's masks are intersected with ``masks`` (e.g. those of a
  :func:`sparsejax.train.sparse_optax.sparsify` state, ``masks_of(opt_state)``),
  so nothing pruned comes back and leaves that are never pruned stay
  ``None``, and the parameters are returned with the pruned entries zeroed.
  An objective that prunes nothing itself (readout masks ``None``) returns
  ``masks`` as given. PMMP's readout keeps the nonzero entries of
  :math:`\\theta`: prune :math:`\\theta` first (magnitude, TAMADE) and zero
  the state there with :func:`sparsejax.objectives.prune_state`.

  Args:
    objective: the objective trained.
    params: the model parameters (``trainables["params"]``).
    objective_state: its state (``trainables["objective"]``).
    masks: optional masks to intersect with (``None``: the readout's alone).

  Returns:
    ``(params, masks)``; ``masks`` is ``None`` only if neither the readout nor
    the caller gives any.
  """
  out_params, out_masks = objective.readout(params, objective_state)
  if out_masks is None:
    return (out_params if masks is None else masks_lib.apply(masks, out_params)), masks
  if masks is not None:
    masks_lib.check_structure(masks, out_params)

    def both(m, r):
      if m is None:
        return None
      return m if r is None else m & r
    out_masks = jax.tree.map(both, masks, out_masks, is_leaf=lambda x: x is None)
  return masks_lib.apply(out_masks, out_params), out_masks
