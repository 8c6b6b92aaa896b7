"""Log-uniform multiplicative-noise unit gates (structured Bayesian pruning).

Every unit ``i`` (a neuron, a conv channel, a transformer feature) of a gated
layer is multiplied by a random scale :math:`\\theta_i` (Neklyudov et al.,
2017, "Structured Bayesian Pruning via Log-Normal Multiplicative Noise";
Wright, Igel and Selvan, 2024, "BMRS: Bayesian Model Reduction for Structured
Pruning", Eq. 1). In log space, with bounds :math:`[a, b] = [-20, 0]`:

* prior :math:`p(\\theta) = \\mathrm{LogU}_{[a,b]}(\\theta) =
  (\\theta (b - a))^{-1}` on :math:`[e^a, e^b]`;
* posterior :math:`q(\\theta_i) = \\mathrm{LogN}_{[a,b]}(\\mu_i, \\sigma_i^2)`:
  :math:`\\log\\theta_i \\sim N(\\mu_i, \\sigma_i^2)` truncated to
  :math:`[a, b]`, with :math:`\\mu_i` initialised to 0 and
  :math:`\\log\\sigma_i` to -5, and :math:`\\sigma_i =
  \\exp(\\mathrm{clip}(\\log\\sigma_i, -20, 5))`.

With :math:`\\alpha = (a - \\mu)/\\sigma`, :math:`\\beta = (b - \\mu)/\\sigma`
and :math:`Z = \\Phi(\\beta) - \\Phi(\\alpha)`:

.. math::

  \\mathrm{KL}(q \\| p) = -\\log\\sigma - \\log Z - \\tfrac12 \\log(2\\pi e)
      + \\log(b - a) - \\frac{\\alpha\\phi(\\alpha) - \\beta\\phi(\\beta)}{2Z}

  E[\\theta] = e^{\\mu + \\sigma^2/2}
      \\frac{\\Phi(\\sigma - \\alpha) - \\Phi(\\sigma - \\beta)}{Z},\\qquad
  E[\\theta^2] = e^{2\\mu + 2\\sigma^2}
      \\frac{\\Phi(2\\sigma - \\alpha) - \\Phi(2\\sigma - \\beta)}{Z}

Every difference of normal cdfs is evaluated in log space
(:func:`log_ndtr_diff`), so the formulas stay finite where the reference's
direct forms under- or overflow (a posterior far outside :math:`[a, b]`).

**Training** draws :math:`\\theta` by inverting the truncated cdf:
:math:`u \\sim U(0, 1)`, :math:`\\gamma = \\mathrm{clip}(\\Phi(\\alpha) + uZ,
10^{-5}, 1 - 10^{-5})`, :math:`\\theta = \\exp(\\mathrm{clip}(\\mu +
\\sigma\\Phi^{-1}(\\gamma), a, b))`. ``noise="per_element"`` (BMRS) draws
``u`` per activation element (per example, per position or token);
``noise="per_batch"`` (the SBP code) draws one ``u`` per unit and batch.
Per element, :func:`gated_per_element` computes the gated activations with
a hand-written gradient: the per-unit terms once per unit, per element one
uniform (inline Threefry, :mod:`sparsejax.prng`), one inverse normal cdf
(float32: Wichura's PPND7, :mod:`sparsejax.special`), one exponential and
their derivatives (W5 in ``docs/benchmarks.md``).
**Evaluation** multiplies by :math:`E[\\theta]`. Pruned units are removed
from the network through the weight masks (:func:`sparsejax.masks.unit_masks`
zeroes each pruned unit's incoming weights, bias and BatchNorm affine
parameters, so its activation is exactly zero, the reference's
``x * theta * mask``); their :math:`(\\mu, \\log\\sigma)` stay in the KL as in
the reference.

**The KL term** of the loss: ``kl_reduction="mean"`` (the BMRS default,
``--kl_averaging mean``) is :math:`\\frac1L\\sum_l \\mathrm{mean}_i
\\mathrm{KL}_{l,i}`; ``"sum"`` is :math:`\\sum_{l,i}\\mathrm{KL}_{l,i}`. The
BMRS code adds it to the batch-mean cross-entropy with weight 1
(``kl_weight=1``). The evidence lower bound proper, divided by the number of
training examples :math:`N`, is ``kl_reduction="sum"`` with ``kl_weight =
1/N`` (the SBP code's ``N * CE + sum KL``, rescaled).
"""

from __future__ import annotations

