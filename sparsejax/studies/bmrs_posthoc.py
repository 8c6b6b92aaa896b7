"""Post-training pruning: compression against accuracy for each criterion (BMRS Fig. 2).

``python -m sparsejax.studies.bmrs_posthoc --config=configs/bmrs_lenet5_mnist.py``

1. Train the gated network with no pruning (``bmrs.criterion="none"``) for
   ``max_epochs`` epochs, seeds vmapped.
2. For each criterion (``snr``, ``l2``, ``expected_theta``, ``bmrs_n``,
   ``bmrs_n_code`` (the released code's convention), ``bmrs_u8``, ``bmrs_u4``) and each percentile
   :math:`\\lambda \\in \\mathrm{linspace}(0, 100, n)` (``bmrs.posthoc_points``):
   prune from the trained state, finetune ``bmrs.posthoc_finetune_epochs``
   epochs (one, unshuffled, as the reference) and test.

   * ``snr``, ``l2``, ``expected_theta``: keep a unit iff its score is above the
     :math:`\\lambda`-th percentile of all scores;
   * BMR criteria: keep iff :math:`\\Delta F` is below its
     :math:`(100 - \\lambda)`-th percentile **or** :math:`\\Delta F < 0`, so
     BMRS never prunes past its own stopping point (:math:`\\Delta F \\ge 0`).

   The distinct masks of one criterion and seed are finetuned in groups of
   at most ``group_size`` (``--group_size``, default 16: how the work is
   cut, not what it computes, so not a config field), each group one vmapped
   program (for the BMRS LeNet-5 on the 2-core CPU, 8 masks, 36.4 ms per mask and step,
   against 35.4 ms with ``lax.map`` over them: no gain to take, unlike the
   runner's seed loop; a group's memory grows with its size, about 7 GB for
   100 LeNet-5 masks). A mask is finetuned once per seed: percentiles, and
   criteria (SNR and E[theta] often rank alike), that give the same masks
   share it. Every mask has the same finetuning key, so a mask's accuracy
   does not depend on the group it was finetuned in.
3. Write ``posthoc_<experiment>.csv`` (criterion, seed, lambda, units pruned %,
   parameters removed %, test accuracy, each BMR criterion's own stopping
   point, and the seed's training run) after every criterion and seed, and
   ``posthoc_<experiment>.png`` (test accuracy against units pruned, the mean
   over seeds, stopping points marked) at the end, in the workdir, and print
   :func:`summarise` (each curve's knee, and BMRS's stop, against it).

The sweep resumes: the training is an ordinary run (checkpointed), and a
criterion and seed whose rows the table already holds, from the same
training run with the same percentiles and finetuning epochs, are not run
again. Rows of other criteria and seeds are kept; rows of a seed whose
training changed are dropped. Each group's accuracies are also written, as
it ends, to ``posthoc_<experiment>_finetuned.csv`` (seed, training run,
finetuning epochs, mask bytes in hex, test accuracy), so an interrupted
criterion resumes at its next group, and a new resolution finetunes only the
masks it has not seen. The sweep's own settings (``bmrs.posthoc_points``,
``bmrs.posthoc_finetune_epochs``) do not enter the training run, so one
training serves sweeps of any resolution.

The released script crashes (``set_masks`` takes 3 arguments and is called
with 4; ``bmr_approximate()[0]`` indexes the first unit); this is the
procedure its text describes, see ``docs/differences.md``.
"""

from __future__ import annotations

import copy
import pathlib
import sys

import jax
import jax.numpy as jnp
import matplotlib
import ml_collections
import numpy as np
import pandas as pd

from sparsejax import checkpoint as checkpoint_lib
from sparsejax import keys
from sparsejax import masks as masks_lib
from sparsejax import results, xla_flags
from sparsejax.pruning import bmr
from sparsejax.recipes import bmrs as bmrs_recipe
from sparsejax.runner import build as build_lib
from sparsejax.runner import records
from sparsejax.runner.config import validate
from sparsejax.runner.program import Program, run, seed_config, sweep_seeds
from sparsejax.train.driver import stack_seeds
from sparsejax.train.loop import make_epoch_fn
from sparsejax.train.optimizers import build_optimizer
from sparsejax.train.state import TrainState
from sparsejax.train.step import make_eval_fn, make_train_step

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

