"""Checkpoints of a run: an orbax save / restore / resume primitive.

A :class:`Checkpointer` keeps the latest checkpoints of one run under a
directory, one folder per step::

  <directory>/<step>/state/   the state pytree (orbax StandardSave, OCDBT)
  <directory>/<step>/meta/    a small JSON dict (epoch, phase, curves so far)

It wraps ``orbax.checkpoint.CheckpointManager`` (orbax-checkpoint 0.12; see
the Orbax notes, section 1.3 of ``reference/jax_ecosystem_and_annealing.md``)
and works for any pytree: the train state NamedTuple with its parameters,
masks, optimiser, objective and model states, step and PRNG keys.

What the wrapper relies on, verified against orbax-checkpoint 0.12.8 by
``tests/test_checkpoint.py``:

* **Atomic steps.** Orbax writes a step into ``<step>.orbax-checkpoint-tmp-*``
  and renames it to ``<step>`` only once every item is written. A process
  killed mid-save (even ``kill -9``) leaves a temporary folder that
  :meth:`Checkpointer.latest_step` never reports; the next ``Checkpointer``
  on the directory deletes it (``cleanup_tmp_directories``), so a directory
  must have one writer at a time (one directory per run). A kill while orbax
  prunes an *older* step (``max_to_keep``) can leave that step half deleted:
  :meth:`Checkpointer.all_steps` still lists it and it does not restore, but
  the latest step is untouched and the next save removes the remains.
* **None leaves** (masks of dense leaves) and empty nodes (``{}``,
  ``optax.EmptyState()``) round-trip as they are: orbax stores them as empty
  subtrees and the restore takes the structure from the template.
* **Typed PRNG keys** (``jax.random.key``, any implementation) are saved with
  their implementation and restored as typed keys; raw ``uint32`` key data
  work too.
* **Dtypes and shardings** come from the template: each restored leaf has the
  dtype and sharding of the template's leaf (``jax.Array`` or
  ``jax.ShapeDtypeStruct``; a struct without sharding restores onto the
  default device). NumPy leaves restore as NumPy arrays, Python scalars as
  Python scalars.

Saving is synchronous by default: :meth:`Checkpointer.save` returns once the
step is on disk. With ``async_save=True`` it returns after the device-to-host
copy and the write goes on in a background thread; :meth:`Checkpointer.wait`
(or ``close``) waits for it.

Damage is found before orbax reads a step's arrays: orbax reads them
concurrently on an event loop that it closes at the first error, while
tensorstore still has the other reads in flight, and each of those then
prints a ``RuntimeError: Event loop is closed`` traceback (and asyncio logs
that their errors were never retrieved). So every restore first reads the
stored arrays itself, one array at a time and without an event loop
(:func:`_read_arrays`): a missing, truncated or undecodable file is a
:class:`CheckpointDamaged` before orbax starts, and a changed byte that
still decodes is caught by the checksum after the restore.
"""

from __future__ import annotations

import hashlib
import json
import pathlib
from typing import Any, Mapping

import jax
import numpy as np
import orbax.checkpoint as ocp
import tensorstore as ts

PyTree = Any

_STATE = "state"
_META = "meta"
_ARRAYS = "arrays"
#: The metadata key holding the checksum of the saved arrays.
CHECKSUM_KEY = "_checksum"
#: The metadata key holding the checksum of the saved arrays by name (:func:`checksum_by_name`).
CHECKSUM_BY_NAME_KEY = "_checksum_by_name"


class CheckpointDamaged(Exception):
  """A checkpoint step cannot be read, or its arrays fail their checksum."""


class CheckpointIncompatible(Exception):
  """An intact checkpoint step whose state has other leaves than the template asks for:
  written by another version of the code (or for another state). Not damage: the step
  is left as it is."""


def tree_checksum(*trees: PyTree) -> str:
  """SHA-256 of every array of ``trees``: leaf paths, dtypes, shapes and bytes.

  Typed PRNG keys count by their key data; ``None`` leaves and empty nodes
  add nothing. A restored tree has the checksum of the saved one exactly
  when every array came back bit for bit.
  """
  digest = hashlib.sha256()
  for tree in trees:
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
      _add_array(digest, jax.tree_util.keystr(path), leaf)
  return digest.hexdigest()


