"""Unit pruning criteria for log-uniform gates: SNR, E[theta], L2, BMRS_N, BMRS_U.

Given the gate posteriors :math:`q_i = \\mathrm{LogN}_{[a,b]}(\\mu_i,
\\sigma_i^2)` of :mod:`sparsejax.objectives.log_uniform`, each criterion maps
a unit to a score and a keep/prune decision (Wright, Igel and Selvan, 2024,
"BMRS: Bayesian Model Reduction for Structured Pruning", section 3 and
Table 1):

* ``snr``: keep iff :math:`E[\\theta]/\\sqrt{\\mathrm{Var}[\\theta]} > 1`
  (Neklyudov et al., 2017);
* ``expected_theta``: keep iff :math:`E[\\theta] > 0.1`;
* ``l2``: keep iff the L2 norm of the unit's input weights exceeds a
  threshold (0.5), or a percentile of all units' norms that matches another
  run's compression;
* ``bmrs_n``: Bayesian model reduction to the reduced prior
  :math:`\\tilde p = \\mathrm{LogN}_{[a,b]}(\\tilde\\mu_p, \\tilde\\sigma_p^2)`,
  :math:`\\tilde\\mu_p = a`, :math:`\\tilde\\sigma_p^2 = 10^{-12}` (Eq. 8);
* ``bmrs_u``: reduction to :math:`\\tilde p = \\mathrm{LogU}_{[a', b']}` with
  :math:`a' = \\log 2^{-23}`, :math:`b' = \\log 2^{-p_1}` (Eqs. 10-11;
  :math:`p_1 = 8` and 4 in the paper).

For the BMR criteria a unit is pruned iff :math:`\\Delta F \\ge 0`: the
reduced model (the unit switched off) has at least the evidence of the full
one.

**BMRS_N.** With :math:`\\tilde\\sigma_q^2 = (\\sigma_q^{-2} +
\\tilde\\sigma_p^{-2})^{-1}`, :math:`\\tilde\\mu_q = \\tilde\\sigma_q^2
(\\mu_q/\\sigma_q^2 + \\tilde\\mu_p/\\tilde\\sigma_p^2)` and :math:`Z_q,
\\tilde Z_p, \\tilde Z_q` the normalisers of the three truncated normals,
Eq. 8 of the paper is

.. math::

  \\Delta F = \\log\\frac{(b - a)\\tilde Z_q}{Z_q \\tilde Z_p}
      + \\frac12\\log\\frac{\\tilde\\sigma_q^2}{2\\pi\\sigma_q^2\\tilde\\sigma_p^2}
      - \\frac12\\Big(\\frac{\\mu_q^2}{\\sigma_q^2}
      + \\frac{\\tilde\\mu_p^2}{\\tilde\\sigma_p^2}
      - \\frac{\\tilde\\mu_q^2}{\\tilde\\sigma_q^2}\\Big).

The direct form cancels terms of size :math:`\\tilde\\mu_p^2/\\tilde\\sigma_p^2
= 4\\cdot 10^{14}` (the released code is off by up to 0.06 in float64). It is
evaluated here through the equivalent

.. math::

  \\Delta F = \\log\\frac{(b - a)\\tilde Z_q}{Z_q \\tilde Z_p}
      - \\frac12\\log\\big(2\\pi(\\sigma_q^2 + \\tilde\\sigma_p^2)\\big)
      - \\frac{(\\mu_q - \\tilde\\mu_p)^2}{2(\\sigma_q^2 + \\tilde\\sigma_p^2)},

which has no cancellation (a Savage-Dickey ratio as
:math:`\\tilde\\sigma_p \\to 0`). ``convention="paper"`` (default) keeps the
:math:`2\\pi`, which the derivation requires; ``convention="code"`` drops it
as the released code does (``deltaF`` there is larger by
:math:`\\frac12\\log 2\\pi = 0.919`, so it prunes more).

**BMRS_U.** :math:`\\Delta F = \\log q(a' \\le \\log\\theta \\le b') -
\\log\\frac{b' - a'}{b - a}`, with the truncated posterior's mass
:math:`[\\Phi((b' - \\mu)/\\sigma) - \\Phi((a' - \\mu)/\\sigma)]/Z`, ``mu``
clipped to :math:`[a, b]` as in the reference. Computed in log space, it
stays finite where the reference's float64 value is ``-inf``.

Every function here is elementwise and dtype-polymorphic; the runner evaluates
them in float64 (``jax.enable_x64``), as the reference does for BMRS_N.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from sparsejax import masks as masks_lib
from sparsejax.objectives import log_uniform as lu

CRITERIA = ("snr", "expected_theta", "l2", "bmrs_n", "bmrs_u")
CONVENTIONS = ("paper", "code")

#: Default thresholds: keep iff score > threshold.
SNR_THRESHOLD = 1.0
EXPECTED_THETA_THRESHOLD = 0.1
L2_THRESHOLD = 0.5
#: BMRS_N's reduced prior: mean a = -20 and variance 1e-12.
BMRS_N_MU = lu.LOG_A
BMRS_N_VAR = 1e-12
#: BMRS_U's reduced prior LogU[2^-p2, 2^-p1] with p2 = 23.
BMRS_U_P2 = 23.0


def _normal_log_z(mu, sigma, a, b):
  alpha, beta = lu.standardised_bounds(mu, sigma, a, b)
  return lu.log_ndtr_diff(beta, alpha)


def bmrs_n_delta_f(mu, log_sigma, *, mu_p: float = BMRS_N_MU, var_p: float = BMRS_N_VAR,
                   convention: str = "paper", a: float = lu.LOG_A, b: float = lu.LOG_B):
  """:math:`\\Delta F` of BMRS_N (module docstring), elementwise; prune iff >= 0."""
  if convention not in CONVENTIONS:
    raise ValueError(f"convention must be one of {CONVENTIONS}, got {convention!r}")
  sigma = lu.sigma_of(log_sigma)
  var_q = sigma ** 2
  var_sum = var_q + var_p
  sigma_red = jnp.sqrt(var_q * var_p / var_sum)
  # The reduced posterior N(mu_red, var_red), mu_red = (mu var_p + mu_p var_q) / var_sum,
  # standardised at the bounds from the differences to them: mu_red itself sits within
  # float32's spacing (2e-6 at -20) of a = mu_p while sigma_red is 1e-6, so forming it
  # first would cost the bounds an error of order one.
  alpha_red = -((mu - a) * var_p + (mu_p - a) * var_q) / var_sum / sigma_red
  beta_red = ((b - mu) * var_p + (b - mu_p) * var_q) / var_sum / sigma_red
  log_ratio = (math.log(b - a) + lu.log_ndtr_diff(beta_red, alpha_red)
               - _normal_log_z(mu, sigma, a, b)
               - _normal_log_z(jnp.asarray(mu_p, mu.dtype), math.sqrt(var_p), a, b))
  delta_f = log_ratio - 0.5 * jnp.log(var_sum) - 0.5 * (mu - mu_p) ** 2 / var_sum
  if convention == "paper":
    delta_f = delta_f - 0.5 * math.log(2 * math.pi)
  return delta_f


def bmrs_u_bounds(p1: float, p2: float = BMRS_U_P2) -> tuple[float, float]:
  """:math:`(a', b') = (-p_2 \\log 2, -p_1 \\log 2)`, the reduced prior's log-space bounds."""
  if not 0 < p1 < p2:
    raise ValueError(f"bmrs_u needs 0 < p1 < p2 = {p2}, got p1 = {p1}")
  return -p2 * math.log(2.0), -p1 * math.log(2.0)


