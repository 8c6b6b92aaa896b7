"""Models the user wrote, not sparsejax's: every family through the adapter.

Four models are written here as a user would: a linen CNN with a plain
``__call__(x)``, a linen MLP with BatchNorm and Dropout switched by
``deterministic``, an NNX MLP with BatchNorm, and a linen model with a
residual block. They go through the library (the adapter, the one train
step, the families' objectives and criteria) and through the command line
(``config.model = "tests.test_foreign_models:Class"``) on a real MNIST subset.
"""

import copy
import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from configs import common
from configs import (anneal_mlp_mnist, bmrs_mlp_mnist, deephoyer_lenet300_mnist, l0_mlp_mnist,
                     lenet300_mnist)
from sparsejax import masks as masks_lib
from sparsejax import models, objectives, pruning
from sparsejax import train as sparse_train
from sparsejax.checkpoint import Checkpointer
from sparsejax.data import load_image_dataset
from sparsejax.objectives import constrained_l0
from sparsejax.objectives import hard_concrete as hc
from sparsejax.pruning import bmr
from sparsejax.fields import ConfigError
from sparsejax.runner import load_run, run
from sparsejax.train import CLASSIFICATION, create_train_state, make_eval_fn, make_train_step
from tests.conftest import REPO, data_path

# --------------------------------------------------------------------------
# The user's models


class LinenCNN(nn.Module):
  """A plain CNN: no train flag, no gates, nothing sparsejax-specific."""
  features: int = 8

  @nn.compact
  def __call__(self, x):
    x = nn.relu(nn.Conv(self.features, (3, 3))(x))
    x = nn.max_pool(x, (2, 2), (2, 2))
    x = nn.relu(nn.Conv(2 * self.features, (3, 3))(x))
    x = nn.max_pool(x, (2, 2), (2, 2))
    x = x.reshape((x.shape[0], -1))
    x = nn.relu(nn.Dense(32)(x))
    return nn.Dense(10)(x)


class LinenBNDropout(nn.Module):
  """An MLP whose BatchNorm and Dropout follow ``deterministic``."""
  width: int = 64

  @nn.compact
  def __call__(self, x, deterministic: bool = True):
    x = x.reshape((x.shape[0], -1))
    for _ in range(2):
      x = nn.Dense(self.width)(x)
      x = nn.BatchNorm(use_running_average=deterministic, momentum=0.9)(x)
      x = nn.Dropout(0.1, deterministic=deterministic)(nn.relu(x))
    return nn.Dense(10)(x)


class NNXMLP(nnx.Module):
  """An NNX MLP with BatchNorm and Dropout."""

  def __init__(self, width: int = 64, *, rngs: nnx.Rngs):
    self.hidden = nnx.Linear(784, width, rngs=rngs)
    self.norm = nnx.BatchNorm(width, momentum=0.9, rngs=rngs)
    self.drop = nnx.Dropout(0.1, rngs=rngs)
    self.out = nnx.Linear(width, 10, rngs=rngs)

  def __call__(self, x):
    x = x.reshape((x.shape[0], -1))
    return self.out(self.drop(nnx.relu(self.norm(self.hidden(x)))))


class LinenResidual(nn.Module):
  """A conv stem, one residual block (conv-BN-relu-conv-BN + skip), pooling and a head."""

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = nn.relu(nn.Conv(8, (3, 3), strides=2, name="stem")(x))
    y = nn.Conv(8, (3, 3), name="conv_a")(x)
    y = nn.relu(nn.BatchNorm(use_running_average=not train, momentum=0.9, name="bn_a")(y))
    y = nn.Conv(8, (3, 3), name="conv_b")(y)
    y = nn.BatchNorm(use_running_average=not train, momentum=0.9, name="bn_b")(y)
    x = nn.max_pool(nn.relu(x + y), (2, 2), (2, 2))
    return nn.Dense(10, name="head")(x.reshape((x.shape[0], -1)))


class SkipsALayer(nn.Module):
  """A model whose second Dense layer is only called in eval mode."""

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = nn.relu(nn.Dense(16, name="first")(x.reshape((x.shape[0], -1))))
    extra = nn.Dense(16, name="extra")
    if not train:
      x = nn.relu(extra(x))
    return nn.Dense(10, name="head")(x)


