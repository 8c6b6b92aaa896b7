"""LeNet-5-Caffe on MNIST: the reference's standard set-up, as for LeNet-300-100.

Two 5x5 conv layers (20, 50 channels) with max-pooling, then Dense 800-500-10
(431,080 parameters); the settings are those of ``lenet300_mnist.py``. Meant
for a GPU; on 2 CPU cores an epoch takes minutes. Method as the argument::

  python -m sparsejax.main --config=configs/lenet5_mnist.py:rl1
"""

from sparsejax.runner.presets import standard_config


def get_config(method: str = "drr"):
  return standard_config("lenet5_mnist", method)
