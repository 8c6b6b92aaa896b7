"""Hard-concrete L0 gates (Louizos, Welling and Kingma, ICLR 2018).

Every gated group :math:`g` of weights is multiplied by a gate
:math:`z_g \\in [0, 1]` drawn from the *hard-concrete* distribution with a
trainable location :math:`\\log\\alpha_g` and the constants
:math:`\\gamma = -0.1`, :math:`\\zeta = 1.1`, :math:`\\beta = 2/3`
(reference notes ``deephoyer_and_constrained_l0.md``, section 2):

.. math::

  u \\sim U(10^{-6}, 1 - 10^{-6}),\\quad
  s = \\sigma\\bigl((\\log u - \\log(1 - u) + \\log\\alpha) / \\beta\\bigr),\\quad
  z = \\min(1, \\max(0, s(\\zeta - \\gamma) + \\gamma)).

Its expected L0 norm has the closed form

.. math::  P(z_g \\ne 0) = \\sigma(\\log\\alpha_g - \\beta\\log(-\\gamma/\\zeta))
           = \\sigma(\\log\\alpha_g + 1.599),

and at test time the gate is deterministic: ``test_gate="mean"`` is Louizos et
al.'s Eq. 13, :math:`\\min(1, \\max(0, \\sigma(\\log\\alpha)(\\zeta-\\gamma)+\\gamma))`;
``"median"`` (the constrained-sparsity code) puts :math:`\\sigma(\\log\\alpha/\\beta)`,
the median of :math:`s`, in place of :math:`\\sigma(\\log\\alpha)`. A group
survives purging when its test gate is positive.

**Placement** (:func:`gated_layers`). ``structure="structured"``: one gate per
*input feature* of a Dense kernel ``(in, out)`` (group size ``out``; the bias
is not gated) and one per *output channel* of a Conv kernel ``(kh, kw, in,
out)`` (group size ``kh kw in + 1``: the channel's bias is gated with it).
``"unstructured"``: one gate per weight and per bias entry. Every Dense and
Conv layer is gated (the reference's MNIST MLP and LeNet-5 gate all of theirs).
A layer's *density* is :math:`\\sum_g P(z_g \\ne 0)\\,|g| / n_k` with
:math:`n_k` its gated parameters; the model's is the parameter-weighted mean.

**Initialisation.** :math:`\\log\\alpha \\sim N(\\log((1 - d)/d), 0.01^2)`
with ``d`` the layer's ``droprate_init``; :math:`\\log\\alpha` is clamped to
:math:`[\\log 0.01, \\log 100]` after every update (``project``). The
reference also divides the initial kernels by :math:`1 - d`
(:func:`rescale_kernels`), having drawn them by He et al.'s normal scheme
(:func:`kaiming_init`).

**Expected L2** (Louizos et al., Eq. 12 with the weights' Gaussian prior):
:math:`\\tfrac12\\sum_g P(z_g \\ne 0)\\|\\theta_g\\|^2` for gated groups plus
:math:`\\tfrac12\\|\\theta\\|^2` for the parameters no gate covers, times the
weight decay; with ``l2_detach_gates`` (the reference's configs) the
probabilities are constants to it, so weight decay does not move the gates.

**Sampling.** ``"per_batch"``: one :math:`u` per gate and forward pass,
shared by the batch (the constrained-sparsity code). Gating the weights is
then exactly gating the activations, so :func:`gate_params` multiplies the
kernels and leaves the model as it is. ``"per_example"`` (Louizos et al.'s
code): every example draws its own gates, which act on the activations
(:func:`per_example_gates`) at the model's gate sites: a Dense layer's input
gates on the previous layer's activations (on the model's input, the
reserved site ``"input"``, for the first layer; on the last conv's
activations before its 2x2 max pooling, repeated over each window, after a
conv), a conv's channel gates on its own. Scaling by :math:`z \\ge 0`
commutes with relu and with max pooling, so this is the network with gated
weights, one per example. It needs the chain of
:class:`sparsejax.models.MLP` and :class:`sparsejax.models.LeNet5Caffe`
(:func:`chain_sites`).
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple, Sequence

import jax
import jax.numpy as jnp
from flax import traverse_util

from sparsejax.models.mlp import INPUT_SITE

GAMMA = -0.1
ZETA = 1.1
BETA = 2.0 / 3.0
#: The uniform's bounds are ``(U_EPS, 1 - U_EPS)``.
U_EPS = 1e-6
#: The clamp of ``log_alpha`` after every update.
LOG_ALPHA_MIN = math.log(0.01)
LOG_ALPHA_MAX = math.log(100.0)
#: Standard deviation of ``log_alpha`` at initialisation.
LOG_ALPHA_INIT_STD = 0.01
#: :math:`-\\beta\\log(-\\gamma/\\zeta)`, the shift of the expected L0 (1.599).
L0_SHIFT = -BETA * math.log(-GAMMA / ZETA)

TEST_GATES = ("mean", "median")
STRUCTURES = ("structured", "unstructured")
SAMPLING = ("per_batch", "per_example")

Key = tuple[str, ...]


# --------------------------------------------------------------------------
# The distribution


def stretch(s: jax.Array) -> jax.Array:
  """:math:`\\min(1, \\max(0, s(\\zeta - \\gamma) + \\gamma))`."""
  return jnp.clip(s * (ZETA - GAMMA) + GAMMA, 0.0, 1.0)


def sample_gates(log_alpha: jax.Array, u: jax.Array) -> jax.Array:
  """Hard-concrete gates from uniforms ``u`` (reparameterised in ``log_alpha``)."""
  logits = (jnp.log(u) - jnp.log1p(-u) + log_alpha) / BETA
  return stretch(jax.nn.sigmoid(logits))


def draw_gates(key: jax.Array, log_alpha: jax.Array) -> jax.Array:
  """:func:`sample_gates` with ``u ~ U(1e-6, 1 - 1e-6)``, one per entry of ``log_alpha``."""
  u = jax.random.uniform(key, jnp.shape(log_alpha), jnp.result_type(log_alpha),
                         minval=U_EPS, maxval=1.0 - U_EPS)
  return sample_gates(log_alpha, u)


def prob_nonzero(log_alpha: jax.Array) -> jax.Array:
  """:math:`P(z \\ne 0) = \\sigma(\\log\\alpha - \\beta\\log(-\\gamma/\\zeta))`."""
  return jax.nn.sigmoid(log_alpha + L0_SHIFT)


def test_gates(log_alpha: jax.Array, kind: str) -> jax.Array:
  """The deterministic test-time gate: ``"mean"`` (Louizos Eq. 13) or ``"median"``."""
  if kind == "mean":
    return stretch(jax.nn.sigmoid(log_alpha))
  if kind == "median":
    return stretch(jax.nn.sigmoid(log_alpha / BETA))
  raise ValueError(f"test_gate must be one of {TEST_GATES}, got {kind!r}")


def init_log_alpha(key: jax.Array, n: int, droprate: float, dtype=jnp.float32) -> jax.Array:
  """:math:`\\log\\alpha \\sim N(\\log((1 - d)/d), 0.01^2)` for ``n`` gates."""
  mean = math.log((1.0 - droprate) / droprate)
  return mean + LOG_ALPHA_INIT_STD * jax.random.normal(key, (n,), dtype)


# --------------------------------------------------------------------------
# Where the gates sit


class GatedLayer(NamedTuple):
  """A gated Dense or Conv layer.

  Attributes:
    name: the layer's path, ``/``-joined (``"Dense_0"``, ``"Block_1/Conv_0"``).
    kernel, bias: the flat keys of its kernel and bias (``bias`` None if it
      has none).
    kind: ``"dense"`` or ``"conv"`` (structured gates) or ``"unstructured"``.
    n_gates: number of gates.
    group_size: parameters per gate.
    n_params: the layer's gated (sparsifiable) parameters,
      ``n_gates * group_size``.
  """
  name: str
  kernel: Key
  bias: Key | None
  kind: str
  n_gates: int
  group_size: int
  n_params: int


def gated_layers(params: Any, structure: str = "structured") -> list[GatedLayer]:
  """Every Dense (2-D kernel) and Conv (4-D kernel) layer of ``params``, sorted by name.

  ``params`` may hold arrays or shapes (``jax.ShapeDtypeStruct``).
  """
  if structure not in STRUCTURES:
    raise ValueError(f"structure must be one of {STRUCTURES}, got {structure!r}")
  flat = traverse_util.flatten_dict(params)
  layers = []
  for key in sorted(flat):
    shape = tuple(flat[key].shape)
    if key[-1] != "kernel" or len(shape) not in (2, 4):
      continue
    bias = key[:-1] + ("bias",)
    bias = bias if bias in flat else None
    bias_size = math.prod(flat[bias].shape) if bias else 0
    name = "/".join(key[:-1])
    if structure == "unstructured":
      n = math.prod(shape) + bias_size
      layers.append(GatedLayer(name, key, bias, "unstructured", n, 1, n))
    elif len(shape) == 2:
      layers.append(GatedLayer(name, key, bias, "dense", shape[0], shape[1],
                               shape[0] * shape[1]))
    else:
      group = math.prod(shape[:3]) + (1 if bias else 0)
      layers.append(GatedLayer(name, key, bias, "conv", shape[3], group, shape[3] * group))
  if not layers:
    raise ValueError("the model has no Dense or Conv kernel to gate")
  return layers


def _leaf_factors(layer: GatedLayer, z: jax.Array, flat: dict) -> dict[Key, jax.Array]:
  """The multipliers of the layer's gated leaves, broadcastable to them."""
  kernel = flat[layer.kernel]
  if layer.kind == "dense":
    return {layer.kernel: z[:, None]}
  if layer.kind == "conv":
    factors = {layer.kernel: z}
    if layer.bias:
      factors[layer.bias] = z
    return factors
  k = kernel.size
  factors = {layer.kernel: z[:k].reshape(kernel.shape)}
  if layer.bias:
    factors[layer.bias] = z[k:]
  return factors