#: The ``bmrs`` fields of the sweep itself (not of the training it starts from).
SWEEP_FIELDS = ("posthoc_points", "posthoc_finetune_epochs")

#: Criterion label -> Criterion (BMRS_U with p1 = 8 and 4, as the paper).
POSTHOC_CRITERIA: dict[str, bmr.Criterion] = {
    "snr": bmr.Criterion("snr"),
    "l2": bmr.Criterion("l2"),
    "expected_theta": bmr.Criterion("expected_theta"),
    "bmrs_n": bmr.Criterion("bmrs_n"),
    "bmrs_n_code": bmr.Criterion("bmrs_n", convention="code"),
    "bmrs_u8": bmr.Criterion("bmrs_u", p1=8.0),
    "bmrs_u4": bmr.Criterion("bmrs_u", p1=4.0),
}


def posthoc_units(criterion: bmr.Criterion, scores: dict[str, np.ndarray], lam: float
                  ) -> dict[str, np.ndarray]:
  """One seed's unit masks at percentile ``lam`` (module docstring, step 2).

  For BMR criteria the score is :math:`-\\Delta F`, so "ΔF below its
  (100 - λ)-th percentile or ΔF < 0" is "score above its λ-th percentile or
  score > 0". ``lam = 0`` keeps every unit (the reference's strict ">" would
  prune the lowest-scoring one there).
  """
  if lam == 0:
    return {site: np.ones(np.shape(s), bool) for site, s in scores.items()}
  cut = bmr.percentile_cut(scores, lam)
  if criterion.is_bmr:
    cut = min(cut, 0.0)
  return {site: np.asarray(s > cut) for site, s in scores.items()}


def mask_key(units: dict[str, np.ndarray]) -> bytes:
  """The bytes that identify a set of unit masks (equal masks, equal keys)."""
  return b"".join(np.packbits(units[site]).tobytes() for site in sorted(units))


def trained_states(config: ml_collections.ConfigDict, workdir: pathlib.Path
                   ) -> tuple[TrainState, list[str]]:
  """Step 1: the unpruned training of the seeds, as ordinary runs (rows, checkpoints,
  resumable) in ``workdir``; returns their final states (leading seed axis) and
  their run ids.

  The sweep's own fields are reset to their defaults in the training config,
  so that they do not enter its run id.
  """
  train_config = copy.deepcopy(config)
  train_config.bmrs.criterion = "none"
  train_config.finetuning_max_epochs = 0
  train_config.finetuning_min_epochs = 0
  for name in SWEEP_FIELDS:
    train_config.bmrs[name] = bmrs_recipe.defaults()["bmrs"][name]
  rows = run(train_config, workdir)
  states = []
  for row in rows:
    single = seed_config(train_config, int(row["seed"]))
    template = Program(single, [single.seed]).final_template()
    with checkpoint_lib.Checkpointer(records.final_state_dir(workdir, row["run_id"])) as ckpt:
      states.append(ckpt.restore(like={"state": template})[0]["state"])
  return stack_seeds(states), [row["run_id"] for row in rows]


