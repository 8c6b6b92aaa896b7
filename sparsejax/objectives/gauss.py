r"""Gaussian code length with a learnable noise scale (teacher-student study).

Barth & von Petersenn, "Efficient compression of neural networks and
datasets", arXiv 2505.17469; the reference's ``Gauss_loss``
(``HelperFunctions/loss_functions.jl``) and its ``*_Gauss`` loss structs,
switched on by ``gauss_loss=true`` (the default for teacher-student runs).

Under a Gaussian noise model :math:`y \sim \mathcal N(f_\theta(x), \sigma^2)`
the code length of the targets is, per sample and output coordinate and up to
the constants :math:`\tfrac12\log_2(2\pi)` and the quantisation step,

.. math::  \ell = \frac{(y - f_\theta(x))^2}{2\sigma^2 \ln 2}
                  + \tfrac12 \log_2 \sigma^2 \quad\text{bits.}

Its batch mean is the reference's
:math:`\mathrm{MSE}/(2\sigma^2\ln 2) + \tfrac12\log_2\sigma^2`, minimised over
:math:`\sigma` at :math:`\sigma^2 = \mathrm{MSE}`, where it equals
:math:`\tfrac12\log_2(e\,\mathrm{MSE})`.

**Design.** :math:`\sigma` is trained by the shared optimiser but is neither a
model parameter (penalties, masks and pruning must not touch it) nor visible
to ``Objective.penalty`` (which never sees the data loss). So
:func:`with_gauss_loss` wraps any objective: it owns :math:`\sigma` in its
state and maps the task's per-example squared error to the code length
through ``Objective.loss_transform``, which the train step and the evaluation
apply to ``task.loss`` before averaging. (That field and its two call sites in
``sparsejax/train/step.py`` are the only support this module needs.)
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from sparsejax.objectives.base import Objective


class GaussState(NamedTuple):
  r"""The state of :func:`with_gauss_loss`.

  Attributes:
    inner: the wrapped objective's state.
    sigma: the noise scale :math:`\sigma`, a scalar array (the reference's
      ``final_sigma`` at the end of a run).
  """
  inner: Any
  sigma: jax.Array


def gauss_code_length(squared_error: jax.Array, sigma: jax.Array) -> jax.Array:
  r"""Per-sample Gaussian code length in bits, up to a constant.

  .. math::  \ell(e, \sigma) = \frac{e}{2\sigma^2\ln 2} + \tfrac12\log_2\sigma^2,
     \qquad
     \frac{\partial \ell}{\partial \sigma}
       = \frac{1}{\ln 2}\Big(\frac{1}{\sigma} - \frac{e}{\sigma^3}\Big),

  the reference's ``Gauss_loss``. It is affine in the squared error :math:`e`,
  so the mean over a batch is the code length of the batch MSE, exactly as the
  reference computes it. It is even in :math:`\sigma`, so the sign of the
  learned :math:`\sigma` carries no meaning.

  Args:
    squared_error: squared error per example (e.g.
      :func:`sparsejax.train.losses.squared_error`, the mean over output
      coordinates).
    sigma: the noise scale :math:`\sigma \ne 0`.
  """
  variance = jnp.square(sigma)
  return squared_error / (2 * variance * math.log(2)) + 0.5 * jnp.log2(variance)


def with_gauss_loss(objective: Objective, *, initial_sigma: float = 0.1) -> Objective:
  r"""``objective`` trained on the Gaussian code length with learnable :math:`\sigma`.

  The data loss becomes :func:`gauss_code_length` of the task's per-example
  loss, which must be a squared error (``sparsejax.train.REGRESSION``). The
  train step's ``loss`` metric and the evaluation's ``loss`` are then the code
  length in bits, as the reference's logs and final losses are.
  :math:`\sigma` is trained by the same optimiser as the parameters (the
  reference keeps it in the Lux parameters, outside the regularised ``p``),
  is not ascended and not projected, and is read from
  ``state.sigma`` (the reference's ``final_sigma``).

  Args:
    objective: the regularised objective to wrap; everything but the data
      loss is delegated to it, with its state as ``GaussState.inner``.
    initial_sigma: initial :math:`\sigma > 0` (the reference's 0.1).

  Returns:
    The Objective; its state is a :class:`GaussState` ``(inner, sigma)``.
  """
  if not initial_sigma > 0:
    raise ValueError(f"initial_sigma must be > 0, got {initial_sigma}")

  def init(key, params) -> GaussState:
    dtype = jnp.result_type(*jax.tree.leaves(params))
    return GaussState(inner=objective.init(key, params),
                      sigma=jnp.asarray(initial_sigma, dtype))

  def forward(params, state: GaussState, key, train):
    return objective.forward(params, state.inner, key, train)

  def penalty(params, state: GaussState):
    return objective.penalty(params, state.inner)

  def readout(params, state: GaussState):
    return objective.readout(params, state.inner)

  def ascend(state: GaussState) -> GaussState:
    return GaussState(inner=objective.ascend(state.inner), sigma=False)

  def project(state: GaussState) -> GaussState:
    return state._replace(inner=objective.project(state.inner))

  def loss_transform(per_example_loss, state: GaussState):
    inner_loss = objective.loss_transform(per_example_loss, state.inner)
    return gauss_code_length(inner_loss, state.sigma)

  return Objective(init=init, forward=forward, penalty=penalty, readout=readout,
                   ascend=ascend, project=project, loss_transform=loss_transform)
