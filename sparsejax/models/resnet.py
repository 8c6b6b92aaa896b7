"""ResNets with a gate after every BatchNorm: ResNet-18 (CIFAR) and ResNet-50 (ImageNet).

He, Zhang, Ren & Sun (2016), "Deep residual learning for image recognition",
as pruned by BMRS (Wright, Igel & Selvan, NeurIPS 2024, "BMRS: Bayesian Model
Reduction for Structured Pruning"), which puts a multiplicative gate on the
output channels of every BatchNorm.

One implementation, :class:`ResNet`, builds both networks from a *plan*: the
list of conv layers in network order, grouped into residual blocks. A block
is a main path of conv layers (BasicBlock: 3x3, 3x3; Bottleneck: 1x1, 3x3,
1x1 with four times the width) plus, where the stride or the width changes, a
1x1 conv + BatchNorm projection shortcut. Every conv is::

  Conv_i (no bias) -> BatchNorm_i -> gate "BatchNorm_i" [-> relu]

where the relu follows every BatchNorm except the last one of a block's main
path and the shortcut's: those are gated, added, then passed through relu::

  x -> relu(gate(BN(conv(... x))) + shortcut(x)),
  shortcut(x) = x  or  gate(BN(Conv1x1(x)))

Layers are numbered in network order: the stem conv is ``Conv_0``, then each
block's main-path convs, then its shortcut conv (torchvision's order of
``conv1, conv2, [conv3,] downsample``). The head is ``Dense_0``, on the
global average pool. The stride of a downsampling Bottleneck sits on its 3x3
conv (torchvision's "ResNet v1.5"). Padding is ``k // 2`` on every side, as
PyTorch's, so a torchvision checkpoint would map one to one.

* :func:`resnet18`: CIFAR stem (3x3 stride-1 conv, no max-pool), BasicBlocks
  ``[2, 2, 2, 2]``, widths 64/128/256/512, 32x32 inputs. 20 gate sites
  ``BatchNorm_0 ... BatchNorm_19`` (the projections are 7, 12, 17);
  11,173,962 parameters with 10 classes.
* :func:`resnet50`: ImageNet stem (7x7 stride-2 conv, 3x3 stride-2 max-pool),
  Bottlenecks ``[3, 4, 6, 3]``, expansion 4, 224x224 inputs (any size >= 32
  works: the head follows a global average pool). 53 gate sites
  ``BatchNorm_0 ... BatchNorm_52``; 25,557,032 parameters with 1000 classes.

Parameter counts include the BatchNorm scale and bias and exclude the running
statistics (collection ``batch_stats``). BatchNorm uses momentum 0.9 and
epsilon 1e-5 (PyTorch's momentum 0.1 in Flax's convention). Conv kernels are
initialised as torchvision's (He normal, fan-out), the head with Flax's
default. **No pretrained weights** are available offline: the paper fine-tunes
an ImageNet-pretrained ResNet-50, whereas these are randomly initialised.

Unit covers: a site's channels own the producing conv's kernel (axis -1) and
the BatchNorm scale and bias (axis 0). The next layers' input axes are not
covered, since residual additions make several layers share each channel.
Pruning a channel through its covers makes the BatchNorm output exactly 0,
as a zero gate does. The model contract is described in
:mod:`sparsejax.models.mlp`.
"""

from __future__ import annotations

from typing import Any, Mapping, NamedTuple, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from sparsejax.models.batchnorm import batch_norm
from sparsejax.models.conv import Conv
from sparsejax.models.mlp import Dtype, apply_gate, check_gates

BATCHNORM_MOMENTUM = 0.9
BATCHNORM_EPSILON = 1e-5
#: Output width of a Bottleneck block over its inner width.
BOTTLENECK_EXPANSION = 4
#: He-normal (fan-out) conv initialisation, as torchvision's ResNets.
CONV_INIT = nn.initializers.variance_scaling(2.0, "fan_out", "normal")
BLOCKS = ("basic", "bottleneck")
STEMS = ("cifar", "imagenet")


class ConvSpec(NamedTuple):
  """One ``Conv_i -> BatchNorm_i -> gate`` layer of the plan."""
  index: int
  features: int
  kernel: int
  stride: int


class BlockSpec(NamedTuple):
  """A residual block: the main-path layers and the projection shortcut (or None)."""
  main: tuple[ConvSpec, ...]
  shortcut: ConvSpec | None


