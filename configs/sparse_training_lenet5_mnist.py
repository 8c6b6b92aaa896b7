"""LeNet-5-Caffe on MNIST, trained sparse from the first step, 5 epochs.

The set-up (Adam 1e-3, batch 100, 55,000 / 5,000 / 10,000 images, the papers'
schedule hyperparameters where they give them) is
``common.sparse_training_mnist_setup``; 90 % sparsity with the ERK budget,
both fields. The argument is the method of ``sparsejax.recipes.sparse_training``
(default rigl)::

  python -m sparsejax.main --config=configs/sparse_training_lenet5_mnist.py:set --config.seeds=3

2:4 rows: ``--config.sparse.structure=2:4 --config.pruning.density=0.5``
(``sr_ste`` is 2:4 already). Its first convolution has one input channel:
N:M leaves it dense (a group of one keeps its entry). Beside jaxpruner:
``benchmarks/sparse_training_table.py --network lenet5``.
"""

import ml_collections

from configs import common

METHODS = common.SPARSE_TRAINING_METHODS


def get_config(method: str = "rigl") -> ml_collections.ConfigDict:
  """LeNet-5-Caffe on MNIST, sparse-trained with ``method`` (one of :data:`METHODS`)."""
  return common.sparse_training(method, "lenet5_caffe", epochs=5, name="lenet5")