def nnx_mlp(rngs):
  return NNXMLP(rngs=rngs)


SAMPLE = jnp.zeros((1, 28, 28, 1))
MODELS = {"linen_cnn": LinenCNN(), "linen_bn_dropout": LinenBNDropout(), "nnx_mlp": nnx_mlp,
          "linen_residual": LinenResidual()}


@pytest.fixture(scope="module")
def mnist():
  """2,000 training and 1,000 test images of real MNIST."""
  splits = load_image_dataset("mnist", manual_dir=data_path("mnist"))
  return (splits.train.x[:2000], splits.train.y[:2000]), (splits.test.x[:1000],
                                                          splits.test.y[:1000])


# --------------------------------------------------------------------------
# The adapter


def test_units_follow_batchnorm_and_leave_the_head_out():
  model = models.adapt(LinenResidual(), SAMPLE)
  assert model.gate_sites() == {"stem": 8, "conv_a": 8, "conv_b": 8}
  covers = model.unit_covers()
  assert covers["conv_a"] == [("conv_a/kernel", -1), ("conv_a/bias", 0), ("bn_a/scale", 0),
                              ("bn_a/bias", 0)]
  assert covers["stem"] == [("stem/kernel", -1), ("stem/bias", 0)]
  assert model.capabilities == {"gate_sites", "batch_stats", "layer_gates"}
  nnx_model = models.adapt(nnx_mlp, SAMPLE)
  assert nnx_model.gate_sites() == {"hidden": 64}
  assert [p for p, _ in nnx_model.unit_covers()["hidden"]] == [
      "hidden/kernel", "hidden/bias", "norm/scale", "norm/bias"]


@pytest.mark.parametrize("name", [pytest.param("linen_cnn", marks=pytest.mark.slow),
                                  "linen_bn_dropout", "nnx_mlp", "linen_residual"])
def test_train_flag_state_and_dropout_are_found(name):
  model = models.adapt(MODELS[name], SAMPLE)
  x = jax.random.uniform(jax.random.key(0), (8, 28, 28, 1))
  params, state = model.init(jax.random.key(1), x)
  eval_out, eval_state = model.apply(params, state, x, train=False)
  assert eval_out.shape == (8, 10)
  jax.tree.map(np.testing.assert_array_equal, eval_state, state)
  train_out, new_state = model.apply(params, state, x, train=True, key=jax.random.key(2))
  changed = jax.tree.leaves(jax.tree.map(lambda a, b: bool(jnp.any(a != b)), state, new_state))
  assert all(changed) and (changed or not state)  # batch statistics moved, where there are any
  if state:  # batch statistics (and dropout) make train mode differ from eval mode
    assert not np.allclose(train_out, eval_out)
  # In a compiled step, the key decides the dropout mask: two keys, two outputs.
  step = jax.jit(lambda k: model.apply(params, state, x, train=True, key=k)[0])
  again = np.asarray(step(jax.random.key(2)))
  np.testing.assert_array_equal(again, step(jax.random.key(2)))
  if name in ("linen_bn_dropout", "nnx_mlp"):
    assert not np.allclose(again, step(jax.random.key(3)))
  # A zero gate on every unit of the first site silences everything it feeds.
  first = next(iter(model.gate_sites()))
  gated, _ = model.apply(params, state, x, train=False,
                         gates={first: jnp.zeros(model.gate_sites()[first])})
  assert not np.allclose(gated, eval_out)


def test_nnx_constructor_initialises_per_key_and_instances_keep_their_weights():
  model = models.adapt(nnx_mlp, SAMPLE)
  a, _ = model.init(jax.random.key(0), SAMPLE)
  b, _ = model.init(jax.random.key(1), SAMPLE)
  assert not np.allclose(a["hidden"]["kernel"], b["hidden"]["kernel"])
  instance = NNXMLP(rngs=nnx.Rngs(5))
  c, _ = models.adapt(instance, SAMPLE).init(jax.random.key(0), SAMPLE)
  np.testing.assert_array_equal(c["hidden"]["kernel"], instance.hidden.kernel[...])


