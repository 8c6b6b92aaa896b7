"""Run records: the shared ``runs.csv`` table and the per-run artifacts.

A workdir holds one table and one folder per run::

  <workdir>/runs.csv                    one row per run (config + metrics)
  <workdir>/runs.csv.lock               sidecar lock file (never deleted)
  <workdir>/artifacts/<run_id>/         curves.csv, loss.png, accuracy.png,
                                        density.png, layers.csv, config.json,
                                        masks.npz

This follows the efficient-compression reference's ``runs.csv`` / artifacts
layout (reference notes, section 6) with two fixes. Its README warns that
concurrent runs writing one table can corrupt it; here every change of
``runs.csv`` is a read-modify-write under an exclusive ``fcntl.flock`` on the
sidecar lock file, written to a temporary file in the same folder, fsynced and
moved into place with ``os.replace``. Readers therefore never need the lock:
they see the old table or the new one, never a torn one. And every artifact is
written the same atomic way, so a run killed mid-write leaves the previous
file or none.

``flock`` locks are advisory and per open file description; they work between
processes on one host and on NFS (Linux emulates them with NFS byte-range
locks). On Lustre the file system must be mounted with ``-o flock``.

Rows may bring new columns over time (a new config field): the table's header
is the union of all columns seen, in first-seen order, and older rows are
empty in the new columns.
"""

from __future__ import annotations

import contextlib
import csv
import datetime
import fcntl
import io
import json
import os
import pathlib
import uuid
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import jax
from matplotlib import figure
from matplotlib.backends import backend_agg
import numpy as np
import pandas as pd

from sparsejax import masks as masks_lib

PathLike = str | os.PathLike
Row = dict[str, str]

RUNS_FILE = "runs.csv"
LOCK_SUFFIX = ".lock"
ARTIFACTS_DIR = "artifacts"

# pandas 3 parses floats exactly by default and deprecates the option; older
# versions need it for an exact round trip.
_EXACT_FLOATS = ({} if int(pd.__version__.split(".")[0]) >= 3
                 else {"float_precision": "round_trip"})


# --------------------------------------------------------------------------
# Identifiers and flattening


def new_run_id() -> str:
  """A run id unique across processes and hosts, sortable by creation time.

  The form is ``YYYYmmddTHHMMSSffffffZ-<8 hex digits of a uuid4>``, e.g.
  ``20260514T093012123456Z-1f3a9c2e``: the UTC time in microseconds, then a
  random fragment that separates runs started in the same microsecond.
  """
  now = datetime.datetime.now(datetime.timezone.utc)
  return f"{now:%Y%m%dT%H%M%S%fZ}-{uuid.uuid4().hex[:8]}"


def utc_timestamp() -> str:
  """The current time in ISO 8601, UTC, e.g. ``2026-05-14T09:30:12.123456+00:00``."""
  return datetime.datetime.now(datetime.timezone.utc).isoformat()


def flatten_config(config: Any, prefix: str = "") -> dict[str, Any]:
  """Flattens a nested config into ``{dotted.key: scalar}``.

  Args:
    config: an ``ml_collections.ConfigDict`` (or ``FrozenConfigDict``) or a
      mapping, nested to any depth.
    prefix: prepended to every key (used by the recursion).

  Returns:
    A flat dict whose keys join the nesting with dots (``objective.alpha``)
    and whose values are Python scalars: lists and tuples are rendered as JSON
    text (``[2, 25, 25, 1]``), ``None`` as the empty string, NumPy/JAX scalars
    as Python numbers.
  """
  flat = {}
  for key, value in _as_dict(config).items():
    name = f"{prefix}{key}"
    if isinstance(value, Mapping) or hasattr(value, "to_dict"):
      flat.update(flatten_config(value, prefix=f"{name}."))
    else:
      flat[name] = _scalar(value)
  return flat


def _as_dict(config: Any) -> Mapping[str, Any]:
  return config.to_dict() if hasattr(config, "to_dict") else config


def _scalar(value: Any) -> Any:
  """One config or metric value as a Python scalar fit for a CSV cell."""
  if value is None:
    return ""
  if isinstance(value, (list, tuple)):
    return json.dumps(value, default=_json_default)
  if isinstance(value, (np.ndarray, np.generic, jax.Array)):
    return _scalar(np.asarray(value).tolist())
  return value


