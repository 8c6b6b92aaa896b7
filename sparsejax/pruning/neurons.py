"""Neuron deletion: shrink an MLP by removing hidden units that are constant or unused.

The efficient-compression reference (Barth & von Petersenn, arXiv 2505.17469,
``delete_neurons_lux!`` in ``HelperFunctions``; notes section 6) deletes,
after pruning, the hidden neurons of an MLP that no longer take part in the
function it computes, and resizes everything shaped like the parameters
(masks, the PMMP ``w``/``gamma``/``u`` trees, the Adam moments) to match.

**The maths.** With the flax convention ``x @ kernel + bias``, hidden layer
``Dense_i`` (``i < L``) computes

.. math::  h^{(i)} = \\sigma\\big(h^{(i-1)} W^{(i)} + b^{(i)}\\big), \\qquad
           z^{(i+1)} = h^{(i)} W^{(i+1)} + b^{(i+1)},

where every quantity is the *masked* one (:math:`W \\odot m`, pruned entries
zero) and the output layer ``Dense_L`` is linear. For a hidden unit ``j``:

* **dead** (no incoming weights): if :math:`W^{(i)}_{:,j} = 0` then
  :math:`h^{(i)}_j = \\sigma(b^{(i)}_j)` for every input, so

  .. math::  z^{(i+1)} = \\sum_{k \\ne j} h^{(i)}_k W^{(i+1)}_{k,:}
             + \\big[b^{(i+1)} + \\sigma(b^{(i)}_j)\\, W^{(i+1)}_{j,:}\\big];

  folding :math:`\\sigma(b^{(i)}_j) W^{(i+1)}_{j,:}` into the next bias and
  removing the unit (column ``j`` of ``Dense_i/kernel``, entry ``j`` of
  ``Dense_i/bias``, row ``j`` of ``Dense_{i+1}/kernel``) leaves
  :math:`f(x)` unchanged;
* **silent** (no outgoing weights): if :math:`W^{(i+1)}_{j,:} = 0` the unit
  adds nothing to :math:`z^{(i+1)}` and is removed without any fold.

Removing units can create new ones of either kind (a unit fed only by dead
units becomes dead once their columns are gone; a unit feeding only silent
units becomes silent once their rows are gone), so :func:`delete_neurons`
sweeps the hidden layers in network order, removing and folding, and repeats
the sweep until one removes nothing: the result is a fixed point, in which no
hidden unit is dead or silent. The reference makes one forward sweep and
only removes dead units; the silent rule and the repetition are sparsejax
additions (both keep :math:`f` exactly).

**Masks.** A unit is dead or silent by its masked weights (exact zeros in
the parameters count as well). The fold is added to the masked next bias:
where ``Dense_{i+1}/bias`` was pruned and the fold is nonzero, the bias
becomes the fold and its mask entry is switched back on (otherwise the mask
would drop the constant and change :math:`f`). Every other kept entry keeps
its parameter value and mask.

As in the reference, removing every unit of a hidden layer is an error
(``ValueError`` naming the layer): the network would be disconnected.

**Scope.** MLP only (:class:`sparsejax.models.MLP`: params
``{"Dense_0": {"kernel", "bias"}, ..., "Dense_L": ...}``, the ``params``
collection without the ``{"params": ...}`` wrapper). The run-time gates of
the model contract are not parameters and are not seen here; gates given
later must be indexed with ``kept_units``. This runs on the host with NumPy
index selection, outside ``jax.jit``: the shapes change, so the model, the
optimizer state and every compiled function must be rebuilt for the new
``widths`` (:func:`resize_like` resizes params-shaped trees such as the optax
Adam ``mu`` and ``nu``).
"""

from __future__ import annotations

import re
from typing import Any, Callable, Mapping, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from sparsejax import masks as masks_lib
from sparsejax.models.mlp import get_activation

Params = Any
Masks = Any
#: ``{hidden layer name: kept original unit indices}``.
KeptUnits = Mapping[str, np.ndarray]

_DENSE = re.compile(r"Dense_(\d+)")


class NeuronDeletion(NamedTuple):
  """Result of :func:`delete_neurons`.

  Attributes:
    params: the smaller parameters, with the folded biases.
    masks: the masks resized the same way (``None`` leaves stay ``None``;
      ``None`` if no masks were given), with the bias entries that received a
      nonzero fold switched on.
    widths: the new ``(d_in, h_1, ..., h_L, d_out)``, for ``MLP(widths=...)``.
    kept_units: ``{"Dense_i": int array}`` for every hidden layer, the
      original indices of the units kept, in increasing order.
    extra_trees: the ``extra_trees`` resized by the same index selection
      (values only selected: the fold is not applied to them).
  """
  params: Params
  masks: Masks | None
  widths: tuple[int, ...]
  kept_units: dict[str, np.ndarray]
  extra_trees: tuple[Params, ...]


