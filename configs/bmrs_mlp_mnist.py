"""The BMRS MLP on MNIST: BMRS structured pruning, one of the paper's set-ups.

The tanh MLP of the BMRS paper, with a log-uniform multiplicative-noise gate
on every hidden unit (Linear-Tanh-gate; ``hidden_layers`` and ``hidden_dim``
below set its depth and width), trained on MNIST with the data loss plus the
gates' KL; the criterion (the argument) prunes units during training, then the
network is finetuned with frozen masks and the best validation epoch is
tested. Inputs are centred as the released ``train.py`` does.

Source: Wright, Igel and Selvan, "BMRS: Bayesian Model Reduction for
Structured Pruning", NeurIPS 2024, Appendix C, and the released code
(``saintslab/bmrs-structured-pruning``). What the six BMRS set-ups share is
``configs/common.py``'s ``bmrs_appendix_c``.

The argument is the criterion, one of ``common.BMRS_CRITERIA`` (default
``bmrs_n``)::

  python -m sparsejax.main --config=configs/bmrs_mlp_mnist.py:bmrs_u4 --config.seeds=3
"""

import ml_collections

from configs import common


def get_config(criterion: str = "bmrs_n") -> ml_collections.ConfigDict:
  """The BMRS MLP on MNIST pruned by ``criterion`` (one of ``common.BMRS_CRITERIA``)."""
  config = common.base("bmrs", f"bmrs_mlp_mnist_{criterion}")
  common.bmrs_appendix_c(config, criterion)

  config.dataset = "mnist"
  config.input_offset = 127 / 255  # (pixel - 127) / 255
  config.input_scale = 1.0

  config.architecture = "bmrs_mlp"
  config.hidden_layers = 7  # Linear(h, h) layers after the first
  config.hidden_dim = 100

  config.train_batch_size = 128
  config.lr = 8.5e-4
  return config