def make_finetune(config, parts: build_lib.Parts, covers):
  """``(state, units, keys) -> test metrics``, vmapped over a leading percentile axis."""
  objective = bmrs_recipe.gates(config, parts.model, parts.data.train.x.shape[0])
  step = make_train_step(parts.model, parts.task, objective,
                         build_optimizer(config.optimizer, config.lr), jit=False)
  epoch = make_epoch_fn(step, config.train_batch_size, shuffle=False, jit=False)
  evaluate = make_eval_fn(parts.model, parts.task, objective, config.eval_batch_size, jit=False)
  train, test = tuple(parts.data.train), parts.data.test

  def one(state: TrainState, units, key):
    masks = masks_lib.unit_masks(state.params, units, covers,
                                 jax.tree.map(jnp.ones_like, state.masks))
    state = state._replace(masks=masks, params=masks_lib.apply(masks, state.params))
    for e in range(config.bmrs.posthoc_finetune_epochs):
      state, _ = epoch(state, train, jax.random.fold_in(key, e))
    return evaluate(state, *test)

  return jax.jit(jax.vmap(one, in_axes=(None, 0, None)))


def run_posthoc(config: ml_collections.ConfigDict, workdir: str | pathlib.Path,
                criteria: list[str] | None = None, group_size: int = 16) -> pd.DataFrame:
  """Runs the sweep of the module docstring; returns (and writes) the table."""
  validate(config)
  if group_size < 1:
    raise ValueError(f"group_size is {group_size}; accepted: an integer >= 1")
  workdir = pathlib.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  criteria = list(POSTHOC_CRITERIA) if criteria is None else criteria
  unknown = sorted(set(criteria) - set(POSTHOC_CRITERIA))
  if unknown:
    raise ValueError(f"unknown criteria {unknown}; accepted: {', '.join(POSTHOC_CRITERIA)}")
  seeds = sweep_seeds(config)
  lambdas = np.linspace(0, 100, config.bmrs.posthoc_points)
  finetune_epochs = config.bmrs.posthoc_finetune_epochs
  csv = workdir / f"posthoc_{config.experiment_name}.csv"
  with jax.enable_x64(config.dtype == "float64"):
    states, run_ids = trained_states(config, workdir)
    table = _earlier_rows(csv, seeds, run_ids)
    parts = build_lib.build(config)
    covers = parts.model.unit_covers()
    finetune = make_finetune(config, parts, covers)
    store = FinetunedStore(workdir / f"posthoc_{config.experiment_name}_finetuned.csv",
                           dict(zip(seeds, run_ids)), finetune_epochs)
    for name in criteria:
      criterion = POSTHOC_CRITERIA[name]
      scores = bmrs_recipe.unit_scores(criterion, states, covers)
      for i, seed in enumerate(seeds):
        if _done(table, name, seed, run_ids[i], lambdas, finetune_epochs):
          _log(config, f"{name} seed {seed}: in {csv.name} already")
          continue
        state = jax.tree.map(lambda x: x[i], states)
        seed_scores = {s: v[i] for s, v in scores.items()}
        per_lambda = [posthoc_units(criterion, seed_scores, lam) for lam in lambdas]
        keys_of = [(seed, mask_key(units)) for units in per_lambda]
        todo = list({key: units for key, units in zip(keys_of, per_lambda)
                     if key not in store.accuracy}.items())
        for start in range(0, len(todo), group_size):
          group = todo[start:start + group_size]
          stacked = {s: jnp.asarray(np.stack([units[s] for _, units in group]))
                     for s in seed_scores}
          accuracy = np.asarray(finetune(state, stacked, keys.stream_key(seed, "posthoc"))[
              "accuracy"])
          store.add({key: float(a) for (key, _), a in zip(group, accuracy)})
        stop = (bmr.unit_compression(bmr.keep_masks(seed_scores, 0.0)) if criterion.is_bmr
                else float("nan"))
        rows = []
        for lam, units, key in zip(lambdas, per_lambda, keys_of):
          weight_masks = masks_lib.unit_masks(state.params, units, covers,
                                              jax.tree.map(jnp.ones_like, state.masks))
          rows.append(dict(
              criterion=name, seed=seed, percentile=float(lam),
              unit_compression=bmr.unit_compression(units),
              parameter_compression=bmr.parameter_compression(state.params, weight_masks, units),
              test_accuracy=store.accuracy[key], stopping_point=stop, run_id=run_ids[i],
              finetune_epochs=finetune_epochs))
        table = _replace_rows(table, name, seed, pd.DataFrame(rows))
        results.write_frame(table, csv)
        _log(config, f"{name} seed {seed}: {len(lambdas)} percentiles, {len(todo)} finetunings"
                     + (f", stops at {stop:.1f} % units pruned" if criterion.is_bmr else ""))
  plot(table, csv.with_suffix(".png"), title=config.experiment_name)
  _log(config, summarise(table).to_string(float_format=lambda v: f"{v:.2f}"))
  return table


