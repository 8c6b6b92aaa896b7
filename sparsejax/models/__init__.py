"""Flax linen models that follow the sparsejax model contract.

Every model takes ``(x, *, train=False, gates=None)``, exposes
``gate_sites()`` and ``unit_covers()`` and has ``dtype`` / ``param_dtype``
fields; the contract is described in :mod:`sparsejax.models.mlp`.
:func:`get_model` builds a model by name.
"""

from __future__ import annotations

from typing import Callable

import flax.linen as nn

from sparsejax.models.lenet import LeNet5Caffe
from sparsejax.models.mlp import ACTIVATIONS, MLP, lenet_300_100
from sparsejax.models.vgg import VGG16_CONFIG, VGG16BN

#: Model constructors by name.
MODELS: dict[str, Callable[..., nn.Module]] = {
    "mlp": MLP,
    "lenet_300_100": lenet_300_100,
    "lenet5_caffe": LeNet5Caffe,
    "vgg16_bn": VGG16BN,
}


def get_model(name: str, **kwargs) -> nn.Module:
  """Builds the model registered as ``name`` with the given fields.

  Args:
    name: one of ``"mlp"``, ``"lenet_300_100"``, ``"lenet5_caffe"``,
      ``"vgg16_bn"``.
    **kwargs: model fields, e.g. ``widths`` and ``activation`` for ``"mlp"``.

  Raises:
    ValueError: if ``name`` is not registered.
  """
  if name not in MODELS:
    raise ValueError(f"unknown model {name!r}; valid models: {sorted(MODELS)}")
  return MODELS[name](**kwargs)


__all__ = [
    "ACTIVATIONS",
    "LeNet5Caffe",
    "MLP",
    "MODELS",
    "VGG16BN",
    "VGG16_CONFIG",
    "get_model",
    "lenet_300_100",
]
