"""Mask pytrees: create, apply, count, compare.

A *mask tree* has the structure of a parameter tree. Each leaf is either a
boolean array of the parameter leaf's shape (``True`` = kept) or ``None``,
meaning the leaf is never pruned (dense). Every function here is pure and
works under ``jax.jit`` and ``jax.vmap``; the counting helpers also accept
NumPy arrays.

The score -> threshold/top-k -> mask pipeline follows jaxpruner
(google-research/jaxpruner, ``mask_calculator.py``), with ``None`` meaning
dense as there.

Conventions:

* **Prunable leaves.** By default only the Dense/Conv kernels get a mask
  (:func:`kernels_only`): a global magnitude prune over every leaf would
  zero the biases and normalisation parameters first. Other leaves opt in
  with ``prunable=every_leaf`` or a path predicate, :func:`prunable_paths`.
* **Argument order.** Functions that read or count a mask tree take
  ``(masks, params)`` (:func:`apply`, :func:`map_masked`,
  :func:`check_structure`, :func:`kept_count`, :func:`total_count`,
  :func:`summary`, :func:`density`); the parameters give the sizes, and a
  dense (``None``) leaf counts as fully kept. Functions that compute new
  masks from the parameters (or from scores) take ``(params, masks, ...)``,
  where ``masks`` is the mask being refined: its ``None`` leaves stay
  ``None`` and the entries it prunes stay pruned.
"""

from __future__ import annotations

import fnmatch
import numbers
import re
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

Params = Any
Masks = Any
#: Decides whether a leaf is prunable from its path (tuple of keys) and value.
PrunablePredicate = Callable[[tuple[str, ...], jax.Array], bool]


def _is_none(x) -> bool:
  return x is None


def _path_names(path) -> tuple[str, ...]:
  names = []
  for entry in path:
    for attr in ("key", "name", "idx"):
      if hasattr(entry, attr):
        names.append(str(getattr(entry, attr)))
        break
    else:
      names.append(str(entry))
  return tuple(names)


def path_str(path) -> str:
  """Renders a pytree key path as ``a/b/c``."""
  return "/".join(_path_names(path))


def every_leaf(path: tuple[str, ...], leaf: jax.Array) -> bool:
  """Predicate: every parameter is prunable (biases, BatchNorm included).

  This is the convention of the efficient-compression reference, whose
  regularisers and ``l0_norm`` cover every parameter array; runs select it
  with ``config.prunable="all"``.
  """
  del path, leaf
  return True


def kernels_only(path: tuple[str, ...], leaf: jax.Array) -> bool:
  """Predicate: only Dense/Conv kernels (leaves named ``kernel``) are prunable.

  The library's default prunable set.
  """
  del leaf
  return bool(path) and path[-1] == "kernel"


#: The named prunable sets of a run's ``prunable`` field.
NAMED_PRUNABLE = {"all": every_leaf, "kernels": kernels_only}


def named_prunable(name: str) -> PrunablePredicate:
  """The predicate of a named prunable set: ``"all"`` (:func:`every_leaf`) or
  ``"kernels"`` (:func:`kernels_only`)."""
  if name not in NAMED_PRUNABLE:
    raise ValueError(f"prunable must be one of {tuple(NAMED_PRUNABLE)}, got {name!r}")
  return NAMED_PRUNABLE[name]


def prunable_paths(*patterns: str | re.Pattern) -> PrunablePredicate:
  """Predicate: the leaves whose path ``Layer/leaf`` matches one of ``patterns``.

  A string is a glob (:func:`fnmatch.fnmatchcase`; ``*`` also crosses
  ``/``), a compiled regular expression must match the whole path, e.g.
  ``prunable_paths("*/kernel", re.compile(r"Dense_\\d+/bias"))`` for every
  kernel and the Dense biases.

  Raises:
    ValueError: no pattern given.
    TypeError: a pattern is neither a string nor a compiled ``re.Pattern``.
  """
  if not patterns:
    raise ValueError("prunable_paths needs at least one pattern (a glob string or a "
                     "compiled re.Pattern)")
  for pattern in patterns:
    if not isinstance(pattern, (str, re.Pattern)):
      raise TypeError(f"patterns must be glob strings or compiled re.Pattern objects, got "
                      f"{pattern!r}")

  def matches(path: tuple[str, ...], leaf: jax.Array) -> bool:
    del leaf
    name = "/".join(path)
    return any(fnmatch.fnmatchcase(name, p) if isinstance(p, str) else p.fullmatch(name)
               for p in patterns)
  return matches


