"""BMRS continuous pruning, vmapped over seeds (Wright et al., 2024, Algorithm 1).

``method="bmrs"`` trains log-uniform unit gates
(:mod:`sparsejax.objectives.log_uniform`) with the data loss plus the KL
term for exactly ``max_epochs`` epochs. Every ``bmrs.compress_epochs`` epochs
the criterion (:mod:`sparsejax.pruning.bmr`) is applied to every unit; a
pruned unit stays pruned (``bmrs.monotone``; the released code recomputes the
masks from scratch, so a unit can come back). After training the criterion is
applied once more (at the percentile ``bmrs.match_compression`` when it is
set: the L2 and SNR runs matched to a BMRS_N run's compression), then the
masked network is finetuned for exactly ``finetuning_max_epochs`` epochs with
the masks frozen and the KL still in the loss; the finetuning epoch with the
best validation accuracy is tested, as in the reference.

All seeds of a chunk (``seeds``, ``sweep.chunk_size``) run as one vmapped
program per epoch; the data (one split, ``config.seed``'s) are shared. The
criteria run between epochs on the host in float64. A checkpoint after every
epoch holds the states, the unit masks and the finetuning's best states, so
a re-run of the same command resumes where it stopped; seeds whose rows are
already in ``runs.csv`` are not run again.

Each seed writes a ``runs.csv`` row (the row of its single run, ``seeds=1``),
with ``unit_compression`` (% of gated units pruned, the reference's
``compression``), ``parameter_compression`` (% of parameters removed with
their units) and ``reference_parameter_compression`` (the same, counting
weight matrices and kernels only, as the paper's "Comp. (%)"; see
:func:`sparsejax.pruning.bmr.parameter_compression`), and its artifacts
(per-epoch curves, unit masks, config).
"""

from __future__ import annotations

import pathlib
import time
from datetime import datetime, timezone
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from sparsejax import checkpoint as checkpoint_lib
from sparsejax import masks as masks_lib
from sparsejax import results
from sparsejax.pruning import bmr
from sparsejax.runner import build as build_lib
from sparsejax.runner.config import validate
from sparsejax.runner.experiment import finished_row, run_id_of
from sparsejax.runner.progress import Progress
from sparsejax.runner.sweep import per_seed, seed_config, sweep_seeds, where_seeds
from sparsejax.train.loop import make_epoch_fn
from sparsejax.train.state import TrainState, create_train_state
from sparsejax.train.step import make_eval_fn, make_train_step


def criterion_of(config: ml_collections.ConfigDict) -> bmr.Criterion | None:
  """The config's unit criterion, or ``None`` for ``bmrs.criterion="none"``."""
  b = config.bmrs
  if b.criterion == "none":
    return None
  return bmr.Criterion(b.criterion, threshold=None if b.threshold < 0 else b.threshold,
                       p1=b.p1, convention=b.convention, mu_p=b.mu_p, var_p=b.var_p)


class Program(NamedTuple):
  """The compiled, seed-vmapped pieces of a BMRS run."""
  parts: build_lib.Parts
  covers: dict
  sites: dict
  init: Any        # keys -> states
  epoch: Any       # (states, (x, y), keys) -> (states, metrics)
  evaluate: Any    # (states, x, y) -> metrics per seed
  set_units: Any   # (states, units) -> states with the units' weight masks applied


def make_program(config: ml_collections.ConfigDict, parts: build_lib.Parts) -> Program:
  """Vmaps the train epoch, the evaluation and the mask update over seeds."""
  model = parts.model
  covers, sites = model.unit_covers(), model.gate_sites()
  x = parts.data.train.x
  step = make_train_step(model, parts.task, parts.objective, parts.optimizer, jit=False)
  epoch = make_epoch_fn(step, config.train_batch_size, jit=False)
  evaluate = make_eval_fn(model, parts.task, parts.objective, config.eval_batch_size, jit=False)

  def init(key):
    return create_train_state(key, model, x[:1], parts.objective, parts.optimizer)

  def set_units(state: TrainState, units) -> TrainState:
    masks = masks_lib.unit_masks(state.params, units, covers)
    return state._replace(masks=masks, params=masks_lib.apply(masks, state.params))

  return Program(
      parts=parts, covers=covers, sites=sites,
      init=jax.jit(jax.vmap(init)),
      epoch=jax.jit(jax.vmap(epoch, in_axes=(0, None, 0))),
      evaluate=jax.jit(jax.vmap(evaluate, in_axes=(0, None, None))),
      set_units=jax.jit(jax.vmap(set_units)),
  )