def bmrs_u_delta_f(mu, log_sigma, *, p1: float = 8.0, p2: float = BMRS_U_P2,
                   a: float = lu.LOG_A, b: float = lu.LOG_B):
  """:math:`\\Delta F` of BMRS_U (module docstring), elementwise; prune iff >= 0."""
  a_red, b_red = bmrs_u_bounds(p1, p2)
  mu = jnp.clip(mu, a, b)
  sigma = lu.sigma_of(log_sigma)
  log_mass = lu.log_ndtr_diff((b_red - mu) / sigma, (a_red - mu) / sigma) - _normal_log_z(
      mu, sigma, a, b)
  return log_mass - math.log((b_red - a_red) / (b - a))


class Criterion(NamedTuple):
  """A unit criterion by name, with its parameters.

  Attributes:
    name: one of :data:`CRITERIA`.
    threshold: keep iff score > threshold (``snr``, ``expected_theta``,
      ``l2``); ``None`` for the default of the criterion.
    p1: BMRS_U's upper exponent.
    convention: BMRS_N's :math:`2\\pi` convention, ``"paper"`` or ``"code"``.
    mu_p: BMRS_N's reduced-prior mean.
    var_p: BMRS_N's reduced-prior variance.
  """
  name: str
  threshold: float | None = None
  p1: float = 8.0
  convention: str = "paper"
  mu_p: float = BMRS_N_MU
  var_p: float = BMRS_N_VAR

  @property
  def is_bmr(self) -> bool:
    return self.name in ("bmrs_n", "bmrs_u")