import math
from typing import Mapping, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import log_ndtr, ndtr

from sparsejax import prng
from sparsejax.objectives.base import Objective
from sparsejax.special import ndtri_inside, quantile_slope

#: Log-space bounds of the prior and the posterior's truncation.
LOG_A = -20.0
LOG_B = 0.0
#: Clip range of log sigma and the initial values of (mu, log sigma).
LOG_SIGMA_MIN = -20.0
LOG_SIGMA_MAX = 5.0
INIT_MU = 0.0
INIT_LOG_SIGMA = -5.0
#: Clip range of the inverted cdf's argument during sampling.
GAMMA_EPS = 1e-5

NOISE = ("per_element", "per_batch")
KL_REDUCTIONS = ("mean", "sum")


class GateState(NamedTuple):
  """The variational parameters of the gates, per gated layer (site).

  Attributes:
    mu: ``{site: (n,)}``, the location :math:`\\mu_i` of each unit's
      :math:`\\log\\theta_i`.
    log_sigma: ``{site: (n,)}``, the unclipped :math:`\\log\\sigma_i`
      (see :func:`sigma_of`).
  """
  mu: dict[str, jax.Array]
  log_sigma: dict[str, jax.Array]


def sigma_of(log_sigma: jax.Array) -> jax.Array:
  """:math:`\\sigma = \\exp(\\mathrm{clip}(\\log\\sigma, -20, 5))`."""
  return jnp.exp(jnp.clip(log_sigma, LOG_SIGMA_MIN, LOG_SIGMA_MAX))


def _log1mexp(x: jax.Array) -> jax.Array:
  """:math:`\\log(1 - e^x)` for :math:`x < 0`, accurate over the whole range."""
  return jnp.where(x > -math.log(2.0), jnp.log(-jnp.expm1(x)), jnp.log1p(-jnp.exp(x)))


def log_ndtr_diff(hi: jax.Array, lo: jax.Array) -> jax.Array:
  """:math:`\\log(\\Phi(hi) - \\Phi(lo))` for :math:`hi > lo`, without cancellation.

  Both arguments positive are reflected, :math:`\\Phi(hi) - \\Phi(lo) =
  \\Phi(-lo) - \\Phi(-hi)`, so the larger cdf is never close to 1.
  """
  flip = lo > 0
  upper = jnp.where(flip, -lo, hi)
  lower = jnp.where(flip, -hi, lo)
  log_upper = log_ndtr(upper)
  return log_upper + _log1mexp(log_ndtr(lower) - log_upper)


def standardised_bounds(mu, sigma, a=LOG_A, b=LOG_B):
  """:math:`(\\alpha, \\beta) = ((a - \\mu)/\\sigma, (b - \\mu)/\\sigma)`."""
  return (a - mu) / sigma, (b - mu) / sigma


def log_normaliser(mu, sigma, a=LOG_A, b=LOG_B) -> jax.Array:
  """:math:`\\log Z = \\log(\\Phi(\\beta) - \\Phi(\\alpha))`."""
  alpha, beta = standardised_bounds(mu, sigma, a, b)
  return log_ndtr_diff(beta, alpha)


def _log_std_normal_pdf(x):
  return -0.5 * x * x - 0.5 * math.log(2 * math.pi)


def kl_divergence(mu, log_sigma, a=LOG_A, b=LOG_B) -> jax.Array:
  """Elementwise :math:`\\mathrm{KL}(\\mathrm{LogN}_{[a,b]}(\\mu,\\sigma^2) \\| \\mathrm{LogU}_{[a,b]})`.

  The exact closed form of the module docstring: the negative entropy of the
  truncated normal plus :math:`\\log(b - a)` (Neklyudov et al., 2017, Eq. 14;
  Wright et al., 2024, ``util.kldiv``).
  """
  sigma = sigma_of(log_sigma)
  alpha, beta = standardised_bounds(mu, sigma, a, b)
  log_z = log_ndtr_diff(beta, alpha)
  tail = (alpha * jnp.exp(_log_std_normal_pdf(alpha) - log_z)
          - beta * jnp.exp(_log_std_normal_pdf(beta) - log_z))
  return (-jnp.log(sigma) - log_z - 0.5 * math.log(2 * math.pi * math.e)
          + math.log(b - a) - 0.5 * tail)


