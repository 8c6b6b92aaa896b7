"""Teacher-student data: shapes, keys, noise level, teacher rescaling, vmap."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sparsejax.data import (TEACHER_KEY_OFFSET, Splits, init_teacher, teacher_model,
                            teacher_student_data, teacher_student_data_from_key)


@pytest.fixture(scope="module")
def seed0():
  """``teacher_student_data(0)`` with the reference's defaults, drawn once."""
  return teacher_student_data(0)


def _assert_trees_equal(a, b):
  jax.tree.map(np.testing.assert_array_equal, a, b)


def test_shapes_dtypes_and_input_box(seed0):
  splits, teacher = seed0
  assert isinstance(splits, Splits)
  for split, n in zip(splits, (300, 1000, 5000)):
    x, y = split
    assert x.shape == (n, 2) and y.shape == (n, 1)
    assert x.dtype == jnp.float32 and y.dtype == jnp.float32
    assert -1.0 <= float(x.min()) and float(x.max()) <= 1.0
  shapes = jax.tree.map(jnp.shape, teacher["params"])
  assert shapes == {
      "Dense_0": {"kernel": (2, 5), "bias": (5,)},
      "Dense_1": {"kernel": (5, 8), "bias": (8,)},
      "Dense_2": {"kernel": (8, 1), "bias": (1,)},
  }


def test_same_seed_same_data(seed0):
  _assert_trees_equal(teacher_student_data(0), seed0)


def test_different_seeds_differ(seed0):
  (splits0, teacher0), (splits1, teacher1) = seed0, teacher_student_data(1)
  assert not np.allclose(teacher0["params"]["Dense_0"]["kernel"],
                         teacher1["params"]["Dense_0"]["kernel"])
  assert not np.allclose(splits0.train.x, splits1.train.x)


def test_splits_are_drawn_independently(seed0):
  # The reference draws its test set with the validation seed, so its first
  # 1000 test points repeat the validation set; here they must not.
  train, val, test = seed0[0]
  assert not np.allclose(val.x, test.x[:1000])
  assert not np.allclose(train.x, val.x[:300])
  assert not np.allclose(train.x, test.x[:300])


def test_label_noise_is_a_standard_deviation(seed0):
  (_, _, (x, y)), teacher = seed0
  residual = np.asarray(y - teacher_model().apply(teacher, x))
  assert residual.std() == pytest.approx(0.08, rel=0.03)
  # Mean of 5000 draws: standard error 0.08 / sqrt(5000) = 0.0011.
  assert abs(residual.mean()) < 0.0045


def test_zero_noise_gives_the_teacher():
  (train, _, _), teacher = teacher_student_data(0, noise=0.0)
  np.testing.assert_array_equal(train.y, teacher_model().apply(teacher, train.x))


def test_weight_scaling(seed0):
  key = jax.random.fold_in(jax.random.key(0), TEACHER_KEY_OFFSET)
  raw = teacher_model().init(key, jnp.zeros((1, 2)))["params"]
  scaled = init_teacher(key, weight_scaling=2.0)["params"]
  np.testing.assert_allclose(scaled["Dense_0"]["kernel"], 2 * raw["Dense_0"]["kernel"] + 1)
  np.testing.assert_allclose(scaled["Dense_1"]["kernel"], 2 * raw["Dense_1"]["kernel"])
  np.testing.assert_array_equal(scaled["Dense_2"]["kernel"], raw["Dense_2"]["kernel"])
  for name in raw:  # Flax's default init: zero biases, untouched by the scaling.
    np.testing.assert_array_equal(scaled[name]["bias"], np.zeros_like(raw[name]["bias"]))
  # The data's teacher is this one.
  _assert_trees_equal(seed0[1]["params"], scaled)


def test_vmap_over_seeds_and_keys_matches_per_seed():
  seeds = jnp.arange(3)

  @jax.jit
  def batched(seeds):
    keys = jax.vmap(jax.random.key)(seeds)
    return (jax.vmap(teacher_student_data)(seeds),
            jax.vmap(teacher_student_data_from_key)(keys))

  by_seed, by_key = batched(seeds)
  for i in range(3):
    expected = teacher_student_data(i)
    for result in (by_seed, by_key):
      jax.tree.map(lambda b, e: np.testing.assert_allclose(b[i], e, rtol=1e-6, atol=1e-6),
                   result, expected)
