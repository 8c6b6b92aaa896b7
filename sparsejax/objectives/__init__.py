"""Regularised objectives, one module per method family."""

from sparsejax.objectives.base import Objective, tree_sum, weight_penalty
from sparsejax.objectives.penalties import elastic_net, l1, l2, plain

__all__ = ["Objective", "elastic_net", "l1", "l2", "plain", "tree_sum", "weight_penalty"]