def _log_moment(k: int, mu, sigma, a, b):
  """:math:`\\log E[\\theta^k]` of the truncated log-normal."""
  alpha, beta = standardised_bounds(mu, sigma, a, b)
  return (k * mu + 0.5 * (k * sigma) ** 2 + log_ndtr_diff(k * sigma - alpha, k * sigma - beta)
          - log_ndtr_diff(beta, alpha))


def expected_theta(mu, log_sigma, a=LOG_A, b=LOG_B) -> jax.Array:
  """:math:`E_q[\\theta]` (module docstring), computed in log space."""
  return jnp.exp(_log_moment(1, mu, sigma_of(log_sigma), a, b))


def variance_theta(mu, log_sigma, a=LOG_A, b=LOG_B) -> jax.Array:
  """:math:`\\mathrm{Var}_q[\\theta] = E[\\theta^2] - E[\\theta]^2`."""
  sigma = sigma_of(log_sigma)
  log_m1 = _log_moment(1, mu, sigma, a, b)
  return jnp.exp(2 * log_m1) * jnp.expm1(_log_moment(2, mu, sigma, a, b) - 2 * log_m1)


def _truncated_normal_variance(lo, hi):
  """Variance of :math:`N(0, 1)` truncated to ``[lo, hi]``, accurate in the far tails.

  Inside or near the bulk: :math:`1 + (l\\phi(l) - h\\phi(h))/Z -
  ((\\phi(l) - \\phi(h))/Z)^2` with :math:`Z = \\Phi(h) - \\Phi(l)` in log
  space. Far in the lower tail (:math:`l \\ge 3`, the upper bound negligible)
  that form cancels to nothing (the variance is about :math:`1/l^2`); there
  the Mills-ratio continued fraction :math:`T_k = k/(l + T_{k+1})` gives the
  inverse Mills ratio :math:`\\lambda = l + T_1` and the variance
  :math:`1 - \\lambda(\\lambda - l) = T_1 (l + 2T_2 - T_3) / ((l + T_3)(l +
  T_2))` without cancellation. The upper tail is its mirror image.
  """
  def bulk(lo, hi):
    log_z = log_ndtr_diff(hi, lo)
    p_lo = jnp.exp(_log_std_normal_pdf(lo) - log_z)
    p_hi = jnp.exp(_log_std_normal_pdf(hi) - log_z)
    return 1 + lo * p_lo - hi * p_hi - (p_lo - p_hi) ** 2

  def lower_tail(lo):
    lo = jnp.maximum(lo, _TAIL_START)  # the branch is only selected there

    def step(i, t):  # (T_{k+1}, T_{k+2}, T_{k+3}) -> (T_k, T_{k+1}, T_{k+2})
      return ((_MILLS_TERMS - i) / (lo + t[0]), t[0], t[1])

    zero = jnp.zeros_like(lo)
    t1, t2, t3 = jax.lax.fori_loop(0, _MILLS_TERMS, step, (zero, zero, zero))
    return t1 * (lo + 2 * t2 - t3) / ((lo + t3) * (lo + t2))

  upper_negligible = lo * (hi - lo) >= _TAIL_SEPARATION
  lower_negligible = -hi * (hi - lo) >= _TAIL_SEPARATION
  return jnp.where((lo >= _TAIL_START) & upper_negligible, lower_tail(lo),
                   jnp.where((hi <= -_TAIL_START) & lower_negligible, lower_tail(-hi),
                             bulk(lo, hi)))


#: Far-tail branch of :func:`_truncated_normal_variance`: from this bound on,
#: with this many continued-fraction terms (1e-16 relative at the start), when
#: the other bound's mass is below exp(-_TAIL_SEPARATION) of the total.
_TAIL_START = 3.0
_MILLS_TERMS = 120
_TAIL_SEPARATION = 40.0
#: Below this sigma the log ratio of moments is integrated (see :func:`snr`).
_SMALL_SIGMA = 0.5
_NODES, _WEIGHTS = np.polynomial.legendre.leggauss(16)


