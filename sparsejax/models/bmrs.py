"""The small networks of BMRS: a tanh MLP and a channel-scaled LeNet-5.

Wright, Igel & Selvan (NeurIPS 2024), "BMRS: Bayesian Model Reduction for
Structured Pruning", train these from scratch on 32x32 images (MNIST and
Fashion-MNIST resized to 32x32 with one channel, CIFAR-10 with three).

**MLP** (:func:`bmrs_mlp`)::

  flatten (32 * 32 * C)
  Dense_0            in_dim -> h,  tanh, gate
  Dense_1 ... Dense_L     h -> h,  tanh, gate      (L = n_layers)
  Dense_{L+1}             h -> num_classes

``n_layers + 1`` gate sites ``Dense_0 ... Dense_L`` of ``h`` units; with the
defaults (``n_layers=5``, ``h=50``, ``in_dim=1024``) 64,510 parameters
(3072 inputs for CIFAR-10: 166,910).

**LeNet-5** (:class:`BMRSLeNet5`, LeCun et al., 1998, with every width
multiplied by the number of input channels ``C``)::

  Conv_0  5x5, C -> 6C, VALID, relu, gate    ->  max-pool 2x2   (32 -> 28 -> 14)
  Conv_1  5x5, 6C -> 16C, VALID, relu, gate  ->  max-pool 2x2   (14 -> 10 -> 5)
  flatten (5 * 5 * 16C = 400C, row-major over (H, W, C))
  Dense_0 400C -> 120C, relu, gate
  Dense_1 120C -> 84C, relu, gate
  Dense_2 84C -> num_classes

61,706 parameters for ``C = 1`` (widths 6/16/120/84) and 548,878 for
``C = 3`` (18/48/360/252). Gate sites ``Conv_0``, ``Conv_1``, ``Dense_0``,
``Dense_1``. The model contract (gates, sites, covers) is described in
:mod:`sparsejax.models.mlp`.
"""

from __future__ import annotations

from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp

from sparsejax.models.conv import Conv
from sparsejax.models.mlp import MLP, Dtype, apply_gate, check_gates, flatten
from sparsejax.models.pooling import max_pool

#: LeNet-5 widths per input channel: conv channels, then hidden Dense units.
LENET5_WIDTHS = (6, 16, 120, 84)
#: Side of the LeNet-5 input images.
LENET5_IMAGE_SIZE = 32


def bmrs_mlp(n_layers: int = 5, hidden_dim: int = 50, in_dim: int = 1024,
             num_classes: int = 10, **kwargs) -> MLP:
  """The BMRS tanh MLP: ``MLP((in_dim, hidden_dim x (n_layers + 1), num_classes))``.

  Args:
    n_layers: number of hidden-to-hidden layers; the network has
      ``n_layers + 1`` hidden (gated) layers.
    hidden_dim: width of every hidden layer.
    in_dim: input features: 1024 for 32x32 MNIST / Fashion-MNIST, 3072 for
      CIFAR-10.
    num_classes: number of outputs.
    **kwargs: further :class:`~sparsejax.models.mlp.MLP` fields (``dtype``,
      ``param_dtype``).
  """
  if n_layers < 0:
    raise ValueError(f"n_layers must be >= 0, got {n_layers}")
  widths = (in_dim,) + (hidden_dim,) * (n_layers + 1) + (num_classes,)
  return MLP(widths=widths, activation="tanh", **kwargs)


class BMRSLeNet5(nn.Module):
  """LeNet-5 for 32x32 inputs with widths ``6C, 16C, 120C, 84C`` (module docstring).

  Attributes:
    in_channels: input channels ``C`` (1 for MNIST, 3 for CIFAR-10); every
      width scales with it.
    num_classes: number of outputs.
    dtype: computation dtype.
    param_dtype: parameter dtype.
  """
  in_channels: int = 1
  num_classes: int = 10
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.nowrap
  def _widths(self) -> tuple[int, ...]:
    return tuple(w * self.in_channels for w in LENET5_WIDTHS)

  @nn.nowrap
  def gate_sites(self) -> dict[str, int]:
    """``{"Conv_0": 6C, "Conv_1": 16C, "Dense_0": 120C, "Dense_1": 84C}``."""
    return dict(zip(("Conv_0", "Conv_1", "Dense_0", "Dense_1"), self._widths()))

  @nn.nowrap
  def unit_covers(self) -> dict[str, list[tuple[str, int]]]:
    """Each unit's own kernel slice and bias entry, and its next-layer inputs.

    ``Conv_0`` channels also cover the input-channel axis (-2) of the
    ``Conv_1`` kernel, ``Dense_0`` / ``Dense_1`` units the rows (axis 0) of
    the next Dense kernel. ``Conv_1`` channels cover only their own kernel and
    bias: after the row-major flatten, channel ``c`` feeds the ``Dense_0``
    kernel rows ``c, c + 16C, c + 32C, ...``, which no single axis indexes.
    Those rows only ever see zeros once the channel is pruned (relu(0) = 0).
    """
    return {
        "Conv_0": [("Conv_0/kernel", -1), ("Conv_0/bias", 0), ("Conv_1/kernel", -2)],
        "Conv_1": [("Conv_1/kernel", -1), ("Conv_1/bias", 0)],
        "Dense_0": [("Dense_0/kernel", -1), ("Dense_0/bias", 0), ("Dense_1/kernel", 0)],
        "Dense_1": [("Dense_1/kernel", -1), ("Dense_1/bias", 0), ("Dense_2/kernel", 0)],
    }

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool = False,
               gates: Mapping[str, Any] | None = None) -> jax.Array:
    del train  # No BatchNorm or Dropout.
    check_gates(gates, self.gate_sites())
    expected = (LENET5_IMAGE_SIZE, LENET5_IMAGE_SIZE, self.in_channels)
    if x.ndim != 4 or tuple(x.shape[1:]) != expected:
      raise ValueError(
          f"BMRSLeNet5 expects (batch, 32, 32, {self.in_channels}) inputs, got "
          f"{tuple(x.shape)}")
    c0, c1, h0, h1 = self._widths()
    for i, features in enumerate((c0, c1)):
      name = f"Conv_{i}"
      x = Conv(features, (5, 5), padding="VALID", dtype=self.dtype,
                  param_dtype=self.param_dtype, name=name)(x)
      x = apply_gate(nn.relu(x), gates, name)
      x = max_pool(x, (2, 2))
    x = flatten(x)
    for i, features in enumerate((h0, h1)):
      name = f"Dense_{i}"
      x = nn.Dense(features, dtype=self.dtype, param_dtype=self.param_dtype, name=name)(x)
      x = apply_gate(nn.relu(x), gates, name)
    return nn.Dense(self.num_classes, dtype=self.dtype, param_dtype=self.param_dtype,
                    name="Dense_2")(x)
