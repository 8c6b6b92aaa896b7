"""BMRS structured pruning of the LeNet-5 on Fashion-MNIST: one of the paper's Table 1 set-ups.

The BMRS LeNet-5 (a gate on every conv channel and hidden unit, widths scaled
by the input channels) on Fashion-MNIST, batch 32, Adam 1.4e-3: Wright, Igel
and Selvan, NeurIPS 2024, Appendix C. What the six BMRS set-ups share is
``configs/common.py``'s ``bmrs_appendix_c``.

The argument is the criterion, one of ``common.BMRS_CRITERIA`` (default
``bmrs_n``)::

  python -m sparsejax.main --config=configs/bmrs_lenet5_fashion_mnist.py:bmrs_u4 --config.seeds=3
"""

import ml_collections

from configs import common


def get_config(criterion: str = "bmrs_n") -> ml_collections.ConfigDict:
  """The BMRS LeNet-5 on Fashion-MNIST pruned by ``criterion`` (one of ``common.BMRS_CRITERIA``)."""
  config = common.base("bmrs", f"bmrs_lenet5_fashion_mnist_{criterion}")
  common.bmrs_appendix_c(config, criterion, "fashion_mnist")
  config.architecture = "bmrs_lenet5"
  config.train_batch_size = 32
  config.lr = 1.4e-3
  return config
