r"""Mask structures: how one leaf's scores become a keep-mask.

Every sparse-training algorithm (pruning, SET, RigL, ...) ranks the entries
of a leaf by a score and keeps the best. A *structure* says what is kept or
dropped together, the *unit*, and is used in three steps,

.. math::  \text{scores} \xrightarrow{\ \mathrm{pool}\ } \text{unit scores}
           \xrightarrow{\ \mathrm{top}\ } \text{unit mask}
           \xrightarrow{\ \mathrm{expand}\ } \text{mask},

composed by :func:`keep_mask`. The structures:

* :class:`Unstructured`: a unit is an entry.
* :class:`NByM`: a unit is an entry, but of every group of :math:`m`
  consecutive entries along axis -2 (the input axis of a Flax kernel,
  ``(in, out)`` or ``(h, w, in, out)``) exactly :math:`n` are kept: the
  pattern of NVIDIA's 2:4 sparse tensor cores (A. Mishra et al.,
  "Accelerating sparse deep neural networks", arXiv:2104.08378, 2021; A. Zhou
  et al., "Learning N:M fine-grained structured sparse neural networks from
  scratch", ICLR 2021). Its density is :math:`n/m` whatever the budget.
* :class:`Block`: a unit is an :math:`r \times c` block of the last two axes
  (per spatial position of a convolution kernel), scored by its mean.
* :class:`Channel`: a unit is an output unit (the last axis: a neuron or a
  filter), scored by the mean over every other axis.

The top step keeps the ``n_keep`` highest units over the whole leaf (for
N:M, the ``n`` highest of each group); ties go to the lower index and a unit
scoring :math:`-\infty` or NaN is never kept, so an algorithm excludes
entries by scoring them :math:`-\infty`. Everything is traceable, with
``n_keep`` traced or not, and the structures are frozen, hashable
dataclasses, fit to close over or to pass as static arguments.

N:M kernels can be stored compressed (:func:`compress_nm`,
:func:`decompress_nm`, :func:`nm_memory`), in the layout of NVIDIA's 2:4
format up to the packing of the indices.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re
from typing import NamedTuple, Union

import jax
import jax.numpy as jnp
import numpy as np

from sparsejax import masks as masks_lib


def _shape(shape) -> tuple[int, ...]:
  return tuple(int(s) for s in shape)


def _check_int(name: str, value, low: int) -> None:
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
    raise ValueError(f"{name} must be an int >= {low}, got {value!r}")


def _reshape_mask(unit_mask, unit_shape: tuple[int, ...], shape: tuple[int, ...]) -> jax.Array:
  if tuple(jnp.shape(unit_mask)) != unit_shape:
    raise ValueError(f"unit mask of shape {tuple(jnp.shape(unit_mask))} does not fit a leaf "
                     f"of shape {shape}: expected unit shape {unit_shape}")
  return jnp.asarray(unit_mask, bool)


@jax.jit
def _top_raveled(unit_scores, n_keep) -> jax.Array:
  """:func:`sparsejax.masks.top_k` over the raveled units, in one compiled call."""
  unit_scores = jnp.asarray(unit_scores)
  return masks_lib.top_k(unit_scores.ravel(), n_keep).reshape(unit_scores.shape)


@dataclasses.dataclass(frozen=True)
class Unstructured:
  """Every entry is a unit: the plain top-``n_keep`` mask."""

  @property
  def fixed_density(self) -> None:
    """``None``: the density follows ``n_keep``."""
    return None

  def __str__(self) -> str:
    return "unstructured"

  def unit_shape(self, shape) -> tuple[int, ...]:
    """The shape of the unit scores of a leaf of shape ``shape``: the leaf's."""
    return _shape(shape)

  def unit_count(self, shape) -> int:
    """The number of units, here of entries."""
    return math.prod(self.unit_shape(shape))

  def pool(self, scores) -> jax.Array:
    """Identity: an entry's score is its unit's."""
    return jnp.asarray(scores)

  def expand(self, unit_mask, shape) -> jax.Array:
    """Identity (a boolean mask of shape ``shape``)."""
    shape = _shape(shape)
    return _reshape_mask(unit_mask, self.unit_shape(shape), shape)

  def top(self, unit_scores, n_keep) -> jax.Array:
    """The ``n_keep`` highest units (:func:`sparsejax.masks.top_k` on the raveled array)."""
    return _top_raveled(unit_scores, n_keep)


