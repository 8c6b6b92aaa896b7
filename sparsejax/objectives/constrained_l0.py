"""L0 training with hard-concrete gates: constrained (Lagrangian) or penalised.

Gallego-Posada, Ramirez, Erraqabi, Bengio and Lacoste-Julien (NeurIPS 2022),
"Controlled Sparsity via Constrained Optimization", train the gated network
of :mod:`sparsejax.objectives.hard_concrete` under inequality constraints on
its expected density (reference notes, section 3.1):

.. math::

  \\min_{\\theta,\\phi}\\max_{\\lambda \\ge 0}\\;
  \\mathcal L(\\theta, \\phi, \\lambda) = \\mathrm{CE}(\\theta \\odot z_\\phi)
    + w\\,\\mathbb E[L_2] + \\sum_k \\lambda_k (g_k(\\phi) - \\epsilon_k)

with :math:`g_k` a layer's expected density (``K`` constraints, layer-wise)
or the model's (one constraint, model-wise) and :math:`\\epsilon_k` the
target *kept* densities. ``formulation``:

* ``"lagrangian"`` (the paper): the multipliers start at 0 and ascend by
  gradient (their gradient is the defect :math:`g_k - \\epsilon_k`; the train
  step negates it, :attr:`Objective.ascend`) with their own optimiser,
  simultaneously with the primal step; ``project`` clamps them to
  :math:`\\ge 0` and, with ``dual_restarts`` (on by default, the paper's
  choice), resets to 0 every multiplier whose constraint is strictly
  satisfied. The restart reads the defect at the updated gates (Cooper reads
  it at the gates of the step's forward pass, one primal step earlier).
* ``"augmented_lagrangian"`` (Cooper 1.0's formulation, Powell-Hestenes-
  Rockafellar form for inequalities) with penalty coefficient :math:`c`:
  :math:`\\sum_k \\frac{1}{2c}\\bigl([\\lambda_k + c(g_k-\\epsilon_k)]_+^2 -
  \\lambda_k^2\\bigr)`. Its gradient in :math:`\\lambda_k` is
  :math:`([\\lambda_k + c(g_k-\\epsilon_k)]_+ - \\lambda_k)/c`, so an SGD
  ascent step at learning rate :math:`c` (the recipe uses the dual learning
  rate as :math:`c`) is the method of multipliers' update
  :math:`\\lambda_k \\leftarrow [\\lambda_k + c(g_k - \\epsilon_k)]_+`. No restarts.
* ``"penalized"``: :math:`\\mathrm{CE} + w\\,\\mathbb E[L_2] + \\sum_k
  \\lambda_k g_k` with fixed :math:`\\lambda` (Louizos et al.'s objective; the
  reference's ``PenalizedL0Problem`` crashes before training). The
  multipliers are then constants held in the state, which the recipe never
  updates, so a grid of :math:`\\lambda` can be a vmapped axis.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp

from sparsejax.objectives import hard_concrete as hc
from sparsejax.objectives.base import Objective

FORMULATIONS = ("lagrangian", "augmented_lagrangian", "penalized")


class L0State(NamedTuple):
  """The gates' locations and the multipliers.

  Attributes:
    log_alpha: ``{layer name: (n_gates,)}``.
    multipliers: ``(K,)``: the Lagrange multipliers (constrained) or the
      penalty weights (penalised); ``K = 1`` for a model-wise constraint.
  """
  log_alpha: dict[str, jax.Array]
  multipliers: jax.Array


def constraint_values(layers: Sequence[hc.GatedLayer], log_alpha, n_constraints: int):
  """``(K,)``: the model's expected density (``K = 1``) or every layer's."""
  if n_constraints == 1:
    return hc.model_density(layers, log_alpha)[None]
  return hc.layer_densities(layers, log_alpha)


def hard_concrete_l0(layers: Sequence[hc.GatedLayer], *, formulation: str = "lagrangian",
                     targets: Sequence[float] = (0.5,), penalty: Sequence[float] = (0.0,),
                     droprates: dict[str, float] | None = None, weight_decay: float = 0.0,
                     l2_detach_gates: bool = True, test_gate: str = "median",
                     dual_restarts: bool = True, penalty_coefficient: float = 1e-4,
                     sampling: str = "per_batch") -> Objective:
  """The hard-concrete L0 objective (module docstring).

  Args:
    layers: the gated layers (:func:`~sparsejax.objectives.hard_concrete.gated_layers`).
    formulation: one of :data:`FORMULATIONS`.
    targets: the kept densities :math:`\\epsilon`: one (model-wise) or one
      per gated layer (layer-wise, in the order of ``layers``). Unused when
      penalised.
    penalty: the penalised formulation's :math:`\\lambda`: one value (model-wise)
      or one per layer.
    droprates: ``{layer name: d}`` for the gates' initialisation (default 0.5).
    weight_decay: the weight of the expected L2 term.
    l2_detach_gates: the expected L2 term sees the gate probabilities as constants.
    test_gate: ``"median"`` (constrained-sparsity code) or ``"mean"`` (Louizos Eq. 13).
    dual_restarts: reset the multipliers of strictly satisfied constraints (lagrangian).
    penalty_coefficient: the augmented Lagrangian's :math:`c`.
    sampling: ``"per_batch"`` (gates on the weights) or ``"per_example"``
      (gates on the activations of a chain network;
      :func:`~sparsejax.objectives.hard_concrete.per_example_gates`).
  """
  layers = tuple(layers)
  if formulation not in FORMULATIONS:
    raise ValueError(f"formulation must be one of {FORMULATIONS}, got {formulation!r}")
  if test_gate not in hc.TEST_GATES:
    raise ValueError(f"test_gate must be one of {hc.TEST_GATES}, got {test_gate!r}")
  if sampling not in hc.SAMPLING:
    raise ValueError(f"sampling must be one of {hc.SAMPLING}, got {sampling!r}")
  sites = hc.chain_sites(layers) if sampling == "per_example" else None
  constrained = formulation != "penalized"
  values = tuple(targets if constrained else penalty)
  if len(values) not in (1, len(layers)):
    raise ValueError(f"{'targets' if constrained else 'penalty'} must hold 1 value "
                     f"(model-wise) or one per gated layer ({len(layers)}), got {len(values)}")
  n_constraints = len(values)
  eps = jnp.asarray(targets if constrained else [0.0] * n_constraints, jnp.float32)
  droprates = droprates or {}

  def init(key, params):
    keys = jax.random.split(key, len(layers))
    log_alpha = {l.name: hc.init_log_alpha(k, l.n_gates, droprates.get(l.name, 0.5))
                 for k, l in zip(keys, layers)}
    start = jnp.zeros(n_constraints) if constrained else jnp.asarray(values, jnp.float32)
    return L0State(log_alpha, start)

  def forward(params, state: L0State, key, train):
    if train and sites:
      return params, hc.per_example_gates(layers, state.log_alpha, key, sites)
    if train:
      keys = jax.random.split(key, len(layers))
      gates = {l.name: hc.draw_gates(k, state.log_alpha[l.name]) for k, l in zip(keys, layers)}
    else:
      gates = {l.name: hc.test_gates(state.log_alpha[l.name], test_gate) for l in layers}
    return hc.gate_params(layers, params, gates), None

  def defects(state: L0State):
    return constraint_values(layers, state.log_alpha, n_constraints) - eps

  def penalty_fn(params, state: L0State):
    total = jnp.zeros(())
    if weight_decay:
      probs = {l.name: hc.prob_nonzero(state.log_alpha[l.name]) for l in layers}
      if l2_detach_gates:
        probs = jax.lax.stop_gradient(probs)
      total = total + weight_decay * hc.expected_l2(layers, params, probs)
    lam, defect = state.multipliers, defects(state)
    if formulation == "augmented_lagrangian":
      c = penalty_coefficient
      return total + jnp.sum(jnp.square(jax.nn.relu(lam + c * defect)) - jnp.square(lam)) / (2 * c)
    return total + jnp.sum(lam * defect)

  def readout(params, state: L0State):
    alive = {l.name: hc.test_gates(state.log_alpha[l.name], test_gate) > 0 for l in layers}
    return params, hc.gate_masks(layers, params, alive)

  def ascend(state: L0State):
    return L0State(jax.tree.map(lambda _: False, state.log_alpha), constrained)

  def project(state: L0State):
    log_alpha = jax.tree.map(lambda a: jnp.clip(a, hc.LOG_ALPHA_MIN, hc.LOG_ALPHA_MAX),
                             state.log_alpha)
    lam = state.multipliers
    if constrained:
      lam = jax.nn.relu(lam)
    if formulation == "lagrangian" and dual_restarts:
      lam = jnp.where(defects(state._replace(log_alpha=log_alpha)) < 0, 0.0, lam)
    return L0State(log_alpha, lam)

  return Objective(init=init, forward=forward, penalty=penalty_fn, readout=readout,
                   ascend=ascend, project=project)


def trainable_labels(train_vars) -> dict:
  """Optimiser labels over ``{"params", "objective": L0State}``.

  ``"weights"`` for the model's parameters, ``"gates"`` for ``log_alpha`` and
  ``"multipliers"`` for the duals, for ``optax.multi_transform``.
  """
  state: L0State = train_vars["objective"]
  return {"params": jax.tree.map(lambda _: "weights", train_vars["params"]),
          "objective": L0State(jax.tree.map(lambda _: "gates", state.log_alpha), "multipliers")}
