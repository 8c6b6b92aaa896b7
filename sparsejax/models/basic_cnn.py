"""BasicCNN: the four-conv CIFAR-10 network of the EEE 198 annealing study.

Sanchez and Reyes (2020), ``BasicCNN`` in ``models_to_prune.py`` (reference
notes ``jax_ecosystem_and_annealing.md``, section 2.1), for 32x32x3 images::

  Conv_0 3x3 stride 2, 3 -> 64     -> relu -> Dropout(0.3) -> BatchNorm_0
  Conv_1 3x3 stride 1, 64 -> 128   -> relu -> Dropout(0.3) -> BatchNorm_1
  Conv_2 3x3 stride 2, 128 -> 256  -> relu -> Dropout(0.3) -> BatchNorm_2
  Conv_3 3x3 stride 1, 256 -> 512  -> relu -> Dropout(0.3) -> BatchNorm_3
  flatten (4 * 4 * 512 = 8192, row-major over (H, W, C)) -> Dense_0 8192 -> 10

All convs are unpadded (32 -> 15 -> 13 -> 6 -> 4), which gives the
reference's 8,192 head inputs; 960 prunable filters. The reference ends with
a softmax that its ``CrossEntropyLoss`` applies a second time; here the head
gives logits and the loss applies the one softmax (``docs/differences.md``).
The flatten is over ``(H, W, C)``, so channel ``c`` feeds the head rows
``16 i + ...`` at ``i * C + c`` rather than PyTorch's ``16 c + i``; the
functions are the same up to that permutation of the head's rows.

``channels`` may be smaller (after filter deletion,
:func:`sparsejax.pruning.filters.delete_filters`). Gate sites: ``Conv_0 ...
Conv_3`` (after the BatchNorm). A unit (filter) covers its kernel slice,
bias, BatchNorm scale and offset and the next conv's input channel
(:func:`sparsejax.masks.unit_masks`), so a pruned filter outputs exactly 0,
as the reference's ``apply_mask``; the head rows it feeds then only see zeros.
"""

from __future__ import annotations

from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp

from sparsejax.models import init as init_lib
from sparsejax.models.conv import Conv
from sparsejax.models.mlp import Dtype, apply_gate, check_gates, flatten

#: Output channels and strides of the four convs.
CHANNELS = (64, 128, 256, 512)
STRIDES = (2, 1, 2, 1)
#: PyTorch's BatchNorm momentum 0.1 in Flax's convention.
BATCHNORM_MOMENTUM = 0.9


class BasicCNN(nn.Module):
  """Four unpadded 3x3 convs (Conv -> relu -> Dropout -> BatchNorm) and a Dense head.

  Attributes:
    num_classes: number of outputs.
    channels: output channels of the four convs.
    dropout: the dropout rate after each relu.
    weight_init: the initialisation scheme, ``"flax"`` or ``"torch"``
      (:mod:`sparsejax.models.init`; the reference is PyTorch's).
    dtype, param_dtype: computation and parameter dtypes.
  """
  num_classes: int = 10
  channels: tuple[int, ...] = CHANNELS
  dropout: float = 0.3
  weight_init: str = "flax"
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.nowrap
  def gate_sites(self) -> dict[str, int]:
    """``{"Conv_0": 64, "Conv_1": 128, "Conv_2": 256, "Conv_3": 512}`` at the default widths."""
    return {f"Conv_{i}": c for i, c in enumerate(self.channels)}

  @nn.nowrap
  def unit_covers(self) -> dict[str, list[tuple[str, int]]]:
    """A filter's kernel slice, bias, BatchNorm scale and offset, and the next conv's input."""
    covers = {}
    for i in range(len(self.channels)):
      covers[f"Conv_{i}"] = [(f"Conv_{i}/kernel", -1), (f"Conv_{i}/bias", 0),
                             (f"BatchNorm_{i}/scale", 0), (f"BatchNorm_{i}/bias", 0)]
      if i + 1 < len(self.channels):
        covers[f"Conv_{i}"].append((f"Conv_{i + 1}/kernel", -2))
    return covers

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool = False,
               gates: Mapping[str, Any] | None = None) -> jax.Array:
    check_gates(gates, self.gate_sites())
    for i, (features, stride) in enumerate(zip(self.channels, STRIDES)):
      x = Conv(features, (3, 3), strides=(stride, stride), padding="VALID", dtype=self.dtype,
               param_dtype=self.param_dtype, name=f"Conv_{i}",
               **init_lib.layer_inits(self.weight_init, 9 * x.shape[-1]))(x)
      x = nn.relu(x)
      x = nn.Dropout(self.dropout, deterministic=not train, name=f"Dropout_{i}")(x)
      x = nn.BatchNorm(use_running_average=not train, momentum=BATCHNORM_MOMENTUM,
                       dtype=self.dtype, param_dtype=self.param_dtype,
                       name=f"BatchNorm_{i}")(x)
      x = apply_gate(x, gates, f"Conv_{i}")
    x = flatten(x)
    return nn.Dense(self.num_classes, dtype=self.dtype, param_dtype=self.param_dtype,
                    name="Dense_0", **init_lib.layer_inits(self.weight_init, x.shape[-1]))(x)