@jax.jit
def log_moment_ratio(mu, log_sigma, a=LOG_A, b=LOG_B) -> jax.Array:
  """:math:`R = \\log E[\\theta^2] - 2\\log E[\\theta]`, accurate for every sigma.

  With :math:`K(t) = \\log E[e^{tX}]` for the truncated standard normal
  :math:`X` on :math:`[\\alpha, \\beta]`, :math:`R = K(2\\sigma) -
  2K(\\sigma)` (the :math:`\\mu` terms cancel exactly; subtracting them in
  floating point is what loses everything when :math:`\\sigma^2 \\ll
  \\epsilon|\\mu|`). :math:`K''(s)` is the variance :math:`V(s)` of
  :math:`N(0, 1)` on :math:`[\\alpha - s, \\beta - s]`, so

  .. math::  R = \\int_0^{2\\sigma} \\min(s, 2\\sigma - s)\\, V(s)\\, ds
             = \\sigma^2 \\int_{-1}^{1} (1 - |y|)\\, V(\\sigma(1 + y))\\, dy,

  integrated by 16-point Gauss-Legendre on each half for :math:`\\sigma <
  0.5`, where the direct form :math:`\\sigma^2 + G(2\\sigma) - 2G(\\sigma)
  + G(0)`, :math:`G(t) = \\log(\\Phi(\\beta - t) - \\Phi(\\alpha - t))`,
  cancels; the direct form above. Compiled (one program per shape and dtype).
  """
  sigma = sigma_of(log_sigma)
  alpha, beta = standardised_bounds(mu, sigma, a, b)

  def g(t):
    return log_ndtr_diff(t - alpha, t - beta)

  direct = sigma ** 2 + (g(2 * sigma) - g(sigma)) - (g(sigma) - g(0.0))
  small = jnp.minimum(sigma, _SMALL_SIGMA)[..., None]
  y = 0.5 * (_NODES + 1)  # Gauss-Legendre on [0, 1]; both halves carry the weight 1 - y
  shifts = jnp.concatenate([small * (1 + y), small * (1 - y)], axis=-1)
  weights = jnp.tile(0.5 * _WEIGHTS * (1 - y), 2)
  variances = _truncated_normal_variance(alpha[..., None] - shifts, beta[..., None] - shifts)
  integral = small[..., 0] ** 2 * jnp.sum(weights * variances, axis=-1)
  return jnp.where(sigma < _SMALL_SIGMA, integral, direct)


def snr(mu, log_sigma, a=LOG_A, b=LOG_B) -> jax.Array:
  """Signal-to-noise ratio :math:`E[\\theta]/\\sqrt{\\mathrm{Var}[\\theta]}`.

  Written as :math:`(E[\\theta^2]/E[\\theta]^2 - 1)^{-1/2} =
  (e^R - 1)^{-1/2}` with :math:`R` from :func:`log_moment_ratio`, which
  stays accurate (and the score finite) as :math:`\\sigma \\to e^{-20}`,
  where the difference of the two log moments cancels to zero or noise
  (``snr(-19, -20)`` was ``inf`` for the exact 4.85e8, about
  :math:`1/\\sigma`).
  """
  return jax.lax.rsqrt(jnp.expm1(log_moment_ratio(mu, log_sigma, a, b)))


def sample_theta(key: jax.Array, mu, log_sigma, shape, a=LOG_A, b=LOG_B) -> jax.Array:
  """Reparameterised draws of :math:`\\theta` of ``shape`` (units on the last axis).

  :math:`\\theta = \\exp(\\mathrm{clip}(\\mu + \\sigma\\Phi^{-1}(\\gamma), a,
  b))` with :math:`\\gamma = \\mathrm{clip}(\\Phi(\\alpha) + uZ, 10^{-5},
  1 - 10^{-5})`, :math:`u \\sim U(0, 1)`: differentiable in
  :math:`(\\mu, \\log\\sigma)` by automatic differentiation. The per-unit
  terms are computed once per unit and broadcast; ``u``
  (:func:`sparsejax.prng.uniform`, bit for bit ``jax.random.uniform``) fuses
  with the transform.
  """
  terms = _unit_terms(mu, log_sigma, a, b)
  u = prng.uniform(key, shape, jnp.result_type(mu))
  return _inverse_cdf(u, mu, terms, a, b)[0]


class _UnitTerms(NamedTuple):
  """What the sampler and its derivatives need of one unit's :math:`(\\mu, \\log\\sigma)`."""
  sigma: jax.Array
  dsigma: jax.Array  # d sigma / d log sigma: sigma inside the clip range, else 0
  cdf_alpha: jax.Array
  z: jax.Array
  pdf_alpha: jax.Array
  pdf_beta: jax.Array
  alpha_pdf_alpha: jax.Array
  beta_pdf_beta: jax.Array


