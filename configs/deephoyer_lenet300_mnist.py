"""DeepHoyer on LeNet-300-100 / MNIST: regularise, prune by the std rule, finetune.

LeNet-300-100 (784-300-100-10) trained with the data loss plus a sparsity
regulariser summed per tensor (the argument), pruned tensor by tensor with
``|w| < s * std(w)`` (biases included) and finetuned with frozen zeros under a
fresh Adam with weight decay; the finetuning epoch with the best validation
accuracy is tested. Seeds run as one vmapped program (``--config.seeds=3``).

Source: Yang, Wen and Li, "DeepHoyer", ICLR 2020, and its MNIST code
(``yanghr/DeepHoyer``: Adam, batch 100, ``element.py`` / ``structure.py``,
``prun_tune_V.py``); the decays and sensitivities are those of the COMP6248
reproduction (reference notes section 1.3), whose table
``python -m sparsejax.studies.deephoyer_report WORKDIR`` prints beside ours.
The dense baseline is ``none``; ``magnitude`` is the magnitude-pruning
baseline under the same schedule: dense training, one global magnitude cut
to ``MAGNITUDE_DENSITY`` (the density the Hoyer-Square row reaches),
finetuning.

The argument is the regulariser, one of ``REGULARISERS`` (default ``hs``)::

  python -m sparsejax.main --config=configs/deephoyer_lenet300_mnist.py:group_hs --config.seeds=3
"""

import ml_collections

from configs import common

#: Regulariser -> (decay, std-rule sensitivity) (reference notes, section 1.3).
REGULARISERS = {
    "none": (0.0, 0.25),
    "l1": (1e-3, 0.25),
    "hoyer": (0.02, 0.05),
    "hs": (2e-4, 0.03),
    "tl1": (2e-5, 0.3),
    "group_lasso": (1e-3, 0.25),
    "group_hs": (2e-3, 0.8),
}


#: The magnitude baseline's density: the Hoyer-Square row's (docs/results/deephoyer.md).
MAGNITUDE_DENSITY = 0.028


def get_config(regulariser: str = "hs") -> ml_collections.ConfigDict:
  """LeNet-300-100 on MNIST with DeepHoyer's ``regulariser`` (one of :data:`REGULARISERS`).

  ``magnitude`` instead gives the magnitude-pruning baseline with the same
  data, optimiser and epochs.
  """
  common.choose({**REGULARISERS, "magnitude": None}, regulariser, "regulariser")
  method = "magnitude" if regulariser == "magnitude" else "deephoyer"
  config = common.base(method, f"deephoyer_lenet300_mnist_{regulariser}")

  common.deephoyer_mnist_setup(config)
  config.architecture = "lenet_300_100"
  config.eval_batch_size = 5000

  if method == "magnitude":
    config.pruning.density = MAGNITUDE_DENSITY
    config.magnitude.scope = "global"
    return config

  decay, sensitivity = REGULARISERS[regulariser]
  common.deephoyer_regulariser(config, regulariser, decay, sensitivity)
  return config
