"""The description-length cut against a brute-force two-part code."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sparsejax.pruning import description_length as dl
from sparsejax.train import losses


def _problem(seed, n=12):
  """A linear least-squares fit: the loss of ``w`` on fixed data, in closed form."""
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(200, n)).astype(np.float32)
  true = np.where(rng.random(n) < 0.4, rng.normal(size=n) * 2, 0.0)
  y = x @ true + 0.3 * rng.normal(size=200)
  w = np.linalg.lstsq(x, y, rcond=None)[0].astype(np.float32)
  params = {"w": jnp.asarray(w), "b": jnp.zeros(())}
  masks = {"w": jnp.ones(n, bool), "b": None}
  loss_fn = lambda p: jnp.mean(jnp.square(x @ p["w"] + p["b"] - y))
  return params, masks, loss_fn, x.shape[0]


def _brute_force(params, masks, loss_fn, n_points, b):
  """Every kept count k, keeping the k largest |w|: the argmin of N/2 log2(MSE) + b k."""
  w = np.asarray(params["w"])
  order = np.argsort(-np.abs(w), kind="stable")
  totals = []
  for k in range(w.size + 1):
    keep = np.zeros(w.size, bool)
    keep[order[:k]] = True
    mse = float(loss_fn({"w": jnp.asarray(np.where(keep, w, 0)), "b": params["b"]}))
    totals.append(n_points * 0.5 * math.log2(mse) + b * k)
  return int(np.argmin(totals)), min(totals)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("scale", [0.5, 1.0, 4.0])
def test_the_cut_is_the_brute_force_minimum(seed, scale):
  params, masks, loss_fn, n_points = _problem(seed)
  b = dl.bits_per_parameter(n_points, scale)
  result = dl.description_length_cut(loss_fn, params, masks, n_points=n_points,
                                     bits_per_point=dl.gaussian_bits(1), bits_per_parameter=b)
  k, total = _brute_force(params, masks, loss_fn, n_points, b)
  assert int(result.kept) == k
  assert int(jnp.sum(result.masks["w"])) == k
  assert result.masks["b"] is None
  assert float(result.code_length) == pytest.approx(total, rel=1e-4)
  kept_w = np.abs(np.asarray(params["w"]))[np.asarray(result.masks["w"])]
  cut_w = np.abs(np.asarray(params["w"]))[~np.asarray(result.masks["w"])]
  assert kept_w.size == 0 or cut_w.size == 0 or kept_w.min() > cut_w.max()


def test_the_price_moves_the_cut_monotonically():
  params, masks, loss_fn, n_points = _problem(3, n=20)
  kept = [int(dl.description_length_cut(
      loss_fn, params, masks, n_points=n_points, bits_per_point=dl.gaussian_bits(1),
      bits_per_parameter=dl.bits_per_parameter(n_points, s)).kept) for s in (1e-6, 1, 10, 1000)]
  assert kept == sorted(kept, reverse=True)
  assert kept[0] == 20 and kept[-1] == 0


def test_pruned_entries_stay_pruned_and_nothing_cut_means_threshold_zero():
  w = jnp.linspace(0.5, 2.0, 12)
  params, n_points = {"w": w, "b": jnp.zeros(())}, 200
  # Separable: every kept entry is at its optimum, so each cut raises the loss.
  loss_fn = lambda p: 0.01 + jnp.mean(jnp.square(p["w"] - w))
  masks = {"w": jnp.arange(12) % 3 != 0, "b": None}
  free = dl.description_length_cut(loss_fn, params, masks, n_points=n_points,
                                   bits_per_point=dl.gaussian_bits(1), bits_per_parameter=1e-6)
  assert float(free.threshold) == 0.0
  np.testing.assert_array_equal(free.masks["w"], masks["w"])
  assert int(free.kept) == 8
  assert float(free.dense_code_length) == pytest.approx(float(free.code_length))


def test_the_geometric_grid_and_vmap_over_seeds():
  counts = dl.candidate_counts(10_000, 64)
  assert counts[0] == 0 and counts[1] == 1 and counts[-1] == 10_000
  assert len(counts) <= 64 and np.all(np.diff(counts) > 0)
  np.testing.assert_array_equal(dl.candidate_counts(5, 64), np.arange(6))

  problems = [_problem(s) for s in range(3)]
  x = jnp.asarray(np.random.default_rng(9).normal(size=(100, 12)), jnp.float32)
  ws = jnp.stack([p[0]["w"] for p in problems])
  y = x @ ws[0]

  def cut(w):
    return dl.description_length_cut(
        lambda p: jnp.mean(jnp.square(x @ p["w"] - y)), {"w": w}, {"w": jnp.ones(12, bool)},
        n_points=100, bits_per_point=dl.gaussian_bits(1), bits_per_parameter=3.0,
        max_candidates=8)
  batched = jax.vmap(cut)(ws)
  for i in range(3):
    single = cut(ws[i])
    np.testing.assert_array_equal(batched.masks["w"][i], single.masks["w"])
    assert int(batched.kept[i]) == int(single.kept)


def test_codes_of_the_two_tasks_and_a_clear_error_otherwise():
  assert float(dl.bits_per_point(losses.squared_error, 3)(jnp.asarray(0.25))) == pytest.approx(-3.0)
  assert float(dl.bits_per_point(losses.cross_entropy, 10)(jnp.asarray(math.log(2)))) == (
      pytest.approx(1.0))
  with pytest.raises(ValueError, match="description_length.*squared_error"):
    dl.bits_per_point(lambda a, b: a, 1)
  assert dl.bits_per_parameter(1024, 2.0) == pytest.approx(10.0)


@pytest.mark.slow  # two 100-epoch runs of two seeds
def test_the_criterion_in_a_run_follows_the_price_per_parameter(tmp_path):
  from sparsejax.runner import run
  from tests.test_runner import small_config

  def kept(bits_scale):
    config = small_config(method="drr", ec=dict(alpha=1e-3), max_epochs=100, seeds=2,
                          finetuning_max_epochs=0)
    config.pruning.criterion = "description_length"
    config.pruning.bits_scale = bits_scale
    rows = run(config, tmp_path / str(bits_scale))
    return [(row["pruning_kept_after_rgp"], row["pruning_kept_after_criterion"]) for row in rows]

  free, dear = kept(1e-6), kept(0.1)
  for (before, after), (_, dear_after) in zip(free, dear):
    # Nearly free, only what does not lower the loss goes (at float32 precision, many
    # entries); at a higher price, more.
    assert 0 < dear_after < after <= before
