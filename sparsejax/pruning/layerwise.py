"""Layerwise reverse pruning ("PEGP"): refit each Dense layer with Bernoulli masks.

The efficient-compression reference (Barth & von Petersenn, arXiv 2505.17469,
``LayerWiseFunctions/projected_implementation/layerwise_pruning.jl``:
``layerwise_reverse_pruning`` and ``prune_layer``, "Probabilistic Exact
Gradient Pruning", PEGP; notes section 3) prunes a trained MLP one Dense layer
at a time, from the last layer to the first.

**One layer.** Given the layer's current inputs :math:`X \\in \\mathbb{R}^{N
\\times d}` (the previous layer's activations on all training inputs) and its
current pre-activation outputs :math:`Y = X W_0 + b_0 \\in \\mathbb{R}^{N
\\times h}`, it fits a *probabilistic* linear layer: every kernel entry
:math:`W_{jk}` is kept with probability :math:`\\Pi_{jk} \\in [0, 1]` and every
bias entry :math:`b_k` with probability :math:`\\pi_k \\in [0, 1]`,
independently, by minimising the exact expectation over the masks
:math:`M_{jk} \\sim \\mathrm{Bernoulli}(\\Pi_{jk})`,
:math:`m_k \\sim \\mathrm{Bernoulli}(\\pi_k)` of the squared error plus
:math:`\\alpha` times the number of kept entries:

.. math::
   \\mathcal{L}(W, \\Pi, b, \\pi)
   = \\mathbb{E}\\Big[\\sum_{n,k} \\big(Y_{nk} - \\sum_j X_{nj} W_{jk} M_{jk}
     - b_k m_k\\big)^2\\Big] + \\alpha\\, \\mathbb{E}\\Big[\\sum_{jk} M_{jk}
     + \\sum_k m_k\\Big]

.. math::
   = \\sum_{n,k} \\Big[\\big(Y - X (W \\odot \\Pi) - b \\odot \\pi\\big)_{nk}^2
     + \\big(X^{2} (W^{2} \\odot \\Pi \\odot (1 - \\Pi))\\big)_{nk}
     + b_k^2 \\pi_k (1 - \\pi_k)\\Big]
     + \\alpha \\Big(\\sum_{jk} \\Pi_{jk} + \\sum_k \\pi_k\\Big),

(squares taken entry-wise) since for each example :math:`n` and output
:math:`k` the prediction :math:`\\sum_j X_{nj} W_{jk} M_{jk} + b_k m_k` has
mean :math:`(X (W \\odot \\Pi))_{nk} + b_k \\pi_k` and, the masks being
independent, variance :math:`\\sum_j X_{nj}^2 W_{jk}^2 \\Pi_{jk}(1 -
\\Pi_{jk}) + b_k^2 \\pi_k (1 - \\pi_k)`, and :math:`\\mathbb{E}[(Y - Z)^2] =
(Y - \\mathbb{E} Z)^2 + \\mathrm{Var}\\, Z`. The error is *summed* over
examples and outputs, as in the reference, so the scale of :math:`\\alpha`
is relative to a sum over the :math:`N` training examples (the bias variance
term is counted once per example).

For a single entry the loss is linear in its :math:`\\Pi_{jk}` at fixed
:math:`W` (the :math:`\\Pi^2` terms of the squared mean and of the variance
cancel), so the probabilities are driven to 0 or 1.

**Optimisation** (as ``prune_layer``): Adam (learning rate ``lr``, 1e-3 in
the reference's ``layerwise_pruning_lr``) on :math:`(W, \\Pi, b, \\pi)`
together, full batch, starting from the trained :math:`(W_0, b_0)` and
:math:`\\Pi = \\pi =` ``mask_start_value`` (0.3); after every step the
probabilities are projected onto :math:`[0, 1]` (projected gradient descent).
Entries that are already pruned (mask False) or exactly zero start at
probability 0; sparsejax also multiplies by that initial 0/1 pattern after
each step, so they stay at 0 (the reference only zeroes them at the start;
for a zero weight this is the same, as both its gradients then vanish).

**Stopping** (as ``prune_layer``): at most ``max_epochs`` steps (one step
is one full-batch epoch), checked every ``check_every`` (100) steps. With
:func:`sparsejax.train.convergence.is_saturated` of the per-step loss curve
(window ``smoothing_window``, the reference's
``args.smoothing_window`` = 30, deviation ``1e-10`` as its default) and
"binary" meaning every probability is exactly 0 or 1, the fit stops after 3
consecutive saturated checks, or after 3 consecutive binary checks, or at the
first check that is both binary and saturated.
``is_saturated`` is pure ``jax.numpy``, so the whole fit is one
``jax.lax.while_loop`` over chunks of ``check_every`` ``jax.lax.scan`` steps,
with the last ``smoothing_window + 2`` losses carried in a buffer: no host
round trip per step or per check.

**Result.** The masks are rounded at 0.5 (:math:`\\Pi \\ge 0.5` keeps; the
reference keeps :math:`\\Pi > 0.5`, which differs only at exactly 0.5) and
the new weights are :math:`W \\odot \\mathrm{round}(\\Pi)`, the *fitted*
:math:`W` on the kept entries, likewise the bias.

**The network** (``layerwise_reverse_pruning``): Dense layers are visited
from the last to the first. Visiting layer :math:`i`, its inputs and targets
are recomputed with the current parameters, so changes to earlier layers
made after a later layer (by ``after_layer``) are seen. The reference runs
random gradient pruning (MSE loss, random data) after each layer; here that
is the caller's choice through ``after_layer``, and the runner follows the
whole pass with RGP -> TAMADE -> RGP (``prune_and_shrink!``), see
:mod:`sparsejax.pruning.random_gradient` and :mod:`sparsejax.pruning.tamade`.
The reference's Gauss-loss variant is never active there (its detection
checks the wrong key) and is not implemented.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

from sparsejax import masks as masks_lib
from sparsejax.models.mlp import MLP, flatten, get_activation
from sparsejax.train.convergence import is_saturated

Params = Any
Masks = Any
#: ``(params, masks) -> (params, masks)``, run after each layer is refitted.
AfterLayer = Callable[[Params, Masks], tuple[Params, Masks]]


class LayerFit(NamedTuple):
  """What :func:`fit_layer` returns (a tuple, so it unpacks as one).

  Attributes:
    kernel: the fitted kernel with the pruned entries set to 0.
    bias: the fitted bias with the pruned entries set to 0.
    kernel_mask: bool, ``Pi >= 0.5``; ``None`` if the kernel was not prunable.
    bias_mask: likewise for the bias.
    steps: number of Adam steps taken, int32.
  """
  kernel: jax.Array
  bias: jax.Array
  kernel_mask: jax.Array | None
  bias_mask: jax.Array | None
  steps: jax.Array


class _Loop(NamedTuple):
  """The while loop's carry."""
  params: dict[str, jax.Array]   # kernel, kernel_p, bias, bias_p
  opt_state: Any
  losses: jax.Array              # the last ``smoothing_window + 2`` losses
  steps: jax.Array
  saturated_count: jax.Array
  binary_count: jax.Array
  done: jax.Array


