r"""Layer-wise sparsity budgets: how a global density is shared among the leaves.

A sparse network trained at an overall density :math:`d` (the kept fraction
of its prunable entries) need not keep :math:`d` of every layer: small
layers, whose every connection carries more of the signal, can be kept
denser and large ones sparser. :func:`leaf_densities` gives each prunable
leaf :math:`l` (with :math:`n_l` entries) a density :math:`d_l` such that

.. math::  \sum_l d_l\, n_l = d \sum_l n_l

over the *budgeted* leaves (every prunable leaf that no override or
``dense_first`` / ``dense_last`` fixes), by one of:

* ``"uniform"``: :math:`d_l = d`.
* ``"er"``, Erdős–Rényi (D. C. Mocanu et al., "Scalable training of
  artificial neural networks with adaptive sparse connectivity inspired by
  network science", Nature Communications 2018): a leaf of shape
  :math:`(\dots, n_\mathrm{in}, n_\mathrm{out})` scores

  .. math::  r_l = \Big(\frac{n_\mathrm{in} + n_\mathrm{out}}
                              {n_\mathrm{in}\, n_\mathrm{out}}\Big)^{p},

  the last two axes only.
* ``"erk"``, Erdős–Rényi-Kernel (U. Evci et al., "Rigging the lottery:
  making all tickets winners", ICML 2020, Sec. 3): every axis counts, so a
  convolution kernel :math:`(h, w, n_\mathrm{in}, n_\mathrm{out})` scores

  .. math::  r_l = \Big(\frac{h + w + n_\mathrm{in} + n_\mathrm{out}}
                              {h\, w\, n_\mathrm{in}\, n_\mathrm{out}}\Big)^{p}.

For both, a leaf with fewer than two axes scores (sum of its dims) / (product
of its dims), i.e. 1 for a vector, and a scalar counts as shape ``(1,)``;
:math:`p` is ``power`` (RigL's ``erk_power_scale``, default 1; :math:`p = 0`
gives ``"uniform"``). The densities are :math:`d_l = \epsilon\, r_l` with the
one :math:`\epsilon` that meets the budget,

.. math::  \epsilon = \frac{d \sum_l n_l - \sum_{l \in D} n_l}
                           {\sum_{l \notin D} r_l\, n_l},

where :math:`D` is the set of leaves made dense (:math:`d_l = 1`): starting
from :math:`D = \emptyset`, every leaf with :math:`\epsilon r_l > 1` joins
:math:`D` and :math:`\epsilon` is recomputed over the rest, until none exceeds
1 (RigL's appendix). :math:`\epsilon` never decreases from one round to the
next, so a leaf once dense stays dense and adding every offender at once
gives RigL's one-at-a-time result.

Leaves fixed by ``overrides``, ``dense_first`` or ``dense_last`` lie outside
the budget, as RigL's custom sparsity map: the target :math:`d` holds over
the remaining leaves. The densities are Python floats, to be turned into
counts with :func:`sparsejax.masks.keep_count` (``round(d_l n_l)``), as
:func:`budget_report` does.
"""

from __future__ import annotations

import fnmatch
import math
import numbers
import re
from typing import Any, Mapping, Sequence

import jax

from sparsejax import masks as masks_lib

Masks = Any
#: The layer-wise distributions :func:`leaf_densities` knows.
DISTRIBUTIONS = ("uniform", "er", "erk")


def _is_none(x) -> bool:
  return x is None


def _natural_key(name: str) -> tuple:
  """``Dense_2`` before ``Dense_10``: digit runs compare as numbers."""
  return tuple(int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name))


def _prunable_leaves(masks: Masks) -> tuple[list[tuple[str, Any]], Any]:
  """``([(path, leaf or None), ...], treedef)`` in flatten order."""
  flat, treedef = jax.tree_util.tree_flatten_with_path(masks, is_leaf=_is_none)
  leaves = []
  for path, leaf in flat:
    name = masks_lib.path_str(path)
    if leaf is not None and not hasattr(leaf, "shape"):
      raise TypeError(f"mask leaf {name!r} must be None or have a .shape (an array or a "
                      f"jax.ShapeDtypeStruct), got {type(leaf).__name__}")
    leaves.append((name, leaf))
  return leaves, treedef