def layer_names(params: Params) -> list[str]:
  """The Dense layer names of MLP params in network order.

  Raises:
    ValueError: if the top-level keys are not ``Dense_0 ... Dense_L`` each
      holding a 2-D ``kernel`` and a 1-D ``bias`` that chain in shape.
  """
  indices = []
  for key in params:
    match = _DENSE.fullmatch(str(key))
    if match is None:
      raise ValueError(f"not MLP params: unexpected top-level key {key!r} "
                       f"(expected Dense_0 ... Dense_L)")
    indices.append(int(match.group(1)))
  if sorted(indices) != list(range(len(indices))) or not indices:
    raise ValueError(f"not MLP params: layers {sorted(params)} are not "
                     f"Dense_0 ... Dense_{len(indices) - 1}")
  names = [f"Dense_{i}" for i in range(len(indices))]
  for name in names:
    layer = params[name]
    if set(layer) != {"kernel", "bias"}:
      raise ValueError(f"{name} must hold exactly 'kernel' and 'bias', got {sorted(layer)}")
    k_shape, b_shape = np.shape(layer["kernel"]), np.shape(layer["bias"])
    if len(k_shape) != 2 or b_shape != k_shape[1:]:
      raise ValueError(f"{name}: kernel {k_shape} and bias {b_shape} are not a Dense layer")
  for name, nxt in zip(names[:-1], names[1:]):
    if np.shape(params[name]["kernel"])[1] != np.shape(params[nxt]["kernel"])[0]:
      raise ValueError(f"{name} has {np.shape(params[name]['kernel'])[1]} units but "
                       f"{nxt}/kernel has {np.shape(params[nxt]['kernel'])[0]} rows")
  return names


def _masked(params: Params, masks: Masks | None, name: str, leaf: str) -> np.ndarray:
  """The host value of ``params[name][leaf]`` with pruned entries zeroed."""
  value = np.asarray(params[name][leaf])
  mask = None if masks is None else masks[name][leaf]
  if mask is None:
    return value
  return np.where(np.asarray(mask, bool), value, np.zeros_like(value))


def _unit_status(params: Params, masks: Masks | None, name: str,
                 nxt: str) -> tuple[np.ndarray, np.ndarray]:
  """``(dead, silent)`` flags of the units of hidden layer ``name``.

  ``dead[j]``: column ``j`` of the masked ``name/kernel`` is all zero.
  ``silent[j]``: row ``j`` of the masked ``nxt/kernel`` is all zero.
  """
  dead = np.all(_masked(params, masks, name, "kernel") == 0, axis=0)
  silent = np.all(_masked(params, masks, nxt, "kernel") == 0, axis=1)
  return dead, silent


def dead_units(params: Params, masks: Masks | None = None) -> dict[str, np.ndarray]:
  """Which hidden units one deletion pass would remove, layer by layer.

  A unit of hidden layer ``Dense_i`` is removable if its incoming kernel
  column ``Dense_i/kernel[:, j]`` or its outgoing kernel row
  ``Dense_{i+1}/kernel[j, :]`` is all zero after masking. This looks at the
  given parameters only, without the cascade that removing units can cause
  (:func:`delete_neurons` iterates to the fixed point). Host-side NumPy.

  Args:
    params: MLP params ``{"Dense_0": {"kernel", "bias"}, ...}``.
    masks: optional mask tree of the same structure (``None`` leaves dense).

  Returns:
    ``{"Dense_i": bool[h_i]}`` for each hidden layer, True = removable.
  """
  names = layer_names(params)
  if masks is not None:
    masks_lib.check_structure(masks, params)
  out = {}
  for name, nxt in zip(names[:-1], names[1:]):
    dead, silent = _unit_status(params, masks, name, nxt)
    out[name] = dead | silent
  return out


def _take(leaf: Any, index: np.ndarray, axis: int) -> Any:
  """``leaf`` restricted to ``index`` along ``axis`` (``None`` stays ``None``)."""
  if leaf is None:
    return None
  return np.take(np.asarray(leaf), index, axis=axis)


def _next_layer(name: str) -> str:
  match = _DENSE.fullmatch(name)
  if match is None:
    raise ValueError(f"kept_units names {name!r}, not a Dense_i layer")
  return f"Dense_{int(match.group(1)) + 1}"