def test_a_gate_site_the_forward_pass_skips_is_an_error():
  model = models.adapt(SkipsALayer(), SAMPLE)
  assert set(model.gate_sites()) == {"first", "extra"}  # found in eval mode
  params, state = model.init(jax.random.key(0), SAMPLE)
  gates = {"first": jnp.ones(16), "extra": jnp.ones(16)}
  model.apply(params, state, SAMPLE, train=False, gates=gates)
  with pytest.raises(ValueError, match=r"\['extra'\] were never reached"):
    model.apply(params, state, SAMPLE, train=True, gates=gates)
  with pytest.raises(ValueError, match="gate site 'nowhere' names no Dense or Conv layer"):
    models.adapt(SkipsALayer(), SAMPLE, sites=["first", "nowhere"])
  with pytest.raises(ValueError, match="unknown gate site 'nowhere'"):
    model.apply(params, state, SAMPLE, train=False, gates={"nowhere": jnp.ones(10)})


@pytest.mark.slow  # 7 s or more on 2 cores: the default suite stays under 10 minutes
def test_gates_on_the_next_layers_inputs_reproduce_the_zoos_gates_after_tanh():
  """BMRS gates a tanh MLP after the nonlinearity: the next layer's ``:input`` site."""

  class TanhMLP(nn.Module):
    @nn.compact
    def __call__(self, x):
      for i, width in enumerate((25, 25)):
        x = jnp.tanh(nn.Dense(width, name=f"Dense_{i}")(x))
      return nn.Dense(1, name="Dense_2")(x)

  x = jax.random.normal(jax.random.key(0), (16, 2))
  zoo = models.adapt(models.MLP((2, 25, 25, 1)), x)
  own = models.adapt(TanhMLP(), x, sites=["Dense_1:input", "Dense_2:input"])
  params, _ = zoo.init(jax.random.key(1), x)
  objective = objectives.log_uniform_gates(zoo.gate_sites())
  state = objective.init(jax.random.key(2), params)
  state = jax.tree.map(lambda a: a + jax.random.normal(jax.random.key(3), a.shape), state)
  _, gates = objective.forward(params, state, jax.random.key(4), True)
  renamed = {"Dense_1:input": gates["Dense_0"], "Dense_2:input": gates["Dense_1"]}
  expected, _ = zoo.apply(params, {}, x, train=True, gates=gates)
  got, _ = own.apply(params, {}, x, train=True, gates=renamed)
  np.testing.assert_allclose(got, expected, rtol=1e-6)
  # At the layer outputs (before tanh) the function differs: the site matters.
  at_outputs, _ = models.adapt(TanhMLP(), x).apply(params, {}, x, train=True, gates=gates)
  assert not np.allclose(at_outputs, expected)


def test_per_example_l0_sites_gate_what_the_per_batch_gates_gate():
  """Dense layers' gates act on their inputs, Conv layers' on their raw outputs."""
  model = models.adapt(LinenResidual(), SAMPLE)
  params, state = model.init(jax.random.key(0), SAMPLE)
  layers = hc.gated_layers(params)
  sites = hc.layer_sites(layers)
  assert sites["conv_a"] == ("conv_a:output", "channels")  # before bn_a, as the weights' gates
  assert sites["head"] == ("head:input", "features")
  z = {l.name: jax.random.uniform(jax.random.key(i), (l.n_gates,)) for i, l in enumerate(layers)}
  x = jax.random.uniform(jax.random.key(9), (4, 28, 28, 1))
  by_weights, _ = model.apply(hc.gate_params(layers, params, z), state, x, train=False)
  by_sites, _ = model.apply(params, state, x, train=False,
                            gates={sites[name][0]: gate for name, gate in z.items()})
  np.testing.assert_allclose(by_sites, by_weights, rtol=1e-5, atol=1e-6)


def test_a_missing_capability_names_it_and_the_family():
  model = models.adapt(LinenCNN(), SAMPLE)
  with pytest.raises(models.CapabilityError, match="method 'layerwise'.*'dense_chain'"):
    model.require("dense_chain", "method 'layerwise'")


