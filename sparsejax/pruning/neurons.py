"""Unit deletion: shrink a network by removing hidden units (neurons, channels) left unused.

The efficient-compression reference (Barth & von Petersenn, arXiv 2505.17469,
``delete_neurons_lux!`` in ``HelperFunctions``; notes section 6) deletes,
after pruning, the hidden neurons of an MLP that no longer take part in the
function it computes, and resizes everything shaped like the parameters
(masks, the PMMP ``w``/``gamma``/``u`` trees, the Adam moments) to match.
DeepHoyer's group regularisers (Yang, Wen and Li, ICLR 2020) zero whole
neurons and conv channels the same way; this module deletes both.

**The chain.** The parameters are a chain of layers ``Conv_0 ... Conv_K``
(optional, 2-D convolutions with ``VALID`` padding, kernels
``(kh, kw, in, out)``) then ``Dense_0 ... Dense_L`` (kernels ``(in, out)``),
as :class:`sparsejax.models.MLP` and :class:`sparsejax.models.LeNet5Caffe`
have. The *units* of layer ``i`` are the last axis of its kernel (neurons
or output channels). Between two layers there is only an element-wise
activation :math:`\\sigma`, optionally max pooling and a row-major flatten
over ``(H, W, C)``. Every next-layer kernel is then read as the view
``V^{(i+1)} = W^{(i+1)}.reshape(-1, n_i, out)``: ``(taps, in, out)`` for a
conv, ``(H W, C, out)`` for the Dense layer after the flatten and
``(1, in, out)`` for a Dense layer after a Dense layer, so that input unit
``j`` of layer ``i + 1`` is the slice ``V^{(i+1)}_{:, j, :}`` in every case.

**The maths.** Every quantity is the *masked* one (:math:`W \\odot m`, pruned
entries zero). For a hidden unit ``j`` of layer ``i``:

* **dead** (no incoming weights): if :math:`W^{(i)}_{\\dots, j} = 0` the unit
  outputs the constant :math:`\\sigma(b^{(i)}_j)` at every position and for
  every input (max pooling and flattening keep a constant constant). Every
  entry of :math:`V^{(i+1)}_{:, j, :}` then multiplies that constant (a
  ``VALID`` convolution sees all its taps at every output position), so

  .. math::  z^{(i+1)} = \\big[\\text{the other units}\\big]
             + \\big[b^{(i+1)} + \\sigma(b^{(i)}_j)
               \\textstyle\\sum_t V^{(i+1)}_{t, j, :}\\big];

  folding :math:`\\sigma(b^{(i)}_j) \\sum_t V^{(i+1)}_{t, j, :}` into the next
  bias and removing the unit (its kernel slice and bias entry, and the slice
  :math:`V^{(i+1)}_{:, j, :}`) leaves :math:`f(x)` unchanged;
* **silent** (no outgoing weights): if :math:`V^{(i+1)}_{:, j, :} = 0` the
  unit adds nothing to :math:`z^{(i+1)}` and is removed without any fold.

Removing units can create new ones of either kind (a unit fed only by dead
units becomes dead once their slices are gone; a unit feeding only silent
units becomes silent once theirs are gone), so :func:`delete_neurons`
sweeps the hidden layers in network order, removing and folding, and repeats
the sweep until one removes nothing: the result is a fixed point, in which no
hidden unit is dead or silent. The reference makes one forward sweep over
MLP neurons and only removes dead units; the silent rule, the repetition and
conv channels are sparsejax additions (all keep :math:`f` exactly; ``SAME``
padding would not: the zero border breaks the constant).

**Masks.** A unit is dead or silent by its masked weights (exact zeros in
the parameters count as well). The fold is added to the masked next bias:
where that bias entry was pruned and the fold is nonzero, the bias becomes
the fold and its mask entry is switched back on (otherwise the mask would
drop the constant and change :math:`f`). Every other kept entry keeps its
parameter value and mask.

As in the reference, removing every unit of a hidden layer is an error
(``ValueError`` naming the layer): the network would be disconnected.

**Scope.** Params without the ``{"params": ...}`` wrapper. The run-time
gates of the model contract are not parameters and are not seen here; gates
given later must be indexed with ``kept_units``. :func:`fold_dead_neurons`
folds and prunes in place (NumPy, on the host); :func:`delete_neurons` then
removes the pruned units with :func:`sparsejax.compaction.compact` on the
chain's model (:func:`chain_model`). The shapes change, so the model
(:func:`smaller_model`), the optimizer state and every compiled function
must be rebuilt for the new ``widths`` (:func:`resize_like` resizes
params-shaped trees such as the optax Adam ``mu`` and ``nu``).
"""