@dataclasses.dataclass(frozen=True)
class Channel:
  r"""A unit is an output unit (index of the last axis): a neuron or a filter.

  Its score is the mean over every other axis,
  :math:`s_j = \frac{1}{|I|}\sum_{i} s_{i, j}`; the unit scores have shape
  ``(out,)``.
  """

  @property
  def fixed_density(self) -> None:
    """``None``: the density follows ``n_keep``."""
    return None

  def __str__(self) -> str:
    return "channel"

  def _check(self, shape: tuple[int, ...]) -> None:
    if len(shape) < 1:
      raise ValueError(f"Channel needs a leaf with at least one axis, got shape {shape}")

  def unit_shape(self, shape) -> tuple[int, ...]:
    """``(shape[-1],)``."""
    shape = _shape(shape)
    self._check(shape)
    return shape[-1:]

  def unit_count(self, shape) -> int:
    """``shape[-1]``."""
    return self.unit_shape(shape)[0]

  def pool(self, scores) -> jax.Array:
    """The mean of ``scores`` over every axis but the last."""
    scores = jnp.asarray(scores)
    self._check(scores.shape)
    return jnp.mean(scores, axis=tuple(range(scores.ndim - 1)))

  def expand(self, unit_mask, shape) -> jax.Array:
    """The unit mask broadcast along every axis but the last."""
    shape = _shape(shape)
    return jnp.broadcast_to(_reshape_mask(unit_mask, self.unit_shape(shape), shape), shape)

  def top(self, unit_scores, n_keep) -> jax.Array:
    """The ``n_keep`` highest channels."""
    return _top_raveled(unit_scores, n_keep)