def gate_params(layers: Sequence[GatedLayer], params: Any, gates: dict[str, jax.Array]) -> Any:
  """``params`` with every gated group multiplied by its gate (``gates[layer.name]``)."""
  flat = dict(traverse_util.flatten_dict(params))
  for layer in layers:
    for key, factor in _leaf_factors(layer, gates[layer.name], flat).items():
      flat[key] = flat[key] * factor.astype(flat[key].dtype)
  return traverse_util.unflatten_dict(flat)


def gate_masks(layers: Sequence[GatedLayer], params: Any, alive: dict[str, jax.Array]) -> Any:
  """Boolean masks over ``params``: False where a gated group is dead, True elsewhere."""
  flat = traverse_util.flatten_dict(params)
  out = {key: jnp.ones(jnp.shape(leaf), bool) for key, leaf in flat.items()}
  for layer in layers:
    for key, factor in _leaf_factors(layer, alive[layer.name], flat).items():
      out[key] = jnp.broadcast_to(factor, jnp.shape(flat[key])) & out[key]
  return traverse_util.unflatten_dict(out)


def fold_test_gates(layers: Sequence[GatedLayer], params: Any, log_alpha: dict[str, jax.Array],
                    kind: str) -> tuple[Any, Any]:
  """The test-time gated network as plain parameters: ``(params, masks)``.

  Every gated group is multiplied by its deterministic test gate
  (:func:`test_gates`, ``kind``), and the masks are False where that gate is
  0. The folded parameters give the gated network's test-time outputs
  without the gates; trained under the masks (finetuning the purged
  network), the dead groups stay at zero.
  """
  gates = {l.name: test_gates(log_alpha[l.name], kind) for l in layers}
  alive = {name: g > 0 for name, g in gates.items()}
  return gate_params(layers, params, gates), gate_masks(layers, params, alive)


