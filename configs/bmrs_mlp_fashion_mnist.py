"""BMRS structured pruning of the MLP on Fashion-MNIST: one of the paper's Table 1 set-ups.

The BMRS MLP (2 hidden layers of 150 units, a gate on each unit) on Fashion-
MNIST, batch 128, Adam 1.5e-3: Wright, Igel and Selvan, NeurIPS 2024, Appendix
C. What the six BMRS set-ups share is ``configs/common.py``'s
``bmrs_appendix_c``.

The argument is the criterion, one of ``common.BMRS_CRITERIA`` (default
``bmrs_n``)::

  python -m sparsejax.main --config=configs/bmrs_mlp_fashion_mnist.py:bmrs_u4 --config.seeds=3
"""

import ml_collections

from configs import common


def get_config(criterion: str = "bmrs_n") -> ml_collections.ConfigDict:
  """The BMRS MLP on Fashion-MNIST pruned by ``criterion`` (one of ``common.BMRS_CRITERIA``)."""
  config = common.base("bmrs", f"bmrs_mlp_fashion_mnist_{criterion}")
  common.bmrs_appendix_c(config, criterion, "fashion_mnist")
  config.architecture = "bmrs_mlp"
  config.hidden_layers = 1  # Linear(h, h) layers after the first
  config.hidden_dim = 150
  config.train_batch_size = 128
  config.lr = 1.5e-3
  return config
