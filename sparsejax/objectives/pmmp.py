r"""PMMP: probabilistic minimax pruning (Barth & von Petersenn).

L. S. Barth and P. von Petersenn, "Efficient compression of neural networks
and datasets", arXiv 2505.17469; reconstructed from the hand-coded gradients of
its Julia code (``PMMP_procedure.jl``, ``HelperFunctions/loss_functions.jl``,
``update_functions.jl``).

Every parameter :math:`\theta_i` gets a weight :math:`w_i`, a keep-probability
:math:`\gamma_i \in [0, 1]` and a Lagrange multiplier :math:`u_i \ge 0`, and
training solves

.. math::

   \min_{\theta, w, \gamma \in [0,1]} \max_{u \ge 0}\;
   L(\theta) + \alpha \sum_i \gamma_i
   + m_f \sum_i u_i \, \mathbb{E}_{z_i \sim \mathrm{Bernoulli}(\gamma_i)}
     [(\theta_i - w_i z_i)^2]
   + \alpha_1 \|\theta\|_1 + \rho \|\theta\|_2^2,

with :math:`m_f` the reference's ``u_value_multiply_factor``. The expectation
vanishes only where :math:`\theta_i = w_i z_i` almost surely, so at a
feasible point :math:`L(\theta) = \mathbb{E}_z L(w \odot z)` and
:math:`\alpha \sum \gamma = \alpha\, \mathbb{E} \|w \odot z\|_0`: a
probabilistic l0 objective without Monte-Carlo sampling.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from sparsejax import masks as masks_lib
from sparsejax.objectives.base import Objective, check_nonnegative, identity_forward, tree_sum
from sparsejax.objectives.penalties import elastic_net


class PMMPState(NamedTuple):
  r"""The state of :func:`pmmp`: three trees shaped like the parameters.

  Attributes:
    w: the weights :math:`w_i` that :math:`\theta_i` is coupled to
      (initially :math:`\theta`).
    gamma: the keep-probabilities :math:`\gamma_i \in [0, 1]`.
    u: the Lagrange multipliers :math:`u_i \ge 0` of the coupling
      :math:`\mathbb{E}_z[(\theta_i - w_i z_i)^2] = 0`; the only ascended
      variables.
  """
  w: Any
  gamma: Any
  u: Any


def expected_squared_gap(theta: jax.Array, w: jax.Array, gamma: jax.Array) -> jax.Array:
  r"""Closed form of :math:`\mathbb{E}_{z \sim \mathrm{Bernoulli}(\gamma)}[(\theta - w z)^2]`.

  .. math::  (\theta - w\gamma)^2 + w^2 \gamma (1 - \gamma),

  elementwise: the mean squared gap is the squared gap of the mean plus the
  variance :math:`w^2 \gamma(1-\gamma)` of :math:`w z`. It is zero exactly
  where :math:`\theta = w\gamma` and :math:`\gamma \in \{0, 1\}` (or
  :math:`w = \theta = 0`). The reference writes it as
  ``u(θ − wγ)² + u(w²γ(1−γ))`` (``TransformerDecoder.py``).
  """
  return jnp.square(theta - w * gamma) + jnp.square(w) * gamma * (1 - gamma)


def pmmp(alpha: float, *, initial_p_value: float = 1.0, initial_u_value: float = 0.0,
         u_value_multiply_factor: float = 1.0, l1_alpha: float = 0.0,
         rho: float = 0.0) -> Objective:
  r"""Probabilistic minimax pruning (Barth & von Petersenn, arXiv 2505.17469).

  The penalty, on the masked parameters :math:`\theta` and the state
  :math:`(w, \gamma, u)`, is

  .. math::

     R = \alpha \sum_i \gamma_i
       + m_f \sum_i u_i \big[(\theta_i - w_i\gamma_i)^2
                              + w_i^2 \gamma_i (1 - \gamma_i)\big]
       + \alpha_1 \sum_i |\theta_i| + \rho \sum_i \theta_i^2

  (see :func:`expected_squared_gap`). With :math:`d = \theta - w\gamma` its
  gradients are the reference's hand-coded ones (``PMMP_g*_modification``):

  * :math:`g_\theta = 2 m_f u d + \alpha_1 \operatorname{sign}\theta + 2\rho\theta`
    (added to the data-loss gradient; the L1 and :math:`\rho` terms are
    :func:`sparsejax.objectives.elastic_net`),
  * :math:`g_w = -2 m_f u d \gamma + 2 m_f u w \gamma(1-\gamma)`,
  * :math:`g_\gamma = -2 m_f u d w + m_f u w^2 (1 - 2\gamma) + \alpha`,
  * :math:`g_u = m_f [d^2 + w^2\gamma(1-\gamma)]`; ``ascend`` marks :math:`u`,
    so the train step negates it and the optimiser *ascends* on :math:`u`.
    The bracket is never negative, so :math:`u` never decreases.

  After each update ``project`` clamps :math:`\gamma` to :math:`[0, 1]`, as
  the reference's ``project_params!``, and :math:`u` to :math:`\ge 0`. The
  reference does not clamp :math:`u`: its ascent direction, the bracket, is
  never negative, so under SGD or Adam :math:`u` cannot fall below its
  nonnegative start and the clamp never binds; it is a safeguard for other
  optimiser chains.

  **Initial state** (``convert_tstate!``): :math:`w = \theta`,
  :math:`\gamma = ` ``initial_p_value``, :math:`u = ` ``initial_u_value``.
  With the defaults (1 and 0) the run starts feasible: the bracket is zero and
  :math:`R = \alpha \cdot` (number of parameters).

  **alpha = 0.** The reference then applies the plain gradients (plus the
  optional L1 and :math:`\rho` terms) and leaves :math:`(w, \gamma, u)` alone.
  Here the penalty is then :math:`\alpha_1\|\theta\|_1 + \rho\|\theta\|_2^2`
  only, so the state gets zero gradients and stays where it is under SGD or
  Adam.

  **Readout.** The final mask is *not* obtained by rounding :math:`\gamma`:
  the reference prunes :math:`|\theta|` with random gradient pruning and a
  TAMADE threshold search after training, then zeroes :math:`\gamma` wherever
  :math:`\theta = 0` (:func:`prune_state`). ``readout`` therefore returns
  :math:`\theta` with the masks of its nonzero entries; the search itself
  lives in :mod:`sparsejax.pruning`.

  Args:
    alpha: weight :math:`\alpha \ge 0` of the expected l0 norm
      :math:`\sum\gamma`.
    initial_p_value: initial keep-probability :math:`\gamma`, in [0, 1].
    initial_u_value: initial multiplier :math:`u \ge 0` (the reference's
      ImageNet runs use 2 and 5).
    u_value_multiply_factor: :math:`m_f \ge 0`, scales the coupling term.
    l1_alpha: weight :math:`\alpha_1 \ge 0` of an L1 term on :math:`\theta`.
    rho: weight :math:`\rho \ge 0` of an L2 term on :math:`\theta` (gradient
      :math:`2\rho\theta`).

  Returns:
    The Objective; its state is a :class:`PMMPState` ``(w, gamma, u)``, three
    trees shaped like the parameters.
  """
  check_nonnegative("alpha", alpha)
  check_nonnegative("initial_u_value", initial_u_value)
  check_nonnegative("u_value_multiply_factor", u_value_multiply_factor)
  if not 0.0 <= initial_p_value <= 1.0:
    raise ValueError(f"initial_p_value must be in [0, 1], got {initial_p_value}")
  theta_penalty = elastic_net(l1_alpha, rho).penalty

  def init(key, params) -> PMMPState:
    del key
    return PMMPState(
        w=jax.tree.map(jnp.copy, params),
        gamma=jax.tree.map(lambda p: jnp.full_like(p, initial_p_value), params),
        u=jax.tree.map(lambda p: jnp.full_like(p, initial_u_value), params),
    )

  def penalty(params, state: PMMPState) -> jax.Array:
    value = theta_penalty(params, ())
    if alpha == 0:
      return value
    coupling = jax.tree.map(
        lambda theta, w, gamma, u: u * expected_squared_gap(theta, w, gamma),
        params, state.w, state.gamma, state.u)
    return (value + alpha * tree_sum(lambda g: g, state.gamma)
            + u_value_multiply_factor * tree_sum(lambda c: c, coupling))

  def readout(params, state: PMMPState):
    del state
    return params, masks_lib.from_nonzero(params)

  def ascend(state: PMMPState) -> PMMPState:
    return PMMPState(
        w=jax.tree.map(lambda _: False, state.w),
        gamma=jax.tree.map(lambda _: False, state.gamma),
        u=jax.tree.map(lambda _: True, state.u),
    )

  def project(state: PMMPState) -> PMMPState:
    return state._replace(
        gamma=jax.tree.map(lambda g: jnp.clip(g, 0, 1), state.gamma),
        u=jax.tree.map(lambda u: jnp.maximum(u, 0), state.u),
    )

  return Objective(init=init, forward=identity_forward, penalty=penalty,
                   readout=readout, ascend=ascend, project=project)


def gamma_saturated(state: PMMPState, low: float = 0.1, high: float = 0.9,
                    max_fraction: float = 0.01) -> jax.Array:
  r"""PMMP's extra convergence rule: the keep-probabilities have settled.

  True iff at most ``max_fraction`` of all :math:`\gamma` entries lie strictly
  inside ``(low, high)``: the reference's ``saturation_test(a; b=0.1, c=0.9)``
  with violation count / parameter count :math:`\le 0.01`, required (besides
  the loss saturation) before PMMP training is declared converged and before a
  turning point is recorded.

  Returns:
    A boolean scalar array (traceable).
  """
  gammas = jax.tree.leaves(state.gamma)
  inside = sum(jnp.sum((g > low) & (g < high)) for g in gammas)
  total = sum(g.size for g in gammas)
  return inside <= max_fraction * total


def prune_state(state: PMMPState, masks) -> PMMPState:
  r"""Sets :math:`\gamma = 0` and :math:`w = 0` wherever ``masks`` prunes.

  The procedure step after a pruning of :math:`\theta` (RGP, TAMADE): with
  ``masks = sparsejax.masks.from_nonzero(params, masks)`` the reference zeroes
  the mask and :math:`\gamma` wherever :math:`\theta = 0`. Zeroing :math:`w`
  as well makes the coupling term of a pruned entry vanish identically, so its
  :math:`w` and :math:`u` get zero gradients and :math:`\gamma` only the
  constant :math:`\alpha`, which the projection holds at 0. ``None`` mask
  leaves (never pruned) are left alone; :math:`u` is kept.
  """
  return state._replace(w=masks_lib.apply(masks, state.w),
                        gamma=masks_lib.apply(masks, state.gamma))