def _unit_terms(mu, log_sigma, a, b) -> _UnitTerms:
  sigma = sigma_of(log_sigma)
  inside = (log_sigma > LOG_SIGMA_MIN) & (log_sigma < LOG_SIGMA_MAX)
  alpha, beta = standardised_bounds(mu, sigma, a, b)
  cdf_alpha = ndtr(alpha)
  pdf_alpha, pdf_beta = jnp.exp(_log_std_normal_pdf(alpha)), jnp.exp(_log_std_normal_pdf(beta))
  return _UnitTerms(sigma, jnp.where(inside, sigma, 0.0), cdf_alpha, ndtr(beta) - cdf_alpha,
                    pdf_alpha, pdf_beta, alpha * pdf_alpha, beta * pdf_beta)


def _inverse_cdf(u, mu, terms: _UnitTerms, a, b):
  """``(theta, n, gamma before its clip, log theta before its clip)`` for uniforms ``u``."""
  raw_gamma = terms.cdf_alpha + u * terms.z
  n = ndtri_inside(jnp.clip(raw_gamma, GAMMA_EPS, 1 - GAMMA_EPS))
  log_theta = mu + terms.sigma * n
  return jnp.exp(jnp.clip(log_theta, a, b)), n, raw_gamma, log_theta


def gated_per_element(key: jax.Array, x: jax.Array, mu, log_sigma) -> jax.Array:
  """``x * sample_theta(key, mu, log_sigma, x.shape)`` with a hand-written gradient.

  The value is bit for bit the same. Automatic differentiation of the sampler
  takes several passes over the ~10^6 elements of a batch's activations; here
  the forward pass computes :math:`\\theta` and its derivatives per element
  from one draw, with :math:`\\Phi^{-1}{}'(\\gamma) =
  1/\\phi(n)`, :math:`n = \\Phi^{-1}(\\gamma)` and :math:`\\gamma =
  (1 - u)\\Phi(\\alpha) + u\\Phi(\\beta)`:

  .. math::

    \\frac{\\partial\\theta}{\\partial\\mu} = \\theta\\,[a < t < b]
        \\Bigl(1 - [\\gamma\\ \\mathrm{inside}]
        \\frac{(1 - u)\\phi(\\alpha) + u\\phi(\\beta)}{\\phi(n)}\\Bigr),\\qquad
    \\frac{\\partial\\theta}{\\partial\\log\\sigma} = \\theta\\,[a < t < b]\\,
        \\sigma'\\Bigl(n - [\\gamma\\ \\mathrm{inside}]
        \\frac{(1 - u)\\alpha\\phi(\\alpha) + u\\beta\\phi(\\beta)}{\\phi(n)}\\Bigr)

  (:math:`t = \\mu + \\sigma n`, :math:`\\sigma' = d\\sigma/d\\log\\sigma`, the
  brackets the clips' indicator functions), and the backward pass is one
  product and two reductions over the non-unit axes. Tested against
  automatic differentiation of :func:`sample_theta`.

  A convolution's activations ``(batch, height, width, units)`` are gated as
  ``(batch, height * width, units)``: the same elements and draws (the
  counters are row-major indices either way), but XLA:CPU's element-wise
  loops over the 3-D shape ran the BMRS LeNet-5 step about 0.5 ms faster
  (W5 in ``docs/benchmarks.md``).
  """
  if x.ndim > 3:
    return _gated(key, x.reshape(x.shape[0], -1, x.shape[-1]), mu, log_sigma).reshape(x.shape)
  return _gated(key, x, mu, log_sigma)


@jax.custom_vjp
def _gated(key: jax.Array, x: jax.Array, mu, log_sigma) -> jax.Array:
  return _gated_forward(key, x, mu, log_sigma)[0]


def _theta_and_derivatives(key, shape, mu, log_sigma, a=LOG_A, b=LOG_B):
  """:math:`(\\theta, \\partial\\theta/\\partial\\mu, \\partial\\theta/\\partial\\log\\sigma)` per element."""
  terms = _unit_terms(mu, log_sigma, a, b)
  u = prng.uniform(key, shape, jnp.result_type(mu))
  theta, n, raw_gamma, log_theta = _inverse_cdf(u, mu, terms, a, b)
  inside_gamma = (raw_gamma > GAMMA_EPS) & (raw_gamma < 1 - GAMMA_EPS)
  slope = jnp.where(inside_gamma, quantile_slope(n), 0.0)
  live = jnp.where((log_theta > a) & (log_theta < b), theta, 0.0)
  dtheta_dmu = live * (1 - slope * ((1 - u) * terms.pdf_alpha + u * terms.pdf_beta))
  dtheta_dlog_sigma = live * terms.dsigma * (
      n - slope * ((1 - u) * terms.alpha_pdf_alpha + u * terms.beta_pdf_beta))
  return theta, dtheta_dmu, dtheta_dlog_sigma