def _json_default(obj: Any) -> Any:
  """``json`` hook: NumPy and JAX arrays and scalars as (nested) lists/numbers."""
  if isinstance(obj, (np.ndarray, np.generic, jax.Array)):
    return np.asarray(obj).tolist()
  raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


# --------------------------------------------------------------------------
# Atomic, locked file updates


def _atomic_write(path: PathLike, write: Callable[[io.IOBase], None],
                  binary: bool = False) -> None:
  """Writes ``path`` via a fsynced temporary file in its folder + ``os.replace``.

  The folder is created if needed; the temporary file gets mode 0o666 less
  the umask, as ``open`` would give ``path`` itself.
  """
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
  fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
  try:
    with (os.fdopen(fd, "wb") if binary
          else os.fdopen(fd, "w", newline="", encoding="utf-8")) as f:
      write(f)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    with contextlib.suppress(FileNotFoundError):
      os.unlink(tmp)
    raise
  _fsync_dir(path.parent)


def write_frame(frame: pd.DataFrame, path: PathLike) -> None:
  """Writes ``frame`` to the CSV file ``path`` whole or not at all (:func:`_atomic_write`)."""
  _atomic_write(path, lambda f: frame.to_csv(f, index=False))


def _fsync_dir(folder: pathlib.Path) -> None:
  """Makes a rename in ``folder`` durable."""
  fd = os.open(folder, os.O_RDONLY)
  try:
    os.fsync(fd)
  finally:
    os.close(fd)


@contextlib.contextmanager
def _locked(path: pathlib.Path) -> Iterator[None]:
  """Holds an exclusive ``flock`` on the sidecar ``<path>.lock``."""
  fd = os.open(f"{path}{LOCK_SUFFIX}", os.O_RDWR | os.O_CREAT, 0o644)
  try:
    fcntl.flock(fd, fcntl.LOCK_EX)
    yield
  finally:
    os.close(fd)  # Closing the descriptor releases the lock.


# --------------------------------------------------------------------------
# The runs table


def runs_path(workdir: PathLike) -> pathlib.Path:
  """The path of the runs table of ``workdir``."""
  return pathlib.Path(workdir) / RUNS_FILE


def _read_table(path: pathlib.Path) -> tuple[list[str], list[Row]]:
  """Header and rows of a CSV file as raw strings (empty if it is absent)."""
  if not path.exists():
    return [], []
  with open(path, newline="", encoding="utf-8") as f:
    reader = csv.DictReader(f)
    rows = list(reader)
    return list(reader.fieldnames or []), rows


def _write_table(path: pathlib.Path, header: Sequence[str], rows: Iterable[Mapping]) -> None:
  def write(f):
    writer = csv.DictWriter(f, fieldnames=header, restval="")
    writer.writeheader()
    writer.writerows(rows)
  _atomic_write(path, write)


def _union_header(header: Sequence[str], rows: Iterable[Mapping]) -> list[str]:
  """``header`` followed by the columns of ``rows`` it lacks, in first-seen order."""
  union = dict.fromkeys(header)
  for row in rows:
    union.update(dict.fromkeys(row))
  return list(union)


def _update_table(path: pathlib.Path,
                  update: Callable[[list[Row]], list[Mapping]]) -> None:
  """Applies ``update`` to the rows of ``path`` under the lock; writes atomically."""
  path.parent.mkdir(parents=True, exist_ok=True)
  with _locked(path):
    header, rows = _read_table(path)
    rows = update(rows)
    _write_table(path, _union_header(header, rows), rows)


def _key_of(row: Mapping[str, Any], key: Sequence[str]) -> tuple[str, ...]:
  missing = [k for k in key if k not in row]
  if missing:
    raise ValueError(f"row lacks the key column(s) {missing}: {sorted(row)}")
  return tuple(str(row[k]) for k in key)


def append_run(workdir: PathLike, row: Mapping[str, Any]) -> None:
  """Appends one run to ``<workdir>/runs.csv`` (safe under concurrent writers).

  Args:
    workdir: the experiment folder (created if needed).
    row: config fields and metrics; nested mappings/ConfigDicts are flattened
      with dotted keys and values rendered as by :func:`flatten_config`.
  """
  flat = flatten_config(row)
  _update_table(runs_path(workdir), lambda rows: rows + [flat])