def expected_l2(layers: Sequence[GatedLayer], params: Any,
                probs: dict[str, jax.Array]) -> jax.Array:
  """:math:`\\tfrac12\\sum_g P_g\\|\\theta_g\\|^2 + \\tfrac12\\|\\theta_{ungated}\\|^2`."""
  squares = jax.tree.map(jnp.square, params)
  weighted = gate_params(layers, squares, probs)
  return 0.5 * sum(jnp.sum(leaf) for leaf in jax.tree.leaves(weighted))


def layer_densities(layers: Sequence[GatedLayer], log_alpha: dict[str, jax.Array]) -> jax.Array:
  """Per layer, the expected kept share :math:`\\sum_g P_g |g| / n_k` (``(K,)``)."""
  return jnp.stack([jnp.sum(prob_nonzero(log_alpha[l.name])) * l.group_size / l.n_params
                    for l in layers])


def model_density(layers: Sequence[GatedLayer], log_alpha: dict[str, jax.Array]) -> jax.Array:
  """The parameter-weighted mean of :func:`layer_densities` (a scalar)."""
  sizes = jnp.asarray([l.n_params for l in layers], jnp.float32)
  return jnp.sum(layer_densities(layers, log_alpha) * sizes) / jnp.sum(sizes)


def rescale_kernels(layers: Sequence[GatedLayer], params: Any,
                    droprates: dict[str, float]) -> Any:
  """The reference's initial kernels divided by :math:`1 - d`, and a conv's
  bias with them (its channel gate scales it too); Dense biases unchanged."""
  flat = dict(traverse_util.flatten_dict(params))
  for layer in layers:
    scale = 1.0 / (1.0 - droprates[layer.name])
    flat[layer.kernel] = flat[layer.kernel] * scale
    if layer.bias is not None and flat[layer.kernel].ndim == 4:
      flat[layer.bias] = flat[layer.bias] * scale
  return traverse_util.unflatten_dict(flat)