def test_prunable_leaves_are_kernels_by_default_and_patterns_opt_in():
  model = models.adapt(LinenBNDropout(), SAMPLE)
  params, _ = model.init(jax.random.key(0), SAMPLE)
  masks = masks_lib.ones_like(params, model.prunable)
  assert masks["Dense_0"]["bias"] is None and masks["BatchNorm_0"]["scale"] is None
  assert masks["Dense_0"]["kernel"] is not None
  wider = models.adapt(LinenBNDropout(), SAMPLE, prunable=["*/kernel", "Dense_*/bias"])
  masks = masks_lib.ones_like(params, wider.prunable)
  assert masks["Dense_0"]["bias"] is not None and masks["BatchNorm_0"]["bias"] is None


# --------------------------------------------------------------------------
# Every family through the library


def _train(model, objective, optimizer, data, steps, state=None, key=0):
  (x, y), _ = data
  if state is None:
    state = create_train_state(jax.random.key(key), model, x[:1], objective, optimizer)
  step = make_train_step(model, CLASSIFICATION, objective, optimizer)
  keys = jax.random.split(jax.random.key(key + 1), steps)
  for i in range(steps):
    batch = jax.random.choice(keys[i], x.shape[0], (128,), replace=False)
    state, _ = step(state, (x[batch], y[batch]), keys[i])
  return state


def _accuracy(model, objective, state, data):
  _, (x, y) = data
  return float(make_eval_fn(model, CLASSIFICATION, objective, 500)(state, x, y)["accuracy"])


def _prunable_density(masks):
  """Kept entries over the masked (prunable) entries."""
  leaves = [np.asarray(m) for m in jax.tree.leaves(masks)]
  return sum(m.sum() for m in leaves) / sum(m.size for m in leaves)


def _exactly_zero_where_pruned(params, masks):
  def check(m, p):
    if m is not None:
      assert np.all(np.asarray(p)[~np.asarray(m)] == 0)
  jax.tree.map(check, masks, params, is_leaf=lambda m: m is None)


@pytest.mark.parametrize("name", [pytest.param("linen_cnn", marks=pytest.mark.slow), "nnx_mlp"])
def test_magnitude_pruning_to_a_tenth(name, mnist):
  model = models.adapt(MODELS[name], SAMPLE)
  plain, adam = objectives.plain(), optax.adam(1e-3)
  state = _train(model, plain, adam, mnist, 150)
  masks = masks_lib.global_magnitude_density(state.params, state.masks, 0.1)
  state = state._replace(masks=masks, params=masks_lib.apply(masks, state.params))
  state = _train(model, plain, adam, mnist, 50, state)
  assert _prunable_density(state.masks) == pytest.approx(0.1, abs=1e-3)
  _exactly_zero_where_pruned(state.params, state.masks)
  assert _accuracy(model, plain, state, mnist) > 0.7


@pytest.mark.slow  # 7 s or more on 2 cores: the default suite stays under 10 minutes
def test_constrained_l0_reaches_its_target_on_a_model_with_batchnorm(mnist):
  model = models.adapt(LinenBNDropout(), SAMPLE)
  layers = hc.gated_layers(model.param_shapes)
  objective = constrained_l0.hard_concrete_l0(layers, targets=(0.3,))
  optimizer = constrained_l0.optimizer(optax.adam(1e-3), optax.adam(0.1), optax.sgd(1.0))
  state = _train(model, objective, optimizer, mnist, 200)
  density = float(hc.model_density(layers, state.objective_state.log_alpha))
  assert density <= 0.33
  params, masks = objective.readout(state.params, state.objective_state)
  assert _accuracy(model, objective, state, mnist) > 0.6
  assert 0 < masks_lib.density(masks, params) < 0.5


