"""Training: state, the one step builder, compiled loops, sharding."""

from sparsejax.train.losses import CLASSIFICATION, REGRESSION, Task, correct, cross_entropy, squared_error
from sparsejax.train.loop import epoch_batches, make_epoch_fn, make_epochs_fn
from sparsejax.train.sharding import batch_constraint, data_mesh, replicate, shard_batch
from sparsejax.train.state import TrainState, create_train_state, trainables
from sparsejax.train.step import apply_model, data_loss_fn, make_eval_fn, make_train_step

__all__ = [
    "CLASSIFICATION", "REGRESSION", "Task", "TrainState", "apply_model", "batch_constraint",
    "correct", "create_train_state", "cross_entropy", "data_loss_fn", "data_mesh",
    "epoch_batches", "make_epoch_fn", "make_epochs_fn", "make_eval_fn", "make_train_step",
    "replicate", "shard_batch", "squared_error", "trainables",
]
