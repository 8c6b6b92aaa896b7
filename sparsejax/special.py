"""The standard normal quantile :math:`\\Phi^{-1}` at the cost of its float32 precision.

:func:`ndtri` is the inverse normal cdf of the per-element gate noise
(:mod:`sparsejax.objectives.log_uniform`), evaluated once per activation
element. ``jax.scipy.special.ndtri`` is Cephes' double-precision algorithm
in every dtype: three rational approximations of degree up to 8/8, all three
evaluated for every element under XLA's selects, plus a logarithm, a square
root and three divisions. In float32 that is more work than the precision
needs, and XLA:CPU splits it over several loops that each read and write
the whole array.

For float32, :func:`ndtri` is instead Wichura's PPND7 (1988, "Algorithm AS
241: The Percentage Points of the Normal Distribution", Applied Statistics
37(3), 477-484), accurate to about 1 part in :math:`10^7`, the precision of
float32 itself. With :math:`q = p - 1/2`:

* :math:`|q| \\le 0.425`: :math:`\\Phi^{-1}(p) = q\\,A(r)/B(r)`,
  :math:`r = 0.180625 - q^2`;
* otherwise, with :math:`r = \\sqrt{-\\log\\min(p, 1 - p)}`:
  :math:`\\mathrm{sign}(q)\\,C(r - 1.6)/D(r - 1.6)` for :math:`r \\le 5`
  (:math:`p \\gtrsim 1.4 \\cdot 10^{-11}`), else
  :math:`\\mathrm{sign}(q)\\,E(r - 5)/F(r - 5)`;

(polynomials of degree 3, 3, 3, 2, 3, 2), one logarithm, one square root and
a single division of the selected numerator by the selected denominator.
Its maximum relative error against scipy's double-precision ``ndtri``, over
float32 arguments from :math:`10^{-37}` to :math:`1 - 6 \\cdot 10^{-8}`,
is that of ``jax.scipy.special.ndtri`` in float32 (both about
:math:`4 \\cdot 10^{-7}`, tested). Other dtypes go to
``jax.scipy.special.ndtri``.

The derivative is exact given the value:
:math:`d\\Phi^{-1}(p)/dp = 1/\\phi(\\Phi^{-1}(p)) = \\sqrt{2\\pi}\\,
e^{n^2/2}` (a custom JVP), not the derivative of the approximation.
Measured for the BMRS LeNet-5 train step on the 2-core CPU: W5 in
``docs/benchmarks.md``.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import jax.scipy.special

# Wichura (1988), PPND7: coefficients in increasing powers; B, D and F have
# leading coefficient 1.
_A = (3.3871327179, 50.434271938, 159.29113202, 59.109374720)
_B = (1.0, 17.895169469, 78.757757664, 67.187563600)
_C = (1.4234372777, 2.7568153900, 1.3067284816, 0.17023821103)
_D = (1.0, 0.73700164250, 0.12021132975)
_E = (6.6579051150, 3.0812263860, 0.42868294337, 0.017337203997)
_F = (1.0, 0.24197894225, 0.012258202635)
#: Where the central approximation hands over to the tails, and the tails'
#: near and far approximations to each other (in q and in r).
_SPLIT_CENTRAL, _SPLIT_TAIL = 0.425, 5.0


def _horner(coefficients: tuple[float, ...], x: jax.Array) -> jax.Array:
  out = jnp.asarray(coefficients[-1], x.dtype)
  for c in reversed(coefficients[:-1]):
    out = out * x + c
  return out


def _ppnd7(p: jax.Array) -> jax.Array:
  """PPND7 for ``p`` strictly inside (0, 1); both tails' polynomials share one Horner
  evaluation with coefficients selected per element."""
  q = p - 0.5
  central = jnp.abs(q) <= _SPLIT_CENTRAL
  r_central = _SPLIT_CENTRAL**2 - q * q
  r = jnp.sqrt(-jnp.log(jnp.minimum(p, 1 - p)))
  near = r <= _SPLIT_TAIL
  r_tail = r - jnp.where(near, 1.6, _SPLIT_TAIL)
  tail_numerator = _horner(tuple(jnp.where(near, c, e) for c, e in zip(_C, _E)), r_tail)
  tail_denominator = _horner(tuple(jnp.where(near, d, f) for d, f in zip(_D, _F)), r_tail)
  numerator = jnp.where(central, q * _horner(_A, r_central), jnp.sign(q) * tail_numerator)
  denominator = jnp.where(central, _horner(_B, r_central), tail_denominator)
  return numerator / denominator


@jax.custom_jvp
def ndtri(p: jax.Array) -> jax.Array:
  """:math:`\\Phi^{-1}(p)` elementwise: PPND7 in float32, else ``jax.scipy.special.ndtri``.

  ``-inf`` at 0, ``inf`` at 1 and ``nan`` outside :math:`[0, 1]`, as
  ``jax.scipy.special.ndtri``. Where ``p`` is known to lie strictly inside
  :math:`(0, 1)`, :func:`ndtri_inside` skips those three selects.
  """
  p = jnp.asarray(p)
  n = ndtri_inside(p)
  n = jnp.where(p == 0, -jnp.inf, jnp.where(p == 1, jnp.inf, n))
  return jnp.where((p < 0) | (p > 1), jnp.nan, n)


@jax.custom_jvp
def ndtri_inside(p: jax.Array) -> jax.Array:
  """:func:`ndtri` for ``p`` strictly inside :math:`(0, 1)` (undefined at 0 and 1).

  The gate sampler's argument is clipped to :math:`[10^{-5}, 1 - 10^{-5}]`.
  With the edge selects of :func:`ndtri` the BMRS LeNet-5 per-element step
  took 16.6 ms against 15.1 ms (one A/B run, W5), because XLA:CPU then
  splits the loop.
  """
  p = jnp.asarray(p)
  if p.dtype == jnp.float32:
    return _ppnd7(p)
  return jax.scipy.special.ndtri(p)


def quantile_slope(n: jax.Array) -> jax.Array:
  """:math:`d\\Phi^{-1}(p)/dp` at :math:`p = \\Phi(n)`: :math:`1/\\phi(n) = \\sqrt{2\\pi}\\,e^{n^2/2}`."""
  return math.sqrt(2 * math.pi) * jnp.exp(0.5 * n * n)


def _jvp(function):
  def jvp(primals, tangents):
    (p,), (dp,) = primals, tangents
    n = function(p)
    return n, dp * quantile_slope(n)
  return jvp


ndtri.defjvp(_jvp(ndtri))
ndtri_inside.defjvp(_jvp(ndtri_inside))