def unit_scores(criterion: bmr.Criterion, states: TrainState, covers) -> dict[str, np.ndarray]:
  """Per-seed unit scores ``{site: (seeds, n)}``, computed in float64."""
  with jax.enable_x64(True):
    as64 = lambda tree: jax.tree.map(lambda a: jnp.asarray(np.asarray(a, np.float64)), tree)
    gates = as64(states.objective_state)
    params = as64(states.params) if criterion.name == "l2" else None
    fn = lambda g, p: bmr.scores(criterion, g, p, covers)
    scores = jax.vmap(fn)(gates, params) if params is not None else jax.vmap(
        lambda g: fn(g, None))(gates)
    return {site: np.asarray(s) for site, s in scores.items()}


def next_units(criterion: bmr.Criterion, states: TrainState, units: dict, covers, *,
               monotone: bool, pruned_percent: float | None = None) -> dict[str, np.ndarray]:
  """The criterion's unit masks per seed (intersected with ``units`` if ``monotone``).

  With ``pruned_percent`` the cut is that percentile of each seed's scores
  (:func:`sparsejax.pruning.bmr.percentile_cut`); otherwise the criterion's
  own cut (its threshold, or 0 for the BMR criteria).
  """
  scores = unit_scores(criterion, states, covers)
  n_seeds = next(iter(scores.values())).shape[0]
  new = {site: np.zeros_like(s, dtype=bool) for site, s in scores.items()}
  for i in range(n_seeds):
    seed_scores = {site: s[i] for site, s in scores.items()}
    cut = (bmr.default_cut(criterion) if pruned_percent is None
           else bmr.percentile_cut(seed_scores, pruned_percent))
    for site, keep in bmr.keep_masks(seed_scores, cut).items():
      new[site][i] = np.asarray(keep)
  if monotone:
    new = {site: new[site] & np.asarray(units[site]) for site in new}
  return new


def _seed_keys(seeds) -> jax.Array:
  return jax.vmap(jax.random.key)(jnp.asarray(seeds))


def _epoch_keys(seed_keys: jax.Array, phase: int, epoch: int) -> jax.Array:
  return jax.vmap(lambda k: jax.random.fold_in(jax.random.fold_in(k, phase), epoch))(seed_keys)


def _append(curves: dict, name: str, values) -> None:
  curves.setdefault(name, []).append([float(v) for v in np.asarray(values)])


