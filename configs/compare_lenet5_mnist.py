"""Every family on LeNet-5-Caffe, MNIST, under one protocol, on a shortened budget.

The LeNet-300-100 study's protocol (``configs/compare_lenet300_mnist.py``)
with **10 epochs** per method's whole procedure (a convolutional network on
a 2-core CPU; the families' papers train 200-250) and its split of them:
two thirds training and one third finetuning for the one-shot and penalty
families, all of them sparse for the sparse-training ones::

  python -m sparsejax.studies.compare --config=configs/compare_lenet5_mnist.py --out=docs/figures

One-shot magnitude runs the efficient-compression family's magnitude set-up
(``lenet300_mnist:magnitude``) on this network: no LeNet-5 config has a
magnitude argument.
"""

import ml_collections

from configs import common
from configs.compare_lenet300_mnist import ALL_SPARSE, TRAIN_FINETUNE


def get_config() -> ml_collections.ConfigDict:
  config = common.comparison("compare_lenet5_mnist", "LeNet-5-Caffe, MNIST", "lenet5_caffe",
                             "mnist")
  config.epochs = 10
  add = common.compare_method
  add(config, "magnitude", "lenet300_mnist:magnitude", "density", "pruning.density",
      epochs=TRAIN_FINETUNE)
  add(config, "random", "sparse_training_lenet5_mnist:random", "density", "pruning.density",
      epochs=ALL_SPARSE)
  for method in ("gmp", "rigl", "set", "ste"):
    add(config, method, f"sparse_training_lenet5_mnist:{method}", "density", "pruning.density",
        epochs=ALL_SPARSE)
  add(config, "l0_constrained", "l0_lenet5_mnist:constrained", "density", "l0.target_density",
      as_tuple=True, epochs=ALL_SPARSE)
  add(config, "drr", "lenet5_mnist:drr", "strength", "ec.alpha", (3e-6, 1.2e-5, 5e-5),
      epochs=TRAIN_FINETUNE, fields={"pruning.calibration": "val"})
  add(config, "deephoyer_hs", "deephoyer_lenet5_mnist:hs", "strength", "deephoyer.decay",
      (5e-5, 1e-4, 3e-4), epochs=TRAIN_FINETUNE)
  return config
