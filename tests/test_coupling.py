"""sparsejax.compaction.axes (coupling): coupled parameter axes read from a model's jaxpr."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest
from flax import nnx

from sparsejax.compaction import Group, Member, coupling
from sparsejax.models import get_model
from sparsejax.models.adapter import as_adapter


def groups_of(module, x, **kwargs):
  variables = module.init(jax.random.key(0), x, **kwargs)
  return coupling(lambda v, x: module.apply(v, x, **kwargs), variables, x)


def by_members(groups):
  """``{frozenset of (layer/leaf, axis, factor): (size, reason)}``."""
  return {frozenset(("/".join(m.path.split("/")[-2:]), m.axis, m.factor) for m in g.members):
          (g.size, g.reason) for g in groups}


class Mlp(nn.Module):
  @nn.compact
  def __call__(self, x):
    x = nn.relu(nn.Dense(8)(x))
    x = nn.tanh(nn.Dense(6)(x))
    return nn.Dense(3)(x)


def test_an_mlps_hidden_units_couple_kernel_columns_biases_and_next_rows():
  groups = by_members(groups_of(Mlp(), jnp.ones((2, 4))))
  assert groups[frozenset({("Dense_0/kernel", 1, None), ("Dense_0/bias", 0, None),
                           ("Dense_1/kernel", 0, None)})] == (8, None)
  assert groups[frozenset({("Dense_1/kernel", 1, None), ("Dense_1/bias", 0, None),
                           ("Dense_2/kernel", 0, None)})] == (6, None)
  assert groups[frozenset({("Dense_0/kernel", 0, None)})] == (4, "the model's input")
  assert groups[frozenset({("Dense_2/kernel", 1, None), ("Dense_2/bias", 0, None)})] == (
      3, "the model's output")
  assert len(groups) == 4


class ConvBnFlatten(nn.Module):
  @nn.compact
  def __call__(self, x):
    x = nn.Conv(5, (3, 3))(x)
    x = nn.relu(nn.BatchNorm(use_running_average=True)(x))
    x = nn.max_pool(x, (2, 2), (2, 2))
    return nn.Dense(3)(x.reshape(x.shape[0], -1))


def test_conv_channels_couple_batchnorm_statistics_and_the_flattened_dense_rows():
  groups = by_members(groups_of(ConvBnFlatten(), jnp.ones((2, 8, 8, 1))))
  channels = frozenset({
      ("Conv_0/kernel", 3, None), ("Conv_0/bias", 0, None), ("BatchNorm_0/scale", 0, None),
      ("BatchNorm_0/bias", 0, None), ("BatchNorm_0/mean", 0, None), ("BatchNorm_0/var", 0, None),
      ("Dense_0/kernel", 0, (2, (4, 4, 5)))})
  assert groups[channels] == (5, None)
  # The flattened axis itself and its spatial factors are not units.
  assert groups[frozenset({("Dense_0/kernel", 0, None)})][1].startswith("an axis merged")
  assert groups[frozenset({("Dense_0/kernel", 0, (0, (4, 4, 5)))})] == (4, "a pooling window")
  assert groups[frozenset({("Conv_0/kernel", 0, None)})] == (3, "a convolution's window")
  assert [g for g in groups.values() if g[1] is None] == [(5, None)]


class Residual(nn.Module):
  @nn.compact
  def __call__(self, x):
    h = nn.Dense(8)(x)
    h = h + nn.Dense(8)(nn.relu(h))
    return nn.Dense(3)(nn.relu(h))


def test_a_residual_addition_joins_both_branches_channels():
  groups = by_members(groups_of(Residual(), jnp.ones((2, 4))))
  assert groups[frozenset({("Dense_0/kernel", 1, None), ("Dense_0/bias", 0, None),
                           ("Dense_1/kernel", 0, None), ("Dense_1/kernel", 1, None),
                           ("Dense_1/bias", 0, None), ("Dense_2/kernel", 0, None)})] == (8, None)


class Sorted(nn.Module):
  @nn.compact
  def __call__(self, x):
    h = jnp.sort(nn.Dense(8)(x), axis=-1)
    return nn.Dense(3)(h)


class Normalised(nn.Module):
  @nn.compact
  def __call__(self, x):
    return nn.Dense(3)(nn.LayerNorm()(nn.Dense(8)(x)))


def test_an_unknown_operation_or_a_reduction_over_units_fixes_the_group_and_says_which():
  def holding(groups, member):
    [group] = [g for g in groups if member in g.members]
    return group
  hidden = holding(groups_of(Sorted(), jnp.ones((2, 4))), Member("params/Dense_0/kernel", 1))
  assert not hidden.removable
  assert hidden.reason == "an operation the analysis does not know (sort)"
  # (Flax names the outer Dense(3) first: the hidden layer is Dense_1.)
  hidden = holding(groups_of(Normalised(), jnp.ones((2, 4))), Member("params/Dense_1/kernel", 1))
  assert Member("params/LayerNorm_0/scale", 0) in hidden.members
  assert hidden.reason is not None and hidden.reason.startswith("a reduction over the axis")
  assert not any(g.removable for g in groups_of(Sorted(), jnp.ones((2, 4))))


def test_an_nnx_model_through_split_and_merge():
  class Net(nnx.Module):
    def __init__(self, rngs):
      self.a, self.b = nnx.Linear(4, 7, rngs=rngs), nnx.Linear(7, 2, rngs=rngs)

    def __call__(self, x):
      return self.b(nnx.relu(self.a(x)))

  graphdef, state = nnx.split(Net(nnx.Rngs(0)))
  groups = coupling(lambda s, x: nnx.merge(graphdef, s)(x), state, jnp.ones((3, 4)))
  [hidden] = [g for g in groups if g.removable]
  assert hidden.size == 7
  assert {(m.path.split("/")[0], m.path.split("/")[1], m.axis) for m in hidden.members} == {
      ("a", "kernel", 1), ("a", "bias", 0), ("b", "kernel", 0)}


def test_lenet5_caffe_of_the_zoo():
  x = jnp.ones((2, 28, 28, 1))
  model = as_adapter(get_model("lenet5_caffe"), x)
  params, state = model.init(jax.random.key(0), x[:1])
  groups = coupling(lambda v, x: model.apply(v["params"], v["state"], x, train=False)[0],
                    {"params": params, "state": state}, x)
  removable = {g.size: {(m.path, m.axis, m.factor) for m in g.members}
               for g in groups if g.removable}
  assert removable == {
      20: {("params/Conv_0/kernel", 3, None), ("params/Conv_0/bias", 0, None),
           ("params/Conv_1/kernel", 2, None)},
      50: {("params/Conv_1/kernel", 3, None), ("params/Conv_1/bias", 0, None),
           ("params/Dense_0/kernel", 0, (2, (4, 4, 50)))},
      500: {("params/Dense_0/kernel", 1, None), ("params/Dense_0/bias", 0, None),
            ("params/Dense_1/kernel", 0, None)}}
  assert all(isinstance(g, Group) and all(isinstance(m, Member) for m in g.members)
             for g in groups)


def zoo_groups(name, shape):
  x = jnp.ones(shape)
  model = as_adapter(get_model(name), x)
  params, state = model.init(jax.random.key(0), x[:1])
  return coupling(lambda v, x: model.apply(v["params"], v["state"], x, train=False)[0],
                  {"params": params, "state": state}, x)


def layers(group):
  return {f"{m.path.rsplit('/', 1)[0]}:{m.axis}" for m in group.members}


@pytest.mark.slow
def test_resnet18_residual_channels_are_one_group_across_the_stage():
  groups = [layers(g) for g in zoo_groups("resnet18", (2, 32, 32, 3))
            if g.removable and g.size == 64]
  residual = {"params/Conv_0:3", "params/Conv_2:3", "params/Conv_4:3",  # producers
              "params/Conv_1:2", "params/Conv_3:2", "params/Conv_5:2", "params/Conv_7:2",
              "params/BatchNorm_0:0", "params/BatchNorm_2:0", "params/BatchNorm_4:0",
              "state/batch_stats/BatchNorm_0:0", "state/batch_stats/BatchNorm_2:0",
              "state/batch_stats/BatchNorm_4:0"}
  inner = [{"params/Conv_1:3", "params/Conv_2:2", "params/BatchNorm_1:0",
            "state/batch_stats/BatchNorm_1:0"},
           {"params/Conv_3:3", "params/Conv_4:2", "params/BatchNorm_3:0",
            "state/batch_stats/BatchNorm_3:0"}]
  assert sorted(groups, key=len) == sorted(inner + [residual], key=len)


@pytest.mark.slow
def test_a_vits_heads_head_dimensions_and_mlp_units_are_groups_its_stream_is_not():
  groups = zoo_groups("vit_small", (2, 32, 32, 3))
  block = [g for g in groups if g.removable and "Block_0/" in g.members[0].path]
  by_size = sorted((g.size, sorted(layers(g))) for g in block)
  p = "params/Block_0/"
  assert by_size == sorted([
      (3, sorted({p + "query:0", p + "query:1", p + "key:0", p + "key:1", p + "value:0",
                  p + "value:1", p + "attn_out:0"})),  # whole heads
      (64, sorted({p + "query:0", p + "query:1", p + "key:0", p + "key:1"})),  # q.k dims
      (64, sorted({p + "value:0", p + "value:1", p + "attn_out:0"})),  # value dims
      (384, sorted({p + "mlp_in:0", p + "mlp_in:1", p + "mlp_out:0"}))])  # MLP units
  [head] = [g for g in block if g.size == 3]
  assert Member(p + "query/kernel", 1, (0, (3, 64))) in head.members
  assert not any(g.removable for g in groups if any("cls" in m.path for m in g.members))


ZOO_UNITS = {  # removable group sizes: every hidden layer's units, nothing else
    "lenet_300_100": ((2, 784), [300, 100]),
    "bmrs_mlp": ((2, 1024), [50] * 6),
    "bmrs_lenet5": ((2, 32, 32, 1), [6, 16, 120, 84]),
    "basic_cnn": ((2, 32, 32, 3), [64, 128, 256, 512]),
    "vgg16_bn": ((2, 32, 32, 3), [64, 64, 128, 128, 256, 256, 256] + [512] * 8),
}


@pytest.mark.parametrize("name", [n if n == "lenet_300_100" else
                                  pytest.param(n, marks=pytest.mark.slow) for n in ZOO_UNITS])
def test_the_zoos_hidden_units_are_its_removable_groups(name):
  shape, sizes = ZOO_UNITS[name]
  groups = [g for g in zoo_groups(name, shape) if g.removable]
  assert sorted(g.size for g in groups) == sorted(sizes)
  for group in groups:  # each holds its producer's outputs and its reader's inputs
    kernels = [m for m in group.members if m.path.endswith("kernel")]
    assert len(kernels) == 2 and {m.axis for m in kernels} != {0}
    batchnorm = {m.path.rsplit("/", 1)[1] for m in group.members if "BatchNorm" in m.path}
    assert batchnorm in (set(), {"scale", "bias", "mean", "var"})
  if name == "basic_cnn":  # the last conv's channels are a factor of the head's rows
    [last] = [g for g in groups if g.size == 512]
    assert Member("params/Dense_0/kernel", 0, (2, (4, 4, 512))) in last.members
