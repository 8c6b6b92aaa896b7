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

from sparsejax.models.mlp import Dtype, apply_gate, check_gates, flatten

#: Output channels of the two conv layers.
CHANNELS = (20, 50)
#: Width of the hidden Dense layer.
HIDDEN = 500


class LeNet5Caffe(nn.Module):
  """LeNet-5-Caffe (two 5x5 conv layers with 20 and 50 channels, 500 hidden units).

  Attributes:
    num_classes: number of outputs.
    dtype: computation dtype.
    param_dtype: parameter dtype.
  """
  num_classes: int = 10
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.nowrap
  def gate_sites(self) -> dict[str, int]:
    """``{"Conv_0": 20, "Conv_1": 50, "Dense_0": 500}``."""
    return {"Conv_0": CHANNELS[0], "Conv_1": CHANNELS[1],
            "Dense_0": HIDDEN}

  @nn.nowrap
  def unit_covers(self) -> dict[str, list[tuple[str, int]]]:
    """Each unit's own kernel slice and bias entry, and its next-layer inputs.

    ``Conv_0`` channels also cover the input-channel axis (-2) of the
    ``Conv_1`` kernel. ``Conv_1`` channels cover only their own kernel and
    bias: after the row-major flatten, channel ``c`` feeds the ``Dense_0``
    kernel rows ``c, c + 50, c + 100, ...``, which no single axis indexes.
    Those rows only ever see zeros once the channel is pruned (relu(0) = 0).
    """
    return {
        "Conv_0": [("Conv_0/kernel", -1), ("Conv_0/bias", 0), ("Conv_1/kernel", -2)],
        "Conv_1": [("Conv_1/kernel", -1), ("Conv_1/bias", 0)],
        "Dense_0": [("Dense_0/kernel", -1), ("Dense_0/bias", 0), ("Dense_1/kernel", 0)],
    }

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool = False,
               gates: Mapping[str, Any] | None = None) -> jax.Array:
    del train  # No BatchNorm or Dropout.
    check_gates(gates, self.gate_sites())
    for i, features in enumerate(CHANNELS):
      name = f"Conv_{i}"
      x = nn.Conv(features, (5, 5), padding="VALID", dtype=self.dtype,
                  param_dtype=self.param_dtype, name=name)(x)
      x = apply_gate(nn.relu(x), gates, name)
      x = nn.max_pool(x, (2, 2), strides=(2, 2))
    x = flatten(x)
    x = nn.Dense(HIDDEN, dtype=self.dtype, param_dtype=self.param_dtype,
                 name="Dense_0")(x)
    x = apply_gate(nn.relu(x), gates, "Dense_0")
    return nn.Dense(self.num_classes, dtype=self.dtype, param_dtype=self.param_dtype,
                    name="Dense_1")(x)
