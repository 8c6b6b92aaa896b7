"""Pruning procedures that act on trained parameters.

TAMADE, random gradient pruning, the layerwise Bernoulli fit (PEGP) and
neuron deletion, from the efficient-compression reference (Barth & von
Petersenn, arXiv 2505.17469); the unit criteria of log-uniform gates (SNR,
E[theta], L2, BMRS_N, BMRS_U; Wright et al., 2024) in :mod:`sparsejax.pruning.bmr`.
"""

from sparsejax.pruning import bmr
from sparsejax.pruning.layerwise import expected_layer_loss, fit_layer, layerwise_prune
from sparsejax.pruning.neurons import delete_neurons, fold_dead_neurons, resize_like
from sparsejax.pruning.random_gradient import make_random_gradient_prune_fn, random_gradient_prune
from sparsejax.pruning.tamade import TamadeResult, make_tamade_fn, tamade

__all__ = [
    "TamadeResult", "bmr", "delete_neurons", "expected_layer_loss", "fit_layer",
    "fold_dead_neurons",
    "layerwise_prune", "make_random_gradient_prune_fn", "make_tamade_fn", "random_gradient_prune",
    "resize_like", "tamade",
]
