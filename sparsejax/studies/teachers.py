"""Does the pruned student find the teacher's size? One method, many teachers.

``python -m sparsejax.studies.teachers --config=configs/teacher_student.py:drr
--workdir=DIR [--seeds=64] [--setups=NAME,...] [--oracle_epochs=10000]``

The efficient-compression study (Barth & von Petersenn, arXiv 2505.17469)
asks whether a pruned student keeps as many parameters as the teacher that
generated its data. One teacher cannot answer it: a strength tuned on it may
only have learned that teacher's size. This study runs the config's method,
unchanged, on every set-up of :data:`SETUPS` (three teacher sizes and a
deeper teacher at the reference's noise and training-set size; the reference
teacher at a quarter and four times the noise variance, and at half and four
times the training points), each set-up's seeds as one vmapped program, each
run an ordinary row of ``DIR/<set-up>/runs.csv`` (resumed, and skipped when
finished). The student has the config's hidden width (25) at the teacher's
depth.

Per set-up it reports the teacher's parameter count :math:`k_T`, the median
and quartiles of the kept count, the fraction of seeds with at most
:math:`k_T`, and the median test MSE against the noise variance
:math:`\\sigma^2`; the bars of issue 38 are a median kept count of at most
:math:`1.5\\,k_T` and a median test MSE of at most :math:`1.1\\,\\sigma^2`.

**Oracle.** Beside them, the test MSE of the *teacher's own architecture
started at the teacher's weights* and fitted to the same training points
(Adam on the training MSE, the config's learning rate, ``--oracle_epochs``
full-batch epochs; :func:`oracle_mse`). Even a
model of exactly the right size fitted to :math:`N` noisy points pays an
estimation excess over :math:`\\sigma^2`, of order :math:`k_{\\rm eff}/N` for
:math:`k_{\\rm eff}` well-determined parameters; the oracle measures it, so a
student above the MSE bar can be told apart from a student that the data
cannot support.

**Choosing a strength once.** ``--grid=1,2,3,5,8 [--grid_field=ec.bits_scale]
[--seeds=16]`` runs the reference's set-up (or the first of ``--setups``)
at each value instead (:func:`strength_grid`) and applies the
one-standard-error rule to the validation code length
(:func:`one_standard_error_choice`); the value it chooses is then used,
unchanged, for every set-up of the study.

Outputs in ``DIR``: ``teachers.csv`` and ``teachers.md`` (one line per
set-up), ``teachers.png`` (kept against teacher size, with quartiles),
``oracle.json`` (cached oracle figures); with ``--grid``, ``grid.csv`` and
``grid.md``.
"""

from __future__ import annotations

import json
import pathlib
from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pandas as pd
from absl import app, flags
from matplotlib import figure
from matplotlib.backends import backend_agg
from ml_collections import config_flags

from sparsejax import xla_flags
from sparsejax.data import teacher_student
from sparsejax.fields import ConfigError
from sparsejax.runner import run
from sparsejax.studies import cli
from sparsejax.studies.report import markdown

#: Bars of the study (issue 38): median kept / teacher size, median test MSE / noise variance.
KEPT_BAR, MSE_BAR = 1.5, 1.1


class Setup(NamedTuple):
  """One teacher-student problem: the teacher's widths, the noise's standard
  deviation and the number of training points."""
  name: str
  teacher: tuple[int, ...]
  noise: float = 0.08
  n_train: int = teacher_student.N_TRAIN

  @property
  def teacher_params(self) -> int:
    return sum(a * b + b for a, b in zip(self.teacher[:-1], self.teacher[1:]))


#: The study's set-ups; the reference's is ``2-5-8-1``.
SETUPS = (
    Setup("2-3-3-1", (2, 3, 3, 1)),
    Setup("2-5-8-1", (2, 5, 8, 1)),
    Setup("2-8-8-1", (2, 8, 8, 1)),
    Setup("2-6-6-6-1", (2, 6, 6, 6, 1)),
    Setup("2-5-8-1_noise0.04", (2, 5, 8, 1), noise=0.04),
    Setup("2-5-8-1_noise0.16", (2, 5, 8, 1), noise=0.16),
    Setup("2-5-8-1_n150", (2, 5, 8, 1), n_train=150),
    Setup("2-5-8-1_n1200", (2, 5, 8, 1), n_train=1200),
)