#: ``l0.weight_init`` values: the model's own initialisers, or :func:`kaiming_init`.
WEIGHT_INITS = ("flax", "kaiming")
#: The standard deviation of :func:`kaiming_init`'s biases.
KAIMING_BIAS_STD = 1e-2


def kaiming_init(layers: Sequence[GatedLayer], params: Any, key: jax.Array) -> Any:
  """The gated layers' weights redrawn as the constrained-sparsity code draws its L0 layers'.

  He et al.'s normal initialisation with the ReLU gain,
  :math:`N(0, 2/\\mathrm{fan})`: ``fan`` is a Dense kernel's *output* width
  (the code's ``kaiming_normal_(mode="fan_out")`` on its ``(out, in)``
  weight) and a conv kernel's inputs ``kh kw c_in`` (``mode="fan_in"``).
  Biases are :math:`N(0, 10^{-4})`. Flax's default, LeCun normal with
  variance ``1 / fan_in`` and zero biases, starts the MNIST MLP's kernels
  2.3, 2.4 and 4.5 times smaller in standard deviation. Apply before
  :func:`rescale_kernels`.
  """
  flat = dict(traverse_util.flatten_dict(params))
  for i, layer in enumerate(layers):
    kernel_key, bias_key = jax.random.split(jax.random.fold_in(key, i))
    kernel = flat[layer.kernel]
    fan = kernel.shape[-1] if kernel.ndim == 2 else math.prod(kernel.shape[:-1])
    flat[layer.kernel] = math.sqrt(2.0 / fan) * jax.random.normal(
        kernel_key, kernel.shape, kernel.dtype)
    if layer.bias is not None:
      bias = flat[layer.bias]
      flat[layer.bias] = KAIMING_BIAS_STD * jax.random.normal(bias_key, bias.shape, bias.dtype)
  return traverse_util.unflatten_dict(flat)


# --------------------------------------------------------------------------
# Per-example gates on the activations


