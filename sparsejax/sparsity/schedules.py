r"""When the masks change during training, and to which density.

A :class:`PruningSchedule` names the update steps and the overall target
density at each of them; the sparse-training algorithms
(:mod:`sparsejax.sparsity.algorithms`) read both from a traced step counter,
so one compiled step serves every step. Three shapes:

* :func:`one_shot`: once, at step ``t_0``, to the final density;
* :func:`periodic`: every :math:`\Delta t` steps from :math:`t_0` to
  :math:`t_1`, always at the final density (static, SET and RigL keep their
  density; STE and SR-STE recompute their masks from the dense weights);
* :func:`polynomial`: Zhu & Gupta's schedule (M. Zhu and S. Gupta, "To prune,
  or not to prune: exploring the efficacy of pruning for model compression",
  ICLR workshop 2018, Eq. 1), written for the density :math:`d = 1 - s`,

  .. math::  d_t = d_f + (d_i - d_f)\Big(1 - \frac{t - t_0}{t_1 - t_0}\Big)^p,
             \qquad t = t_0,\ t_0 + \Delta t,\ \dots,\ t_1,

  with :math:`p = 3` in the paper (:func:`gradual` is this schedule with
  :math:`p = 3`).

Layer-wise budgets scale with the schedule: a leaf whose final density is
:math:`d_l` (:mod:`sparsejax.sparsity.distributions`) has density

.. math::  d_l(t) = 1 - \varphi_t\,(1 - d_l), \qquad
           \varphi_t = \frac{1 - d_t}{1 - d_f}

at step :math:`t` (:func:`sparsity_fraction`): every leaf has gone the same
fraction :math:`\varphi_t` of the way to its own final sparsity, and with a
uniform budget :math:`d_l(t) = d_t`.

RigL's drop fraction (Evci et al., "Rigging the lottery: making all tickets
winners", ICML 2020, Eq. 1) decays with a cosine,

.. math::  f(t) = \frac{\alpha}{2}\Big(1 + \cos\frac{\pi t}{T_\text{end}}\Big),

:func:`drop_fraction_at`; SET (Mocanu et al., 2018) drops a constant
fraction :math:`\zeta`.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

#: The shapes of a schedule.
SCHEDULES = ("one_shot", "periodic", "polynomial")
#: How the drop fraction of SET and RigL changes with the step.
DROP_DECAYS = ("cosine", "constant")


class PruningSchedule(NamedTuple):
  """When the masks change, and to which overall density.

  The masks are recomputed at the steps ``start + k * frequency`` up to
  ``end``, and at ``end``. Build one with :func:`one_shot`, :func:`periodic`,
  :func:`polynomial` or :func:`gradual`.

  Attributes:
    start: the first update step :math:`t_0`.
    end: the last update step :math:`t_1 \\ge t_0`.
    frequency: steps between two updates, :math:`\\Delta t \\ge 1`.
    initial_density: :math:`d_i`, the density of the update at ``start``.
    final_density: :math:`d_f`, the density from ``end`` on.
    power: the exponent :math:`p` of the polynomial (3: Zhu & Gupta; 0: the
      final density from ``start`` on, as :func:`one_shot` and :func:`periodic`).
  """
  start: int
  end: int
  frequency: int
  initial_density: float
  final_density: float
  power: float = 3.0


def _check_density(name: str, value) -> None:
  if not 0.0 < value <= 1.0:
    raise ValueError(f"{name} must be in (0, 1], got {value}")


def _check_step(name: str, value) -> None:
  if isinstance(value, bool) or not isinstance(value, int) or value < 0:
    raise ValueError(f"{name} must be an int >= 0, got {value!r}")


def _check_frequency(value) -> None:
  if isinstance(value, bool) or not isinstance(value, int) or value < 1:
    raise ValueError(f"frequency must be an int >= 1, got {value!r}")


def one_shot(density: float, step: int) -> PruningSchedule:
  """Prunes once, at update ``step``, to ``density``.

  Args:
    density: the kept fraction, in (0, 1].
    step: the update (0-based) that prunes; the masks are scored on the
      parameters (and gradients) of that update.
  """
  _check_density("density", density)
  _check_step("step", step)
  return PruningSchedule(start=step, end=step, frequency=1, initial_density=float(density),
                         final_density=float(density), power=0.0)


def periodic(density: float, *, start: int, end: int, frequency: int) -> PruningSchedule:
  """Updates the masks every ``frequency`` steps from ``start`` to ``end``, at ``density``.

  The schedule of static sparse training (no update changes anything), SET,
  RigL (their drop-and-grow steps, :math:`\\Delta T` apart until
  :math:`T_\\text{end}`) and the straight-through estimators (masks
  recomputed from the dense weights).
  """
  _check_density("density", density)
  _check_step("start", start)
  _check_step("end", end)
  if end < start:
    raise ValueError(f"end must be >= start, got start={start}, end={end}")
  _check_frequency(frequency)
  return PruningSchedule(start=start, end=end, frequency=frequency,
                         initial_density=float(density), final_density=float(density),
                         power=0.0)


def polynomial(final_density: float, *, start: int, end: int, frequency: int,
               initial_density: float = 1.0, power: float = 3.0) -> PruningSchedule:
  r"""Zhu & Gupta's polynomial schedule from ``initial_density`` to ``final_density``.

  .. math::  d_t = d_f + (d_i - d_f)\,(1 - (t - t_0)/(t_1 - t_0))^p

  at the update steps :math:`t_0, t_0 + \Delta t, \dots` and :math:`t_1`
  (module docstring). With :math:`p = 3` (the paper's) it prunes fast while
  many weights are redundant and slowly near the end, giving the network
  time to recover.

  Args:
    final_density: :math:`d_f`, in (0, 1].
    start: :math:`t_0`, the first update step (>= 0).
    end: :math:`t_1 \ge t_0`, the last update step.
    frequency: :math:`\Delta t \ge 1`, steps between updates (the paper's
      examples prune every 100 to 1000 steps).
    initial_density: :math:`d_i \ge d_f`, in (0, 1] (default 1: dense).
    power: :math:`p > 0`.
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
  _check_frequency(frequency)
  if not power > 0:
    raise ValueError(f"power must be > 0, got {power}")
  return PruningSchedule(start=start, end=end, frequency=frequency,
                         initial_density=float(initial_density),
                         final_density=float(final_density), power=float(power))


def gradual(final_density: float, *, start: int, end: int, frequency: int,
            initial_density: float = 1.0) -> PruningSchedule:
  """Zhu & Gupta's cubic schedule: :func:`polynomial` with ``power=3``."""
  return polynomial(final_density, start=start, end=end, frequency=frequency,
                    initial_density=initial_density, power=3.0)


def density_at(schedule: PruningSchedule, step) -> jax.Array:
  r"""The scheduled overall density :math:`d_t` (traceable in ``step``).

  :math:`d_i` before ``start``, :math:`d_f` from ``end`` on (and from
  ``start`` on when ``power`` is 0), the polynomial in between; the masks
  take this density at the update steps only (:func:`is_update_step`).
  """
  d_i, d_f = schedule.initial_density, schedule.final_density
  length = schedule.end - schedule.start
  if length == 0 or schedule.power == 0:
    progress = (jnp.asarray(step) >= schedule.start).astype(jnp.float32)
    return d_f + (d_i - d_f) * (1.0 - progress)
  progress = jnp.clip((jnp.asarray(step, jnp.float32) - schedule.start) / length, 0.0, 1.0)
  return d_f + (d_i - d_f) * (1.0 - progress) ** schedule.power


def sparsity_fraction(schedule: PruningSchedule, step) -> jax.Array:
  r""":math:`\varphi_t = (1 - d_t)/(1 - d_f)`, the share of the final sparsity reached
  (1 for a final density of 1); a leaf with final density :math:`d_l` has
  :math:`1 - \varphi_t (1 - d_l)` at step :math:`t` (module docstring)."""
  if schedule.final_density >= 1.0:
    return jnp.ones((), jnp.float32)
  return (1.0 - density_at(schedule, step)) / (1.0 - schedule.final_density)


def is_update_step(schedule: PruningSchedule, step) -> jax.Array:
  """Whether the masks are recomputed at ``step`` (a traceable boolean)."""
  step = jnp.asarray(step)
  periodic_step = (step - schedule.start) % schedule.frequency == 0
  inside = (step >= schedule.start) & (step <= schedule.end)
  return inside & (periodic_step | (step == schedule.end))


def drop_fraction_at(alpha: float, decay: str, end: int, step) -> jax.Array:
  r"""The fraction of the active weights SET and RigL drop at ``step``.

  ``decay="cosine"``: :math:`\frac{\alpha}{2}(1 + \cos(\pi t / T_\text{end}))`
  (RigL, Eq. 1), 0 from ``end`` on; ``"constant"``: :math:`\alpha` (SET's
  :math:`\zeta`).
  """
  if decay not in DROP_DECAYS:
    raise ValueError(f"decay must be one of {DROP_DECAYS}, got {decay!r}")
  if decay == "constant":
    return jnp.asarray(alpha, jnp.float32)
  t = jnp.clip(jnp.asarray(step, jnp.float32) / max(end, 1), 0.0, 1.0)
  return 0.5 * alpha * (1.0 + jnp.cos(jnp.pi * t))