#: The reference's set-up, on which ``--grid`` chooses a strength.
REFERENCE = "2-5-8-1"


def setups_named(names: Sequence[str]) -> tuple[Setup, ...]:
  """The set-ups of :data:`SETUPS` with these names, in the given order."""
  known = {s.name: s for s in SETUPS}
  unknown = [n for n in names if n not in known]
  if unknown:
    raise ConfigError(f"--setups names {unknown}: accepted names are {list(known)}")
  return tuple(known[n] for n in names)


def setup_config(config: ml_collections.ConfigDict, setup: Setup,
                 seeds: int) -> ml_collections.ConfigDict:
  """``config`` on ``setup``: its teacher, noise and training points, the student at the
  config's hidden width and the teacher's depth, ``seeds`` seeds from ``config.seed``."""
  if config.dataset != "teacher_student":
    raise ConfigError(f"config field 'dataset' is {config.dataset!r}: the study needs "
                      "'teacher_student' (configs/teacher_student.py:<method>)")
  config = config.copy_and_resolve_references()
  width = max(config.architecture_student[1:-1])
  config.architecture_teacher = setup.teacher
  config.architecture_student = ((setup.teacher[0],) + (width,) * (len(setup.teacher) - 2)
                                 + (setup.teacher[-1],))
  config.noise = setup.noise
  config.train_set_size = setup.n_train
  config.seeds = seeds
  config.experiment_name = f"{config.experiment_name}_{setup.name}"
  return config


def oracle_mse(setup: Setup, seeds: Sequence[int], *, lr: float, epochs: int) -> np.ndarray:
  """Test MSE of the teacher's architecture started at the teacher and fitted to the
  training points of each seed (module docstring), one value per seed.

  Each seed draws the teacher and the splits the runner draws for it
  (:func:`sparsejax.data.teacher_student_data`), then Adam at ``lr`` on the
  full-batch training MSE for ``epochs`` epochs, every seed in one vmapped
  scan. Nothing is selected on validation: started at the truth, the least
  validation error is the truth itself, and the point is what fitting the
  noisy training points costs.
  """
  model = teacher_student.teacher_model(setup.teacher)
  optimiser = optax.adam(lr)

  def mse(params, split):
    return jnp.mean(jnp.square(model.apply({"params": params}, split.x) - split.y))

  def fit(seed):
    splits, teacher = teacher_student.teacher_student_data(
        seed, n_train=setup.n_train, noise=setup.noise, teacher_widths=setup.teacher)

    def epoch(carry, _):
      params, opt_state = carry
      updates, opt_state = optimiser.update(jax.grad(mse)(params, splits.train), opt_state, params)
      return (optax.apply_updates(params, updates), opt_state), None

    params = teacher["params"]
    (params, _), _ = jax.lax.scan(epoch, (params, optimiser.init(params)), None, epochs)
    return mse(params, splits.test)

  return np.asarray(jax.jit(jax.vmap(fit))(jnp.asarray(list(seeds))))


def summarize(setup: Setup, rows: Sequence[dict], oracle: np.ndarray | None) -> dict:
  """One line of the study's table for ``setup`` (module docstring)."""
  kept = np.asarray([float(r["kept_params"]) for r in rows])
  mse = np.asarray([float(r["final_test_mse"]) for r in rows])
  variance = setup.noise ** 2
  line = {
      "set-up": setup.name, "teacher params": setup.teacher_params, "noise var": variance,
      "train points": setup.n_train, "seeds": len(rows),
      "kept median": float(np.median(kept)), "kept q25": float(np.quantile(kept, 0.25)),
      "kept q75": float(np.quantile(kept, 0.75)),
      "kept / teacher": float(np.median(kept)) / setup.teacher_params,
      "seeds <= teacher": float(np.mean(kept <= setup.teacher_params)),
      "test MSE median": float(np.median(mse)),
      "MSE / noise var": float(np.median(mse)) / variance,
  }
  if oracle is not None:
    line["oracle MSE / noise var"] = float(np.median(oracle)) / variance
  line["met"] = bool(line["kept / teacher"] <= KEPT_BAR and line["MSE / noise var"] <= MSE_BAR)
  return line


