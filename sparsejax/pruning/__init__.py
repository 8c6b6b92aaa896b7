"""Pruning procedures that act on trained parameters.

TAMADE, random gradient pruning, the layerwise Bernoulli fit (PEGP) and
neuron deletion, from the efficient-compression reference (Barth & von
Petersenn, arXiv 2505.17469); the description-length cut (the shortest
two-part code, Rissanen 1978); the unit criteria of log-uniform gates (SNR,
E[theta], L2, BMRS_N, BMRS_U; Wright et al., 2024) in :mod:`sparsejax.pruning.bmr`;
magnitude pruning (one-shot or gradual); purging L0-gated networks; the
pruning-at-initialisation scores (LTH, Deconst, SNIP, filter magnitude,
MagSign), the simulated-annealing mask search, filter scores and deletion.
Each module is here by name too.
"""

from sparsejax.pruning import (annealing, bmr, description_length, filters, layerwise, magnitude,
                               neurons, purge, random_gradient, saliency)
from sparsejax.pruning.annealing import anneal, random_mask
from sparsejax.pruning.filters import delete_filters, filter_scores
from sparsejax.pruning.layerwise import expected_layer_loss, fit_layer, layerwise_prune
from sparsejax.pruning.magnitude import gradual_density, magnitude_masks
from sparsejax.pruning.neurons import delete_neurons, fold_dead_neurons, resize_like
from sparsejax.pruning.random_gradient import make_random_gradient_prune_fn, random_gradient_prune
from sparsejax.pruning.saliency import (deconst_scores, filter_magnitude_scores, lth_scores,
                                        magsign_scores, snip_scores)
from sparsejax.pruning.tamade import TamadeResult, make_tamade_fn, tamade

__all__ = [
    "TamadeResult", "anneal", "annealing", "bmr", "description_length",
    "deconst_scores", "delete_filters", "delete_neurons", "expected_layer_loss",
    "filter_magnitude_scores", "filter_scores", "filters", "fit_layer", "fold_dead_neurons",
    "gradual_density", "layerwise", "layerwise_prune", "lth_scores", "magnitude",
    "magnitude_masks", "magsign_scores", "make_random_gradient_prune_fn", "make_tamade_fn",
    "neurons", "purge", "random_gradient", "random_gradient_prune", "random_mask", "resize_like",
    "saliency", "snip_scores", "tamade",
]
