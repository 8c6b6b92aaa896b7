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
``docs/results/efficient_compression.md``. ``magnitude`` is the
magnitude-pruning baseline.

The argument is the method, one of ``METHODS`` (default ``drr``)::

  python -m sparsejax.main --config=configs/teacher_student.py:pmmp
"""

import ml_collections

from configs import common

#: RL1's L1 weight on the code length (bits per unit of |theta| per training point).
RL1_ALPHA = 0.0411

#: The reference's teacher-student objective for its methods: the Gaussian code
#: length in bits, with a learnable noise scale (sparsejax.objectives.gauss).
#: Method -> the hyperparameters it uses for this set-up. DRR and PMMP price a
#: kept parameter at ``bits_scale`` x log2(N)/2 bits of the code length
#: (``ec.strength = "description_length"``), so alpha follows the number of
#: training points N; the scale, twice BIC's cost for DRR and ten times
#: it for PMMP, was chosen once on the reference teacher's validation split
#: (docs/results/efficient_compression.md, "Teacher recovery") and serves
#: every teacher. RL1's L1 weight prices magnitude, not a count, and is a
#: fixed number (chosen there too).
CODE_LENGTH = {"ec.gauss_loss": True}
METHODS = {
    "none": CODE_LENGTH,
    "rl1": {**CODE_LENGTH, "ec.alpha": RL1_ALPHA},
    "drr": {**CODE_LENGTH, "ec.strength": "description_length", "ec.bits_scale": 2.0,
            "ec.beta": 10.0},
    "pmmp": {**CODE_LENGTH, "ec.strength": "description_length", "ec.bits_scale": 10.0},
    "layerwise": CODE_LENGTH,
    "magnitude": {"pruning.density": 0.1},  # another family: trained on the MSE
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
