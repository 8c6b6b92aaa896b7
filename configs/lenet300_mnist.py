"""LeNet-300-100 on MNIST (the reference's standard set-up).

Batch 500, Adam lr 1e-3, min/max epochs 300/5000, finetuning up to 1000
epochs, prune_window 10, shrinking off, 45k/5k/10k split. The data come
from the original MNIST files through tensorflow-datasets (see the README).
"""

from sparsejax.runner.config import base_config


def get_config():
  c = base_config()
  c.experiment_name = "lenet300_mnist"
  c.dataset = "mnist"
  c.architecture = "lenet_300_100"
  c.train_batch_size = 500
  c.eval_batch_size = 5000
  c.lr = 1e-3
  c.method = "rl1"
  c.alpha = 0.0
  c.min_epochs = 300
  c.max_epochs = 5000
  c.prune_window = 10
  c.finetuning_max_epochs = 1000
  c.pruning.criterion = "global_density"
  c.pruning.density = 0.1
  c.checkpoint_every_epochs = 10
  return c