def _resize(tree: Params, kept_units: KeptUnits) -> Params:
  """:func:`resize_like` with NumPy leaves."""
  out = {key: (dict(value) if isinstance(value, Mapping) else value)
         for key, value in tree.items()}
  for name, kept in kept_units.items():
    nxt = _next_layer(name)
    if name not in out or nxt not in out:
      raise ValueError(f"tree has no layers {name!r} and {nxt!r} to resize; "
                       f"it holds {sorted(out)}")
    index = np.asarray(kept, dtype=np.intp)
    out[name]["kernel"] = _take(out[name]["kernel"], index, axis=1)
    out[name]["bias"] = _take(out[name]["bias"], index, axis=0)
    out[nxt]["kernel"] = _take(out[nxt]["kernel"], index, axis=0)
  return out


def _to_device(tree: Params | None) -> Params | None:
  if tree is None:
    return None
  return jax.tree.map(jnp.asarray, tree)


def resize_like(tree: Params | None, kept_units: KeptUnits) -> Params | None:
  """Keeps the units ``kept_units`` in a tree shaped like MLP params.

  For each ``name = "Dense_i"`` in ``kept_units`` with indices ``k``::

    tree[name]["kernel"]      <- tree[name]["kernel"][:, k]
    tree[name]["bias"]        <- tree[name]["bias"][k]
    tree["Dense_{i+1}"]["kernel"] <- tree["Dense_{i+1}"]["kernel"][k, :]

  Pure index selection, no folding: use it for masks, PMMP trees, or optax
  state parts shaped like the params (e.g. ``adam_state.mu`` and ``.nu``,
  rebuilt with ``state._replace(mu=..., nu=...)``). ``None`` leaves stay
  ``None``; other layers are passed through. Host-side (NumPy indexing,
  shapes change), not for use under ``jax.jit``.

  Args:
    tree: a params-shaped mapping ``{"Dense_i": {"kernel", "bias"}}``, or
      ``None`` (returned as is).
    kept_units: ``{"Dense_i": int array}`` of the original unit indices to
      keep, as in :attr:`NeuronDeletion.kept_units`.

  Returns:
    The resized tree as plain dicts of ``jax.Array`` leaves.
  """
  if tree is None:
    return None
  return _to_device(_resize(tree, kept_units))