def check_structure(masks: Masks, params: Params) -> None:
  """Raises ``ValueError`` naming the first path where masks and params differ.

  A mask leaf must be ``None`` or have the shape of its parameter leaf.
  """
  mask_leaves = jax.tree_util.tree_flatten_with_path(masks, is_leaf=_is_none)[0]
  param_leaves = jax.tree_util.tree_flatten_with_path(params)[0]
  mask_paths = {path_str(p): m for p, m in mask_leaves}
  param_paths = {path_str(p): v for p, v in param_leaves}
  missing = sorted(set(param_paths) - set(mask_paths))
  extra = sorted(set(mask_paths) - set(param_paths))
  if missing:
    raise ValueError(f"mask tree has no entry for parameter {missing[0]!r}")
  if extra:
    raise ValueError(f"mask tree has entry {extra[0]!r} with no parameter")
  for name, mask in mask_paths.items():
    if mask is None:
      continue
    if tuple(np.shape(mask)) != tuple(np.shape(param_paths[name])):
      raise ValueError(
          f"mask {name!r} has shape {tuple(np.shape(mask))}, parameter has "
          f"{tuple(np.shape(param_paths[name]))}")


def map_masked(fn: Callable, masks: Masks, params: Params, *rest) -> Any:
  """``jax.tree.map(fn, masks, params, *rest)`` with ``None`` masks as leaves.

  ``fn(mask, param, *rest)`` receives ``mask=None`` for dense leaves. The
  structures are checked first so a mismatch names its path.
  """
  check_structure(masks, params)
  return jax.tree.map(fn, masks, params, *rest, is_leaf=_is_none)


def ones_like(params: Params, prunable: PrunablePredicate = kernels_only) -> Masks:
  """All-``True`` masks for prunable leaves (by default the kernels), ``None`` for the others."""
  def make(path, leaf):
    if prunable(_path_names(path), leaf):
      return jnp.ones(jnp.shape(leaf), dtype=bool)
    return None
  return jax.tree_util.tree_map_with_path(make, params)


def apply(masks: Masks, params: Params) -> Params:
  """Zeroes the pruned entries: ``where(mask, param, 0)`` leaf by leaf."""
  return map_masked(
      lambda m, p: p if m is None else jnp.where(m, p, jnp.zeros_like(p)),
      masks, params)


def logical_and(a: Masks, b: Masks) -> Masks:
  """Entry-wise AND of two mask trees; ``None`` acts as all-``True``."""
  def both(x, y):
    if x is None:
      return y
    if y is None:
      return x
    return jnp.logical_and(x, y)
  return jax.tree.map(both, a, b, is_leaf=_is_none)


def from_nonzero(params: Params, masks: Masks | None = None) -> Masks:
  """Masks keeping exactly the nonzero entries (of the prunable leaves).

  With ``masks`` given, its ``None`` leaves stay ``None``.
  """
  if masks is None:
    return jax.tree.map(lambda p: p != 0, params)
  return map_masked(lambda m, p: None if m is None else p != 0, masks, params)


# --------------------------------------------------------------------------
# Counting


def _leaf_counts(masks: Masks, params: Params) -> dict[str, tuple[int, int]]:
  check_structure(masks, params)
  mask_leaves = jax.tree_util.tree_flatten_with_path(masks, is_leaf=_is_none)[0]
  param_leaves = jax.tree_util.tree_leaves(params)
  counts = {}
  for (path, mask), param in zip(mask_leaves, param_leaves):
    total = int(np.size(param))
    kept = total if mask is None else int(np.count_nonzero(np.asarray(mask)))
    counts[path_str(path)] = (kept, total)
  return counts


def kept_count(masks: Masks, params: Params) -> jax.Array:
  """Number of kept entries, dense (``None``) leaves counting as fully kept (traceable)."""
  check_structure(masks, params)
  flat_masks = jax.tree_util.tree_flatten(masks, is_leaf=_is_none)[0]
  kept = jnp.zeros((), jnp.int32)
  for m, p in zip(flat_masks, jax.tree_util.tree_leaves(params)):
    kept = kept + (jnp.size(p) if m is None else jnp.sum(m, dtype=jnp.int32))
  return kept


