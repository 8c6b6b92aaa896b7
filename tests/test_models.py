"""Models: parameter counts, shapes, gates, BatchNorm/Dropout modes, covers."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sparsejax import masks
from sparsejax import models

TEACHER = (2, 5, 8, 1)
STUDENT = (2, 25, 25, 1)
MNIST = (28, 28, 1)
CIFAR = (32, 32, 3)

# name -> (model, per-example input shape); every model in the package.
CASES = {
    "teacher": (models.MLP(TEACHER), (2,)),
    "student": (models.MLP(STUDENT), (2,)),
    "lenet_300_100": (models.lenet_300_100(), MNIST),
    "lenet5_caffe": (models.LeNet5Caffe(), MNIST),
    "vgg16_bn": (models.VGG16BN(), CIFAR),
}


def inputs(shape, batch=2, seed=1):
  return jnp.asarray(np.random.default_rng(seed).standard_normal((batch,) + shape), jnp.float32)


def random_variables(model, x, seed=0):
  """Variables with ``model.init``'s structure, drawn uniformly with NumPy.

  On CPU, ``model.init`` spends seconds compiling one random generator per
  leaf shape; these tests only need some generic weights. Uniform float32
  draws, which NumPy makes several times faster than normal ones (ViT-B/16
  has 86M parameters). Kernels have
  variance 1/fan_in, other parameters spread 0.1 around 0 (1 for scales),
  BatchNorm statistics are ``init``'s (mean 0, variance 1).
  """
  rng = np.random.default_rng(seed)
  shapes = jax.eval_shape(model.init, jax.random.key(0), x)

  def draw(path, s):
    name = masks.path_str(path).rsplit("/", 1)[-1]
    if name in ("mean", "var"):
      return jnp.full(s.shape, float(name == "var"), s.dtype)
    z = rng.random(s.shape, dtype=np.float32)
    z = np.sqrt(3.0, dtype=np.float32) * (2 * z - 1)  # mean 0, variance 1
    if name == "kernel":
      z = z / np.sqrt(np.prod(s.shape[:-1]), dtype=np.float32)
    else:
      z = 0.1 * z + (1.0 if name == "scale" else 0.0)
    return jnp.asarray(z, s.dtype)
  return jax.tree_util.tree_map_with_path(draw, shapes)


@functools.cache
def init(name):
  """``(model, variables, x)`` for the case ``name``, at batch 2."""
  model, shape = CASES[name]
  x = inputs(shape)
  return model, random_variables(model, x), x


def param_shapes(name):
  """The ``params`` tree of case ``name`` as shapes (no computation)."""
  model, shape = CASES[name]
  return jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1,) + shape))["params"]


def leaf(params, path):
  for key in path.split("/"):
    params = params[key]
  return params


def set_leaf(params, path, value):
  params = jax.tree.map(lambda p: p, params)  # copy the containers
  node = params
  *parents, last = path.split("/")
  for key in parents:
    node = node[key]
  node[last] = value
  return params


# --------------------------------------------------------------------------
# Parameter counts and shapes


def param_count(tree) -> int:
  """Entries of a parameter tree (arrays or ``jax.ShapeDtypeStruct``)."""
  return sum(int(np.size(leaf)) for leaf in jax.tree.leaves(tree))


@pytest.mark.parametrize("name, expected", [
    ("teacher", 15 + 48 + 9),           # 2*5+5, 5*8+8, 8*1+1
    ("student", 75 + 650 + 26),         # 2*25+25, 25*25+25, 25*1+1
    ("lenet_300_100", 266_610),         # 784*300+300 + 300*100+100 + 100*10+10
    ("lenet5_caffe", 431_080),          # 520 + 25,050 + 400,500 + 5,010
    ("vgg16_bn", 15_253_578),
])
def test_parameter_counts(name, expected):
  assert param_count(param_shapes(name)) == expected


def test_teacher_init():
  model = models.MLP(TEACHER)
  variables = model.init(jax.random.key(0), jnp.zeros((1, 2)))
  shapes = jax.tree.map(jnp.shape, variables)
  assert shapes["params"] == {
      "Dense_0": {"kernel": (2, 5), "bias": (5,)},
      "Dense_1": {"kernel": (5, 8), "bias": (8,)},
      "Dense_2": {"kernel": (8, 1), "bias": (1,)},
  }


@pytest.mark.parametrize("name, out", [
    ("teacher", 1), ("student", 1), ("lenet_300_100", 10), ("lenet5_caffe", 10),
    ("vgg16_bn", 10)])
def test_output_shapes(name, out):
  model, variables, x = init(name)
  y = model.apply(variables, x)
  assert y.shape == (2, out) and y.dtype == jnp.float32


def test_mlp_flattens_images_and_checks_the_input_width():
  model, variables, x = init("lenet_300_100")
  flat = model.apply(variables, x.reshape(2, 784))
  np.testing.assert_allclose(model.apply(variables, x), flat, rtol=1e-6)
  with pytest.raises(ValueError, match="widths\\[0\\] = 784"):
    model.apply(variables, jnp.zeros((2, 10)))


def test_vgg_rejects_inputs_other_than_32x32():
  with pytest.raises(ValueError, match="32x32"):
    jax.eval_shape(models.VGG16BN().init, jax.random.key(0), jnp.zeros((1, 64, 64, 3)))


# --------------------------------------------------------------------------
# Gates


@pytest.mark.parametrize("name, site, unit", [
    ("teacher", "Dense_0", 2), ("student", "Dense_1", 7),
    ("lenet_300_100", "Dense_1", 42), ("lenet5_caffe", "Conv_0", 4),
    ("lenet5_caffe", "Conv_1", 13), ("lenet5_caffe", "Dense_0", 99),
    ("vgg16_bn", "Conv_3", 5), ("vgg16_bn", "Dense_1", 17)])
def test_zero_gate_cuts_the_unit_off_its_incoming_weights(name, site, unit):
  model, variables, x = init(name)
  n = model.gate_sites()[site]
  gates = {site: jnp.ones(n).at[unit].set(0.0)}
  params = variables["params"]
  kernel = leaf(params, f"{site}/kernel")
  bias = leaf(params, f"{site}/bias")
  perturbed = set_leaf(params, f"{site}/kernel", kernel.at[..., unit].add(1.0))
  perturbed = set_leaf(perturbed, f"{site}/bias", bias.at[unit].add(1.0))
  moved = {**variables, "params": perturbed}

  np.testing.assert_array_equal(model.apply(variables, x, gates=gates),
                                model.apply(moved, x, gates=gates))
  # Without the gate the perturbation shows.
  assert not np.allclose(model.apply(variables, x), model.apply(moved, x))


@pytest.mark.parametrize("name", list(CASES))
def test_ones_gates_equal_no_gates(name):
  model, variables, x = init(name)
  ones = {site: jnp.ones(n) for site, n in model.gate_sites().items()}
  np.testing.assert_allclose(model.apply(variables, x, gates=ones),
                             model.apply(variables, x), rtol=1e-6, atol=1e-6)
  np.testing.assert_array_equal(model.apply(variables, x, gates={}),
                                model.apply(variables, x))


@pytest.mark.parametrize("name, site, per_example_shape", [
    ("student", "Dense_0", (2, 25)),
    ("lenet5_caffe", "Conv_1", (2, 50)),
    ("lenet5_caffe", "Conv_0", (2, 1, 1, 20)),
    ("lenet5_caffe", "Dense_0", (2, 500))])
def test_per_example_gates(name, site, per_example_shape):
  model, variables, x = init(name)
  n = model.gate_sites()[site]
  rows = jnp.asarray(np.random.default_rng(3).uniform(size=(2, n)), jnp.float32)
  gate = rows.reshape(per_example_shape)
  out = model.apply(variables, x, gates={site: gate})
  for b in range(2):
    shared = model.apply(variables, x, gates={site: rows[b]})
    np.testing.assert_allclose(out[b], shared[b], rtol=1e-5, atol=1e-6)
  # The two examples really got different gates.
  swapped = model.apply(variables, x, gates={site: rows[::-1].reshape(per_example_shape)})
  assert not np.allclose(out, swapped)


@pytest.mark.parametrize("name", list(CASES))
def test_unknown_gate_site_raises_with_the_valid_sites(name):
  model, variables, x = init(name)
  first = next(iter(model.gate_sites()))
  with pytest.raises(ValueError, match="Dense_99") as err:
    model.apply(variables, x, gates={"Dense_99": jnp.ones(3)})
  assert first in str(err.value)


def test_output_layer_is_not_a_gate_site():
  assert list(models.MLP(TEACHER).gate_sites()) == ["Dense_0", "Dense_1"]
  assert models.lenet_300_100().gate_sites() == {"Dense_0": 300, "Dense_1": 100}
  assert models.LeNet5Caffe().gate_sites() == {"Conv_0": 20, "Conv_1": 50, "Dense_0": 500}
  vgg_sites = models.VGG16BN(fc_size=64).gate_sites()
  assert list(vgg_sites) == [f"Conv_{i}" for i in range(13)] + ["Dense_0", "Dense_1"]
  assert [vgg_sites[f"Conv_{i}"] for i in range(13)] == [
      c for c in models.VGG16_CONFIG if c != "M"]
  assert vgg_sites["Dense_1"] == 64


# --------------------------------------------------------------------------
# BatchNorm and Dropout


def test_batchnorm_train_uses_batch_statistics_and_updates_them():
  model, variables, x = init("vgg16_bn")
  rngs = {"dropout": jax.random.key(5)}
  eval_out = model.apply(variables, x, train=False)
  train_out, updates = model.apply(variables, x, train=True, rngs=rngs,
                                   mutable=["batch_stats"])
  assert not np.allclose(train_out, eval_out)
  old, new = variables["batch_stats"], updates["batch_stats"]
  assert jax.tree.structure(old) == jax.tree.structure(new)
  # momentum 0.9: new mean = 0.9 * 0 + 0.1 * batch mean of Conv_0's output.
  conv0 = jax.lax.conv_general_dilated(
      x, variables["params"]["Conv_0"]["kernel"], (1, 1), "SAME",
      dimension_numbers=("NHWC", "HWIO", "NHWC")) + variables["params"]["Conv_0"]["bias"]
  np.testing.assert_allclose(new["BatchNorm_0"]["mean"], 0.1 * conv0.mean(axis=(0, 1, 2)),
                             rtol=1e-4, atol=1e-6)
  assert not np.allclose(new["BatchNorm_12"]["var"], old["BatchNorm_12"]["var"])


def test_dropout_is_active_only_in_train_mode():
  model, variables, x = init("vgg16_bn")

  def run(train, seed):
    out = model.apply(variables, x, train=train, rngs={"dropout": jax.random.key(seed)},
                      mutable=["batch_stats"] if train else False)
    return out[0] if train else out

  np.testing.assert_array_equal(run(True, 1), run(True, 1))
  assert not np.allclose(run(True, 1), run(True, 2))
  np.testing.assert_array_equal(run(False, 1), run(False, 2))
  np.testing.assert_array_equal(run(False, 1), model.apply(variables, x))


# --------------------------------------------------------------------------
# dtypes


def test_float64():
  with jax.enable_x64(True):
    model = models.MLP(TEACHER, dtype=jnp.float64, param_dtype=jnp.float64)
    x = jnp.ones((3, 2), jnp.float64)
    variables = model.init(jax.random.key(0), x)
    assert all(p.dtype == jnp.float64 for p in jax.tree.leaves(variables["params"]))
    out = model.apply(variables, x, gates={"Dense_0": jnp.ones(5, jnp.float32)})
    assert out.dtype == jnp.float64
    assert out.shape == (3, 1)


# --------------------------------------------------------------------------
# Unit covers


@pytest.mark.parametrize("name", list(CASES))
def test_unit_covers_name_existing_leaves_with_the_unit_count(name):
  model = CASES[name][0]
  params = param_shapes(name)
  sites, covers = model.gate_sites(), model.unit_covers()
  assert list(covers) == list(sites)
  for site, entries in covers.items():
    assert (f"{site}/kernel", -1) in entries and (f"{site}/bias", 0) in entries
    for path, axis in entries:
      assert leaf(params, path).shape[axis] == sites[site], (site, path)


@pytest.mark.parametrize("name, site, unit", [
    ("student", "Dense_0", 3), ("lenet5_caffe", "Conv_0", 6),
    ("lenet5_caffe", "Conv_1", 30), ("lenet5_caffe", "Dense_0", 250),
    ("vgg16_bn", "Conv_0", 11), ("vgg16_bn", "Conv_12", 100)])
def test_pruning_a_unit_through_its_covers_equals_a_zero_gate(name, site, unit):
  model, variables, x = init(name)
  params = variables["params"]
  units = {s: jnp.ones(n, bool) for s, n in model.gate_sites().items()}
  units[site] = units[site].at[unit].set(False)
  covers = model.unit_covers()
  prune = jax.jit(lambda p: masks.apply(masks.unit_masks(p, units, covers), p))
  pruned = {**variables, "params": prune(params)}
  gated = model.apply(variables, x, gates={site: units[site].astype(jnp.float32)})
  np.testing.assert_allclose(model.apply(pruned, x), gated, rtol=1e-5, atol=1e-6)
  for path, axis in covers[site]:
    removed = np.take(np.asarray(leaf(pruned["params"], path)), unit, axis=axis)
    assert not removed.any(), path


# --------------------------------------------------------------------------
# Registry and configuration errors


def test_get_model():
  mlp = models.get_model("mlp", widths=list(TEACHER))
  assert mlp == models.MLP(TEACHER)
  hash(mlp)  # list widths are stored as a tuple: jax.jit(mlp.apply) works
  assert models.get_model("lenet_300_100") == models.lenet_300_100()
  assert isinstance(models.get_model("lenet5_caffe"), models.LeNet5Caffe)
  assert models.get_model("vgg16_bn", dropout=0.1).dropout == 0.1
  with pytest.raises(ValueError, match="'resnet'.*lenet5_caffe.*vgg16_bn"):
    models.get_model("resnet")


def test_unknown_activation_raises_with_the_valid_ones():
  _, variables, x = init("teacher")
  with pytest.raises(ValueError, match="'swish'.*gelu.*identity.*relu.*sigmoid.*tanh"):
    models.MLP(TEACHER, activation="swish").apply(variables, x)


NUMPY_ACTIVATIONS = {
    "tanh": np.tanh,
    "relu": lambda z: np.maximum(z, 0.0),
    "sigmoid": lambda z: 1.0 / (1.0 + np.exp(-z)),
    # Flax's gelu is the tanh approximation.
    "gelu": lambda z: 0.5 * z * (1 + np.tanh(np.sqrt(2 / np.pi) * (z + 0.044715 * z**3))),
    "identity": lambda z: z,
}


@pytest.mark.parametrize("activation", sorted(models.ACTIVATIONS))
def test_mlp_matches_a_numpy_forward(activation):
  assert set(NUMPY_ACTIVATIONS) == set(models.ACTIVATIONS)
  act = NUMPY_ACTIVATIONS[activation]
  _, variables, x = init("teacher")
  p = jax.tree.map(np.asarray, variables["params"])
  h = act(np.asarray(x) @ p["Dense_0"]["kernel"] + p["Dense_0"]["bias"])
  h = act(h @ p["Dense_1"]["kernel"] + p["Dense_1"]["bias"])
  expected = h @ p["Dense_2"]["kernel"] + p["Dense_2"]["bias"]
  out = models.MLP(TEACHER, activation=activation).apply(variables, x)
  np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)
