"""Tests of toolkit.stats.kde against scikit-learn, brute force and closed forms."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import special, stats
from sklearn.neighbors import KernelDensity

from toolkit.stats import kde

_mean_ll = jax.jit(kde.mean_log_likelihood)  # one compilation for every bandwidth of a loop
_weight_stats = jax.jit(kde.kernel_weight_stats, static_argnames="chunk_size")


def _normal(seed, shape):
  return np.random.default_rng(seed).standard_normal(shape)


def _brute_force(x, y, h):
  sq = ((x[:, None, :] - y[None]) ** 2).sum(-1)
  d = x.shape[1]
  return special.logsumexp(-sq / (2 * h**2), axis=1) - np.log(len(y)) - 0.5 * d * np.log(2 * np.pi * h**2)


@pytest.mark.parametrize("d,n,h", [(1, 30, 0.3), (3, 50, 0.4), (5, 100, 1.1)])
def test_log_density_equals_sklearn(x64, d, n, h):
  x, y = _normal(0, (17, d)), _normal(1, (n, d))
  ours = kde.log_density(x, y, h, chunk_size=23)  # 23 does not divide n: the padded rows must not count
  ref = KernelDensity(kernel="gaussian", bandwidth=h).fit(y).score_samples(x)
  np.testing.assert_allclose(ours, ref, rtol=1e-10)


@pytest.mark.parametrize("d,n,h", [(30, 200, 0.8), (200, 64, 1.3)])
def test_log_density_equals_brute_force_in_high_dimension(x64, d, n, h):
  # scikit-learn's tree algorithms (kd_tree, ball_tree) are not exact here: in d = 30 they are off by up to 3.5
  # nats at points far from the data, so the oracle is the direct logsumexp.
  x, y = _normal(0, (17, d)), _normal(1, (n, d))
  np.testing.assert_allclose(kde.log_density(x, y, h, chunk_size=23), _brute_force(x, y, h), rtol=1e-12)


def test_log_density_float32_in_high_dimension():
  # In d = 300 every kernel term underflows float32; the log-space estimate must not.
  x, y = _normal(0, (8, 300)), _normal(1, (500, 300))
  ours = np.asarray(kde.log_density(jnp.float32(x), jnp.float32(y), 0.7, chunk_size=128))
  assert ours.dtype == np.float32 and np.all(np.isfinite(ours))
  np.testing.assert_allclose(ours, _brute_force(x, y, 0.7), rtol=2e-5)


def test_chunk_size_does_not_change_the_result(x64):
  x, y = _normal(2, (9, 5)), _normal(3, (101, 5))
  full = kde.log_density(x, y, 0.3, chunk_size=1000)
  for c in (7, 100):
    np.testing.assert_allclose(kde.log_density(x, y, 0.3, chunk_size=c), full, rtol=1e-13)


def test_density_integrates_to_one():
  # Importance sampling from q = N(0, 4 I) in d = 2: ∫ ρ̂ = E_q[ρ̂/q].
  rng = np.random.default_rng(4)
  y = rng.standard_normal((40, 2))
  q = 2.0 * rng.standard_normal((200_000, 2))
  log_q = stats.multivariate_normal(np.zeros(2), 4.0 * np.eye(2)).logpdf(q)
  ratio = np.exp(np.asarray(kde.log_density(jnp.asarray(q), jnp.asarray(y), 0.5)) - log_q)
  integral, se = ratio.mean(), ratio.std() / np.sqrt(ratio.size)
  assert abs(integral - 1.0) < 4 * se and se < 0.01


def test_kernel_weight_stats_brute_force(x64):
  x, y = _normal(5, (6, 20)), _normal(6, (300, 20))
  for h in (0.4, 1.0, 3.0):
    s = _weight_stats(x, y, h, chunk_size=37)
    sq = ((x[:, None, :] - y[None]) ** 2).sum(-1)
    logits = -sq / (2 * h**2)
    w = special.softmax(logits, axis=1)
    top = np.sort(logits, axis=1)[:, ::-1]
    np.testing.assert_allclose(s.log_density, kde.log_density(x, y, h), rtol=1e-12)
    np.testing.assert_allclose(s.max_weight, w.max(1), rtol=1e-10)
    np.testing.assert_allclose(s.participation, (w**2).sum(1), rtol=1e-10)
    np.testing.assert_allclose(s.log_top_ratio, top[:, 0] - top[:, 1], rtol=1e-8, atol=1e-9)


def test_participation_limits():
  x, y = _normal(7, (4, 10)), _normal(8, (50, 10))
  wide = kde.kernel_weight_stats(x, y, 1e3)
  narrow = kde.kernel_weight_stats(x, y, 0.05)
  np.testing.assert_allclose(wide.participation, 1 / 50, rtol=1e-3)
  np.testing.assert_allclose(narrow.participation, 1.0, atol=1e-6)
  np.testing.assert_allclose(narrow.max_weight, 1.0, atol=1e-6)


def test_kl_divergence_matches_annealed_closed_form_for_wide_kernels():
  # For h large the estimate concentrates on E ρ̂ = N(0, (1 + h²) I): KL → d/2 [log(1+h²) − h²/(1+h²)].
  d, h = 4, 2.0
  x, y = _normal(9, (4000, d)), _normal(10, (20_000, d))

  def log_target(p):
    return stats.multivariate_normal(np.zeros(d), np.eye(d)).logpdf(np.asarray(p))

  ours = float(kde.kl_divergence(jnp.asarray(x), jnp.asarray(y), h, log_target))
  exact = 0.5 * d * (np.log1p(h**2) - h**2 / (1 + h**2))
  assert abs(ours - exact) < 0.02


def test_select_bandwidth_equals_a_loop(x64):
  x, y = _normal(11, (50, 6)), _normal(12, (300, 6))
  hs = jnp.geomspace(0.2, 2.0, 12)
  out = kde.select_bandwidth(x, y, hs, chunk_size=64)
  loop = np.array([float(_mean_ll(x, y, h)) for h in hs])
  np.testing.assert_allclose(out.mean_log_likelihood, loop, rtol=1e-12)
  assert int(out.index) == int(np.argmax(loop)) and float(out.bandwidth) == float(hs[np.argmax(loop)])
  # The parabola vertex is within the neighbouring grid cells and beats the grid on a finer grid's curve.
  i = int(out.index)
  assert hs[i - 1] <= out.refined_bandwidth <= hs[i + 1]
  fine = jnp.geomspace(float(hs[i - 1]), float(hs[i + 1]), 21)
  best_fine = float(fine[np.argmax([float(_mean_ll(x, y, h)) for h in fine])])
  assert abs(np.log(float(out.refined_bandwidth) / best_fine)) < 0.03


def test_select_bandwidth_edge_of_grid_returns_grid_point():
  x, y = _normal(13, (30, 3)), _normal(14, (100, 3))
  out = kde.select_bandwidth(x, y, jnp.array([5.0, 6.0, 7.0]))
  assert int(out.index) == 0 and float(out.refined_bandwidth) == 5.0


def test_jit_and_vmap(x64):
  x, y = _normal(15, (5, 8)), _normal(16, (40, 8))
  eager = kde.log_density(x, y, 0.9, chunk_size=16)
  jitted = jax.jit(kde.log_density, static_argnames="chunk_size")(x, y, 0.9, chunk_size=16)
  np.testing.assert_allclose(jitted, eager, rtol=1e-13)
  hs = jnp.array([0.5, 0.9, 1.5])
  vm = jax.vmap(lambda h: kde.log_density(x, y, h))(hs)
  np.testing.assert_allclose(vm[1], eager, rtol=1e-13)
  st = jax.jit(kde.kernel_weight_stats)(x, y, 0.9)
  np.testing.assert_allclose(st.log_density, eager, rtol=1e-13)
  # Gradient in h of the mean log-likelihood: finite differences.
  g = jax.jit(jax.grad(lambda h: kde.mean_log_likelihood(x, y, h)))(0.9)
  fd = (_mean_ll(x, y, 0.9 + 1e-6) - _mean_ll(x, y, 0.9 - 1e-6)) / 2e-6
  np.testing.assert_allclose(g, fd, rtol=1e-6)


def test_bad_input():
  x, y = jnp.zeros((3, 2)), jnp.zeros((5, 2))
  with pytest.raises(ValueError, match="same dimension"):
    kde.log_density(x, jnp.zeros((5, 3)), 1.0)
  with pytest.raises(ValueError, match="`points` must have shape"):
    kde.log_density(jnp.zeros(3), y, 1.0)
  with pytest.raises(ValueError, match="`bandwidth` must be > 0"):
    kde.log_density(x, y, 0.0)
  with pytest.raises(ValueError, match="`chunk_size`"):
    kde.log_density(x, y, 1.0, chunk_size=0)
  with pytest.raises(ValueError, match="n >= 2"):
    kde.kernel_weight_stats(x, jnp.zeros((1, 2)), 1.0)
  with pytest.raises(ValueError, match="`bandwidths`"):
    kde.select_bandwidth(x, y, jnp.zeros((2, 2)))


@pytest.mark.parametrize(
  "bandwidth, match",
  [
    (0.0, "`bandwidth` must be > 0"),
    (float("nan"), "`bandwidth` must be > 0"),
    (jnp.float32(-1.0), "`bandwidth` must be > 0"),
    (jnp.array([0.5, 1.0]), "`bandwidth` must be a scalar"),
  ],
)
def test_mean_log_likelihood_and_kl_bad_bandwidth(bandwidth, match):
  x, y = jnp.zeros((3, 2)), jnp.zeros((5, 2))
  with pytest.raises(ValueError, match=match):
    kde.mean_log_likelihood(x, y, bandwidth)
  with pytest.raises(ValueError, match=match):
    kde.kl_divergence(x, y, bandwidth, lambda p: jnp.zeros(p.shape[0]))


def test_kl_divergence_bad_inputs():
  x, y = jnp.zeros((3, 2)), jnp.zeros((5, 2))
  with pytest.raises(ValueError, match="`points` must have shape"):
    kde.mean_log_likelihood(jnp.zeros(3), y, 1.0)
  with pytest.raises(ValueError, match="`points` and `data` must have the same dimension"):
    kde.kl_divergence(x, jnp.zeros((5, 3)), 1.0, lambda p: jnp.zeros(p.shape[0]))
  with pytest.raises(TypeError, match="`log_target` must be a function"):
    kde.kl_divergence(x, y, 1.0, jnp.zeros(3))
  with pytest.raises(ValueError, match="`log_target` must return shape \\(3,\\)"):
    kde.kl_divergence(x, y, 1.0, lambda p: jnp.zeros((p.shape[0], 1)))  # would broadcast to (3, 3)
