"""BMR criteria: the reference's check table, the stable form, decisions and compression measures."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.stats import norm

from sparsejax import masks as masks_lib
from sparsejax.models import MLP
from sparsejax.objectives import log_uniform as lu
from sparsejax.pruning import bmr

# (mu, log sigma, dF_N (code convention), dF_U-8, dF_U-4), reference/bmrs.md section 2.
CHECK = [
    (0.0, -5.0, -4.405e6, -338652.0, -84667.0),
    (-1.0, 0.0, -177.3315, -11.97898, -2.67571),
    (-3.0, 1.0, -17.41533, -0.9464468, -0.06591683),
    (-8.0, 1.0, -7.746775, 0.4512815, 0.3900333),
    (-10.0, 1.5, -0.9676246, 0.3891135, 0.2861631),
    (-19.0, 0.0, 2.668487, -5.971476, -6.207865),
    (-5.0, 2.0, -0.7494051, 0.05645649, 0.1337861),
]
HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


def _table():
  t = np.array(CHECK)
  return jnp.asarray(t[:, 0]), jnp.asarray(t[:, 1]), t[:, 2], t[:, 3], t[:, 4]


def test_bmrs_n_check_values_code_and_paper_conventions():
  with jax.enable_x64(True):
    mu, log_sigma, df_n, _, _ = _table()
    code = np.asarray(bmr.bmrs_n_delta_f(mu, log_sigma, convention="code"))
    paper = np.asarray(bmr.bmrs_n_delta_f(mu, log_sigma))
  np.testing.assert_allclose(code[0], df_n[0], rtol=1e-3)  # the table gives 4 digits
  np.testing.assert_allclose(code[1:], df_n[1:], rtol=2e-6)
  np.testing.assert_allclose(paper, code - HALF_LOG_2PI, rtol=1e-12)
  assert HALF_LOG_2PI == pytest.approx(0.9189, abs=1e-4)


@pytest.mark.parametrize("p1,column", [(8.0, 3), (4.0, 4)])
def test_bmrs_u_check_values_including_the_exact_value_where_float64_gives_minus_inf(p1, column):
  with jax.enable_x64(True):
    table = _table()
    got = np.asarray(bmr.bmrs_u_delta_f(table[0], table[1], p1=p1))
  np.testing.assert_allclose(got[0], table[column][0], rtol=1e-5)  # -338652 / -84667 exactly
  np.testing.assert_allclose(got[1:], table[column][1:], rtol=2e-6)


def test_bmrs_u_width_ratio_of_the_notes():
  for p1, ratio in [(8.0, 0.51986), (4.0, 0.65849)]:
    a_red, b_red = bmr.bmrs_u_bounds(p1)
    assert a_red == pytest.approx(-15.9424, abs=1e-4)
    assert (b_red - a_red) / (lu.LOG_B - lu.LOG_A) == pytest.approx(ratio, abs=1e-5)
  with pytest.raises(ValueError, match="p1"):
    bmr.bmrs_u_bounds(30.0)


def _direct_delta_f(mu, log_sigma, mu_p, var_p):
  """The reference's direct formula (code convention), with scipy in float64."""
  a, b = lu.LOG_A, lu.LOG_B
  var_q = np.exp(2 * log_sigma)
  var_r = 1 / (1 / var_q + 1 / var_p)
  mu_r = var_r * (mu / var_q + mu_p / var_p)
  z = lambda m, v: norm.cdf((b - m) / np.sqrt(v)) - norm.cdf((a - m) / np.sqrt(v))
  return (np.log(z(mu_r, var_r) * (b - a) / (z(mu, var_q) * z(mu_p, var_p)))
          + 0.5 * np.log(var_r / (var_q * var_p))
          - 0.5 * (mu ** 2 / var_q + mu_p ** 2 / var_p - mu_r ** 2 / var_r))


def test_stable_form_equals_the_direct_formula_where_it_does_not_cancel():
  mu = np.array([-1.0, -3.0, -8.0, -15.0, -19.5])
  log_sigma = np.array([0.0, 1.0, 1.0, 0.5, -1.0])
  for mu_p, var_p in [(-20.0, 0.5), (-18.0, 2.0), (-10.0, 1e-2)]:
    with jax.enable_x64(True):
      got = np.asarray(bmr.bmrs_n_delta_f(jnp.asarray(mu), jnp.asarray(log_sigma), mu_p=mu_p,
                                          var_p=var_p, convention="code"))
    np.testing.assert_allclose(got, _direct_delta_f(mu, log_sigma, mu_p, var_p), rtol=1e-9)