def _gated_forward(key, x, mu, log_sigma):
  theta, dtheta_dmu, dtheta_dlog_sigma = _theta_and_derivatives(key, x.shape, mu, log_sigma)
  return x * theta.astype(x.dtype), (x, theta, dtheta_dmu, dtheta_dlog_sigma)


def _gated_backward(residuals, cotangent):
  x, theta, dtheta_dmu, dtheta_dlog_sigma = residuals
  weighted = (cotangent * x).astype(theta.dtype)
  unit_axis_only = tuple(range(x.ndim - 1))
  return (None, cotangent * theta.astype(cotangent.dtype),
          jnp.sum(weighted * dtheta_dmu, unit_axis_only),
          jnp.sum(weighted * dtheta_dlog_sigma, unit_axis_only))


_gated.defvjp(_gated_forward, _gated_backward)


def init_gate_state(sites: Mapping[str, int], dtype=jnp.float32) -> GateState:
  """``GateState(mu={site: 0}, log_sigma={site: -5})``, one entry per unit."""
  return GateState(
      mu={s: jnp.full((n,), INIT_MU, dtype) for s, n in sites.items()},
      log_sigma={s: jnp.full((n,), INIT_LOG_SIGMA, dtype) for s, n in sites.items()},
  )


def kl_penalty(state: GateState, reduction: str = "mean") -> jax.Array:
  """The KL term over all gated layers, reduced as ``reduction`` (module docstring)."""
  kls = [kl_divergence(state.mu[s], state.log_sigma[s]) for s in state.mu]
  if reduction == "sum":
    return sum(jnp.sum(k) for k in kls)
  return sum(jnp.mean(k) for k in kls) / len(kls)


def _noisy_gate(key, mu, log_sigma, noise: str):
  def gate(x):
    if noise == "per_element":
      return gated_per_element(key, x, mu, log_sigma)
    return x * sample_theta(key, mu, log_sigma, mu.shape).astype(x.dtype)
  return gate


def log_uniform_gates(sites: Mapping[str, int], *, kl_reduction: str = "mean",
                      kl_weight: float = 1.0, noise: str = "per_element") -> Objective:
  """The log-uniform unit-gate objective: gates in the forward pass, the KL as penalty.

  Args:
    sites: ``{site: n_units}``, the model's ``gate_sites()``.
    kl_reduction: ``"mean"`` (BMRS default) or ``"sum"`` (module docstring).
    kl_weight: factor on the KL term; 1 as BMRS, ``1 / n_train`` for the
      proper per-example evidence lower bound.
    noise: ``"per_element"`` (BMRS) or ``"per_batch"`` (SBP).

  Returns:
    An :class:`~sparsejax.objectives.base.Objective` whose state is a
    :class:`GateState` ``(mu={site: (n,)}, log_sigma={site: (n,)})``;
    ``forward`` returns callable gates in training (fresh noise per call,
    from its key) and :math:`E[\\theta]` in evaluation; ``readout`` prunes
    nothing itself (the criteria are in :mod:`sparsejax.pruning.bmr`).

  Raises:
    ValueError: for an unknown ``kl_reduction`` or ``noise``, or no sites.
  """
  if kl_reduction not in KL_REDUCTIONS:
    raise ValueError(f"kl_reduction must be one of {KL_REDUCTIONS}, got {kl_reduction!r}")
  if noise not in NOISE:
    raise ValueError(f"noise must be one of {NOISE}, got {noise!r}")
  if not sites:
    raise ValueError("log_uniform_gates needs at least one gate site; the model has none")
  sites = dict(sites)

  def init(key, params) -> GateState:
    del key
    dtype = jax.tree_util.tree_leaves(params)[0].dtype
    return init_gate_state(sites, dtype)

  def forward(params, state: GateState, key, train):
    if not train:
      return params, {s: expected_theta(state.mu[s], state.log_sigma[s]) for s in sites}
    keys = jax.random.split(key, len(sites))
    return params, {s: _noisy_gate(k, state.mu[s], state.log_sigma[s], noise)
                    for s, k in zip(sites, keys)}

  def penalty(params, state: GateState):
    del params
    return kl_weight * kl_penalty(state, kl_reduction)

  def readout(params, state):
    del state
    return params, None

  return Objective(init=init, forward=forward, penalty=penalty, readout=readout)