def replace_runs(workdir: PathLike, rows: Iterable[Mapping[str, Any]],
                 key: str | Sequence[str] = "run_id") -> None:
  """Upserts ``rows`` into ``<workdir>/runs.csv``, keyed by the ``key`` column(s).

  A row whose key is already in the table replaces that row in place (all of
  its cells); other rows are appended. Among ``rows`` with one key the last
  wins.
  """
  key = (key,) if isinstance(key, str) else tuple(key)
  new = {}
  for row in rows:
    flat = flatten_config(row)
    new[_key_of(flat, key)] = flat

  def update(old: list[Row]) -> list[Mapping]:
    pending = dict(new)
    merged = [pending.pop(_key_of(r, key), r) for r in old]
    return merged + list(pending.values())

  _update_table(runs_path(workdir), update)


def merge_runs(dest_workdir: PathLike, source_csvs: Iterable[PathLike],
               key: str | Sequence[str] = "run_id") -> None:
  """Merges per-task runs tables (e.g. SLURM sub-batches) into one.

  Re-merging a source replaces its earlier rows (matched by ``key``), so the
  merge can be repeated as tasks finish without duplicating rows. Cells are
  copied as text, unchanged.

  Args:
    dest_workdir: the workdir whose ``runs.csv`` receives the rows.
    source_csvs: paths of ``runs.csv`` files, or of workdirs holding one.
    key: the column(s) identifying a run.
  """
  rows = []
  for source in source_csvs:
    path = pathlib.Path(source)
    path = runs_path(path) if path.is_dir() else path
    if not path.exists():
      raise FileNotFoundError(f"no runs table at {path}")
    rows.extend(_read_table(path)[1])
  replace_runs(dest_workdir, rows, key)


def read_runs(workdir: PathLike) -> pd.DataFrame:
  """The runs table of ``workdir`` (an empty frame if there is none yet).

  Floats are parsed exactly (they were written with ``repr``); empty cells
  are NaN. No lock is needed: writers replace the file atomically.
  """
  path = runs_path(workdir)
  if not path.exists() or path.stat().st_size == 0:
    return pd.DataFrame()
  return pd.read_csv(path, dtype={"run_id": str}, **_EXACT_FLOATS)


# --------------------------------------------------------------------------
# Artifacts


def artifact_dir(workdir: PathLike, run_id: str) -> pathlib.Path:
  """Creates and returns ``<workdir>/artifacts/<run_id>/``."""
  path = pathlib.Path(workdir) / ARTIFACTS_DIR / run_id
  path.mkdir(parents=True, exist_ok=True)
  return path


def write_curves(artifact_dir: PathLike, curves: Mapping[str, Sequence[float]],
                 x_name: str = "epoch") -> None:
  """Writes ``curves.csv`` and the ``loss``/``accuracy``/``density`` PNG plots.

  Args:
    artifact_dir: the run's artifact folder.
    curves: name -> values. A curve named ``x_name`` gives the x values;
      otherwise x counts 1, 2, ... . Curves may differ in length: the CSV has
      as many rows as the longest and shorter ones are padded with empty
      cells; each curve is plotted against the first x values.
    x_name: name of the x column.

  The plots group curves by name: ``loss.png`` those containing "loss"
  (log-scale y when all values are positive), ``accuracy.png`` those
  containing "accuracy", ``density.png`` those containing "density" or
  "kept" (kept counts on a right-hand axis). A plot without curves is skipped.
  """
  artifact_dir = pathlib.Path(artifact_dir)
  ys = {name: [float(v) for v in values] for name, values in curves.items()
        if name != x_name}
  length = max((len(v) for v in curves.values()), default=0)
  x = list(curves.get(x_name, range(1, length + 1)))
  _write_curves_csv(artifact_dir / "curves.csv", x_name, x, ys)
  groups = {  # file name -> (words in curve names, log-scale y)
      "loss": (("loss",), True),
      "accuracy": (("accuracy",), False),
      "density": (("density", "kept"), False),
  }
  for name, (words, log_y) in groups.items():
    group = {n: v for n, v in ys.items() if any(w in n for w in words)}
    if group:
      _plot(artifact_dir / f"{name}.png", x_name, x, group, name, log_y)


