"""BMRS architectures: BMRS MLP and LeNet-5, ResNet-18/50, ViTs.

Parameter counts are computed by hand here and checked on the full-size
models through ``jax.eval_shape`` (no computation). The behaviour tests
(gates, covers, BatchNorm) run on the small models and on reduced
configurations of the shared ResNet / ViT code; ResNet-50 and ViT-B/16 run
one real forward at 32x32.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.scipy.special import erf

from sparsejax import masks
from sparsejax import models
from tests.test_models import inputs, leaf, param_count, random_variables, set_leaf

MNIST32 = (32, 32, 1)
CIFAR = (32, 32, 3)
IMAGENET = (224, 224, 3)

TINY_BOTTLENECK = models.ResNet(stage_sizes=(1, 1), block="bottleneck", stem="imagenet",
                                width=4, num_classes=3)
TINY_BASIC = models.ResNet(stage_sizes=(1, 1), block="basic", stem="cifar", width=4,
                           num_classes=3)
TINY_VIT = models.ViT(num_classes=3, patch=4, hidden=8, depth=2, heads=2, mlp_dim=16)

# name -> (model, per-example input shape) for the behaviour tests.
CASES = {
    "bmrs_mlp": (models.bmrs_mlp(), MNIST32),
    "bmrs_lenet5": (models.BMRSLeNet5(in_channels=3), CIFAR),
    "resnet18": (models.resnet18(), CIFAR),
    "resnet_bottleneck": (TINY_BOTTLENECK, (16, 16, 3)),
    "vit_small": (models.vit_small_cifar(), CIFAR),
}


@functools.cache
def init(name):
  """``(model, variables, x)`` for the case ``name``, at batch 2."""
  model, shape = CASES[name]
  x = inputs(shape)
  return model, random_variables(model, x), x


def shapes(model, shape):
  """The variables of ``model`` at per-example input ``shape``, as shapes."""
  return jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1,) + shape))


# --------------------------------------------------------------------------
# Parameter counts, computed by hand


def conv_bn(k, c_in, c_out):
  """A bias-free k x k conv and its BatchNorm scale and bias."""
  return k * k * c_in * c_out + 2 * c_out


def resnet18_count(classes):
  count = conv_bn(3, 3, 64) + 4 * conv_bn(3, 64, 64)
  for c_in, c in ((64, 128), (128, 256), (256, 512)):
    count += conv_bn(3, c_in, c) + 3 * conv_bn(3, c, c) + conv_bn(1, c_in, c)
  return count + 512 * classes + classes


def resnet50_count(classes):
  count, c_in = conv_bn(7, 3, 64), 64
  for w, n in ((64, 3), (128, 4), (256, 6), (512, 3)):
    count += conv_bn(1, c_in, 4 * w)  # projection shortcut of the first block
    for b in range(n):
      count += conv_bn(1, c_in if b == 0 else 4 * w, w) + conv_bn(3, w, w) + conv_bn(1, w, 4 * w)
    c_in = 4 * w
  return count + 2048 * classes + classes


def vit_count(image, patch, hidden, depth, mlp, classes, channels=3):
  tokens = (image // patch) ** 2 + 1
  block = (2 * 2 * hidden                      # two LayerNorms
           + 4 * (hidden * hidden + hidden)    # query, key, value, attn_out
           + hidden * mlp + mlp + mlp * hidden + hidden)
  return (patch * patch * channels * hidden + hidden  # patch embedding
          + hidden + tokens * hidden                  # cls, position embeddings
          + depth * block + 2 * hidden + hidden * classes + classes)


@pytest.mark.parametrize("model, shape, expected", [
    (models.bmrs_mlp(), MNIST32, 1024 * 50 + 50 + 5 * (50 * 50 + 50) + 50 * 10 + 10),
    (models.bmrs_mlp(in_dim=3072), CIFAR, 3072 * 50 + 50 + 5 * (50 * 50 + 50) + 510),
    (models.bmrs_mlp(n_layers=2, hidden_dim=7, num_classes=4), MNIST32,
     1024 * 7 + 7 + 2 * (7 * 7 + 7) + 7 * 4 + 4),
    (models.BMRSLeNet5(), MNIST32,
     1 * 6 * 25 + 6 + 6 * 16 * 25 + 16 + 400 * 120 + 120 + 120 * 84 + 84 + 84 * 10 + 10),
    (models.BMRSLeNet5(in_channels=3), CIFAR,
     3 * 18 * 25 + 18 + 18 * 48 * 25 + 48 + 1200 * 360 + 360 + 360 * 252 + 252 + 252 * 10 + 10),
    (models.resnet18(), CIFAR, resnet18_count(10)),
    (models.resnet18(num_classes=100), CIFAR, resnet18_count(100)),
    (models.resnet50(), IMAGENET, resnet50_count(1000)),
    (models.vit_small_cifar(), CIFAR, vit_count(32, 4, 192, 6, 384, 10)),
    (models.vit_b16(), IMAGENET, vit_count(224, 16, 768, 12, 3072, 1000)),
])
def test_parameter_counts(model, shape, expected):
  assert param_count(shapes(model, shape)["params"]) == expected


def test_published_parameter_counts():
  assert models.bmrs_mlp().widths == (1024,) + (50,) * 6 + (10,)
  assert resnet18_count(10) == 11_173_962      # the usual CIFAR ResNet-18
  assert resnet50_count(1000) == 25_557_032    # torchvision resnet50
  assert vit_count(224, 16, 768, 12, 3072, 1000) == 86_567_656  # timm vit_base_patch16_224
  assert vit_count(32, 4, 192, 6, 384, 10) == 1_806_538
  # BMRS LeNet-5 for C = 1 and C = 3 (widths 6/16/120/84 and 18/48/360/252).
  assert (1 * 6 * 25 + 6) + (6 * 16 * 25 + 16) + (400 * 120 + 120) + (120 * 84 + 84) + (
      84 * 10 + 10) == 61_706
  assert (3 * 18 * 25 + 18) + (18 * 48 * 25 + 48) + (1200 * 360 + 360) + (360 * 252 + 252) + (
      252 * 10 + 10) == 548_878


def test_resnet_running_statistics_are_not_parameters():
  variables = shapes(models.resnet18(), CIFAR)
  assert set(variables) == {"params", "batch_stats"}
  stats = variables["batch_stats"]
  assert set(stats) == set(models.resnet18().gate_sites())
  assert stats["BatchNorm_19"]["mean"].shape == (512,)
  assert "bias" not in variables["params"]["Conv_0"]


# --------------------------------------------------------------------------
# Gate sites and covers


def test_gate_sites():
  assert models.bmrs_mlp().gate_sites() == {f"Dense_{i}": 50 for i in range(6)}
  assert models.bmrs_mlp(n_layers=0, hidden_dim=9).gate_sites() == {"Dense_0": 9}
  assert models.BMRSLeNet5().gate_sites() == {
      "Conv_0": 6, "Conv_1": 16, "Dense_0": 120, "Dense_1": 84}
  assert models.BMRSLeNet5(in_channels=3).gate_sites() == {
      "Conv_0": 18, "Conv_1": 48, "Dense_0": 360, "Dense_1": 252}

  sites18 = models.resnet18().gate_sites()
  assert list(sites18) == [f"BatchNorm_{i}" for i in range(20)]
  # stem, 4 in stage 1, then per stage: conv, conv, projection, conv, conv.
  assert list(sites18.values()) == [64] * 5 + [128] * 5 + [256] * 5 + [512] * 5

  sites50 = models.resnet50().gate_sites()
  assert list(sites50) == [f"BatchNorm_{i}" for i in range(53)]
  expected = [64]
  for w, n in ((64, 3), (128, 4), (256, 6), (512, 3)):
    expected += [w, w, 4 * w, 4 * w] + [w, w, 4 * w] * (n - 1)
  assert list(sites50.values()) == expected

  vit = models.vit_b16().gate_sites()
  assert len(vit) == 24 and set(vit.values()) == {768}
  assert list(vit)[:3] == ["Block_0/attn_out", "Block_0/mlp_out", "Block_1/attn_out"]
  assert list(vit)[-1] == "Block_11/mlp_out"
  assert models.vit_small_cifar().gate_sites() == {
      f"Block_{i}/{s}": 192 for i in range(6) for s in ("attn_out", "mlp_out")}


def test_resnet_projection_shortcuts_sit_where_the_shape_changes():
  stem, blocks = models.resnet18().plan()
  assert stem == (0, 64, 3, 1)
  assert [b.shortcut.index if b.shortcut else None for b in blocks] == [
      None, None, 7, None, 12, None, 17, None]
  assert [b.main[0].stride for b in blocks] == [1, 1, 2, 1, 2, 1, 2, 1]
  stem, blocks = models.resnet50().plan()
  assert stem == (0, 64, 7, 2)
  # v1.5: the stride is on the 3x3 conv of the block.
  first_of_stage2 = blocks[3]
  assert [(c.kernel, c.stride) for c in first_of_stage2.main] == [(1, 1), (3, 2), (1, 1)]
  assert first_of_stage2.shortcut == (14, 512, 1, 2)
  assert blocks[0].shortcut == (4, 256, 1, 1)  # 64 -> 256 channels


@pytest.mark.parametrize("model, shape", [
    (models.bmrs_mlp(), MNIST32), (models.BMRSLeNet5(), MNIST32),
    (models.BMRSLeNet5(in_channels=3), CIFAR), (models.resnet18(), CIFAR),
    (models.resnet50(), IMAGENET), (models.vit_small_cifar(), CIFAR),
    (models.vit_b16(), IMAGENET)])
def test_unit_covers_name_existing_leaves_with_the_unit_count(model, shape):
  params = shapes(model, shape)["params"]
  sites, covers = model.gate_sites(), model.unit_covers()
  assert list(covers) == list(sites)
  for site, entries in covers.items():
    for path, axis in entries:
      assert leaf(params, path).shape[axis] == sites[site], (site, path)
  # unit_masks accepts the covers (abstractly: no computation).
  units = {s: jnp.ones(n, bool) for s, n in sites.items()}
  tree = jax.eval_shape(
      lambda p: masks.unit_masks(p, units, covers, masks.ones_like(p, masks.every_leaf)), params)
  assert jax.tree.structure(tree) == jax.tree.structure(params)


def test_resnet_and_vit_covers():
  covers = models.resnet50().unit_covers()
  assert covers["BatchNorm_14"] == [
      ("Conv_14/kernel", -1), ("BatchNorm_14/scale", 0), ("BatchNorm_14/bias", 0)]
  assert models.vit_b16().unit_covers()["Block_7/mlp_out"] == [
      ("Block_7/mlp_out/kernel", -1), ("Block_7/mlp_out/bias", 0)]


# --------------------------------------------------------------------------
# Forward passes


@pytest.mark.parametrize("name, out", [
    ("bmrs_mlp", 10), ("bmrs_lenet5", 10), ("resnet18", 10), ("resnet_bottleneck", 3),
    ("vit_small", 10)])
def test_output_shapes(name, out):
  model, variables, x = init(name)
  y = model.apply(variables, x)
  assert y.shape == (2, out) and y.dtype == jnp.float32
  assert np.isfinite(y).all()


@pytest.mark.parametrize("model", [models.resnet50(num_classes=7),
                                   models.vit_b16(num_classes=7)])
def test_large_models_run_at_32x32(model):
  x = inputs(CIFAR, batch=1)
  variables = random_variables(model, x)
  ones = {s: jnp.ones(n) for s, n in model.gate_sites().items()}
  site = list(ones)[-1]
  apply = jax.jit(model.apply)  # compiled once: both calls have all the sites
  y = apply(variables, x, gates=ones)
  assert y.shape == (1, 7) and np.isfinite(y).all()
  gated = apply(variables, x, gates={**ones, site: jnp.zeros_like(ones[site])})
  assert not np.allclose(y, gated)


def test_bmrs_lenet5_checks_the_input():
  _, variables, _ = init("bmrs_lenet5")
  with pytest.raises(ValueError, match="32, 32, 3"):
    models.BMRSLeNet5(in_channels=3).apply(variables, jnp.zeros((1, 28, 28, 3)))
  with pytest.raises(ValueError, match="32, 32, 1"):
    jax.eval_shape(models.BMRSLeNet5().init, jax.random.key(0), jnp.zeros((1, 32, 32, 3)))


def test_vit_checks_the_patch_grid_and_heads():
  with pytest.raises(ValueError, match="multiples of the patch size 16"):
    jax.eval_shape(models.vit_b16().init, jax.random.key(0), jnp.zeros((1, 40, 40, 3)))
  with pytest.raises(ValueError, match="heads"):
    jax.eval_shape(models.ViT(hidden=10, heads=3).init, jax.random.key(0),
                   jnp.zeros((1, 8, 8, 3)))


def test_resnet_rejects_an_unknown_block_or_stem():
  with pytest.raises(ValueError, match="block"):
    models.ResNet(stage_sizes=(1,), block="wide").gate_sites()
  with pytest.raises(ValueError, match="stem"):
    models.ResNet(stage_sizes=(1,), stem="tiny").gate_sites()


# Independent references on tiny configurations: plain jnp / lax code that
# follows the architecture description, reading the parameters by name.


def _conv(x, kernel, stride, pad):
  return jax.lax.conv_general_dilated(x, kernel, (stride, stride), [(pad, pad)] * 2,
                                      dimension_numbers=("NHWC", "HWIO", "NHWC"))


def _reference_resnet(variables, x, gates, bottleneck):
  p, s = variables["params"], variables["batch_stats"]

  def cbn(x, i, stride, pad):
    y = _conv(x, p[f"Conv_{i}"]["kernel"], stride, pad)
    bn, st = p[f"BatchNorm_{i}"], s[f"BatchNorm_{i}"]
    y = (y - st["mean"]) / jnp.sqrt(st["var"] + 1e-5) * bn["scale"] + bn["bias"]
    return y * gates[f"BatchNorm_{i}"]

  relu = jax.nn.relu
  if bottleneck:
    x = relu(cbn(x, 0, 2, 3))
    x = jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 3, 3, 1), (1, 2, 2, 1),
                              [(0, 0), (1, 1), (1, 1), (0, 0)])
    for first, stride in ((1, 1), (5, 2)):
      y = relu(cbn(x, first, 1, 0))
      y = relu(cbn(y, first + 1, stride, 1))
      y = cbn(y, first + 2, 1, 0)
      x = relu(y + cbn(x, first + 3, stride, 0))
  else:
    x = relu(cbn(x, 0, 1, 1))
    x = relu(cbn(relu(cbn(x, 1, 1, 1)), 2, 1, 1) + x)  # identity shortcut
    y = cbn(relu(cbn(x, 3, 2, 1)), 4, 1, 1)
    x = relu(y + cbn(x, 5, 2, 0))
  x = x.mean(axis=(1, 2))
  return x @ p["Dense_0"]["kernel"] + p["Dense_0"]["bias"]


@pytest.mark.parametrize("model, bottleneck", [(TINY_BOTTLENECK, True), (TINY_BASIC, False)])
def test_resnet_matches_a_reference_forward(model, bottleneck):
  x = inputs((16, 16, 3), batch=2)
  variables = random_variables(model, x)
  rng = np.random.default_rng(7)
  variables["batch_stats"] = jax.tree.map(
      lambda v: jnp.asarray(rng.uniform(0.5, 1.5, v.shape), jnp.float32), variables["batch_stats"])
  gates = {s: jnp.asarray(rng.uniform(0.5, 1.5, n), jnp.float32)
           for s, n in model.gate_sites().items()}
  assert len(gates) == (9 if bottleneck else 6)
  expected = _reference_resnet(variables, x, gates, bottleneck)
  np.testing.assert_allclose(model.apply(variables, x, gates=gates), expected,
                             rtol=1e-4, atol=1e-5)


def _layer_norm(x, p):
  mean = x.mean(-1, keepdims=True)
  var = ((x - mean) ** 2).mean(-1, keepdims=True)
  return (x - mean) / np.sqrt(var + 1e-6) * p["scale"] + p["bias"]


def _reference_vit(params, x, gates, model):
  p = jax.tree.map(np.asarray, params)
  x = np.asarray(x)
  b, h, w, c = x.shape
  k, d, nh = model.patch, model.hidden, model.heads
  patches = x.reshape(b, h // k, k, w // k, k, c).transpose(0, 1, 3, 2, 4, 5)
  tokens = patches.reshape(b, -1, k * k * c) @ p["Conv_0"]["kernel"].reshape(-1, d)
  tokens = tokens + p["Conv_0"]["bias"]
  x = np.concatenate([np.broadcast_to(p["cls"], (b, 1, d)), tokens], 1) + p["pos_embedding"]
  dense = lambda z, q: z @ q["kernel"] + q["bias"]  # noqa: E731
  for i in range(model.depth):
    blk = p[f"Block_{i}"]
    y = _layer_norm(x, blk["LayerNorm_0"])
    q, kk, v = (dense(y, blk[n]).reshape(b, -1, nh, d // nh) for n in ("query", "key", "value"))
    att = np.einsum("bqhd,bkhd->bhqk", q, kk) / math.sqrt(d // nh)
    att = np.exp(att - att.max(-1, keepdims=True))
    att = att / att.sum(-1, keepdims=True)
    y = np.einsum("bhqk,bkhd->bqhd", att, v).reshape(b, -1, d)
    x = x + dense(y, blk["attn_out"]) * gates[f"Block_{i}/attn_out"]
    y = dense(_layer_norm(x, blk["LayerNorm_1"]), blk["mlp_in"])
    y = 0.5 * y * (1 + np.asarray(erf(y / np.sqrt(2))))
    x = x + dense(y, blk["mlp_out"]) * gates[f"Block_{i}/mlp_out"]
  x = _layer_norm(x, p["LayerNorm_0"])
  return dense(x[:, 0], p["Dense_0"])


def test_vit_matches_a_reference_forward():
  model = TINY_VIT
  x = inputs((8, 12, 3), batch=2)
  variables = random_variables(model, x)
  assert variables["params"]["pos_embedding"].shape == (1, 2 * 3 + 1, 8)
  rng = np.random.default_rng(7)
  gates = {s: rng.uniform(0.5, 1.5, n).astype(np.float32)
           for s, n in model.gate_sites().items()}
  expected = _reference_vit(variables["params"], x, gates, model)
  np.testing.assert_allclose(model.apply(variables, x, gates=gates), expected,
                             rtol=1e-4, atol=1e-5)


# --------------------------------------------------------------------------
# Gates


# (case, site, unit): first and last sites, and the ResNet projections and
# block outputs (gated before the residual addition).
SITE_CASES = [
    ("bmrs_mlp", "Dense_0", 3), ("bmrs_mlp", "Dense_5", 49),
    ("bmrs_lenet5", "Conv_0", 5), ("bmrs_lenet5", "Conv_1", 40),
    ("bmrs_lenet5", "Dense_0", 300), ("bmrs_lenet5", "Dense_1", 7),
    ("resnet18", "BatchNorm_7", 100), ("resnet18", "BatchNorm_19", 500),
    ("resnet_bottleneck", "BatchNorm_0", 2), ("resnet_bottleneck", "BatchNorm_3", 13),
    ("resnet_bottleneck", "BatchNorm_4", 13), ("resnet_bottleneck", "BatchNorm_6", 5),
    ("vit_small", "Block_0/attn_out", 17), ("vit_small", "Block_5/mlp_out", 191),
]


def _perturb_unit(params, covers, unit):
  """Adds 1 to every entry that ``covers`` assigns to ``unit``."""
  for path, axis in covers:
    value = leaf(params, path)
    index = [slice(None)] * value.ndim
    index[axis] = unit
    params = set_leaf(params, path, value.at[tuple(index)].add(1.0))
  return params


@functools.cache
def pruner(name):
  """Jitted ``(params, units) -> params`` zeroing the covers of pruned units.

  Compiled once per model: eagerly, the per-leaf operations compile one by
  one, which takes seconds on the ResNets.
  """
  covers = CASES[name][0].unit_covers()
  return jax.jit(lambda p, units: masks.apply(masks.unit_masks(p, units, covers), p))


@pytest.mark.parametrize("name, site, unit", SITE_CASES)
def test_zero_gate_and_pruning_through_the_covers_cut_the_unit_off(name, site, unit):
  """A zero gate hides the unit's covered weights; pruning them equals the gate.

  The covered entries are first moved by +1, so the unit is alive on the
  inputs (a dead relu unit would make the comparisons vacuous).
  """
  model, variables, x = init(name)
  covers = model.unit_covers()
  units = {s: jnp.ones(n, bool) for s, n in model.gate_sites().items()}
  units[site] = units[site].at[unit].set(False)
  gates = {site: units[site].astype(jnp.float32)}
  params = variables["params"]
  moved = _perturb_unit(params, covers[site], unit)

  gated = model.apply({**variables, "params": moved}, x, gates=gates)
  np.testing.assert_array_equal(gated, model.apply(variables, x, gates=gates))
  # Without the gate the unit (and so the perturbation) shows.
  assert not np.allclose(model.apply({**variables, "params": moved}, x), gated)

  pruned = pruner(name)(moved, units)
  for path, axis in covers[site]:
    removed = np.take(np.asarray(leaf(pruned, path)), unit, axis=axis)
    assert not removed.any(), path
  # Only the covered entries changed.
  changed = sum(int(np.sum(np.asarray(a) != np.asarray(b)))
                for a, b in zip(jax.tree.leaves(moved), jax.tree.leaves(pruned)))
  assert changed == sum(math.prod(leaf(params, path).shape) // model.gate_sites()[site]
                        for path, _ in covers[site])
  np.testing.assert_allclose(model.apply({**variables, "params": pruned}, x), gated,
                             rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", list(CASES))
def test_ones_gates_equal_no_gates(name):
  model, variables, x = init(name)
  ones = {site: jnp.ones(n) for site, n in model.gate_sites().items()}
  np.testing.assert_allclose(model.apply(variables, x, gates=ones),
                             model.apply(variables, x), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name, ndim", [
    ("bmrs_mlp", 2), ("bmrs_lenet5", None), ("resnet_bottleneck", 4), ("vit_small", 3)])
def test_callable_gates_are_called_on_the_activations(name, ndim):
  model, variables, x = init(name)
  rng = np.random.default_rng(4)
  arrays = {s: jnp.asarray(rng.uniform(0.5, 1.5, n), jnp.float32)
            for s, n in model.gate_sites().items()}
  seen = {}

  def make(site):
    def gate(h):
      seen[site] = h.shape
      return h * arrays[site]
    return gate

  out = model.apply(variables, x, gates={s: make(s) for s in arrays})
  assert list(seen) == list(arrays)  # every site, in network order
  for site, shape in seen.items():
    assert shape[0] == 2 and shape[-1] == arrays[site].shape[0]
    if ndim is not None:
      assert len(shape) == ndim
  np.testing.assert_allclose(out, model.apply(variables, x, gates=arrays), rtol=1e-5, atol=1e-6)
  assert not np.allclose(out, model.apply(variables, x))


@pytest.mark.parametrize("name, site", [
    ("resnet18", "BatchNorm_7"), ("vit_small", "Block_2/attn_out"),
    ("vit_small", "Block_4/mlp_out"), ("bmrs_lenet5", "Dense_1")])
def test_per_example_gates(name, site):
  model, variables, x = init(name)
  n = model.gate_sites()[site]
  rows = jnp.asarray(np.random.default_rng(3).uniform(size=(2, n)), jnp.float32)
  out = model.apply(variables, x, gates={site: rows})
  for b in range(2):
    shared = model.apply(variables, x, gates={site: rows[b]})
    np.testing.assert_allclose(out[b], shared[b], rtol=1e-5, atol=1e-6)
  swapped = model.apply(variables, x, gates={site: rows[::-1]})
  assert not np.allclose(out, swapped)


@pytest.mark.parametrize("name", list(CASES))
def test_unknown_gate_site_raises_with_the_valid_sites(name):
  model, variables, x = init(name)
  first = next(iter(model.gate_sites()))
  with pytest.raises(ValueError, match="Dense_99") as err:
    model.apply(variables, x, gates={"Dense_99": jnp.ones(3)})
  assert first in str(err.value)


# --------------------------------------------------------------------------
# BatchNorm


@pytest.mark.parametrize("name", ["resnet18", "resnet_bottleneck"])
def test_resnet_train_uses_batch_statistics_and_updates_them(name):
  model, variables, x = init(name)
  eval_out = model.apply(variables, x)
  train_out, updates = model.apply(variables, x, train=True, mutable=["batch_stats"])
  assert not np.allclose(train_out, eval_out)
  old, new = variables["batch_stats"], updates["batch_stats"]
  assert jax.tree.structure(old) == jax.tree.structure(new)
  for site in model.gate_sites():
    assert not np.allclose(new[site]["var"], old[site]["var"]), site
  # momentum 0.9: new mean = 0.9 * 0 + 0.1 * batch mean of Conv_0's output.
  stem, _ = model.plan()
  pad = stem.kernel // 2
  conv0 = _conv(x, variables["params"]["Conv_0"]["kernel"], stem.stride, pad)
  np.testing.assert_allclose(new["BatchNorm_0"]["mean"], 0.1 * conv0.mean(axis=(0, 1, 2)),
                             rtol=1e-4, atol=1e-6)


def test_resnet_zero_gate_in_train_mode():
  model, variables, x = init("resnet_bottleneck")
  site, n = "BatchNorm_7", model.gate_sites()["BatchNorm_7"]
  gates = {site: jnp.zeros(n)}
  moved = {**variables, "params": _perturb_unit(variables["params"],
                                                model.unit_covers()[site], 3)}
  run = lambda v: model.apply(v, x, train=True, gates=gates, mutable=["batch_stats"])[0]  # noqa: E731
  np.testing.assert_array_equal(run(variables), run(moved))


# --------------------------------------------------------------------------
# Registry and dtypes


def test_registry():
  assert models.get_model("bmrs_mlp") == models.bmrs_mlp()
  assert models.get_model("bmrs_mlp", in_dim=3072).widths[0] == 3072
  assert models.get_model("bmrs_lenet5", in_channels=3) == models.BMRSLeNet5(in_channels=3)
  assert models.get_model("resnet18") == models.resnet18()
  assert models.get_model("resnet50").num_classes == 1000
  assert models.get_model("vit_small") == models.vit_small_cifar()
  assert models.get_model("vit_b16", num_classes=10) == models.vit_b16(num_classes=10)
  for name in ("bmrs_mlp", "bmrs_lenet5", "resnet18", "resnet50", "vit_small", "vit_b16"):
    model = models.get_model(name, dtype=jnp.bfloat16, param_dtype=jnp.float32)
    assert model.dtype == jnp.bfloat16
    hash(model)  # jax.jit(model.apply) needs a hashable module


@pytest.mark.parametrize("model, shape", [
    (models.BMRSLeNet5(), MNIST32), (TINY_BASIC, (8, 8, 3)), (TINY_VIT, (8, 8, 3))])
def test_dtypes(model, shape):
  model = model.clone(dtype=jnp.bfloat16, param_dtype=jnp.bfloat16)
  x = jnp.zeros((2,) + shape)
  variables = jax.eval_shape(model.init, jax.random.key(0), x)
  assert all(p.dtype == jnp.bfloat16 for p in jax.tree.leaves(variables["params"]))
  gates = {s: jnp.ones(n, jnp.float32) for s, n in model.gate_sites().items()}
  out = jax.eval_shape(functools.partial(model.apply, gates=gates), variables, x)
  assert out.dtype == jnp.bfloat16 and out.shape == (2, model.num_classes)