@pytest.mark.slow  # 30 to 60 s: the default suite stays under 10 minutes
def test_bmrs_gates_attached_from_outside_prune_units(mnist):
  model = models.adapt(LinenCNN(), SAMPLE)
  objective = objectives.log_uniform_gates(model.gate_sites())
  state = _train(model, objective, optax.adam(3e-3), mnist, 120)
  gate_state = state.objective_state
  # The data term reached every site: the gates moved differently from the KL alone.
  kl_only = _train(model, objective, optax.adam(3e-3), (
      (jnp.zeros_like(mnist[0][0]), mnist[0][1]), mnist[1]), 120)
  for site in model.gate_sites():
    assert not np.allclose(gate_state.mu[site], kl_only.objective_state.mu[site], atol=1e-3)
  scores = bmr.scores(bmr.Criterion("bmrs_n"), gate_state)
  keep = bmr.keep_masks(scores, bmr.default_cut(bmr.Criterion("bmrs_n")))
  masks = masks_lib.unit_masks(state.params, keep, model.unit_covers(), state.masks)
  pruned = state._replace(masks=masks, params=masks_lib.apply(masks, state.params))
  assert _accuracy(model, objective, pruned, mnist) > 0.5
  _exactly_zero_where_pruned(pruned.params, masks)


def test_deephoyer_then_threshold_on_the_residual_model(mnist):
  model = models.adapt(LinenResidual(), SAMPLE)
  objective = objectives.deephoyer("hs", 1e-4)
  state = _train(model, objective, optax.adam(3e-3), mnist, 150)
  dense = _accuracy(model, objective, state, mnist)
  masks = masks_lib.global_magnitude_threshold(state.params, state.masks, 1e-2)
  assert _prunable_density(masks) < 0.9
  pruned = state._replace(masks=masks, params=masks_lib.apply(masks, state.params))
  _exactly_zero_where_pruned(pruned.params, masks)
  assert _accuracy(model, objective, pruned, mnist) > max(0.7, dense - 0.05)


@pytest.mark.slow
def test_drr_then_tamade_on_the_nnx_model(mnist):
  """Efficient compression: DRR training, then TAMADE's threshold within 5 % of the loss."""
  model = models.adapt(NNXMLP, SAMPLE)
  objective = objectives.drr(1e-5, 10.0)
  state = _train(model, objective, optax.adam(2e-3), mnist, 150)
  (x, y), _ = mnist
  search = pruning.make_tamade_fn(model, CLASSIFICATION, objective, 500, delta=0.05)
  result = search(state, x, y)
  assert 0 < _prunable_density(result.masks) < 0.9
  pruned = state._replace(masks=result.masks, params=masks_lib.apply(result.masks, state.params))
  loss = make_eval_fn(model, CLASSIFICATION, objective, 500)
  assert float(loss(pruned, x, y)["loss"]) <= 1.05 * float(loss(state, x, y)["loss"]) + 1e-6
  _exactly_zero_where_pruned(pruned.params, result.masks)


def test_the_optax_wrapper_prunes_a_user_model_in_a_plain_loop(mnist, tmp_path):
  """The user's own loop: module.apply, optax, sparsify's gradual schedule; the masks
  survive an orbax round trip and training resumes identically."""
  module, ((x, y), (x_test, y_test)) = LinenCNN(), mnist
  params = module.init(jax.random.key(0), x[:1])["params"]
  tx = sparse_train.sparsify(optax.adam(2e-3),
                             sparse_train.gradual(0.2, start=20, end=100, frequency=10))

  @jax.jit
  def step(params, opt_state, i):
    batch = jax.random.choice(jax.random.key(i), x.shape[0], (128,), replace=False)
    def loss(p):
      logits = module.apply({"params": p}, x[batch])
      return optax.softmax_cross_entropy_with_integer_labels(logits, y[batch]).mean()
    updates, opt_state = tx.update(jax.grad(loss)(params), opt_state, params)
    return optax.apply_updates(params, updates), opt_state

  def train(params, opt_state, steps):
    for i in steps:
      params, opt_state = step(params, opt_state, i)
    return params, opt_state

  params, opt_state = train(params, tx.init(params), range(60))
  with Checkpointer(tmp_path / "ckpt") as ckpt:
    ckpt.save(60, (params, opt_state))
  straight = train(params, opt_state, range(60, 150))
  with Checkpointer(tmp_path / "ckpt") as ckpt:
    restored, _ = ckpt.restore(like=(params, tx.init(params)))
  resumed = train(*restored, range(60, 150))
  jax.tree.map(np.testing.assert_array_equal, straight, resumed)
  params, opt_state = resumed
  assert float(sparse_train.density_of(opt_state)) == pytest.approx(0.2, abs=1e-3)
  _exactly_zero_where_pruned(params, sparse_train.masks_of(opt_state))
  accuracy = jnp.mean(jnp.argmax(module.apply({"params": params}, x_test), -1) == y_test)
  assert float(accuracy) > 0.8


