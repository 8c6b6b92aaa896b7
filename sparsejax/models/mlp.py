"""Multilayer perceptron, and the gate helpers every sparsejax model shares.

**The model contract.** Every model in :mod:`sparsejax.models` is a Flax linen
module with

* ``__call__(x, *, train=False, gates=None)`` returning the outputs. ``train``
  switches BatchNorm to batch statistics (updating the ``batch_stats``
  collection) and turns Dropout on (rng stream ``'dropout'``).
* ``gates``: ``None`` or a dict ``{site: array}``. A *gate site* is a layer
  whose output units (neurons, or conv channels) a unit-level method may
  scale; the site is named after that layer (``"Dense_0"``, ``"Conv_3"``). The
  gate multiplies the layer's activations after the nonlinearity. It is any
  array broadcastable to them: ``(units,)`` for one gate per unit, or
  ``(batch, units)`` for per-example gates (for conv sites a 2-D gate is read
  as ``(batch, channels)``; ``(batch, 1, 1, channels)`` works too), or a
  function ``activations -> gated activations``, for noise drawn per
  activation element (the BMRS log-uniform gates,
  :mod:`sparsejax.objectives.log_uniform`). A missing site is ungated; an
  unknown site is a ``ValueError``. The reserved site ``"input"``
  (:data:`INPUT_SITE`, a callable) gates the model's input; the train step
  (:func:`sparsejax.train.step.apply_model`) applies it before the model
  (hard-concrete gates drawn per example on the first layer's inputs).
* ``gate_sites() -> {site: n_units}``, in network order, computed from the
  configuration (no parameters needed).
* ``unit_covers() -> {site: [(leaf_path, axis), ...]}``: the ``params`` leaves
  (``"Dense_0/kernel"`` style paths) that hold each unit's weights and the
  axis that indexes the units there, as consumed by
  :func:`sparsejax.masks.unit_masks`.
* ``dtype`` (computation) and ``param_dtype`` fields, both float32 by default.

Submodules carry explicit names, numbered per layer type in network order:
``Dense_i``, ``Conv_i``, ``BatchNorm_i`` (the BatchNorm after ``Conv_i``).

**The MLP.** ``widths = (d_in, h_1, ..., h_L, d_out)``: the input is flattened
to ``d_in`` features, each hidden layer is Dense -> activation -> gate, and the
output layer is a plain Dense. The efficient-compression reference uses the
teacher ``[2, 5, 8, 1]`` and student ``[2, 25, 25, 1]`` (tanh) and
LeNet-300-100 (``[784, 300, 100, 10]``, relu; LeCun et al., 1998, as used by
Han et al., 2015, "Learning both weights and connections for efficient neural
networks").
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from sparsejax.models import init as init_lib

Dtype = Any

#: The reserved gate site of the model's input (module docstring).
INPUT_SITE = "input"

#: Activations selectable by name.
ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "tanh": jnp.tanh,
    "relu": nn.relu,
    "sigmoid": nn.sigmoid,
    "gelu": nn.gelu,
    "identity": lambda x: x,
}


def get_activation(name: str) -> Callable[[jax.Array], jax.Array]:
  """The activation function called ``name``; ``ValueError`` if unknown."""
  if name not in ACTIVATIONS:
    raise ValueError(
        f"unknown activation {name!r}; valid activations: {sorted(ACTIVATIONS)}")
  return ACTIVATIONS[name]


def check_gates(gates: Mapping[str, Any] | None, sites: Mapping[str, int]) -> None:
  """Raises ``ValueError`` if ``gates`` names a site that is not in ``sites``."""
  if not gates:
    return
  unknown = sorted(set(gates) - set(sites))
  if unknown:
    raise ValueError(
        f"unknown gate site(s) {unknown}; valid gate sites: {list(sites)}")


def apply_gate(x: jax.Array, gates: Mapping[str, Any] | None, site: str) -> jax.Array:
  """Multiplies the activations ``x`` by ``gates[site]`` (if present).

  ``x`` is ``(batch, units)``, ``(batch, tokens, units)`` or, for conv layers,
  ``(batch, H, W, channels)``. A 2-D gate on a 4-D activation is read as
  per-example, per-channel ``(batch, channels)``. The gate is cast to
  ``x.dtype``. A callable gate is applied to ``x`` and its result returned.
  """
  if not gates or site not in gates:
    return x
  if callable(gates[site]):
    return gates[site](x)
  gate = jnp.asarray(gates[site], x.dtype)
  if x.ndim == 4 and gate.ndim == 2:
    gate = gate[:, None, None, :]
  return x * gate


def dense_covers(names: Sequence[str], use_bias: bool = True) -> dict[str, list[tuple[str, int]]]:
  """Unit covers of a chain of Dense layers: every layer but the last is a site.

  The units of ``names[i]`` own its kernel columns (axis -1), its bias entries
  (axis 0, if the layers have biases) and the kernel rows of ``names[i + 1]``
  (axis 0).
  """
  return {
      name: [(f"{name}/kernel", -1)] + ([(f"{name}/bias", 0)] if use_bias else [])
      + [(f"{nxt}/kernel", 0)]
      for name, nxt in zip(names[:-1], names[1:])
  }


def flatten(x: jax.Array) -> jax.Array:
  """Flattens ``(batch, ...)`` to ``(batch, features)`` in row-major order."""
  return x.reshape((x.shape[0], -1))


class MLP(nn.Module):
  """Fully connected network Dense -> activation -> gate, ..., Dense.

  Attributes:
    widths: ``(d_in, h_1, ..., h_L, d_out)``, input and output included.
    activation: hidden nonlinearity, one of :data:`ACTIVATIONS`.
    use_bias: whether the Dense layers have biases.
    weight_init: the initialisation scheme, ``"flax"`` or ``"torch"``
      (:mod:`sparsejax.models.init`).
    dtype: computation dtype.
    param_dtype: parameter dtype.

  Layers are named ``Dense_0 ... Dense_L``; the gate sites are the hidden
  layers ``Dense_0 ... Dense_{L-1}``.
  """
  widths: Sequence[int]
  activation: str = "tanh"
  use_bias: bool = True
  weight_init: str = "flax"
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  def __post_init__(self):
    # A tuple keeps the module hashable (``jax.jit(model.apply)``) when the
    # widths come as a list, e.g. from a config file.
    self.widths = tuple(self.widths)
    super().__post_init__()

  @nn.nowrap
  def _layer_names(self) -> list[str]:
    if len(self.widths) < 2:
      raise ValueError(
          f"widths must hold the input and output sizes, got {tuple(self.widths)}")
    return [f"Dense_{i}" for i in range(len(self.widths) - 1)]

  @nn.nowrap
  def gate_sites(self) -> dict[str, int]:
    """``{"Dense_i": width}`` for the hidden layers, in order."""
    return dict(zip(self._layer_names()[:-1], self.widths[1:-1]))

  @nn.nowrap
  def unit_covers(self) -> dict[str, list[tuple[str, int]]]:
    """Each hidden unit's kernel column, bias entry and next-layer kernel row."""
    return dense_covers(self._layer_names(), self.use_bias)

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool = False,
               gates: Mapping[str, Any] | None = None) -> jax.Array:
    del train  # No BatchNorm or Dropout.
    sites = self.gate_sites()
    check_gates(gates, sites)
    act = get_activation(self.activation)
    x = flatten(x)
    if x.shape[-1] != self.widths[0]:
      raise ValueError(
          f"input has {x.shape[-1]} features per example, widths[0] = {self.widths[0]}")
    names = self._layer_names()
    for name, fan_in, width in zip(names, self.widths[:-1], self.widths[1:]):
      x = nn.Dense(width, use_bias=self.use_bias, dtype=self.dtype,
                   param_dtype=self.param_dtype, name=name,
                   **init_lib.layer_inits(self.weight_init, fan_in))(x)
      if name in sites:
        x = apply_gate(act(x), gates, name)
    return x


def lenet_300_100(**kwargs) -> MLP:
  """LeNet-300-100: ``MLP([784, 300, 100, 10], "relu")``, 266,610 parameters.

  Args:
    **kwargs: further :class:`MLP` fields (``dtype``, ``param_dtype``).
  """
  return MLP(widths=(784, 300, 100, 10), activation="relu", **kwargs)


def lenet_300_100_no_bias(**kwargs) -> MLP:
  """LeNet-300-100 without biases (266,200 weights): the EEE 198 annealing study's MLP
  (Sanchez and Reyes, 2020, ``DeconsNet``).

  Args:
    **kwargs: further :class:`MLP` fields (``dtype``, ``param_dtype``).
  """
  return MLP(widths=(784, 300, 100, 10), activation="relu", use_bias=False, **kwargs)
