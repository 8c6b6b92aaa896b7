"""Teacher-student quickstart (CPU, no download, a few minutes on 2 cores).

A [2,5,8,1] tanh teacher (72 parameters) generates 300 noisy training points;
a [2,25,25,1] student (751 parameters) is trained with a sparsity penalty,
pruned and finetuned. The reference's standard teacher-student settings:
full batch, lr 5e-4, smoothing_window 500, prune_window 50, shrinking off.
The reference trains for 5000..50000 epochs; the quickstart caps the
regularised phase at 20000 epochs so that it ends in minutes.
"""

from sparsejax.runner.config import base_config


def get_config():
  c = base_config()
  c.experiment_name = "teacher_student"
  c.dataset = "teacher_student"
  c.architecture = "mlp"
  c.architecture_teacher = [2, 5, 8, 1]
  c.architecture_student = [2, 25, 25, 1]
  c.activation = "tanh"
  c.noise = 0.08
  c.train_batch_size = 0           # full batch
  c.lr = 5e-4
  c.method = "rl1"
  c.alpha = 1e-3
  c.min_epochs = 5000
  c.max_epochs = 20000
  c.smoothing_window = 500
  c.prune_window = 50
  c.finetuning_min_epochs = 33
  c.finetuning_max_epochs = 10000
  c.pruning.criterion = "global_threshold"
  c.pruning.threshold = 1e-2
  c.eval_batch_size = 5000
  c.checkpoint_every_epochs = 1000
  return c