# --------------------------------------------------------------------------
# Every family from the command line, with config.model


def _small(module, argument, model, **fields):
  config = module.get_config(argument)
  config.model = f"tests.test_foreign_models:{model}"
  config.manual_dir = str(data_path("mnist"))
  config.dataset = "mnist"
  config.train_set_size, config.val_set_size, config.test_set_size = 2000, 500, 500
  config.max_epochs = config.min_epochs = 3
  config.prune_window = 1
  config.finetuning_max_epochs = config.finetuning_min_epochs = 1
  config.image_size = 0
  config.train_batch_size = 100
  config.quiet = True
  common.set_fields(config, fields)
  return config


CLI_RUNS = {
    "magnitude": (deephoyer_lenet300_mnist, "magnitude", {"pruning.density": 0.2}),
    "deephoyer": (deephoyer_lenet300_mnist, "hs", {}),
    "l0": (l0_mlp_mnist, "constrained", {"l0.target_density": (0.5,), "l0.gates_lr": 0.1,
                                         "l0.dual_lr": 1.0, "l0.droprate_init": (0.5,),
                                         "lr": 3e-3, "max_epochs": 5, "min_epochs": 5}),
    "l0_per_example": (l0_mlp_mnist, "constrained", {
        "l0.sampling": "per_example", "l0.target_density": (0.5,), "l0.gates_lr": 0.1,
        "l0.dual_lr": 1.0, "l0.droprate_init": (0.5,), "lr": 3e-3, "max_epochs": 5,
        "min_epochs": 5}),
    "bmrs": (bmrs_mlp_mnist, "snr", {"train_batch_size": 128, "bmrs.match_compression": 30.0}),
    "drr": (lenet300_mnist, "drr", {"pruning.calibration": "val"}),
    "anneal": (anneal_mlp_mnist, "lth", {"val_fraction": 0.0, "anneal.k_epochs": 0,
                                         "anneal.weight_init": "flax",
                                         "anneal.eval_examples": 500, "optimizer": "adam",
                                         "lr": 2e-3, "finetuning_max_epochs": 3,
                                         "finetuning_min_epochs": 3}),
}