def total_count(masks: Masks, params: Params) -> int:
  """Number of entries, prunable or dense: the denominator of :func:`density`."""
  check_structure(masks, params)
  return int(sum(np.size(p) for p in jax.tree_util.tree_leaves(params)))


def summary(masks: Masks, params: Params) -> dict[str, dict[str, float]]:
  """Per-leaf and overall kept/total counts, density and compression ratio.

  Returns ``{path: {kept, total, density, compression}, ..., "total": {...}}``
  where density = kept / total and compression = total / kept (``inf`` when
  nothing is kept). Dense leaves count as fully kept.
  """
  rows = {}
  all_kept = all_total = 0
  for name, (kept, total) in _leaf_counts(masks, params).items():
    rows[name] = _row(kept, total)
    all_kept += kept
    all_total += total
  rows["total"] = _row(all_kept, all_total)
  return rows


def _row(kept: int, total: int) -> dict[str, float]:
  return {
      "kept": kept,
      "total": total,
      "density": kept / total if total else 1.0,
      "compression": total / kept if kept else float("inf"),
  }


def density(masks: Masks, params: Params) -> float:
  """Overall fraction of kept entries (dense leaves count as kept)."""
  return summary(masks, params)["total"]["density"]


# --------------------------------------------------------------------------
# Score (top-k) and magnitude masks


def global_magnitude_threshold(params: Params, masks: Masks, threshold) -> Masks:
  """Keeps ``|w| >= threshold`` in every prunable leaf (one global threshold).

  Entries already pruned stay pruned. Traceable in ``threshold``, so it serves
  TAMADE's search.
  """
  return map_masked(
      lambda m, p: None if m is None else jnp.logical_and(m, jnp.abs(p) >= threshold),
      masks, params)


def flatten_prunable(tree: Params, masks: Masks) -> jax.Array:
  """The entries of ``tree``'s prunable leaves (``masks`` not ``None``), raveled and
  concatenated in leaf order; :func:`unflatten_like` is its inverse."""
  leaves = map_masked(lambda m, p: None if m is None else jnp.ravel(p), masks, tree)
  return jnp.concatenate(jax.tree_util.tree_leaves(leaves))


def _check_density(density) -> None:
  """Rejects a concrete density outside (0, 1] (a traced one cannot be checked)."""
  if isinstance(density, numbers.Real) and not 0.0 < density <= 1.0:
    raise ValueError(f"density must be in (0, 1], got {density}")


def keep_count(density, n: int) -> int | jax.Array:
  """``round(density * n)``: how many of ``n`` entries a kept fraction ``density`` keeps.

  A Python or NumPy number gives an ``int`` (float64 product, halves to
  even); an array, traced or not, gives an int32 array computed in its
  dtype, so that one compiled function serves every density.
  """
  if isinstance(density, numbers.Real):
    return int(round(density * n))
  return jnp.round(density * n).astype(jnp.int32)


def _order_keys(scores: jax.Array) -> tuple[jax.Array, int]:
  """Unsigned integers in the order of the float ``scores`` (NaN as ``-inf``, -0 as +0).

  The usual radix-sort key: a non-negative float's bits with the sign bit
  set, a negative float's bits inverted, so that integer and float order agree.
  """
  if scores.dtype not in (jnp.float32, jnp.float64):
    scores = scores.astype(jnp.float32)
  bits = jnp.finfo(scores.dtype).bits
  utype = jnp.uint64 if bits == 64 else jnp.uint32
  clean = jnp.where(jnp.isnan(scores), -jnp.inf, scores) + jnp.zeros((), scores.dtype)
  raw = jax.lax.bitcast_convert_type(clean, utype)
  sign = jnp.asarray(1 << (bits - 1), utype)
  return jnp.where(raw & sign, ~raw, raw | sign), bits


