"""The plain objective and elementwise weight penalties (L1, L2, elastic net).

These exercise the Objective contract end to end; the method families
(PMMP, DRR, BMRS, DeepHoyer, L0) live in their own modules.
"""

from __future__ import annotations

import jax.numpy as jnp

from sparsejax.objectives.base import (Objective, abs_sign, check_nonnegative, weight_penalty,
                                       weighted_tree_sum)


def plain() -> Objective:
  """No regulariser: the data loss alone."""
  return weight_penalty(lambda params: jnp.zeros(()))


def l1(alpha: float) -> Objective:
  r"""L1 penalty :math:`\alpha \sum_i |\theta_i|` over every parameter.

  Tibshirani (1996); with finetuning afterwards this is the efficient-compression
  reference's RL1 ("relaxed L1").
  """
  check_nonnegative("alpha", alpha)
  return weight_penalty(lambda params: weighted_tree_sum(alpha, abs_sign, params))


def l2(rho: float) -> Objective:
  r"""L2 penalty :math:`\rho \sum_i \theta_i^2` (note: no factor 1/2).

  This matches the reference's ``rho`` whose gradient is :math:`2\rho\theta`.
  """
  check_nonnegative("rho", rho)
  return weight_penalty(lambda params: weighted_tree_sum(rho, jnp.square, params))


def elastic_net(alpha: float, rho: float) -> Objective:
  r""":math:`\alpha \|\theta\|_1 + \rho \|\theta\|_2^2` (Zou & Hastie, 2005)."""
  check_nonnegative("alpha", alpha)
  check_nonnegative("rho", rho)
  return weight_penalty(
      lambda params: (weighted_tree_sum(alpha, abs_sign, params)
                      + weighted_tree_sum(rho, jnp.square, params)))

