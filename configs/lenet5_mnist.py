"""LeNet-5-Caffe on MNIST (meant for a GPU; on 2 CPU cores an epoch takes minutes).

Two convolutions with max-pooling, then two Dense layers; trained with a
sparsity method in mini-batches, pruned (random gradient pruning -> TAMADE
-> random gradient pruning) and finetuned with frozen masks. Data and
settings as ``lenet300_mnist.py``.

Source: the standard LeNet-5 configuration of the efficient-compression
reference (Barth & von Petersenn, arXiv 2505.17469; its README's "standard
configurations"). The hyperparameters in ``METHODS`` are not tuned for it:
they are LeNet-300-100's. ``layerwise`` is not offered: it fits Dense layers
only.

The argument is the method, one of ``METHODS`` (default ``drr``)::

  python -m sparsejax.main --config=configs/lenet5_mnist.py:rl1
"""

import ml_collections

from configs import common

#: Method -> the hyperparameters it uses for this set-up (not tuned: LeNet-300-100's).
METHODS = {
    "none": {},
    "rl1": {"ec.alpha": 1e-5},
    "drr": {"ec.alpha": 1.2e-5, "ec.beta": 10.0},
    "pmmp": {"ec.alpha": 2e-4},
}


def get_config(method: str = "drr") -> ml_collections.ConfigDict:
  """LeNet-5-Caffe on MNIST trained with ``method`` (one of :data:`METHODS`)."""
  config = common.base(method, f"lenet5_mnist_{method}")

  common.efficient_compression_mnist_setup(config)
  config.architecture = "lenet5_caffe"

  common.set_method_fields(config, METHODS)
  return config