class SeedChunk:
  """The host orchestration of one chunk of seeds: train, prune, finetune, checkpoint."""

  def __init__(self, config, workdir: pathlib.Path, seeds: list[int], program: Program,
               progress: Progress):
    self.config, self.seeds, self.program, self.progress = config, seeds, program, progress
    self.criterion = criterion_of(config)
    chunk_config = seed_config(config, seeds[0])
    self.checkpointer = checkpoint_lib.Checkpointer(
        workdir / "checkpoints" / f"{run_id_of(chunk_config)}-seeds{len(seeds)}", max_to_keep=2)
    self.seed_keys = _seed_keys(seeds)
    self.meta: dict[str, Any] = {"phase": "train", "epoch": 0, "curves": {}, "wall_time_s": 0.0,
                                 "saves": 0}

  def _template(self):
    states = self.program.init(jax.vmap(build_lib.model_key_of_seed)(jnp.asarray(self.seeds)))
    units = {s: jnp.ones((len(self.seeds), n), bool) for s, n in self.program.sites.items()}
    best_acc = jnp.full((len(self.seeds),), -1.0)
    return {"states": states, "units": units, "best": states, "best_acc": best_acc}

  def save(self, carry) -> None:
    self.meta["saves"] += 1
    self.meta["wall_time_s"] = self._offset + time.monotonic() - self._start
    self.checkpointer.save(self.meta["saves"], carry, dict(self.meta))

  def restore_or_init(self):
    self._start, self._offset = time.monotonic(), 0.0
    carry = self._template()
    if self.checkpointer.latest_step() is not None:
      carry, self.meta = self.checkpointer.restore(like=carry)
      self._offset = float(self.meta["wall_time_s"])
      self.progress.log(f"resumed seeds {self.seeds} at {self.meta['phase']} epoch "
                        f"{self.meta['epoch']}")
    return carry

  def _compress(self, carry, pruned_percent=None):
    units = next_units(self.criterion, carry["states"], carry["units"], self.program.covers,
                       monotone=self.config.bmrs.monotone, pruned_percent=pruned_percent)
    units = {s: jnp.asarray(u) for s, u in units.items()}
    return dict(carry, units=units, states=self.program.set_units(carry["states"], units))

  def _epoch(self, carry, phase: int, epoch: int):
    data = self.program.parts.data
    states, metrics = self.program.epoch(carry["states"], tuple(data.train),
                                         _epoch_keys(self.seed_keys, phase, epoch))
    carry = dict(carry, states=states)
    name = ("train", "finetune")[phase]
    compress_every = self.config.bmrs.compress_epochs
    if (phase == 0 and self.criterion is not None and compress_every > 0
        and (epoch + 1) % compress_every == 0):
      carry = self._compress(carry)
    val = self.program.evaluate(carry["states"], *data.val)
    curves = self.meta["curves"].setdefault(name, {})
    for key in ("loss", "penalty", "accuracy"):
      _append(curves, f"train_{key}", metrics[key])
    _append(curves, "val_loss", val["loss"])
    _append(curves, "val_accuracy", val["accuracy"])
    _append(curves, "unit_compression", [bmr.unit_compression(
        {s: np.asarray(u[i]) for s, u in carry["units"].items()}) for i in range(len(self.seeds))])
    if phase == 1:
      better = val["accuracy"] > carry["best_acc"]
      carry = dict(carry, best=where_seeds(better, carry["states"], carry["best"]),
                   best_acc=jnp.where(better, val["accuracy"], carry["best_acc"]))
    self.progress.log(f"seeds {self.seeds[0]}..{self.seeds[-1]} {name} epoch {epoch + 1}: "
                      f"val accuracy {_fmt(val['accuracy'])}, units pruned "
                      f"{_fmt(curves['unit_compression'][-1], 1, 1)} %")
    return carry

  def run(self):
    carry = self.restore_or_init()
    config = self.config
    if self.meta["phase"] == "train":
      for epoch in range(self.meta["epoch"], config.max_epochs):
        carry = self._epoch(carry, 0, epoch)
        self.meta["epoch"] = epoch + 1
        self.save(carry)
      if self.criterion is not None:
        match = config.bmrs.match_compression
        carry = self._compress(carry, None if match < 0 else match)
      self.meta.update(phase="finetune", epoch=0)
      self.save(carry)
    if self.meta["phase"] == "finetune":
      for epoch in range(self.meta["epoch"], config.finetuning_max_epochs):
        carry = self._epoch(carry, 1, epoch)
        self.meta["epoch"] = epoch + 1
        self.save(carry)
      if config.finetuning_max_epochs == 0:
        carry = dict(carry, best=carry["states"])
      self.meta.update(phase="done", epoch=0)
      self.save(carry)
    self.checkpointer.wait()
    self.checkpointer.close()
    return carry


def _fmt(values, scale: float = 100.0, digits: int = 2) -> str:
  return "/".join(f"{scale * float(v):.{digits}f}" for v in np.asarray(values))


def final_metrics(program: Program, states: TrainState) -> list[dict[str, float]]:
  """Loss and accuracy on train, val and test, one dict per seed."""
  out: list[dict[str, float]] = [{} for _ in range(jax.tree_util.tree_leaves(states)[0].shape[0])]
  for split in ("train", "val", "test"):
    metrics = program.evaluate(states, *getattr(program.parts.data, split))
    for name, values in metrics.items():
      for i, v in enumerate(np.asarray(values)):
        out[i][f"final_{split}_{name}"] = float(v)
  return out


