"""Pruning the bias-free LeNet-300-100 on MNIST at initialisation: annealing and its rivals.

The EEE 198 MLP study (Sanchez and Reyes, 2020; reference notes
``jax_ecosystem_and_annealing.md``, sections 2.3 and 2.4): an unstructured
mask over the 266,200 weights of a 784-300-100-10 relu MLP without biases,
at ``anneal.sparsity`` (70 %, 80 % or 90 % in the reference's table), chosen
by the argument's criterion, applied to the initial weights (the rewind
accuracy is tested), then retrained 50 epochs with Adadelta (lr 1, batch
64). ``sa`` searches with the MLP schedule (T0 0.006 x 0.999 per level,
1 -> 50 candidates per level, 100,000 evaluations, memory of 50 masks) for
the best accuracy on the first 2,000 training images of the dense network
after ``anneal.k_epochs`` epochs (0: at initialisation); ``lth`` and
``deconst`` rank the weights after 50 dense epochs; ``snip`` and ``random``
need no training.

  python -m sparsejax.main --config=configs/anneal_mlp_mnist.py:lth --config.anneal.sparsity=0.9 --config.seeds=3
  python -m sparsejax.main --config=configs/anneal_mlp_mnist.py:sa --config.anneal.max_evaluations=10000
"""

import ml_collections

from configs import common

#: Criterion -> epochs of dense training before it (the reference's).
CRITERIA = {"sa": 0, "lth": 50, "deconst": 50, "snip": 0, "random": 0}


def get_config(criterion: str = "sa") -> ml_collections.ConfigDict:
  """The bias-free LeNet-300-100 on MNIST pruned by ``criterion`` (one of :data:`CRITERIA`)."""
  k_epochs = common.choose(CRITERIA, criterion, "criterion")
  config = common.base("anneal", f"anneal_mlp_mnist_{criterion}")
  config.dataset = "mnist"
  config.val_fraction = 1 / 12   # 55,000 train / 5,000 validation (the reference trains on 60,000)
  config.architecture = "lenet_300_100_no_bias"
  config.optimizer = "adadelta"
  config.lr = 1.0
  config.train_batch_size = 64
  config.eval_batch_size = 5000
  config.prune_window = 10
  config.finetuning_max_epochs = config.finetuning_min_epochs = 50
  config.checkpoint_every_epochs = 10
  config.anneal.criterion = criterion
  config.anneal.sparsity = 0.7
  config.anneal.k_epochs = k_epochs
  return config
