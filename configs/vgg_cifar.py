"""VGG-16 with BatchNorm on CIFAR-10 (the reference's standard set-up; meant for a GPU).

Batch 500, Adam lr 1e-3, min/max epochs 30/300, finetuning 10..50 epochs,
smoothing_window 20, prune_window 10, 45k/5k/10k split. On a CPU it runs,
slowly. CIFAR-10 comes through tensorflow-datasets or the official python
archive (see the README).
"""

from sparsejax.runner.config import base_config


def get_config():
  c = base_config()
  c.experiment_name = "vgg_cifar"
  c.dataset = "cifar10"
  c.architecture = "vgg16_bn"
  c.train_batch_size = 500
  c.eval_batch_size = 500
  c.lr = 1e-3
  c.method = "rl1"
  c.alpha = 0.0
  c.min_epochs = 30
  c.max_epochs = 300
  c.smoothing_window = 20
  c.prune_window = 10
  c.finetuning_min_epochs = 10
  c.finetuning_max_epochs = 50
  c.pruning.criterion = "global_density"
  c.pruning.density = 0.1
  c.checkpoint_every_epochs = 10
  return c