from __future__ import annotations

import math
import re
from typing import Any, Callable, Mapping, NamedTuple, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from sparsejax import masks as masks_lib
from sparsejax.compaction import Member, compact
from sparsejax.models.lenet import LeNet5Caffe
from sparsejax.models.mlp import MLP, get_activation

Params = Any
Masks = Any
#: ``{hidden layer name: kept original unit indices}``.
KeptUnits = Mapping[str, np.ndarray]

_LAYER = re.compile(r"(Conv|Dense)_(\d+)")


class NeuronDeletion(NamedTuple):
  """Result of :func:`delete_neurons`.

  Attributes:
    params: the smaller parameters, with the folded biases.
    masks: the masks resized the same way (``None`` leaves stay ``None``;
      ``None`` if no masks were given), with the bias entries that received a
      nonzero fold switched on.
    widths: the new ``(d_in, n_0, ..., n_L)``: the input features (channels
      for a conv network) and the units of every layer, output included;
      ``MLP(widths=...)`` or :func:`smaller_model`.
    kept_units: ``{layer: int array}`` for every hidden layer, the original
      indices of the units kept, in increasing order.
    extra_trees: the ``extra_trees`` resized by the same index selection
      (values only selected: the fold is not applied to them).
  """
  params: Params
  masks: Masks | None
  widths: tuple[int, ...]
  kept_units: dict[str, np.ndarray]
  extra_trees: tuple[Params, ...]


def _chain(tree: Params) -> list[str]:
  """The layer names of a params-shaped tree in network order (Conv_*, then Dense_*)."""
  found: dict[str, list[int]] = {"Conv": [], "Dense": []}
  for key in tree:
    match = _LAYER.fullmatch(str(key))
    if match is None:
      raise ValueError(f"not a layer chain: unexpected top-level key {key!r} "
                       f"(expected Conv_0 ... Conv_K, then Dense_0 ... Dense_L)")
    found[match.group(1)].append(int(match.group(2)))
  for kind, indices in found.items():
    if sorted(indices) != list(range(len(indices))):
      raise ValueError(f"not a layer chain: layers {sorted(tree)} are not "
                       f"{kind}_0 ... {kind}_{len(indices) - 1}")
  if not found["Dense"]:
    raise ValueError(f"not a layer chain: {sorted(tree)} has no Dense_0 ... Dense_L")
  return ([f"Conv_{i}" for i in range(len(found["Conv"]))]
          + [f"Dense_{i}" for i in range(len(found["Dense"]))])