def top_k(scores: jax.Array, n_keep) -> jax.Array:
  """``True`` for the ``n_keep`` largest entries of the 1-D ``scores``.

  ``n_keep`` may be traced. Ties go to the lower index (jaxpruner's top-k);
  an entry scoring ``-inf`` or NaN is never kept.

  Without a sort: the ``n_keep``-th largest score :math:`v` is found by a
  bisection over the scores' order-preserving integer keys (32 passes over
  the entries in float32, 64 in float64), then the entries above :math:`v`
  are kept and those equal to :math:`v` in index order until ``n_keep``;
  XLA's CPU sort of a LeNet-300-100 kernel takes about 20 times as long.
  """
  key, bits = _order_keys(scores)
  utype, ctype = key.dtype, (jnp.int64 if bits == 64 else jnp.int32)
  k = jnp.asarray(n_keep).astype(ctype)

  def bisect(_, bounds):
    # Invariant: at least k keys are >= lo (while k <= size), fewer than k are > hi.
    lo, hi = bounds
    width = hi - lo
    mid = lo + width // 2 + width % 2
    enough = jnp.sum(key >= mid, dtype=ctype) >= k
    return jnp.where(enough, mid, lo), jnp.where(enough, hi, mid - 1)

  start = (jnp.zeros((), utype), jnp.asarray(np.iinfo(np.dtype(utype)).max, utype))
  kth, _ = jax.lax.fori_loop(0, bits, bisect, start)
  above, tied = key > kth, key == kth
  room = k - jnp.sum(above, dtype=ctype)
  keep = above | (tied & (jnp.cumsum(tied, dtype=ctype) <= room))
  return keep & (k > 0) & (scores > -jnp.inf)


def global_top_k(scores: Params, masks: Masks, n_keep) -> Masks:
  """Keeps the ``n_keep`` highest-scoring entries over all prunable leaves together.

  The score -> top-k -> mask step of jaxpruner's global pruners (without
  their per-leaf normalisation of the scores): ``scores`` has the structure
  of the parameters, one score per entry (larger is kept); ``n_keep`` may be
  traced. Ties go to the lower index in leaf order;
  entries that ``masks`` prunes are never revived and its ``None`` leaves
  stay ``None``.
  """
  flat = flatten_prunable(map_masked(
      lambda m, s: s if m is None else jnp.where(m, s, -jnp.inf), masks, scores), masks)
  return unflatten_like(top_k(flat, n_keep), masks)


#: How :func:`top_density` ranks: all prunable leaves together, or each leaf alone.
SCOPES = ("global", "layer")


def top_density(scores: Params, masks: Masks, density, scope: str = "global") -> Masks:
  """Keeps the highest-scoring ``density`` of the prunable entries.

  ``scope="global"``: :func:`keep_count` ``(density, n)`` entries over all
  prunable (non-``None``) leaves together (:func:`global_top_k`);
  ``"layer"``: ``keep_count(density, n_l)`` in each leaf. Fewer stay if fewer
  are still kept: entries already pruned are never revived. Ties go to the
  lower index, as jaxpruner's top-k. ``density`` may be traced (Zhu & Gupta's
  gradual schedule).
  """
  _check_density(density)
  if scope == "global":
    n = sum(np.size(m) for m in jax.tree_util.tree_leaves(masks))
    return global_top_k(scores, masks, keep_count(density, n))
  if scope != "layer":
    raise ValueError(f"scope must be one of {SCOPES}, got {scope!r}")
  return map_masked(
      lambda m, s: None if m is None else top_k(jnp.where(m, s, -jnp.inf).ravel(),
                                                keep_count(density, s.size)).reshape(s.shape),
      masks, scores)


def global_magnitude_density(params: Params, masks: Masks, density) -> Masks:
  """Keeps the largest-|w| ``density`` of the prunable entries over all leaves together
  (:func:`top_density`)."""
  return top_density(jax.tree.map(jnp.abs, params), masks, density, "global")


def unflatten_like(flat: jax.Array, masks: Masks) -> Masks:
  """A flat vector back onto the prunable leaves of ``masks`` (``None`` leaves stay)."""
  leaves, treedef = jax.tree_util.tree_flatten(masks, is_leaf=_is_none)
  out, offset = [], 0
  for m in leaves:
    if m is None:
      out.append(None)
      continue
    out.append(flat[offset:offset + m.size].reshape(m.shape))
    offset += m.size
  return jax.tree_util.tree_unflatten(treedef, out)


def per_leaf_fraction(params: Params, masks: Masks, density) -> Masks:
  """Keeps the top ``density`` fraction by |w| within each prunable leaf (:func:`top_density`)."""
  return top_density(jax.tree.map(jnp.abs, params), masks, density, "layer")