def checksum_by_name(*trees: PyTree) -> str:
  """SHA-256 of every array of ``trees`` by the names on its path, in the order of the names.

  Unlike :func:`tree_checksum` it does not depend on the kinds of the nodes
  (a named tuple's field counts as a dict's key of the same name, a tuple as
  a list), so a step restored without a template, as the plain dicts and
  lists orbax builds, has the checksum of the saved trees exactly when every
  array came back bit for bit.
  """
  digest = hashlib.sha256()
  for tree in trees:
    leaves = [("/".join(_key_name(key) for key in path), leaf)
              for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]]
    for name, leaf in sorted(leaves, key=lambda item: item[0]):
      _add_array(digest, name, leaf)
  return digest.hexdigest()


def _key_name(key) -> str:
  """The name of one entry of a key path: a dict's key, a field's name or an index."""
  for attribute in ("key", "name", "idx"):  # DictKey, GetAttrKey, SequenceKey
    if hasattr(key, attribute):
      return str(getattr(key, attribute))
  return str(key)


def _add_array(digest, name: str, leaf) -> None:
  """Adds one leaf (typed PRNG keys by their key data) to ``digest``."""
  if isinstance(leaf, jax.Array) and jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
    leaf = jax.random.key_data(leaf)
  array = np.ascontiguousarray(np.asarray(leaf))
  digest.update(f"{name}|{array.dtype}|{array.shape}|".encode())
  digest.update(array.tobytes())


def _read_arrays(item: pathlib.Path) -> set[str]:
  """Opens and reads every array of an item of a step (its ``state`` or ``arrays``), as stored;
  returns the names of the item's stored leaves (arrays, scalars and strings).

  The arrays are those of the item's orbax tree metadata (``_METADATA``,
  where orbax names each by its keys joined with dots), each a zarr array in
  the item's OCDBT database, as orbax stores them; they are read one at a
  time, synchronously through tensorstore, so that no event loop is left with
  reads in flight when one fails (module docstring). Orbax's own metadata
  reader opens the arrays concurrently, so it is not used here.

  Raises:
    Exception: what ``json`` or tensorstore raise for a file they cannot read
      or decode (a missing array included).
  """
  saved = json.loads((item / "_METADATA").read_text())
  driver = "zarr3" if saved.get("use_zarr3") else "zarr"
  context = ts.Context()  # the database is opened once for all the arrays
  names = set()
  for entry in saved["tree_metadata"].values():
    value = entry["value_metadata"]
    if value.get("skip_deserialize"):
      continue  # no leaf: an empty node or None
    name = ".".join(str(key["key"]) for key in entry["key_metadata"])
    names.add(name)
    if value.get("value_type") == "string":
      continue  # kept in JSON
    spec = {"driver": driver,
            "kvstore": {"driver": "ocdbt", "base": f"file://{item}/", "path": f"{name}/"}}
    ts.open(spec, context=context, open=True).result().read().result()
  return names


def _check_structure(step_dir: pathlib.Path, stored: set[str], template: PyTree) -> None:
  """Raises :class:`CheckpointIncompatible` unless the step's stored state has exactly the
  leaves of ``template`` (orbax's names: the keys joined with dots)."""
  expected = set(ocp.tree.to_flat_dict(template, sep="."))
  if stored == expected:
    return
  def some(names):
    names = sorted(names)
    return ", ".join(names[:4]) + (f" and {len(names) - 4} more" if len(names) > 4 else "")
  differences = [f"{what}: {some(names)}" for what, names in
                 (("missing from it", expected - stored), ("not expected", stored - expected))
                 if names]
  raise CheckpointIncompatible(
      f"checkpoint {step_dir} is intact but holds a state of another structure than this "
      f"code's ({'; '.join(differences)}): another version of sparsejax wrote it")


