"""Neuron deletion: removed units, folded biases, resized trees, same function."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from sparsejax.models import MLP, LeNet5Caffe
from sparsejax import masks
from sparsejax.pruning import neurons
from sparsejax.pruning.neurons import dead_units, delete_neurons, resize_like

WIDTHS = (2, 25, 25, 1)
# Layer 0: dead 0..3 (0-2 by mask, 3 by zeros), silent 5, 6, silent by cascade 7.
# Layer 1: dead 0, 1, silent 2, 3, dead by cascade 4 (fed only by dead 0, 1).
REMOVED_0 = (0, 1, 2, 3, 5, 6, 7)
REMOVED_1 = (0, 1, 2, 3, 4)
FIRST_PASS_0 = (0, 1, 2, 3, 5, 6)
FIRST_PASS_1 = (0, 1, 2, 3)


def init_params(widths=WIDTHS, activation="tanh", seed=0):
  """``model.init`` params as NumPy arrays (cheap host-side edits)."""
  model = MLP(widths=widths, activation=activation)
  params = model.init(jax.random.key(seed), jnp.zeros((1, widths[0])))["params"]
  # Nonzero biases, so that the folds matter.
  return jax.tree.map(lambda x: np.asarray(x) + (0.3 if x.ndim == 1 else 0.0), params)


def ones_masks(params):
  return jax.tree.map(lambda p: np.ones(p.shape, bool), params)


def set_entries(tree, name, leaf, index, value=0):
  out = {k: dict(v) for k, v in tree.items()}
  out[name][leaf] = np.array(out[name][leaf])
  out[name][leaf][index] = value
  return out


def pruned_network():
  """Params and masks with dead and silent units of both layers and cascades."""
  params = init_params()
  mask_tree = ones_masks(params)
  mask_tree["Dense_2"]["bias"] = None  # A dense leaf.
  # Layer 0: units 0-2 dead through the mask, unit 3 through exact zeros.
  mask_tree = set_entries(mask_tree, "Dense_0", "kernel", (slice(None), slice(0, 3)), False)
  params = set_entries(params, "Dense_0", "kernel", (slice(None), 3))
  # Layer 0: units 5, 6 silent (outgoing rows zero, one by mask, one by value).
  mask_tree = set_entries(mask_tree, "Dense_1", "kernel", 5, False)
  params = set_entries(params, "Dense_1", "kernel", 6)
  # Layer 1: units 0, 1 dead; 2, 3 silent (Dense_2 rows zero).
  params = set_entries(params, "Dense_1", "kernel", (slice(None), [0, 1]))
  params = set_entries(params, "Dense_2", "kernel", [2, 3])
  # Layer 1 unit 4 is fed only by the dead layer-0 units 0 and 1: it becomes
  # dead once they are removed (forward cascade). Its pruned bias must be
  # revived by the fold.
  column = np.zeros(25, np.float32)
  column[:2] = 0.7, -0.4
  params = set_entries(params, "Dense_1", "kernel", (slice(None), 4), column)
  mask_tree = set_entries(mask_tree, "Dense_1", "bias", 4, False)
  # Layer 0 unit 7 feeds only the silent layer-1 units 2 and 3: it becomes
  # silent once they are removed (backward cascade, needs a second sweep).
  row = np.zeros(25, np.float32)
  row[2:4] = 0.5, -0.6
  params = set_entries(params, "Dense_1", "kernel", 7, row)
  return params, mask_tree


def outputs(widths, activation, params, mask_tree, x):
  model = MLP(widths=widths, activation=activation)
  if mask_tree is not None:
    params = jax.tree.map(lambda m, p: p if m is None else np.where(m, p, 0), mask_tree, params,
                          is_leaf=lambda m: m is None)
  return np.asarray(model.apply({"params": params}, x))


def kept(n, removed):
  return np.setdiff1d(np.arange(n), np.array(removed))


def test_dead_units_is_one_pass():
  params, mask_tree = pruned_network()
  flags = dead_units(params, mask_tree)
  assert sorted(flags) == ["Dense_0", "Dense_1"]
  np.testing.assert_array_equal(np.flatnonzero(flags["Dense_0"]), FIRST_PASS_0)
  np.testing.assert_array_equal(np.flatnonzero(flags["Dense_1"]), FIRST_PASS_1)
  # Without the masks, only the exact zeros count.
  flags = dead_units(params)
  np.testing.assert_array_equal(np.flatnonzero(flags["Dense_0"]), [3, 6])


def test_delete_neurons_keeps_function_and_reaches_fixed_point():
  params, mask_tree = pruned_network()
  result = delete_neurons(params, mask_tree, activation="tanh")

  assert result.widths == (2, 25 - len(REMOVED_0), 25 - len(REMOVED_1), 1)
  np.testing.assert_array_equal(result.kept_units["Dense_0"], kept(25, REMOVED_0))
  np.testing.assert_array_equal(result.kept_units["Dense_1"], kept(25, REMOVED_1))
  x = np.random.default_rng(1).uniform(-1.0, 1.0, (64, 2)).astype(np.float32)
  before = outputs(WIDTHS, "tanh", params, mask_tree, x)
  after = outputs(result.widths, "tanh", result.params, result.masks, x)
  np.testing.assert_allclose(after, before, atol=1e-5)
  # The folds matter: dropping the units without folding changes the output.
  unfolded = resize_like(params, result.kept_units)
  unfolded_masks = resize_like(mask_tree, result.kept_units)
  assert np.abs(outputs(result.widths, "tanh", unfolded, unfolded_masks, x) - before).max() > 1e-3
  # Fixed point: nothing left to remove.
  assert not any(f.any() for f in dead_units(result.params, result.masks).values())
  again = delete_neurons(result.params, result.masks, activation="tanh")
  assert again.widths == result.widths


def test_masks_and_extra_trees_are_resized_consistently():
  params, mask_tree = pruned_network()
  # Distinct values per entry, to check which entries survive.
  counter = iter(range(1000))
  extra = jax.tree.map(lambda p: 1000.0 * next(counter) + np.arange(p.size).reshape(p.shape),
                       params)
  result = delete_neurons(params, mask_tree, activation="tanh", extra_trees=(extra, extra))
  k0, k1 = kept(25, REMOVED_0), kept(25, REMOVED_1)

  def select(tree):
    return {
        "Dense_0": {"kernel": tree["Dense_0"]["kernel"][:, k0], "bias": tree["Dense_0"]["bias"][k0]},
        "Dense_1": {"kernel": tree["Dense_1"]["kernel"][k0][:, k1],
                    "bias": tree["Dense_1"]["bias"][k1]},
        "Dense_2": {"kernel": tree["Dense_2"]["kernel"][k1], "bias": tree["Dense_2"]["bias"]},
    }

  assert len(result.extra_trees) == 2
  for tree in result.extra_trees:
    jax.tree.map(np.testing.assert_array_equal, tree, select(extra))
  # Params: everything but the two folded biases is the index selection.
  expected = select(params)
  for name, leaf in [("Dense_0", "kernel"), ("Dense_0", "bias"), ("Dense_1", "kernel"),
                     ("Dense_2", "kernel")]:
    np.testing.assert_array_equal(result.params[name][leaf], expected[name][leaf])
    assert result.masks[name][leaf].shape == result.params[name][leaf].shape
  # Masks: the index selection, except the revived folded bias entries.
  assert result.masks["Dense_2"]["bias"] is None
  expected_masks = select({k: {l: (v if v is not None else np.ones(1, bool))
                               for l, v in layer.items()} for k, layer in mask_tree.items()})
  for name, leaf in [("Dense_0", "kernel"), ("Dense_0", "bias"), ("Dense_1", "kernel"),
                     ("Dense_2", "kernel")]:
    np.testing.assert_array_equal(result.masks[name][leaf], expected_masks[name][leaf])
  # Layer-1 unit 4 (pruned bias, received a fold) was removed; all remaining
  # Dense_1 bias entries were kept and stay so.
  assert bool(np.all(result.masks["Dense_1"]["bias"]))


def test_relu_folds_relu_of_bias():
  params = init_params(widths=(3, 4, 2), activation="relu")
  params = set_entries(params, "Dense_0", "kernel", (slice(None), [1, 2]))
  params = set_entries(params, "Dense_0", "bias", 1, 0.8)   # relu(0.8) = 0.8
  params = set_entries(params, "Dense_0", "bias", 2, -0.5)  # relu(-0.5) = 0
  result = delete_neurons(params, activation="relu")

  assert result.widths == (3, 2, 2)
  assert result.masks is None
  np.testing.assert_array_equal(result.kept_units["Dense_0"], [0, 3])
  w1, b1 = params["Dense_1"]["kernel"], params["Dense_1"]["bias"]
  np.testing.assert_allclose(result.params["Dense_1"]["bias"], b1 + 0.8 * w1[1], atol=1e-6)
  x = np.random.default_rng(2).normal(size=(32, 3)).astype(np.float32)
  np.testing.assert_allclose(outputs(result.widths, "relu", result.params, None, x),
                             outputs((3, 4, 2), "relu", params, None, x), atol=1e-5)


def test_removing_a_whole_layer_names_it():
  # Layer 1 removed through its outgoing rows (all silent). Zeroing its
  # incoming kernel would make layer 0 silent first.
  params = init_params()
  params = set_entries(params, "Dense_2", "kernel", (slice(None), slice(None)))
  with pytest.raises(ValueError, match="Dense_1"):
    delete_neurons(params, activation="tanh")
  # Layer 0 removed through its outgoing rows.
  params = init_params()
  mask_tree = set_entries(ones_masks(params), "Dense_1", "kernel", slice(None), False)
  with pytest.raises(ValueError, match="Dense_0"):
    delete_neurons(params, mask_tree, activation="tanh")


def test_nothing_dead_leaves_params_unchanged():
  params = init_params()
  mask_tree = ones_masks(params)
  result = delete_neurons(params, mask_tree, activation="tanh", extra_trees=(params,))
  assert result.widths == WIDTHS
  jax.tree.map(np.testing.assert_array_equal, result.params, params)
  jax.tree.map(np.testing.assert_array_equal, result.masks, mask_tree)
  jax.tree.map(np.testing.assert_array_equal, result.extra_trees[0], params)
  for name in ("Dense_0", "Dense_1"):
    np.testing.assert_array_equal(result.kept_units[name], np.arange(25))


def test_resize_like_on_adam_state():
  params, mask_tree = pruned_network()
  result = delete_neurons(params, mask_tree, activation="tanh")
  tx = optax.adam(1e-3)
  update = jax.jit(tx.update)
  state = tx.init(params)
  grads = jax.tree.map(np.ones_like, params)
  _, state = update(grads, state, params)
  adam = state[0]
  new_adam = adam._replace(mu=resize_like(adam.mu, result.kept_units),
                           nu=resize_like(adam.nu, result.kept_units))
  new_state = (new_adam,) + tuple(state[1:])
  # Same structure and shapes as a fresh state of the smaller params.
  fresh = tx.init(result.params)
  assert (jax.tree.structure(new_state) == jax.tree.structure(fresh))
  jax.tree.map(lambda a, b: np.testing.assert_equal(a.shape, b.shape), new_state, fresh)
  k0 = result.kept_units["Dense_0"]
  np.testing.assert_array_equal(new_adam.mu["Dense_0"]["kernel"], adam.mu["Dense_0"]["kernel"][:, k0])
  # And it works with the optimizer.
  updates, _ = update(jax.tree.map(jnp.ones_like, result.params), new_state, result.params)
  jax.tree.map(lambda u, p: np.testing.assert_equal(u.shape, p.shape), updates, result.params)


def test_fold_dead_neurons_keeps_shapes_and_equals_the_deleted_network():
  model = MLP(widths=(2, 25, 25, 1), activation="tanh")
  params = model.init(jax.random.key(3), jnp.zeros((1, 2)))["params"]
  mask_tree = masks.ones_like(params, masks.every_leaf)
  # Units 0-4 of Dense_0 lose their inputs (dead, bias folded), 5-7 their outputs.
  mask_tree["Dense_0"]["kernel"] = mask_tree["Dense_0"]["kernel"].at[:, :5].set(False)
  mask_tree["Dense_1"]["kernel"] = mask_tree["Dense_1"]["kernel"].at[5:8, :].set(False)
  params["Dense_0"]["bias"] = params["Dense_0"]["bias"] + 0.5
  folded_params, folded_masks = neurons.fold_dead_neurons(params, mask_tree, activation="tanh")
  deleted = neurons.delete_neurons(params, mask_tree, activation="tanh")
  jax.tree.map(lambda a, b: np.testing.assert_equal(np.shape(a), np.shape(b)),
               folded_params, params)
  assert int(masks.kept_count(folded_masks, folded_params)) == int(
      masks.kept_count(deleted.masks, deleted.params))
  x = jax.random.uniform(jax.random.key(4), (64, 2), minval=-1, maxval=1)
  small = MLP(widths=deleted.widths, activation="tanh").apply({"params": deleted.params}, x)
  same = model.apply({"params": masks.apply(folded_masks, folded_params)}, x)
  original = model.apply({"params": masks.apply(mask_tree, params)}, x)
  np.testing.assert_allclose(same, small, atol=1e-5)
  np.testing.assert_allclose(same, original, atol=1e-5)
  assert not np.any(folded_masks["Dense_0"]["bias"][:8])
  assert np.all(np.asarray(folded_params["Dense_1"]["kernel"])[:8] == 0)


def lenet5_with_dead_channels():
  """LeNet-5 params with dead and silent conv channels and hidden units, positive biases."""
  model = LeNet5Caffe()
  params = model.init(jax.random.key(5), jnp.zeros((1, 28, 28, 1)))["params"]
  params = jax.tree.map(lambda x: np.array(x) + (0.2 if x.ndim == 1 else 0.0), params)
  mask_tree = ones_masks(params)
  params["Conv_0"]["kernel"][..., [0, 3]] = 0          # Conv_0 channels 0, 3 dead: folded
  params["Conv_1"]["kernel"][:, :, 5, :] = 0           # Conv_0 channel 5 silent
  mask_tree["Conv_1"]["kernel"][..., [1, 2, 7]] = False  # Conv_1 channels 1, 2, 7 dead
  dense_rows = params["Dense_0"]["kernel"].reshape(16, 50, 500)
  dense_rows[:, 9, :] = 0                               # Conv_1 channel 9 silent (every position)
  params["Dense_0"]["kernel"][:, 4] = 0                 # Dense_0 unit 4 dead
  return model, params, mask_tree


@pytest.mark.slow  # 7 s or more on 2 cores: the default suite stays under 10 minutes
def test_conv_channels_are_deleted_with_the_function_kept():
  model, params, mask_tree = lenet5_with_dead_channels()
  result = delete_neurons(params, mask_tree, activation="relu")
  np.testing.assert_array_equal(result.kept_units["Conv_0"], kept(20, (0, 3, 5)))
  np.testing.assert_array_equal(result.kept_units["Conv_1"], kept(50, (1, 2, 7, 9)))
  np.testing.assert_array_equal(result.kept_units["Dense_0"], kept(500, (4,)))
  assert result.widths == (1, 17, 46, 499, 10)
  small = neurons.smaller_model(model, result.widths)
  assert small.channels == (17, 46) and small.hidden == 499
  x = jax.random.uniform(jax.random.key(6), (8, 28, 28, 1))
  want = model.apply({"params": masks.apply(mask_tree, params)}, x)
  got = small.apply({"params": masks.apply(result.masks, result.params)}, x)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  # The folds matter: without them the outputs differ.
  unfolded = resize_like(masks.apply(mask_tree, params), result.kept_units)
  assert not np.allclose(small.apply({"params": unfolded}, x), want, atol=1e-3)
  assert not any(f.any() for f in dead_units(result.params, result.masks).values())


def test_conv_fold_keeps_shapes_and_equals_the_deleted_network():
  model, params, mask_tree = lenet5_with_dead_channels()
  folded_params, folded_masks = neurons.fold_dead_neurons(params, mask_tree, activation="relu")
  deleted = delete_neurons(params, mask_tree, activation="relu")
  jax.tree.map(lambda a, b: np.testing.assert_equal(np.shape(a), np.shape(b)),
               folded_params, params)
  assert int(masks.kept_count(folded_masks, folded_params)) == int(
      masks.kept_count(deleted.masks, deleted.params))
  x = jax.random.uniform(jax.random.key(7), (4, 28, 28, 1))
  want = model.apply({"params": masks.apply(mask_tree, params)}, x)
  got = model.apply({"params": masks.apply(folded_masks, folded_params)}, x)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  assert not np.any(np.asarray(folded_masks["Conv_1"]["kernel"])[:, :, [0, 3, 5], :])
  assert not np.any(np.asarray(folded_masks["Dense_0"]["kernel"]).reshape(16, 50, 500)[:, 9])


def test_a_chain_that_does_not_connect_is_named():
  model, params, _ = lenet5_with_dead_channels()
  params["Dense_0"]["kernel"] = params["Dense_0"]["kernel"][:798]
  with pytest.raises(ValueError, match="Conv_1 has 50 units but Dense_0/kernel"):
    delete_neurons(params, activation="relu")
  with pytest.raises(ValueError, match="smaller_model supports MLP and LeNet5Caffe"):
    neurons.smaller_model(object(), (1, 2))