def _check_fraction(name: str, value) -> float:
  if (isinstance(value, bool) or not isinstance(value, numbers.Real)
      or not 0.0 < value <= 1.0):
    raise ValueError(f"{name} must be a number in (0, 1], got {value!r}")
  return float(value)


def _raw_score(shape: tuple[int, ...], distribution: str, power: float) -> float:
  dims = shape if len(shape) else (1,)
  if distribution == "er" and len(dims) >= 2:
    dims = dims[-2:]
  return (sum(dims) / math.prod(dims)) ** power


def _scaled(raw: dict[str, float], sizes: dict[str, int], density: float) -> dict[str, float]:
  r""":math:`d_l = \min(1, \epsilon r_l)` with the dense set grown until it is stable."""
  target = density * sum(sizes.values())
  dense: set[str] = set()
  eps = 0.0
  while True:
    rest = [k for k in raw if k not in dense]
    if not rest:
      break
    eps = (target - sum(sizes[k] for k in dense)) / sum(raw[k] * sizes[k] for k in rest)
    over = [k for k in rest if eps * raw[k] > 1.0]
    if not over:
      break
    dense.update(over)
  return {k: 1.0 if k in dense else eps * raw[k] for k in raw}


def _network_order(names: list[str], order: Sequence[str] | None,
                   all_names: list[str]) -> list[str]:
  """The prunable leaves ``names`` in network order."""
  if order is None:
    return sorted(names, key=_natural_key)
  if isinstance(order, str) or not isinstance(order, Sequence):
    raise ValueError(f"order must be a sequence of leaf paths such as 'Dense_0/kernel', "
                     f"got {order!r}")
  known = set(all_names)
  for name in order:
    if name not in known:
      raise ValueError(f"order names {name!r}, which is not a leaf of the mask tree; "
                       f"leaves: {all_names}")
  prunable = set(names)
  ordered = [name for name in order if name in prunable]
  missing = [name for name in names if name not in set(ordered)]
  if missing:
    raise ValueError(f"order leaves out the prunable leaf {missing[0]!r}; it must list "
                     f"every prunable leaf: {names}")
  return ordered


