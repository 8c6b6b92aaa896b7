"""BMRS structured pruning of the MLP on CIFAR-10: one of the paper's Table 1 set-ups.

The BMRS MLP (6 hidden layers of 150 units, a gate on each unit) on CIFAR-10,
batch 32, Adam 6.8e-4: Wright, Igel and Selvan, NeurIPS 2024, Appendix C. What
the six BMRS set-ups share is ``configs/common.py``'s ``bmrs_appendix_c``.

The argument is the criterion, one of ``common.BMRS_CRITERIA`` (default
``bmrs_n``)::

  python -m sparsejax.main --config=configs/bmrs_mlp_cifar.py:bmrs_u4 --config.seeds=3
"""

import ml_collections

from configs import common


def get_config(criterion: str = "bmrs_n") -> ml_collections.ConfigDict:
  """The BMRS MLP on CIFAR-10 pruned by ``criterion`` (one of ``common.BMRS_CRITERIA``)."""
  config = common.base("bmrs", f"bmrs_mlp_cifar_{criterion}")
  common.bmrs_appendix_c(config, criterion, "cifar10")
  config.architecture = "bmrs_mlp"
  config.hidden_layers = 5  # Linear(h, h) layers after the first
  config.hidden_dim = 150
  config.train_batch_size = 32
  config.lr = 6.8e-4
  return config
