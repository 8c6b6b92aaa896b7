"""Log-uniform gates: closed forms against the reference's check values, Monte Carlo and finite differences."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate, stats

from sparsejax.models import MLP
from sparsejax.objectives import log_uniform as lu

# (mu, log sigma, KL, E[theta], SNR) from reference/bmrs.md section 2 (mpmath-confirmed).
CHECK = [
    (0.0, -5.0, 7.269941, 0.9946465, 246.6992),
    (-1.0, 0.0, 1.893348, 0.3604531, 1.488422),
    (-3.0, 1.0, 0.8600759, 0.123144, 0.6154742),
    (-8.0, 1.0, 0.5862139, 0.007960092, 0.1874545),
    (-10.0, 1.5, 0.1785858, 0.01308149, 0.1894059),
    (-19.0, 0.0, 1.893348, 1.07296e-8, 0.8477313),
    (-5.0, 2.0, 0.1100372, 0.06344729, 0.388536),
]


def _columns():
  table = np.array(CHECK)
  return [table[:, i] for i in range(table.shape[1])]


@pytest.mark.parametrize("x64", [True, False])
def test_check_values_of_the_reference(x64):
  mu, log_sigma, kl, mean, snr = _columns()
  with jax.enable_x64(x64):
    dtype = jnp.float64 if x64 else jnp.float32
    mu, log_sigma = jnp.asarray(mu, dtype), jnp.asarray(log_sigma, dtype)
    rtol = 1e-6 if x64 else 2e-4
    np.testing.assert_allclose(lu.kl_divergence(mu, log_sigma), kl, rtol=rtol)
    np.testing.assert_allclose(lu.expected_theta(mu, log_sigma), mean, rtol=max(rtol, 5e-6))
    # float32: the log-moment ratio at SNR ~ 250 is ~1.6e-5, resolved to ~0.5 %.
    np.testing.assert_allclose(lu.snr(mu, log_sigma), snr, rtol=1e-6 if x64 else 1e-2)


def _truncnorm(mu, log_sigma):
  sigma = float(np.exp(np.clip(log_sigma, -20, 5)))
  return stats.truncnorm((lu.LOG_A - mu) / sigma, (lu.LOG_B - mu) / sigma, loc=mu, scale=sigma)


@pytest.mark.parametrize("mu,log_sigma", [(-1.0, 0.0), (-3.0, 1.0), (-10.0, 1.5), (-0.5, -1.0)])
def test_kl_equals_numerical_integral(mu, log_sigma):
  q = _truncnorm(mu, log_sigma)
  # KL(q || p) in log space: p(log theta) = 1 / (b - a) on [a, b].
  integrand = lambda t: q.pdf(t) * (q.logpdf(t) + np.log(lu.LOG_B - lu.LOG_A))
  expected, _ = integrate.quad(integrand, lu.LOG_A, lu.LOG_B, limit=200)
  with jax.enable_x64(True):
    got = lu.kl_divergence(jnp.float64(mu), jnp.float64(log_sigma))
  np.testing.assert_allclose(got, expected, rtol=1e-7)


@pytest.mark.parametrize("x64", [True, False])  # float32 inverts the cdf with PPND7
@pytest.mark.parametrize("mu,log_sigma", [(-1.0, 0.0), (-3.0, 1.0), (0.0, -5.0), (-5.0, 2.0)])
def test_moments_and_sampler_against_monte_carlo(mu, log_sigma, x64):
  with jax.enable_x64(x64):
    dtype = jnp.float64 if x64 else jnp.float32
    m, s = jnp.asarray(mu, dtype), jnp.asarray(log_sigma, dtype)
    draws = np.asarray(lu.sample_theta(jax.random.key(0), m, s, (400_000,)), np.float64)
    assert float(draws.min()) >= np.exp(lu.LOG_A) and float(draws.max()) <= np.exp(lu.LOG_B)
    mean, var = float(lu.expected_theta(m, s)), float(lu.variance_theta(m, s))
  se = np.sqrt(var / draws.size)
  assert abs(float(draws.mean()) - mean) < 5 * se + 1e-12
  np.testing.assert_allclose(float(draws.var()), var, rtol=0.05)
  # The draws follow the truncated normal in log space (Kolmogorov-Smirnov).
  ks = stats.kstest(np.log(draws[:20_000]), _truncnorm(mu, log_sigma).cdf)
  # The sampler clips gamma to [1e-5, 1 - 1e-5]: a tiny cdf distortion only.
  assert ks.statistic < 0.012


@pytest.mark.slow  # 7 s or more on 2 cores: the default suite stays under 10 minutes
def test_kl_gradient_matches_finite_differences():
  with jax.enable_x64(True):
    mu = jnp.array([-1.0, -3.0, -8.0, 0.3])
    log_sigma = jnp.array([0.0, 1.0, 1.0, -2.0])
    _assert_gradients_match_finite_differences(
        lambda m, s: jnp.sum(lu.kl_divergence(m, s)), mu, log_sigma, rtol=1e-6, atol=1e-9)


def _assert_gradients_match_finite_differences(f, mu, log_sigma, rtol, atol, h=1e-6):
  """jax.grad of ``f(mu, log_sigma)`` against central differences, entry by entry."""
  g_mu, g_s = jax.grad(f, argnums=(0, 1))(mu, log_sigma)
  for i in range(mu.shape[0]):
    e = jnp.zeros_like(mu).at[i].set(h)
    np.testing.assert_allclose(g_mu[i], (f(mu + e, log_sigma) - f(mu - e, log_sigma)) / (2 * h),
                               rtol=rtol, atol=atol)
    np.testing.assert_allclose(g_s[i], (f(mu, log_sigma + e) - f(mu, log_sigma - e)) / (2 * h),
                               rtol=rtol, atol=atol)


def test_far_outside_posterior_stays_finite():
  # Both bounds in the same tail: the direct Phi(beta) - Phi(alpha) is 0.
  with jax.enable_x64(True):
    mu, log_sigma = jnp.array([30.0, -60.0]), jnp.array([-3.0, -3.0])
    for fn in (lu.kl_divergence, lu.expected_theta, lu.snr):
      assert np.all(np.isfinite(fn(mu, log_sigma))), fn.__name__
    # Mass piles up at the nearer bound: theta ~ e^0 = 1, and ~ e^-20 with
    # SNR ~ (a - mu) / sigma^2 (an exponential tail of scale sigma^2 / (a - mu)).
    assert float(lu.expected_theta(mu, log_sigma)[0]) == pytest.approx(1.0, rel=1e-3)
    assert float(lu.expected_theta(mu, log_sigma)[1]) == pytest.approx(np.exp(-20.0), rel=1e-3)
    assert float(lu.snr(mu, log_sigma)[1]) == pytest.approx(40 / np.exp(-6.0), rel=1e-2)


def test_kl_reductions_and_weight():
  sites = {"Dense_0": 3, "Dense_1": 5}
  state = lu.init_gate_state(sites)
  assert isinstance(state, lu.GateState)
  state.mu["Dense_1"] = jnp.full((5,), -3.0)
  state.log_sigma["Dense_1"] = jnp.full((5,), 1.0)
  kl0, kl1 = CHECK[0][2], CHECK[2][2]
  np.testing.assert_allclose(lu.kl_penalty(state, "sum"), 3 * kl0 + 5 * kl1, rtol=1e-5)
  np.testing.assert_allclose(lu.kl_penalty(state, "mean"), (kl0 + kl1) / 2, rtol=1e-5)
  objective = lu.log_uniform_gates(sites, kl_reduction="sum", kl_weight=1e-3)
  np.testing.assert_allclose(objective.penalty(None, state), 1e-3 * (3 * kl0 + 5 * kl1), rtol=1e-5)


def _run_gated(noise):
  model = MLP(widths=(4, 6, 2))
  params = model.init(jax.random.key(0), jnp.ones((1, 4)))["params"]
  objective = lu.log_uniform_gates(model.gate_sites(), noise=noise)
  state = objective.init(jax.random.key(1), params)
  state.log_sigma["Dense_0"] = jnp.zeros(6)  # wide posterior: visible noise
  state.mu["Dense_0"] = jnp.full((6,), -1.0)
  x = jnp.ones((8, 4))  # identical examples
  captured = {}
  _, gates = objective.forward(params, state, jax.random.key(2), True)
  gated = gates["Dense_0"]
  def spy(h):
    captured["h"] = h
    captured["out"] = gated(h)
    return captured["out"]
  model.apply({"params": params}, x, gates={"Dense_0": spy})
  return captured["out"] / captured["h"], (objective, params, state, model, x)


@pytest.mark.slow  # 7 s or more on 2 cores: the default suite stays under 10 minutes
def test_per_element_noise_differs_across_examples_per_batch_noise_does_not():
  theta, _ = _run_gated("per_element")
  assert theta.shape == (8, 6) and float(jnp.std(theta, axis=0).min()) > 0
  theta, _ = _run_gated("per_batch")
  np.testing.assert_allclose(jnp.std(theta, axis=0), 0.0, atol=1e-7)
  assert float(jnp.std(theta[0])) > 0


def test_eval_gates_are_expected_theta():
  _, (objective, params, state, model, x) = _run_gated("per_element")
  _, gates = objective.forward(params, state, jax.random.key(0), False)
  np.testing.assert_allclose(gates["Dense_0"], lu.expected_theta(jnp.full(6, -1.0), jnp.zeros(6)),
                             rtol=1e-6)
  np.testing.assert_allclose(gates["Dense_0"][0], CHECK[1][3], rtol=1e-5)


def test_bad_options_are_named():
  with pytest.raises(ValueError, match="kl_reduction"):
    lu.log_uniform_gates({"a": 1}, kl_reduction="median")
  with pytest.raises(ValueError, match="noise"):
    lu.log_uniform_gates({"a": 1}, noise="per_token")
  with pytest.raises(ValueError, match="gate site"):
    lu.log_uniform_gates({})


def _snr_high_precision(mu, log_sigma, a=-20, b=0):
  """E[theta] / sd(theta) from the closed-form moments in 120-digit arithmetic (mpmath)."""
  import mpmath as mp
  with mp.workdps(120):
    mu, sigma = mp.mpf(mu), mp.e ** mp.mpf(min(max(log_sigma, -20), 5))
    alpha, beta = (a - mu) / sigma, (b - mu) / sigma

    def mass(lo, hi):  # Phi(hi) - Phi(lo), with erfc in the tails so nothing rounds to 1
      if lo > 0:
        return (mp.erfc(lo / mp.sqrt(2)) - mp.erfc(hi / mp.sqrt(2))) / 2
      if hi < 0:
        return (mp.erfc(-hi / mp.sqrt(2)) - mp.erfc(-lo / mp.sqrt(2))) / 2
      return mp.ncdf(hi) - mp.ncdf(lo)

    def moment(k):
      return (mp.e ** (k * mu + (k * sigma) ** 2 / 2) * mass(k * sigma - beta, k * sigma - alpha)
              / mass(alpha, beta))

    return float(moment(1) / mp.sqrt(moment(2) - moment(1) ** 2))


def test_snr_is_accurate_over_the_whole_clipped_range_of_log_sigma():
  """Against 120-digit arithmetic, mu across and beyond [a, b] = [-20, 0], sigma down to e^-20."""
  mus = [-30.0, -25.0, -20.5, -20.0, -19.99999, -19.99, -19.0, -10.0, -1.0, 0.0, 0.01, 3.0, 5.0]
  log_sigmas = list(np.linspace(-20, 5, 26)) + [-19.5, -15.3, -0.7, -0.69]
  mu, log_sigma = (np.array(v, np.float64) for v in zip(*[(m, s) for m in mus
                                                          for s in log_sigmas]))
  with jax.enable_x64():
    got = np.asarray(lu.snr(mu, log_sigma))
  want = np.array([_snr_high_precision(m, s) for m, s in zip(mu, log_sigma)])
  assert np.all(np.isfinite(got))
  np.testing.assert_allclose(got, want, rtol=1e-8)
  # The two cases of the bug report: inf and 3.2288e6 before.
  with jax.enable_x64():
    assert float(lu.snr(-19.0, -20.0)) == pytest.approx(4.85165195e8, rel=1e-8)
    assert float(lu.snr(-10.0, -15.0)) == pytest.approx(3.26901737e6, rel=1e-8)


# Units at the prior's bounds, in the bulk, with theta clipped at b and with gamma clipped.
GATED_MU = [0.0, -1.0, -8.0, -19.5, 0.4, -3.0]
GATED_LOG_SIGMA = [-5.0, 0.0, 1.0, 2.0, 1.5, -19.0]


@pytest.mark.parametrize("x64", [pytest.param(True, marks=pytest.mark.slow), False])
def test_gated_per_element_equals_the_sampler_and_its_automatic_gradient(x64):
  """The hand-written VJP against jax.grad of x * sample_theta(key, mu, log sigma, x.shape)."""
  with jax.enable_x64(x64):
    dtype = jnp.float64 if x64 else jnp.float32
    key = jax.random.key(0)
    x = jax.random.normal(jax.random.key(1), (32, 3, 3, 6), dtype)
    mu, log_sigma = jnp.asarray(GATED_MU, dtype), jnp.asarray(GATED_LOG_SIGMA, dtype)
    head = jax.random.normal(jax.random.key(2), x.shape, dtype)

    def loss(gate):
      return lambda x, mu, log_sigma: jnp.sum(jnp.sin(head * gate(x, mu, log_sigma)))

    fast = loss(lambda x, m, s: lu.gated_per_element(key, x, m, s))
    auto = loss(lambda x, m, s: x * lu.sample_theta(key, m, s, x.shape))
    assert float(fast(x, mu, log_sigma)) == float(auto(x, mu, log_sigma))  # same value, bit for bit
    got = jax.jit(jax.grad(fast, (0, 1, 2)))(x, mu, log_sigma)
    want = jax.jit(jax.grad(auto, (0, 1, 2)))(x, mu, log_sigma)
    for g, w in zip(got, want):
      assert g.dtype == dtype
      np.testing.assert_allclose(g, w, rtol=1e-9 if x64 else 2e-4, atol=1e-12 if x64 else 1e-4)
    # Every case contributes (the clipped unit has a zero mu-gradient through theta only).
    assert np.all(np.abs(np.asarray(got[2])[:5]) > 0)


def test_gated_per_element_gradient_matches_finite_differences():
  with jax.enable_x64(True):
    key = jax.random.key(3)
    x = jax.random.normal(jax.random.key(4), (64, 4))
    mu, log_sigma = jnp.array([-1.0, -0.3, -5.0, -2.0]), jnp.array([0.0, -1.0, 1.0, -3.0])
    _assert_gradients_match_finite_differences(
        lambda m, s: jnp.sum(jnp.tanh(lu.gated_per_element(key, x, m, s))), mu, log_sigma,
        rtol=1e-5, atol=1e-8)