def plot(table: pd.DataFrame, path: pathlib.Path, title: str) -> None:
  """Kept parameters (median, quartile bars) against the teacher's size."""
  fig = figure.Figure(figsize=(7, 4.5), layout="constrained")
  backend_agg.FigureCanvasAgg(fig)
  ax = fig.add_subplot()
  sizes = np.asarray(table["teacher params"], float)
  # Set-ups that share a teacher are spread sideways so that their bars stay apart.
  offsets = table.groupby("teacher params").cumcount().to_numpy()
  x = sizes * (1 + 0.035 * (offsets - 0.5 * (table.groupby("teacher params")["set-up"]
                                              .transform("count").to_numpy() - 1)))
  median = table["kept median"].to_numpy()
  ax.errorbar(x, median, yerr=[median - table["kept q25"], table["kept q75"] - median],
              fmt="o", color="tab:blue", capsize=3, label="kept (median, quartiles)")
  for xi, yi, name in zip(x, median, table["set-up"]):
    ax.annotate(name, (xi, yi), textcoords="offset points", xytext=(4, 4), fontsize=7)
  line = np.linspace(0.8 * sizes.min(), 1.2 * sizes.max(), 2)
  ax.plot(line, line, "k--", lw=1, label="teacher's size")
  ax.plot(line, KEPT_BAR * line, ":", color="tab:red", lw=1, label=f"{KEPT_BAR} x teacher")
  ax.set_xlabel("teacher parameters")
  ax.set_ylabel("kept parameters")
  ax.set_title(title, fontsize=9)
  ax.legend(fontsize=8)
  fig.savefig(path, dpi=120)


def study(config: ml_collections.ConfigDict, workdir: pathlib.Path, setups: Sequence[Setup],
          seeds: int, oracle_epochs: int) -> pd.DataFrame:
  """Runs (or resumes, or skips) every set-up and writes the outputs (module docstring)."""
  workdir.mkdir(parents=True, exist_ok=True)
  oracle_path = workdir / "oracle.json"
  oracles = json.loads(oracle_path.read_text()) if oracle_path.exists() else {}
  lines = []
  for setup in setups:
    sub = setup_config(config, setup, seeds)
    rows = [r for r in run(sub, workdir / setup.name) if r.get("status") != "diverged"]
    key = f"{setup.name}/seeds{sub.seed}-{sub.seed + seeds - 1}/epochs{oracle_epochs}/lr{sub.lr}"
    if oracle_epochs > 0 and key not in oracles:
      oracles[key] = oracle_mse(setup, range(sub.seed, sub.seed + seeds), lr=sub.lr,
                                epochs=oracle_epochs).tolist()
      oracle_path.write_text(json.dumps(oracles, indent=1))
    oracle = np.asarray(oracles[key]) if oracle_epochs > 0 else None
    lines.append(summarize(setup, rows, oracle))
  table = pd.DataFrame(lines)
  table.to_csv(workdir / "teachers.csv", index=False)
  (workdir / "teachers.md").write_text(markdown(table.round(4)) + "\n")
  plot(table, workdir / "teachers.png", f"{config.method}: kept against teacher size, "
       f"{seeds} seeds per set-up")
  return table


def grid_config(config: ml_collections.ConfigDict, field: str, value: float
                ) -> ml_collections.ConfigDict:
  """``config`` with the dotted ``field`` set to ``value``."""
  config = config.copy_and_resolve_references()
  *parents, leaf = field.split(".")
  node = config
  for parent in parents:
    node = node[parent]
  if leaf not in node:
    raise ConfigError(f"--grid_field {field!r} is not a config field")
  node[leaf] = type(node[leaf])(value)
  return config


