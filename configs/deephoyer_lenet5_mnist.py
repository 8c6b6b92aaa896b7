"""DeepHoyer on LeNet-5-Caffe / MNIST: regularise, prune by the std rule, finetune.

LeNet-5-Caffe (conv 20 5x5, pool, conv 50 5x5, pool, 800-500-10) trained with the data loss plus a sparsity
regulariser summed per tensor (the argument), pruned tensor by tensor with
``|w| < s * std(w)`` (biases included) and finetuned with frozen zeros under a
fresh Adam with weight decay; the finetuning epoch with the best validation
accuracy is tested. Seeds run as one vmapped program (``--config.seeds=3``).

Source: Yang, Wen and Li, "DeepHoyer", ICLR 2020, and its MNIST code
(``yanghr/DeepHoyer``: Adam, batch 100, ``element.py`` / ``structure.py``,
``prun_tune_V.py``); the decays and sensitivities are those of the COMP6248
reproduction (reference notes section 1.3), whose table
``python -m sparsejax.studies.deephoyer_report WORKDIR`` prints beside ours.
The dense baseline is ``none``. On a CPU, shorten the schedule with
``--config.max_epochs`` / ``--config.finetuning_max_epochs``.

The argument is the regulariser, one of ``REGULARISERS`` (default ``hs``)::

  python -m sparsejax.main --config=configs/deephoyer_lenet5_mnist.py:group_hs --config.seeds=3
"""

import ml_collections

from configs import common

#: Regulariser -> (decay, std-rule sensitivity) (reference notes, section 1.3).
REGULARISERS = {
    "none": (0.0, 0.25),
    "l1": (1e-3, 0.25),
    "hoyer": (0.01, 0.08),
    "hs": (1e-4, 0.03),
    "tl1": (2e-5, 0.6),
    "group_lasso": (1e-3, 0.25),
    "group_hs": (0.1, 0.008),
}


def get_config(regulariser: str = "hs") -> ml_collections.ConfigDict:
  """LeNet-5-Caffe on MNIST with DeepHoyer's ``regulariser`` (one of :data:`REGULARISERS`)."""
  config = common.base("deephoyer", f"deephoyer_lenet5_mnist_{regulariser}")
  decay, sensitivity = common.choose(REGULARISERS, regulariser, "regulariser")

  common.deephoyer_mnist_setup(config)
  config.architecture = "lenet5_caffe"
  config.eval_batch_size = 1000

  common.deephoyer_regulariser(config, regulariser, decay, sensitivity)
  return config
