r"""DeepHoyer's sparsity regularisers (Yang, Wen and Li, ICLR 2020), summed per tensor.

Reference notes: ``reference/deephoyer_and_constrained_l0.md``, section 1. Every
regulariser is a function of one tensor :math:`w`; the penalty is
``decay * sum over tensors``, so the ratios are per layer, never global.

Element-wise (``element.py``):

* L1: :math:`\sum_i |w_i|`;
* Hoyer: :math:`\|w\|_1 / \|w\|_2`;
* Hoyer-Square (HS): :math:`\|w\|_1^2 / \|w\|_2^2`, scale invariant, in
  :math:`[1, n]`;
* transformed L1 (TL1): :math:`\sum_i (a+1)|w_i| / (a+|w_i|)` (the code fixes
  :math:`a = 1`).

Structural (``structure.py``), over two families of groups of a kernel: for a
Dense kernel (Flax layout ``(in, out)``) the rows :math:`W_{j,:}` (an input
neuron's outgoing weights) and the columns :math:`W_{:,i}` (an output
neuron's incoming weights); for a conv kernel ``(kh, kw, in, out)`` one group
per input channel (axes 0, 1, 3) and one per filter (axes 0, 1, 2):

* group lasso: :math:`\sum_g \|w_g\|_2 + \sum_h \|w_h\|_2`;
* group Hoyer-Square: :math:`[(\sum_g \|w_g\|_2)^2 + (\sum_h \|w_h\|_2)^2] / \|W\|_F^2`.

The reference's MNIST CNN group lasso reuses the Dense code on 4-D kernels and
so groups (in, kh, kw) and (out, kh, kw) fibres instead of channels and
filters (its CIFAR code does it right); here both families are channels and
filters for every conv kernel (``docs/differences.md``).

**No NaN or infinity.** A tensor (or group) that is entirely zero contributes
0 and gets gradient 0: every norm is written so that neither it nor its
gradient divides by zero (:func:`safe_norm`), and :math:`|w|` as
:math:`w\,\mathrm{sign}(w)`, whose derivative is 0 at 0. The reference skips
tensors whose sum is zero; a zero tensor contributes 0 here too.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from sparsejax import masks as masks_lib
from sparsejax.objectives.base import (Objective, abs_sign, check_nonnegative, leaf_sum,
                                       weight_penalty)

ELEMENTWISE = ("l1", "hoyer", "hs", "tl1")
STRUCTURAL = ("group_lasso", "group_hs")
REGULARISERS = ELEMENTWISE + STRUCTURAL
TENSORS = ("all", "kernels")


def safe_norm(x: jax.Array, axis=None) -> jax.Array:
  """:math:`\\|x\\|_2` over ``axis`` with value and gradient 0 where ``x`` is all zero."""
  squares = leaf_sum(jnp.square(x)) if axis is None else jnp.sum(jnp.square(x), axis=axis)
  positive = squares > 0
  return jnp.where(positive, jnp.sqrt(jnp.where(positive, squares, 1.0)), 0.0)


def _ratio(numerator: jax.Array, denominator: jax.Array) -> jax.Array:
  """``numerator / denominator``, 0 (with gradient 0) where the denominator is 0."""
  positive = denominator > 0
  return jnp.where(positive, numerator / jnp.where(positive, denominator, 1.0), 0.0)


def l1(w: jax.Array) -> jax.Array:
  return leaf_sum(abs_sign(w))


def hoyer(w: jax.Array) -> jax.Array:
  """:math:`\\|w\\|_1 / \\|w\\|_2`."""
  return _ratio(l1(w), safe_norm(w))


def hoyer_square(w: jax.Array) -> jax.Array:
  """:math:`\\|w\\|_1^2 / \\|w\\|_2^2`."""
  return _ratio(jnp.square(l1(w)), leaf_sum(jnp.square(w)))


def transformed_l1(w: jax.Array, a: float = 1.0) -> jax.Array:
  """:math:`\\sum_i (a+1)|w_i| / (a+|w_i|)`, ``a > 0``."""
  magnitude = abs_sign(w)
  return leaf_sum((a + 1) * magnitude / (a + magnitude))


def group_axes(w: jax.Array) -> tuple[tuple[int, ...], tuple[int, ...]]:
  """The axes to reduce for the two group families of a kernel.

  Dense ``(in, out)``: ``((1,), (0,))`` (one group per input neuron, one per
  output neuron); conv ``(..., in, out)``: the spatial axes with ``out``
  (one group per input channel), then with ``in`` (one per filter).
  """
  if w.ndim < 2:
    raise ValueError(f"group regularisers need a kernel of >= 2 dimensions, got shape {w.shape}")
  spatial = tuple(range(w.ndim - 2))
  return spatial + (w.ndim - 1,), spatial + (w.ndim - 2,)


def group_norms(w: jax.Array) -> tuple[jax.Array, jax.Array]:
  """``(per input neuron or channel, per output neuron or filter)`` group norms."""
  by_input, by_output = group_axes(w)
  return safe_norm(w, axis=by_input), safe_norm(w, axis=by_output)


def group_lasso(w: jax.Array) -> jax.Array:
  """:math:`\\sum_g \\|w_g\\|_2 + \\sum_h \\|w_h\\|_2` over both group families."""
  inputs, outputs = group_norms(w)
  return jnp.sum(inputs) + jnp.sum(outputs)


def group_hoyer_square(w: jax.Array) -> jax.Array:
  """:math:`[(\\sum_g \\|w_g\\|)^2 + (\\sum_h \\|w_h\\|)^2] / \\|W\\|_F^2`."""
  inputs, outputs = group_norms(w)
  return _ratio(jnp.square(jnp.sum(inputs)) + jnp.square(jnp.sum(outputs)),
                jnp.sum(jnp.square(w)))


def per_tensor(name: str, a: float = 1.0) -> Callable[[jax.Array], jax.Array]:
  """The regulariser ``name`` (one of :data:`REGULARISERS`) of one tensor."""
  table = {"l1": l1, "hoyer": hoyer, "hs": hoyer_square,
           "tl1": lambda w: transformed_l1(w, a), "group_lasso": group_lasso,
           "group_hs": group_hoyer_square}
  if name not in table:
    raise ValueError(f"unknown regulariser {name!r}; accepted: {', '.join(REGULARISERS)}")
  return table[name]


def regularised_leaves(params, tensors: str):
  """The leaves a regulariser sums over: ``all`` parameters (biases included, the
  element-wise reference) or ``kernels`` (the structural reference); group
  regularisers take kernels of >= 2 dimensions only."""
  if tensors not in TENSORS:
    raise ValueError(f"tensors must be one of {TENSORS}, got {tensors!r}")
  if tensors == "all":
    return jax.tree.leaves(params)
  kernels = masks_lib.ones_like(params, masks_lib.kernels_only)
  return [leaf for leaf, mask in zip(jax.tree.leaves(params),
                                     jax.tree.leaves(kernels, is_leaf=lambda m: m is None))
          if mask is not None]


def deephoyer(name: str, decay: float, *, tensors: str = "all", a: float = 1.0) -> Objective:
  """``decay * sum over tensors of R(tensor)`` for DeepHoyer's regulariser ``name``.

  Args:
    name: ``l1``, ``hoyer``, ``hs``, ``tl1``, ``group_lasso`` or ``group_hs``.
    decay: the weight :math:`\\ge 0` (the reference's ``--decay``).
    tensors: ``all`` (every parameter, biases included) or ``kernels``; the
      group regularisers always act on the kernels (>= 2-D).
    a: transformed L1's parameter (the reference fixes 1).
  """
  check_nonnegative("decay", decay)
  if not a > 0:
    raise ValueError(f"a must be > 0, got {a}")
  regulariser = per_tensor(name, a)
  structural = name in STRUCTURAL

  def penalty(params):
    leaves = regularised_leaves(params, "kernels" if structural else tensors)
    if structural:
      leaves = [leaf for leaf in leaves if leaf.ndim >= 2]
    if not leaves:
      return jnp.zeros(())
    return decay * sum(regulariser(leaf) for leaf in leaves)

  return weight_penalty(penalty)
