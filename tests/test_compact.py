"""sparsejax.compaction.compact: pruned units removed, the masked model's outputs kept.

Every check runs in float64 and compares the compacted model's outputs with the
masked model's to 1e-10 (relative to the outputs' scale): the compaction only drops
terms that are exactly zero.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sparsejax import masks as masks_lib
from sparsejax.compaction import Member, compact, cost
from sparsejax.models import get_model
from sparsejax.models.adapter import adapt, as_adapter
from sparsejax.objectives import hard_concrete as hc
from tests.test_coupling import Residual
from tests.test_foreign_models import MODELS as USER_MODELS

TOLERANCE = 1e-10


def assert_same_outputs(out, ref):
  scale = float(jnp.max(jnp.abs(ref)))
  assert out.shape == ref.shape and out.dtype == ref.dtype == jnp.float64
  assert float(jnp.max(jnp.abs(out - ref))) <= TOLERANCE * max(scale, 1.0)


def random_unit_masks(model, params, seed=0, keep=0.6):
  covers = model.unit_covers()
  units = {site: jax.random.bernoulli(jax.random.key(seed + i), keep, (model.units[site].size,))
           for i, site in enumerate(covers)}
  return units, masks_lib.unit_masks(params, units, covers)


def float64(tree, shift=0.0):
  return jax.tree.map(lambda a: a.astype(jnp.float64) + shift, tree)


def compact_and_compare(model, x, params, state, masks, **kwargs):
  variables = {"params": params, **state}
  compacted = compact(model, variables, masks, example=x, **kwargs)
  ref = model.apply(masks_lib.apply(masks, params), state, x, train=False)[0]
  assert_same_outputs(compacted.apply(compacted.variables, x), ref)
  return compacted


def kept_along(compacted, path, axis):
  [group] = [g for g in compacted.groups if Member(path, axis) in g.group.members]
  return group


ZOO = {"mlp": ((3, 12), dict(widths=(12, 10, 8, 4))), "lenet_300_100": ((3, 784), {}),
       "lenet5_caffe": ((3, 28, 28, 1), {}), "basic_cnn": ((2, 32, 32, 3), {}),
       "bmrs_mlp": ((3, 1024), {}), "bmrs_lenet5": ((3, 32, 32, 1), {}),
       "vgg16_bn": ((2, 32, 32, 3), {}), "resnet18": ((2, 32, 32, 3), {})}
LARGE = ("vgg16_bn", "resnet18")
FAST = ("mlp",)  # the default suite's; the others are marked slow


def slow_unless(fast, names):
  return [n if n in fast else pytest.param(n, marks=pytest.mark.slow) for n in names]


@pytest.mark.parametrize("name", slow_unless(FAST, ZOO))
def test_zoo_models_with_random_unit_masks(name):
  shape, fields = ZOO[name]
  with jax.enable_x64(True):
    x = jax.random.normal(jax.random.key(1), shape, jnp.float64)
    model = as_adapter(get_model(name, dtype=jnp.float64, param_dtype=jnp.float64, **fields), x)
    params, state = model.init(jax.random.key(0), x[:1])
    state = float64(state, 0.1)  # non-trivial BatchNorm statistics
    units, masks = random_unit_masks(model, params)
    compacted = compact_and_compare(model, x, params, state, masks)
  assert cost.parameters(compacted.variables) < cost.parameters({"params": params, **state})
  if name not in LARGE:  # chains: each gated layer keeps exactly its kept units
    for site, keep in units.items():
      layer = model.units[site].covers[0][0]
      group = kept_along(compacted, f"params/{layer}", len(params_at(params, layer).shape) - 1)
      np.testing.assert_array_equal(group.kept, np.flatnonzero(keep))


def params_at(params, path):
  for key in path.split("/"):
    params = params[key]
  return params


@pytest.mark.slow
def test_a_vits_heads_and_mlp_units():
  with jax.enable_x64(True):
    x = jax.random.normal(jax.random.key(1), (2, 32, 32, 3), jnp.float64)
    model = as_adapter(get_model("vit_small", dtype=jnp.float64, param_dtype=jnp.float64), x)
    params, state = model.init(jax.random.key(0), x[:1])
    masks = masks_lib.ones_like(params)
    heads, units = {}, {}
    for b in range(6):
      block = masks[f"Block_{b}"]
      units[b] = jax.random.bernoulli(jax.random.key(b), 0.6, (384,))
      block["mlp_in"] = {"kernel": block["mlp_in"]["kernel"] & units[b], "bias": units[b]}
      heads[b] = jax.random.bernoulli(jax.random.key(b + 9), 0.6, (3,)).at[0].set(True)
      rows = jnp.repeat(heads[b], 64)[:, None]
      block["attn_out"] = {"kernel": block["attn_out"]["kernel"] & rows, "bias": None}
    compacted = compact_and_compare(model, x, params, state, masks)
  for b in range(6):
    p = f"params/Block_{b}/"
    np.testing.assert_array_equal(kept_along(compacted, p + "mlp_in/bias", 0).kept,
                                  np.flatnonzero(units[b]))
    [head] = [g for g in compacted.groups
              if Member(p + "query/kernel", 1, (0, (3, 64))) in g.group.members]
    np.testing.assert_array_equal(head.kept, np.flatnonzero(heads[b]))
    assert compacted.variables["params"][f"Block_{b}"]["query"]["kernel"].shape == (
        192, 64 * int(heads[b].sum()))


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(USER_MODELS))
def test_the_user_models_of_the_own_model_tests(name):
  with jax.enable_x64(True):
    x = jax.random.normal(jax.random.key(1), (3, 28, 28, 1), jnp.float64)
    model = adapt(USER_MODELS[name], x)
    params, state = model.init(jax.random.key(0), x[:1])
    params, state = float64(params), float64(state, 0.1)
    _, masks = random_unit_masks(model, params, seed=3, keep=0.5)
    compacted = compact_and_compare(model, x, params, state, masks)
  assert cost.parameters(compacted.variables["params"]) < cost.parameters(params)


@pytest.mark.slow
def test_gates_at_zero_remove_their_units_and_the_result_runs_at_any_batch_size():
  with jax.enable_x64(True):
    x = jax.random.normal(jax.random.key(1), (3, 28, 28, 1), jnp.float64)
    model = adapt(USER_MODELS["nnx_mlp"], x)
    params, state = model.init(jax.random.key(0), x[:1])
    params, state = float64(params), float64(state, 0.1)
    [site] = model.units
    gate = jnp.where(jnp.arange(64) % 3 == 0, 0.0, jnp.linspace(0.5, 2.0, 64))
    compacted = compact(model, {"params": params, **state}, gates={site: gate}, example=x)
    assert compacted.variables["gates"][site].shape == (42,)
    assert compacted.variables["params"]["hidden"]["kernel"].shape == (784, 42)
    for batch in (1, 7):
      xs = jax.random.normal(jax.random.key(batch), (batch, 28, 28, 1), jnp.float64)
      ref = model.apply(params, state, xs, train=False, gates={site: gate})[0]
      assert_same_outputs(jax.jit(compacted.apply)(compacted.variables, xs), ref)


def test_a_residual_channel_goes_only_when_both_branches_and_the_reader_drop_it_and_trains():
  with jax.enable_x64(True):
    x = jax.random.normal(jax.random.key(1), (4, 5), jnp.float64)
    module = Residual()
    params = float64(module.init(jax.random.key(0), x)["params"])
    masks = jax.tree.map(lambda a: jnp.ones(a.shape, bool), params)
    # Channel 0: only its producer in the first branch is zero (the second still adds).
    masks["Dense_0"]["kernel"] = masks["Dense_0"]["kernel"].at[:, 0].set(False)
    masks["Dense_0"]["bias"] = masks["Dense_0"]["bias"].at[0].set(False)
    # Channels 2 and 5: nothing reads them (the head's rows and the inner layer's rows).
    for c in (2, 5):
      masks["Dense_2"]["kernel"] = masks["Dense_2"]["kernel"].at[c].set(False)
      masks["Dense_1"]["kernel"] = masks["Dense_1"]["kernel"].at[c].set(False)
    compacted = compact(module, {"params": params}, masks, example=x)
    ref = module.apply({"params": masks_lib.apply(masks, params)}, x)
    assert_same_outputs(compacted.apply(compacted.variables, x), ref)
    # It trains like the masked model: the gradients at the kept entries agree, also at
    # ReLU's kink (channel 0's first-branch value is exactly 0: jax.nn.relu's rule
    # gives 0 there where max's own derivative would give 1/2).
    masked = {"params": masks_lib.apply(masks, params)}
    full = jax.grad(lambda v: jnp.sum(module.apply(v, x) ** 2))(masked)
    small = jax.grad(lambda v: jnp.sum(compacted.apply(v, x) ** 2))(compacted.variables)
    for leaf_small, leaf_full in zip(jax.tree.leaves(small),
                                     jax.tree.leaves(compacted.shrink(full))):
      np.testing.assert_allclose(leaf_small, leaf_full, rtol=1e-10, atol=1e-12)
  group = kept_along(compacted, "params/Dense_1/kernel", 1)
  np.testing.assert_array_equal(group.kept, [0, 1, 3, 4, 6, 7])
  assert compacted.variables["params"]["Dense_1"]["kernel"].shape == (6, 6)


class Sorted(nn.Module):
  @nn.compact
  def __call__(self, x):
    return nn.Dense(3)(jnp.sort(nn.relu(nn.Dense(8)(x)), axis=-1))


def test_an_operation_the_analysis_does_not_know_is_reported_not_compacted():
  x = jnp.ones((2, 4))
  module = Sorted()
  params = module.init(jax.random.key(0), x)["params"]
  masks = jax.tree.map(lambda a: jnp.ones(a.shape, bool), params)
  masks["Dense_1"]["kernel"] = masks["Dense_1"]["kernel"].at[:, :4].set(False)
  masks["Dense_1"]["bias"] = masks["Dense_1"]["bias"].at[:4].set(False)
  compacted = compact(module, {"params": params}, masks, example=x)
  group = kept_along(compacted, "params/Dense_1/kernel", 1)
  assert group.group.reason == "an operation the analysis does not know (sort)"
  assert group.removed == 0
  assert cost.parameters(compacted.variables) == cost.parameters(params)


@pytest.mark.slow
def test_gated_lenet5_inputs_of_the_first_dense_layer_are_gathered_one_by_one():
  with jax.enable_x64(True):
    model = get_model("lenet5_caffe", dtype=jnp.float64, param_dtype=jnp.float64)
    x = jax.random.uniform(jax.random.key(3), (5, 28, 28, 1), jnp.float64)
    params = model.init(jax.random.key(0), x[:1])["params"]
    layers = hc.gated_layers(params)
    keys = jax.random.split(jax.random.key(1), len(layers))
    gates = {l.name: hc.test_gates(2.0 * jax.random.normal(k, (l.n_gates,)), "median")
             for k, l in zip(keys, layers)}
    effective = hc.gate_params(layers, params, gates)
    compacted = compact(model, {"params": effective}, example=x[:1])
    assert_same_outputs(compacted.apply(compacted.variables, x),
                        model.apply({"params": effective}, x))
    shapes = jax.tree.map(jnp.shape, compacted.variables["params"])
    # Without the gather the result is the same model with smaller widths.
    rebuilt = compact(model, {"params": effective}, example=x[:1], gather=False)
  alive = {name: np.asarray(g) > 0 for name, g in gates.items()}
  channels = alive["Conv_1"]
  # A flattened feature (position p, channel c) stays when its gate and its channel do.
  features = alive["Dense_0"] & np.tile(channels, 16)
  assert shapes["Conv_0"]["kernel"] == (5, 5, 1, alive["Conv_0"].sum())
  assert shapes["Conv_1"]["kernel"] == (5, 5, alive["Conv_0"].sum(), channels.sum())
  assert shapes["Dense_0"]["kernel"] == (features.sum(), alive["Dense_1"].sum())
  assert rebuilt.variables["params"]["Dense_0"]["kernel"].shape == (
      16 * channels.sum(), alive["Dense_1"].sum())


def test_macs_and_parameters_of_lenet5_caffe_by_hand():
  model = get_model("lenet5_caffe")
  x = jnp.zeros((1, 28, 28, 1))
  variables = model.init(jax.random.key(0), x)
  summary = cost.summary(lambda v, x: model.apply(v, x), variables, x)
  assert summary["params"] == 431_080
  assert summary["macs"] == 24 * 24 * 25 * 20 + 8 * 8 * 500 * 50 + 800 * 500 + 5000
  assert 2 * summary["macs"] <= summary["flops"] < 2.2 * summary["macs"]


def test_masks_and_params_shaped_trees_shrink_with_the_model():
  x = jnp.ones((2, 6))
  module = Residual()
  params = module.init(jax.random.key(0), x)["params"]
  masks = masks_lib.ones_like(params)
  masks["Dense_2"]["kernel"] = masks["Dense_2"]["kernel"].at[3].set(False)
  masks["Dense_1"]["kernel"] = masks["Dense_1"]["kernel"].at[3].set(False)
  compacted = compact(module, {"params": params}, masks, example=x)
  assert compacted.masks["Dense_1"]["bias"] is None
  assert compacted.masks["Dense_1"]["kernel"].shape == (7, 7)
  moments = compacted.shrink(jax.tree.map(jnp.ones_like, params), "params")
  assert jax.tree.map(jnp.shape, moments) == jax.tree.map(jnp.shape,
                                                          compacted.variables["params"])