def record_seed(config, workdir: pathlib.Path, seeds: list[int], index: int, states: TrainState,
                units, metrics: dict, meta: dict) -> dict[str, Any]:
  """Writes ``seeds[index]``'s artifacts and ``runs.csv`` row; returns the row.

  ``wall_time_s`` is the wall time of the whole vmapped program, which ran
  ``seeds_in_program`` seeds at once.
  """
  seed = seeds[index]
  single = seed_config(config, seed)
  run_id = run_id_of(single)
  state = jax.tree.map(np.asarray, per_seed(states, index))
  seed_units = {s: u[index] for s, u in units.items()}
  row = dict(results.flatten_config(single))
  row.update(run_id=run_id, timestamp=datetime.now(timezone.utc).isoformat(timespec="seconds"),
             wall_time_s=round(float(meta["wall_time_s"]), 3), seeds_in_program=len(seeds))
  row.update(metrics)
  kept_units = sum(int(u.sum()) for u in seed_units.values())
  total_units = sum(int(u.size) for u in seed_units.values())
  summary = masks_lib.summary(state.masks, state.params)
  row.update(unit_compression=bmr.unit_compression(seed_units),
             parameter_compression=bmr.parameter_compression(state.params, state.masks, seed_units),
             reference_parameter_compression=bmr.parameter_compression(
                 state.params, state.masks, seed_units, weights_only=True),
             kept_units=kept_units, total_units=total_units,
             kept_params=summary["total"]["kept"], total_params=summary["total"]["total"],
             density=summary["total"]["density"], compression=summary["total"]["compression"],
             train_epochs=config.max_epochs, finetune_epochs=config.finetuning_max_epochs)
  row.update({f"kept_units_{s}": int(u.sum()) for s, u in seed_units.items()})
  artifacts = results.artifact_dir(workdir, run_id)
  curves: dict[str, list] = {}
  for phase_index, phase in enumerate(("train", "finetune")):
    for name, per_epoch in meta["curves"].get(phase, {}).items():
      curves.setdefault(name, []).extend(v[index] for v in per_epoch)
    n = len(next(iter(meta["curves"].get(phase, {"": []}).values()), []))
    curves.setdefault("phase", []).extend([phase_index] * n)
  results.write_curves(artifacts, curves)
  results.write_masks(artifacts, {"units": seed_units, "weights": state.masks})
  results.write_layer_counts(artifacts, summary)
  results.write_config(artifacts, single)
  results.append_run(workdir, row)
  return row


def run_bmrs(config: ml_collections.ConfigDict, workdir: str | pathlib.Path
             ) -> list[dict[str, Any]]:
  """Runs a BMRS config for its seeds (this SLURM task's share); returns the rows."""
  validate(config)
  workdir = pathlib.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  seeds = sweep_seeds(config)
  progress = Progress(quiet=config.quiet)
  rows = []
  with jax.enable_x64(config.dtype == "float64"):
    parts = build_lib.build(config)
    program = make_program(config, parts)
    size = config.sweep.chunk_size
    for start in range(0, len(seeds), size):
      chunk_seeds = seeds[start:start + size]
      finished = [finished_row(workdir, run_id_of(seed_config(config, s))) for s in chunk_seeds]
      if all(row is not None for row in finished):
        progress.log(f"seeds {chunk_seeds} have been run before; their rows are in "
                     f"{workdir}/runs.csv")
        rows.extend(finished)
        continue
      chunk = SeedChunk(config, workdir, chunk_seeds, program, progress)
      carry = chunk.run()
      metrics = final_metrics(program, carry["best"])
      for i in range(len(chunk_seeds)):
        row = record_seed(config, workdir, chunk_seeds, i, carry["best"], carry["units"],
                          metrics[i], chunk.meta)
        rows.append(row)
        progress.log(f"{row['run_id']}: units pruned {row['unit_compression']:.2f} %, "
                     f"parameters removed {row['parameter_compression']:.2f} %, test accuracy "
                     f"{100 * row['final_test_accuracy']:.2f} %")
  return rows