def check_criterion(criterion: Criterion) -> None:
  """Raises ``ValueError`` naming the field for an invalid criterion."""
  if criterion.name not in CRITERIA:
    raise ValueError(f"criterion must be one of {CRITERIA}, got {criterion.name!r}")
  if criterion.convention not in CONVENTIONS:
    raise ValueError(f"convention must be one of {CONVENTIONS}, got {criterion.convention!r}")
  if criterion.name == "bmrs_u":
    bmrs_u_bounds(criterion.p1)
  if criterion.var_p <= 0:
    raise ValueError(f"var_p must be > 0, got {criterion.var_p}")


def unit_input_norms(params, covers: Mapping[str, list[tuple[str, int]]]) -> dict[str, jax.Array]:
  """L2 norm of each unit's input weights: its producing kernel (the first cover).

  The norm runs over every axis of that kernel except the unit axis, as the
  reference's ``get_weight_l2`` (the nearest preceding Linear or Conv).
  """
  leaves = {masks_lib.path_str(p): leaf
            for p, leaf in jax.tree_util.tree_flatten_with_path(params)[0]}
  norms = {}
  for site, cover in covers.items():
    path, axis = cover[0]
    kernel = leaves[path]
    axis = axis % kernel.ndim
    other = tuple(i for i in range(kernel.ndim) if i != axis)
    norms[site] = jnp.sqrt(jnp.sum(jnp.square(kernel), axis=other))
  return norms


def scores(criterion: Criterion, gate_state: lu.GateState, params=None,
           covers=None) -> dict[str, jax.Array]:
  """Per-site unit scores: keep a unit iff its score is greater than the cut.

  The score of ``snr``, ``expected_theta`` and ``l2`` is the quantity itself
  (cut: the threshold); for ``bmrs_n`` and ``bmrs_u`` it is
  :math:`-\\Delta F` (cut: 0, so a unit is pruned iff :math:`\\Delta F \\ge 0`).
  ``gate_state`` is the :class:`~sparsejax.objectives.log_uniform.GateState`
  of the gates; ``params`` and ``covers`` are needed for ``l2`` only.
  """
  check_criterion(criterion)
  mu, log_sigma = gate_state.mu, gate_state.log_sigma
  if criterion.name == "l2":
    if params is None or covers is None:
      raise ValueError("criterion 'l2' needs the parameters and the model's unit_covers()")
    return unit_input_norms(params, {s: covers[s] for s in mu})
  fns = {
      "snr": lu.snr,
      "expected_theta": lu.expected_theta,
      "bmrs_n": lambda m, s: -bmrs_n_delta_f(m, s, mu_p=criterion.mu_p, var_p=criterion.var_p,
                                             convention=criterion.convention),
      "bmrs_u": lambda m, s: -bmrs_u_delta_f(m, s, p1=criterion.p1),
  }
  fn = fns[criterion.name]
  return {site: fn(mu[site], log_sigma[site]) for site in mu}


