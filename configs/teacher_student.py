"""Teacher-student regression: the quickstart (CPU, no download, minutes on 2 cores).

A small tanh teacher network generates noisy training points; a wider tanh
student is trained with a sparsity method on the full batch, pruned (random
gradient pruning -> TAMADE -> random gradient pruning) and finetuned with
frozen masks. A good run keeps about as many parameters as the teacher has.

Source: the standard teacher-student configuration of the efficient-compression
reference (Barth & von Petersenn, arXiv 2505.17469; its README's "standard
configurations"), with the regularised phase capped lower than the
reference allows (see ``max_epochs`` below). The reference gives no
per-method hyperparameters for it; ``METHODS`` holds those chosen in
``docs/results.md``. ``magnitude`` is the magnitude-pruning baseline.

The argument is the method, one of ``METHODS`` (default ``drr``)::

  python -m sparsejax.main --config=configs/teacher_student.py:pmmp
"""

import ml_collections

from configs import common

#: Method -> the hyperparameters it uses for this set-up.
METHODS = {
    "none": {},
    "rl1": {"ec.alpha": 1e-3},
    "drr": {"ec.alpha": 2e-4, "ec.beta": 10.0},
    "pmmp": {"ec.alpha": 1e-2},
    "layerwise": {},
    "magnitude": {"pruning.density": 0.1},
}


def get_config(method: str = "drr") -> ml_collections.ConfigDict:
  """The teacher-student set-up trained with ``method`` (one of :data:`METHODS`)."""
  config = common.base(method, f"teacher_student_{method}")

  # Data: the teacher generates the targets, with Gaussian noise.
  config.dataset = "teacher_student"
  config.architecture_teacher = (2, 5, 8, 1)
  config.noise = 0.08  # standard deviation of the target noise

  # Model.
  config.architecture = "mlp"
  config.architecture_student = (2, 25, 25, 1)
  config.activation = "tanh"

  # Optimiser.
  config.optimizer = "adam"
  config.lr = 5e-4
  config.train_batch_size = 0  # full batch
  config.eval_batch_size = 5000

  # Phases.
  config.min_epochs = 5000
  # The reference allows 50000 regularised epochs; runs converge far earlier,
  # and the quickstart caps the phase so that it ends in minutes.
  config.max_epochs = 20000
  config.smoothing_window = 500
  config.prune_window = 50
  config.finetuning_max_epochs = 10000
  config.ec.shrinking = False

  config.checkpoint_every_epochs = 1000

  common.set_method_fields(config, METHODS)
  return config