def _fold_bias(bias: np.ndarray, bias_mask: np.ndarray | None,
               fold: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
  """Adds ``fold`` to the masked bias; a pruned entry with a nonzero fold is revived.

  Returns ``(bias, bias_mask)`` where ``bias_i = [m_i] b_i + fold_i`` and
  ``m_i |= fold_i != 0``; entries with ``fold_i == 0`` are left untouched.
  """
  touched = fold != 0
  wide = bias.astype(np.float64)
  if bias_mask is not None:
    wide = np.where(bias_mask, wide, 0.0)
  new = np.where(touched, wide + fold, bias.astype(np.float64)).astype(bias.dtype)
  if bias_mask is None:
    return new, None
  return new, np.asarray(bias_mask, bool) | touched


def _fold_dead(params: Params, masks: Masks | None, name: str, nxt: str,
               fold_units: np.ndarray,
               act: Callable[[jax.Array], jax.Array]) -> tuple[Params, Masks | None]:
  """Adds ``sigma(b_j) W^{(i+1)}_{j,:}`` of the units ``fold_units`` to ``nxt/bias``."""
  if not fold_units.any():
    return params, masks
  bias = _masked(params, masks, name, "bias")[fold_units]
  constant = np.asarray(act(jnp.asarray(bias)), np.float64)
  rows = _masked(params, masks, nxt, "kernel")[fold_units].astype(np.float64)
  fold = constant @ rows
  bias_mask = None if masks is None else masks[nxt]["bias"]
  new_bias, new_mask = _fold_bias(np.asarray(params[nxt]["bias"]), bias_mask, fold)
  params = {**params, nxt: {**params[nxt], "bias": new_bias}}
  if masks is not None:
    masks = {**masks, nxt: {**masks[nxt], "bias": new_mask}}
  return params, masks


def delete_neurons(params: Params, masks: Masks | None = None, *, activation: str,
                   extra_trees: Sequence[Params] = ()) -> NeuronDeletion:
  """Removes the dead and silent hidden units of an MLP, to a fixed point.

  Sweeps the hidden layers ``Dense_0 ... Dense_{L-1}`` in order; in each, the
  units whose masked incoming column is zero (dead) or whose masked outgoing
  row is zero (silent) are removed, after folding
  :math:`\\sigma(b_j) W^{(i+1)}_{j,:}` of the dead ones into
  ``Dense_{i+1}/bias``. Sweeps repeat until one removes nothing. The masked
  network computes the same function before and after (up to float
  rounding of the folded biases). Host-side NumPy, outside ``jax.jit``: the
  shapes change.

  Args:
    params: MLP params ``{"Dense_0": {"kernel", "bias"}, ..., "Dense_L": ...}``.
    masks: optional mask tree of the same structure (bool leaves or
      ``None`` for dense leaves).
    activation: the MLP's hidden activation name (see
      :func:`sparsejax.models.mlp.get_activation`), used for the fold.
    extra_trees: further params-shaped trees (PMMP ``w``/``gamma``/``u``,
      Adam moments) to resize by the same index selection.

  Returns:
    A :class:`NeuronDeletion`; build the new model with
    ``MLP(widths=result.widths, activation=activation)``.

  Raises:
    ValueError: if every unit of a hidden layer would be removed (the
      message names the layer), or the trees are not MLP-shaped.
  """
  act = get_activation(activation)
  names = layer_names(params)
  if masks is not None:
    masks_lib.check_structure(masks, params)
  p = jax.tree.map(np.asarray, dict(params))
  m = None if masks is None else jax.tree.map(
      lambda x: None if x is None else np.asarray(x, bool), dict(masks),
      is_leaf=lambda x: x is None)
  kept = {name: np.arange(np.shape(p[name]["bias"])[0]) for name in names[:-1]}

  changed = True
  while changed:
    changed = False
    for name, nxt in zip(names[:-1], names[1:]):
      dead, silent = _unit_status(p, m, name, nxt)
      remove = dead | silent
      if not remove.any():
        continue
      if remove.all():
        raise ValueError(
            f"delete_neurons would remove every unit of hidden layer {name!r} "
            f"({int(dead.sum())} of {dead.size} with no incoming weights, "
            f"{int(silent.sum())} with no outgoing weights)")
      p, m = _fold_dead(p, m, name, nxt, dead & ~silent, act)
      keep = np.flatnonzero(~remove)
      p = _resize(p, {name: keep})
      if m is not None:
        m = _resize(m, {name: keep})
      kept[name] = kept[name][keep]
      changed = True

  widths = (int(np.shape(p[names[0]]["kernel"])[0]),) + tuple(
      int(np.shape(p[name]["bias"])[0]) for name in names)
  return NeuronDeletion(
      params=_to_device(p),
      masks=_to_device(m),
      widths=widths,
      kept_units=kept,
      extra_trees=tuple(resize_like(tree, kept) for tree in extra_trees),
  )


def _scatter(small: Params, like: Params, kept_units: KeptUnits, fill: Any) -> Params:
  """The inverse of :func:`resize_like`: ``small`` placed back into ``like``'s shapes.

  Entries of removed units get ``fill``; ``None`` leaves stay ``None``.
  """
  out = jax.tree.map(lambda leaf: None if leaf is None else np.full(np.shape(leaf), fill,
                                                                   np.asarray(leaf).dtype),
                     dict(like), is_leaf=lambda x: x is None)
  index = {name: np.asarray(k, np.intp) for name, k in kept_units.items()}
  for name, layer in small.items():
    for leaf_name, leaf in layer.items():
      if leaf is None:
        continue
      rows = index.get(_previous_layer(name)) if leaf_name == "kernel" else None
      cols = index.get(name)
      leaf = np.asarray(leaf)
      target = out[name][leaf_name]
      if leaf_name == "kernel":
        rows = np.arange(target.shape[0]) if rows is None else rows
        cols = np.arange(target.shape[1]) if cols is None else cols
        target[np.ix_(rows, cols)] = leaf
      else:
        target[np.arange(target.shape[0]) if cols is None else cols] = leaf
  return out


def _previous_layer(name: str) -> str:
  return f"Dense_{int(_DENSE.fullmatch(name).group(1)) - 1}"


def fold_dead_neurons(params: Params, masks: Masks, *, activation: str) -> tuple[Params, Masks]:
  """:func:`delete_neurons` without changing shapes: the removed units are masked.

  The units that :func:`delete_neurons` removes keep their places, with their
  incoming weights, bias and outgoing weights pruned (mask False, value 0);
  the folded constants are in the next biases. A removed unit then outputs
  :math:`\\sigma(0)` into an all-zero outgoing row, so the network computes
  the same function as the physically smaller one, and the kept parameter
  count equals the smaller network's. This is what the experiment runner
  uses: the model, optimiser state, checkpoints and compiled functions keep
  their shapes (and a vmapped seed sweep keeps one shape for all seeds).

  Returns:
    ``(params, masks)`` shaped like the inputs, pruned entries exactly zero.
  """
  result = delete_neurons(params, masks, activation=activation)
  new_masks = _scatter(result.masks, masks, result.kept_units, False)
  new_params = _scatter(result.params, params, result.kept_units, 0)
  return _to_device(masks_lib.apply(new_masks, new_params)), _to_device(new_masks)