def layer_names(params: Params) -> list[str]:
  """The layer names of chain params in network order, checked to chain in shape.

  Raises:
    ValueError: if the top-level keys are not ``Conv_0 ... Conv_K`` (4-D
      kernels) then ``Dense_0 ... Dense_L`` (2-D kernels), each holding a
      ``kernel`` and a ``bias`` of its units, with every kernel's inputs a
      whole multiple of the previous layer's units.
  """
  names = _chain(params)
  for name in names:
    layer = params[name]
    if set(layer) != {"kernel", "bias"}:
      raise ValueError(f"{name} must hold exactly 'kernel' and 'bias', got {sorted(layer)}")
    k_shape, b_shape = np.shape(layer["kernel"]), np.shape(layer["bias"])
    rank = 4 if name.startswith("Conv") else 2
    if len(k_shape) != rank or b_shape != k_shape[-1:]:
      raise ValueError(f"{name}: kernel {k_shape} and bias {b_shape} are not a "
                       f"{'2-D Conv' if rank == 4 else 'Dense'} layer")
  for name, nxt in zip(names[:-1], names[1:]):
    units = np.shape(params[name]["bias"])[0]
    k_shape = np.shape(params[nxt]["kernel"])
    flattened = name.startswith("Conv") and nxt.startswith("Dense")
    inputs = k_shape[0] if flattened else k_shape[-2]
    if inputs % units or (inputs != units and not flattened):
      raise ValueError(f"{name} has {units} units but {nxt}/kernel {k_shape} "
                       f"does not take them as inputs")
  return names


def _in_view(kernel: np.ndarray, units: int) -> np.ndarray:
  """``kernel`` as ``(positions, units, out)``: input unit ``j`` is ``[:, j, :]``."""
  return np.reshape(kernel, (-1, units, np.shape(kernel)[-1]))


def _masked(params: Params, masks: Masks | None, name: str, leaf: str) -> np.ndarray:
  """The host value of ``params[name][leaf]`` with pruned entries zeroed."""
  value = np.asarray(params[name][leaf])
  mask = None if masks is None else masks[name][leaf]
  if mask is None:
    return value
  return np.where(np.asarray(mask, bool), value, np.zeros_like(value))


def _units(params: Params, name: str) -> int:
  return int(np.shape(params[name]["bias"])[0])


def _unit_status(params: Params, masks: Masks | None, name: str,
                 nxt: str) -> tuple[np.ndarray, np.ndarray]:
  """``(dead, silent)`` flags of the units of hidden layer ``name``.

  ``dead[j]``: the masked ``name/kernel[..., j]`` is all zero.
  ``silent[j]``: the masked next kernel's input slice ``V[:, j, :]`` is all zero.
  """
  kernel = _masked(params, masks, name, "kernel")
  dead = np.all(kernel == 0, axis=tuple(range(kernel.ndim - 1)))
  view = _in_view(_masked(params, masks, nxt, "kernel"), _units(params, name))
  silent = np.all(view == 0, axis=(0, 2))
  return dead, silent


def dead_units(params: Params, masks: Masks | None = None) -> dict[str, np.ndarray]:
  """Which hidden units one deletion pass would remove, layer by layer.

  A unit ``j`` of a hidden layer is removable if its incoming kernel slice
  ``kernel[..., j]`` or its outgoing slice of the next kernel is all zero
  after masking. This looks at the given parameters only, without the
  cascade that removing units can cause (:func:`delete_neurons` iterates to
  the fixed point). Host-side NumPy.

  Args:
    params: chain params ``{"Conv_0": ..., "Dense_0": {"kernel", "bias"}, ...}``.
    masks: optional mask tree of the same structure (``None`` leaves dense).

  Returns:
    ``{layer: bool[units]}`` for each hidden layer, True = removable.
  """
  names = layer_names(params)
  if masks is not None:
    masks_lib.check_structure(masks, params)
  out = {}
  for name, nxt in zip(names[:-1], names[1:]):
    dead, silent = _unit_status(params, masks, name, nxt)
    out[name] = dead | silent
  return out


def _layer_units(tree: Params, name: str, nxt: str) -> int | None:
  """The number of units of ``name`` in a tree whose leaves may be ``None``."""
  kernel, bias = tree[name]["kernel"], tree[name]["bias"]
  if kernel is not None:
    return int(np.shape(kernel)[-1])
  if bias is not None:
    return int(np.shape(bias)[0])
  after = tree[nxt]["kernel"]
  if after is not None and (np.ndim(after) == 4 or name.startswith("Dense")):
    return int(np.shape(after)[-2])
  return None


