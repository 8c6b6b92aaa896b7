"""VGG-16 with BatchNorm on CIFAR-10 (the reference's standard set-up; meant for a GPU).

Batch 500, Adam lr 1e-3, min/max epochs 30/300, finetuning 10..50 epochs,
smoothing_window 20, prune_window 10, 45k/5k/10k split. On a CPU it runs,
slowly. CIFAR-10 comes through tensorflow-datasets or the official python
archive (see the README). The method is the argument (default drr)::

  python -m sparsejax.main --config=configs/vgg_cifar.py:rl1
"""

from sparsejax.runner.presets import standard_config


def get_config(method: str = "drr"):
  return standard_config("vgg_cifar", method)
