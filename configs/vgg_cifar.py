"""VGG-16 with BatchNorm on CIFAR-10 (meant for a GPU; on a CPU it runs, slowly).

Trained with a sparsity method in mini-batches, pruned (random gradient
pruning -> TAMADE -> random gradient pruning) and finetuned with frozen
masks. CIFAR-10 comes through tensorflow-datasets or the official python
archive (see the README), split into training, validation and test sets as
the reference does.

Source: the standard VGG-16 configuration of the efficient-compression
reference (Barth & von Petersenn, arXiv 2505.17469; its README's "standard
configurations"). The hyperparameters in ``METHODS`` are not tuned (no GPU
run yet). ``layerwise`` is not offered: it fits Dense layers only.

The argument is the method, one of ``METHODS`` (default ``drr``)::

  python -m sparsejax.main --config=configs/vgg_cifar.py:rl1
"""

import ml_collections

from configs import common

#: Method -> the hyperparameters it uses for this set-up (not tuned).
METHODS = {
    "none": {},
    "rl1": {"ec.alpha": 1e-6},
    "drr": {"ec.alpha": 1e-6, "ec.beta": 10.0},
    "pmmp": {"ec.alpha": 1e-6},
}


def get_config(method: str = "drr") -> ml_collections.ConfigDict:
  """VGG-16-BN on CIFAR-10 trained with ``method`` (one of :data:`METHODS`)."""
  config = common.base(method, f"vgg_cifar_{method}")

  config.dataset = "cifar10"
  config.architecture = "vgg16_bn"

  # Optimiser.
  config.optimizer = "adam"
  config.lr = 1e-3
  config.train_batch_size = 500
  config.eval_batch_size = 500

  # Phases.
  config.min_epochs = 30
  config.max_epochs = 300
  config.smoothing_window = 20
  config.prune_window = 10
  config.finetuning_min_epochs = 10
  config.finetuning_max_epochs = 50
  config.ec.shrinking = False
  config.ec.shrinking_from_deviation_of = 1e-2

  config.checkpoint_every_epochs = 10

  common.set_method_fields(config, METHODS)
  return config
