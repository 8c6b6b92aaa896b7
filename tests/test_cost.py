"""The MACs of a masked network whose weights are not zero (cost.nonzero_macs)."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from sparsejax.compaction import cost


class ConvNet(nn.Module):
  @nn.compact
  def __call__(self, x):
    x = nn.relu(nn.Conv(6, (5, 5), padding="VALID")(x))  # 8x8 outputs, 25 taps, 1 channel
    x = x.reshape((x.shape[0], -1))
    return nn.Dense(10)(nn.relu(nn.Dense(32)(x)))


def _masked(params, key, keep):
  """Every kernel with a random share ``keep`` of its entries kept; biases untouched."""
  leaves, tree = jax.tree.flatten_with_path(params)
  out = []
  for i, (path, leaf) in enumerate(leaves):
    if path[-1].key == "kernel":
      leaf = jnp.where(jax.random.uniform(jax.random.fold_in(key, i), leaf.shape) < keep, leaf, 0)
    out.append(leaf)
  return jax.tree.unflatten(tree, out)


def test_dense_layers_count_their_nonzero_weights_and_convolutions_their_share():
  model = ConvNet()
  x = jnp.ones((1, 12, 12, 1))
  params = _masked(model.init(jax.random.key(0), x)["params"], jax.random.key(1), 0.3)
  fn = lambda p, x: model.apply({"params": p}, x)  # noqa: E731
  conv, hidden, out = (params[name]["kernel"] for name in ("Conv_0", "Dense_0", "Dense_1"))
  density = lambda w: np.count_nonzero(w) / w.size  # noqa: E731
  expected = 64 * 6 * 25 * density(conv) + np.count_nonzero(hidden) + np.count_nonzero(out)
  assert cost.macs(fn, params, x) == 64 * 6 * 25 + 384 * 32 + 32 * 10
  np.testing.assert_allclose(cost.nonzero_macs(fn, params, x), expected, rtol=1e-12)
  # Inside a jitted function, and with a dense network: the full count.
  np.testing.assert_allclose(cost.nonzero_macs(jax.jit(fn), params, x), expected, rtol=1e-12)
  dense = model.init(jax.random.key(0), x)["params"]
  assert cost.nonzero_macs(fn, dense, x) == cost.macs(fn, dense, x)
