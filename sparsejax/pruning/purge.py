"""Purging a structured-L0-gated network into a smaller dense one.

After training with structured hard-concrete gates
(:mod:`sparsejax.objectives.hard_concrete`), a group whose test-time gate is
0 contributes nothing, and the network is rebuilt without it (reference
notes, section 3.2): with the gates folded into the weights,

* a **Dense** layer keeps the kernel rows (inputs) whose own gates are alive
  and the columns (outputs) that the next layer's input gates keep; the last
  layer keeps every output;
* a **Conv** layer keeps the output channels whose own gates are alive and
  the input channels the previous conv kept;
* at the **conv-to-dense boundary** the first Dense layer keeps an input
  feature when its own gate is alive and the channel it reads (flattened
  row-major over ``(H, W, C)``) was kept: the purged network flattens the
  smaller conv output and gathers those features.

The chain is the one of :class:`sparsejax.models.MLP` and
:class:`sparsejax.models.LeNet5Caffe` (``Conv_0 ... Conv_K`` with ``VALID``
padding, activation and 2x2 max pooling, then ``Dense_0 ... Dense_L``). The
purged network computes the gated network's test-time function exactly
(``tests/test_constrained_l0.py``). :func:`count` gives its parameters and
multiply-accumulates (convolutions and Dense layers; the reference's
``ptflops`` also counts bias additions, activations and pooling).
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from sparsejax.models.mlp import get_activation
from sparsejax.pruning.neurons import layer_names

Layer = tuple[np.ndarray, np.ndarray]


class PurgedNetwork(NamedTuple):
  """A purged chain network.

  Attributes:
    convs: ``(kernel, bias)`` of each conv, kept channels only.
    features: indices of the flattened (conv or image) features the first
      Dense layer reads.
    denses: ``(kernel, bias)`` of each Dense layer, kept units only.
    activation: the hidden nonlinearity's name.
  """
  convs: tuple[Layer, ...]
  features: np.ndarray
  denses: tuple[Layer, ...]
  activation: str


def purge(params, alive: dict[str, np.ndarray], activation: str) -> PurgedNetwork:
  """The purged network of gated ``params`` (the gates already folded in).

  Args:
    params: the effective parameters (each kernel multiplied by its test gates).
    alive: ``{layer: bool[n_gates]}``: the structured gates whose test value
      is positive (Dense: per input feature; Conv: per output channel).
    activation: the hidden nonlinearity.
  """
  params = jax.tree.map(np.asarray, params)
  names = layer_names(params)
  conv_names = [n for n in names if n.startswith("Conv_")]
  dense_names = [n for n in names if n.startswith("Dense_")]
  convs, channels = [], None
  for name in conv_names:
    kernel, bias = params[name]["kernel"], params[name]["bias"]
    keep_out = np.asarray(alive[name], bool)
    if channels is not None:
      kernel = kernel[:, :, channels, :]
    convs.append((kernel[..., keep_out], bias[keep_out]))
    channels = keep_out
  first_in = params[dense_names[0]]["kernel"].shape[0]
  keep_in = [np.asarray(alive[name], bool) for name in dense_names]
  if channels is not None:
    # Feature i of the row-major (H, W, C) flatten reads channel i % C.
    keep_in[0] = keep_in[0] & np.tile(channels, first_in // channels.size)
  features = np.flatnonzero(keep_in[0])
  if channels is not None:
    # Positions in the flatten of the purged (H, W, C') conv output.
    position, channel = np.divmod(features, channels.size)
    features = position * int(channels.sum()) + (np.cumsum(channels) - 1)[channel]
  denses = []
  for i, name in enumerate(dense_names):
    kernel, bias = params[name]["kernel"], params[name]["bias"]
    rows = keep_in[i]
    cols = keep_in[i + 1] if i + 1 < len(dense_names) else np.ones(bias.size, bool)
    denses.append((kernel[rows][:, cols], bias[cols]))
  return PurgedNetwork(tuple(convs), features, tuple(denses), activation)


def apply_purged(net: PurgedNetwork, x: jax.Array) -> jax.Array:
  """The purged network's outputs for images or features ``x`` (batch first)."""
  act = get_activation(net.activation)
  for kernel, bias in net.convs:
    x = jax.lax.conv_general_dilated(x, jnp.asarray(kernel), (1, 1), "VALID",
                                     dimension_numbers=("NHWC", "HWIO", "NHWC")) + bias
    x = nn.max_pool(act(x), (2, 2), strides=(2, 2))
  x = x.reshape((x.shape[0], -1))[:, net.features]
  for i, (kernel, bias) in enumerate(net.denses):
    x = x @ kernel + bias
    if i + 1 < len(net.denses):
      x = act(x)
  return x


def count(net: PurgedNetwork, image_shape: Sequence[int] | None) -> dict[str, int]:
  """Parameters and multiply-accumulates per example of ``net`` on ``(H, W, C)`` inputs.

  ``image_shape`` may be ``None`` for a network without convolutions.
  """
  params = sum(k.size + b.size for k, b in net.convs + net.denses)
  macs = 0
  height, width = image_shape[:2] if net.convs else (0, 0)
  for kernel, _ in net.convs:
    kh, kw, cin, cout = kernel.shape
    height, width = height - kh + 1, width - kw + 1
    macs += height * width * kh * kw * cin * cout
    height, width = height // 2, width // 2
  macs += sum(k.size for k, _ in net.denses)
  return {"params": int(params), "macs": int(macs)}
