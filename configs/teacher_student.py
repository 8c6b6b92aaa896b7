"""Teacher-student (the quickstart: CPU, no download, a few minutes on 2 cores).

A [2,5,8,1] tanh teacher (72 parameters) generates 300 noisy training points
(noise standard deviation 0.08); a [2,25,25,1] student (751 parameters) is
trained with a sparsity method, pruned (random gradient pruning -> TAMADE ->
random gradient pruning) and finetuned. The reference's standard settings:
full batch, lr 5e-4, smoothing_window 500, prune_window 50, shrinking off.
The reference allows up to 50000 regularised epochs; runs converge far
earlier, and the quickstart caps the phase at 20000 so it ends in minutes.

The method is the argument (default drr)::

  python -m sparsejax.main --config=configs/teacher_student.py:pmmp
"""

from sparsejax.runner.presets import standard_config


def get_config(method: str = "drr"):
  config = standard_config("teacher_student", method)
  config.max_epochs = 20000
  return config