def std_ratio(params: Params, masks: Masks, s: float) -> Masks:
  """Prunes ``|w| < s * std(leaf)`` per leaf (DeepHoyer's std-based rule).

  The standard deviation is that of the whole leaf, as in Han et al. (2015)
  and the DeepHoyer code.
  """
  return map_masked(
      lambda m, p: None if m is None else jnp.logical_and(m, jnp.abs(p) >= s * jnp.std(p)),
      masks, params)


# --------------------------------------------------------------------------
# Structured (unit) masks


def expand_unit_mask(unit_mask: jax.Array, leaf: jax.Array, axis: int) -> jax.Array:
  """Broadcasts a per-unit boolean vector along ``axis`` of ``leaf``'s shape."""
  axis = axis % jnp.ndim(leaf)
  shape = [1] * jnp.ndim(leaf)
  shape[axis] = jnp.shape(leaf)[axis]
  if unit_mask.shape != (jnp.shape(leaf)[axis],):
    raise ValueError(
        f"unit mask of shape {unit_mask.shape} does not match axis {axis} of "
        f"a leaf of shape {jnp.shape(leaf)}")
  return jnp.broadcast_to(unit_mask.reshape(shape), jnp.shape(leaf))


def unit_masks(params: Params, units: Mapping[str, jax.Array],
               covers: Mapping[str, Sequence[tuple[str, int]]],
               masks: Masks | None = None) -> Masks:
  """Expands per-unit masks onto every weight leaf each unit covers.

  Args:
    params: the parameter tree.
    units: ``{unit_name: bool[n_units]}``, True = unit kept.
    covers: ``{unit_name: [(leaf_path, axis), ...]}``: the leaves (``a/b/c``
      paths) a unit owns and the axis that indexes the units there, e.g. a
      Dense layer's output neurons own ``("Dense_0/kernel", -1)``,
      ``("Dense_0/bias", 0)`` and the next layer's ``("Dense_1/kernel", 0)``.
    masks: masks to intersect with (default :func:`ones_like`: the kernels);
      a covered leaf whose mask is ``None`` gets one.

  Returns:
    The mask tree with every covered entry of a pruned unit set to False.
  """
  if masks is None:
    masks = ones_like(params)
  by_path: dict[str, list[tuple[jax.Array, int]]] = {}
  for name, entries in covers.items():
    if name not in units:
      raise ValueError(f"no unit mask given for unit group {name!r}; "
                       f"groups given: {sorted(units)}")
    for leaf_path, axis in entries:
      by_path.setdefault(leaf_path, []).append((jnp.asarray(units[name], bool), axis))
  known = {path_str(p) for p, _ in jax.tree_util.tree_flatten_with_path(params)[0]}
  unknown = sorted(set(by_path) - known)
  if unknown:
    raise ValueError(f"unit cover names unknown parameter {unknown[0]!r}")

  def expand(path, m, p):
    entries = by_path.get(path_str(path))
    if not entries:
      return m
    out = jnp.ones(jnp.shape(p), bool) if m is None else m
    for unit_mask, axis in entries:
      out = jnp.logical_and(out, expand_unit_mask(unit_mask, p, axis))
    return out
  check_structure(masks, params)
  return jax.tree_util.tree_map_with_path(expand, masks, params, is_leaf=_is_none)


# --------------------------------------------------------------------------
# Comparisons


def _flat_bool(masks: Masks) -> jax.Array:
  return jnp.concatenate([jnp.ravel(m) for m in jax.tree_util.tree_leaves(masks)])


def overlap(a: Masks, b: Masks) -> jax.Array:
  """Intersection over union of the kept entries of two mask trees."""
  x, y = _flat_bool(a), _flat_bool(b)
  union = jnp.sum(x | y)
  return jnp.where(union > 0, jnp.sum(x & y) / jnp.maximum(union, 1), 1.0)


def hamming(a: Masks, b: Masks) -> jax.Array:
  """Number of entries on which two mask trees differ."""
  return jnp.sum(_flat_bool(a) != _flat_bool(b))


def cosine_similarity(a: Masks, b: Masks) -> jax.Array:
  """Cosine similarity of two masks as 0/1 vectors: |a & b| / sqrt(|a| |b|)."""
  x = _flat_bool(a).astype(jnp.float32)
  y = _flat_bool(b).astype(jnp.float32)
  denom = jnp.sqrt(jnp.sum(x) * jnp.sum(y))
  return jnp.where(denom > 0, jnp.dot(x, y) / jnp.maximum(denom, 1e-30), 0.0)
