"""The return type of every data set: train / val / test ``(x, y)`` pairs.

A data set is a :class:`Splits` of three :class:`Split` pairs of arrays placed
on the default device, so that a jitted training loop can gather its batches
by indexing (``x[idx]``) without returning to the host. ``Splits`` holds arrays
only, so it is a pytree that passes through ``jax.jit`` and ``jax.vmap`` as it
is; metadata (classes, input shape) lives with the data set's description
(:func:`sparsejax.data.dataset_info`).

The validation and training splits of the image data sets are drawn from the
official training set by a seeded permutation (:func:`train_val_indices`), as
in the efficient-compression reference (5,000 and 45,000 out of 50,000 or
60,000).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import numpy as np


class Split(NamedTuple):
  """Inputs and targets of one split; unpacks as ``x, y = split``.

  Attributes:
    x: inputs, ``(n, ...)`` (``(n, H, W, C)`` images, ``(n, d)`` vectors).
    y: targets, ``(n,)`` int32 class labels or ``(n, d_out)`` float
      regression targets.
  """
  x: jax.Array
  y: jax.Array


class Splits(NamedTuple):
  """The three splits of a data set.

  Attributes:
    train: the data the parameters are fitted on.
    val: held-out data for model selection and convergence checks.
    test: held-out data reported once at the end.
  """
  train: Split
  val: Split
  test: Split


def train_val_indices(n: int, n_val: int, seed: int,
                      n_train: int | None = None) -> tuple[np.ndarray, np.ndarray]:
  """Picks disjoint training and validation indices out of ``range(n)``.

  A permutation ``pi`` of ``range(n)`` is drawn with
  ``np.random.default_rng(seed)``; the validation indices are ``pi[:n_val]``
  and the training indices ``pi[n_val:n_val + n_train]``, each returned in
  increasing order, so the seed decides which examples are used while both
  splits keep the order of the source. With ``n_train=None`` the two sets
  partition ``range(n)``.

  Args:
    n: number of examples to choose from.
    n_val: size of the validation split, ``0 <= n_val < n``.
    seed: seed of the permutation.
    n_train: size of the training split, ``1 <= n_train <= n - n_val``;
      ``None`` for all ``n - n_val`` remaining examples.

  Returns:
    ``(train_indices, val_indices)``, disjoint sorted int64 arrays.

  Raises:
    ValueError: if a size is out of range.
  """
  if not 0 <= n_val < n:
    raise ValueError(f"n_val must be in [0, {n}), got {n_val}")
  if n_train is None:
    n_train = n - n_val
  if not 1 <= n_train <= n - n_val:
    raise ValueError(f"n_train must be in [1, {n - n_val}] (n - n_val), got {n_train}")
  perm = np.random.default_rng(seed).permutation(n)
  return np.sort(perm[n_val:n_val + n_train]), np.sort(perm[:n_val])