def default_cut(criterion: Criterion) -> float:
  """The criterion's own cut: its threshold, or 0 for the BMR criteria."""
  if criterion.is_bmr:
    return 0.0
  if criterion.threshold is not None:
    return float(criterion.threshold)
  return {"snr": SNR_THRESHOLD, "expected_theta": EXPECTED_THETA_THRESHOLD,
          "l2": L2_THRESHOLD}[criterion.name]


def keep_masks(site_scores: Mapping[str, jax.Array], cut) -> dict[str, jax.Array]:
  """``{site: score > cut}``, boolean unit masks (True = keep)."""
  return {site: s > cut for site, s in site_scores.items()}


def percentile_cut(site_scores: Mapping[str, Any], pruned_percent: float) -> float:
  """The ``pruned_percent``-th percentile of all units' scores (NumPy's linear rule).

  Keeping the units whose score is above it prunes about ``pruned_percent``
  of the units: the reference's ``--compression_percentage_file`` (an L2 or
  SNR run matched to a BMRS_N run's unit compression) and the post-training
  sweep's thresholds.
  """
  if not 0 <= pruned_percent <= 100:
    raise ValueError(f"pruned_percent must be in [0, 100], got {pruned_percent}")
  flat = np.concatenate([np.asarray(s).ravel() for s in site_scores.values()])
  return float(np.percentile(flat, pruned_percent))


def unit_compression(unit_masks: Mapping[str, Any]) -> float:
  """Percentage of units pruned over all gated layers (the reference's ``compression``)."""
  kept = sum(int(np.sum(np.asarray(m))) for m in unit_masks.values())
  total = sum(int(np.size(m)) for m in unit_masks.values())
  return 100.0 * (1 - kept / total)


def parameter_compression(params, weight_masks, unit_masks: Mapping[str, Any], *,
                          weights_only: bool = False) -> float:
  """Percentage of trainable parameters removed by the unit masks.

  Counts the masked entries of the weight masks, which
  :func:`sparsejax.masks.unit_masks` builds from the model's unit covers (a
  pruned unit's incoming weights, bias, BatchNorm scale and shift, and the
  next layer's inputs where one axis indexes them), plus two gate parameters
  :math:`(\\mu, \\log\\sigma)` per pruned unit, over all parameters plus two
  per gated unit.

  ``weights_only=True`` counts removed entries of the >= 2-D leaves only, as
  the reference's ``get_true_parameter_compression_percent`` (the paper's
  "Comp. (%)"), which counts exact zeros of weight matrices and kernels but
  not biases or BatchNorm parameters; its denominator is the same. Neither
  counts the inputs of the Dense layer after a flatten that a pruned conv
  channel feeds (no single axis indexes them).
  """
  removed = 0
  total = 0
  for m, p in zip(jax.tree_util.tree_leaves(weight_masks, is_leaf=lambda x: x is None),
                  jax.tree_util.tree_leaves(params)):
    total += int(np.size(p))
    if m is not None and (np.ndim(p) >= 2 or not weights_only):
      removed += int(np.size(p) - np.sum(np.asarray(m)))
  n_units = sum(int(np.size(m)) for m in unit_masks.values())
  pruned_units = n_units - sum(int(np.sum(np.asarray(m))) for m in unit_masks.values())
  return 100.0 * (removed + 2 * pruned_units) / (total + 2 * n_units)
