"""The pruning-at-initialisation recipe (annealing, LTH, Deconst, SNIP, random) on real MNIST."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import anneal_mlp_mnist, common
from sparsejax import masks as masks_lib
from sparsejax.recipes import anneal
from sparsejax.runner import load_run, run
from sparsejax.runner.config import ConfigError, validate
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
  flat = anneal.flat_prunable(params, masks)
  np.testing.assert_array_equal(flat, [0, 1, 2, 3, 4, 5, 1, 1, 1, 1])
  tree = anneal.unflatten_mask(jnp.arange(10) % 2 == 0, masks)
  assert tree["b"] is None and tree["c"].tolist() == [True, False, True, False]
  np.testing.assert_array_equal(anneal.top_mask(jnp.asarray([3.0, 1.0, 2.0, 5.0]), 2),
                                [True, False, False, True])


def test_orthogonality_score_by_hand():
  w = jnp.asarray([[1.0, 0.0], [0.5, 2.0]])
  m = jnp.asarray([[True, False], [True, True]])
  score = anneal.orthogonality({"Dense_0": {"kernel": w}}, {"Dense_0": {"kernel": m}})
  gram = np.asarray([[1.0, 0.5], [0.5, 4.25]])  # (W*M)(W*M)^T
  assert float(score["Dense_0"]) == pytest.approx(np.mean((gram - np.eye(2)) ** 2))


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
])
def test_bad_anneal_fields_are_named(field, value, message):
  config = small("sa")
  common.set_fields(config, {field: value})
  with pytest.raises(ConfigError, match=field.replace(".", r"\.")) as error:
    validate(config)
  assert message in str(error.value)
