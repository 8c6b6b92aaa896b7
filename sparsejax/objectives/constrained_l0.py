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

**Annealed targets** (``anneal_steps > 0``; not in the paper, whose targets
are constant). The constrained formulations may instead hold the targets of
step :math:`t`, falling from 1 (no constraint) to :math:`\\epsilon` over
``anneal_steps`` updates by Zhu and Gupta's (2017) cubic schedule,

.. math::  \\epsilon_t = \\epsilon + (1 - \\epsilon)\\,(1 - \\min(t / T, 1))^3,

so the density is brought down while the network learns rather than as
fast as the multipliers can push it. The constraint, the restarts and the
multipliers' gradient all read :math:`\\epsilon_t`; :math:`t` is counted in
the state (:attr:`L0State.step`).
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import optax

from sparsejax.objectives import hard_concrete as hc
from sparsejax.objectives.base import Objective

FORMULATIONS = ("lagrangian", "augmented_lagrangian", "penalized")


class L0State(NamedTuple):
  """The gates' locations and the multipliers.

  Attributes:
    log_alpha: ``{layer name: (n_gates,)}``.
    multipliers: ``(K,)``: the Lagrange multipliers (constrained) or the
      penalty weights (penalised); ``K = 1`` for a model-wise constraint.
    step: the updates taken, a float32 scalar, with annealed targets only
      (``None`` otherwise); the optimiser leaves it alone (:func:`optimizer`)
      and ``project`` counts it.
  """
  log_alpha: dict[str, jax.Array]
  multipliers: jax.Array
  step: jax.Array | None = None


def annealed_targets(targets: jax.Array, step: jax.Array, anneal_steps: int) -> jax.Array:
  """Zhu and Gupta's cubic schedule from 1 down to ``targets`` over ``anneal_steps`` steps."""
  remaining = 1.0 - jnp.minimum(step / anneal_steps, 1.0)
  return targets + (1.0 - targets) * remaining ** 3


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
                     sampling: str = "per_batch", anneal_steps: int = 0,
                     sites: dict[str, tuple[str, str]] | None = None) -> Objective:
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
    anneal_steps: > 0: the targets fall from 1 over this many updates
      (:func:`annealed_targets`); 0: constant targets (the paper).
    sites: per example, where each layer's gates act on the activations:
      :func:`~sparsejax.objectives.hard_concrete.layer_sites` for a model gated
      from outside; default the zoo's chain
      (:func:`~sparsejax.objectives.hard_concrete.chain_sites`).
  """
  layers = tuple(layers)
  if formulation not in FORMULATIONS:
    raise ValueError(f"formulation must be one of {FORMULATIONS}, got {formulation!r}")
  if test_gate not in hc.TEST_GATES:
    raise ValueError(f"test_gate must be one of {hc.TEST_GATES}, got {test_gate!r}")
  if sampling not in hc.SAMPLING:
    raise ValueError(f"sampling must be one of {hc.SAMPLING}, got {sampling!r}")
  if sampling == "per_example" and sites is None:
    sites = hc.chain_sites(layers)
  elif sampling != "per_example":
    sites = None
  constrained = formulation != "penalized"
  values = tuple(targets if constrained else penalty)
  if len(values) not in (1, len(layers)):
    raise ValueError(f"{'targets' if constrained else 'penalty'} must hold 1 value "
                     f"(model-wise) or one per gated layer ({len(layers)}), got {len(values)}")
  if anneal_steps < 0 or (anneal_steps and not constrained):
    raise ValueError("anneal_steps must be >= 0, and 0 for the penalized formulation, "
                     f"got {anneal_steps} ({formulation})")
  n_constraints = len(values)
  eps = jnp.asarray(targets if constrained else [0.0] * n_constraints, jnp.float32)
  droprates = droprates or {}

  def init(key, params):
    keys = jax.random.split(key, len(layers))
    log_alpha = {l.name: hc.init_log_alpha(k, l.n_gates, droprates.get(l.name, 0.5))
                 for k, l in zip(keys, layers)}
    start = jnp.zeros(n_constraints) if constrained else jnp.asarray(values, jnp.float32)
    return L0State(log_alpha, start, jnp.zeros(()) if anneal_steps else None)

  def forward(params, state: L0State, key, train):
    if train and sites:
      return params, hc.per_example_gates(layers, state.log_alpha, key, sites)
    if train:
      keys = jax.random.split(key, len(layers))
      gates = {l.name: hc.draw_gates(k, state.log_alpha[l.name]) for k, l in zip(keys, layers)}
    else:
      gates = {l.name: hc.test_gates(state.log_alpha[l.name], test_gate) for l in layers}
    return hc.gate_params(layers, params, gates), None

  def targets_at(state: L0State):
    if not anneal_steps:
      return eps
    return annealed_targets(eps, jax.lax.stop_gradient(state.step), anneal_steps)

  def defects(state: L0State):
    return constraint_values(layers, state.log_alpha, n_constraints) - targets_at(state)

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
    return L0State(jax.tree.map(lambda _: False, state.log_alpha), constrained,
                   None if state.step is None else False)

  def project(state: L0State):
    log_alpha = jax.tree.map(lambda a: jnp.clip(a, hc.LOG_ALPHA_MIN, hc.LOG_ALPHA_MAX),
                             state.log_alpha)
    step = None if state.step is None else state.step + 1
    lam = state.multipliers
    if constrained:
      lam = jax.nn.relu(lam)
    if formulation == "lagrangian" and dual_restarts:
      lam = jnp.where(defects(L0State(log_alpha, lam, step)) < 0, 0.0, lam)
    return L0State(log_alpha, lam, step)

  return Objective(init=init, forward=forward, penalty=penalty_fn, readout=readout,
                   ascend=ascend, project=project)


def optimizer(weights: optax.GradientTransformation,
              gates: optax.GradientTransformation | None,
              multipliers: optax.GradientTransformation | None) -> optax.GradientTransformation:
  """The optimiser of ``{"params": model parameters, "objective": L0State}``.

  One ``optax.multi_transform`` with a transform per group: ``weights`` for
  the model's parameters, ``gates`` for ``log_alpha``, ``multipliers`` for
  the multipliers (the train step hands them the negated gradient, so a
  descent transform ascends: :attr:`Objective.ascend`), and none for the
  annealing's step count, which ``project`` alone moves. ``None`` freezes a
  group (``optax.set_to_zero``): the penalised formulation's fixed
  multipliers, the gates and multipliers while finetuning.

  Args:
    weights: the model parameters' transform.
    gates: the gates' transform, or ``None`` (frozen).
    multipliers: the multipliers' transform, or ``None`` (frozen).
  """
  frozen = optax.set_to_zero()
  return optax.multi_transform(
      {"weights": weights, "gates": frozen if gates is None else gates,
       "multipliers": frozen if multipliers is None else multipliers, "counter": frozen},
      _labels)


def _labels(train_vars) -> dict:
  """The group of every leaf of ``{"params", "objective": L0State}``, for :func:`optimizer`."""
  state: L0State = train_vars["objective"]
  return {"params": jax.tree.map(lambda _: "weights", train_vars["params"]),
          "objective": L0State(jax.tree.map(lambda _: "gates", state.log_alpha), "multipliers",
                               None if state.step is None else "counter")}
