"""Regularised objectives, one module per method family."""

from sparsejax.objectives.base import (Objective, abs_sign, check_nonnegative, tree_sum,
                                       weight_penalty)
from sparsejax.objectives.drr import drr, norm_factors
from sparsejax.objectives.gauss import GaussState, gauss_code_length, with_gauss_loss
from sparsejax.objectives.log_uniform import GateState, log_uniform_gates
from sparsejax.objectives.penalties import elastic_net, l1, l2, plain
from sparsejax.objectives.pmmp import (PMMPState, expected_squared_gap, gamma_saturated, pmmp,
                                       prune_state)
from sparsejax.objectives.rl1 import rl1

__all__ = [
    "GateState", "GaussState", "Objective", "PMMPState", "abs_sign", "check_nonnegative", "drr",
    "elastic_net", "expected_squared_gap", "gamma_saturated", "gauss_code_length", "l1", "l2",
    "log_uniform_gates", "norm_factors", "plain", "pmmp", "prune_state", "rl1", "tree_sum",
    "weight_penalty", "with_gauss_loss",
]
