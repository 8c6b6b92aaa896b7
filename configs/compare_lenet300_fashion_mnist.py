"""Every family on LeNet-300-100, Fashion-MNIST: the MNIST study's protocol and method table
(``configs/compare_lenet300_mnist.py``) on the other data set::

  python -m sparsejax.studies.compare --config=configs/compare_lenet300_fashion_mnist.py --out=docs/figures

The families' set-ups are their MNIST ones (no family tuned for Fashion-MNIST).
"""

import ml_collections

from configs import common
from configs.compare_lenet300_mnist import add_methods


def get_config() -> ml_collections.ConfigDict:
  config = common.comparison("compare_lenet300_fashion_mnist", "LeNet-300-100, Fashion-MNIST",
                             "lenet_300_100", "fashion_mnist")
  add_methods(config)
  return config