def summarise(frame: pd.DataFrame, tolerance: float = 0.01) -> pd.DataFrame:
  """Where each criterion's curve bends, and where BMRS stops on it; means over seeds.

  Per criterion and seed: ``unpruned`` (test accuracy at percentile 0, %);
  ``holds_to``, the largest units-pruned % up to which every point is within
  ``tolerance`` (a fraction) of ``unpruned`` (the knee), and ``acc_holds_to``
  there; for BMR criteria, ``stop`` (units pruned % at
  :math:`\\Delta F \\ge 0`) and ``acc_stop``, the accuracy of the sweep's most
  pruned mask, which is the stopping point's own (percentiles past it give
  its mask). The columns are the means over seeds; ``seeds`` counts them.
  """
  rows = []
  for (name, seed), group in frame.groupby(["criterion", "seed"], sort=False):
    group = group.sort_values(["unit_compression", "percentile"])
    accuracy = 100 * group["test_accuracy"].to_numpy()
    compression = group["unit_compression"].to_numpy()
    unpruned = accuracy[0]
    below = np.flatnonzero(accuracy < unpruned - 100 * tolerance)
    knee = below[0] - 1 if len(below) else len(accuracy) - 1
    stop = group["stopping_point"].iloc[0]
    rows.append(dict(criterion=name, seed=seed, unpruned=unpruned,
                     holds_to=compression[knee], acc_holds_to=accuracy[knee], stop=stop,
                     acc_stop=accuracy[-1] if np.isfinite(stop) else np.nan))
  table = pd.DataFrame(rows)
  summary = table.groupby("criterion", sort=False).mean(numeric_only=True).drop(columns="seed")
  summary["seeds"] = table.groupby("criterion", sort=False).size()
  return summary


class FinetunedStore:
  """The test accuracy of every mask finetuned so far, kept in a CSV file.

  ``accuracy`` maps (seed, mask key) to the test accuracy, read at creation
  from the rows of ``path`` with the seed's current training run and these
  finetuning epochs; :meth:`add` records more and rewrites the file (whole or
  not at all). Rows of other trainings or epochs stay in the file.
  """

  COLUMNS = ["seed", "run_id", "finetune_epochs", "mask", "test_accuracy"]

  def __init__(self, path: pathlib.Path, run_ids: dict[int, str], finetune_epochs: int):
    self.path, self.run_ids, self.finetune_epochs = path, run_ids, finetune_epochs
    self.frame = pd.read_csv(path, dtype={"mask": str}) if path.exists() else pd.DataFrame(
        columns=self.COLUMNS)
    current = self.frame[
        (self.frame["run_id"] == self.frame["seed"].map(run_ids))
        & (self.frame["finetune_epochs"] == finetune_epochs)]
    self.accuracy: dict[tuple[int, bytes], float] = {
        (int(row.seed), bytes.fromhex(row.mask)): float(row.test_accuracy)
        for row in current.itertuples()}

  def add(self, accuracy: dict[tuple[int, bytes], float]) -> None:
    """Records the accuracies of newly finetuned masks, in memory and in the file."""
    self.accuracy.update(accuracy)
    rows = pd.DataFrame([
        dict(seed=seed, run_id=self.run_ids[seed], finetune_epochs=self.finetune_epochs,
             mask=key.hex(), test_accuracy=a) for (seed, key), a in accuracy.items()],
        columns=self.COLUMNS)
    self.frame = rows if not len(self.frame) else pd.concat([self.frame, rows],
                                                              ignore_index=True)
    results.write_frame(self.frame, self.path)


