"""Layerwise reverse pruning (PEGP): expected loss, one-layer fit, MLP pass."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from sparsejax import masks
from sparsejax.models import MLP
from sparsejax.pruning.layerwise import (expected_layer_loss, fit_layer, layer_io,
                                         layerwise_prune)


def random_layer(seed=0, n=5, d_in=4, d_out=3):
  """Inputs, targets, weights and keep probabilities strictly inside (0, 1)."""
  rng = np.random.default_rng(seed)
  f32 = lambda a: np.asarray(a, np.float32)
  return dict(
      x=f32(rng.normal(size=(n, d_in))), y=f32(rng.normal(size=(n, d_out))),
      kernel=f32(rng.normal(size=(d_in, d_out))),
      kernel_p=f32(rng.uniform(0.1, 0.9, size=(d_in, d_out))),
      bias=f32(rng.normal(size=(d_out,))), bias_p=f32(rng.uniform(0.1, 0.9, size=(d_out,))))


def test_closed_form_equals_monte_carlo_over_bernoulli_masks():
  layer, alpha, samples = random_layer(), 0.7, 20000

  @jax.jit
  def sampled_losses(key):
    k_kernel, k_bias = jax.random.split(key)
    m = jax.random.bernoulli(k_kernel, layer["kernel_p"], (samples, *layer["kernel_p"].shape))
    mb = jax.random.bernoulli(k_bias, layer["bias_p"], (samples, *layer["bias_p"].shape))
    m, mb = m.astype(jnp.float32), mb.astype(jnp.float32)
    pred = jnp.einsum("nj,sjk->snk", layer["x"], layer["kernel"] * m) + layer["bias"] * mb[:, None]
    return (jnp.sum(jnp.square(layer["y"] - pred), axis=(1, 2))
            + alpha * (jnp.sum(m, axis=(1, 2)) + jnp.sum(mb, axis=1)))
  losses = np.asarray(sampled_losses(jax.random.key(0)), np.float64)
  closed = float(expected_layer_loss(**layer, alpha=alpha))
  stderr = losses.std(ddof=1) / np.sqrt(samples)
  assert abs(losses.mean() - closed) < 4 * stderr, (losses.mean(), closed, stderr)


def test_closed_form_with_binary_probabilities_is_the_masked_layer_loss():
  layer = random_layer(1)
  rng = np.random.default_rng(1)
  layer["kernel_p"] = (rng.uniform(size=layer["kernel_p"].shape) < 0.5).astype(np.float32)
  layer["bias_p"] = np.array([1.0, 0.0, 1.0], np.float32)
  pred = layer["x"] @ (layer["kernel"] * layer["kernel_p"]) + layer["bias"] * layer["bias_p"]
  expected = np.sum((layer["y"] - pred) ** 2) + 0.1 * (layer["kernel_p"].sum() + 2)
  np.testing.assert_allclose(expected_layer_loss(**layer, alpha=0.1), expected, rtol=1e-5)


def test_gradient_matches_finite_differences():
  with jax.enable_x64(True):
    layer = {k: jnp.asarray(v, jnp.float64) for k, v in random_layer(2).items()}
    args = ("kernel", "kernel_p", "bias", "bias_p")

    @jax.jit
    def loss(*values):
      return expected_layer_loss(layer["x"], layer["y"], *values, alpha=0.3)
    values = [layer[a] for a in args]
    grads = jax.grad(loss, argnums=(0, 1, 2, 3))(*values)
    eps = 1e-6
    for i, index in [(0, (1, 2)), (0, (3, 0)), (1, (0, 1)), (1, (2, 2)), (2, (1,)), (3, (0,))]:
      plus = [v.at[index].add(eps) if j == i else v for j, v in enumerate(values)]
      minus = [v.at[index].add(-eps) if j == i else v for j, v in enumerate(values)]
      numeric = (loss(*plus) - loss(*minus)) / (2 * eps)
      np.testing.assert_allclose(grads[i][index], numeric, rtol=1e-6, atol=1e-8,
                                 err_msg=f"d/d{args[i]}{index}")


@functools.cache
def sparse_problem():
  """``y = x W_true + b_true`` with half of ``W_true`` zero; the fit starts near it."""
  rng = np.random.default_rng(0)
  n, d_in, d_out = 64, 6, 3
  x = rng.normal(size=(n, d_in)).astype(np.float32)
  magnitude = rng.uniform(0.5, 1.5, size=(d_in, d_out)) * rng.choice([-1, 1], (d_in, d_out))
  support = np.zeros(d_in * d_out, bool)
  support[rng.permutation(d_in * d_out)[:d_in * d_out // 2]] = True
  support = support.reshape(d_in, d_out)
  w_true = np.where(support, magnitude, 0).astype(np.float32)
  b_true = np.array([0.5, -0.8, 1.0], np.float32)
  y = x @ w_true + b_true
  kernel = (w_true + 0.1 * rng.normal(size=w_true.shape)).astype(np.float32)
  return x, y, kernel, b_true, support


def test_fit_layer_recovers_the_sparse_support_and_refits_the_outputs():
  x, y, kernel, bias, support = sparse_problem()
  fit = fit_layer(x, y, kernel, bias, np.ones(kernel.shape, bool), np.ones(bias.shape, bool),
                  alpha=0.1, max_epochs=20000)
  np.testing.assert_array_equal(fit.kernel_mask, support)
  assert np.asarray(fit.bias_mask).all()
  np.testing.assert_array_equal(np.asarray(fit.kernel)[~support], 0.0)
  np.testing.assert_allclose(x @ fit.kernel + fit.bias, y, atol=1e-3)
  # It stopped at a check (every 100 steps) before the step limit.
  assert 0 < int(fit.steps) < 20000 and int(fit.steps) % 100 == 0


def test_already_pruned_and_zero_entries_stay_pruned():
  x, y, kernel, bias, support = sparse_problem()
  kernel_mask = np.ones(kernel.shape, bool)
  pruned = [tuple(i) for i in np.argwhere(support)[:3]]   # true weights, nonzero values
  for index in pruned:
    kernel_mask[index] = False
  zero = tuple(np.argwhere(support)[3])                   # kept by its mask, but exactly 0
  kernel = kernel.copy()
  kernel[zero] = 0.0
  bias_mask = np.array([True, False, True])
  fit = fit_layer(x, y, kernel, bias, kernel_mask, bias_mask, alpha=0.1, max_epochs=3000)
  for index in [*pruned, zero]:
    assert not fit.kernel_mask[index] and fit.kernel[index] == 0.0, index
  assert not fit.bias_mask[1] and fit.bias[1] == 0.0
  # The masks only shrink, and pruned entries are exactly zero.
  assert not np.any(np.asarray(fit.kernel_mask) & ~kernel_mask)
  np.testing.assert_array_equal(np.asarray(fit.kernel)[~np.asarray(fit.kernel_mask)], 0.0)


def test_none_mask_is_never_pruned():
  # The shapes and mask structure of the MLP test's last layer (one compilation).
  rng = np.random.default_rng(3)
  x = rng.normal(size=(32, 8)).astype(np.float32)
  kernel = rng.normal(size=(8, 1)).astype(np.float32)
  bias = np.array([0.7], np.float32)
  fit = fit_layer(x, x @ kernel + bias, kernel, bias, np.ones(kernel.shape, bool), None,
                  alpha=100.0, max_epochs=300)
  assert fit.bias_mask is None and float(fit.bias[0]) != 0.0
  assert not np.asarray(fit.kernel_mask).any()   # alpha = 100 prunes everything prunable


def test_lax_loop_equals_a_plain_adam_loop_and_respects_max_epochs():
  """150 steps (not a multiple of 100): the compiled loop = a plain loop of projected Adam."""
  x, y, kernel, bias, _ = sparse_problem()
  fit = fit_layer(x, y, kernel, bias, np.ones(kernel.shape, bool), np.ones(bias.shape, bool),
                  alpha=0.1, lr=1e-2, max_epochs=150)
  assert int(fit.steps) == 150

  optimizer = optax.adam(1e-2)

  def loss(p):
    return expected_layer_loss(x, y, p["kernel"], p["kernel_p"], p["bias"], p["bias_p"], 0.1)

  def step(_, carry):
    params, opt_state = carry
    updates, opt_state = optimizer.update(jax.grad(loss)(params), opt_state, params)
    params = optax.apply_updates(params, updates)
    params = {**params, "kernel_p": jnp.clip(params["kernel_p"], 0, 1),
              "bias_p": jnp.clip(params["bias_p"], 0, 1)}
    return params, opt_state

  params = {"kernel": jnp.asarray(kernel), "kernel_p": jnp.full(kernel.shape, 0.3),
            "bias": jnp.asarray(bias), "bias_p": jnp.full(bias.shape, 0.3)}
  params, _ = jax.jit(lambda p: jax.lax.fori_loop(0, 150, step, (p, optimizer.init(p))))(params)
  keep = params["kernel_p"] >= 0.5
  assert 0 < int(keep.sum()) < keep.size
  np.testing.assert_array_equal(fit.kernel_mask, keep)
  np.testing.assert_allclose(fit.kernel, jnp.where(keep, params["kernel"], 0), atol=1e-5)


def test_layerwise_prune_mlp_structure_and_zeros():
  model = MLP(widths=(2, 8, 8, 1), activation="tanh")
  rng = np.random.default_rng(4)
  x = jnp.asarray(rng.uniform(-1, 1, size=(32, 2)), jnp.float32)
  # Trained-looking parameters: biases nonzero (Flax initialises them to 0).
  params = {f"Dense_{i}": {"kernel": jnp.asarray(rng.normal(size=(a, b)) / np.sqrt(a), jnp.float32),
                           "bias": jnp.full((b,), 0.3, jnp.float32)}
            for i, (a, b) in enumerate(zip(model.widths[:-1], model.widths[1:]))}
  np.testing.assert_allclose(layer_io(model, params, x, 2)[1],
                             model.apply({"params": params}, x), rtol=1e-6)
  mask_tree = masks.ones_like(params, masks.every_leaf)
  mask_tree["Dense_1"]["kernel"] = mask_tree["Dense_1"]["kernel"].at[0].set(False)
  mask_tree["Dense_2"]["bias"] = None   # a dense leaf
  visits = []

  def after_layer(p, m):
    visits.append({name: m[name] is not mask_tree[name] for name in m})
    return p, m

  new_params, new_masks = layerwise_prune(model, params, mask_tree, x, alpha=0.01, lr=1e-2,
                                          max_epochs=2000, after_layer=after_layer)
  # Last to first: after each call exactly the layers visited so far are new.
  assert visits == [{"Dense_0": False, "Dense_1": False, "Dense_2": True},
                    {"Dense_0": False, "Dense_1": True, "Dense_2": True},
                    {"Dense_0": True, "Dense_1": True, "Dense_2": True}]
  assert jax.tree.structure(new_params) == jax.tree.structure(params)
  assert jax.tree.structure(new_masks) == jax.tree.structure(mask_tree)
  assert new_masks["Dense_2"]["bias"] is None
  for layer in params:
    for leaf in ("kernel", "bias"):
      p, q = new_params[layer][leaf], params[layer][leaf]
      m, m0 = new_masks[layer][leaf], mask_tree[layer][leaf]
      assert p.shape == q.shape and p.dtype == q.dtype
      if m0 is None:
        continue
      assert m.shape == q.shape and m.dtype == jnp.bool_
      np.testing.assert_array_equal(np.asarray(p)[~np.asarray(m)], 0.0)
      assert not np.any(np.asarray(m) & ~np.asarray(m0))   # pruned entries stay pruned
  assert masks.density(new_masks, new_params) < 1.0
  # The last layer refits its targets: with binary masks its PEGP loss is
  # SSE + alpha * kept, at most that of keeping everything, alpha * allowed.
  inputs, outputs = layer_io(model, masks.apply(mask_tree, params), x, 2)
  refit = inputs @ new_params["Dense_2"]["kernel"] + new_params["Dense_2"]["bias"]
  pruned = int(np.sum(~np.asarray(new_masks["Dense_2"]["kernel"])))
  sse = float(jnp.sum(jnp.square(refit - outputs)))
  assert sse <= 0.01 * pruned + 1e-4


def test_layerwise_prune_rejects_other_models():
  with pytest.raises(TypeError, match="MLP"):
    layerwise_prune(object(), {}, None, jnp.zeros((1, 2)))