def expected_layer_loss(x: jax.Array, y: jax.Array, kernel: jax.Array, kernel_p: jax.Array,
                        bias: jax.Array, bias_p: jax.Array, alpha: float = 0.1) -> jax.Array:
  """Exact Bernoulli expectation of the summed squared error plus the expected l0.

  .. math::
     \\sum_{n,k} \\Big[\\big(Y - X (W \\odot \\Pi) - b \\odot \\pi\\big)_{nk}^2
       + \\big(X^{2} (W^{2} \\odot \\Pi \\odot (1 - \\Pi))\\big)_{nk}
       + b_k^2 \\pi_k (1 - \\pi_k)\\Big]
       + \\alpha \\Big(\\sum_{jk} \\Pi_{jk} + \\sum_k \\pi_k\\Big)

  the expectation over independent masks :math:`M \\sim
  \\mathrm{Bernoulli}(\\Pi)`, :math:`m \\sim \\mathrm{Bernoulli}(\\pi)` of
  :math:`\\sum_{n,k} (Y - X (W \\odot M) - b \\odot m)_{nk}^2 + \\alpha
  (\\sum M + \\sum m)` (module docstring).

  Args:
    x: layer inputs, ``(N, d_in)``.
    y: target pre-activations, ``(N, d_out)``.
    kernel: :math:`W`, ``(d_in, d_out)``.
    kernel_p: keep probabilities :math:`\\Pi`, shape of ``kernel``.
    bias: :math:`b`, ``(d_out,)``.
    bias_p: keep probabilities :math:`\\pi`, shape of ``bias``.
    alpha: price of one expected kept entry.

  Returns:
    The scalar loss (summed, not averaged, over examples).
  """
  mean = x @ (kernel * kernel_p) + bias * bias_p
  variance = (x * x) @ (kernel * kernel * kernel_p * (1 - kernel_p)) + (
      bias * bias * bias_p * (1 - bias_p))
  return (jnp.sum(jnp.square(y - mean) + variance)
          + alpha * (jnp.sum(kernel_p) + jnp.sum(bias_p)))


