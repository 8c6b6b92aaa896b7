"""Regularised objectives, one module per method family.

Every family's objective builders and public helpers are here by name; the
modules whose functions share names with others (DeepHoyer's per-tensor
``l1`` and ``hoyer``, the hard-concrete gates' helpers, the log-uniform
criteria) are here as modules: :mod:`~sparsejax.objectives.hoyer`,
:mod:`~sparsejax.objectives.hard_concrete`,
:mod:`~sparsejax.objectives.constrained_l0`,
:mod:`~sparsejax.objectives.log_uniform`.
"""

from sparsejax.objectives import constrained_l0, hard_concrete, hoyer, log_uniform
from sparsejax.objectives.base import (Objective, abs_sign, check_nonnegative, tree_sum,
                                       weight_penalty)
from sparsejax.objectives.drr import drr, norm_factors
from sparsejax.objectives.constrained_l0 import L0State, hard_concrete_l0
from sparsejax.objectives.gauss import GaussState, gauss_code_length, with_gauss_loss
from sparsejax.objectives.hard_concrete import GatedLayer, gated_layers
from sparsejax.objectives.hoyer import (deephoyer, group_hoyer_square, group_lasso, hoyer_square,
                                        transformed_l1)
from sparsejax.objectives.log_uniform import GateState, log_uniform_gates
from sparsejax.objectives.penalties import elastic_net, l1, l2, plain
from sparsejax.objectives.pmmp import (PMMPState, expected_squared_gap, gamma_saturated, pmmp,
                                       prune_state)
from sparsejax.objectives.rl1 import rl1

__all__ = [
    "GateState", "GatedLayer", "GaussState", "L0State", "Objective", "PMMPState", "abs_sign",
    "check_nonnegative", "constrained_l0", "deephoyer", "drr", "elastic_net",
    "expected_squared_gap", "gamma_saturated", "gated_layers", "gauss_code_length",
    "group_hoyer_square", "group_lasso", "hard_concrete", "hard_concrete_l0", "hoyer",
    "hoyer_square", "l1", "l2", "log_uniform", "log_uniform_gates", "norm_factors", "plain",
    "pmmp", "prune_state", "rl1", "transformed_l1", "tree_sum", "weight_penalty",
    "with_gauss_loss",
]
