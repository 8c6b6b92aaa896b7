"""Hard-concrete L0 gates on LeNet-5-Caffe / MNIST, constrained or penalised.

Gates on the output channels of both convolutions and on the input features
of both Dense layers (800 and 500; Louizos, Welling and Kingma, ICLR 2018).
``constrained`` (the default) keeps the expected density at most
``l0.target_density``: 0.10 model-wise here, the reference's row "chosen to
find the model matching Louizos' final model"; four values are layer-wise.
The set-up is the constrained-sparsity code's MNIST one (see
``configs/l0_mlp_mnist.py``) with ``droprate_init`` 0.5 everywhere.

  python -m sparsejax.main --config=configs/l0_lenet5_mnist.py:constrained --config.max_epochs=30
  python -m sparsejax.main --config=configs/l0_lenet5_mnist.py --config.l0.target_density='(0.5,0.3,0.7,0.1)'
"""

import ml_collections

from configs import common
from configs.l0_mlp_mnist import FORMULATIONS as MLP_FORMULATIONS

#: The argument -> l0.formulation (the penalty grid is the MLP's).
FORMULATIONS = {k: v for k, v in MLP_FORMULATIONS.items() if k != "penalty_grid"}


def get_config(formulation: str = "constrained") -> ml_collections.ConfigDict:
  """LeNet-5-Caffe on MNIST under L0 gates (``formulation``: one of :data:`FORMULATIONS`)."""
  common.choose(FORMULATIONS, formulation, "formulation")
  config = common.base("l0", f"l0_lenet5_mnist_{formulation}")
  config.dataset = "mnist"
  config.architecture = "lenet5_caffe"
  common.l0_mnist_setup(config, FORMULATIONS[formulation])
  config.l0.target_density = (0.1,)
  config.l0.droprate_init = (0.5,)
  return config
