"""The pruning-at-initialisation recipe (annealing, LTH, Deconst, SNIP, random) on real MNIST."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import anneal_mlp_mnist, common
from sparsejax import masks as masks_lib
from sparsejax import results
from sparsejax.fields import ConfigError
from sparsejax.recipes import anneal
from sparsejax.runner import errors, load_run, run
from sparsejax.runner.config import validate
from tests.conftest import data_path


def small(criterion, **fields):
  config = anneal_mlp_mnist.get_config(criterion)
  config.manual_dir = str(data_path("mnist"))
  config.train_set_size, config.val_set_size, config.test_set_size = 2000, 500, 500
  config.anneal.k_epochs = min(config.anneal.k_epochs, 1)
  config.anneal.max_evaluations = 200
  config.anneal.eval_examples = 500
  config.finetuning_max_epochs = config.finetuning_min_epochs = 2
  config.quiet = True
  common.set_fields(config, fields)
  return config


@pytest.mark.slow
@pytest.mark.parametrize("criterion", ["sa", "deconst"])
def test_a_mask_at_the_sparsity_is_rewound_retrained_and_stays(criterion, tmp_path):
  rows = run(small(criterion, seeds=2), tmp_path)
  for row in rows:
    assert row["status"] == "finished" and row["finetune_epochs"] == 2
    assert row["kept_params"] == 266_200 - int(266_200 * 0.7)
    assert row["final_test_accuracy"] > 0.5
    assert 0 < row["rewind_test_accuracy"] < 1 and row["os_sum"] > 0
    assert set(row) >= {"os_Dense_0", "os_Dense_1", "os_Dense_2"}
    loaded = load_run(tmp_path, row["run_id"]).state
    for p, m in zip(jax.tree.leaves(loaded.params), jax.tree.leaves(loaded.masks)):
      assert np.all(np.asarray(p)[~np.asarray(m)] == 0)
  if criterion == "sa":
    assert all(row["sa_evaluations"] == 200 for row in rows)
    assert all(5 < row["sa_best_mean"] <= 100 for row in rows)
  else:
    assert "sa_evaluations" not in rows[0]


def test_flat_masks_round_trip_over_the_prunable_leaves():
  params = {"a": jnp.arange(6.0).reshape(2, 3), "b": jnp.arange(2.0), "c": jnp.ones(4)}
  masks = {"a": jnp.ones((2, 3), bool), "b": None, "c": jnp.ones(4, bool)}
  flat = masks_lib.flatten_prunable(params, masks)
  np.testing.assert_array_equal(flat, [0, 1, 2, 3, 4, 5, 1, 1, 1, 1])
  tree = masks_lib.unflatten_like(jnp.arange(10) % 2 == 0, masks)
  assert tree["b"] is None and tree["c"].tolist() == [True, False, True, False]
  np.testing.assert_array_equal(masks_lib.top_k(jnp.asarray([3.0, 1.0, 2.0, 5.0]), 2),
                                [True, False, False, True])


def test_orthogonality_score_by_hand():
  w = jnp.asarray([[1.0, 0.0], [0.5, 2.0]])
  m = jnp.asarray([[True, False], [True, True]])
  score = anneal.orthogonality({"Dense_0": {"kernel": w}}, {"Dense_0": {"kernel": m}})
  gram = np.asarray([[1.0, 0.5], [0.5, 4.25]])  # (W*M)(W*M)^T
  assert float(score["Dense_0"]) == pytest.approx(np.mean((gram - np.eye(2)) ** 2))


@pytest.mark.slow  # 7 s or more on 2 cores: the default suite stays under 10 minutes
def test_deconst_drops_sign_flips_and_snip_uses_the_gradient_at_init():
  config = small("deconst")
  from sparsejax.runner.build import build
  from sparsejax.train.driver import SeedProgram
  from sparsejax.train.state import TrainState
  parts = build(config)
  program = SeedProgram([42], parts.data, parts.data_axis, parts.model, parts.task,
                        train_batch_size=64, eval_batch_size=500)
  params = {"Dense_0": {"kernel": jnp.asarray([[1.0, -2.0], [3.0, 0.5]])}}
  masks = masks_lib.ones_like(params)
  init = TrainState(0, {"Dense_0": {"kernel": jnp.asarray([[1.0, 2.0], [3.0, 0.5]])}}, (), {}, (),
                    masks)
  trained = init._replace(params=params)
  config.anneal.sparsity = 0.5
  search = anneal.make_search(config, program)
  # |w_K| = [1, 2, 3, 0.5] but the 2 flipped sign: Deconst keeps 3 and 1.
  chosen, _ = search(trained, init, jax.random.key(0), parts.data)
  np.testing.assert_array_equal(chosen["Dense_0"]["kernel"], [[True, False], [True, False]])


@pytest.mark.parametrize("field, value, message", [
    ("anneal.criterion", "sgd", "accepted values: sa"),
    ("anneal.sparsity", 1.0, "in (0, 1)"),
    ("anneal.tabu", "never", "accepted values: exact, within_n"),
    ("anneal.iters_cap", 0.5, ">= anneal.iters_start"),
    ("anneal.weight_init", "kaiming", "accepted values: flax, torch"),
    ("anneal.momentum", 0.9, "0 for optimizer 'adadelta' (only 'sgd' takes a momentum)"),
    ("anneal.chain_loop", "pmap", "accepted values: auto, vmap, map"),
])
def test_bad_anneal_fields_are_named(field, value, message):
  config = small("sa")
  common.set_fields(config, {field: value})
  with pytest.raises(ConfigError, match=field.replace(".", r"\.")) as error:
    validate(config)
  assert message in str(error.value)


def test_the_chains_run_one_after_another_on_a_cpu_unless_told_otherwise():
  config = small("sa")
  assert anneal.chain_loop_of(config) == ("map" if jax.default_backend() == "cpu" else "vmap")
  config.anneal.chain_loop = "vmap"
  assert anneal.chain_loop_of(config) == "vmap"


def test_the_torch_init_is_refused_for_a_model_without_it():
  config = small("lth", architecture="lenet5_caffe")
  with pytest.raises(ConfigError, match="architecture") as error:
    validate(config)
  assert "anneal.weight_init 'torch'" in str(error.value)
  assert "capability 'torch_init'" in str(error.value)
  config.anneal.weight_init = "flax"
  validate(config)


# --------------------------------------------------------------------------
# The CNN path on generated CIFAR-shaped data


@pytest.fixture(scope="module")
def fake_cifar(tmp_path_factory):
  from tests.test_images import write_fake_cifar10
  folder = tmp_path_factory.mktemp("cifar")
  write_fake_cifar10(folder / "cifar-10-python.tar.gz", per_batch=60, n_test=40)
  return folder


def cnn(criterion, folder, **fields):
  from configs import anneal_cnn_cifar
  config = anneal_cnn_cifar.get_config(criterion)
  config.manual_dir = str(folder)
  config.data_dir = str(folder / "tfds")
  config.val_fraction = 0.2
  config.train_batch_size = 40   # multiples of the 4 fake test devices (data parallel)
  config.eval_batch_size = 20
  config.anneal.k_epochs = min(config.anneal.k_epochs, 1)
  config.anneal.levels, config.anneal.eval_examples = 30, 64
  config.finetuning_max_epochs = config.finetuning_min_epochs = 1
  config.quiet = True
  common.set_fields(config, fields)
  return config


@pytest.mark.slow
@pytest.mark.parametrize("criterion", ["sa", "magsign"])
def test_the_cnn_path_searches_rewinds_deletes_and_retrains(criterion, fake_cifar, tmp_path):
  try:
    run(cnn(criterion, fake_cifar), tmp_path)
  except errors.Collapsed:  # random labels: the network learns nothing, and the row says so
    pass
  [row] = results.read_runs(tmp_path).to_dict("records")
  assert row["status"] in ("finished", "collapsed")
  kept = [row[f"filters_Conv_{i}"] for i in range(4)]
  assert sum(kept) == 960 - int(960 * 0.7)
  assert 0 < row["small_params_pct"] < 100 and 0 < row["small_macs_pct"] < 100
  if criterion == "sa":
    assert row["sa_evaluations"] == sum(annealing_levels(30))


def annealing_levels(levels):
  from sparsejax.pruning import annealing
  schedule = annealing.CNN_SCHEDULE._replace(levels=levels)
  return annealing.level_schedule(schedule)[0].tolist()


@pytest.mark.slow
def test_filter_deletion_computes_the_masked_network():
  from sparsejax import models
  from sparsejax.pruning import filters
  model = models.BasicCNN()
  x = jax.random.normal(jax.random.key(0), (3, 32, 32, 3))
  variables = model.init(jax.random.key(1), x)
  params = variables["params"]
  # Non-trivial BatchNorm statistics and affine parameters.
  stats = jax.tree.map(lambda s: s + jax.random.uniform(jax.random.key(2), s.shape),
                       variables["batch_stats"])
  params = jax.tree_util.tree_map_with_path(
      lambda p, v: v + 0.1 if "BatchNorm" in str(p[0]) else v, params)
  kept = {f"Conv_{i}": jax.random.bernoulli(jax.random.key(10 + i), 0.4, (c,))
          for i, c in enumerate(models.basic_cnn.CHANNELS)}
  masks = masks_lib.unit_masks(params, kept, model.unit_covers())
  masked = model.apply({"params": masks_lib.apply(masks, params), "batch_stats": stats}, x)
  deleted = filters.delete_filters(model, {"params": params, "batch_stats": stats},
                                   {k: np.asarray(v) for k, v in kept.items()}, x[:1])
  channels = filters.kept_channels(deleted, params)
  assert channels == tuple(int(np.sum(v)) for v in kept.values())
  np.testing.assert_allclose(deleted.apply(deleted.variables, x), masked, rtol=1e-4, atol=1e-5)
  # The variables are those of the same CNN built with the kept widths.
  small = models.BasicCNN(channels=channels)
  np.testing.assert_allclose(small.apply(deleted.variables, x), masked, rtol=1e-4, atol=1e-5)


def test_filter_scores_by_hand():
  from sparsejax.pruning import filters
  init = {"Conv_0": {"kernel": jnp.asarray([-1.0, 2.0, 1.0]).reshape(1, 1, 1, 3)}}
  final = {"Conv_0": {"kernel": jnp.asarray([-3.0, -0.5, 0.2]).reshape(1, 1, 1, 3)}}
  np.testing.assert_allclose(filters.filter_scores("magnitude", final, init)["Conv_0"],
                             [3.0, 0.5, 0.2])
  np.testing.assert_allclose(filters.filter_scores("magsign", final, init)["Conv_0"],
                             [3.0, -0.5, 0.2])


# --------------------------------------------------------------------------
# The search's evaluation and its checkpoints


def test_the_first_layer_is_found_on_a_users_linen_model_and_refused_where_it_does_not_fit():
  import flax.linen as nn
  from flax import nnx
  from sparsejax.models import adapter

  class Mlp(nn.Module):  # a user's model: plain __call__, a bias on the first layer
    scale: float = 1.0

    @nn.compact
    def __call__(self, x):
      x = x.reshape(x.shape[0], -1) * self.scale
      return nn.Dense(3)(nn.relu(nn.Dense(5)(x)))

  x = jax.random.normal(jax.random.key(0), (16, 2, 3))
  y = jax.random.randint(jax.random.key(1), (16,), 0, 3)
  # Dense_0 is the output layer (flax numbers modules as they are built): the first layer is
  # Dense_1, after Dense_0's 5 x 3 kernel in the flat mask.
  for scale, found in ((1.0, (("Dense_1",), 15)), (2.0, None)):  # x * 2 is not the input
    model = adapter.adapt(Mlp(scale), x[:1])
    params, state = model.init(jax.random.key(2), x)
    masks = masks_lib.ones_like(params)
    assert anneal.first_dense_layer(model, params, state, masks, x) == found
  # Through the first layer, the accuracies equal the full evaluation's.
  model = adapter.adapt(Mlp(), x[:1])
  params, state = model.init(jax.random.key(2), x)
  masks = masks_lib.ones_like(params)
  from sparsejax.train.state import TrainState
  trained = TrainState(0, params, (), state, (), masks)
  first = anneal.first_dense_layer(model, params, state, masks, x)
  fast = anneal.weight_evaluator(model, trained, masks, x, y, first)
  full = anneal.weight_evaluator(model, trained, masks, x, y, None)
  assert fast.incremental and not full.incremental
  # Through the first two layers too: the second is Dense_0, fed through relu.
  second = anneal.second_dense_layer(model, params, state, masks, x, first)
  assert second == (("Dense_0",), 0, "relu")
  fast2 = anneal.weight_evaluator(model, trained, masks, x, y, first, second)
  n = 6 * 5 + 5 * 3
  mask = jax.random.bernoulli(jax.random.key(3), 0.5, (n,))
  for evaluator in (fast, fast2):
    accuracy, cache = evaluator.full(mask)
    assert float(accuracy) == float(full.full(mask)[0])
    for key in range(5):
      flipped = jax.random.choice(jax.random.key(key), n, (4,), replace=False)
      flips = anneal.annealing.Flips(flipped, ~mask[flipped])
      candidate = mask.at[flipped].set(~mask[flipped])
      assert float(evaluator.update(cache, candidate, flips)[0]) == float(full.full(candidate)[0])

  class Scaled(nn.Module):  # x -> Dense -> 2 relu(.) -> Dense: no activation of the list
    @nn.compact
    def __call__(self, x):
      x = x.reshape(x.shape[0], -1)
      return nn.Dense(3, name="out")(2 * nn.relu(nn.Dense(5, name="hidden")(x)))
  model = adapter.adapt(Scaled(), x[:1])
  params, state = model.init(jax.random.key(2), x)
  masks = masks_lib.ones_like(params)
  first = anneal.first_dense_layer(model, params, state, masks, x)
  assert first == (("hidden",), 0)
  assert anneal.second_dense_layer(model, params, state, masks, x, first) is None

  class Nnx(nnx.Module):
    def __init__(self, rngs):
      self.dense = nnx.Linear(6, 3, rngs=rngs)

    def __call__(self, x):
      return self.dense(x.reshape(x.shape[0], -1))
  model = adapter.adapt(Nnx, x[:1])
  params, state = model.init(jax.random.key(2), x)
  assert anneal.first_dense_layer(model, params, state, masks_lib.ones_like(params), x) is None


@pytest.mark.slow  # three short runs on real MNIST; the chunked search itself: test_annealing.py
def test_an_interrupted_search_resumes_inside_the_stage_and_ends_with_the_same_masks(
    tmp_path, monkeypatch):
  from sparsejax.runner import program as program_lib
  # Two seeds: on the tests' fake CPU devices their chains split over two of them.
  config = small("sa", seeds=2, **{"anneal.checkpoint_levels": 40, "finetuning_max_epochs": 0,
                                   "finetuning_min_epochs": 0})
  whole = run(config, tmp_path / "whole")
  saves = []
  original = program_lib.Program.save

  def stopping_save(self, content):
    original(self, content)
    if "progress" in content:
      saves.append(int(content["progress"]["next_level"]))
      if len(saves) == 2:
        raise KeyboardInterrupt
  monkeypatch.setattr(program_lib.Program, "save", stopping_save)
  with pytest.raises(KeyboardInterrupt):
    run(config, tmp_path / "parts")
  assert saves == [40, 80]
  monkeypatch.setattr(program_lib.Program, "save", original)
  resumed = run(config, tmp_path / "parts")
  assert len(resumed) == len(whole) == 2
  for one, other in zip(whole, resumed):
    for field in ("seed", "sa_best_mean", "sa_evaluations", "sa_accepted",
                  "rewind_test_accuracy", "final_test_accuracy"):
      assert other[field] == one[field], field
    a = load_run(tmp_path / "whole", one["run_id"]).state.masks
    b = load_run(tmp_path / "parts", other["run_id"]).state.masks
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
      np.testing.assert_array_equal(x, y)
