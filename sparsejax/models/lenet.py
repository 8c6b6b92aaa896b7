"""LeNet-5-Caffe: the Caffe variant of LeNet-5 for 28x28x1 MNIST images.

Architecture (``Lenet_5_Caffe`` of the efficient-compression reference; the
Caffe MNIST example of Jia et al., 2014, after LeCun et al., 1998, and the
pruning benchmark of Han et al., 2015, and Louizos et al., 2018)::

  Conv_0  5x5, 1 -> 20, VALID, relu, gate  ->  max-pool 2x2
  Conv_1  5x5, 20 -> 50, VALID, relu, gate ->  max-pool 2x2
  flatten (4 * 4 * 50 = 800, row-major over (H, W, C))
  Dense_0 800 -> 500, relu, gate
  Dense_1 500 -> 10

431,080 parameters. Gate sites: ``Conv_0`` (20 channels), ``Conv_1`` (50
channels), ``Dense_0`` (500 units). The model contract (gates, sites, covers)
is described in :mod:`sparsejax.models.mlp`.
"""

from __future__ import annotations

from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp

from sparsejax.models.conv import Conv
from sparsejax.models.mlp import Dtype, apply_gate, check_gates, flatten, get_activation
from sparsejax.models.pooling import max_pool

#: Output channels of the two conv layers.
CHANNELS = (20, 50)
#: Width of the hidden Dense layer.
HIDDEN = 500


class LeNet5Caffe(nn.Module):
  """LeNet-5-Caffe (two 5x5 conv layers with 20 and 50 channels, 500 hidden units).

  Attributes:
    num_classes: number of outputs.
    channels: output channels of the two conv layers (smaller after unit
      deletion, :func:`sparsejax.pruning.neurons.smaller_model`).
    hidden: width of the hidden Dense layer.
    activation: hidden nonlinearity, one of
      :data:`sparsejax.models.mlp.ACTIVATIONS` (the Caffe model's ``relu``).
    dtype: computation dtype.
    param_dtype: parameter dtype.
  """
  num_classes: int = 10
  channels: tuple[int, ...] = CHANNELS
  hidden: int = HIDDEN
  activation: str = "relu"
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.nowrap
  def gate_sites(self) -> dict[str, int]:
    """``{"Conv_0": 20, "Conv_1": 50, "Dense_0": 500}`` (at the default widths)."""
    sites = {f"Conv_{i}": features for i, features in enumerate(self.channels)}
    return {**sites, "Dense_0": self.hidden}

  @nn.nowrap
  def unit_covers(self) -> dict[str, list[tuple[str, int]]]:
    """Each unit's own kernel slice and bias entry, and its next-layer inputs.

    ``Conv_0`` channels also cover the input-channel axis (-2) of the
    ``Conv_1`` kernel. ``Conv_1`` channels cover only their own kernel and
    bias: after the row-major flatten, channel ``c`` feeds the ``Dense_0``
    kernel rows ``c, c + 50, c + 100, ...``, which no single axis indexes.
    Those rows only ever see zeros once the channel is pruned (relu(0) = 0).
    """
    covers = {}
    for i in range(len(self.channels)):
      name = f"Conv_{i}"
      covers[name] = [(f"{name}/kernel", -1), (f"{name}/bias", 0)]
      if i + 1 < len(self.channels):
        covers[name].append((f"Conv_{i + 1}/kernel", -2))
    covers["Dense_0"] = [("Dense_0/kernel", -1), ("Dense_0/bias", 0), ("Dense_1/kernel", 0)]
    return covers

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool = False,
               gates: Mapping[str, Any] | None = None) -> jax.Array:
    del train  # No BatchNorm or Dropout.
    check_gates(gates, self.gate_sites())
    act = get_activation(self.activation)
    for i, features in enumerate(self.channels):
      name = f"Conv_{i}"
      x = Conv(features, (5, 5), padding="VALID", dtype=self.dtype,
                  param_dtype=self.param_dtype, name=name)(x)
      x = apply_gate(act(x), gates, name)
      x = max_pool(x, (2, 2))
    x = flatten(x)
    x = nn.Dense(self.hidden, dtype=self.dtype, param_dtype=self.param_dtype,
                 name="Dense_0")(x)
    x = apply_gate(act(x), gates, "Dense_0")
    return nn.Dense(self.num_classes, dtype=self.dtype, param_dtype=self.param_dtype,
                    name="Dense_1")(x)
