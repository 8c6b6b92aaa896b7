"""Pruning procedures that act on trained parameters: TAMADE, random gradient pruning."""

from sparsejax.pruning.random_gradient import make_random_gradient_prune_fn, random_gradient_prune
from sparsejax.pruning.tamade import TamadeResult, make_tamade_fn, tamade

__all__ = [
    "TamadeResult", "make_random_gradient_prune_fn", "make_tamade_fn", "random_gradient_prune",
    "tamade",
]
