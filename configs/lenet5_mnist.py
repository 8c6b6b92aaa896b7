"""LeNet-5-Caffe on MNIST (the reference's standard set-up).

Batch 500, Adam lr 1e-3, min/max epochs 300/5000, finetuning up to 1000
epochs, prune_window 10, shrinking off, 45k/5k/10k split. The data come from
the original MNIST files through tensorflow-datasets (see the README). The
method is the argument (default drr)::

  python -m sparsejax.main --config=configs/lenet5_mnist.py:pmmp
"""

from sparsejax.runner.presets import standard_config


def get_config(method: str = "drr"):
  return standard_config("lenet5_mnist", method)
