"""sparsejax.models.init: PyTorch's default initialisation, checked against its bounds and the
EEE 198 study's orthogonality score of its dense network at initialisation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sparsejax import models
from sparsejax.models import init as init_lib
from sparsejax.recipes.anneal import orthogonality


def _params(name, scheme, shape, seed=0, **kwargs):
  model = models.get_model(name, weight_init=scheme, **kwargs)
  return model.init(jax.random.key(seed), jnp.zeros((1, *shape)), train=False)["params"]


def test_torch_scheme_draws_kernels_and_biases_uniform_in_one_over_root_fan_in():
  params = _params("lenet_300_100", "torch", (784,))
  for name, fan_in in (("Dense_0", 784), ("Dense_1", 300), ("Dense_2", 100)):
    bound = 1 / np.sqrt(fan_in)
    kernel, bias = np.asarray(params[name]["kernel"]), np.asarray(params[name]["bias"])
    assert 0.99 * bound < np.abs(kernel).max() <= bound * (1 + 1e-6)
    assert kernel.var() == pytest.approx(bound ** 2 / 3, rel=0.05)  # U(-b, b): b^2 / 3
    assert 0.5 * bound < np.abs(bias).max() <= bound * (1 + 1e-6)


def test_flax_scheme_keeps_flax_defaults():
  params = _params("lenet_300_100", "flax", (784,))
  assert np.all(np.asarray(params["Dense_1"]["bias"]) == 0)
  assert np.asarray(params["Dense_0"]["kernel"]).var() == pytest.approx(1 / 784, rel=0.05)
  default = models.get_model("lenet_300_100").init(jax.random.key(0), jnp.zeros((1, 784)))
  jax.tree.map(np.testing.assert_array_equal, params, default["params"])


@pytest.mark.slow  # 7 s or more on 2 cores: the default suite stays under 10 minutes
def test_basic_cnn_torch_scheme_uses_each_layers_fan_in():
  params = _params("basic_cnn", "torch", (32, 32, 3), num_classes=10)
  for name, fan_in in (("Conv_0", 27), ("Conv_1", 9 * 64), ("Conv_3", 9 * 256),
                       ("Dense_0", 8192)):
    bound = 1 / np.sqrt(fan_in)
    for leaf in ("kernel", "bias"):
      values = np.abs(np.asarray(params[name][leaf]))
      assert bound * 0.5 < values.max() <= bound * (1 + 1e-6), (name, leaf)


@pytest.mark.parametrize("seed", [0, 1])
def test_the_study_dense_network_orthogonality_check_value(seed):
  """Reference notes section 2.8: the full 784-300-100-10 network scores 0.01324 at init."""
  def score(scheme):
    params = _params("lenet_300_100_no_bias", scheme, (784,), seed=seed)
    ones = jax.tree.map(lambda p: jnp.ones(p.shape, bool), params)
    return float(sum(orthogonality(params, ones).values()))
  assert score("torch") == pytest.approx(0.01324, abs=5e-5)
  assert score("flax") < 0.0128  # Flax's three-times-larger variance scores differently


def test_unknown_scheme_is_refused():
  with pytest.raises(ValueError, match="init must be one of"):
    init_lib.kernel_init("he")
