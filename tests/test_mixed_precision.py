"""``dtype="bfloat16"``: CNNs compute in bfloat16, parameters and optimiser state stay float32."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import lenet5_mnist, vgg_cifar
from sparsejax.fields import ConfigError
from sparsejax.runner import build as build_lib
from sparsejax.runner import run
from sparsejax.runner.config import validate
from sparsejax.runner.reload import load_run
from sparsejax.train import losses
from tests.conftest import data_path


def _model_and_variables(config, shape):
  model = build_lib.build_model(config).module
  x = jax.random.normal(jax.random.key(0), (4, *shape))
  return model, model.init(jax.random.key(1), x, train=False), x


# bfloat16 keeps 8 significant bits, so every layer adds a relative rounding error near
# 2^-9 to the activations and again to the backpropagated signal; the gradients drift from
# float32 with depth. LeNet-5 (4 layers) measures 1 - cosine = 3e-4; VGG-16 at initialisation
# (16 layers, BatchNorm with its initial statistics) 1.0e-2 (jax 0.10.2, AMD EPYC), its first
# convolutions 4e-2. Each bound leaves a factor of about 3 for other XLA versions and CPUs.
# A flipped sign, or a gradient cut off at a late layer (VGG's last Dense holds a third of the
# squared norm), misses it by far; an error confined to the first layers would not, since
# their gradients are small: the jaxpr check above is what pins the bfloat16 path there.
@pytest.mark.parametrize("get_config, shape, min_cosine", [
    (lenet5_mnist.get_config, (28, 28, 1), 0.999),
    pytest.param(vgg_cifar.get_config, (32, 32, 3), 0.97, marks=pytest.mark.slow)])
@pytest.mark.slow  # 7 s or more on 2 cores: the default suite stays under 10 minutes
def test_bfloat16_layers_with_float32_parameters_and_gradients(get_config, shape, min_cosine):
  config = get_config("none")
  outputs, grads = {}, {}
  for dtype in ("float32", "bfloat16"):
    config.dtype = dtype
    model, variables, x = _model_and_variables(config, shape)
    assert {leaf.dtype for leaf in jax.tree.leaves(variables)} == {jnp.dtype("float32")}
    labels = jnp.arange(4) % 10

    def loss(params):
      logits = model.apply({**variables, "params": params}, x, train=False)
      return jnp.mean(losses.cross_entropy(logits, labels))
    jaxpr = str(jax.make_jaxpr(loss)(variables["params"]))
    convs = [line for line in jaxpr.splitlines() if "conv_general_dilated" in line]
    assert convs and all(("bf16[" in line) == (dtype == "bfloat16") for line in convs)
    value, grad = jax.value_and_grad(loss)(variables["params"])
    assert value.dtype == jnp.float32  # the loss is widened to float32
    assert {g.dtype for g in jax.tree.leaves(grad)} == {jnp.dtype("float32")}
    outputs[dtype] = float(value)
    grads[dtype] = np.concatenate([np.ravel(g) for g in jax.tree.leaves(grad)])
  assert outputs["bfloat16"] == pytest.approx(outputs["float32"], rel=2e-2)
  cosine = grads["bfloat16"] @ grads["float32"] / (
      np.linalg.norm(grads["bfloat16"]) * np.linalg.norm(grads["float32"]))
  assert cosine > min_cosine


@pytest.mark.slow
def test_a_bfloat16_run_trains_and_keeps_float32_state(tmp_path):
  config = lenet5_mnist.get_config("none")
  config.manual_dir = str(data_path("mnist"))
  config.train_set_size, config.val_set_size, config.test_set_size = 2000, 500, 1000
  config.max_epochs = config.min_epochs = 2
  config.finetuning_max_epochs = config.finetuning_min_epochs = 1
  config.prune_window, config.train_batch_size = 1, 100
  config.dtype, config.quiet = "bfloat16", True
  [row] = run(config, tmp_path)
  assert row["final_test_accuracy"] > 0.9  # float32: 0.95 on these 2,000 images
  state = load_run(tmp_path).state
  dtypes = {leaf.dtype for leaf in jax.tree.leaves((state.params, state.opt_state))
            if jnp.issubdtype(leaf.dtype, jnp.floating)}
  assert dtypes == {jnp.dtype("float32")}


def test_bfloat16_is_refused_for_models_without_it():
  config = lenet5_mnist.get_config("none")
  config.architecture, config.dtype = "lenet_300_100", "bfloat16"
  with pytest.raises(ConfigError, match=r"'dtype'.*capability 'mixed_precision'"):
    validate(config)