class ResNet(nn.Module):
  """ResNet with BasicBlocks or Bottlenecks and a gate after every BatchNorm.

  Attributes:
    stage_sizes: number of blocks per stage; stage ``s`` has inner width
      ``width * 2**s`` and (for ``s > 0``) halves the resolution in its first
      block.
    block: ``"basic"`` (two 3x3 convs) or ``"bottleneck"`` (1x1, 3x3, 1x1
      with expansion 4).
    stem: ``"cifar"`` (3x3 stride-1 conv) or ``"imagenet"`` (7x7 stride-2
      conv, then 3x3 stride-2 max-pool).
    num_classes: number of outputs.
    width: stem width and inner width of the first stage.
    batchnorm: ``"standard"`` or ``"l0"`` (:mod:`sparsejax.models.batchnorm`).
    dtype: computation dtype.
    param_dtype: parameter dtype.
  """
  stage_sizes: Sequence[int]
  block: str = "basic"
  stem: str = "cifar"
  num_classes: int = 10
  width: int = 64
  batchnorm: str = "standard"
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  def __post_init__(self):
    # A tuple keeps the module hashable (``jax.jit(model.apply)``).
    self.stage_sizes = tuple(self.stage_sizes)
    super().__post_init__()

  @nn.nowrap
  def plan(self) -> tuple[ConvSpec, list[BlockSpec]]:
    """The stem layer and the residual blocks, numbered in network order."""
    if self.block not in BLOCKS:
      raise ValueError(f"block must be one of {BLOCKS}, got {self.block!r}")
    if self.stem not in STEMS:
      raise ValueError(f"stem must be one of {STEMS}, got {self.stem!r}")
    stem = (ConvSpec(0, self.width, 3, 1) if self.stem == "cifar"
            else ConvSpec(0, self.width, 7, 2))
    bottleneck = self.block == "bottleneck"
    index, in_features, blocks = 1, self.width, []
    for stage, n_blocks in enumerate(self.stage_sizes):
      inner = self.width * 2**stage
      for b in range(n_blocks):
        stride = 2 if stage > 0 and b == 0 else 1
        if bottleneck:
          shapes = [(inner, 1, 1), (inner, 3, stride),
                    (inner * BOTTLENECK_EXPANSION, 1, 1)]
        else:
          shapes = [(inner, 3, stride), (inner, 3, 1)]
        main = []
        for features, kernel, s in shapes:
          main.append(ConvSpec(index, features, kernel, s))
          index += 1
        out_features = shapes[-1][0]
        shortcut = None
        if stride != 1 or in_features != out_features:
          shortcut = ConvSpec(index, out_features, 1, stride)
          index += 1
        blocks.append(BlockSpec(tuple(main), shortcut))
        in_features = out_features
    return stem, blocks

  @nn.nowrap
  def _layers(self) -> list[ConvSpec]:
    stem, blocks = self.plan()
    layers = [stem]
    for block in blocks:
      layers.extend(block.main)
      if block.shortcut is not None:
        layers.append(block.shortcut)
    return layers

  @nn.nowrap
  def gate_sites(self) -> dict[str, int]:
    """``{"BatchNorm_i": channels}`` for every BatchNorm, in network order."""
    return {f"BatchNorm_{layer.index}": layer.features for layer in self._layers()}

  @nn.nowrap
  def unit_covers(self) -> dict[str, list[tuple[str, int]]]:
    """Each channel's conv kernel slice (axis -1) and BatchNorm scale and bias."""
    return {
        f"BatchNorm_{i}": [(f"Conv_{i}/kernel", -1), (f"BatchNorm_{i}/scale", 0),
                           (f"BatchNorm_{i}/bias", 0)]
        for i in (layer.index for layer in self._layers())
    }

  @nn.nowrap
  def _conv_bn(self, x: jax.Array, layer: ConvSpec, train: bool,
               gates: Mapping[str, Any] | None) -> jax.Array:
    """``gate(BatchNorm_i(Conv_i(x)))``, created in the calling compact scope."""
    pad = layer.kernel // 2
    x = Conv(layer.features, (layer.kernel, layer.kernel),
                strides=(layer.stride, layer.stride), padding=((pad, pad), (pad, pad)),
                use_bias=False, kernel_init=CONV_INIT, dtype=self.dtype,
                param_dtype=self.param_dtype, name=f"Conv_{layer.index}")(x)
    x = batch_norm(self.batchnorm, use_running_average=not train,
                   momentum=BATCHNORM_MOMENTUM, epsilon=BATCHNORM_EPSILON, dtype=self.dtype,
                   param_dtype=self.param_dtype, name=f"BatchNorm_{layer.index}")(x)
    return apply_gate(x, gates, f"BatchNorm_{layer.index}")

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool = False,
               gates: Mapping[str, Any] | None = None) -> jax.Array:
    check_gates(gates, self.gate_sites())
    stem, blocks = self.plan()
    x = nn.relu(self._conv_bn(x, stem, train, gates))
    if self.stem == "imagenet":
      x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
    for block in blocks:
      y = x
      for j, layer in enumerate(block.main):
        y = self._conv_bn(y, layer, train, gates)
        if j + 1 < len(block.main):
          y = nn.relu(y)
      shortcut = x if block.shortcut is None else self._conv_bn(
          x, block.shortcut, train, gates)
      x = nn.relu(y + shortcut)
    x = jnp.mean(x, axis=(1, 2))
    return nn.Dense(self.num_classes, dtype=self.dtype, param_dtype=self.param_dtype,
                    name="Dense_0")(x)


def resnet18(num_classes: int = 10, **kwargs) -> ResNet:
  """ResNet-18 for 32x32 images (CIFAR stem, BasicBlocks ``[2, 2, 2, 2]``).

  Args:
    num_classes: number of outputs.
    **kwargs: further :class:`ResNet` fields (``dtype``, ``param_dtype``).
  """
  return ResNet(stage_sizes=(2, 2, 2, 2), block="basic", stem="cifar",
                num_classes=num_classes, **kwargs)


def resnet50(num_classes: int = 1000, **kwargs) -> ResNet:
  """ResNet-50 v1.5 for 224x224 images (ImageNet stem, Bottlenecks ``[3, 4, 6, 3]``).

  Randomly initialised: no ImageNet-pretrained weights are available offline.

  Args:
    num_classes: number of outputs.
    **kwargs: further :class:`ResNet` fields (``dtype``, ``param_dtype``).
  """
  return ResNet(stage_sizes=(3, 4, 6, 3), block="bottleneck", stem="imagenet",
                num_classes=num_classes, **kwargs)
