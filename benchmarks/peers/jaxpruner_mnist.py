"""jaxpruner peer: sparse training on MNIST with google-research's jaxpruner.

Trains sparsejax's own LeNet-300-100 or LeNet-5-Caffe (built with
:func:`sparsejax.runner.build.build_model`) on sparsejax's MNIST splits
(:func:`sparsejax.runner.build.build_data`) with jaxpruner's published package
(``../shared/peers/jaxpruner_upstream``, run unmodified, never copied), so
that sparsejax's sparse-training results and speed can be set beside
jaxpruner's: same network, data, loss, optimiser, batches and seeds.

jaxpruner is configured through its own API, ``create_updater_from_config``
(:func:`jaxpruner_config` lists the fields), and used as its README does:
``optax.adam(lr)`` wrapped by ``updater.wrap_optax``, and in every step::

  params_fwd = updater.pre_forward_update(params, opt_state)   # STE: masked copy
  loss, grads = value_and_grad(mean cross-entropy)(params_fwd)
  updates, opt_state = tx.update(grads, opt_state, params)     # mask updates
  params = updater.post_gradient_update(optax.apply_updates(params, updates),
                                        opt_state)             # re-mask

An epoch is one compiled program (``jax.jit`` of a ``lax.scan`` over the
epoch's batches, gathered on the device from
:func:`sparsejax.train.loop.epoch_batches` indices), compiled ahead of time,
so the timings exclude compilation and have no host round trip per step.

Two adaptations, neither of which changes jaxpruner's arithmetic:

* Current JAX removed ``jax.tree_map`` and friends, which jaxpruner calls;
  :func:`import_jaxpruner` restores them. Current JAX also made
  ``tree_map`` strict about ``None`` in its first tree (a ``None`` subtree
  must meet ``None`` in the others); jaxpruner's SET / RigL map over the mask
  tree, whose unpruned leaves (biases) are ``None``, beside the parameter
  tree, and fail with a pytree structure error. The restored
  ``jax.tree_map`` skips, in the other trees, what lies under a ``None`` of
  the first: the older behaviour jaxpruner was written for.
* ``nm_axis``: jaxpruner's string ``"nm_N,M"`` groups along the last axis
  (outputs); ``nm_axis`` picks another axis (``-2``: a Dense kernel's inputs,
  a convolution's input channels) by replacing the updater's
  ``NByM.axis`` (``dataclasses.replace``, which rebuilds its top-k function).

Usage (from the repository root)::

  .venv/bin/python benchmarks/peers/jaxpruner_mnist.py --architecture lenet_300_100 \\
      --algorithm rigl --sparsity 0.9 --dist erk --seeds 0 1 2 --epochs 20 \\
      [--update_freq 100 --update_start_step 0 --update_end_step 0.75 \\
       --drop_fraction 0.3 --lr 1e-3 --batch_size 100 --val_fraction 0 \\
       --sparsity_type nm_2,4 --nm_axis -2 --dense_first --out FILE]

prints one JSON line per seed and a summary line (mean and sample standard
deviation of the test accuracy over the seeds); ``--out`` appends the same
lines to a file.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import pathlib
import re
import statistics
import sys
import time
from typing import Any, Callable, NamedTuple

REPO = pathlib.Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared"
JAXPRUNER_DIR = SHARED / "peers" / "jaxpruner_upstream"
if str(REPO) not in sys.path:
  sys.path.insert(0, str(REPO))
if "SPARSEJAX_DATA_DIR" not in os.environ and (SHARED / "data").is_dir():
  os.environ["SPARSEJAX_DATA_DIR"] = str(SHARED / "data")

import flax  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import ml_collections  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

from sparsejax.train import losses  # noqa: E402
from sparsejax.train import loop  # noqa: E402

#: The ``jax.tree_*`` aliases jaxpruner calls.
TREE_ALIASES = ("tree_map", "tree_leaves", "tree_flatten", "tree_unflatten", "tree_structure")
#: Algorithms whose drop fraction follows jaxpruner's cosine decay.
DROP_GROW = ("rigl", "set")
#: Test and validation examples per evaluation call.
EVAL_BATCH = 5000


# --------------------------------------------------------------------------
# jaxpruner


def _tree_map_skipping_none(f, tree, *rest, is_leaf=None):
  """``jax.tree_map`` as jaxpruner expects it: a ``None`` subtree of ``tree``
  stays ``None`` whatever the other trees hold there (``f`` is not called)."""
  def none_or_leaf(x):
    return x is None or (is_leaf is not None and is_leaf(x))
  pruned = [jax.tree.map(lambda t, r: None if t is None else r, tree, r, is_leaf=none_or_leaf)
            for r in rest]
  return jax.tree.map(f, tree, *pruned, is_leaf=is_leaf)


def import_jaxpruner():
  """Imports jaxpruner from ``../shared/peers/jaxpruner_upstream``, aliases restored.

  Restores ``jax.tree_map`` (skipping ``None`` subtrees of its first tree, as
  older JAX did; module docstring), ``jax.tree_leaves``, ``jax.tree_flatten``,
  ``jax.tree_unflatten`` and ``jax.tree_structure`` where this JAX lacks them,
  then imports the package.

  Returns:
    The ``jaxpruner`` module.

  Raises:
    ImportError: the package is not there, or another ``jaxpruner`` was
      imported first.
  """
  for name in TREE_ALIASES:
    if not hasattr(jax, name):
      alias = (_tree_map_skipping_none if name == "tree_map"
               else getattr(jax.tree, name.removeprefix("tree_")))
      setattr(jax, name, alias)
  if not (JAXPRUNER_DIR / "jaxpruner" / "__init__.py").is_file():
    raise ImportError(f"jaxpruner is not at {JAXPRUNER_DIR}")
  if str(JAXPRUNER_DIR) not in sys.path:
    sys.path.insert(0, str(JAXPRUNER_DIR))
  import jaxpruner  # pylint: disable=import-outside-toplevel
  where = pathlib.Path(jaxpruner.__file__).resolve()
  if JAXPRUNER_DIR.resolve() not in where.parents:
    raise ImportError(f"imported jaxpruner from {where}, not from {JAXPRUNER_DIR}")
  return jaxpruner


# --------------------------------------------------------------------------
# A run


class PeerSetup(NamedTuple):
  """One jaxpruner run (see :func:`jaxpruner_config` for how the fields map).

  Attributes:
    architecture: ``"lenet_300_100"`` or ``"lenet5_caffe"`` (sparsejax's models).
    algorithm: a jaxpruner algorithm (``jaxpruner.all_algorithm_names()``):
      magnitude, random, saliency, magnitude_ste, random_ste, static_sparse,
      set, rigl, global_magnitude, global_saliency, no_prune.
    sparsity: the target fraction of pruned kernel entries, e.g. 0.9
      (ignored by N:M, which keeps N of every M).
    dist_type: ``"erk"`` or ``"uniform"`` (ignored by the global pruners).
    sparsity_type: ``None`` (unstructured) or a jaxpruner string:
      ``"nm_N,M"``, ``"block_H,W"``, ``"channel_AXIS"``.
    update_freq: steps between mask updates.
    update_start_step: the first mask-update step; ``None``: masks never
      updated (jaxpruner's ``NoUpdateSchedule``: static sparse, one-shot STE).
      An int is a step; a float in (0, 1] is that fraction of the run's steps.
    update_end_step: the last mask-update step (pruners: the target sparsity
      is reached there; SET / RigL: drop and grow stop there and the drop
      fraction's cosine reaches 0). An int or a fraction, as above.
    drop_fraction: SET / RigL's drop fraction at step 0 (cosine-decayed).
    lr: Adam's learning rate.
    batch_size: examples per step.
    epochs: passes over the training split.
    val_fraction: share of MNIST's training set held out for validation, the
      rest training; 0 gives sparsejax's default split (45,000 train / 5,000
      validation images).
    dense_first: keep the first kernel (network order) dense, through
      jaxpruner's ``custom_sparsity_map`` (outside the ERK budget).
    nm_axis: the axis N:M groups along (jaxpruner's default ``-1``, outputs).
  """
  architecture: str = "lenet_300_100"
  algorithm: str = "rigl"
  sparsity: float = 0.9
  dist_type: str = "erk"
  sparsity_type: str | None = None
  update_freq: int = 100
  update_start_step: int | float | None = 0
  update_end_step: int | float = 0.75
  drop_fraction: float = 0.3
  lr: float = 1e-3
  batch_size: int = 100
  epochs: int = 20
  val_fraction: float = 0.0
  dense_first: bool = False
  nm_axis: int = -1


def sparsejax_config(setup: PeerSetup) -> ml_collections.ConfigDict:
  """The sparsejax config whose model and data the run uses (the efficient-compression
  MNIST set-up, with the setup's architecture, batch size, val fraction and lr)."""
  from configs import common  # pylint: disable=import-outside-toplevel
  config = common.base("none", "peer")
  common.efficient_compression_mnist_setup(config)
  config.architecture = setup.architecture
  config.train_batch_size = setup.batch_size
  config.val_fraction = setup.val_fraction
  config.lr = setup.lr
  return config


def total_steps(setup: PeerSetup, n_train: int) -> int:
  """The run's optimiser steps: ``epochs`` x :func:`sparsejax.train.loop.steps_per_epoch`."""
  return setup.epochs * loop.steps_per_epoch(n_train, setup.batch_size)


def schedule_steps(setup: PeerSetup, n_train: int) -> tuple[int | None, int]:
  """``(update_start_step, update_end_step)`` in steps (fractions resolved)."""
  steps = total_steps(setup, n_train)

  def resolve(value):
    if value is None or isinstance(value, (int, np.integer)):
      return value
    if not 0 < value <= 1:
      raise ValueError(f"a fractional step must lie in (0, 1], got {value!r}")
    return int(round(value * steps))

  return resolve(setup.update_start_step), resolve(setup.update_end_step)


def _natural_key(name: str) -> tuple:
  return tuple(int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name))


def kernel_paths(param_shapes) -> list[tuple[str, ...]]:
  """The prunable leaves (named ``kernel``) as flattened-dict keys, in network order
  (the flatten order sorted naturally, as sparsejax's ``dense_first``)."""
  flat = flax.traverse_util.flatten_dict(param_shapes)
  return sorted((k for k in flat if k[-1] == "kernel"), key=lambda k: _natural_key("/".join(k)))


def jaxpruner_config(setup: PeerSetup, param_shapes, n_train: int,
                     seed: int) -> ml_collections.ConfigDict:
  """The ``sparsity_config`` given to ``jaxpruner.create_updater_from_config``.

  Fields: ``algorithm``, ``dist_type``, ``sparsity``, ``update_freq``,
  ``update_start_step`` and ``update_end_step`` (:func:`schedule_steps`; a
  ``None`` start gives ``NoUpdateSchedule``, start = end ``OneShotSchedule``,
  otherwise ``PolynomialSchedule`` with jaxpruner's cubic ramp),
  ``sparsity_type`` where set, ``drop_fraction`` for SET / RigL (jaxpruner
  turns it into ``optax.cosine_decay_schedule(drop_fraction,
  update_end_step)``), ``custom_sparsity_map = {first kernel: None}`` with
  ``dense_first`` (the leaf gets no mask and is left out of the ERK budget,
  as a bias; the global pruners get ``0.0``, an all-ones mask), and
  ``rng_seed`` (random masks and SET's growth) from ``seed``.
  jaxpruner's default filter (leaves with more than one axis) is kept; it
  must select exactly the kernels (checked).
  """
  flat = flax.traverse_util.flatten_dict(param_shapes)
  multi_axis = sorted(k for k, p in flat.items() if len(p.shape) > 1)
  kernels = kernel_paths(param_shapes)
  if multi_axis != sorted(kernels):
    raise ValueError(f"jaxpruner's default filter (ndim > 1) selects {multi_axis}, not the "
                     f"kernels {kernels}")
  start, end = schedule_steps(setup, n_train)
  config = ml_collections.ConfigDict()
  config.algorithm = setup.algorithm
  config.dist_type = setup.dist_type
  config.sparsity = float(setup.sparsity)
  config.update_freq = int(setup.update_freq)
  config.update_start_step = start
  config.update_end_step = end
  if setup.sparsity_type:
    config.sparsity_type = setup.sparsity_type
  if setup.algorithm in DROP_GROW:
    config.drop_fraction = float(setup.drop_fraction)
  if setup.dense_first:
    # Global pruners mask every leaf of the map (0.0: all ones); the others skip a None.
    dense = 0.0 if setup.algorithm.startswith("global_") else None
    config.custom_sparsity_map = flax.core.FrozenDict({kernels[0]: dense})
  config.rng_seed = jax.random.fold_in(jax.random.PRNGKey(seed), 1)
  return config


def make_updater(setup: PeerSetup, param_shapes, n_train: int, seed: int = 0):
  """jaxpruner's updater for the run (:func:`jaxpruner_config`), ``nm_axis`` applied.

  Raises:
    ValueError: jaxpruner rejects the config, or an N:M type meets a pruned
      kernel whose ``nm_axis`` length does not divide by M (jaxpruner would
      fail while tracing the step).
  """
  jaxpruner = import_jaxpruner()
  updater = jaxpruner.create_updater_from_config(
      jaxpruner_config(setup, param_shapes, n_train, seed))
  nbym = jaxpruner.sparsity_types.NByM
  if isinstance(updater.sparsity_type, nbym):
    if setup.nm_axis != updater.sparsity_type.axis:
      updater = dataclasses.replace(
          updater, sparsity_type=updater.sparsity_type._replace(axis=setup.nm_axis),
          topk_fn=None)
    m = updater.sparsity_type.m
    skipped = {kernel_paths(param_shapes)[0]} if setup.dense_first else set()
    for path, leaf in flax.traverse_util.flatten_dict(param_shapes).items():
      length = leaf.shape[setup.nm_axis] if path[-1] == "kernel" and path not in skipped else 0
      if length % m:
        raise ValueError(
            f"N:M ({setup.sparsity_type}, axis {setup.nm_axis}) cannot prune "
            f"{'/'.join(path)} of shape {tuple(leaf.shape)}: {length} is not divisible by {m} "
            "(jaxpruner raises 'The target axis ... is not divisible by M'); choose another "
            "nm_axis or keep it dense (dense_first for the first layer)")
  return updater


# --------------------------------------------------------------------------
# The compiled epoch


class Carry(NamedTuple):
  """What an epoch carries: parameters, model state, jaxpruner's optimiser state
  (a ``jaxpruner.SparseState`` around Adam's), and the step keys' source."""
  params: Any
  model_state: Any
  opt_state: Any
  key: jax.Array


def make_epoch(setup: PeerSetup, model, n_train: int, *, seed: int = 0,
               updater=None) -> tuple[Callable[[jax.Array], Carry], Callable]:
  """``(init_carry, epoch)`` for a run of ``setup`` on ``model`` (a ModelAdapter).

  Args:
    setup: the run.
    model: the model, from :func:`sparsejax.runner.build.build_model`.
    n_train: training examples (the schedule's fractions count steps of
      ``n_train // batch_size``).
    seed: the updater's seed (random masks, SET's growth).
    updater: jaxpruner's updater; by default :func:`make_updater`.

  Returns:
    ``init_carry(key) -> Carry``: parameters initialised from ``key``, Adam
    wrapped by ``updater.wrap_optax`` initialised on them, the parameters then
    masked once with ``post_gradient_update`` (static sparse, SET and RigL
    start sparse; pruners' masks start full); and ``epoch(carry, (x, y),
    batch_indices) -> (carry, mean loss)``, jitted: a ``lax.scan`` of steps
    over the rows of ``batch_indices`` (int, ``(steps, batch)``), gathering
    each batch from ``x, y`` on the device.
  """
  if updater is None:
    updater = make_updater(setup, model.param_shapes, n_train, seed)
  tx = updater.wrap_optax(optax.adam(setup.lr))
  sample = jnp.zeros((1, *model.input_shape), jnp.float32)

  def init_carry(key: jax.Array) -> Carry:
    init_key, step_key = jax.random.split(key)
    params, model_state = model.init(init_key, sample)
    opt_state = tx.init(params)
    params = updater.post_gradient_update(params, opt_state)
    return Carry(params, model_state, opt_state, step_key)

  def loss_fn(params_fwd, model_state, x, y, key):
    outputs, new_state = model.apply(params_fwd, model_state, x, train=True, key=key)
    return jnp.mean(losses.CLASSIFICATION.loss(outputs, y)), new_state

  def step(carry: Carry, data, idx):
    key, step_key = jax.random.split(carry.key)
    x, y = data
    params_fwd = updater.pre_forward_update(carry.params, carry.opt_state)
    (loss, model_state), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        params_fwd, carry.model_state, x[idx], y[idx], step_key)
    updates, opt_state = tx.update(grads, carry.opt_state, carry.params)
    params = optax.apply_updates(carry.params, updates)
    params = updater.post_gradient_update(params, opt_state)
    return Carry(params, model_state, opt_state, key), loss

  def epoch(carry: Carry, data, batch_indices):
    carry, step_losses = jax.lax.scan(lambda c, idx: step(c, data, idx), carry, batch_indices)
    return carry, jnp.mean(step_losses)

  return init_carry, jax.jit(epoch)


# --------------------------------------------------------------------------
# Evaluation


def final_masks(updater, params, opt_state):
  """The masks of the trained network: the sparse state's, or for the STE
  pruners (which keep no masks) the ones ``pre_forward_update`` computes."""
  jaxpruner = import_jaxpruner()
  if isinstance(updater, jaxpruner.algorithms.ste.SteMixin):
    sparsities = updater.scheduler.get_sparsity_at_step(opt_state.target_sparsities,
                                                        opt_state.count)
    scores = updater.calculate_scores(params, sparse_state=opt_state)
    return updater.create_masks(scores, sparsities)
  if updater.use_packed_masks:
    raise NotImplementedError("packed masks")
  return opt_state.masks


def density_report(param_shapes, masks) -> tuple[float, int, int, dict[str, float]]:
  """``(density, kept, total, {leaf: density})`` over the kernels (an unmasked
  kernel counts as kept in full)."""
  flat_masks = flax.traverse_util.flatten_dict(masks)
  flat_shapes = flax.traverse_util.flatten_dict(param_shapes)
  kept = total = 0
  per_leaf = {}
  for path in kernel_paths(param_shapes):
    size = math.prod(flat_shapes[path].shape)
    mask = flat_masks.get(path)
    n = size if mask is None else int(np.count_nonzero(np.asarray(mask)))
    kept, total = kept + n, total + size
    per_leaf["/".join(path)] = round(n / size, 6)
  return kept / total, kept, total, per_leaf


def make_accuracy(model):
  """``accuracy(params, model_state, (x, y)) -> float`` in eval mode, over batches."""
  @jax.jit
  def correct(params, model_state, x, y):
    outputs, _ = model.apply(params, model_state, x, train=False)
    return jnp.sum(losses.correct(outputs, y))

  def accuracy(params, model_state, split) -> float:
    x, y = split
    total = sum(float(correct(params, model_state, x[i:i + EVAL_BATCH], y[i:i + EVAL_BATCH]))
                for i in range(0, x.shape[0], EVAL_BATCH))
    return total / x.shape[0]

  return accuracy


# --------------------------------------------------------------------------
# Training


def train(setup: PeerSetup, seed: int) -> dict:
  """Trains ``setup`` with jaxpruner from ``seed`` and evaluates it.

  The seed draws the initial parameters, each epoch's batches
  (:func:`sparsejax.train.loop.epoch_batches`), the step keys and jaxpruner's
  ``rng_seed``. Every epoch is compiled once ahead of time (``lower().compile()``,
  timed apart as ``compile_seconds``) and timed to ``jax.block_until_ready``.

  Returns:
    ``{"test_accuracy", "val_accuracy", "density", "kept", "total",
    "layer_density", "seconds_per_step", "compile_seconds", "steps",
    "epochs", "final_train_loss", "resolved_update_start_step",
    "resolved_update_end_step"}``:
    accuracies of the masked network (fractions); ``density`` = kept / total
    entries over the kernels; ``seconds_per_step`` the median over epochs of
    an epoch's wall time over its steps.
  """
  from sparsejax.runner import build  # pylint: disable=import-outside-toplevel
  config = sparsejax_config(setup)
  model = build.build_model(config)
  splits, data_axis, _ = build.build_data(config, seeds=[seed])
  if data_axis is not None:
    raise ValueError("expected data shared by the seeds (MNIST)")
  train_data = (splits.train.x, splits.train.y)
  n_train = train_data[0].shape[0]
  updater = make_updater(setup, model.param_shapes, n_train, seed)
  init_carry, epoch = make_epoch(setup, model, n_train, seed=seed, updater=updater)

  init_key, batch_key = jax.random.split(jax.random.PRNGKey(seed))
  carry = init_carry(init_key)
  first = loop.epoch_batches(jax.random.fold_in(batch_key, 0), n_train, setup.batch_size)
  start = time.perf_counter()
  compiled = epoch.lower(carry, train_data, first).compile()
  compile_seconds = time.perf_counter() - start

  per_step, loss = [], float("nan")
  for e in range(setup.epochs):
    batches = jax.block_until_ready(
        loop.epoch_batches(jax.random.fold_in(batch_key, e), n_train, setup.batch_size))
    start = time.perf_counter()
    carry, loss = jax.block_until_ready(compiled(carry, train_data, batches))
    per_step.append((time.perf_counter() - start) / batches.shape[0])

  masks = final_masks(updater, carry.params, carry.opt_state)
  params = updater.apply_masks(carry.params, masks)
  accuracy = make_accuracy(model)
  density, kept, total, layer_density = density_report(model.param_shapes, masks)
  start_step, end_step = schedule_steps(setup, n_train)
  return {
      "test_accuracy": accuracy(params, carry.model_state, (splits.test.x, splits.test.y)),
      "val_accuracy": accuracy(params, carry.model_state, (splits.val.x, splits.val.y)),
      "density": density,
      "kept": kept,
      "total": total,
      "layer_density": layer_density,
      "seconds_per_step": statistics.median(per_step) if per_step else float("nan"),
      "compile_seconds": compile_seconds,
      "steps": total_steps(setup, n_train),
      "epochs": setup.epochs,
      "final_train_loss": float(loss),
      "resolved_update_start_step": start_step,
      "resolved_update_end_step": end_step,
  }


# --------------------------------------------------------------------------
# Command line


def _step(text: str) -> int | float | None:
  """A step option: ``none``, an int (steps) or a float (fraction of the steps)."""
  if text.lower() == "none":
    return None
  return float(text) if any(c in text for c in ".eE") else int(text)


def _none_or_str(text: str) -> str | None:
  return None if text.lower() in ("none", "", "unstructured") else text


def parse_args(argv=None) -> argparse.Namespace:
  """The command line: every :class:`PeerSetup` field, ``--seeds`` and ``--out``."""
  d = PeerSetup()
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--architecture", default=d.architecture,
                 choices=("lenet_300_100", "lenet5_caffe"))
  p.add_argument("--algorithm", default=d.algorithm)
  p.add_argument("--sparsity", type=float, default=d.sparsity)
  p.add_argument("--dist", "--dist_type", dest="dist_type", default=d.dist_type,
                 choices=("erk", "uniform"))
  p.add_argument("--sparsity_type", type=_none_or_str, default=d.sparsity_type,
                 help="none (unstructured), nm_N,M, block_H,W or channel_AXIS")
  p.add_argument("--nm_axis", type=int, default=d.nm_axis,
                 help="the axis N:M groups along (-1 outputs, jaxpruner's default; -2 inputs)")
  p.add_argument("--update_freq", type=int, default=d.update_freq)
  p.add_argument("--update_start_step", type=_step, default=d.update_start_step,
                 help="int step, fraction of the steps, or none (no mask updates)")
  p.add_argument("--update_end_step", type=_step, default=d.update_end_step,
                 help="int step or fraction of the steps")
  p.add_argument("--drop_fraction", type=float, default=d.drop_fraction)
  p.add_argument("--lr", type=float, default=d.lr)
  p.add_argument("--batch_size", type=int, default=d.batch_size)
  p.add_argument("--epochs", type=int, default=d.epochs)
  p.add_argument("--val_fraction", type=float, default=d.val_fraction)
  p.add_argument("--dense_first", action="store_true")
  p.add_argument("--seeds", type=int, nargs="+", default=[0])
  p.add_argument("--out", default=None, help="append the JSON lines to this file")
  return p.parse_args(argv)


def main(argv=None) -> None:
  """Runs the seeds of the command line's setup; prints (and appends) JSON lines."""
  from sparsejax import xla_flags  # pylint: disable=import-outside-toplevel
  xla_flags.apply()  # sparsejax's XLA CPU options, before JAX starts a backend
  args = parse_args(argv)
  setup = PeerSetup(**{f: getattr(args, f) for f in PeerSetup._fields})
  import_jaxpruner()  # fails early if the package is missing
  common = {"peer": "jaxpruner", "jax": jax.__version__,
            "device": jax.devices()[0].device_kind, **setup._asdict()}
  lines, accuracies = [], []
  for seed in args.seeds:
    result = train(setup, seed)
    accuracies.append(result["test_accuracy"])
    lines.append({**common, "seed": seed, **result})
    print(json.dumps(lines[-1]), flush=True)
  lines.append({**common, "seeds": list(args.seeds), "summary": True,
                "mean_test_accuracy": statistics.fmean(accuracies),
                "std_test_accuracy": statistics.stdev(accuracies) if len(accuracies) > 1 else 0.0,
                "mean_density": statistics.fmean(line["density"] for line in lines),
                "median_seconds_per_step": statistics.median(
                    line["seconds_per_step"] for line in lines)})
  print(json.dumps(lines[-1]), flush=True)
  if args.out:
    with open(args.out, "a", encoding="utf-8") as f:
      for line in lines:
        f.write(json.dumps(line) + "\n")


if __name__ == "__main__":
  main()
