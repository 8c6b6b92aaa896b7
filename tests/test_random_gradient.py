"""Random gradient pruning: entries with exactly zero gradient are removed."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from sparsejax import masks, objectives
from sparsejax.models import MLP
from sparsejax.pruning.random_gradient import (make_random_gradient_prune_fn,
                                               random_gradient_prune)
from sparsejax.train import CLASSIFICATION, REGRESSION, create_train_state

DEAD = 1  # The hidden unit of Dense_0 whose outgoing weights are pruned.


@functools.cache
def _model_and_state():
  model = MLP(widths=(3, 4, 2), activation="tanh")
  state = create_train_state(jax.random.key(0), model, jnp.ones((6, 3)), objectives.plain(),
                             optax.sgd(0.1), prunable=masks.every_leaf)
  mask_tree = dict(state.masks)
  mask_tree["Dense_1"] = {**mask_tree["Dense_1"],
                          "kernel": mask_tree["Dense_1"]["kernel"].at[DEAD].set(False)}
  return model, state._replace(masks=mask_tree, params=masks.apply(mask_tree, state.params))


def dead_unit_problem(task):
  """An MLP [3, 4, 2] whose hidden unit ``DEAD`` has all its outgoing weights masked."""
  model, state = _model_and_state()
  x = jnp.ones((6, 3))
  y = jnp.zeros((6,), jnp.int32) if task is CLASSIFICATION else jnp.zeros((6, 2))
  return model, state, (x, y)


def expected_masks(state):
  """All True but the dead unit's incoming column and bias and its outgoing row."""
  out = jax.tree.map(lambda m: np.ones(m.shape, bool), state.masks)
  out["Dense_0"]["kernel"][:, DEAD] = False
  out["Dense_0"]["bias"][DEAD] = False
  out["Dense_1"]["kernel"][DEAD] = False
  return out


@pytest.mark.parametrize("task", [CLASSIFICATION, REGRESSION], ids=["labels", "regression"])
def test_weights_into_a_dead_unit_are_pruned_live_weights_stay(task):
  model, state, batch = dead_unit_problem(task)
  prune = make_random_gradient_prune_fn(model, task, objectives.plain())
  params, new_masks = prune(jax.random.key(1), state, batch)
  jax.tree.map(np.testing.assert_array_equal, new_masks, expected_masks(state))
  # Pruned entries are zero; kept entries keep their values.
  jax.tree.map(lambda p, q, m: np.testing.assert_array_equal(p, np.where(m, q, 0.0)),
               params, state.params, new_masks)
  assert float(jnp.abs(params["Dense_0"]["kernel"][:, DEAD]).max()) == 0.0


def test_already_masked_entries_stay_pruned_even_with_nonzero_values():
  model, state, batch = dead_unit_problem(REGRESSION)
  # Leave the value of a masked entry nonzero: the mask alone must keep it out.
  raw = jax.tree.map(lambda p: p + 0.5, state.params)

  def loss_fn(p, x, y):
    return jnp.mean(jnp.square(model.apply({"params": p}, x) - y))

  params, new_masks = random_gradient_prune(jax.random.key(2), loss_fn, raw, state.masks, batch)
  assert not np.any(new_masks["Dense_1"]["kernel"][DEAD])
  assert float(jnp.abs(params["Dense_1"]["kernel"][DEAD]).max()) == 0.0


def test_none_leaves_are_never_pruned():
  model, state, batch = dead_unit_problem(REGRESSION)
  mask_tree = {**state.masks, "Dense_0": {**state.masks["Dense_0"], "bias": None}}

  def loss_fn(p, x, y):
    return jnp.mean(jnp.square(model.apply({"params": p}, x) - y))

  params, new_masks = random_gradient_prune(jax.random.key(2), loss_fn, state.params, mask_tree,
                                            batch)
  assert new_masks["Dense_0"]["bias"] is None
  np.testing.assert_array_equal(params["Dense_0"]["bias"], state.params["Dense_0"]["bias"])


def test_is_jittable_and_a_pure_function_of_the_key():
  model, state, (x, y) = dead_unit_problem(CLASSIFICATION)

  def loss_fn(p, xb, yb):
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(
        model.apply({"params": p}, xb), yb))

  spec = (jax.ShapeDtypeStruct(x.shape, x.dtype), jax.ShapeDtypeStruct(y.shape, y.dtype))
  prune = jax.jit(functools.partial(random_gradient_prune, loss_fn=loss_fn, batch_like=spec,
                                    num_classes=2))
  first = prune(jax.random.key(3), params=state.params, masks=state.masks)
  again = prune(jax.random.key(3), params=state.params, masks=state.masks)
  jax.tree.map(np.testing.assert_array_equal, first, again)
  jax.tree.map(np.testing.assert_array_equal, first[1], expected_masks(state))


def test_integer_targets_need_num_classes():
  model, state, batch = dead_unit_problem(CLASSIFICATION)
  with pytest.raises(ValueError, match="num_classes"):
    random_gradient_prune(jax.random.key(0), lambda p, x, y: 0.0, state.params, state.masks,
                          batch)