def _write_curves_csv(path: pathlib.Path, x_name: str, x: Sequence[float],
                      ys: Mapping[str, Sequence[float]]) -> None:
  columns = {x_name: list(x), **ys}
  length = max(len(v) for v in columns.values())

  def write(f):
    writer = csv.writer(f)
    writer.writerow(columns)
    for i in range(length):
      writer.writerow([v[i] if i < len(v) else "" for v in columns.values()])
  _atomic_write(path, write)


def _plot(path: pathlib.Path, x_name: str, x: Sequence[float],
          curves: Mapping[str, Sequence[float]], title: str, log_y: bool) -> None:
  """One PNG figure of ``curves`` against ``x``.

  Draws on an Agg canvas of its own, leaving pyplot's global backend alone
  (safe without a display and inside notebooks). When kept counts and
  densities share a figure, the counts go on a right-hand axis.
  """
  fig = figure.Figure(figsize=(6, 4), layout="constrained")
  backend_agg.FigureCanvasAgg(fig)
  ax = fig.add_subplot()
  ax.set(xlabel=x_name, title=title)
  counts = {n: v for n, v in curves.items() if "kept" in n and "density" not in n}
  rest = {n: v for n, v in curves.items() if n not in counts}
  lines = _draw(ax, x, rest or counts, log_y)
  if counts and rest:
    right = ax.twinx()
    right.set_ylabel("kept")
    lines += _draw(right, x, counts, log_y, first_color=len(lines), linestyle="--")
  ax.legend(handles=lines, fontsize="small")
  _atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=100), binary=True)


def _draw(ax, x: Sequence[float], curves: Mapping[str, Sequence[float]],
          log_y: bool, first_color: int = 0, **style) -> list:
  """Draws each curve on ``ax``; log y if asked and every value is positive."""
  lines = []
  for i, (name, values) in enumerate(curves.items(), start=first_color):
    n = min(len(x), len(values))
    lines += ax.plot(x[:n], values[:n], label=name, color=f"C{i}", **style)
  finite = [v for vs in curves.values() for v in vs if np.isfinite(v)]
  if log_y and finite and min(finite) > 0:
    ax.set_yscale("log")
  return lines


def write_layer_counts(artifact_dir: PathLike, summary: Mapping[str, Mapping[str, float]]) -> None:
  """Writes ``layers.csv`` from :func:`sparsejax.masks.summary`.

  Columns ``layer, kept, total, density, compression``; one row per leaf path
  and the ``total`` row, in the summary's order.
  """
  fields = ("kept", "total", "density", "compression")
  rows = [{"layer": layer, **{f: counts[f] for f in fields}} for layer, counts in summary.items()]
  _write_table(pathlib.Path(artifact_dir) / "layers.csv", ("layer",) + fields, rows)


def write_config(artifact_dir: PathLike, config: Any) -> None:
  """Writes ``config.json`` (a ConfigDict's ``to_dict()`` or a mapping).

  Tuples become JSON lists; NumPy/JAX values become numbers or lists.
  """
  text = json.dumps(_as_dict(config), indent=2, sort_keys=True, default=_json_default)
  _atomic_write(pathlib.Path(artifact_dir) / "config.json", lambda f: f.write(text + "\n"))


def write_masks(artifact_dir: PathLike, masks: Any) -> None:
  """Writes the mask tree to ``masks.npz``, keyed by leaf path ``a/b/c``.

  ``None`` leaves (dense, never pruned) are not stored.
  """
  flat = {masks_lib.path_str(path): np.asarray(leaf)
          for path, leaf in jax.tree_util.tree_flatten_with_path(masks)[0]}
  _atomic_write(pathlib.Path(artifact_dir) / "masks.npz",
                lambda f: np.savez_compressed(f, **flat), binary=True)


def read_masks(path: PathLike) -> dict[str, np.ndarray]:
  """Reads a ``masks.npz`` (the file, or the artifact folder holding it)."""
  path = pathlib.Path(path)
  path = path / "masks.npz" if path.is_dir() else path
  with np.load(path) as data:
    return {name: data[name] for name in data.files}
