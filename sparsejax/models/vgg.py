"""VGG-16 with BatchNorm for 32x32 CIFAR-10 images.

Configuration D of Simonyan & Zisserman (2015), "Very deep convolutional
networks for large-scale image recognition", with BatchNorm (Ioffe & Szegedy,
2015) and the small classifier of the efficient-compression reference (Boltz
``Vision.VGG((32, 32); config=VGG_CONFIG[16], batchnorm=true, fcsize=512,
dropout=0.4)``)::

  13 x [Conv_i 3x3 SAME with bias -> BatchNorm_i -> relu -> gate],
        max-pool 2x2 after each block of :data:`VGG16_CONFIG`
  flatten (1 * 1 * 512)
  Dense_0 512 -> fc_size, relu, gate -> Dropout
  Dense_1 fc_size -> fc_size, relu, gate -> Dropout
  Dense_2 fc_size -> num_classes

15,253,578 trainable parameters (conv and Dense biases and the BatchNorm scale
and offset included). BatchNorm uses momentum 0.9 and epsilon 1e-5 (Lux's
momentum 0.1 in Flax's convention). Gate sites: ``Conv_0 ... Conv_12`` (one
gate per channel) and ``Dense_0``, ``Dense_1``. The model contract (gates,
sites, covers) is described in :mod:`sparsejax.models.mlp`.
"""

from __future__ import annotations

from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp

from sparsejax.models.batchnorm import batch_norm
from sparsejax.models.conv import Conv
from sparsejax.models.mlp import Dtype, apply_gate, check_gates, flatten
from sparsejax.models.pooling import max_pool

#: VGG configuration D: conv output channels, ``"M"`` = 2x2 max-pool.
VGG16_CONFIG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M",
                512, 512, 512, "M", 512, 512, 512, "M")
BATCHNORM_MOMENTUM = 0.9


class VGG16BN(nn.Module):
  """VGG-16 (configuration D) with BatchNorm and a two-hidden-layer classifier.

  The input must be 32x32 (CIFAR-10), so that the last feature map is 1x1 and
  each channel of ``Conv_12`` feeds exactly one input row of ``Dense_0``.

  Attributes:
    num_classes: number of outputs.
    fc_size: width of the two hidden classifier layers.
    dropout: dropout rate after each hidden classifier layer.
    batchnorm: ``"standard"`` or ``"l0"`` (:mod:`sparsejax.models.batchnorm`).
    dtype: computation dtype.
    param_dtype: parameter dtype.
  """
  num_classes: int = 10
  fc_size: int = 512
  dropout: float = 0.4
  batchnorm: str = "standard"
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.nowrap
  def _conv_widths(self) -> list[int]:
    return [c for c in VGG16_CONFIG if c != "M"]

  @nn.nowrap
  def gate_sites(self) -> dict[str, int]:
    """``{"Conv_0": 64, ..., "Conv_12": 512, "Dense_0": fc, "Dense_1": fc}``."""
    sites = {f"Conv_{i}": c for i, c in enumerate(self._conv_widths())}
    sites.update(Dense_0=self.fc_size, Dense_1=self.fc_size)
    return sites

  @nn.nowrap
  def unit_covers(self) -> dict[str, list[tuple[str, int]]]:
    """Each unit's kernel slice, bias, BatchNorm scale/bias and next-layer inputs.

    A conv channel covers the input-channel axis (-2) of the next conv kernel;
    the channels of the last conv cover the rows (axis 0) of ``Dense_0``,
    one row per channel since the last feature map is 1x1.
    """
    n_conv = len(self._conv_widths())
    covers = {}
    for i in range(n_conv):
      name = f"Conv_{i}"
      nxt = (f"Conv_{i + 1}/kernel", -2) if i + 1 < n_conv else ("Dense_0/kernel", 0)
      covers[name] = [(f"{name}/kernel", -1), (f"{name}/bias", 0),
                      (f"BatchNorm_{i}/scale", 0), (f"BatchNorm_{i}/bias", 0), nxt]
    for i in range(2):
      name = f"Dense_{i}"
      covers[name] = [(f"{name}/kernel", -1), (f"{name}/bias", 0),
                      (f"Dense_{i + 1}/kernel", 0)]
    return covers

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool = False,
               gates: Mapping[str, Any] | None = None) -> jax.Array:
    check_gates(gates, self.gate_sites())
    layer = 0
    for entry in VGG16_CONFIG:
      if entry == "M":
        x = max_pool(x, (2, 2))
        continue
      x = Conv(entry, (3, 3), padding="SAME", dtype=self.dtype,
                  param_dtype=self.param_dtype, name=f"Conv_{layer}")(x)
      x = batch_norm(self.batchnorm, use_running_average=not train,
                     momentum=BATCHNORM_MOMENTUM, dtype=self.dtype,
                     param_dtype=self.param_dtype, name=f"BatchNorm_{layer}")(x)
      x = apply_gate(nn.relu(x), gates, f"Conv_{layer}")
      layer += 1
    if x.shape[1:3] != (1, 1):
      raise ValueError(
          f"VGG16BN expects 32x32 inputs (a 1x1 final feature map), got a "
          f"{x.shape[1]}x{x.shape[2]} final feature map")
    x = flatten(x)
    for i in range(2):
      x = nn.Dense(self.fc_size, dtype=self.dtype, param_dtype=self.param_dtype,
                   name=f"Dense_{i}")(x)
      x = apply_gate(nn.relu(x), gates, f"Dense_{i}")
      x = nn.Dropout(self.dropout, deterministic=not train, name=f"Dropout_{i}")(x)
    return nn.Dense(self.num_classes, dtype=self.dtype, param_dtype=self.param_dtype,
                    name="Dense_2")(x)
