"""BMRS structured pruning of the LeNet-5 on CIFAR-10: one of the paper's Table 1 set-ups.

The BMRS LeNet-5 (a gate on every conv channel and hidden unit, widths scaled
by the input channels) on CIFAR-10, batch 64, Adam 0.001026894323862342:
Wright, Igel and Selvan, NeurIPS 2024, Appendix C. The learning rate is the
reference README's example for this set-up (the paper gives 1e-3). What the
six BMRS set-ups share is ``configs/common.py``'s ``bmrs_appendix_c``.

The argument is the criterion, one of ``common.BMRS_CRITERIA`` (default
``bmrs_n``)::

  python -m sparsejax.main --config=configs/bmrs_lenet5_cifar.py:bmrs_u4 --config.seeds=3
"""

import ml_collections

from configs import common


def get_config(criterion: str = "bmrs_n") -> ml_collections.ConfigDict:
  """The BMRS LeNet-5 on CIFAR-10 pruned by ``criterion`` (one of ``common.BMRS_CRITERIA``)."""
  config = common.base("bmrs", f"bmrs_lenet5_cifar_{criterion}")
  common.bmrs_appendix_c(config, criterion, "cifar10")
  config.architecture = "bmrs_lenet5"
  config.train_batch_size = 64
  config.lr = 0.001026894323862342
  return config