@pytest.mark.slow  # 30 to 60 s: the default suite stays under 10 minutes
def test_command_line_magnitude_pruning_of_the_plain_cnn(tmp_path):
  _command_line_run("magnitude", "LinenCNN", tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("model", ["LinenCNN", "LinenBNDropout", "NNXMLP", "LinenResidual"])
@pytest.mark.parametrize("family", list(CLI_RUNS))
def test_command_line_every_family_on_every_model(family, model, tmp_path):
  _command_line_run(family, model, tmp_path)


def _command_line_run(family, model, tmp_path):
  module, argument, fields = CLI_RUNS[family]
  config = _small(module, argument, model, **fields)
  [row] = run(config, tmp_path)
  assert row["status"] == "finished"
  assert row["final_test_accuracy"] > 0.25  # chance: 0.1; a few epochs on 2,000 images
  loaded = load_run(tmp_path, row["run_id"])
  _exactly_zero_where_pruned(loaded.state.params, loaded.state.masks)
  assert row["kept_params"] < row["total_params"]


@pytest.mark.slow
@pytest.mark.parametrize("model", ["LinenCNN", "NNXMLP"])
def test_the_annealing_search_runs_on_a_users_model_with_its_chains_over_the_cores(
    model, tmp_path):
  # Two seeds: on the tests' fake CPU devices their chains split over two of them.
  config = _small(anneal_mlp_mnist, "sa", model, seeds=2, **{
      "val_fraction": 0.0, "anneal.k_epochs": 0, "anneal.weight_init": "flax",
      "anneal.eval_examples": 500, "anneal.max_evaluations": 100, "optimizer": "adam",
      "lr": 2e-3})
  rows = run(config, tmp_path)
  assert [row["status"] for row in rows] == ["finished", "finished"]
  assert [row["sa_evaluations"] for row in rows] == [100, 100]
  masks = []
  for row in rows:
    loaded = load_run(tmp_path, row["run_id"])
    _exactly_zero_where_pruned(loaded.state.params, loaded.state.masks)
    masks.append(np.concatenate([np.ravel(m) for m in jax.tree.leaves(loaded.state.masks)]))
  assert masks[0].sum() == masks[1].sum()  # the same sparsity
  assert (masks[0] != masks[1]).any()  # two chains, not one copied


def test_a_model_that_lacks_a_capability_is_refused_before_compute():
  config = _small(lenet300_mnist, "layerwise", "LinenCNN")
  with pytest.raises(ConfigError, match="'model' is .*method 'layerwise'.*'dense_chain'"):
    run(config, None)


def test_a_bad_import_path_names_the_field():
  config = _small(bmrs_mlp_mnist, "bmrs_n", "NoSuchModel")
  with pytest.raises(ConfigError, match="'model' is 'tests.test_foreign_models:NoSuchModel'"):
    run(config, None)


@pytest.mark.slow
def test_seed_sweeps_vmap_over_a_user_model(tmp_path):
  config = _small(deephoyer_lenet300_mnist, "magnitude", "LinenBNDropout", seeds=2,
                  **{"pruning.density": 0.2})
  rows = run(config, tmp_path)
  single = copy.deepcopy(config)
  single.seeds, single.seed = 1, config.seed + 1
  [alone] = run(single, tmp_path / "single")
  assert rows[1]["kept_params"] == alone["kept_params"]
  # float32: a vmapped product rounds differently from a single one, and 80 steps of training
  # with a magnitude cut amplify it (final losses 0.4 % apart in CI, as far apart as two
  # seeds'). The masks tell the seeds apart: the same seed keeps almost the same weights,
  # another seed a different fifth of them.
  masks = [load_run(folder, row["run_id"]).state.masks
           for folder, row in ((tmp_path, rows[1]), (tmp_path, rows[0]),
                               (tmp_path / "single", alone))]
  same_seed, other_seed = (_agreement(vmapped, masks[2]) for vmapped in masks[:2])
  assert same_seed > 0.99
  assert other_seed < 0.9
  assert rows[1]["final_test_accuracy"] == pytest.approx(alone["final_test_accuracy"], abs=0.02)


def _agreement(masks_a, masks_b):
  """The fraction of mask entries two runs agree on."""
  a, b = (np.concatenate([np.ravel(leaf) for leaf in jax.tree.leaves(m)]) for m in (masks_a,
                                                                                     masks_b))
  return float(np.mean(a == b))


# --------------------------------------------------------------------------
# The README


@pytest.mark.slow  # 7 s or more on 2 cores: the default suite stays under 10 minutes
def test_the_readme_own_model_snippet_prunes_in_at_most_ten_lines(fashion_mnist_dir, monkeypatch):
  monkeypatch.setenv("SPARSEJAX_DATA_DIR", str(fashion_mnist_dir.parent))
  text = (REPO / "README.md").read_text()
  section = text.split("## Your own model", 1)[1].split("\n## ", 1)[0]
  code = re.findall(r"```python\n(.+?)\n```", section, re.S)[0]
  ours = [line for line in code.split("\n\n", 2)[2].splitlines() if line.strip()]
  imports = [line for line in code.splitlines() if line.startswith(("import", "from"))]
  assert len(imports) + len(ours) <= 10  # from import to a pruned model, the user's model aside
  namespace = {}
  exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102
  state, pruned = namespace["state"], namespace["pruned"]
  assert masks_lib.density(pruned, state.params) == pytest.approx(0.1, abs=1e-3)
  assert all(m is None for m in jax.tree.leaves(
      {k: v["bias"] for k, v in pruned.items()}, is_leaf=lambda m: m is None))
  model, x, y = namespace["model"], namespace["x"][:2000], namespace["y"][:2000]
  accuracy = make_eval_fn(model, CLASSIFICATION, objectives.plain(), 500)(state, x, y)["accuracy"]
  assert float(accuracy) > 0.75