def _next_layer(names: Sequence[str], name: str) -> str:
  if name not in names[:-1]:
    raise ValueError(f"kept_units names {name!r}, not a hidden layer of {list(names)}")
  return names[names.index(name) + 1]


def _resize(tree: Params, kept_units: KeptUnits) -> Params:
  """:func:`resize_like` with NumPy leaves."""
  names = _chain(tree)
  out = {key: (dict(value) if isinstance(value, Mapping) else value)
         for key, value in tree.items()}
  for name, kept in kept_units.items():
    nxt = _next_layer(names, name)
    index = np.asarray(kept, dtype=np.intp)
    units = _layer_units(out, name, nxt)
    for leaf in ("kernel", "bias"):
      if out[name][leaf] is not None:
        out[name][leaf] = np.take(np.asarray(out[name][leaf]), index, axis=-1)
    after = out[nxt]["kernel"]
    if after is not None and units is None:
      raise ValueError(f"cannot tell how many units {name!r} has: its kernel and bias are "
                       f"None and {nxt}/kernel flattens them")
    if after is not None:
      shape = np.shape(after)
      view = np.take(_in_view(np.asarray(after), units), index, axis=1)
      out[nxt]["kernel"] = (view.reshape(shape[:-2] + (index.size, shape[-1])) if len(shape) == 4
                            else view.reshape(-1, shape[-1]))
  return out


def _to_device(tree: Params | None) -> Params | None:
  if tree is None:
    return None
  return jax.tree.map(jnp.asarray, tree)


