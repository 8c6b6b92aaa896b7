"""Sparse training: layer-wise budgets, mask structures, schedules and algorithms.

* :mod:`~sparsejax.sparsity.distributions`: uniform, Erdős–Rényi and ERK budgets;
* :mod:`~sparsejax.sparsity.structures`: unstructured, N:M, block and channel masks,
  compressed N:M storage;
* :mod:`~sparsejax.sparsity.schedules`: one-shot, periodic and polynomial schedules,
  RigL's drop fraction;
* :mod:`~sparsejax.sparsity.algorithms`: magnitude, random, saliency and SNIP
  pruning, STE and SR-STE, static sparse training, SET and RigL, for the
  runner's train step and the optax wrapper
  (:func:`sparsejax.train.sparse_optax.sparsify`).
"""

from sparsejax.sparsity import algorithms, distributions, schedules, structures
from sparsejax.sparsity.algorithms import (Budget, SparseTraining, dynamic, evolutionary,
                                           magnitude, pruning, random, random_masks, rigl,
                                           saliency, snip, sr_ste, ste, static)
from sparsejax.sparsity.schedules import (PruningSchedule, gradual, one_shot, periodic,
                                          polynomial)
from sparsejax.sparsity.structures import (Block, Channel, NByM, NMCompressed, Unstructured,
                                           compress_nm, decompress_nm, nm_memory)

__all__ = ["Block", "Budget", "Channel", "NByM", "NMCompressed", "PruningSchedule",
           "SparseTraining", "Unstructured", "algorithms", "compress_nm", "decompress_nm",
           "distributions", "dynamic", "evolutionary", "gradual", "magnitude", "nm_memory",
           "one_shot", "periodic", "polynomial", "pruning", "random", "random_masks", "rigl",
           "saliency", "schedules", "snip", "sr_ste", "static", "ste", "structures"]