def _earlier_rows(csv: pathlib.Path, seeds: list[int], run_ids: list[str]) -> pd.DataFrame:
  """The table of an earlier call, less the rows of these seeds from another training."""
  if not csv.exists():
    return pd.DataFrame()
  table = pd.read_csv(csv)
  if "run_id" not in table:  # written before the table named its training runs
    return table[~table["seed"].isin(seeds)].reset_index(drop=True)
  stale = table["seed"].isin(seeds) & ~table["run_id"].isin(run_ids)
  return table[~stale].reset_index(drop=True)


def _replace_rows(table: pd.DataFrame, criterion: str, seed: int, rows: pd.DataFrame
                  ) -> pd.DataFrame:
  """``table`` with its rows of ``criterion`` and ``seed`` replaced by ``rows``."""
  if not len(table):
    return rows
  mine = (table["criterion"] == criterion) & (table["seed"] == seed)
  return pd.concat([table[~mine], rows], ignore_index=True)


def _done(table: pd.DataFrame, criterion: str, seed: int, run_id: str, lambdas: np.ndarray,
          finetune_epochs: int) -> bool:
  """Whether ``table`` holds this criterion and seed from the same training and sweep."""
  if not len(table):
    return False
  rows = table[(table["criterion"] == criterion) & (table["seed"] == seed)]
  return (len(rows) == len(lambdas) and (rows["run_id"] == run_id).all()
          and (rows["finetune_epochs"] == finetune_epochs).all()
          and np.allclose(np.sort(rows["percentile"].to_numpy()), lambdas))


def _log(config, message: str) -> None:
  if not config.quiet:
    print(message, flush=True)


def plot(frame: pd.DataFrame, path: pathlib.Path, title: str = "") -> None:
  """Mean test accuracy against units pruned per criterion; BMR stopping points marked."""
  fig, ax = plt.subplots(figsize=(6.5, 4.2))
  for name, group in frame.groupby("criterion", sort=False):
    mean = group.groupby("percentile")[["unit_compression", "test_accuracy"]].mean()
    line, = ax.plot(mean["unit_compression"], 100 * mean["test_accuracy"], label=name)
    if group["stopping_point"].notna().any():
      stop = group.groupby("seed")["stopping_point"].first().mean()
      at = np.interp(stop, mean["unit_compression"], 100 * mean["test_accuracy"])
      ax.plot([stop], [at], marker="*", markersize=14, color=line.get_color(),
              markeredgecolor="black", linestyle="none")
  ax.set_xlabel("units pruned (%)")
  ax.set_ylabel("test accuracy (%)")
  ax.set_title(f"{title} (stars: where BMRS stops)")
  ax.grid(alpha=0.3)
  ax.legend()
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def main(argv):
  del argv
  from absl import flags, logging
  logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO
  config = flags.FLAGS.config
  workdir = flags.FLAGS.workdir or f"workdirs/{config.experiment_name}_posthoc"
  criteria = flags.FLAGS.criteria
  run_posthoc(config, workdir, criteria.split(",") if criteria else None,
              flags.FLAGS.group_size)


if __name__ == "__main__":
  xla_flags.apply()  # before JAX starts a backend: XLA reads XLA_FLAGS once
  from absl import app, flags
  from ml_collections import config_flags
  config_flags.DEFINE_config_file("config", None, "BMRS config file (configs/bmrs_*.py).")
  flags.DEFINE_string("workdir", None, "Output folder (default workdirs/<name>_posthoc).")
  flags.DEFINE_string("criteria", "", f"Comma-separated subset of {','.join(POSTHOC_CRITERIA)}.")
  flags.DEFINE_integer("group_size", 16, "Masks finetuned as one vmapped program (memory "
                       "grows with it; each group's accuracies are saved as it ends).")
  flags.mark_flags_as_required(["config"])
  sys.exit(app.run(main))
