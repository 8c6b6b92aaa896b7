"""LeNet-300-100 on MNIST.

The fully connected network with two hidden layers, trained with a sparsity
method in mini-batches, pruned (random gradient pruning -> TAMADE -> random gradient
pruning) and finetuned with frozen masks. The data come from the original
MNIST files through tensorflow-datasets (see the README), split into
training, validation and test sets as the reference does.

Source: the standard LeNet-300-100 configuration of the efficient-compression
reference (Barth & von Petersenn, arXiv 2505.17469; its README's "standard
configurations"). The reference gives no per-method hyperparameters for it;
``METHODS`` holds those measured in ``docs/results/efficient_compression.md``
and ``docs/results/magnitude.md``. ``magnitude`` is
the magnitude-pruning baseline, pruned to the density in ``METHODS``.

The argument is the method, one of ``METHODS`` (default ``drr``)::

  python -m sparsejax.main --config=configs/lenet300_mnist.py:pmmp
"""

import ml_collections

from configs import common

#: Method -> the hyperparameters it uses for this set-up.
METHODS = {
    "none": {},
    "rl1": {"ec.alpha": 1e-5},
    "drr": {"ec.alpha": 1.2e-5, "ec.beta": 10.0},
    "pmmp": {"ec.alpha": 2e-4},
    "layerwise": {},
    "magnitude": {"pruning.density": 0.1},
}


def get_config(method: str = "drr") -> ml_collections.ConfigDict:
  """LeNet-300-100 on MNIST trained with ``method`` (one of :data:`METHODS`)."""
  config = common.base(method, f"lenet300_mnist_{method}")

  common.efficient_compression_mnist_setup(config)
  config.architecture = "lenet_300_100"

  common.set_method_fields(config, METHODS)
  return config
