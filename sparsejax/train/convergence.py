"""The saturation test that decides when a loss curve has stopped improving.

Efficient-compression reference (``break_loop.jl``, ``is_saturated``): take
the last :math:`2\\lceil W/2 \\rceil` values of a curve, split them into two
halves, smooth each half by local linear kernel regression with the
Epanechnikov kernel :math:`K(t) = \\tfrac34 (1 - t^2)` on :math:`|t| \\le 1`
(``DiffEqFlux.collocate_data``: bandwidth
:math:`h = n^{-1/5} n^{-3/35} (\\log n)^{-1/16}` for :math:`n` points), and
compare the half means :math:`m_1, m_2` with the residual standard deviations
:math:`s_1, s_2`:

.. math::  \\text{saturated} \\iff m_1 - m_2 \\le \\min(s_1, s_2) + d .

``d`` is absolute, in loss units. The reference passes no time axis we could
read; sparsejax places each half's points evenly on [0, 1] (with integer
times the bandwidth would be below one step and the fit singular).

Everything is ``jax.numpy``, so the test also runs inside a vmapped sweep.
"""

from __future__ import annotations

import math

import jax.numpy as jnp

#: The smallest window the test can use: each half needs three points, since the
#: bandwidth leaves a point's neighbours outside the kernel below three (two
#: points give a singular local fit, one point a bandwidth of ``log(1)^(-1/16)``).
MIN_WINDOW = 5


def check_window(window: int) -> None:
  """Raises ``ValueError`` unless ``window >= MIN_WINDOW`` (module docstring)."""
  if window < MIN_WINDOW:
    raise ValueError(f"a saturation window of {window} is too short: each half of "
                     f"2 * ceil(window / 2) values needs 3 points (window >= {MIN_WINDOW})")


def epanechnikov(t):
  return jnp.where(jnp.abs(t) <= 1, 0.75 * (1 - t * t), 0.0)


def local_linear_smooth(values: jnp.ndarray) -> jnp.ndarray:
  """Kernel-weighted local linear fit evaluated at each point (times on [0, 1])."""
  n = values.shape[-1]
  t = jnp.linspace(0.0, 1.0, n, dtype=values.dtype)
  h = n ** (-1 / 5) * n ** (-3 / 35) * math.log(n) ** (-1 / 16)
  dt = t[None, :] - t[:, None]                      # [evaluation point, data point]
  w = epanechnikov(dt / h) / h
  s0 = jnp.sum(w, -1)
  s1 = jnp.sum(w * dt, -1)
  s2 = jnp.sum(w * dt * dt, -1)
  y0 = jnp.sum(w * values[..., None, :], -1)
  y1 = jnp.sum(w * dt * values[..., None, :], -1)
  # Intercept of the weighted least-squares line through (dt, values).
  return (s2 * y0 - s1 * y1) / (s0 * s2 - s1 * s1)


def _saturated_halves(tail: jnp.ndarray, deviation: float) -> jnp.ndarray:
  """The test on the last ``2 * half`` values (two halves of equal length)."""
  half = tail.shape[-1] // 2
  first, second = tail[..., :half], tail[..., half:]
  s_first, s_second = local_linear_smooth(first), local_linear_smooth(second)
  m1, m2 = jnp.mean(s_first, -1), jnp.mean(s_second, -1)
  r1, r2 = jnp.std(first - s_first, -1), jnp.std(second - s_second, -1)
  return m1 - m2 <= jnp.minimum(r1, r2) + deviation


def is_saturated(curve: jnp.ndarray, window: int, deviation: float) -> jnp.ndarray:
  """Whether the last ``2 * ceil(window / 2)`` values of ``curve`` have levelled off.

  Returns False while the curve has fewer than ``window + 2`` values, as the
  reference does.

  Raises:
    ValueError: ``window < MIN_WINDOW``.
  """
  check_window(window)
  curve = jnp.asarray(curve)
  half = -(-window // 2)
  if curve.shape[-1] < window + 2:
    return jnp.asarray(False)
  return _saturated_halves(curve[..., -2 * half:], deviation)


def tail_length(window: int) -> int:
  """Values a :func:`push_tail` buffer keeps: the ``window + 2`` the test needs."""
  return window + 2


def push_tail(tail: jnp.ndarray, count: jnp.ndarray, values: jnp.ndarray):
  """Appends ``values`` (last axis) to a fixed-length buffer of a curve's latest values.

  Returns ``(tail, count)``: the buffer's last ``tail.shape[-1]`` values of
  the curve and how many values the curve has had. Traceable, so the phase
  driver keeps the buffer on the device.
  """
  length = tail.shape[-1]
  joined = jnp.concatenate([tail, values.astype(tail.dtype)], axis=-1)
  return joined[..., -length:], count + values.shape[-1]


def tail_saturated(tail: jnp.ndarray, count: jnp.ndarray, window: int,
                   deviation: float) -> jnp.ndarray:
  """:func:`is_saturated` of a curve kept as a :func:`push_tail` buffer.

  Equal to ``is_saturated(curve, window, deviation)`` of the whole curve,
  traceable (the count is an array), so it runs vmapped over seeds.
  """
  check_window(window)
  half = -(-window // 2)
  return (count >= window + 2) & _saturated_halves(tail[..., -2 * half:], deviation)
