"""Sparse training of LeNet-300-100 on MNIST: the baselines of a comparison table.

Every method of ``sparsejax.recipes.sparse_training`` (gmp, random,
saliency, snip, ste, sr_ste, static, set, rigl) on the set-up of
``common.sparse_training_mnist_setup`` (Adam 1e-3, batch 100, 20 epochs,
55,000 / 5,000 / 10,000 images), at 90 % sparsity (``pruning.density``
0.1) with the ERK budget (``sparse.distribution``); both are fields::

  python -m sparsejax.main --config=configs/sparse_training_lenet300_mnist.py:rigl \\
      --config.pruning.density=0.05 --config.sparse.distribution=uniform --config.seeds=3

N:M rows: ``--config.sparse.structure=2:4 --config.pruning.density=0.5``
(``sr_ste`` is 2:4 by default, its masks recomputed every step as in Zhou et
al., 2021). Hyperparameters from the papers where they give them (RigL:
Delta T = 100, alpha = 0.3 with cosine decay, T_end = 75 %; SET: zeta = 0.3;
Zhu & Gupta: cubic, pruning every 100 steps; SR-STE: lambda_W = 2e-4); the
rest (optimiser, epochs, the end of gradual pruning at 75 %) are chosen
here, as no paper gives them for LeNet-300-100, and jaxpruner runs the same
(``benchmarks/peers/jaxpruner_mnist.py``).
"""

import ml_collections

from configs import common

METHODS = common.SPARSE_TRAINING_METHODS


def get_config(method: str = "rigl") -> ml_collections.ConfigDict:
  """LeNet-300-100 on MNIST, sparse-trained with ``method`` (one of :data:`METHODS`)."""
  return common.sparse_training(method, "lenet_300_100", epochs=20, name="lenet300")
