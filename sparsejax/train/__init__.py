"""Training: state, the one step builder, optimisers, compiled loops, sharding."""

from sparsejax.train.losses import CLASSIFICATION, REGRESSION, Task, correct, cross_entropy, squared_error
from sparsejax.train.loop import epoch_batches, make_epoch_fn, make_epochs_fn
from sparsejax.train.optimizers import OPTIMIZERS, build_optimizer
from sparsejax.train.regularized import ascend_duals, project, regularized, sparse_result
from sparsejax.train.sharding import batch_constraint, data_mesh, replicate, shard_batch
from sparsejax.train.sparse_optax import (PruningSchedule, SparseState, apply_masks,
                                           density_at, density_of, gradual, magnitude_score,
                                           masks_of, one_shot, saliency_score, sparsify, under)
from sparsejax.train.state import TrainState, create_train_state, trainables
from sparsejax.train.step import apply_model, data_loss_fn, make_eval_fn, make_train_step

__all__ = [
    "CLASSIFICATION", "OPTIMIZERS", "REGRESSION", "Task", "TrainState", "apply_model",
    "batch_constraint", "build_optimizer", "correct", "create_train_state", "cross_entropy",
    "data_loss_fn", "data_mesh", "epoch_batches", "make_epoch_fn", "make_epochs_fn",
    "make_eval_fn", "make_train_step", "replicate", "shard_batch", "squared_error", "trainables",
    # Your own training loop: sparse_optax and regularized.
    "PruningSchedule", "SparseState", "apply_masks", "ascend_duals", "density_at", "density_of",
    "gradual", "magnitude_score", "masks_of", "one_shot", "project", "regularized",
    "saliency_score", "sparse_result", "sparsify", "under",
]
