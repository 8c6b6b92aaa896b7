"""Pruning-at-initialisation scores: one score per parameter entry, larger is kept.

The criteria that simulated annealing is compared with (Sanchez and Reyes,
2020, EEE 198; reference notes ``jax_ecosystem_and_annealing.md``, section
2.4), as pure functions over parameter pytrees. ``initial`` are the weights
:math:`w_0` at initialisation, ``trained`` the weights :math:`w_K` after
``K`` epochs of dense training (``K = 0``: the same). A mask keeps the
top-scoring entries, over all prunable leaves together with
:func:`sparsejax.masks.global_top_k` (or one flat vector with
:func:`sparsejax.masks.top_k`); the mask is then applied to :math:`w_0`
(the rewind).

Per entry:

* :func:`lth_scores`: :math:`|w_K|`, the lottery-ticket criterion (Frankle
  and Carbin, ICLR 2019);
* :func:`deconst_scores`: :math:`|w_K| \\cdot 1[w_K w_0 \\ge 0]`, "large
  final, same sign" (Zhou et al., NeurIPS 2019): a weight whose sign flipped
  in training scores 0;
* :func:`snip_scores`: :math:`|\\partial L / \\partial w \\odot w|` on one
  batch, SNIP's connection sensitivity (Lee et al., ICLR 2019): for a mask
  :math:`c` multiplying :math:`w`, :math:`\\partial L / \\partial c =
  \\partial L / \\partial w \\cdot w` at :math:`c = 1`. SNIP divides by the
  sum of the scores; a common positive factor does not change the ranking,
  so it is left out.

Per output unit (filter) of a kernel, the last axis, from the means over the
other axes:

* :func:`filter_magnitude_scores`: :math:`\\mathrm{mean}\\,|w_K|` of the filter;
* :func:`magsign_scores`: :math:`\\mathrm{sign}(\\bar w_0) \\cdot \\bar w_K`
  with :math:`\\bar w` the filter's *signed* mean weight, a structured
  "large final, same sign".

Uniformly random masks with an exact count are
:func:`sparsejax.pruning.annealing.random_mask`.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

Params = Any


def lth_scores(trained: Params) -> Params:
  """:math:`|w_K|` per entry (lottery ticket)."""
  return jax.tree.map(jnp.abs, trained)


def deconst_scores(initial: Params, trained: Params) -> Params:
  """:math:`|w_K| \\cdot 1[w_K w_0 \\ge 0]` per entry (Deconst: large final, same sign)."""
  return jax.tree.map(lambda w_0, w_k: jnp.abs(w_k) * (w_k * w_0 >= 0), initial, trained)


def snip_scores(loss_fn: Callable[[Params, Any], jax.Array], params: Params, batch) -> Params:
  """:math:`|\\partial L / \\partial w \\odot w|` per entry (SNIP, unnormalised).

  Args:
    loss_fn: ``(params, batch) -> scalar`` loss.
    params: the weights the gradient is taken at (SNIP: the initial ones).
    batch: the data passed to ``loss_fn``.
  """
  grads = jax.grad(loss_fn)(params, batch)
  return jax.tree.map(lambda g, w: jnp.abs(g * w), grads, params)


def _filter_means(kernel: jax.Array) -> jax.Array:
  return jnp.mean(kernel, axis=tuple(range(kernel.ndim - 1)))


def filter_magnitude_scores(trained: Params) -> Params:
  """:math:`\\mathrm{mean}\\,|w_K|` per output unit of every kernel leaf (last axis)."""
  return jax.tree.map(lambda w_k: _filter_means(jnp.abs(w_k)), trained)


def magsign_scores(initial: Params, trained: Params) -> Params:
  """:math:`\\mathrm{sign}(\\bar w_0) \\cdot \\bar w_K` per output unit of every kernel leaf.

  :math:`\\bar w` is the signed mean of a unit's weights (MagSign).
  """
  return jax.tree.map(lambda w_0, w_k: jnp.sign(_filter_means(w_0)) * _filter_means(w_k),
                      initial, trained)