@dataclasses.dataclass(frozen=True)
class Block:
  r"""A unit is a ``rows`` :math:`\times` ``cols`` block of the last two axes.

  Blocks tile axes -2 (``rows`` at a time) and -1 (``cols``); any leading
  axes (a convolution kernel's :math:`h, w`) stay, so blocks are per spatial
  position. A block's score is the mean of its entries' scores; at an edge
  whose length is not a multiple of the block size the partial block is
  averaged over its real entries. A leaf of shape :math:`(\dots, R, C)` has
  unit scores of shape :math:`(\dots, \lceil R/r \rceil, \lceil C/c \rceil)`.

  Attributes:
    rows: the block's extent :math:`r \ge 1` along axis -2.
    cols: the block's extent :math:`c \ge 1` along axis -1.
  """
  rows: int
  cols: int

  def __post_init__(self):
    _check_int("Block rows", self.rows, 1)
    _check_int("Block cols", self.cols, 1)

  @property
  def fixed_density(self) -> None:
    """``None``: the density follows ``n_keep``."""
    return None

  def __str__(self) -> str:
    return f"block:{self.rows}x{self.cols}"

  def _check(self, shape: tuple[int, ...]) -> None:
    if len(shape) < 2:
      raise ValueError(f"Block needs a leaf with at least two axes, got shape {shape}")

  def unit_shape(self, shape) -> tuple[int, ...]:
    """``(..., ceil(R / rows), ceil(C / cols))``."""
    shape = _shape(shape)
    self._check(shape)
    return shape[:-2] + (-(-shape[-2] // self.rows), -(-shape[-1] // self.cols))

  def unit_count(self, shape) -> int:
    """The number of blocks."""
    return math.prod(self.unit_shape(shape))

  def pool(self, scores) -> jax.Array:
    """The mean score of each block (of its real entries at a partial edge)."""
    scores = jnp.asarray(scores)
    self._check(scores.shape)
    return _block_pool(scores, self)

  def expand(self, unit_mask, shape) -> jax.Array:
    """Each block's flag repeated over its entries (partial edge blocks cut)."""
    shape = _shape(shape)
    unit_mask = _reshape_mask(unit_mask, self.unit_shape(shape), shape)
    full = jnp.repeat(jnp.repeat(unit_mask, self.rows, axis=-2), self.cols, axis=-1)
    return full[..., :shape[-2], :shape[-1]]

  def top(self, unit_scores, n_keep) -> jax.Array:
    """The ``n_keep`` highest blocks over the whole leaf."""
    return _top_raveled(unit_scores, n_keep)


@functools.partial(jax.jit, static_argnums=1)
def _block_pool(scores: jax.Array, block: Block) -> jax.Array:
  """:meth:`Block.pool` in one compiled call."""
  shape = scores.shape
  units = block.unit_shape(shape)
  r, c = block.rows, block.cols
  pad = [(0, 0)] * (len(shape) - 2) + [(0, units[-2] * r - shape[-2]),
                                       (0, units[-1] * c - shape[-1])]
  blocks = jnp.pad(scores, pad).reshape(shape[:-2] + (units[-2], r, units[-1], c))
  total = jnp.sum(blocks, axis=(-3, -1))
  rows_in = np.minimum(r, shape[-2] - r * np.arange(units[-2]))
  cols_in = np.minimum(c, shape[-1] - c * np.arange(units[-1]))
  if not jnp.issubdtype(total.dtype, jnp.floating):
    total = total.astype(jnp.float32)
  return total / jnp.asarray(np.outer(rows_in, cols_in), total.dtype)


@dataclasses.dataclass(frozen=True)
class NByM:
  r"""N:M sparsity: at most ``n`` of every ``m`` consecutive entries along axis -2.

  Axis -2 is the input axis of a Flax kernel (``(in, out)`` Dense,
  ``(h, w, in, out)`` Conv), the reduction axis of :math:`y = x W`, as in
  NVIDIA's 2:4 format. Groups are ``m`` consecutive entries of axis -2 at a
  fixed index of every other axis; when its length is not a multiple of
  ``m`` the last group is partial and keeps :math:`\min(n, \text{size})`.
  Leaves need at least two axes.

  Attributes:
    n: the kept entries per group, :math:`1 \le n < m`.
    m: the group size.
  """
  n: int
  m: int

  def __post_init__(self):
    _check_int("NByM n", self.n, 1)
    _check_int("NByM m", self.m, 2)
    if self.n >= self.m:
      raise ValueError(f"NByM needs 1 <= n < m, got n={self.n}, m={self.m}")

  @property
  def fixed_density(self) -> float:
    """:math:`n / m`, the density whatever ``n_keep`` (partial groups aside)."""
    return self.n / self.m

  def __str__(self) -> str:
    return f"{self.n}:{self.m}"

  def _check(self, shape: tuple[int, ...]) -> None:
    if len(shape) < 2:
      raise ValueError(f"NByM needs a leaf with at least two axes (groups run along axis "
                       f"-2), got shape {shape}")

  def unit_shape(self, shape) -> tuple[int, ...]:
    """The leaf's shape (the units are entries)."""
    shape = _shape(shape)
    self._check(shape)
    return shape

  def unit_count(self, shape) -> int:
    """The number of entries."""
    return math.prod(self.unit_shape(shape))

  def pool(self, scores) -> jax.Array:
    """Identity."""
    scores = jnp.asarray(scores)
    self._check(scores.shape)
    return scores

  def expand(self, unit_mask, shape) -> jax.Array:
    """Identity (a boolean mask of shape ``shape``)."""
    shape = _shape(shape)
    return _reshape_mask(unit_mask, self.unit_shape(shape), shape)

  def groups(self, x, fill=0) -> jax.Array:
    r"""``x`` regrouped so that each group of ``m`` along axis -2 is the last axis.

    A leaf of shape :math:`(\dots, L, O)` gives :math:`(\dots, G, O, m)` with
    :math:`G = \lceil L/m \rceil`: entry ``[..., g, o, k]`` is
    ``x[..., g * m + k, o]``, and ``fill`` where :math:`g m + k \ge L`.
    :meth:`ungroup` is its inverse.
    """
    x = jnp.asarray(x)
    shape = x.shape
    self._check(shape)
    n_groups = -(-shape[-2] // self.m)
    pad = [(0, 0)] * (x.ndim - 2) + [(0, n_groups * self.m - shape[-2]), (0, 0)]
    x = jnp.pad(x, pad, constant_values=fill)
    x = x.reshape(shape[:-2] + (n_groups, self.m, shape[-1]))
    return jnp.swapaxes(x, -1, -2)

  def ungroup(self, g, shape) -> jax.Array:
    """The inverse of :meth:`groups`: back to ``shape``, the padding dropped."""
    shape = _shape(shape)
    self._check(shape)
    g = jnp.asarray(g)
    n_groups = -(-shape[-2] // self.m)
    expected = shape[:-2] + (n_groups, shape[-1], self.m)
    if g.shape != expected:
      raise ValueError(f"grouped array of shape {g.shape} does not fit a leaf of shape "
                       f"{shape} at {self}: expected {expected}")
    x = jnp.swapaxes(g, -1, -2).reshape(shape[:-2] + (n_groups * self.m, shape[-1]))
    return x[..., :shape[-2], :]

  def top(self, unit_scores, n_keep=None) -> jax.Array:
    r"""The ``n`` highest entries of each group; ``n_keep`` is ignored.

    Ties go to the lower index, an entry scoring :math:`-\infty` or NaN is
    never kept (its group then keeps fewer), and a partial last group keeps
    at most its size.
    """
    del n_keep
    unit_scores = jnp.asarray(unit_scores)
    self._check(unit_scores.shape)
    if not jnp.issubdtype(unit_scores.dtype, jnp.floating):
      unit_scores = unit_scores.astype(jnp.float32)
    return _nm_top(unit_scores, self)


@functools.partial(jax.jit, static_argnums=1)
def _nm_top(scores: jax.Array, structure: NByM) -> jax.Array:
  """:meth:`NByM.top` in one compiled call."""
  g = structure.groups(scores, fill=-jnp.inf)
  order = jnp.argsort(-g, axis=-1, stable=True)
  rank = jnp.argsort(order, axis=-1)
  return structure.ungroup((rank < structure.n) & (g > -jnp.inf), scores.shape)


#: Any of the mask structures.
Structure = Union[Unstructured, NByM, Block, Channel]

_FORMS = "'unstructured', 'N:M' (e.g. '2:4', 1 <= N < M), 'block:RxC' (e.g. 'block:4x4'), 'channel'"


def parse(text: str | Structure) -> Structure:
  """The structure that ``text`` names (a structure is returned as it is).

  Accepted forms (case and surrounding spaces ignored): ``"unstructured"``,
  ``"N:M"`` such as ``"2:4"`` (:math:`1 \\le N < M`), ``"block:RxC"`` such as
  ``"block:4x4"`` (:math:`R, C \\ge 1`), ``"channel"``. ``str(structure)``
  gives back the text.

  Raises:
    ValueError: any other text, naming the accepted forms.
  """
  if isinstance(text, (Unstructured, NByM, Block, Channel)):
    return text
  if not isinstance(text, str):
    raise ValueError(f"structure must be a string, one of {_FORMS}; got {text!r}")
  key = text.strip().lower()
  if key == "unstructured":
    return Unstructured()
  if key == "channel":
    return Channel()
  match = re.fullmatch(r"(\d+):(\d+)", key)
  if match:
    n, m = int(match[1]), int(match[2])
    if not 1 <= n < m:
      raise ValueError(f"structure {text!r}: N:M needs 1 <= N < M, got N={n}, M={m}")
    return NByM(n, m)
  match = re.fullmatch(r"block:(\d+)x(\d+)", key)
  if match:
    rows, cols = int(match[1]), int(match[2])
    if rows < 1 or cols < 1:
      raise ValueError(f"structure {text!r}: block:RxC needs R, C >= 1")
    return Block(rows, cols)
  raise ValueError(f"structure must be one of {_FORMS}; got {text!r}")


def keep_mask(structure: Structure, scores, n_keep=None) -> jax.Array:
  """``expand(top(pool(scores), n_keep), scores.shape)``: a leaf's boolean keep-mask.

  ``n_keep`` counts units (:meth:`unit_count` of them in all) and may be
  traced; :class:`NByM` ignores it.
  """
  scores = jnp.asarray(scores)
  return structure.expand(structure.top(structure.pool(scores), n_keep), scores.shape)


# --------------------------------------------------------------------------
# Compressed N:M storage


class NMCompressed(NamedTuple):
  r"""An N:M-sparse kernel stored as its kept values and their in-group positions.

  A kernel of shape :math:`(\dots, L, O)` has :math:`G = \lceil L/m \rceil`
  groups of ``m`` entries along axis -2 in every column; each group stores
  ``n`` values, in increasing position, and each value's position
  :math:`0, \dots, m-1` within its group:

  * ``values``: shape :math:`(\dots, G n, O)`; ``values[..., g * n + k, o]``
    is the ``k``-th stored value of group ``g`` of column ``o``;
  * ``indices``: ``uint8``, the same shape; its position in the group, so
    that the value sits at row ``g * m + indices[..., g * n + k, o]``.

  This is NVIDIA's 2:4 sparse tensor core layout (a half-width value array
  and 2 bits of metadata per kept value) up to the packing of the indices,
  which here take a byte each; :func:`nm_memory` counts them packed, at
  :math:`\lceil \log_2 m \rceil` bits.

  A pytree whose children are ``values`` and ``indices``; ``shape``, ``n``
  and ``m`` are static (auxiliary data), so that it passes through
  ``jax.jit`` and ``jax.tree.map`` whole.

  Attributes:
    values: the stored values.
    indices: their positions in their groups (``uint8``).
    shape: the dense kernel's shape.
    n: stored values per group.
    m: the group size.
  """
  values: jax.Array
  indices: jax.Array
  shape: tuple[int, ...]
  n: int
  m: int


jax.tree_util.register_pytree_node(
    NMCompressed,
    lambda c: ((c.values, c.indices), (c.shape, c.n, c.m)),
    lambda aux, children: NMCompressed(*children, *aux))


def _grouped_to_rows(g: jax.Array) -> jax.Array:
  """``(..., G, O, k)`` -> ``(..., G * k, O)``."""
  g = jnp.swapaxes(g, -1, -2)
  return g.reshape(g.shape[:-3] + (g.shape[-3] * g.shape[-2], g.shape[-1]))


def _rows_to_grouped(x: jax.Array, n_groups: int, k: int) -> jax.Array:
  """``(..., G * k, O)`` -> ``(..., G, O, k)``."""
  x = x.reshape(x.shape[:-2] + (n_groups, k, x.shape[-1]))
  return jnp.swapaxes(x, -1, -2)


def compress_nm(w, n: int, m: int) -> NMCompressed:
  """Stores an N:M-sparse kernel compressed (:class:`NMCompressed`).

  Each group (``m`` consecutive entries along axis -2) stores its nonzero
  entries; a group with fewer than ``n`` stores zeros from unused positions
  (negative zeros first), so :func:`decompress_nm` gives back ``w`` bit for
  bit. Only a group with ``n`` nonzeros and a ``-0.0`` as well loses the
  zero's sign.

  Args:
    w: a kernel with at least two axes whose every group has at most ``n``
      nonzeros.
    n: stored values per group, :math:`1 \\le n < m`.
    m: the group size, at most 256 (the indices are ``uint8``).

  Raises:
    ValueError: ``n``, ``m`` or ``w``'s shape is invalid, or (when ``w`` is
      concrete) a group has more than ``n`` nonzeros.
  """
  structure = NByM(n, m)
  if m > 256:
    raise ValueError(f"compress_nm stores uint8 indices, so m must be <= 256, got m={m}")
  w = jnp.asarray(w)
  structure.unit_shape(w.shape)  # at least two axes
  values, indices, worst = _compress(w, n, m)
  try:
    worst = int(worst)
  except (jax.errors.ConcretizationTypeError, jax.errors.TracerIntegerConversionError):
    worst = None  # traced: cannot be checked
  if worst is not None and worst > n:
    raise ValueError(f"compress_nm: a group of {m} entries along axis -2 of the kernel of "
                     f"shape {w.shape} has {worst} nonzeros, more than n={n}")
  return NMCompressed(values=values, indices=indices, shape=tuple(w.shape), n=n, m=m)


@functools.partial(jax.jit, static_argnums=(1, 2))
def _compress(w: jax.Array, n: int, m: int) -> tuple[jax.Array, jax.Array, jax.Array]:
  """``(values, indices, most nonzeros in a group)``, in one compiled call."""
  g = NByM(n, m).groups(w, fill=0)
  nonzero = g != 0
  worst = jnp.max(jnp.sum(nonzero, axis=-1), initial=0)
  # Which positions to store: nonzeros, then negative zeros, then the rest;
  # ties to the lower position, then stored in increasing position.
  priority = nonzero.astype(jnp.int32) * 2 + (jnp.signbit(g) & ~nonzero).astype(jnp.int32)
  chosen = jnp.sort(jnp.argsort(-priority, axis=-1, stable=True)[..., :n], axis=-1)
  values = jnp.take_along_axis(g, chosen, axis=-1)
  return _grouped_to_rows(values), _grouped_to_rows(chosen.astype(jnp.uint8)), worst


def decompress_nm(c: NMCompressed) -> jax.Array:
  """The dense kernel of an :class:`NMCompressed` (zeros where nothing is stored)."""
  return _decompress(jnp.asarray(c.values), jnp.asarray(c.indices), tuple(c.shape),
                     int(c.n), int(c.m))


@functools.partial(jax.jit, static_argnums=(2, 3, 4))
def _decompress(values: jax.Array, indices: jax.Array, shape: tuple[int, ...], n: int,
                m: int) -> jax.Array:
  n_groups = -(-shape[-2] // m)
  values = _rows_to_grouped(values, n_groups, n)
  indices = _rows_to_grouped(indices, n_groups, n).astype(jnp.int32)
  hit = indices[..., :, None] == jnp.arange(m)  # (..., G, O, n, m)
  which = jnp.argmax(hit, axis=-2)  # the stored value at each position, if any
  dense = jnp.where(jnp.any(hit, axis=-2),
                    jnp.take_along_axis(values, which, axis=-1),
                    jnp.zeros((), values.dtype))
  return NByM(n, m).ungroup(dense, shape)


def nm_memory(c: NMCompressed, dense_dtype=None) -> dict[str, float]:
  r"""Bytes of an :class:`NMCompressed` against its dense kernel.

  Args:
    c: the compressed kernel.
    dense_dtype: the dense kernel's dtype (default: that of ``c.values``).

  Returns:
    ``{"dense_bytes", "values_bytes", "index_bits", "index_bytes",
    "compressed_bytes", "ratio"}``: ``index_bits`` is
    :math:`\lceil \log_2 m \rceil`, the bits of one index packed;
    ``index_bytes`` = :math:`\lceil` (number of values) :math:`\times`
    ``index_bits`` / 8 :math:`\rceil`; ``compressed_bytes`` = ``values_bytes``
    + ``index_bytes``; ``ratio`` = compressed / dense. A 2:4 float32 kernel
    takes :math:`\frac12 + \frac{2}{4 \cdot 32} \cdot 2 = 0.53125` of its
    dense size.
  """
  dense_dtype = np.dtype(c.values.dtype if dense_dtype is None else dense_dtype)
  n_values = int(np.size(c.values))
  dense_bytes = math.prod(c.shape) * dense_dtype.itemsize
  values_bytes = n_values * np.dtype(c.values.dtype).itemsize
  index_bits = (int(c.m) - 1).bit_length()
  index_bytes = -(-n_values * index_bits // 8)
  compressed = values_bytes + index_bytes
  return {"dense_bytes": dense_bytes, "values_bytes": values_bytes, "index_bits": index_bits,
          "index_bytes": index_bytes, "compressed_bytes": compressed,
          "ratio": compressed / dense_bytes if dense_bytes else float("nan")}