def test_float32_matches_float64_for_the_stable_forms():
  mu, log_sigma = _table()[:2]
  with jax.enable_x64(True):
    n64 = np.asarray(bmr.bmrs_n_delta_f(mu, log_sigma))
    u64 = np.asarray(bmr.bmrs_u_delta_f(mu, log_sigma))
  n32 = bmr.bmrs_n_delta_f(mu.astype(jnp.float32), log_sigma.astype(jnp.float32))
  u32 = bmr.bmrs_u_delta_f(mu.astype(jnp.float32), log_sigma.astype(jnp.float32))
  np.testing.assert_allclose(n32, n64, rtol=1e-5)
  np.testing.assert_allclose(u32, u64, rtol=1e-5)


def _state(rows):
  return lu.GateState(mu={"s": jnp.array([r[0] for r in rows])},
                      log_sigma={"s": jnp.array([r[1] for r in rows])})


def test_decisions_prune_iff_delta_f_nonnegative_and_the_u_n_disagreement():
  state = _state(CHECK)
  expected_keep = {
      "bmrs_n": [True, True, True, True, True, False, True],
      "bmrs_u": [True, True, True, False, False, True, False],
      "snr": [True, True, False, False, False, False, False],
      "expected_theta": [True, True, True, False, False, False, False],
  }
  for name, keep in expected_keep.items():
    criterion = bmr.Criterion(name)
    masks = bmr.keep_masks(bmr.scores(criterion, state), bmr.default_cut(criterion))
    np.testing.assert_array_equal(masks["s"], keep, err_msg=name)
  # mu = -19: mass below 2^-23 is kept by BMRS_U, pruned by BMRS_N (notes, section 2).
  # BMRS_U-4 decides as BMRS_U-8 on these rows (row (-3, 1): dF = -0.066, kept).
  masks = bmr.keep_masks(bmr.scores(bmr.Criterion("bmrs_u", p1=4.0), state), 0.0)
  np.testing.assert_array_equal(masks["s"], expected_keep["bmrs_u"])


def test_code_convention_prunes_more_than_the_paper():
  mu = jnp.linspace(-19.9, -1.0, 400)
  state = lu.GateState(mu={"s": mu}, log_sigma={"s": jnp.full_like(mu, 1.0)})
  kept = {}
  for convention in ("paper", "code"):
    c = bmr.Criterion("bmrs_n", convention=convention)
    kept[convention] = int(bmr.keep_masks(bmr.scores(c, state), 0.0)["s"].sum())
  assert kept["code"] < kept["paper"]


def test_l2_scores_are_input_weight_norms_and_percentile_cut():
  model = MLP(widths=(3, 4, 2))
  params = model.init(jax.random.key(0), jnp.ones((1, 3)))["params"]
  state = lu.init_gate_state(model.gate_sites())
  scores = bmr.scores(bmr.Criterion("l2"), state, params, model.unit_covers())
  np.testing.assert_allclose(scores["Dense_0"],
                             np.linalg.norm(np.asarray(params["Dense_0"]["kernel"]), axis=0),
                             rtol=1e-6)
  cut = bmr.percentile_cut(scores, 50.0)
  assert int(bmr.keep_masks(scores, cut)["Dense_0"].sum()) == 2
  with pytest.raises(ValueError, match="parameters"):
    bmr.scores(bmr.Criterion("l2"), state)


def test_compression_measures_count_units_and_their_weights():
  model = MLP(widths=(3, 4, 2))
  params = model.init(jax.random.key(0), jnp.ones((1, 3)))["params"]
  units = {"Dense_0": jnp.array([True, False, True, False])}
  weight_masks = masks_lib.unit_masks(params, units, model.unit_covers())
  assert bmr.unit_compression(units) == pytest.approx(50.0)
  # 2 pruned units take 3 kernel entries + 1 bias + 2 next-layer entries each,
  # and their (mu, log sigma): (2 * 6 + 2 * 2) / (3*4 + 4 + 4*2 + 2 + 2 * 4).
  assert bmr.parameter_compression(params, weight_masks, units) == pytest.approx(
      100 * 16 / 34)
  # The reference counts the weight matrices only: (2 * 5 + 2 * 2) / 34.
  assert bmr.parameter_compression(params, weight_masks, units, weights_only=True) == (
      pytest.approx(100 * 14 / 34))


def test_bad_criterion_fields_are_named():
  state = _state(CHECK[:1])
  with pytest.raises(ValueError, match="criterion"):
    bmr.scores(bmr.Criterion("hessian"), state)
  with pytest.raises(ValueError, match="convention"):
    bmr.scores(bmr.Criterion("bmrs_n", convention="latex"), state)
  with pytest.raises(ValueError, match="pruned_percent"):
    bmr.percentile_cut({"s": np.ones(3)}, 120.0)
