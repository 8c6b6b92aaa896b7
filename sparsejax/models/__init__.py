"""Models: the adapter that takes any Flax model, the registry, and the zoo.

:func:`adapt` wraps any linen or NNX module in the one model contract
(:class:`ModelAdapter`: pure ``init`` / ``apply``, prunable leaves, units and
gates attached from outside, capabilities); :mod:`sparsejax.models.registry`
finds models by name (or your own by import path) with the capabilities they
declare. The zoo's models gate themselves (``(x, *, train=False,
gates=None)``, ``gate_sites()``, ``unit_covers()``; see
:mod:`sparsejax.models.mlp`) and are adapted like any other.
:func:`get_model` builds a zoo module by name with its fields.

The BMRS architectures (Wright, Igel & Selvan, NeurIPS 2024) are
:func:`bmrs_mlp` and :class:`BMRSLeNet5` (:mod:`sparsejax.models.bmrs`),
:func:`resnet18` and :func:`resnet50` (:mod:`sparsejax.models.resnet`) and
:func:`vit_small_cifar` and :func:`vit_b16` (:mod:`sparsejax.models.vit`).
No pretrained weights are available offline: where the paper fine-tunes an
ImageNet-pretrained ResNet-50 or ViT-B/16, these models are randomly
initialised.
"""

from __future__ import annotations

from typing import Callable

import flax.linen as nn

from sparsejax.models import capabilities, registry
from sparsejax.models.adapter import ModelAdapter, adapt
from sparsejax.models.basic_cnn import BasicCNN
from sparsejax.models.bmrs import BMRSLeNet5, bmrs_mlp
from sparsejax.models.capabilities import CAPABILITIES, CapabilityError
from sparsejax.models.lenet import LeNet5Caffe
from sparsejax.models.mlp import ACTIVATIONS, MLP, lenet_300_100, lenet_300_100_no_bias
from sparsejax.models.registry import ModelSpec, model_names, register_model
from sparsejax.models.resnet import ResNet, resnet18, resnet50
from sparsejax.models.vgg import VGG16_CONFIG, VGG16BN
from sparsejax.models.vit import ViT, vit_b16, vit_small_cifar

#: Model constructors by name.
MODELS: dict[str, Callable[..., nn.Module]] = {
    "mlp": MLP,
    "lenet_300_100": lenet_300_100,
    "lenet_300_100_no_bias": lenet_300_100_no_bias,
    "lenet5_caffe": LeNet5Caffe,
    "vgg16_bn": VGG16BN,
    "basic_cnn": BasicCNN,
    "bmrs_mlp": bmrs_mlp,
    "bmrs_lenet5": BMRSLeNet5,
    "resnet18": resnet18,
    "resnet50": resnet50,
    "vit_small": vit_small_cifar,
    "vit_b16": vit_b16,
}


def get_model(name: str, **kwargs) -> nn.Module:
  """Builds the model registered as ``name`` with the given fields.

  Args:
    name: one of :data:`MODELS` (``"mlp"``, ``"lenet_300_100"``,
      ``"lenet_300_100_no_bias"``, ``"lenet5_caffe"``, ``"vgg16_bn"``,
      ``"basic_cnn"``, ``"bmrs_mlp"``, ``"bmrs_lenet5"``, ``"resnet18"``,
      ``"resnet50"``, ``"vit_small"``, ``"vit_b16"``).
    **kwargs: model fields, e.g. ``widths`` and ``activation`` for ``"mlp"``,
      ``in_channels`` for ``"bmrs_lenet5"``, ``num_classes`` for all but
      ``"mlp"`` and ``"lenet_300_100"``.

  Raises:
    ValueError: if ``name`` is not registered.
  """
  if name not in MODELS:
    raise ValueError(f"unknown model {name!r}; valid models: {sorted(MODELS)}")
  return MODELS[name](**kwargs)


__all__ = [
    "ACTIVATIONS",
    "CAPABILITIES",
    "CapabilityError",
    "ModelAdapter",
    "ModelSpec",
    "adapt",
    "capabilities",
    "model_names",
    "register_model",
    "registry",
    "BasicCNN",
    "BMRSLeNet5",
    "LeNet5Caffe",
    "MLP",
    "MODELS",
    "ResNet",
    "VGG16BN",
    "VGG16_CONFIG",
    "ViT",
    "bmrs_mlp",
    "get_model",
    "lenet_300_100_no_bias",
    "lenet_300_100",
    "resnet18",
    "resnet50",
    "vit_b16",
    "vit_small_cifar",
]