def leaf_densities(masks: Masks, density: float, distribution: str = "erk", *,
                   power: float = 1.0,
                   overrides: Sequence[tuple[str, float]] | Mapping[str, float] = (),
                   dense_first: bool = False, dense_last: bool = False,
                   order: Sequence[str] | None = None) -> Masks:
  r"""The density :math:`d_l` of every prunable leaf for an overall density ``density``.

  See the module docstring for the distributions and the budget
  :math:`\sum_l d_l n_l = d \sum_l n_l` over the budgeted leaves.

  Args:
    masks: a mask tree; a leaf is ``None`` (not prunable) or anything with a
      ``.shape`` (a boolean mask, a parameter, a ``jax.ShapeDtypeStruct``).
    density: :math:`d`, the kept fraction of the budgeted entries, in (0, 1].
    distribution: one of :data:`DISTRIBUTIONS`.
    power: :math:`p \ge 0`, the exponent of the ER/ERK score (RigL's
      ``erk_power_scale``); ignored by ``"uniform"``.
    overrides: ``(pattern, density)`` pairs (or a mapping): the first pattern
      that matches a leaf's path ``Layer/leaf`` (a glob,
      :func:`fnmatch.fnmatchcase`, whose ``*`` also crosses ``/``) fixes its
      density, in (0, 1]. Every pattern must match some prunable leaf.
    dense_first: keep the first prunable leaf (in ``order``) dense.
    dense_last: keep the last prunable leaf (in ``order``) dense. These two
      take precedence over ``overrides``.
    order: the leaf paths in network order, used by ``dense_first`` and
      ``dense_last``; it may name ``None`` leaves too but must name every
      prunable one. Default: the flatten order sorted naturally, so
      ``Dense_2`` comes before ``Dense_10``.

  Returns:
    A tree of ``masks``' structure: a Python ``float`` per prunable leaf,
    ``None`` for the ``None`` leaves. Fixed leaves have their fixed density;
    a leaf without entries gets ``density``. If every prunable leaf is fixed
    there is no budget left and only the fixed densities are returned.

  Raises:
    ValueError: ``density``, ``distribution``, ``power``, an override or
      ``order`` is invalid, or an override pattern matches no prunable leaf.
    TypeError: a leaf is neither ``None`` nor has a ``.shape``.
  """
  density = _check_fraction("density", density)
  if distribution not in DISTRIBUTIONS:
    raise ValueError(f"distribution must be one of {DISTRIBUTIONS}, got {distribution!r}")
  if (isinstance(power, bool) or not isinstance(power, numbers.Real)
      or not math.isfinite(power) or power < 0):
    raise ValueError(f"power must be a finite number >= 0, got {power!r}")
  if isinstance(overrides, Mapping):
    overrides = tuple(overrides.items())
  checked = []
  for item in overrides:
    if not (isinstance(item, Sequence) and len(item) == 2 and isinstance(item[0], str)):
      raise ValueError(f"overrides must be (pattern, density) pairs with a glob string "
                       f"pattern, got {item!r}")
    checked.append((item[0], _check_fraction(f"overrides density for {item[0]!r}", item[1])))

  leaves, treedef = _prunable_leaves(masks)
  all_names = [name for name, _ in leaves]
  shapes = {name: tuple(int(s) for s in leaf.shape) for name, leaf in leaves
            if leaf is not None}
  names = list(shapes)

  fixed: dict[str, float] = {}
  for pattern, value in checked:
    hits = [name for name in names if fnmatch.fnmatchcase(name, pattern)]
    if not hits:
      raise ValueError(f"overrides pattern {pattern!r} matches no prunable leaf; "
                       f"prunable leaves: {names}")
    for name in hits:
      fixed.setdefault(name, value)
  if order is not None or dense_first or dense_last:
    ordered = _network_order(names, order, all_names)
    if ordered and dense_first:
      fixed[ordered[0]] = 1.0
    if ordered and dense_last:
      fixed[ordered[-1]] = 1.0

  free = [name for name in names if name not in fixed]
  sizes = {name: math.prod(shapes[name]) for name in free}
  empty = [name for name in free if sizes[name] == 0]
  budgeted = [name for name in free if sizes[name] > 0]
  if distribution == "uniform" or density == 1.0:
    result = {name: density for name in budgeted}
  else:
    raw = {name: _raw_score(shapes[name], distribution, power) for name in budgeted}
    result = _scaled(raw, {name: sizes[name] for name in budgeted}, density)
  result.update({name: density for name in empty})
  result.update(fixed)
  return jax.tree_util.tree_unflatten(
      treedef, [None if leaf is None else result[name] for name, leaf in leaves])


def budget_report(masks: Masks, densities: Masks) -> dict[str, dict[str, float]]:
  """Per-leaf sizes, densities and kept counts of a :func:`leaf_densities` result.

  Returns:
    ``{path: {"size": n_l, "density": d_l, "kept": round(d_l n_l)}, ...,
    "total": {"size": sum n_l, "kept": sum kept, "density": kept / size}}``
    over the prunable leaves (``None`` leaves are left out), the kept counts
    by :func:`sparsejax.masks.keep_count`.

  Raises:
    ValueError: the two trees differ in structure or in which leaves are ``None``.
  """
  leaves, treedef = _prunable_leaves(masks)
  flat, other = jax.tree_util.tree_flatten(densities, is_leaf=_is_none)
  if other != treedef:
    raise ValueError("densities must have the structure of masks (a leaf_densities result), "
                     f"got {other} for {treedef}")
  rows: dict[str, dict[str, float]] = {}
  kept_all = size_all = 0
  for (name, leaf), d in zip(leaves, flat):
    if (leaf is None) != (d is None):
      raise ValueError(f"leaf {name!r} is None in one of masks and densities only")
    if leaf is None:
      continue
    size = math.prod(int(s) for s in leaf.shape)
    kept = masks_lib.keep_count(float(d), size)
    rows[name] = {"size": size, "density": float(d), "kept": kept}
    kept_all += kept
    size_all += size
  rows["total"] = {"size": size_all, "kept": kept_all,
                   "density": kept_all / size_all if size_all else 1.0}
  return rows
