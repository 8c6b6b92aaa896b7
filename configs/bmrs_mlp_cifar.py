"""The BMRS MLP on CIFAR-10: BMRS structured pruning, one of the paper's set-ups.

The tanh MLP of the BMRS paper, with a log-uniform multiplicative-noise gate
on every hidden unit (Linear-Tanh-gate; ``hidden_layers`` and ``hidden_dim``
below set its depth and width), trained on CIFAR-10 with the data loss plus
the gates' KL; the criterion (the argument) prunes units during training, then
the network is finetuned with frozen masks and the best validation epoch is
tested. Inputs are centred as the released ``train.py`` does.

Source: Wright, Igel and Selvan, "BMRS: Bayesian Model Reduction for
Structured Pruning", NeurIPS 2024, Appendix C, and the released code
(``saintslab/bmrs-structured-pruning``). What the six BMRS set-ups share is
``configs/common.py``'s ``bmrs_appendix_c``.

The argument is the criterion, one of ``common.BMRS_CRITERIA`` (default
``bmrs_n``)::

  python -m sparsejax.main --config=configs/bmrs_mlp_cifar.py:bmrs_u4 --config.seeds=3
"""

import ml_collections

from configs import common


def get_config(criterion: str = "bmrs_n") -> ml_collections.ConfigDict:
  """The BMRS MLP on CIFAR-10 pruned by ``criterion`` (one of ``common.BMRS_CRITERIA``)."""
  config = common.base("bmrs", f"bmrs_mlp_cifar_{criterion}")
  common.bmrs_appendix_c(config, criterion)

  config.dataset = "cifar10"
  config.input_offset = 0.5  # (pixel / 255 - 0.5) / 0.5
  config.input_scale = 0.5

  config.architecture = "bmrs_mlp"
  config.hidden_layers = 5  # Linear(h, h) layers after the first
  config.hidden_dim = 150

  config.train_batch_size = 32
  config.lr = 6.8e-4
  return config