def _allowed(value: jax.Array, mask: jax.Array | None) -> jax.Array | None:
  """0/1 pattern of the entries that may be kept: mask True and value nonzero.

  ``None`` for a dense (``None``-mask) leaf, whose probability stays 1.
  """
  if mask is None:
    return None
  return jnp.logical_and(mask, value != 0).astype(value.dtype)


def _project(p: jax.Array, allowed: jax.Array | None) -> jax.Array:
  """Onto [0, 1], times the allowed pattern; all ones for a dense leaf."""
  if allowed is None:
    return jnp.ones_like(p)
  return jnp.clip(p, 0, 1) * allowed


def _is_binary(p: jax.Array) -> jax.Array:
  return jnp.all((p == 0) | (p == 1))


@functools.partial(jax.jit, static_argnames=(
    "check_every", "smoothing_window", "saturation_checks", "binary_checks"))
def fit_layer(x: jax.Array, y: jax.Array, kernel: jax.Array, bias: jax.Array,
              kernel_mask: jax.Array | None = None, bias_mask: jax.Array | None = None, *,
              alpha: float = 0.1, lr: float = 1e-3, mask_start_value: float = 0.3,
              max_epochs: int = 20000, check_every: int = 100, smoothing_window: int = 30,
              deviation: float = 1e-10, saturation_checks: int = 3,
              binary_checks: int = 3) -> LayerFit:
  """Fits and prunes one Dense layer ``y ~ x @ kernel + bias`` (PEGP, ``prune_layer``).

  Minimises :func:`expected_layer_loss` over :math:`(W, \\Pi, b, \\pi)` by
  projected Adam, full batch, and rounds the probabilities at 0.5 (module
  docstring). Deterministic: no random key is needed. Compiled; the whole fit
  is one ``lax.while_loop`` over chunks of ``check_every`` scanned steps.

  Args:
    x: the layer's current inputs on all training examples, ``(N, d_in)``.
    y: its current pre-activation outputs, ``(N, d_out)``.
    kernel: the trained kernel :math:`W_0`, ``(d_in, d_out)``; the fit starts
      there.
    bias: the trained bias :math:`b_0`, ``(d_out,)``.
    kernel_mask: bool, False = already pruned (stays pruned); ``None`` = not
      prunable (probability fixed to 1, the kernel is still refitted).
    bias_mask: likewise for the bias.
    alpha: :math:`\\alpha`, price of one expected kept entry (reference
      ``layerwise_pruning_alpha`` = 0.1).
    lr: Adam learning rate (reference ``layerwise_pruning_lr`` = 1e-3).
    mask_start_value: initial keep probability of the unpruned, nonzero
      entries (reference ``layerwise_pruning_mask_start_value`` = 0.3).
    max_epochs: the most steps (one step = one full-batch epoch); the
      reference passes ``args.max_epochs`` (20000).
    check_every: steps between stopping checks (100).
    smoothing_window: window of the saturation test on the per-step loss.
    deviation: absolute deviation of the saturation test.
    saturation_checks: consecutive saturated checks that stop the fit (3).
    binary_checks: consecutive all-binary checks that stop the fit (3).

  Returns:
    A :class:`LayerFit` ``(kernel, bias, kernel_mask, bias_mask, steps)``:
    the fitted parameters times the rounded masks, the masks (bool, a subset
    of the given ones) and the number of steps taken.
  """
  dtype = jnp.result_type(kernel.dtype, jnp.float32)
  x, y = jnp.asarray(x, dtype), jnp.asarray(y, dtype)
  kernel, bias = jnp.asarray(kernel, dtype), jnp.asarray(bias, dtype)
  start = jnp.asarray(mask_start_value, dtype)
  allowed = {"kernel_p": _allowed(kernel, kernel_mask), "bias_p": _allowed(bias, bias_mask)}

  def project(params):
    return {**params,
            "kernel_p": _project(params["kernel_p"], allowed["kernel_p"]),
            "bias_p": _project(params["bias_p"], allowed["bias_p"])}

  def loss_fn(params):
    return expected_layer_loss(x, y, params["kernel"], params["kernel_p"], params["bias"],
                               params["bias_p"], alpha)

  optimizer = optax.adam(lr)
  params = project({"kernel": kernel, "kernel_p": jnp.full_like(kernel, start),
                    "bias": bias, "bias_p": jnp.full_like(bias, start)})
  buffer_len = smoothing_window + 2

  def step(carry, _):
    params, opt_state, steps = carry
    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, new_opt_state = optimizer.update(grads, opt_state, params)
    new_params = project(optax.apply_updates(params, updates))
    # Steps past ``max_epochs`` in the last chunk leave everything unchanged.
    active = steps < max_epochs
    keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(active, a, b), new, old)
    return (keep(new_params, params), keep(new_opt_state, opt_state),
            steps + active.astype(steps.dtype)), loss

  def chunk(s: _Loop) -> _Loop:
    (params, opt_state, steps), losses = jax.lax.scan(
        step, (s.params, s.opt_state, s.steps), length=check_every)
    losses = jnp.concatenate([s.losses, losses])[-buffer_len:]
    saturated = is_saturated(losses, smoothing_window, deviation) & (steps >= buffer_len)
    binary = _is_binary(params["kernel_p"]) & _is_binary(params["bias_p"])
    saturated_count = jnp.where(saturated, s.saturated_count + 1, 0)
    binary_count = jnp.where(binary, s.binary_count + 1, 0)
    done = ((saturated_count >= saturation_checks) | (binary_count >= binary_checks)
            | (binary & (saturated_count >= 1)) | (steps >= max_epochs))
    return _Loop(params, opt_state, losses, steps, saturated_count, binary_count, done)

  zero = jnp.zeros((), jnp.int32)
  init = _Loop(params, optimizer.init(params), jnp.zeros((buffer_len,), dtype), zero, zero,
               zero, jnp.asarray(max_epochs) <= 0)
  final = jax.lax.while_loop(lambda s: ~s.done, chunk, init)

  def result(value, p, mask):
    if mask is None:
      return value, None
    keep = p >= 0.5
    return jnp.where(keep, value, jnp.zeros_like(value)), keep

  new_kernel, new_kernel_mask = result(final.params["kernel"], final.params["kernel_p"],
                                       kernel_mask)
  new_bias, new_bias_mask = result(final.params["bias"], final.params["bias_p"], bias_mask)
  return LayerFit(new_kernel, new_bias, new_kernel_mask, new_bias_mask, final.steps)