class Checkpointer:
  """Saves and restores ``(state, metadata)`` pairs under one directory.

  Usage::

    with Checkpointer(workdir / "checkpoints" / run_id, max_to_keep=2) as ckpt:
      if ckpt.latest_step() is not None:
        state, meta = ckpt.restore(like=state)
      ...
      ckpt.save(epoch, state, {"epoch": epoch, "phase": "train"})

  Attributes:
    directory: the absolute checkpoint directory.
  """

  def __init__(self, directory: str | pathlib.Path, *, max_to_keep: int | None = 3,
               save_interval_steps: int = 1, async_save: bool = False,
               read_only: bool = False):
    """Opens (creating if needed) the checkpoint directory.

    Args:
      directory: where the step folders live.
      max_to_keep: how many of the latest steps to keep (``None``: all).
      save_interval_steps: :meth:`save` writes only steps that are multiples
        of this (and the first save), unless forced.
      async_save: return from :meth:`save` before the write is finished.
      read_only: only restore and check: the directory is neither created nor
        cleaned of unfinished steps. Orbax cleans them in a background thread
        that only a save waits for, so a reader that closes at once could
        leave it running into the interpreter's shutdown, which it fails with a
        logged traceback.
    """
    self.directory = pathlib.Path(directory).absolute()
    options = ocp.CheckpointManagerOptions(
        save_interval_steps=save_interval_steps,
        preservation_policy=ocp.checkpoint_managers.LatestN(max_to_keep),
        create=not read_only,
        cleanup_tmp_directories=not read_only,
        enable_async_checkpointing=async_save,
    )
    self._manager = ocp.CheckpointManager(self.directory, options=options)

  def save(self, step: int, state: PyTree, metadata: Mapping[str, Any] | None = None,
           *, arrays: PyTree | None = None, force: bool = False) -> bool:
    """Saves ``state`` and the JSON ``metadata`` as ``step``.

    Args:
      step: the step number (e.g. the epoch); must not exist yet.
      state: any pytree of arrays, scalars, typed keys and ``None`` leaves.
      metadata: a JSON-serialisable mapping; NumPy/JAX scalars and arrays in
        it are converted to numbers and lists.
      arrays: optional nested dicts of NumPy arrays whose shapes vary from
        save to save (curves so far), restored without a template by
        :meth:`restore_arrays`.
      force: save even if ``step`` is off the save interval.

    Returns:
      Whether a checkpoint was written.
    """
    metadata = dict(metadata or {})
    metadata[CHECKSUM_KEY] = tree_checksum(state, {} if arrays is None else arrays)
    metadata[CHECKSUM_BY_NAME_KEY] = checksum_by_name(state, {} if arrays is None else arrays)
    items = {
        _STATE: ocp.args.StandardSave(state),
        _META: ocp.args.JsonSave(_json_ready(metadata)),
    }
    if arrays is not None:
      items[_ARRAYS] = ocp.args.StandardSave(arrays)
    return self._manager.save(step, args=ocp.args.Composite(**items), force=force)

  def latest_step(self) -> int | None:
    """The newest completely written step, or ``None`` if there is none."""
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    """Every completely written step, ascending."""
    return sorted(self._manager.all_steps())

  def restore(self, step: int | None = None, *, like: PyTree, with_arrays: bool = False):
    """Restores a step into the structure, dtypes and shardings of ``like``.

    The arrays are checked against the checksum saved with them.

    Args:
      step: the step to restore (default the latest).
      like: a template of the state: the state itself, a freshly initialised
        one, or its ``jax.eval_shape``.
      with_arrays: also return the ``arrays`` saved with the step.

    Returns:
      ``(state, metadata)``, or ``(state, metadata, arrays)``.

    Raises:
      FileNotFoundError: if there is no checkpoint (at ``step``).
      CheckpointDamaged: if the step cannot be read or fails its checksum.
      CheckpointIncompatible: if the step is intact but its state's leaves are not
        ``like``'s.
    """
    step = self._complete_step(step)
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like)
    items = {_STATE: ocp.args.StandardRestore(abstract), _META: ocp.args.JsonRestore()}
    if self._has_arrays(step):
      items[_ARRAYS] = ocp.args.StandardRestore()
    restored = self._restore(step, template=abstract, **items)
    meta = restored[_META]
    expected = meta.pop(CHECKSUM_KEY, None)
    meta.pop(CHECKSUM_BY_NAME_KEY, None)
    if expected is not None and tree_checksum(
        restored[_STATE], restored.get(_ARRAYS, {})) != expected:
      raise CheckpointDamaged(f"checkpoint {self.directory / str(step)}: its arrays do not "
                              "match the checksum saved with them")
    if with_arrays:
      return restored[_STATE], meta, restored.get(_ARRAYS, {})
    return restored[_STATE], meta

  def check(self, step: int | None = None) -> int:
    """Checks a step (default the latest) without a template of its state.

    Every array is read as it was saved, with its dtype (64-bit types
    included) and its devices (this process's first device where those are
    not all here), and checked against the checksum by name saved with it
    (:func:`checksum_by_name`); a step saved before that checksum existed is
    only read. Cheaper than :meth:`restore` where a template would have to be
    built first (a finished run's model and data).

    Returns:
      The step checked.

    Raises:
      FileNotFoundError: if there is no checkpoint (at ``step``).
      CheckpointDamaged: if the step cannot be read or fails its checksum.
    """
    step = self._complete_step(step)
    saved = ocp.args.StandardRestore(
        fallback_sharding=jax.sharding.SingleDeviceSharding(jax.local_devices()[0]))
    items = {_STATE: saved, _META: ocp.args.JsonRestore()}
    if self._has_arrays(step):
      items[_ARRAYS] = saved
    with jax.enable_x64(True):
      restored = self._restore(step, **items)
      actual = checksum_by_name(restored[_STATE], restored.get(_ARRAYS, {}))
    expected = restored[_META].get(CHECKSUM_BY_NAME_KEY)
    if expected is not None and actual != expected:
      raise CheckpointDamaged(f"checkpoint {self.directory / str(step)}: its arrays do not "
                              "match the checksum saved with them")
    return step

  def restore_meta(self, step: int | None = None) -> dict:
    """The metadata saved with ``step`` (default the latest), without its checksums."""
    meta = self._restore(self._complete_step(step), **{_META: ocp.args.JsonRestore()})[_META]
    meta.pop(CHECKSUM_KEY, None)
    meta.pop(CHECKSUM_BY_NAME_KEY, None)
    return meta

  def delete(self, step: int) -> None:
    """Removes ``step`` (a damaged one, say)."""
    self._manager.delete(step)

  def _has_arrays(self, step: int) -> bool:
    return (self.directory / str(step) / _ARRAYS).exists()

  def _complete_step(self, step: int | None) -> int:
    """``step``, or the latest if ``None``, once it is known to be completely written.

    Raises:
      FileNotFoundError: naming the directory (and the step asked for).
    """
    if step is None:
      step = self.latest_step()
      if step is None:
        raise FileNotFoundError(f"no completely written checkpoint step in {self.directory}")
    elif step not in self._manager.all_steps():
      raise FileNotFoundError(f"no checkpoint at step {step} in {self.directory}")
    return step

  def _restore(self, step: int, template: PyTree | None = None, **items) -> dict:
    """Restores ``items`` of ``step``; any failure to read is :class:`CheckpointDamaged`.

    The stored arrays of the items that hold arrays are read first
    (:func:`_read_arrays`); with a ``template`` of the state, an intact step whose
    state has other leaves is :class:`CheckpointIncompatible` before orbax restores it.
    """
    step_dir = self.directory / str(step)
    try:
      stored = {name: _read_arrays(step_dir / name) for name, args in items.items()
                if isinstance(args, ocp.args.StandardRestore)}
    except Exception as error:  # noqa: BLE001  (tensorstore and JSON errors alike)
      raise _damaged(step_dir, error) from error
    if template is not None:
      _check_structure(step_dir, stored[_STATE], template)
    try:
      return self._manager.restore(step, args=ocp.args.Composite(**items))
    except Exception as error:  # noqa: BLE001  (orbax, tensorstore and JSON errors alike)
      raise _damaged(step_dir, error) from error

  def wait(self) -> None:
    """Blocks until a pending asynchronous save is on disk."""
    self._manager.wait_until_finished()

  def close(self) -> None:
    """Waits for pending saves and releases the manager's resources."""
    self._manager.close()

  def __enter__(self) -> Checkpointer:
    return self

  def __exit__(self, *exc_info) -> None:
    self.close()


def _damaged(step_dir: pathlib.Path, error: Exception) -> CheckpointDamaged:
  return CheckpointDamaged(f"checkpoint {step_dir} cannot be read: "
                           f"{type(error).__name__}: {str(error).splitlines()[0][:300]}")


def _json_ready(obj: Any) -> Any:
  """``obj`` with NumPy/JAX arrays and scalars turned into lists and numbers."""
  if isinstance(obj, Mapping):
    return {str(k): _json_ready(v) for k, v in obj.items()}
  if isinstance(obj, (list, tuple)):
    return [_json_ready(v) for v in obj]
  if isinstance(obj, (np.ndarray, np.generic, jax.Array)):
    return np.asarray(obj).tolist()
  return obj