def one_standard_error_choice(table: pd.DataFrame) -> int:
  """Row index of the one-standard-error rule (Breiman et al. 1984, *Classification and
  Regression Trees*, section 3.4.3; glmnet's ``lambda.1se``): among the settings whose mean
  validation code length is within one standard error of the least, the one with the
  fewest kept parameters (median)."""
  best = table["val code mean"].idxmin()
  bound = table.loc[best, "val code mean"] + table.loc[best, "val code se"]
  return int(table[table["val code mean"] <= bound]["kept median"].idxmin())


def strength_grid(config: ml_collections.ConfigDict, workdir: pathlib.Path, field: str,
                  values: Sequence[float], setup: Setup, seeds: int) -> pd.DataFrame:
  """Runs ``setup`` at each value of ``field`` (``seeds`` seeds each, one vmapped
  program per value) and marks the one-standard-error choice (``chosen``)."""
  lines = []
  for value in values:
    sub = setup_config(grid_config(config, field, value), setup, seeds)
    sub.experiment_name = f"{sub.experiment_name}_{field}_{value:g}"
    rows = [r for r in run(sub, workdir / f"{setup.name}_{field}_{value:g}")
            if r.get("status") != "diverged"]
    code = np.asarray([float(r["final_val_loss"]) for r in rows])
    line = summarize(setup, rows, None)
    lines.append({field: value, "seeds": len(rows),
                  "alpha": float(rows[0].get("alpha_used", rows[0].get("ec.alpha", np.nan))),
                  "kept median": line["kept median"], "kept q25": line["kept q25"],
                  "kept q75": line["kept q75"], "MSE / noise var": line["MSE / noise var"],
                  "val code mean": float(code.mean()),
                  "val code se": float(code.std(ddof=1) / np.sqrt(len(code)))})
  table = pd.DataFrame(lines)
  table["chosen"] = table.index == one_standard_error_choice(table)
  workdir.mkdir(parents=True, exist_ok=True)
  table.to_csv(workdir / "grid.csv", index=False)
  (workdir / "grid.md").write_text(markdown(table.round(4)) + "\n")
  return table


def main(argv):
  cli.start(argv, _CONFIG.value)
  f = flags.FLAGS
  setups = setups_named(f.setups) if f.setups else SETUPS
  if f.grid:
    setup = setups_named([f.setups[0] if f.setups else REFERENCE])[0]
    table = strength_grid(_CONFIG.value, pathlib.Path(f.workdir), f.grid_field,
                          [float(v) for v in f.grid], setup, f.seeds)
    print(markdown(table.round(4)))
    chosen = table[table["chosen"]].iloc[0]
    print(f"\none-standard-error choice: {f.grid_field} = {chosen[f.grid_field]:g}")
    return
  table = study(_CONFIG.value, pathlib.Path(f.workdir), setups, f.seeds, f.oracle_epochs)
  print(markdown(table.round(4)))
  print(f"\n{int(table['met'].sum())} of {len(table)} set-ups meet both bars (median kept <= "
        f"{KEPT_BAR} x the teacher's, median test MSE <= {MSE_BAR} x the noise variance)")


if __name__ == "__main__":
  xla_flags.apply()  # before JAX starts a backend: XLA reads XLA_FLAGS once
  _CONFIG = config_flags.DEFINE_config_file("config", None, "configs/teacher_student.py:<method>")
  flags.DEFINE_string("workdir", None, "Where the set-ups' runs and the study's table go.")
  flags.DEFINE_integer("seeds", 64, "Seeds per set-up, one vmapped program.")
  flags.DEFINE_list("setups", [], f"Set-ups to run (default all): {[s.name for s in SETUPS]}.")
  flags.DEFINE_integer("oracle_epochs", 10000, "Epochs of the oracle fit (0: no oracle).")
  flags.DEFINE_list("grid", [], "Values of --grid_field to choose from on one set-up "
                    "(--setups, default the reference's 2-5-8-1) instead of the study.")
  flags.DEFINE_string("grid_field", "ec.bits_scale", "The field --grid sets.")
  flags.mark_flags_as_required(["config", "workdir"])
  app.run(main)