def _layer_names(model: MLP) -> list[str]:
  return [f"Dense_{i}" for i in range(len(model.widths) - 1)]


def layer_io(model: MLP, params: Params, x: jax.Array, index: int,
             ) -> tuple[jax.Array, jax.Array]:
  """Inputs and pre-activation outputs of Dense layer ``index`` of an MLP.

  ``x_0 = flatten(x)``, ``x_{i+1} = act(x_i W_i + b_i)``; returns
  ``(x_index, x_index W_index + b_index)`` at ``params`` as given (apply the
  masks first).
  """
  names = _layer_names(model)
  act = get_activation(model.activation)
  inputs = flatten(jnp.asarray(x, model.dtype))
  for name in names[:index]:
    inputs = act(inputs @ params[name]["kernel"] + params[name]["bias"])
  layer = params[names[index]]
  return inputs, inputs @ layer["kernel"] + layer["bias"]


def layerwise_prune(model: MLP, params: Params, masks: Masks | None, x: jax.Array, *,
                    alpha: float = 0.1, lr: float = 1e-3, mask_start_value: float = 0.3,
                    max_epochs: int = 20000, check_every: int = 100,
                    smoothing_window: int = 30, deviation: float = 1e-10,
                    after_layer: AfterLayer | None = None) -> tuple[Params, Masks]:
  """Layerwise reverse pruning of an MLP (``layerwise_reverse_pruning``, PEGP).

  For ``Dense_L, ..., Dense_0`` in turn: compute the layer's inputs and
  pre-activation outputs on all of ``x`` with the current (masked)
  parameters, refit and prune it with :func:`fit_layer`, write the fitted,
  pruned kernel and bias and their masks back, then call ``after_layer``.

  The reference runs random gradient pruning after each layer; pass it as
  ``after_layer`` to do the same. Either way the runner follows this pass
  with RGP -> TAMADE -> RGP.

  Args:
    model: the :class:`sparsejax.models.MLP`.
    params: its parameters ``{"Dense_i": {"kernel", "bias"}}``.
    masks: the mask tree over ``params`` (bool leaves or ``None``);
      ``None``: :func:`sparsejax.masks.ones_like` (the kernels prunable, all
      kept). Pruned entries stay pruned.
    x: all training inputs, ``(N, ...)``, flattened to ``(N, widths[0])``.
    alpha, lr, mask_start_value, max_epochs, check_every, smoothing_window,
      deviation: as in :func:`fit_layer`, the same for every layer.
    after_layer: optional ``(params, masks) -> (params, masks)`` run after
      each layer (e.g. random gradient pruning).

  Returns:
    ``(params, masks)`` of the same structure, with the pruned entries of
    ``params`` exactly zero.
  """
  if not isinstance(model, MLP):
    raise TypeError(f"layerwise pruning handles sparsejax.models.MLP, got {type(model).__name__}")
  if masks is None:
    masks = masks_lib.ones_like(params)
  params = masks_lib.apply(masks, params)
  names = _layer_names(model)
  for index in reversed(range(len(names))):
    name = names[index]
    inputs, outputs = layer_io(model, params, x, index)
    layer, layer_masks = params[name], masks[name]
    fit = fit_layer(inputs, outputs, layer["kernel"], layer["bias"], layer_masks["kernel"],
                    layer_masks["bias"], alpha=alpha, lr=lr, mask_start_value=mask_start_value,
                    max_epochs=max_epochs, check_every=check_every,
                    smoothing_window=smoothing_window, deviation=deviation)
    params = {**params, name: {**layer, "kernel": fit.kernel.astype(layer["kernel"].dtype),
                               "bias": fit.bias.astype(layer["bias"].dtype)}}
    masks = {**masks, name: {**layer_masks, "kernel": fit.kernel_mask,
                             "bias": fit.bias_mask}}
    if after_layer is not None:
      params, masks = after_layer(params, masks)
  return params, masks
