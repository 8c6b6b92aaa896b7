"""Hard-concrete L0 gates on LeNet-300-100 / MNIST, constrained or penalised.

Every layer of the 784-300-100-10 MLP has one gate per input feature
(Louizos, Welling and Kingma, ICLR 2018). ``constrained`` (the default)
trains the Lagrangian with the expected kept density at most
``l0.target_density`` (Gallego-Posada et al., NeurIPS 2022): one value is a
model-wise constraint, three values (one per layer) are layer-wise;
``penalized`` minimises the loss plus ``l0.penalty`` times the expected L0;
``augmented`` is the augmented-Lagrangian formulation. The set-up is the
constrained-sparsity code's MNIST one (reference notes, section 3.1): Adam
7e-4 for the weights and the gates, SGD 1e-4 for the multipliers, batch 128,
200 epochs, no weight decay, ``droprate_init`` 0.2 for the first layer and
0.5 for the others, the median test gate, dual restarts, the code's
standardised inputs (:func:`configs.common.l0_mnist_setup`).

  python -m sparsejax.main --config=configs/l0_mlp_mnist.py --config.l0.target_density=0.35 --config.seeds=3
  python -m sparsejax.main --config=configs/l0_mlp_mnist.py --config.l0.target_density='(0.3,0.3,0.3)'
  python -m sparsejax.main --config=configs/l0_mlp_mnist.py:penalized --config.l0.penalty=0.1
  python -m sparsejax.main --config=configs/l0_mlp_mnist.py --config.l0.target_density=0.2 \
      --config.l0.dual_lr=1e-3 --config.l0.finetune_epochs=20   # then finetune the purged MLP
  python -m sparsejax.main --config=configs/l0_mlp_mnist.py --config.l0.target_density=0.2 \
      --config.l0.dual_lr=1e-3 --config.l0.target_anneal_epochs=100   # the target falls from 1

``penalty_grid`` is the reference's lambda search set-up (its bisection
script: penalised, Adam 1e-3, batch 256, 100 epochs) over the grid
``PENALTY_GRID`` of log10 lambda in [-3, 0], every value a seed of one
vmapped program; ``python -m sparsejax.studies.l0_bisection`` bisects on top
of it.
"""

import ml_collections

from configs import common

#: The argument -> l0.formulation.
FORMULATIONS = {"constrained": "lagrangian", "augmented": "augmented_lagrangian",
                "penalized": "penalized", "penalty_grid": "penalized"}
#: The penalty weights of ``penalty_grid``: log10 lambda = -3, -2.5, ..., 0.
PENALTY_GRID = tuple(round(10 ** (-3 + 0.5 * i), 6) for i in range(7))


def get_config(formulation: str = "constrained") -> ml_collections.ConfigDict:
  """LeNet-300-100 on MNIST under L0 gates (``formulation``: one of :data:`FORMULATIONS`)."""
  common.choose(FORMULATIONS, formulation, "formulation")
  config = common.base("l0", f"l0_mlp_mnist_{formulation}")
  config.dataset = "mnist"
  config.architecture = "lenet_300_100"
  common.l0_mnist_setup(config, FORMULATIONS[formulation])
  config.l0.target_density = (0.5,)
  config.l0.droprate_init = (0.2, 0.5, 0.5)
  if formulation == "penalty_grid":
    bisection_setup(config)
    config.l0.penalty = PENALTY_GRID
    config.l0.penalty_sweep = True
    config.seeds = len(PENALTY_GRID)
  return config


def bisection_setup(config: ml_collections.ConfigDict) -> None:
  """The reference's bisection trainings: Adam 1e-3, batch 256, 100 epochs."""
  config.lr = 1e-3
  config.l0.gates_lr = 1e-3
  config.train_batch_size = 256
  config.max_epochs = config.min_epochs = 100