def chain_sites(layers: Sequence[GatedLayer]) -> dict[str, tuple[str, str]]:
  """``{layer: (site, how)}``: where each structured gate acts on the activations.

  For the chain ``Conv_0 ... Conv_K, Dense_0 ... Dense_L`` (module docstring):
  ``Conv_i`` -> ``("Conv_i", "channels")``; ``Dense_0`` -> ``("input",
  "features")`` without convs, ``("Conv_K", "pooled_features")`` after them;
  ``Dense_k`` -> ``("Dense_{k-1}", "features")``. The names are checked; the
  topology (no residual paths, ``VALID`` convs, 2x2 pooling) is the caller's
  to ensure (the L0 recipe allows the MLPs and LeNet-5-Caffe).

  Raises:
    ValueError: the layers are not such a chain of structured gates.
  """
  convs = [l for l in layers if l.kind == "conv"]
  denses = [l for l in layers if l.kind == "dense"]
  expected = [f"Conv_{i}" for i in range(len(convs))] + [f"Dense_{i}" for i in range(len(denses))]
  if len(convs) + len(denses) != len(layers) or sorted(expected) != [l.name for l in layers]:
    raise ValueError("per-example gates need structured gates on a chain Conv_0.., Dense_0.. "
                     f"(an MLP or LeNet-5-Caffe); the gated layers are {[l.name for l in layers]}")
  sites = {c.name: (c.name, "channels") for c in convs}
  for k in range(len(denses)):
    if k:
      sites[f"Dense_{k}"] = (f"Dense_{k - 1}", "features")
    else:
      sites["Dense_0"] = ((f"Conv_{len(convs) - 1}", "pooled_features") if convs
                          else (INPUT_SITE, "features"))
  return sites


def layer_sites(layers: Sequence[GatedLayer]) -> dict[str, tuple[str, str]]:
  """``{layer: (site, how)}`` for a model gated from outside (any traced layers).

  A Dense layer's structured gates act on its input features, per example:
  the site ``"<layer>:input"``; a Conv layer's on its output channels as the
  layer gives them (before any BatchNorm): ``"<layer>:output"``
  (:meth:`sparsejax.models.ModelAdapter.site`). Per example this is exactly
  the per-batch gating of the layer's kernel rows (Dense) or kernel and bias
  (Conv) of :func:`gate_params`.
  """
  if any(l.kind not in ("dense", "conv") for l in layers):
    raise ValueError("per-example gates need structured gates (l0.structure 'structured')")
  return {l.name: (f"{l.name}:input", "features") if l.kind == "dense"
          else (f"{l.name}:output", "channels") for l in layers}


def _site_factor(how: str, z: jax.Array, x: jax.Array) -> jax.Array:
  """Per-example gates ``z`` (``(batch, n)``) as a factor broadcastable to ``x``."""
  if how == "features":
    return z.reshape(x.shape)
  if how == "channels":
    return z[:, None, None, :]
  batch, height, width, channels = x.shape
  z = z.reshape(batch, height // 2, width // 2, channels)
  z = jnp.repeat(jnp.repeat(z, 2, axis=1), 2, axis=2)
  # Rows and columns a 2x2 VALID pooling drops read no gate.
  return jnp.pad(z, ((0, 0), (0, height - z.shape[1]), (0, width - z.shape[2]), (0, 0)))


def per_example_gates(layers: Sequence[GatedLayer], log_alpha: dict[str, jax.Array],
                      key: jax.Array, sites: dict[str, tuple[str, str]]) -> dict:
  """``{site: activations -> gated activations}``, every example with its own gates."""
  by_site: dict[str, list] = {}
  for k, layer in zip(jax.random.split(key, len(layers)), layers):
    site, how = sites[layer.name]
    by_site.setdefault(site, []).append((k, layer, how))

  def gate_of(entries):
    def gate(x):
      for k, layer, how in entries:
        a = log_alpha[layer.name]
        z = draw_gates(k, jnp.broadcast_to(a, (x.shape[0], layer.n_gates)))
        x = x * _site_factor(how, z, x).astype(x.dtype)
      return x
    return gate
  return {site: gate_of(entries) for site, entries in by_site.items()}