def resize_like(tree: Params | None, kept_units: KeptUnits) -> Params | None:
  """Keeps the units ``kept_units`` in a tree shaped like chain params.

  For each hidden layer ``name`` in ``kept_units`` with indices ``k`` and
  the next layer ``nxt``::

    tree[name]["kernel"] <- tree[name]["kernel"][..., k]
    tree[name]["bias"]   <- tree[name]["bias"][k]
    tree[nxt]["kernel"]  <- the input slices k of tree[nxt]["kernel"]
                            (axis -2 of a conv kernel; for a Dense kernel
                            the rows of units k, every position of a flatten)

  Pure index selection, no folding: use it for masks, PMMP trees, or optax
  state parts shaped like the params (e.g. ``adam_state.mu`` and ``.nu``,
  rebuilt with ``state._replace(mu=..., nu=...)``). ``None`` leaves stay
  ``None``; other layers are passed through. Host-side (NumPy indexing,
  shapes change), not for use under ``jax.jit``.

  Args:
    tree: a params-shaped mapping ``{"Dense_i": {"kernel", "bias"}, ...}``,
      or ``None`` (returned as is).
    kept_units: ``{layer: int array}`` of the original unit indices to keep,
      as in :attr:`NeuronDeletion.kept_units`.

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
  """Adds ``sigma(b_j) sum_t V_{t,j,:}`` of the units ``fold_units`` to ``nxt/bias``."""
  if not fold_units.any():
    return params, masks
  bias = _masked(params, masks, name, "bias")[fold_units]
  constant = np.asarray(act(jnp.asarray(bias)), np.float64)
  view = _in_view(_masked(params, masks, nxt, "kernel"), _units(params, name))
  fold = constant @ view[:, fold_units, :].astype(np.float64).sum(axis=0)
  bias_mask = None if masks is None else masks[nxt]["bias"]
  new_bias, new_mask = _fold_bias(np.asarray(params[nxt]["bias"]), bias_mask, fold)
  params = {**params, nxt: {**params[nxt], "bias": new_bias}}
  if masks is not None:
    masks = {**masks, nxt: {**masks[nxt], "bias": new_mask}}
  return params, masks


def _cut(params: Params, masks: Masks, name: str, nxt: str,
         units: np.ndarray) -> tuple[Params, Masks]:
  """Prunes ``units`` of ``name`` in place of removing them: their incoming slice and
  bias and their outgoing slice of ``nxt`` (mask False, value 0)."""
  count = _units(params, name)
  params = {k: dict(v) for k, v in params.items()}
  masks = {k: dict(v) for k, v in masks.items()}
  for layer, leaf in ((name, "kernel"), (name, "bias"), (nxt, "kernel")):
    value = np.array(params[layer][leaf])
    mask = masks[layer][leaf]
    mask = np.ones(value.shape, bool) if mask is None else np.array(mask, bool)
    if layer == nxt:
      _in_view(mask, count)[:, units, :] = False
    else:
      mask[..., units] = False
    params[layer][leaf] = np.where(mask, value, np.zeros_like(value))
    masks[layer][leaf] = mask
  return params, masks


def fold_dead_neurons(params: Params, masks: Masks | None, *,
                      activation: str) -> tuple[Params, Masks]:
  """Folds and prunes the dead and silent hidden units, to a fixed point, keeping shapes.

  Sweeps the hidden layers in network order; in each, the remaining units whose
  masked incoming slice is zero (dead) or whose masked outgoing slice is zero
  (silent) are pruned: the constants :math:`\\sigma(b_j) \\sum_t V_{t,j,:}` of the dead
  ones are folded into the next bias, then each such unit's incoming weights, bias and
  outgoing weights are masked (value 0). Sweeps repeat until one prunes nothing. A
  pruned unit outputs :math:`\\sigma(0)` into an all-zero outgoing slice, so the
  network computes the same function (up to float rounding of the folded biases), and
  :func:`delete_neurons` removes exactly these units. This is what the experiment
  runner uses: the model, optimiser state, checkpoints and compiled functions keep
  their shapes (and a vmapped seed sweep keeps one shape for all seeds).

  Args:
    params: chain params ``{"Conv_0": ..., "Dense_0": {"kernel", "bias"}, ...}``.
    masks: a mask tree of the same structure (bool leaves or ``None`` for dense
      leaves), or ``None`` (every leaf dense).
    activation: the hidden activation's name (see
      :func:`sparsejax.models.mlp.get_activation`), used for the fold.

  Returns:
    ``(params, masks)`` shaped like the inputs, pruned entries exactly zero.

  Raises:
    ValueError: if every unit of a hidden layer would be pruned (the message names
      the layer), or the trees are not a layer chain.
  """
  act = get_activation(activation)
  names = layer_names(params)
  if masks is not None:
    masks_lib.check_structure(masks, params)
  p = jax.tree.map(np.asarray, dict(params))
  m = (jax.tree.map(lambda x: np.ones(np.shape(x), bool), p) if masks is None else
       jax.tree.map(lambda x: None if x is None else np.asarray(x, bool), dict(masks),
                    is_leaf=lambda x: x is None))
  alive = {name: np.ones(_units(p, name), bool) for name in names[:-1]}
  changed = True
  while changed:
    changed = False
    for name, nxt in zip(names[:-1], names[1:]):
      dead, silent = _unit_status(p, m, name, nxt)
      remove = (dead | silent) & alive[name]
      if not remove.any():
        continue
      if not (alive[name] & ~remove).any():
        raise ValueError(
            f"delete_neurons would remove every unit of hidden layer {name!r} "
            f"({int((dead & alive[name]).sum())} of {int(alive[name].sum())} with no incoming "
            f"weights, {int((silent & alive[name]).sum())} with no outgoing weights)")
      p, m = _fold_dead(p, m, name, nxt, remove & dead & ~silent, act)
      p, m = _cut(p, m, name, nxt, remove)
      alive[name] &= ~remove
      changed = True
  return _to_device(p), _to_device(m)


def chain_model(params: Params, activation: str) -> tuple[nn.Module, jax.ShapeDtypeStruct]:
  """The :class:`~sparsejax.models.MLP` or :class:`~sparsejax.models.LeNet5Caffe` of chain
  params, and one input it takes (for LeNet-5, the image size its flatten implies)."""
  names = layer_names(params)
  units = [_units(params, name) for name in names]
  convs = [n for n in names if n.startswith("Conv_")]
  first = np.shape(params[names[0]]["kernel"])
  if not convs:
    return MLP(widths=(first[0], *units), activation=activation), jax.ShapeDtypeStruct(
        (1, first[0]), jnp.float32)
  if len(names) - len(convs) != 2:
    raise ValueError(f"a conv chain must end in two Dense layers (LeNet5Caffe), got {names}")
  side = math.isqrt(np.shape(params["Dense_0"]["kernel"])[0] // units[len(convs) - 1])
  for name in reversed(convs):  # VALID k x k convolution, then 2 x 2 max pooling
    side = 2 * side + np.shape(params[name]["kernel"])[0] - 1
  model = LeNet5Caffe(num_classes=units[-1], channels=tuple(units[:len(convs)]),
                      hidden=units[len(convs)], activation=activation)
  return model, jax.ShapeDtypeStruct((1, side, side, first[2]), jnp.float32)


def delete_neurons(params: Params, masks: Masks | None = None, *, activation: str,
                   extra_trees: Sequence[Params] = ()) -> NeuronDeletion:
  """Removes the dead and silent hidden units (neurons, channels), to a fixed point.

  :func:`fold_dead_neurons` folds and prunes them in place, and
  :func:`sparsejax.compaction.compact` removes the pruned units (every one has an
  all-zero outgoing slice). The masked network computes the same function before and
  after (up to float rounding of the folded biases). Host-side, outside ``jax.jit``:
  the shapes change.

  Args:
    params: chain params ``{"Conv_0": ..., "Dense_0": {"kernel", "bias"}, ...}``.
    masks: optional mask tree of the same structure (bool leaves or
      ``None`` for dense leaves).
    activation: the hidden activation's name (see
      :func:`sparsejax.models.mlp.get_activation`), used for the fold.
    extra_trees: further params-shaped trees (PMMP ``w``/``gamma``/``u``,
      Adam moments) to resize by the same index selection.

  Returns:
    A :class:`NeuronDeletion`; build the smaller model with
    :func:`smaller_model`.

  Raises:
    ValueError: if every unit of a hidden layer would be removed (the
      message names the layer), or the trees are not a layer chain.
  """
  folded, folded_masks = fold_dead_neurons(params, masks, activation=activation)
  model, example = chain_model(folded, activation)
  compacted = compact(model, {"params": folded}, folded_masks, example=example, gather=False)
  names = layer_names(params)
  kept = {}
  for group in compacted.groups:
    for name in names[:-1]:
      if Member(f"params/{name}/bias", 0) in group.group.members:
        kept[name] = group.kept
  small = compacted.variables["params"]
  widths = (int(example.shape[-1]),) + tuple(_units(small, name) for name in names)
  return NeuronDeletion(
      params=small,
      masks=None if masks is None else compacted.masks,
      widths=widths,
      kept_units=kept,
      extra_trees=tuple(None if tree is None else _to_device(compacted.shrink(tree, "params"))
                        for tree in extra_trees),
  )


def smaller_model(model: nn.Module, widths: Sequence[int]) -> nn.Module:
  """``model`` rebuilt with the unit counts ``widths`` of a :class:`NeuronDeletion`.

  Supports :class:`sparsejax.models.MLP` (``lenet_300_100`` included) and
  :class:`sparsejax.models.LeNet5Caffe`; ``ValueError`` for other models.
  """
  widths = tuple(int(w) for w in widths)
  if isinstance(model, MLP):
    return model.clone(widths=widths)
  if isinstance(model, LeNet5Caffe) and len(widths) == len(model.channels) + 3:
    return model.clone(channels=widths[1:-2], hidden=widths[-2])
  raise ValueError(f"smaller_model supports MLP and LeNet5Caffe, got {type(model).__name__} "
                   f"with widths {widths}")
