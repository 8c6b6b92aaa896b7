r"""RL1, relaxed L1 (Barth & von Petersenn, arXiv 2505.17469, ``RL1_procedure.jl``).

A thin name for the efficient-compression baseline; the penalty itself is
:func:`sparsejax.objectives.elastic_net`.
"""

from __future__ import annotations

from sparsejax.objectives.base import Objective
from sparsejax.objectives.penalties import elastic_net


def rl1(alpha: float, rho: float = 0.0) -> Objective:
  r"""The training objective of RL1: :math:`\alpha\|\theta\|_1 + \rho\|\theta\|_2^2`.

  The reference adds :math:`\alpha \operatorname{sign}(\theta) + 2\rho\theta`
  to the data-loss gradient of every parameter (biases and BatchNorm
  included); it is plain L1 (elastic net with :math:`\rho > 0`), not
  reweighted L1. "Relaxed" refers to the procedure, not the penalty: after
  training with this objective and pruning, the finetuning phase trains the
  masked network without the penalty (:func:`sparsejax.objectives.plain`),
  which removes the L1 shrinkage of the surviving weights. With
  :math:`\alpha = \rho = 0` RL1 is the reference's "vanilla" baseline.

  Args:
    alpha: L1 weight :math:`\alpha \ge 0`.
    rho: L2 weight :math:`\rho \ge 0` (gradient :math:`2\rho\theta`).
  """
  return elastic_net(alpha, rho)
