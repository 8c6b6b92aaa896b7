"""Filter pruning of BasicCNN on CIFAR-10 at (or near) initialisation: annealing and its rivals.

The EEE 198 CNN study (Sanchez and Reyes, 2020; reference notes
``jax_ecosystem_and_annealing.md``, sections 2.1, 2.2, 2.4 and 2.5): a mask
over the 960 filters of BasicCNN (four unpadded 3x3 convs, 64-128-256-512) at
``anneal.sparsity`` (50-80 % in the reference's table), chosen by the
argument's criterion, applied to the initial weights, then retrained 90
epochs with SGD (lr 0.1, momentum 0.9, weight decay 1e-4, x0.1 at epochs 30
and 60, batch 256). ``sa`` searches with the CNN schedule (T0 0.005 x 0.995
over 1,000 levels, 2 -> 10 candidates per level: 8,219 evaluations, memory
of 60 masks) for the best accuracy of the dense network after
``anneal.k_epochs`` epochs (the reference's K = 0, 1, 3, 6, 90), masked, on
the first 1,024 training images; ``magnitude`` and ``magsign`` rank the
filters after 90 dense epochs. Images are scaled to [-1, 1] without
augmentation. CIFAR-10 needs its archive in ``$SPARSEJAX_DATA_DIR/cifar10``
(or ``--config.download=True``); the full table wants a GPU.

  python -m sparsejax.main --config=configs/anneal_cnn_cifar.py:sa --config.anneal.k_epochs=6 --config.seeds=3
"""

import ml_collections

from configs import common
from sparsejax.pruning import annealing

#: Criterion -> epochs of dense training before it (the reference's).
CRITERIA = {"sa": 0, "magnitude": 90, "magsign": 90, "random": 0}


def get_config(criterion: str = "sa") -> ml_collections.ConfigDict:
  """BasicCNN on CIFAR-10 pruned by ``criterion`` (one of :data:`CRITERIA`)."""
  k_epochs = common.choose(CRITERIA, criterion, "criterion")
  config = common.base("anneal", f"anneal_cnn_cifar_{criterion}")
  config.dataset = "cifar10"
  config.architecture = "basic_cnn"
  config.input_offset = 0.5   # (pixel / 255 - 0.5) / 0.5
  config.input_scale = 0.5
  config.optimizer = "sgd"
  config.lr = 0.1
  config.train_batch_size = 256
  config.eval_batch_size = 1000
  config.prune_window = 10
  config.finetuning_max_epochs = config.finetuning_min_epochs = 90
  config.checkpoint_every_epochs = 5
  a = config.anneal
  a.units = "filters"
  a.criterion = criterion
  a.sparsity = 0.7
  a.k_epochs = k_epochs
  a.eval_examples = 1024
  a.momentum = 0.9
  a.weight_decay = 1e-4
  a.lr_decay_epochs = (30, 60)
  a.lr_decay_factor = 0.1
  for name, value in annealing.CNN_SCHEDULE._asdict().items():
    a[name] = value
  return config
